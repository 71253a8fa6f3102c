"""library/echolab_route_check.py: the parser on real `ip route` outputs (iproute2 6.1, captured
in a network namespace and on the development machine), and the verdict on each kind of route."""

from __future__ import annotations

from typing import Any

import pytest
from module_loader import load_module

rc_mod = load_module("echolab_route_check", "library/echolab_route_check.py")
Route = rc_mod.Route

# Real outputs of `ip route get ADDRESS` (stdout, stderr, rc).
DEFAULT_ROUTE = ("10.0.0.42 via 192.0.2.1 dev eth0 src 192.0.2.2 uid 0 \n    cache \n", "", 0)
VIA_GATEWAY = ("10.20.0.7 via 192.168.77.1 dev veth-a src 192.168.77.5 uid 0 \n    cache \n", "", 0)
BRIDGE = ("10.0.0.42 dev br-test src 10.0.0.1 uid 0 \n    cache \n", "", 0)
ON_LINK = ("192.168.77.9 dev veth-a src 192.168.77.5 uid 0 \n    cache \n", "", 0)
LOOPBACK = ("local 127.0.0.1 dev lo src 127.0.0.1 uid 0 \n    cache <local> \n", "", 0)
OWN_ADDRESS = ("local 10.0.0.1 dev lo src 10.0.0.1 uid 0 \n    cache <local> \n", "", 0)
UNREACHABLE = ("", "RTNETLINK answers: No route to host\n", 2)
NO_DEFAULT = ("", "RTNETLINK answers: Network is unreachable\n", 2)
PROHIBIT = ("", "RTNETLINK answers: Permission denied\n", 2)

# Real outputs of `ip route show match ADDRESS`.
MATCH_DEFAULT = "default via 192.0.2.1 dev eth0 \n"
MATCH_SPECIFIC = "default via 192.168.77.1 dev veth-a \n10.20.0.0/24 via 192.168.77.1 dev veth-a \n"
MATCH_LINK = (
    "default via 192.168.77.1 dev veth-a \n"
    "192.168.77.0/24 dev veth-a proto kernel scope link src 192.168.77.5 \n"
)


def _route(address: str, output: tuple[str, str, int], match: str = "") -> Any:
    stdout, stderr, rc = output
    route = rc_mod.parse_route_get(address, rc, stdout, stderr)
    if route.error is None:
        route = Route(
            route.address,
            route.kind,
            route.dev,
            route.via,
            route.src,
            None,
            rc_mod.longest_prefix(address, match),
        )
    return route


def test_parse_default_route() -> None:
    """The lab client's case: 10.0.0.42 leaves through the default gateway."""
    route = _route("10.0.0.42", DEFAULT_ROUTE, MATCH_DEFAULT)
    assert (route.kind, route.dev, route.via, route.src, route.prefix) == (
        "unicast",
        "eth0",
        "192.0.2.1",
        "192.0.2.2",
        0,
    )
    assert route.describe() == "10.0.0.42 via 192.0.2.1 dev eth0 src 192.0.2.2 (the default route)"


def test_parse_via_gateway_specific_route() -> None:
    """A /24 through a gateway beats the default route in `ip route show match`."""
    route = _route("10.20.0.7", VIA_GATEWAY, MATCH_SPECIFIC)
    assert (route.via, route.dev, route.prefix) == ("192.168.77.1", "veth-a", 24)


def test_parse_bridge_and_local() -> None:
    """On-link bridge routes have no gateway; `local` routes carry their type."""
    bridge = _route("10.0.0.42", BRIDGE, "10.0.0.0/24 dev br-test proto kernel scope link \n")
    assert (bridge.kind, bridge.dev, bridge.via, bridge.prefix) == ("unicast", "br-test", None, 24)
    loop = _route("127.0.0.1", LOOPBACK, MATCH_DEFAULT)
    assert (loop.kind, loop.dev) == ("local", "lo")
    assert loop.describe() == "local 127.0.0.1 dev lo src 127.0.0.1"


@pytest.mark.parametrize(
    ("output", "error"),
    [
        (UNREACHABLE, "RTNETLINK answers: No route to host"),
        (NO_DEFAULT, "RTNETLINK answers: Network is unreachable"),
        (PROHIBIT, "RTNETLINK answers: Permission denied"),
        (("", "", 1), "exit status 1"),
    ],
)
def test_parse_kernel_refusals(output: tuple[str, str, int], error: str) -> None:
    """A non-zero exit is an error route, carrying the kernel's message."""
    route = _route("10.30.0.1", output)
    assert route.error == error
    assert route.describe() == f"no route ({error})"


