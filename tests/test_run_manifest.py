"""run_manifest on this machine (the controller as its own test host, connection local): the CPU
facts of the host and the pinning read back from a real container started with a cpuset, the
VM role's facts file, and which client hosts are the test host. Nothing is loaded; the second
client host of the inventory is never contacted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONTAINER = f"echolab-manifest-test-{os.getpid()}"
DOCKER_RUN = ["docker", "run", "-d", "--rm"]
IMAGE_SLEEP = ["echolab/base:bookworm", "sleep", "600"]


@pytest.fixture
def pinned_container() -> Iterator[str]:
    """A container of the kit's base image held to CPU 1, as container_target pins one."""
    subprocess.run(
        [*DOCKER_RUN, "--cpuset-cpus", "1", "--name", CONTAINER, *IMAGE_SLEEP],
        check=True,
        capture_output=True,
        timeout=60,
    )
    yield CONTAINER
    subprocess.run(["docker", "rm", "-f", CONTAINER], capture_output=True, timeout=60, check=False)


def run_manifest(tmp_path: Path, container: str) -> dict[str, Any]:
    state = tmp_path / "state"
    state.mkdir()
    (state / f"container_{container}.json").write_text(
        json.dumps({"network_mode": "bridge", "cpus": None, "cpuset": "1", "workers": 1})
    )
    (state / "vm_target.json").write_text(
        json.dumps({"vcpus": 1, "cpus": [1], "workers": 1, "vhost_net": False})
    )
    inventory = {
        "all": {
            "hosts": {
                "th": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable},
                "client2": {"ansible_host": "192.0.2.7"},
            }
        }
    }
    (tmp_path / "inventory.yml").write_text(yaml.safe_dump(inventory))
    params = {"testhost": "th", "clients": ["th", "client2"], "server_cpus": [1], "profile": "t"}
    targets = [
        {"name": "vm", "target": "vm", "kind": "vm", "repetition": 1, "instance": "echolab-none",
         "address": "10.0.0.42", "port": 8080, "path": "/"},
        {"name": "container", "target": "container", "kind": "container", "repetition": 1,
         "instance": container, "app": "wsecho", "address": "local", "port": 8080, "path": "/"},
    ]  # fmt: skip
    play = [
        {
            "name": "The manifest of a run on this machine.",
            "hosts": "th",
            "gather_facts": True,
            "roles": [
                {
                    "role": "run_manifest",
                    "run_manifest_run_id": "manifest-test",
                    "run_manifest_run_dir": str(tmp_path / "run"),
                    "run_manifest_params": params,
                    "run_manifest_targets": targets,
                    "run_manifest_state_dir": str(state),
                    "run_manifest_vm_state_file": str(state / "vm_target.json"),
                }
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(play))
    env = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_ROLES_PATH": str(ROOT / "roles")}
    result = subprocess.run(
        [
            str(Path(sys.executable).with_name("ansible-playbook")),
            "-i",
            "inventory.yml",
            "play.yml",
        ],
        cwd=tmp_path,
        env={**env, "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg")},
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    manifest: dict[str, Any] = json.loads((tmp_path / "run" / "manifest.json").read_text())
    return manifest


def test_manifest_records_cpu_facts_and_the_pinning_in_force(
    tmp_path: Path, pinned_container: str
) -> None:
    manifest = run_manifest(tmp_path, pinned_container)
    host = manifest["hosts"]["th"]
    online = Path("/sys/devices/system/cpu/online").read_text().strip()
    assert host["cpus_online"] == online
    assert host["vhost_net"] is Path("/dev/vhost-net").exists()
    irqbalance = subprocess.run(["pgrep", "-x", "irqbalance"], capture_output=True, check=False)
    assert host["irqbalance"] is (irqbalance.returncode == 0)
    smt = Path("/sys/devices/system/cpu/smt/control")
    assert host["smt"]["control"] == (smt.read_text().strip() if smt.exists() else None)
    governors = sorted(
        {
            p.read_text().strip()
            for p in Path("/sys/devices/system/cpu").glob("cpu*/cpufreq/scaling_governor")
        }
    )
    assert host["cpu_governor"] == (",".join(governors) or None)
    assert host["cpu_model"]

    container = manifest["targets"]["container"]
    assert container["pinning"] == {"cpuset": "1"}  # docker inspect, read back
    assert container["server_cpus"] == [1]
    assert container["client_hosts"] == {"th": "local", "client2": "remote"}
    vm = manifest["targets"]["vm"]
    assert vm["vm"] == {"vcpus": 1, "cpus": [1], "workers": 1, "vhost_net": False}
    # No such domain here: nothing read back, which the report then warns about.
    assert vm["pinning"] == {"vcpupin": [], "emulatorpin": None}
