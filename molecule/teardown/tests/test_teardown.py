"""playbooks/teardown.yml, run by these tests: once in check mode (it changes nothing), then for
real (no drop-in, no network, no bridge, no venv, kernel values and the read-only /proc/sys as the
lab container had them before converge, Docker's daemon.json byte for byte as the host had it, the
units of Docker and libvirt enabled and running as before, the Docker package the kit installed
removed as asked), then once more (nothing left to change, nothing started again)."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from testinfra.host import Host

# Written by converge.yml: the values before any role ran, and a copy of host_tuning's own record.
BEFORE = "/root/echolab-molecule-before.json"
TUNING_BEFORE = "/root/echolab-molecule-host_tuning-before.json"
UNITS = [
    "docker.socket",
    "docker.service",
    "containerd.service",
    "libvirtd.socket",
    "libvirtd.service",
    "virtlogd.socket",
    "virtlockd.socket",
    "libvirt-guests.service",
]
DAEMON_JSON = "/etc/docker/daemon.json"
RECORDS = [
    "/var/lib/echolab/host_state/docker_host.json",
    "/var/lib/echolab/host_state/libvirt_host.json",
]
# Docker's packages that the host did not have go (the option is tested here); libvirt's stay (the
# default), so its units are there to be put back as the host had them: not running.
REMOVE = ["-e", "docker_host_teardown_remove_packages=true"]
RECAP = re.compile(
    r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M
)


pytestmark = pytest.mark.usefixtures("teardowns")


class Run(NamedTuple):
    """One teardown: its return code, output, recap of the lab host, and the host's state after."""

    returncode: int
    output: str
    changed: int
    failed: int
    state: dict[str, Any]


class Teardowns(NamedTuple):
    converged: dict[str, Any]
    records: dict[str, dict[str, Any]]
    check: Run
    first: Run
    second: Run


def _units(host: Host) -> dict[str, dict[str, str]]:
    properties = "--property=LoadState --property=UnitFileState --property=ActiveState"
    units = {}
    for unit in UNITS:
        shown = host.check_output(f"systemctl show {properties} {unit}")
        units[unit] = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    return units


def _state(host: Host) -> dict[str, Any]:
    """What teardown may change of the host's own: units, daemon.json, the kit's records."""
    daemon = host.file(DAEMON_JSON)
    return {
        "units": _units(host),
        "daemon_json": (daemon.content_string, oct(daemon.mode)) if daemon.exists else None,
        "records": [path for path in RECORDS if host.file(path).exists],
    }


def _steady(state: dict[str, Any]) -> dict[str, Any]:
    """The state without libvirtd.service's ActiveState: socket-activated, it exits after 120 s
    idle and any call to libvirt (converge's, teardown's) starts it again."""
    units = {unit: dict(shown) for unit, shown in state["units"].items()}
    units["libvirtd.service"].pop("ActiveState", None)
    return {**state, "units": units}


def _teardown(host: Host, *args: str) -> Run:
    """playbooks/teardown.yml on the scenario's inventory, as molecule would run a playbook."""
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    playbook = Path(env["MOLECULE_PROJECT_DIRECTORY"]) / "playbooks" / "teardown.yml"
    inventory = Path(env["MOLECULE_INVENTORY_FILE"]).parent
    proc = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), *args, str(playbook)],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    output = proc.stdout + proc.stderr
    recaps = {m[1]: (int(m[3]), int(m[5])) for m in RECAP.finditer(proc.stdout)}
    changed, failed = recaps.get(f"echolab-{env['MOLECULE_SCENARIO_NAME']}", (-1, -1))
    return Run(proc.returncode, output, changed, failed, _state(host))


@pytest.fixture(scope="module")
def teardowns(host: Host) -> Teardowns:
    """The converged host's state, then teardown in check mode, for real, and for real again."""
    converged = _state(host)
    records = {Path(path).stem: _json(host, path) for path in converged["records"]}
    check = _teardown(host, "--check", *REMOVE)
    first = _teardown(host, *REMOVE)
    second = _teardown(host, *REMOVE)
    return Teardowns(converged, records, check, first, second)


def test_records_hold_the_host_before_the_kit(teardowns: Teardowns) -> None:
    """Each role recorded its own things only, as the host had them before the kit."""
    docker, libvirt = teardowns.records["docker_host"], teardowns.records["libvirt_host"]
    assert docker["format_version"] == 1
    assert list(docker["files"]) == [DAEMON_JSON]
    daemon = docker["files"][DAEMON_JSON]
    assert base64.b64decode(daemon["content"]) == b'{"log-level":"warn"}'
    assert (daemon["mode"], daemon["owner"]) == ("0640", "root")
    assert docker["packages_missing"] == ["python3-docker"]
    assert docker["units"]["docker.service"]["UnitFileState"] == "disabled"
    assert libvirt["files"] == {}, "libvirt_host changes no file: nothing of Docker's either"
    assert "libvirt-daemon-system" in libvirt["packages_missing"]
    assert libvirt["units"]["libvirtd.socket"]["LoadState"] == "not-found"


def test_check_mode_teardown_changes_nothing(teardowns: Teardowns) -> None:
    """Teardown in check mode on the converged host reports what it would change, fails nothing,
    and leaves the units, daemon.json and the records as they were."""
    check = teardowns.check
    assert (check.returncode, check.failed) == (0, 0), check.output[-20000:]
    assert check.changed > 0, check.output[-20000:]
    assert _steady(check.state) == _steady(teardowns.converged)
    assert len(check.state["records"]) == 2, check.state


