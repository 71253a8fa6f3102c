"""host_tuning's probe (roles/host_tuning/files/probe.py): the raise-only plan of each key and the
open-file ceiling, on literal values."""

from __future__ import annotations

import pytest
from module_loader import load_module

probe = load_module("host_tuning_probe", "roles/host_tuning/files/probe.py")


@pytest.mark.parametrize(
    ("key", "current", "wanted", "planned"),
    [
        ("net.core.somaxconn", "4096", "10000", "10000"),  # below: raised
        ("net.core.somaxconn", "65535", "10000", "65535"),  # above: kept
        ("fs.file-max", "9223372036854775807", "2097152", "9223372036854775807"),
        (
            "net.ipv4.tcp_rmem",
            "4096 131072 33554432",
            "4096 131072 16777216",
            "4096 131072 33554432",
        ),
        ("net.ipv4.tcp_wmem", "4096 16384 4194304", "4096 16384 16777216", "4096 16384 16777216"),
        ("net.ipv4.ip_local_port_range", "32768 60999", "1024 65535", "1024 65535"),
        ("net.ipv4.ip_local_port_range", "2000 61000", "1024 60000", "1024 61000"),  # widened
        ("net.ipv4.tcp_tw_reuse", "2", "1", "1"),  # a choice, not a limit
        ("net.netfilter.nf_conntrack_max", None, "262144", "262144"),  # absent: the wanted value
    ],
)
def test_raised_never_lowers(key: str, current: str | None, wanted: str, planned: str) -> None:
    """A limit is raised to the wanted value, a higher host value kept; a range only widens."""
    assert probe.raised(key, current, wanted) == planned


def test_raised_refuses_values_it_cannot_compare() -> None:
    """A wanted value whose shape differs from the host's is an error, not a silent overwrite."""
    with pytest.raises(ValueError, match="cannot compare"):
        probe.raised("net.ipv4.tcp_rmem", "4096 131072 6291456", "16777216")


def test_nofile_ceiling() -> None:
    """Without CAP_SYS_RESOURCE the hard limit of PID 1 caps every service; with it, fs.nr_open."""
    assert probe.nofile_ceiling(20000, False, 1048576) == (
        20000,
        "hard limit of PID 1, no CAP_SYS_RESOURCE to raise it",
    )
    assert probe.nofile_ceiling(20000, True, 1048576) == (1048576, "fs.nr_open")
