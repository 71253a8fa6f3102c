"""The preflight refuses a VM target for a separate client host while the bridge is isolated;
with a routed bridge, the route check refuses, before any load, a separate client host whose route
to the VM's bridge subnet is its default route off the machine (the lab's client host: no route to
10.0.0.0/24), and gives `local` targets the test host's address as that client reaches it, never a
host name; a quick run of the container targets from both client hosts then loads them at that
address, with the run token.

A lab of its own (test host + separate client host, named for this test); the check is read-only
(`ip route get`), and the run's load goes only to the test host inside the lab's Docker network.
Run under `flock /tmp/echolab-lab.lock`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NAME = f"echolab-routes-{os.getpid()}"
CLIENT = f"{NAME}-client"

pytestmark = pytest.mark.timeout(1200)


def _playbook(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        ["ansible-playbook", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
        timeout=900,
    )


def _docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=False)


@pytest.fixture(scope="module")
def inventory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A test host that is also a client, and a separate client host; removed afterwards."""
    lab = _playbook(
        "playbooks/lab.yml",
        "-e",
        "lab_client=true",
        "-e",
        f"lab_host_name={NAME}",
        "-e",
        f"lab_host_client_name={CLIENT}",
    )
    try:
        assert lab.returncode == 0, lab.stdout[-8000:]
        host = {
            "ansible_connection": "community.docker.docker",
            "ansible_python_interpreter": "/usr/bin/python3",
        }
        path = tmp_path_factory.mktemp("inventory") / "hosts.json"
        path.write_text(
            json.dumps(
                {
                    "all": {
                        "children": {
                            "testhosts": {"hosts": {NAME: host}},
                            "clients": {"hosts": {NAME: host, CLIENT: host}},
                        }
                    }
                }
            )
        )
        yield path
    finally:
        for name in (NAME, CLIENT):
            _docker("rm", "-f", "-v", name)
            _docker("volume", "rm", f"{name}-docker")


CONTAINERS = [
    {"name": "container", "kind": "container", "address": "local", "port": 8080, "path": "/",
     "instance": "echolab-wsecho", "app": "wsecho"},
    {"name": "baseline", "kind": "baseline", "address": "local", "port": 8081, "path": "/",
     "instance": "echolab-nodejs-ws", "app": "nodejs_ws"},
]  # fmt: skip


def _preflight(inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _playbook(
        "-i", str(inventory), "playbooks/preflight.yml", "-e", "echolab_profile=quick", *extra
    )


def _said(proc: subprocess.CompletedProcess[str]) -> str:
    """The output with Ansible's YAML line wrapping and quote doubling ('') undone."""
    return " ".join(proc.stdout.replace("''", "'").split())


@pytest.mark.lab
def test_vm_with_a_client_host_and_an_isolated_bridge_is_refused(inventory: Path) -> None:
    """The default (isolated) bridge with a separate client host: refused before anything, with
    the mode to set; the test host itself passes, and its bridge subnet and name are free."""
    proc = _preflight(inventory)
    assert proc.returncode != 0, proc.stdout[-8000:]
    said = _said(proc)
    assert (
        f"{CLIENT} cannot measure the VM target (10.0.0.42): it is a separate client host, and "
        f"the VM's bridge on {NAME} is isolated (bridge_forward_mode=isolated)" in said
    )
    assert "Set bridge_forward_mode=routed on the test host" in said
    assert "refusing to build the VM's bridge" not in said
    assert f"refusing to send load from {NAME}:" not in said


@pytest.mark.lab
def test_routed_bridge_waits_for_the_kits_route_and_refuses_the_default_route(
    inventory: Path,
) -> None:
    """Routed: at preflight the client's default route to 10.0.0.42 waits for the route setup
    adds (not checked yet); as the run stage checks it (nothing deferred), it is refused."""
    routed = ("-e", "bridge_forward_mode=routed")
    waiting = _preflight(inventory, *routed)
    assert waiting.returncode == 0, waiting.stdout[-8000:]
    assert f"{CLIENT}: vm by not checked yet: 10.0.0.42 via " in _said(waiting)
    assert "setup adds the route" in _said(waiting)

    strict = _preflight(inventory, *routed, "-e", "experiment_preflight_routes_defer_bridge=false")
    assert strict.returncode != 0, strict.stdout[-8000:]
    said = _said(strict)
    assert f"refusing to send load from {CLIENT}: target vm: route to 10.0.0.42 is `" in said
    assert "(the default route)`: the bridge subnet must be routed through the test host" in said


@pytest.mark.lab
def test_local_targets_get_the_test_host_address_the_client_reaches(inventory: Path) -> None:
    """Without the VM, both clients pass; the separate one uses the test host's IP address."""
    address = _docker(
        "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", NAME
    ).stdout.split()[0]
    proc = _preflight(inventory, "-e", json.dumps({"echolab_targets": CONTAINERS[:1]}))
    assert proc.returncode == 0, proc.stdout[-8000:]
    shown = [line for line in proc.stdout.splitlines() if ": container by " in line]
    assert any(f"{CLIENT}: container by {address} dev " in line for line in shown), shown
    assert any(f"{NAME}: container by local 127.0.0.1 dev lo" in line for line in shown), shown


@pytest.mark.lab
def test_containers_measured_from_both_client_hosts(inventory: Path, tmp_path: Path) -> None:
    """site.yml (quick, container targets): both client hosts load each target at the address the
    route check gave them, wsswarm checks the run token, no connection fails."""
    address = _docker(
        "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", NAME
    ).stdout.split()[0]
    proc = _playbook(
        "-i", str(inventory), "site.yml", "-e", "echolab_profile=quick",
        "-e", json.dumps({"echolab_targets": CONTAINERS}),
        "-e", f"echolab_results_dir={tmp_path}",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-12000:]
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    token = _docker("exec", NAME, "cat", "/var/lib/echolab/token/run-token").stdout.strip()
    assert len(token) == 32
    for target, port in (("container", 8080), ("baseline", 8081)):
        status = json.loads((run / target / "status.json").read_text())
        assert status["status"] == "ok", status
        for host, url in ((NAME, f"ws://127.0.0.1:{port}/"), (CLIENT, f"ws://{address}:{port}/")):
            assert status["hosts"][host]["url"] == url, status
            summary = json.loads((run / target / host / "summary.json").read_text())
            assert summary["connections"]["failed"] == 0, summary
            assert summary["roundtrips"] > 0, summary
