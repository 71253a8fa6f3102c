"""The pure logic of the bridge's network modules: which FORWARD jump order is right
(echolab_bridge_forward), which test host address a client routes through and which routes
collide with it (echolab_bridge_route), which routes and bridges the bridge preflight refuses
(echolab_bridge_preflight). tests/test_roles_netns.py runs the modules for real."""

from __future__ import annotations

from typing import Any

import pytest
from module_loader import load_module

forward = load_module("echolab_bridge_forward", "roles/bridge/library/echolab_bridge_forward.py")
route = load_module("echolab_bridge_route", "roles/bridge_route/library/echolab_bridge_route.py")
preflight = load_module("echolab_bridge_preflight", "library/echolab_bridge_preflight.py")

# `iptables -S FORWARD` with libvirt's jumps (libvirt 9.0) and Docker's.
LIBVIRT_FIRST = """-P FORWARD DROP
-A FORWARD -j LIBVIRT_FWX
-A FORWARD -j LIBVIRT_FWI
-A FORWARD -j LIBVIRT_FWO
-A FORWARD -j ECHOLAB_FORWARD
"""
KIT_FIRST = """-P FORWARD DROP
-A FORWARD -j DOCKER-USER
-A FORWARD -j ECHOLAB_FORWARD
-A FORWARD -j LIBVIRT_FWX
-A FORWARD -o docker0 -j DOCKER
"""


def test_jump_action() -> None:
    """No jump: insert; after one of libvirt's: move; ahead of them (Docker's first): nothing."""
    assert forward.jump_action("ECHOLAB_FORWARD", "-P FORWARD ACCEPT\n") == "insert"
    assert forward.jump_action("ECHOLAB_FORWARD", LIBVIRT_FIRST) == "move"
    assert forward.jump_action("ECHOLAB_FORWARD", KIT_FIRST) == ""


def test_wanted_rules_and_client_addresses() -> None:
    """Two rules per client, in `iptables -S` form; each address once, as a /32."""
    clients = forward.client_addresses(["192.0.2.5/24", "192.0.2.5", "198.51.100.1"], "10.0.0.1/24")
    assert clients == ["192.0.2.5/32", "198.51.100.1/32"]
    assert forward.wanted_rules("C", "br", "10.0.0.1/24", clients[:1]) == [
        "-A C -s 192.0.2.5/32 -d 10.0.0.0/24 -o br -j ACCEPT",
        "-A C -s 10.0.0.0/24 -d 192.0.2.5/32 -i br -j ACCEPT",
    ]
    listing = "-N C\n-A C -s 192.0.2.5/32 -d 10.0.0.0/24 -o br -j ACCEPT\n"
    assert forward.chain_rules("C", listing) == [listing.splitlines()[1]]
    with pytest.raises(ValueError, match="inside the bridge subnet"):
        forward.client_addresses(["10.0.0.9"], "10.0.0.1/24")


def test_pick_gateway_takes_the_first_on_a_link() -> None:
    """Behind a gateway, local, inside the subnet or unreachable: not a gateway."""
    table: dict[str, Any] = {
        "198.51.100.7": {"dst": "198.51.100.7", "gateway": "192.0.2.254", "dev": "eth0"},
        "192.0.2.2": {"type": "local", "dst": "192.0.2.2", "dev": "lo"},
        "192.0.2.7": {"dst": "192.0.2.7", "dev": "eth0", "prefsrc": "192.0.2.2"},
    }
    candidates = ["10.0.0.1", "203.0.113.1", "198.51.100.7", "192.0.2.2", "192.0.2.7"]
    found = route.pick_gateway(candidates, "10.0.0.0/24", table.get)
    assert found == ("192.0.2.7", table["192.0.2.7"])
    assert route.pick_gateway(candidates[:4], "10.0.0.0/24", table.get) is None


def test_route_conflicts() -> None:
    """The default route and the kit's own route are no conflict; covering or splitting ones are."""
    routes = [
        {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
        {"dst": "10.0.0.0/24", "gateway": "192.0.2.7", "dev": "eth0"},
        {"dst": "10.0.0.0/8", "gateway": "192.0.2.9", "dev": "eth0"},
        {"dst": "10.0.0.0/8", "gateway": "192.0.2.9", "dev": "eth0"},
    ]
    found = route.conflicts(routes, "10.0.0.0/24", "192.0.2.7")
    assert [route.describe(r) for r in found] == ["10.0.0.0/8 via 192.0.2.9 dev eth0"]
    other_gateway = route.conflicts(routes[1:2], "10.0.0.0/24", "192.0.2.8")
    assert other_gateway == routes[1:2]


def test_preflight_collisions() -> None:
    """Overlapping routes and addresses are named; the default route and the kit's bridge not."""
    routes = [
        {"dst": "default", "gateway": "192.0.2.1", "dev": "eth0"},
        {"dst": "10.0.0.0/24", "dev": "bridge43", "prefsrc": "10.0.0.1"},
        {"dst": "10.0.0.128/25", "gateway": "192.0.2.9", "dev": "eth0"},
        {"dst": "10.0.1.0/24", "dev": "eth1"},
    ]
    links = [
        {"ifname": "bridge43", "addr_info": [{"local": "10.0.0.1", "prefixlen": 24}]},
        {"ifname": "eth2", "addr_info": [{"local": "10.0.0.99", "prefixlen": 32}]},
    ]
    assert preflight.collisions(routes, links, "10.0.0.1/24", "bridge43") == [
        "route 10.0.0.128/25 via 192.0.2.9 dev eth0",
        "address 10.0.0.99/32 on eth2",
    ]
    assert len(preflight.collisions(routes, links, "10.0.0.1/24", None)) == 4


def test_kit_bridge_from_the_libvirt_definition() -> None:
    """The bridge name of a libvirt network definition; none without one or on bad XML."""
    xml = "<network><name>echolab</name><bridge name='bridge43' stp='off'/></network>"
    assert preflight.kit_bridge(xml) == "bridge43"
    assert preflight.kit_bridge("<network><name>x</name></network>") is None
    assert preflight.kit_bridge("<network") is None
    assert preflight.kit_bridge(None) is None
