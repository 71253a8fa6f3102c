#!/usr/bin/python3
"""Ansible module: prove, from one client host, that each target address is routed to the kit's
own hosts before any load is sent there. Read-only: it asks the kernel (`ip route get`,
`ip route show match`) and sends no packet."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: echolab_route_check
short_description: Check that the routes to the echolab targets stay on the kit's own hosts.
description:
  - Runs C(ip route get ADDRESS) and C(ip route show match ADDRESS) on the host for each target
    address (read-only; no packet is sent) and refuses every route that does not end where the kit
    expects. On the test host, a target must be local or on the VM's bridge. On a separate client
    host, the test host's address must be reached on a link or through a specific route (never the
    default route), and an address in the bridge subnet through the test host by a specific route.
  - A target whose address is C(local) is given, for a separate client host, the first of
    O(testhost_addresses) whose route passes, so URLs never carry a name only the controller
    resolves.
  - Fails, naming the host, each address and the route seen, when any target does not pass.
options:
  targets:
    description: The targets, each with C(name) and C(address) (an IP address, or C(local)).
    type: list
    elements: dict
    required: true
  is_testhost:
    description: Whether this host is the test host (the host of the targets) itself.
    type: bool
    required: true
  testhost_addresses:
    description: The test host's addresses in order of preference (not needed on the test host).
    type: list
    elements: str
    default: []
  bridge_subnet:
    description: The VM bridge's subnet (CIDR).
    type: str
    default: 10.0.0.0/24
  bridge_name:
    description: The VM bridge's device name on the test host.
    type: str
    default: bridge43
  defer_missing_bridge:
    description:
      - On the test host, leave bridge-subnet addresses unchecked while the bridge device does not
        exist yet (preflight runs before setup creates it); the run stage checks again without this.
    type: bool
    default: false
  bridge_route_pending:
    description:
      - On a separate client host, let a bridge-subnet address that still follows the default
        route pass unchecked, because setup adds the kit's route through the test host (routed
        bridge, preflight). Any other route to it is judged as usual; the run stage checks again
        without this.
    type: bool
    default: false
  host:
    description: The inventory name of this host, for the messages.
    type: str
    default: this host
"""

RETURN = r"""
addresses:
  description: Target name to the address this host's clients connect to.
  type: dict
  returned: always
routes:
  description: Per target, the address, the route seen and the verdict (empty when it passed).
  type: list
  returned: always
"""

# `ip route get` prints these route types before the destination; plain unicast has none.
ROUTE_TYPES = frozenset(
    {
        "unicast",
        "local",
        "broadcast",
        "multicast",
        "anycast",
        "blackhole",
        "unreachable",
        "prohibit",
        "throw",
        "nat",
    }
)


class RouteParseError(ValueError):
    """Output of `ip route` that this module does not understand."""


@dataclass(frozen=True)
class Route:
    """The kernel's answer to `ip route get ADDRESS` (error set when it refused to route)."""

    address: str
    kind: str = "unicast"
    dev: str | None = None
    via: str | None = None
    src: str | None = None
    error: str | None = None
    # Prefix length of the most specific main-table route that matches (0: the default route).
    prefix: int | None = None

    def describe(self) -> str:
        if self.error is not None:
            return f"no route ({self.error})"
        parts = [self.kind if self.kind != "unicast" else "", self.address]
        if self.via:
            parts += ["via", self.via]
        if self.dev:
            parts += ["dev", self.dev]
        if self.src:
            parts += ["src", self.src]
        # A local route lives in the local table; the main table's default says nothing about it.
        if self.prefix == 0 and self.kind == "unicast":
            parts.append("(the default route)")
        return " ".join(p for p in parts if p)


@dataclass
class Verdict:
    """One target as seen from this host."""

    name: str
    address: str
    route: str
    problem: str = ""
    tried: list[str] = field(default_factory=list)


