"""host_tuning and source_addresses run for real by ansible-playbook inside a private network
namespace (ip netns), so only that namespace's own keys and interfaces change: raise-only tuning,
idempotence, check mode, teardown back to what was found, and bad input refused clearly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
IFACE = "echolab-sa0"

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def netns() -> Iterator[str]:
    """A private network namespace with a veth pair (IFACE and its peer), removed afterwards."""
    name = f"echolab-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                name,
                "ip",
                "link",
                "add",
                IFACE,
                "type",
                "veth",
                "peer",
                "name",
                "echolab-sa1",
            ],
            check=True,
        )
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def _in(ns: str, *argv: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, check=True
    ).stdout


def playbook_in(
    ns: str, *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`ansible-playbook ARGS` inside the network namespace `ns`."""
    return subprocess.run(
        ["ip", "netns", "exec", ns, str(BIN / "ansible-playbook"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=300,
    )


@pytest.fixture
def play(netns: str, tmp_path: Path) -> Run:
    """play(tasks, check=False, **vars): run tasks as a playbook on localhost inside the netns."""

    def run(
        tasks: list[dict[str, object]], check: bool = False, **vars_: object
    ) -> subprocess.CompletedProcess[str]:
        book = tmp_path / f"play-{uuid.uuid4().hex[:6]}.yml"
        book.write_text(
            yaml.safe_dump(
                [
                    {
                        "hosts": "localhost",
                        "connection": "local",
                        "gather_facts": False,
                        "vars": vars_,
                        "tasks": tasks,
                    }
                ]
            )
        )
        env = dict(
            os.environ,
            ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        )
        return playbook_in(
            netns,
            "-i",
            "localhost,",
            "-e",
            f"ansible_python_interpreter={sys.executable}",
            *(["--check"] if check else []),
            str(book),
            env=env,
        )

    return run


def _recap(proc: subprocess.CompletedProcess[str]) -> dict[str, int]:
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("localhost "))
    return {k: int(v) for k, v in (f.split("=") for f in line.split(":", 1)[1].split())}


def _role(name: str, entry: str = "main") -> list[dict[str, object]]:
    return [{"ansible.builtin.include_role": {"name": name, "tasks_from": entry}}]


# -- host_tuning ---------------------------------------------------------------------------------

NETNS_KEYS = (
    "net.core.somaxconn",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_tw_reuse",
    "net.ipv4.tcp_max_syn_backlog",
)


@pytest.fixture
def tuning_vars(tmp_path: Path) -> dict[str, object]:
    """Only this namespace's own keys: machine-wide ones (fs.*, rmem_max, backlog, conntrack) and
    systemd units are dropped, so the test changes nothing outside the namespace on any machine."""
    return {
        "host_tuning_sysctl": {
            "fs.file-max": None,
            "fs.nr_open": None,
            "net.core.rmem_max": None,
            "net.core.wmem_max": None,
            "net.core.netdev_max_backlog": None,
        },
        "host_tuning_conntrack": False,
        "host_tuning_units": [],
        "host_tuning_sysctl_file": str(tmp_path / "etc/90-echolab.conf"),
        "host_tuning_state_dir": str(tmp_path / "state"),
    }


def test_host_tuning_raises_only_and_teardown_restores(
    netns: str, play: Run, tuning_vars: dict[str, object], tmp_path: Path
) -> None:
    """A host already above the kit (somaxconn 30000) keeps it through setup and teardown; other
    keys are tuned, a second pass and check mode change nothing, teardown puts back every value."""
    (tmp_path / "etc").mkdir()
    _in(netns, "sysctl", "-w", "net.core.somaxconn=30000")
    found = {k: _in(netns, "sysctl", "-n", k).split() for k in NETNS_KEYS}

    assert _recap(play(_role("host_tuning"), **tuning_vars))["changed"] > 0
    tuned = {k: _in(netns, "sysctl", "-n", k).split() for k in NETNS_KEYS}
    assert tuned["net.core.somaxconn"] == ["30000"]
    assert tuned["net.ipv4.tcp_max_syn_backlog"] == ["10000"]
    assert tuned["net.ipv4.ip_local_port_range"] == ["1024", "65535"]
    assert tuned["net.ipv4.tcp_tw_reuse"] == ["1"]
    before = json.loads((tmp_path / "state/before.json").read_text())
    assert before["sysctl"]["net.core.somaxconn"] == "30000"

    assert _recap(play(_role("host_tuning"), **tuning_vars))["changed"] == 0
    assert _recap(play(_role("host_tuning"), check=True, **tuning_vars))["changed"] == 0

    assert _recap(play(_role("host_tuning", "teardown"), **tuning_vars))["changed"] > 0
    assert {k: _in(netns, "sysctl", "-n", k).split() for k in NETNS_KEYS} == found
    assert not (tmp_path / "etc/90-echolab.conf").exists()
    assert not Path(str(tuning_vars["host_tuning_state_dir"])).exists()


def test_host_tuning_client_share_port_check(play: Run, tuning_vars: dict[str, object]) -> None:
    """The port check holds a client share to N source addresses x the range, per destination;
    a host without a client share is not checked."""
    over = {**tuning_vars, "host_tuning_fd_headroom": 0, "host_tuning_nofile": 1024}
    refused = play(
        _role("host_tuning"),
        check=True,
        **over,
        host_tuning_client_connections=70000,
        host_tuning_server_connections=0,
    )
    assert refused.returncode != 0
    assert "70000 client connections from 1 source address(es)" in refused.stdout
    assert "ephemeral ports" in refused.stdout
    for extra in ({"host_tuning_source_addresses": 2}, {"host_tuning_client_connections": 0}):
        args = {
            **over,
            "host_tuning_client_connections": 70000,
            "host_tuning_server_connections": 70000,
            **extra,
        }
        assert "ephemeral ports" not in play(_role("host_tuning"), check=True, **args).stdout


@pytest.mark.parametrize(
    ("entry", "bad", "message"),
    [
        ("main", {"host_tuning_client_connections": "lots"}, "host_tuning_client_connections"),
        ("main", {"host_tuning_source_addresses": 0}, "host_tuning got invalid input"),
        (
            "main",
            {"host_tuning_server_connections": 0, "host_tuning_client_connections": 0},
            "not both 0",
        ),
        ("main", {"host_tuning_units": ["rm -rf /"]}, "service unit names"),
        ("teardown", {"host_tuning_unload_conntrack": "lots"}, "host_tuning_unload_conntrack"),
    ],
)
def test_host_tuning_bad_input_is_refused(
    play: Run,
    tuning_vars: dict[str, object],
    entry: str,
    bad: dict[str, object],
    message: str,
) -> None:
    """Bad input to main or teardown fails with a message naming it, and changes nothing."""
    proc = play(_role("host_tuning", entry), **{**tuning_vars, **bad})
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not Path(str(tuning_vars["host_tuning_state_dir"])).exists()


# -- source_addresses ----------------------------------------------------------------------------


def _addresses(ns: str) -> set[str]:
    links = json.loads(_in(ns, "ip", "-j", "addr", "show", "dev", IFACE))
    return {f"{a['local']}/{a['prefixlen']}" for link in links for a in link["addr_info"]}


def test_source_addresses_add_and_remove(netns: str, play: Run, tmp_path: Path) -> None:
    """Adds the missing addresses (check mode first changes nothing), a second pass changes
    nothing, teardown removes exactly what it added and keeps the address the host had."""
    _in(netns, "ip", "addr", "add", "10.213.0.10/24", "dev", IFACE)
    wanted = {
        "source_addresses_interface": IFACE,
        "source_addresses_addresses": ["10.213.0.10/24", "10.213.0.11", "10.213.0.12/24"],
        "source_addresses_state_dir": str(tmp_path / "sa"),
    }

    assert _recap(play(_role("source_addresses"), check=True, **wanted))["changed"] == 1
    assert _addresses(netns) == {"10.213.0.10/24"}

    assert _recap(play(_role("source_addresses"), **wanted))["changed"] == 1
    assert _addresses(netns) == {"10.213.0.10/24", "10.213.0.11/32", "10.213.0.12/24"}
    assert _recap(play(_role("source_addresses"), **wanted))["changed"] == 0

    teardown = {"source_addresses_state_dir": wanted["source_addresses_state_dir"]}
    assert (
        _recap(play(_role("source_addresses", "teardown"), check=True, **teardown))["changed"] > 0
    )
    assert len(_addresses(netns)) == 3
    assert _recap(play(_role("source_addresses", "teardown"), **teardown))["changed"] > 0
    assert _addresses(netns) == {"10.213.0.10/24"}
    assert not (tmp_path / "sa").exists()
    assert _recap(play(_role("source_addresses", "teardown"), **teardown))["changed"] == 0


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"source_addresses_addresses": ["10.213.0.300"]}, "'10.213.0.300' is not an IP address"),
        ({"source_addresses_interface": "echolab-nope"}, "interface 'echolab-nope' not found"),
        ({"source_addresses_interface": None}, "must name the interface"),
    ],
)
def test_source_addresses_bad_input_is_refused(
    netns: str, play: Run, tmp_path: Path, bad: dict[str, object], message: str
) -> None:
    """A bad address, a missing interface or none at all: refused by name, nothing added."""
    args = {
        "source_addresses_interface": IFACE,
        "source_addresses_addresses": ["10.213.0.11"],
        "source_addresses_state_dir": str(tmp_path / "sa"),
        **bad,
    }
    proc = play(_role("source_addresses"), **args)
    assert proc.returncode != 0
    assert message in proc.stdout
    assert _addresses(netns) == set()


