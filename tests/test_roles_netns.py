"""host_tuning, source_addresses and the bridge's network modules (forwarding of routed mode, the
client's route to the bridge subnet, the bridge preflight) run for real by ansible-playbook inside
a private network namespace (ip netns), so only that namespace's own keys, interfaces, routes and
firewall rules change: raise-only tuning, idempotence, check mode, teardown back to what was found,
and bad input refused clearly."""

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
            ANSIBLE_LIBRARY=os.pathsep.join(
                str(ROOT / d)
                for d in (
                    "library",
                    "roles/bridge/library",
                    "roles/bridge_route/library",
                    "roles/source_addresses/library",
                )
            ),
            ANSIBLE_MODULE_UTILS=str(ROOT / "plugins" / "module_utils"),
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


def test_host_tuning_open_files_check_counts_one_wsswarm_process(
    play: Run, tuning_vars: dict[str, object]
) -> None:
    """A client share is held by host_tuning_client_processes wsswarm processes, so a process
    needs files for its part only: 2,000,000 connections in one process are above every host's
    per-process ceiling (fs.nr_open is 1,048,576 at most by default) and refused, naming the
    split; over 200 processes each needs 10,000, which fits with or without CAP_SYS_RESOURCE."""
    share = {
        **tuning_vars,
        "host_tuning_fd_headroom": 0,
        "host_tuning_client_connections": 2_000_000,
        "host_tuning_server_connections": 0,
        "host_tuning_source_addresses": 32,
    }
    refused = play(_role("host_tuning"), check=True, **share)
    assert refused.returncode != 0
    assert "open files: a process needs 2000000" in refused.stdout
    assert "client share over 1 wsswarm process(es)" in refused.stdout
    split = play(_role("host_tuning"), check=True, **share, host_tuning_client_processes=200)
    assert split.returncode == 0, split.stdout[-3000:]
    assert "open files" not in split.stdout


