"""The preflight stage (playbooks/preflight.yml) in check mode: the scale profile (100,000
connections) over 2 client hosts with 2 source addresses each passes; over 1 client host with 1
address, or through docker-proxy, it is refused with the arithmetic. The plan comes from the
real experiment_plan role (the inventory's groups and echolab_source_addresses); the check is
experiment_preflight's `capacity` entry point as site.yml runs it. Only the test host `th` runs
(--limit), on this machine (local connection, read-only); the client hosts are never
contacted."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# The preflight_check fixture (tests/conftest.py): inventory dict and arguments in, process out.
PreflightCheck = Callable[..., "subprocess.CompletedProcess[str]"]


def run_preflight(
    check: PreflightCheck, clients: dict[str, list[str]], *extra: str, docker_proxy: bool = False
) -> subprocess.CompletedProcess[str]:
    """The preflight stage against `th` (this machine) with docker-proxy in the containers' path
    or not (container_target_userland_proxy), and `clients` with their source addresses."""
    testhost = {
        "ansible_connection": "local",
        "ansible_python_interpreter": sys.executable,
        "container_target_userland_proxy": docker_proxy,
    }
    inventory: dict[str, Any] = {
        "all": {
            "children": {
                "testhosts": {"hosts": {"th": testhost}},
                "clients": {
                    "hosts": {
                        host: {"echolab_source_addresses": addresses} if addresses else {}
                        for host, addresses in clients.items()
                    }
                },
            }
        }
    }
    return check(inventory, "--limit", "th,localhost", *(extra or ("-e", "echolab_profile=scale")))


def test_scale_over_two_hosts_with_two_addresses_each_passes(
    preflight_check: PreflightCheck,
) -> None:
    """The scale profile (100,000): 25,000 connections per source address; the paths sized from
    the plan hold them."""
    two = {"c1": ["192.0.2.101", "192.0.2.102"], "c2": ["192.0.2.103", "192.0.2.104"]}
    result = run_preflight(preflight_check, two)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "container: wsecho 1 fd(s)/connection + 14, limit 101,024: holds 101,010" in (
        result.stdout
    )
    assert "failed=0" in result.stdout


def test_scale_over_one_host_with_one_address_is_refused(preflight_check: PreflightCheck) -> None:
    result = run_preflight(preflight_check, {"c1": []})
    assert result.returncode != 0, result.stdout
    assert (
        "client host c1: 100,000 connections from 1 source address(es) are 100,000 per address "
        "to one target, but one address has 64,512 ports (1024-65535) per destination"
    ) in " ".join(result.stdout.split())
    assert "Refuse a plan that a target's path cannot hold" in result.stdout


def test_scale_through_docker_proxy_is_refused_with_the_fix(
    preflight_check: PreflightCheck,
) -> None:
    """Enough source addresses, but docker-proxy reaches the container from one address: the
    message names the fix, the userland proxy off or host networking."""
    two = {"c1": ["192.0.2.101", "192.0.2.102"], "c2": ["192.0.2.103", "192.0.2.104"]}
    result = run_preflight(preflight_check, two, docker_proxy=True)
    assert result.returncode != 0, result.stdout
    out = " ".join(result.stdout.split())
    assert (
        "target container: docker-proxy reaches the container from one address, one port per "
        "connection: 100,000 connections need 100,000 ports, over the ~60,000 one address has "
        "to one destination: docker_host_userland_proxy: false (container_target_userland_proxy) "
        "or container_target_network_mode: host"
    ) in out
    assert "client host" not in out.split("does not fit")[1]


def dockerd_hard_nofile() -> int | None:
    """The hard open-file limit of this machine's dockerd, None when none runs."""
    found = subprocess.run(
        ["pgrep", "-o", "-x", "dockerd"], capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        return None
    for line in Path(f"/proc/{found.stdout.strip()}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[4])
    raise AssertionError("no 'Max open files' line")


def test_the_seed_run_through_docker_proxy_meets_this_machines_dockerd(
    preflight_check: PreflightCheck,
) -> None:
    """dockerd's limit read from /proc on this machine: under 60,007 open files (6 x 10,000 + 7)
    the seed plan through docker-proxy is refused with that number; with no dockerd running it
    is noted as not known, never guessed."""
    hard = dockerd_hard_nofile()
    result = run_preflight(
        preflight_check, {"c1": []}, "-e", "echolab_connections=10000", docker_proxy=True
    )
    out = " ".join(result.stdout.split())
    if hard is None:
        assert result.returncode == 0, result.stdout + result.stderr
        assert "docker-proxy's limit (dockerd's nofile) is not known yet" in out
    elif hard < 60_007:
        assert result.returncode != 0, result.stdout
        assert (
            "target container: docker-proxy holds 6 open file(s) per connection + 7: "
            f"6 x 10,000 + 7 = 60,007, but its limit (dockerd's nofile) is {hard:,}"
        ) in out
        assert "raise dockerd's LimitNOFILE" in out
    else:
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"docker-proxy 6 fd(s)/connection + 7, limit {hard:,}" in out


def test_the_entry_points_spec_refuses_bad_input(preflight_check: PreflightCheck) -> None:
    """Source addresses that are not a dict are refused by the argument spec, naming it."""
    result = run_preflight(
        preflight_check,
        {"c1": []},
        "-e",
        '{"echolab_connections": 100, "experiment_preflight_capacity_sources": "c1"}',
    )
    assert result.returncode != 0, result.stdout
    out = " ".join(result.stdout.split())
    assert (
        "argument 'experiment_preflight_capacity_sources' is of type str and we were unable "
        "to convert to dict"
    ) in out
    assert "Find dockerd" not in out


def test_the_daemons_own_setting_decides_when_the_inventory_leaves_it_open(
    preflight_check: PreflightCheck,
) -> None:
    """container_target_userland_proxy null: docker-proxy is in the path unless this machine's
    /etc/docker/daemon.json turns `userland-proxy` off (Docker's default is on)."""
    hard = dockerd_hard_nofile()
    daemon_json = Path("/etc/docker/daemon.json")
    settings = json.loads(daemon_json.read_text()) if daemon_json.exists() else {}
    result = run_preflight(
        preflight_check,
        {"c1": []},
        "-e",
        '{"echolab_connections": 10000, "container_target_userland_proxy": null}',
    )
    out = " ".join(result.stdout.split())
    if settings.get("userland-proxy", True):
        assert "container: docker-proxy 6 fd(s)/connection + 7" in out
    else:
        assert "container: wsecho 1 fd(s)/connection + 14" in out
        assert "docker-proxy" not in out.split("Say what each target's path holds")[1]
    assert (result.returncode != 0) == (
        settings.get("userland-proxy", True) and hard is not None and hard < 60_007
    ), result.stdout