# -- playbooks/setup.yml -------------------------------------------------------------------------


def test_setup_sizes_the_port_check_by_the_client_hosts_source_addresses(
    netns: str, tmp_path: Path, tuning_vars: dict[str, object]
) -> None:
    """playbooks/setup.yml hands each client host's echolab_source_addresses to host_tuning and
    source_addresses: 140,000 connections from one client host pass the port check with 3
    addresses (3 x 64,512) and are refused with 1. Check mode, the client host inside the netns."""

    def setup(addresses: list[str]) -> subprocess.CompletedProcess[str]:
        client: dict[str, object] = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            **tuning_vars,
        }
        if addresses:
            client |= {"echolab_source_addresses": addresses, "echolab_source_interface": IFACE}
        inventory = {
            "all": {
                "children": {
                    "testhosts": {"hosts": {"th": {}}},
                    "clients": {"hosts": {"c1": client}},
                }
            }
        }
        path = tmp_path / f"inventory-{len(addresses)}.yml"
        path.write_text(yaml.safe_dump(inventory))
        env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
        return playbook_in(
            netns,
            "--check",
            "-i",
            str(path),
            "--limit",
            "c1,localhost",
            "-e",
            '{"echolab_connections": 140000, "ansible_become": false}',
            str(ROOT / "playbooks" / "setup.yml"),
            env=env,
            cwd=ROOT,
        )

    three = setup(["10.213.0.11", "10.213.0.12/24", "10.213.0.13"])
    assert three.returncode == 0, three.stdout[-4000:] + three.stderr[-2000:]
    assert "ephemeral ports" not in three.stdout
    assert "Add this client host's secondary source addresses" in three.stdout
    one = setup([])
    assert one.returncode != 0, one.stdout[-4000:]
    assert "140000 client connections from 1 source address(es)" in one.stdout
    assert _addresses(netns) == set()
