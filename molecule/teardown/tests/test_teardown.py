"""After playbooks/teardown.yml: no drop-in, no network, no bridge, no venv, kernel values and the
read-only /proc/sys as the lab container had them before converge."""

from __future__ import annotations

import json
from typing import Any

import pytest

# Written by converge.yml: the values before any role ran, and a copy of host_tuning's own record.
BEFORE = "/root/echolab-molecule-before.json"
TUNING_BEFORE = "/root/echolab-molecule-host_tuning-before.json"


@pytest.mark.parametrize(
    "path",
    [
        "/etc/sysctl.d/90-echolab.conf",
        "/etc/systemd/system.conf.d/90-echolab.conf",
        "/etc/security/limits.d/90-echolab.conf",
        "/var/lib/echolab/host_tuning",
        "/opt/echolab/venv",
        "/opt/echolab/wheelhouse",
    ],
)
def test_kit_files_removed(host, path: str) -> None:
    """Every file and directory the roles wrote is gone."""
    assert not host.file(path).exists


def test_network_and_bridge_removed(host) -> None:
    """The libvirt network is undefined and its bridge device is gone."""
    nets = host.check_output("virsh --connect qemu:///system net-list --all --name").split()
    assert "echolab" not in nets
    assert not host.file("/sys/class/net/bridge43").exists


def _json(host, path: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(host.file(path).content_string)
    return record


def test_kernel_values_restored(host) -> None:
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


def test_proc_sys_read_only_again(host) -> None:
    """/proc/sys is mounted read-only again, as the container started."""
    options = host.check_output("findmnt --noheadings --output OPTIONS /proc/sys")
    assert options.split(",")[0] == "ro"


def test_services_back_to_default_limit(host) -> None:
    """systemd hands services the open-file limit it had before converge."""
    now = host.check_output("systemctl show --property=DefaultLimitNOFILE --value")
    assert now == _json(host, BEFORE)["DefaultLimitNOFILE"]
