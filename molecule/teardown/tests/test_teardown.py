"""After playbooks/teardown.yml: no drop-in, no network, no bridge, no venv, kernel values and the
read-only /proc/sys as the lab container had them before converge."""

from __future__ import annotations

import pytest


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


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("net.core.somaxconn", "4096"),
        ("net.ipv4.ip_local_port_range", "32768 60999"),
        ("net.ipv4.tcp_tw_reuse", "2"),
    ],
)
def test_kernel_values_restored(host, key: str, value: str) -> None:
    """The container's network keys are back at the kernel defaults found before tuning."""
    assert host.check_output(f"sysctl -n {key}").split() == value.split()


def test_proc_sys_read_only_again(host) -> None:
    """/proc/sys is mounted read-only again, as the container started."""
    options = host.check_output("findmnt --noheadings --output OPTIONS /proc/sys")
    assert options.split(",")[0] == "ro"


def test_services_back_to_default_limit(host) -> None:
    """systemd no longer hands services the raised file limit."""
    assert host.check_output("systemctl show --property=DefaultLimitNOFILE --value") != "14096"