@pytest.mark.parametrize(
    "stdout",
    [
        "",
        "   \n",
        "dev eth0 src 192.0.2.2\n",
        "10.0.0.42 via 192.0.2.1 src 192.0.2.2\n",
        "10.0.0.42 via eth0 dev eth0\n",
    ],
)
def test_parse_garbage_is_refused(stdout: str) -> None:
    """Output without a destination, a device, or with a gateway that is no address is an error."""
    with pytest.raises(rc_mod.RouteParseError):
        rc_mod.parse_route_get("10.0.0.42", 0, stdout, "")


def test_longest_prefix() -> None:
    """The most specific route wins; no match is None; a bad destination is an error."""
    assert rc_mod.longest_prefix("x", MATCH_LINK) == 24
    assert rc_mod.longest_prefix("x", MATCH_DEFAULT) == 0
    assert rc_mod.longest_prefix("x", "") is None
    assert rc_mod.longest_prefix("x", "unreachable 10.30.0.0/24 \n") == 24
    with pytest.raises(rc_mod.RouteParseError):
        rc_mod.longest_prefix("x", "nonsense via 1.2.3.4\n")


def _check(
    targets: list[dict[str, str]],
    routes: dict[str, Any],
    *,
    is_testhost: bool,
    testhost: list[str] | None = None,
    defer: bool = False,
    pending: bool = False,
) -> list[Any]:
    def lookup(address: str) -> Any:
        return routes[address]

    verdicts: list[Any] = rc_mod.check(
        targets,
        lookup,
        is_testhost=is_testhost,
        testhost_addresses=testhost or [],
        bridge_subnet="10.0.0.0/24",
        bridge_name="br-test",
        defer_bridge=defer,
        bridge_route_pending=pending,
    )
    return verdicts


VM = {"name": "vm", "address": "10.0.0.42"}
CONTAINER = {"name": "container", "address": "local"}


def test_remote_client_with_default_route_to_bridge_is_refused() -> None:
    """The lab client's case: 10.0.0.42 by the default route is refused, naming the route."""
    routes = {"10.0.0.42": _route("10.0.0.42", DEFAULT_ROUTE, MATCH_DEFAULT)}
    (verdict,) = _check([VM], routes, is_testhost=False, testhost=["192.0.2.7"])
    assert verdict.problem.startswith("the bridge subnet must be routed through the test host")
    assert "192.0.2.7" in verdict.problem
    assert verdict.route == "10.0.0.42 via 192.0.2.1 dev eth0 src 192.0.2.2 (the default route)"


# The kit's route on a client host (bridge_route: 10.0.0.0/24 via the test host 192.0.2.7).
KIT_ROUTE = ("10.0.0.42 via 192.0.2.7 dev eth0 src 192.0.2.2 uid 0 \n    cache \n", "", 0)
MATCH_KIT_ROUTE = "default via 192.0.2.1 dev eth0 \n10.0.0.0/24 via 192.0.2.7 dev eth0 \n"


def test_remote_client_with_route_through_testhost_passes() -> None:
    """Bridge subnet by a route of its own via the test host's address: the kit's own path."""
    routes = {"10.0.0.42": _route("10.0.0.42", KIT_ROUTE, MATCH_KIT_ROUTE)}
    (verdict,) = _check([VM], routes, is_testhost=False, testhost=["192.0.2.7"])
    assert verdict.problem == ""
    assert verdict.route == "10.0.0.42 via 192.0.2.7 dev eth0 src 192.0.2.2"


def test_remote_client_whose_default_gateway_is_the_testhost_is_refused() -> None:
    """The default route never counts, even when its gateway is the test host."""
    routes = {"10.0.0.42": _route("10.0.0.42", DEFAULT_ROUTE, MATCH_DEFAULT)}
    (verdict,) = _check([VM], routes, is_testhost=False, testhost=["192.0.2.1"])
    assert "by a route of its own, never the default route" in verdict.problem


def test_pending_route_passes_only_the_default_route_before_setup() -> None:
    """Routed bridge at preflight: the default route waits for the kit's route (not checked
    yet); a specific route elsewhere is refused all the same; the run stage is strict."""
    default = {"10.0.0.42": _route("10.0.0.42", DEFAULT_ROUTE, MATCH_DEFAULT)}
    (waiting,) = _check([VM], default, is_testhost=False, testhost=["192.0.2.7"], pending=True)
    assert waiting.problem == ""
    assert waiting.route.startswith("not checked yet: 10.0.0.42 via 192.0.2.1")
    (strict,) = _check([VM], default, is_testhost=False, testhost=["192.0.2.7"])
    assert strict.problem
    elsewhere = {
        "10.0.0.42": _route(
            "10.0.0.42",
            ("10.0.0.42 via 192.168.77.1 dev veth-a src 192.168.77.5 uid 0 \n", "", 0),
            "default via 192.0.2.1 dev eth0 \n10.0.0.0/16 via 192.168.77.1 dev veth-a \n",
        )
    }
    (taken,) = _check([VM], elsewhere, is_testhost=False, testhost=["192.0.2.7"], pending=True)
    assert taken.problem.startswith("the bridge subnet must be routed through the test host")