def parse_route_get(address: str, rc: int, stdout: str, stderr: str) -> Route:
    """Parse `ip route get ADDRESS`; a non-zero rc (unreachable, prohibit, blackhole) gives a
    Route with `error` set."""
    if rc != 0:
        message = (stderr or stdout).strip().splitlines()
        return Route(
            address=address, kind="none", error=message[0] if message else f"exit status {rc}"
        )
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise RouteParseError(f"`ip route get {address}` printed nothing")
    tokens = lines[0].split()
    kind = "unicast"
    if tokens[0] in ROUTE_TYPES:
        kind = tokens.pop(0)
    if not tokens or _ip(tokens[0]) is None:
        raise RouteParseError(f"`ip route get {address}` printed no destination: {lines[0]!r}")
    values: dict[str, str] = {}
    rest = tokens[1:]
    i = 0
    while i < len(rest):
        key = rest[i]
        if key in {"via", "dev", "src", "from", "table"} and i + 1 < len(rest):
            value = rest[i + 1]
            # `via inet6 fe80::1`: an address family before the gateway.
            if key == "via" and value in {"inet", "inet6"} and i + 2 < len(rest):
                i += 1
                value = rest[i + 1]
            values[key] = value
            i += 2
        else:
            i += 1
    if "dev" not in values:
        raise RouteParseError(f"`ip route get {address}` printed no device: {lines[0]!r}")
    if "via" in values and _ip(values["via"]) is None:
        raise RouteParseError(
            f"`ip route get {address}` printed a gateway that is no address: {lines[0]!r}"
        )
    return Route(
        address=address, kind=kind, dev=values["dev"], via=values.get("via"), src=values.get("src")
    )


