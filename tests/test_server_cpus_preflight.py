"""The preflight's check of echolab_server_cpus, in check mode against this machine as test host
and client (connection local; read-only): a CPU the machine does not have is named, all of its
CPUs for the servers leave none for the local client, and a CPU it has passes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

# The preflight_check fixture (tests/conftest.py): inventory dict and arguments in, process out.
PreflightCheck = Callable[..., "subprocess.CompletedProcess[str]"]


def online_cpus() -> list[int]:
    """This machine's online CPUs (/sys/devices/system/cpu/online, e.g. "0-3,6")."""
    cpus: list[int] = []
    for part in Path("/sys/devices/system/cpu/online").read_text().strip().split(","):
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return cpus


def preflight(check: PreflightCheck, cpus: list[int]) -> subprocess.CompletedProcess[str]:
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    inventory = {
        "all": {
            "children": {
                "testhosts": {"hosts": {"th": local}},
                "clients": {"hosts": {"th": {}}},
            }
        }
    }
    servers = yaml.safe_dump({"echolab_server_cpus": cpus}, default_flow_style=True).strip()
    return check(inventory, "-e", "echolab_profile=quick", "-e", servers)


def test_a_cpu_the_test_host_lacks_is_refused(preflight_check: PreflightCheck) -> None:
    missing = max(online_cpus()) + 5
    result = preflight(preflight_check, [online_cpus()[0], missing])
    assert result.returncode != 0, result.stdout
    said = " ".join(result.stdout.split())
    assert f"echolab_server_cpus names CPU(s) [{missing}] that test host th does not have" in said


def test_every_cpu_for_the_servers_leaves_none_for_a_local_client(
    preflight_check: PreflightCheck,
) -> None:
    result = preflight(preflight_check, online_cpus())
    assert result.returncode != 0, result.stdout
    said = " ".join(result.stdout.split())
    assert "which is also a client host: leave at least one CPU for wsswarm" in said


def test_a_cpu_the_test_host_has_passes(preflight_check: PreflightCheck) -> None:
    cpu = online_cpus()[-1]
    result = preflight(preflight_check, [cpu])
    assert result.returncode == 0, result.stdout + result.stderr
    checked = result.stdout.split("Check the server CPUs (echolab_server_cpus)")[1]
    assert checked.split("\n")[1].strip() == "ok: [th]", checked[:300]