def test_second_teardown_changes_nothing(teardowns: Teardowns) -> None:
    """The first teardown changes the host; a second finds nothing to do, starts nothing (a
    stopped dockerd or libvirtd is not woken) and fails nothing."""
    first, second = teardowns.first, teardowns.second
    assert (first.returncode, first.failed) == (0, 0), first.output[-20000:]
    assert first.changed > 0, first.output[-20000:]
    assert (second.returncode, second.failed) == (0, 0), second.output[-20000:]
    assert second.changed == 0, second.output[-20000:]
    assert second.state == first.state


@pytest.mark.parametrize(
    "path",
    [
        "/etc/sysctl.d/90-echolab.conf",
        "/etc/systemd/system.conf.d/90-echolab.conf",
        "/etc/security/limits.d/90-echolab.conf",
        "/var/lib/echolab/host_tuning",
        "/var/lib/echolab/host_state/docker_host.json",
        "/var/lib/echolab/host_state/libvirt_host.json",
        "/opt/echolab/venv",
        "/opt/echolab/wheelhouse",
    ],
)
def test_kit_files_removed(host: Host, path: str) -> None:
    """Every file and directory the roles wrote is gone."""
    assert not host.file(path).exists


@pytest.mark.parametrize(
    "path",
    [
        "/etc/libvirt/qemu/networks/echolab.xml",
        "/etc/libvirt/qemu/networks/autostart/echolab.xml",
        "/run/libvirt/network/echolab.xml",
        "/sys/class/net/bridge43",
    ],
)
def test_network_and_bridge_removed(host: Host, path: str) -> None:
    """The libvirt network is undefined (read from its files: libvirtd is stopped again) and its
    bridge device is gone."""
    assert not host.file(path).exists


def _json(host: Host, path: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(host.file(path).content_string)
    return record


def test_kernel_values_restored(host: Host) -> None:
    """Every key host_tuning recorded is back at the value the host had before converge (recorded
    by converge.yml before any role ran), and host_tuning recorded those same values."""
    before = _json(host, BEFORE)["sysctl"]
    recorded = _json(host, TUNING_BEFORE)["sysctl"]
    assert recorded, "host_tuning recorded no key"
    for key, value in recorded.items():
        now = host.check_output(f"sysctl -n {key}").split()
        assert key in before, f"{key} was not readable before converge"
        assert str(value).split() == before[key].split(), f"{key}: host_tuning recorded {value}"
        assert now == before[key].split(), f"{key} is {now}, was {before[key]} before converge"


def test_proc_sys_read_only_again(host: Host) -> None:
    """/proc/sys is mounted read-only again, as the container started."""
    options = host.check_output("findmnt --noheadings --output OPTIONS /proc/sys")
    assert options.split(",")[0] == "ro"


def test_services_back_to_default_limit(host: Host) -> None:
    """systemd hands services the open-file limit it had before converge."""
    now = host.check_output("systemctl show --property=DefaultLimitNOFILE --value")
    assert now == _json(host, BEFORE)["DefaultLimitNOFILE"]


def test_daemon_json_back_as_it_was(host: Host) -> None:
    """daemon.json holds the host's own bytes and mode again, not the kit's userland-proxy."""
    before = _json(host, BEFORE)["daemon_json"]
    daemon = host.file(DAEMON_JSON)
    assert daemon.content_string == before["content"] == '{"log-level":"warn"}'
    assert oct(daemon.mode) == before["mode"] == "0o640"


def test_host_had_its_own_docker(host: Host) -> None:
    """The converged host had what the teardown must put back: Docker disabled and stopped, its
    containerd enabled and running, libvirt not installed."""
    before = _json(host, BEFORE)["units"]
    states = {
        u: (before[u]["LoadState"], before[u]["UnitFileState"], before[u]["ActiveState"])
        for u in before
    }
    assert states["docker.socket"] == ("loaded", "disabled", "inactive"), states
    assert states["docker.service"] == ("loaded", "disabled", "inactive"), states
    assert states["containerd.service"] == ("loaded", "enabled", "active"), states
    assert states["libvirtd.socket"][0] == "not-found", states


@pytest.mark.parametrize("unit", UNITS)
def test_units_back_as_they_were(host: Host, unit: str) -> None:
    """A unit the host had is enabled and running as before; one that came with the kit's
    packages is gone with them, or disabled and stopped where a package stays."""
    before = _json(host, BEFORE)["units"][unit]
    now = _units(host)[unit]
    if before["LoadState"] == "loaded":
        assert (now["UnitFileState"], now["ActiveState"]) == (
            before["UnitFileState"],
            before["ActiveState"],
        ), now
    elif now["LoadState"] == "loaded":
        assert now["UnitFileState"] != "enabled", now
        assert now["ActiveState"] == "inactive", now


def test_packages_removed_only_as_asked(host: Host) -> None:
    """Of Docker's packages, the one the kit installed is gone (asked for) and the engine the host
    had stays; libvirt's stay (the default)."""
    assert not host.package("python3-docker").is_installed
    for package in ("docker.io", "libvirt-daemon-system", "qemu-system-x86", "python3-libvirt"):
        assert host.package(package).is_installed, package