def test_remote_client_picks_the_testhost_address_it_reaches_on_a_link() -> None:
    """`local` targets get the first test host address that is not the default route."""
    routes = {
        "10.20.0.7": _route("10.20.0.7", VIA_GATEWAY, MATCH_SPECIFIC),
        "192.168.77.9": _route("192.168.77.9", ON_LINK, MATCH_LINK),
    }
    routes["198.51.100.3"] = Route(
        "198.51.100.3", "unicast", "veth-a", "192.168.77.1", None, None, 0
    )
    (verdict,) = _check(
        [CONTAINER], routes, is_testhost=False, testhost=["198.51.100.3", "192.168.77.9"]
    )
    assert (verdict.address, verdict.problem) == ("192.168.77.9", "")
    assert verdict.tried[0].startswith("198.51.100.3: ")


def test_remote_client_refuses_testhost_only_behind_default_route() -> None:
    """When every test host address is behind the default route, the target is refused."""
    routes = {
        "10.9.9.9": _route("10.9.9.9", ("10.9.9.9 via 192.0.2.1 dev eth0 \n", "", 0), MATCH_DEFAULT)
    }
    (verdict,) = _check([CONTAINER], routes, is_testhost=False, testhost=["10.9.9.9"])
    assert "default route" in verdict.problem


def test_remote_client_refuses_its_own_address_and_unknown_testhost() -> None:
    """A `local` route on a client is the client itself; no test host address at all is refused;
    the test host's own bridge address is never a candidate for a client."""
    own_output = (OWN_ADDRESS[0].replace("10.0.0.1", "192.168.77.5"), "", 0)
    routes = {"192.168.77.5": _route("192.168.77.5", own_output)}
    (own,) = _check([CONTAINER], routes, is_testhost=False, testhost=["192.168.77.5"])
    assert "this client host itself" in own.problem
    (unknown,) = _check([CONTAINER], {}, is_testhost=False, testhost=[])
    assert unknown.problem == "no address of the test host is known"
    (bridge_only,) = _check([CONTAINER], {}, is_testhost=False, testhost=["10.0.0.1"])
    assert bridge_only.problem == "no address of the test host is known"


def test_testhost_targets() -> None:
    """On the test host: `local` is 127.0.0.1, the VM must be on the bridge itself."""
    good = {
        "127.0.0.1": _route("127.0.0.1", LOOPBACK),
        "10.0.0.42": _route(
            "10.0.0.42", BRIDGE, "10.0.0.0/24 dev br-test proto kernel scope link \n"
        ),
    }
    assert [v.problem for v in _check([VM, CONTAINER], good, is_testhost=True)] == ["", ""]
    assert _check([CONTAINER], good, is_testhost=True)[0].address == "127.0.0.1"
    bad = {"10.0.0.42": _route("10.0.0.42", DEFAULT_ROUTE, MATCH_DEFAULT)}
    (verdict,) = _check([VM], bad, is_testhost=True)
    assert verdict.problem == "the test host must reach the bridge subnet directly on br-test"


def test_testhost_defers_the_bridge_only_when_asked() -> None:
    """Before setup, the bridge subnet is left for the run stage; never looked up then."""
    (verdict,) = _check([VM], {}, is_testhost=True, defer=True)
    assert verdict.problem == ""
    assert verdict.route == "not checked yet: br-test does not exist"
    remote = {"10.0.0.42": _route("10.0.0.42", DEFAULT_ROUTE, MATCH_DEFAULT)}
    assert _check([VM], remote, is_testhost=False, testhost=["192.0.2.7"], defer=True)[0].problem


def test_unreachable_and_names_are_refused() -> None:
    """No route, or a host name instead of an address, never passes."""
    routes = {"10.30.0.1": _route("10.30.0.1", UNREACHABLE)}
    target = {"name": "t", "address": "10.30.0.1"}
    assert _check([target], routes, is_testhost=False)[0].problem == (
        "the kernel has no usable route to it"
    )
    named = {"name": "t", "address": "echolab-lab"}
    assert "not an IP address" in _check([named], {}, is_testhost=False)[0].problem


@pytest.mark.parametrize(
    ("targets", "testhost"),
    [([{"name": "vm"}], []), ([{"address": "1.2.3.4"}], []), ([CONTAINER], ["echolab-lab"])],
)
def test_bad_input_is_an_error(targets: list[dict[str, str]], testhost: list[str]) -> None:
    """A target without name or address, or a test host address that is a name, is refused."""
    with pytest.raises(ValueError, match=r"target needs|not an IP address"):
        _check(targets, {}, is_testhost=False, testhost=testhost)
