"""The preflight's check of echolab_server_cpus, in check mode against this machine as test host
and client (connection local; read-only): a CPU the machine does not have is named, all of its
CPUs for the servers leave none for the local client, and a CPU it has passes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def online_cpus() -> list[int]:
    """This machine's online CPUs (/sys/devices/system/cpu/online, e.g. "0-3,6")."""
    cpus: list[int] = []
    for part in Path("/sys/devices/system/cpu/online").read_text().strip().split(","):
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return cpus


def preflight(tmp_path: Path, cpus: list[int]) -> subprocess.CompletedProcess[str]:
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {
        "all": {
            "children": {
                "testhosts": {"hosts": {"th": local}},
                "clients": {"hosts": {"th": {}}},
            }
        }
    }
    path = tmp_path / "inventory.yml"
    path.write_text(yaml.safe_dump(inventory))
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "--check",
            "-i",
            str(path),
            "-e",
            "echolab_profile=quick",
            "-e",
            yaml.safe_dump({"echolab_server_cpus": cpus}, default_flow_style=True).strip(),
            "playbooks/preflight.yml",
        ],
        cwd=ROOT,
        env={**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"},
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_cpu_the_test_host_lacks_is_refused(tmp_path: Path) -> None:
    missing = max(online_cpus()) + 5
    result = preflight(tmp_path, [online_cpus()[0], missing])
    assert result.returncode != 0, result.stdout
    said = " ".join(result.stdout.split())
    assert f"echolab_server_cpus names CPU(s) [{missing}] that test host th does not have" in said


def test_every_cpu_for_the_servers_leaves_none_for_a_local_client(tmp_path: Path) -> None:
    result = preflight(tmp_path, online_cpus())
    assert result.returncode != 0, result.stdout
    said = " ".join(result.stdout.split())
    assert "which is also a client host: leave at least one CPU for wsswarm" in said


def test_a_cpu_the_test_host_has_passes(tmp_path: Path) -> None:
    cpu = online_cpus()[-1]
    result = preflight(tmp_path, [cpu])
    assert result.returncode == 0, result.stdout + result.stderr
    checked = result.stdout.split("Check the server CPUs (echolab_server_cpus)")[1]
    assert checked.split("\n")[1].strip() == "ok: [th]", checked[:300]