@pytest.mark.parametrize(
    ("entry", "bad", "message"),
    [
        ("main", {"host_tuning_client_connections": "lots"}, "host_tuning_client_connections"),
        ("main", {"host_tuning_source_addresses": 0}, "host_tuning got invalid input"),
        ("main", {"host_tuning_client_processes": 0}, "host_tuning got invalid input"),
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
    assert json.loads((tmp_path / "sa/added.json").read_text()) == {
        "interface": IFACE,
        "added": ["10.213.0.11/32", "10.213.0.12/24"],
    }
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
            # The open-files check is not what this test is about: a per-process limit under
            # every host's ceiling keeps it quiet where root lacks CAP_SYS_RESOURCE (a container).
            "host_tuning_nofile": 10000,
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


# -- the VM's bridge: forwarding (routed mode), the client's route, the preflight -----------------

BRIDGE = "echolab-br0"


def _up(ns: str, address: str) -> None:
    """IFACE (and its peer) up with `address`, so routes to its subnet are on a link."""
    _in(ns, "ip", "addr", "add", address, "dev", IFACE)
    _in(ns, "ip", "link", "set", IFACE, "up")
    _in(ns, "ip", "link", "set", "echolab-sa1", "up")


def _bridge(ns: str) -> None:
    """A bridge at 10.0.0.1/24, as libvirt makes it."""
    _in(ns, "ip", "link", "add", BRIDGE, "type", "bridge")
    _in(ns, "ip", "addr", "add", "10.0.0.1/24", "dev", BRIDGE)
    _in(ns, "ip", "link", "set", BRIDGE, "up")


def _libvirt_rejects(ns: str) -> None:
    """The FORWARD rules libvirt keeps for an isolated network (libvirt 9.0, iptables backend)."""
    for chain, flag in (("LIBVIRT_FWI", "-o"), ("LIBVIRT_FWO", "-i")):
        _in(ns, "iptables", "-N", chain)
        _in(ns, "iptables", "-A", chain, flag, BRIDGE, "-j", "REJECT")
        _in(ns, "iptables", "-A", "FORWARD", "-j", chain)


def _forward_targets(ns: str) -> list[str]:
    return [
        line.split()[-1]
        for line in _in(ns, "iptables", "-S", "FORWARD").splitlines()
        if line.startswith("-A FORWARD -j ")
    ]


def _forwarding(ns: str) -> dict[str, str]:
    return {
        i: _in(ns, "cat", f"/proc/sys/net/ipv4/conf/{i}/forwarding").strip()
        for i in ("lo", IFACE, "echolab-sa1", BRIDGE)
    }


def test_bridge_forward_routes_only_between_bridge_and_clients(
    netns: str, play: Run, tmp_path: Path
) -> None:
    """Routed: exactly two ACCEPT rules per client, jumped to ahead of libvirt's REJECTs (again
    after libvirt moves its jumps first), forwarding switched on only on the bridge and the
    clients' interface; check mode and a second pass change nothing; absent undoes it all."""
    _up(netns, "192.0.2.1/24")
    _bridge(netns)
    _libvirt_rejects(netns)
    _in(netns, "sysctl", "-w", "net.ipv4.ip_forward=0")
    task = {
        "echolab_bridge_forward": {
            "bridge": BRIDGE,
            "subnet": "10.0.0.1/24",
            # The test host's own address is left out; the second client twice counts once.
            "clients": ["192.0.2.10", "192.0.2.11/24", "192.0.2.1", "192.0.2.11"],
            "state_file": str(tmp_path / "bridge/forwarding.json"),
        }
    }
    off = {"lo": "0", IFACE: "0", "echolab-sa1": "0", BRIDGE: "0"}

    assert _recap(play([task], check=True))["changed"] == 1
    assert _forward_targets(netns) == ["LIBVIRT_FWI", "LIBVIRT_FWO"]
    assert _forwarding(netns) == off

    assert _recap(play([task]))["changed"] == 1
    assert _in(netns, "iptables", "-S", "ECHOLAB_FORWARD").splitlines() == [
        "-N ECHOLAB_FORWARD",
        f"-A ECHOLAB_FORWARD -s 192.0.2.10/32 -d 10.0.0.0/24 -o {BRIDGE} -j ACCEPT",
        f"-A ECHOLAB_FORWARD -s 10.0.0.0/24 -d 192.0.2.10/32 -i {BRIDGE} -j ACCEPT",
        f"-A ECHOLAB_FORWARD -s 192.0.2.11/32 -d 10.0.0.0/24 -o {BRIDGE} -j ACCEPT",
        f"-A ECHOLAB_FORWARD -s 10.0.0.0/24 -d 192.0.2.11/32 -i {BRIDGE} -j ACCEPT",
    ]
    assert _forward_targets(netns) == ["ECHOLAB_FORWARD", "LIBVIRT_FWI", "LIBVIRT_FWO"]
    assert _forwarding(netns) == {**off, IFACE: "1", BRIDGE: "1"}
    record = json.loads((tmp_path / "bridge/forwarding.json").read_text())
    assert record == {"forwarding_on": [BRIDGE, IFACE]}
    assert _in(netns, "cat", "/proc/sys/net/ipv4/ip_forward").strip() == "0"

    assert _recap(play([task]))["changed"] == 0
    assert _recap(play([task], check=True))["changed"] == 0

    # libvirtd restarting puts its jumps first again: the kit's jump moves ahead of them.
    _in(netns, "iptables", "-D", "FORWARD", "-j", "LIBVIRT_FWO")
    _in(netns, "iptables", "-I", "FORWARD", "1", "-j", "LIBVIRT_FWO")
    assert _recap(play([task]))["changed"] == 1
    assert _forward_targets(netns) == ["ECHOLAB_FORWARD", "LIBVIRT_FWO", "LIBVIRT_FWI"]

    absent = {
        "echolab_bridge_forward": {
            "state": "absent",
            "state_file": str(tmp_path / "bridge/forwarding.json"),
        }
    }
    assert _recap(play([absent], check=True))["changed"] == 1
    assert "ECHOLAB_FORWARD" in _forward_targets(netns)
    assert _recap(play([absent]))["changed"] == 1
    assert _forward_targets(netns) == ["LIBVIRT_FWO", "LIBVIRT_FWI"]
    assert "ECHOLAB_FORWARD" not in _in(netns, "iptables", "-S")
    assert _forwarding(netns) == off
    assert not (tmp_path / "bridge/forwarding.json").exists()
    assert _recap(play([absent]))["changed"] == 0


def test_bridge_forward_keeps_forwarding_it_found_on(netns: str, play: Run, tmp_path: Path) -> None:
    """Forwarding already on (Docker's ip_forward=1) is neither recorded nor switched off."""
    _up(netns, "192.0.2.1/24")
    _bridge(netns)
    _in(netns, "sysctl", "-w", "net.ipv4.ip_forward=1")
    state = str(tmp_path / "forwarding.json")
    args = {"bridge": BRIDGE, "subnet": "10.0.0.1/24", "clients": ["192.0.2.10"]}
    assert _recap(play([{"echolab_bridge_forward": {**args, "state_file": state}}]))["changed"] == 1
    assert not Path(state).exists()
    absent = {"echolab_bridge_forward": {"state": "absent", "state_file": state}}
    assert _recap(play([absent]))["changed"] == 1
    assert _forwarding(netns) == {"lo": "1", IFACE: "1", "echolab-sa1": "1", BRIDGE: "1"}


@pytest.mark.parametrize(
    ("clients", "message"),
    [
        (["10.0.0.42"], "client '10.0.0.42' is inside the bridge subnet 10.0.0.0/24"),
        (["client-1"], "client 'client-1' is not an IP address"),
        (["2001:db8::1"], "client '2001:db8::1' is not an IPv4 address"),
    ],
)
def test_bridge_forward_bad_client_is_refused(
    netns: str, play: Run, tmp_path: Path, clients: list[str], message: str
) -> None:
    """A client inside the bridge subnet, a name, an IPv6 address: refused, no rule added."""
    _up(netns, "192.0.2.1/24")
    _bridge(netns)
    task = {
        "echolab_bridge_forward": {
            "bridge": BRIDGE,
            "subnet": "10.0.0.1/24",
            "clients": clients,
            "state_file": str(tmp_path / "forwarding.json"),
        }
    }
    proc = play([task])
    assert proc.returncode != 0
    assert message in proc.stdout
    assert "ECHOLAB_FORWARD" not in _in(netns, "iptables", "-S")


def _routes(ns: str) -> list[str]:
    """The main table, without the `linkdown` flag a veth shows until its carrier is up."""
    return [
        " ".join(t for t in line.split() if t != "linkdown")
        for line in _in(ns, "ip", "route", "show").splitlines()
    ]


def test_bridge_route_added_through_the_testhost_and_removed(
    netns: str, play: Run, tmp_path: Path
) -> None:
    """The first test host address on a link is the gateway; check mode and a second pass change
    nothing; teardown removes exactly the kit's route."""
    _up(netns, "192.0.2.5/24")
    wanted = {
        "bridge_route_subnet": "10.0.0.1/24",
        # 198.51.100.7: no route at all here; 192.0.2.1: on IFACE's link.
        "bridge_route_gateways": ["198.51.100.7", "192.0.2.1"],
        "bridge_route_state_dir": str(tmp_path / "br"),
    }
    before = _routes(netns)
    assert _recap(play(_role("bridge_route"), check=True, **wanted))["changed"] == 1
    assert _routes(netns) == before
    proc = play(_role("bridge_route"), **wanted)
    assert _recap(proc)["changed"] == 1
    assert f"10.0.0.0/24 via 192.0.2.1 dev {IFACE}" in _routes(netns)
    assert "10.0.0.0/24 via 192.0.2.1 dev echolab-sa0 (the test host)" in proc.stdout
    record = json.loads((tmp_path / "br/route.json").read_text())
    assert record == {"subnet": "10.0.0.0/24", "gateway": "192.0.2.1"}
    assert _recap(play(_role("bridge_route"), **wanted))["changed"] == 0
    assert _recap(play(_role("bridge_route"), check=True, **wanted))["changed"] == 0

    teardown = {"bridge_route_state_dir": wanted["bridge_route_state_dir"]}
    assert _recap(play(_role("bridge_route", "teardown"), check=True, **teardown))["changed"] > 0
    assert f"10.0.0.0/24 via 192.0.2.1 dev {IFACE}" in _routes(netns)
    assert _recap(play(_role("bridge_route", "teardown"), **teardown))["changed"] > 0
    assert _routes(netns) == before
    assert not (tmp_path / "br").exists()
    assert _recap(play(_role("bridge_route", "teardown"), **teardown))["changed"] == 0


def test_bridge_route_the_host_had_stays(netns: str, play: Run, tmp_path: Path) -> None:
    """A route to the subnet through the test host that was there before is not the kit's: it is
    accepted unchanged and teardown leaves it."""
    _up(netns, "192.0.2.5/24")
    _in(netns, "ip", "route", "add", "10.0.0.0/24", "via", "192.0.2.1")
    wanted = {
        "bridge_route_gateways": ["192.0.2.1"],
        "bridge_route_state_dir": str(tmp_path / "br"),
    }
    assert _recap(play(_role("bridge_route"), **wanted))["changed"] == 0
    play(_role("bridge_route", "teardown"), bridge_route_state_dir=str(tmp_path / "br"))
    assert f"10.0.0.0/24 via 192.0.2.1 dev {IFACE}" in _routes(netns)


@pytest.mark.parametrize(
    "case",
    [
        (
            ["10.0.0.0/16", "via", "192.0.2.9"],
            ["192.0.2.1"],
            "this host already routes 10.0.0.0/24 elsewhere (10.0.0.0/16 via 192.0.2.9 dev",
        ),
        (
            ["10.0.0.128/25", "via", "192.0.2.9"],
            ["192.0.2.1"],
            "this host already routes 10.0.0.0/24 elsewhere (10.0.0.128/25 via 192.0.2.9 dev",
        ),
        (
            ["198.51.100.0/24", "via", "192.0.2.9"],
            ["198.51.100.7"],
            "none of the test host's addresses (198.51.100.7) is on a link of this host",
        ),
        ([], [], "bridge_route_gateways must list the test host's addresses"),
    ],
)
def test_bridge_route_refused_when_it_would_collide(
    netns: str, play: Run, tmp_path: Path, case: tuple[list[str], list[str], str]
) -> None:
    """A route of the host covering or splitting the subnet, a test host behind a gateway, no
    test host address: refused by name, no route added."""
    route, gateways, message = case
    _up(netns, "192.0.2.5/24")
    if route:
        _in(netns, "ip", "route", "add", *route)
    before = _routes(netns)
    proc = play(
        _role("bridge_route"),
        bridge_route_gateways=gateways,
        bridge_route_state_dir=str(tmp_path / "br"),
    )
    assert proc.returncode != 0
    assert message in " ".join(proc.stdout.split())
    assert _routes(netns) == before
    assert not (tmp_path / "br").exists()


# -- the modules' records (plugins/module_utils/echolab_record.py) -------------------------------


@pytest.mark.parametrize(
    ("module", "prefix"),
    [
        ("echolab_source_addresses", "echolab source addresses"),
        ("echolab_bridge_route", "bridge route"),
        ("echolab_bridge_forward", "bridge forwarding"),
    ],
)
def test_a_damaged_record_is_refused_and_kept(
    netns: str, play: Run, tmp_path: Path, module: str, prefix: str
) -> None:
    """A cut-off record fails the teardown by the file's name (the record shipped with each
    module to the host), and the record stays for the operator to repair."""
    state = tmp_path / "record.json"
    state.write_text('{"added": [')
    proc = play([{module: {"state": "absent", "state_file": str(state)}}])
    assert proc.returncode != 0
    said = " ".join(proc.stdout.split())
    assert f"{prefix}: the record {state} is not JSON" in said, proc.stdout[-2000:]
    assert state.read_text() == '{"added": ['


def _preflight_bridge(play: Run, networks: Path) -> subprocess.CompletedProcess[str]:
    task = {
        "echolab_bridge_preflight": {
            "bridge": BRIDGE,
            "subnet": "10.0.0.1/24",
            "network": "echolab",
            "networks_dir": str(networks),
        }
    }
    return play([task], check=True)


def test_bridge_preflight_passes_a_free_subnet_and_the_kits_bridge(
    netns: str, play: Run, tmp_path: Path
) -> None:
    """Nothing in 10.0.0.0/24 passes; so does the kit's own bridge (libvirt's definition names
    it), whose address and route are in the subnet."""
    _up(netns, "192.0.2.5/24")
    _in(netns, "ip", "route", "add", "default", "via", "192.0.2.1")
    assert _recap(_preflight_bridge(play, tmp_path))["failed"] == 0
    _bridge(netns)
    (tmp_path / "echolab.xml").write_text(
        f"<network><name>echolab</name><bridge name='{BRIDGE}' stp='off' delay='0'/></network>"
    )
    assert _recap(_preflight_bridge(play, tmp_path))["failed"] == 0


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            [["ip", "route", "add", "10.0.0.0/16", "via", "192.0.2.1"]],
            "the bridge subnet 10.0.0.0/24 overlaps what this host has: route 10.0.0.0/16 via "
            f"192.0.2.1 dev {IFACE}",
        ),
        (
            [["ip", "addr", "add", "10.0.0.7/32", "dev", IFACE]],
            f"overlaps what this host has: address 10.0.0.7/32 on {IFACE}",
        ),
        (
            [["ip", "link", "add", BRIDGE, "type", "bridge"]],
            f"a device named {BRIDGE} exists but the kit did not make it",
        ),
    ],
)
def test_bridge_preflight_refuses_collisions(
    netns: str, play: Run, tmp_path: Path, setup: list[list[str]], message: str
) -> None:
    """An overlapping route or address, a bridge of that name not made by the kit: refused with
    what collides and what to change."""
    _up(netns, "192.0.2.5/24")
    for argv in setup:
        _in(netns, *argv)
    proc = _preflight_bridge(play, tmp_path)
    assert proc.returncode != 0
    said = " ".join(proc.stdout.split())
    assert "refusing to build the VM's bridge: " in said
    assert message in said
