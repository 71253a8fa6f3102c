"""host_tuning on a lab container: raise-only netns sysctl values in force, host-global keys left
alone, the kit's units (and only they) get the file limit, per-host shares checked, and teardown
puts back exactly what was found. The teardown test runs last (pytest keeps file order)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from testinfra.host import Host

SCENARIO = Path(__file__).resolve().parents[1]
NOFILE = 10000 + 4096
BEFORE = "/var/lib/echolab/host_tuning/before.json"


@pytest.mark.parametrize(
    ("key", "wanted"),
    [
        ("net.core.somaxconn", "10000"),  # prepare.yml set 20000: kept
        ("net.ipv4.tcp_max_syn_backlog", "10000"),
        ("net.ipv4.tcp_rmem", "4096 131072 16777216"),
        ("net.ipv4.tcp_wmem", "4096 16384 16777216"),
    ],
)
def test_netns_limits_raised_never_lowered(host: Host, key: str, wanted: str) -> None:
    """Each of the container's own limits is the larger of the value found (before.json) and the
    kit's, field by field: raised where the host had less, kept where it had more."""
    found = json.loads(host.file(BEFORE).content_string)["sysctl"][key].split()
    expected = [str(max(int(f), int(w))) for f, w in zip(found, wanted.split(), strict=True)]
    assert host.check_output(f"sysctl -n {key}").split() == expected


def test_somaxconn_above_the_kit_is_kept(host: Host) -> None:
    """prepare.yml gave the host somaxconn 20000, above the kit's 10000: still 20000."""
    assert host.check_output("sysctl -n net.core.somaxconn") == "20000"


@pytest.mark.parametrize(
    ("key", "value"),
    [("net.ipv4.ip_local_port_range", "1024 65535"), ("net.ipv4.tcp_tw_reuse", "1")],
)
def test_client_settings_in_force(host: Host, key: str, value: str) -> None:
    """The client host's port range is widened and tcp_tw_reuse set."""
    assert host.check_output(f"sysctl -n {key}").split() == value.split()


def test_host_global_keys_left_alone(host: Host) -> None:
    """fs.file-max and fs.nr_open are the machine's: the role did not touch them."""
    for key in ("fs/file-max", "fs/nr_open"):
        inside = host.file(f"/proc/sys/{key}").content_string.strip()
        assert inside == Path(f"/proc/sys/{key}").read_text().strip()


def test_sysctl_dropin_applies_and_explains(host: Host) -> None:
    """The drop-in holds the applied keys and names each key it could not apply, with why."""
    dropin = host.file("/etc/sysctl.d/90-echolab.conf")
    assert dropin.mode == 0o644
    text = dropin.content_string
    assert "\nnet.core.somaxconn = 20000\n" in text
    assert "# fs.file-max = 2097152  NOT APPLIED: host-global, left alone" in text
    assert "# net.core.rmem_max = 16777216  NOT APPLIED: cannot be set from inside" in text
    assert "# net.netfilter.nf_conntrack_max" in text
    assert not any(line.startswith("fs.") for line in text.splitlines())


def test_no_limits_for_every_service_or_session(host: Host) -> None:
    """No DefaultLimitNOFILE drop-in, no limits.d file, no modprobe files inside a container."""
    for path in (
        "/etc/systemd/system.conf.d/90-echolab.conf",
        "/etc/security/limits.d/90-echolab.conf",
        "/etc/modules-load.d/90-echolab.conf",
        "/etc/modprobe.d/90-echolab.conf",
    ):
        assert not host.file(path).exists, path


def _unit_hard_nofile(host: Host, name: str) -> int:
    host.check_output(f"systemctl start echolab-{name}.service")
    return int(host.file(f"/run/echolab-{name}.nofile").content_string)


def test_kit_unit_below_the_plan_is_raised(host: Host) -> None:
    """A kit unit whose limit is below the plan's gets a drop-in, and its process the limit."""
    assert host.file("/etc/systemd/system/echolab-lowlimit.service.d/90-echolab-nofile.conf").exists
    assert _unit_hard_nofile(host, "lowlimit") == NOFILE


def test_kit_unit_above_the_plan_is_kept(host: Host) -> None:
    """A kit unit whose limit is already above the plan's gets no drop-in and keeps it."""
    assert not host.file("/etc/systemd/system/echolab-highlimit.service.d").exists
    assert _unit_hard_nofile(host, "highlimit") == 19000


def _playbook(playbook: str, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", PY_COLORS="0")
    return subprocess.run(
        [
            "ansible-playbook",
            "-i",
            os.environ["MOLECULE_INVENTORY_FILE"],
            *(["--check"] if check else []),
            str(SCENARIO / playbook),
            *extra,
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )


def _said(proc: subprocess.CompletedProcess[str]) -> str:
    """The playbook's output with the line wrapping of Ansible's YAML results undone."""
    return " ".join(proc.stdout.split())


def test_client_share_that_cannot_fit_is_refused() -> None:
    """70,000 client connections from one source address exceed the port range: a clear failure."""
    proc = _playbook("converge.yml", "-e", "host_tuning_client_connections=70000")
    assert proc.returncode != 0
    assert "does not fit" in _said(proc)
    assert "ephemeral ports" in _said(proc)
    assert "hard limit of PID 1" in _said(proc)


def test_server_share_skips_the_port_check() -> None:
    """A test host that is not a client is not held to the port range (only to its file limit)."""
    proc = _playbook(
        "converge.yml",
        "-e",
        "host_tuning_client_connections=0",
        "-e",
        "host_tuning_server_connections=70000",
    )
    assert "hard limit of PID 1" in _said(proc)
    assert "ephemeral ports" not in _said(proc)


def test_source_addresses_multiply_the_port_capacity() -> None:
    """Two source addresses hold 2 x the port range per destination: 70,000 fit the ports."""
    proc = _playbook(
        "converge.yml",
        "-e",
        "host_tuning_client_connections=70000",
        "-e",
        "host_tuning_source_addresses=2",
    )
    assert "hard limit of PID 1" in _said(proc)
    assert "ephemeral ports" not in _said(proc)


def test_teardown_restores_what_was_found(host: Host) -> None:
    """After teardown every key holds its recorded before-value (somaxconn still 20000), the unit
    drop-in is gone and the unit's own limit is back, /proc/sys is read-only again."""
    before = json.loads(host.file(BEFORE).content_string)
    assert before["sysctl"]["net.core.somaxconn"] == "20000"
    proc = _playbook("teardown.yml", check=False)
    assert proc.returncode == 0, proc.stdout
    for key, value in before["sysctl"].items():
        assert host.check_output(f"sysctl -n {key}").split() == value.split(), key
    assert host.check_output("sysctl -n net.core.somaxconn") == "20000"
    assert not host.file(
        "/etc/systemd/system/echolab-lowlimit.service.d/90-echolab-nofile.conf"
    ).exists
    assert _unit_hard_nofile(host, "lowlimit") == 1024
    assert not host.file("/etc/sysctl.d/90-echolab.conf").exists
    assert not host.file("/var/lib/echolab/host_tuning").exists
    assert host.check_output("findmnt -no OPTIONS /proc/sys").split(",")[0] == "ro"
