"""host_tuning on a lab container: netns sysctl values in force, host-global keys left alone,
drop-ins written, limits in force for services, and a plan that cannot fit refused clearly."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCENARIO = Path(__file__).resolve().parents[1]
NOFILE = 10000 + 4096


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("net.core.somaxconn", "10000"),
        ("net.ipv4.tcp_max_syn_backlog", "10000"),
        ("net.ipv4.ip_local_port_range", "1024 65535"),
        ("net.ipv4.tcp_tw_reuse", "1"),
        ("net.ipv4.tcp_rmem", "4096 131072 16777216"),
        ("net.ipv4.tcp_wmem", "4096 16384 16777216"),
    ],
)
def test_netns_sysctl_in_force(host, key: str, value: str) -> None:
    """The container's own network-namespace keys carry the planned values."""
    out = host.check_output(f"sysctl -n {key}")
    assert out.split() == value.split()


def test_host_global_keys_left_alone(host) -> None:
    """fs.file-max and fs.nr_open are the machine's: the role did not touch them."""
    for key in ("fs/file-max", "fs/nr_open"):
        inside = host.file(f"/proc/sys/{key}").content_string.strip()
        assert inside == Path(f"/proc/sys/{key}").read_text().strip()


def test_sysctl_dropin_applies_and_explains(host) -> None:
    """The drop-in holds the applied keys and names each key it could not apply, with why."""
    dropin = host.file("/etc/sysctl.d/90-echolab.conf")
    assert dropin.mode == 0o644
    text = dropin.content_string
    assert "\nnet.core.somaxconn = 10000\n" in text
    assert "# fs.file-max = 2097152  NOT APPLIED: host-global, left alone" in text
    assert "# net.core.rmem_max = 16777216  NOT APPLIED: cannot be set from inside" in text
    assert "# net.netfilter.nf_conntrack_max" in text
    assert not any(line.startswith("fs.") for line in text.splitlines())


def test_session_limits_file(host) -> None:
    """Login sessions get soft = hard = connections + headroom, root included."""
    text = host.file("/etc/security/limits.d/90-echolab.conf").content_string
    lines = [line.split() for line in text.splitlines() if not line.startswith("#")]
    for who in ("*", "root"):
        for kind in ("soft", "hard"):
            assert [who, kind, "nofile", str(NOFILE)] in lines


def test_services_get_the_file_limit(host) -> None:
    """A service started after the role runs with the raised limit."""
    assert host.check_output("systemctl show --property=DefaultLimitNOFILE --value") == str(NOFILE)
    out = host.check_output(
        "systemd-run --quiet --wait --pipe --collect sh -c 'ulimit -n; ulimit -Hn'"
    )
    assert out.split() == [str(NOFILE), str(NOFILE)]


def _converge_check(*extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", PY_COLORS="0")
    return subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            "--check",
            str(SCENARIO / "converge.yml"),
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )


def test_plan_that_cannot_fit_is_refused() -> None:
    """70,000 connections from one source address exceed the port range: a clear failure."""
    proc = _converge_check("-e", "host_tuning_connections=70000")
    assert proc.returncode != 0
    assert "does not fit" in proc.stdout
    assert "ephemeral ports" in proc.stdout
    assert "hard limit of PID 1" in proc.stdout


def test_bad_input_is_refused() -> None:
    """A connection count that is not a number fails argument validation."""
    proc = _converge_check("-e", "host_tuning_connections=lots")
    assert proc.returncode != 0
    assert "host_tuning_connections" in proc.stdout + proc.stderr