def longest_prefix(address: str, stdout: str) -> int | None:
    """Prefix length of the most specific route in `ip route show match ADDRESS` (0 for default)."""
    best: int | None = None
    for line in stdout.splitlines():
        tokens = line.split()
        if not tokens or line[0].isspace():
            continue
        if tokens[0] in ROUTE_TYPES:
            tokens.pop(0)
        if not tokens:
            continue
        dst = tokens[0]
        if dst == "default":
            length = 0
        else:
            try:
                length = ipaddress.ip_network(dst, strict=False).prefixlen
            except ValueError as exc:
                raise RouteParseError(f"`ip route show match {address}` printed {line!r}") from exc
        best = length if best is None else max(best, length)
    return best


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _in(address: str, subnet: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    ip = _ip(address)
    return ip is not None and ip.version == subnet.version and ip in subnet


def judge(
    route: Route,
    *,
    is_testhost: bool,
    in_bridge: bool,
    bridge_name: str,
    testhost_addresses: list[str],
) -> str:
    """Why this route does not end at the kit's own hosts ("" when it does)."""
    if route.error is not None:
        return "the kernel has no usable route to it"
    if is_testhost:
        if route.kind == "local":
            return ""
        if in_bridge:
            if route.dev == bridge_name and route.via is None:
                return ""
            return f"the test host must reach the bridge subnet directly on {bridge_name}"
        if route.kind == "unicast" and route.via is None and route.prefix not in (None, 0):
            return ""
        return "the test host must reach its own targets locally or on one of its links"
    if route.kind == "local":
        return "it is an address of this client host itself, not of the test host"
    if route.kind != "unicast":
        return f"it is a {route.kind} route"
    if in_bridge:
        through_testhost = route.via is not None and route.via in testhost_addresses
        if through_testhost and route.prefix not in (None, 0):
            return ""
        return (
            "the bridge subnet must be routed through the test host "
            f"({', '.join(testhost_addresses) or 'address unknown'}) by a route of its own, "
            "never the default route; this traffic would go elsewhere (set "
            "bridge_forward_mode=routed on the test host, and the kit adds that route at setup; "
            "or measure the VM from the test host only)"
        )
    if route.prefix in (None, 0):
        return "it would follow the default route off this machine, not a route to the test host"
    return ""


def check(
    targets: list[dict[str, Any]],
    lookup: Any,
    *,
    is_testhost: bool,
    testhost_addresses: list[str],
    bridge_subnet: str,
    bridge_name: str,
    defer_bridge: bool = False,
    bridge_route_pending: bool = False,
) -> list[Verdict]:
    """Judge every target; `lookup(address)` returns its Route (with prefix) on this host.
    defer_bridge: on the test host, bridge-subnet addresses pass unchecked (no bridge yet).
    bridge_route_pending: on a client host, a bridge-subnet address still on the default route
    passes as not checked yet (setup adds the kit's route); any other route there is judged."""
    subnet = ipaddress.ip_network(bridge_subnet, strict=False)
    for candidate in testhost_addresses:
        if _ip(candidate) is None:
            raise ValueError(f"test host address {candidate!r} is not an IP address")
    # The test host's own address on the bridge is reached only through the test host itself.
    outside_bridge = [a for a in testhost_addresses if not _in(a, subnet)]
    verdicts = []
    for target in targets:
        name = str(target.get("name", ""))
        address = str(target.get("address", ""))
        if not name or not address:
            raise ValueError(f"a target needs a name and an address, got {target!r}")
        if address == "local":
            candidates = ["127.0.0.1"] if is_testhost else outside_bridge
        elif _ip(address) is None:
            verdicts.append(
                Verdict(name, address, "-", "it is not an IP address (names are not routed)")
            )
            continue
        else:
            candidates = [address]
        verdict = Verdict(
            name,
            candidates[0] if candidates else address,
            "-",
            "no address of the test host is known",
        )
        for candidate in candidates:
            in_bridge = _in(candidate, subnet)
            if is_testhost and in_bridge and defer_bridge:
                verdict = Verdict(name, candidate, f"not checked yet: {bridge_name} does not exist")
                break
            route = lookup(candidate)
            if not is_testhost and in_bridge and bridge_route_pending and route.prefix == 0:
                verdict = Verdict(
                    name, candidate, f"not checked yet: {route.describe()}; setup adds the route"
                )
                break
            problem = judge(
                route,
                is_testhost=is_testhost,
                in_bridge=in_bridge,
                bridge_name=bridge_name,
                testhost_addresses=testhost_addresses,
            )
            tried = [*verdict.tried, f"{candidate}: {route.describe()}"]
            verdict = Verdict(name, candidate, route.describe(), problem, tried)
            if not problem:
                break
        verdicts.append(verdict)
    return verdicts


def main() -> None:  # pragma: no cover - exercised through Ansible in the lab tests
    module = AnsibleModule(
        argument_spec={
            "targets": {"type": "list", "elements": "dict", "required": True},
            "is_testhost": {"type": "bool", "required": True},
            "testhost_addresses": {"type": "list", "elements": "str", "default": []},
            "bridge_subnet": {"type": "str", "default": "10.0.0.0/24"},
            "bridge_name": {"type": "str", "default": "bridge43"},
            "defer_missing_bridge": {"type": "bool", "default": False},
            "bridge_route_pending": {"type": "bool", "default": False},
            "host": {"type": "str", "default": "this host"},
        },
        supports_check_mode=True,
    )
    ip_cmd = module.get_bin_path("ip", required=True)

    def lookup(address: str) -> Route:
        rc, out, err = module.run_command([ip_cmd, "route", "get", address])
        route = parse_route_get(address, rc, out, err)
        if route.error is not None:
            return route
        rc, out, err = module.run_command([ip_cmd, "route", "show", "match", address])
        if rc != 0:
            raise RouteParseError(f"`ip route show match {address}` failed: {err.strip()}")
        prefix = longest_prefix(address, out)
        return Route(**{**asdict(route), "prefix": prefix})

    params = module.params
    try:
        verdicts = check(
            params["targets"],
            lookup,
            is_testhost=params["is_testhost"],
            testhost_addresses=params["testhost_addresses"],
            bridge_subnet=params["bridge_subnet"],
            bridge_name=params["bridge_name"],
            defer_bridge=params["defer_missing_bridge"]
            and not os.path.exists(f"/sys/class/net/{params['bridge_name']}"),
            bridge_route_pending=params["bridge_route_pending"],
        )
    except (ValueError, RouteParseError) as exc:
        module.fail_json(msg=f"cannot check the routes: {exc}")
    result: dict[str, Any] = {
        "changed": False,
        "addresses": {v.name: v.address for v in verdicts if not v.problem},
        "routes": [asdict(v) for v in verdicts],
    }
    refused = [v for v in verdicts if v.problem]
    if refused:
        lines = [
            f"target {v.name}: route to {v.address} is `{v.route}`: {v.problem}"
            + (f" (tried {'; '.join(v.tried)})" if len(v.tried) > 1 else "")
            for v in refused
        ]
        module.fail_json(
            msg=f"refusing to send load from {params['host']}: " + " | ".join(lines), **result
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
