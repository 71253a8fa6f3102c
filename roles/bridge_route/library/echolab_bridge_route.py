#!/usr/bin/python3
"""Ansible module: on a separate client host, route the VM's bridge subnet through the test host,
and remove exactly that route again."""

from __future__ import annotations

import ipaddress
import json
import os
from typing import Any, NoReturn

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.echolab_record import (
    read_record,
    write_record,
)

DOCUMENTATION = r"""
module: echolab_bridge_route
short_description: A route to the VM's bridge subnet through the test host, removed at teardown.
description:
  - C(state=present) picks the first of O(gateways) (the test host's addresses) that this host
    reaches directly on one of its links, and adds C(SUBNET via GATEWAY). It refuses, changing
    nothing, when no test host address is on a link, or when a route of this host other than the
    default route already covers or splits the subnet (that traffic would go elsewhere). The
    route it added is recorded in O(state_file); one that was there already is not.
  - C(state=absent) removes the recorded route when it is still there, and the record.
  - Check mode reports what would change and changes nothing.
options:
  state:
    type: str
    choices: [present, absent]
    default: present
  subnet:
    type: str
    description: The bridge subnet, CIDR (required with state=present).
  gateways:
    type: list
    elements: str
    default: []
    description: The test host's addresses in order of preference.
  state_file:
    type: path
    required: true
    description: JSON record of the route this module added.
"""


def pick_gateway(
    candidates: list[str], subnet: str, route_get: Any
) -> tuple[str, dict[str, Any]] | None:
    """The first candidate outside the subnet that `route_get(address)` (parsed `ip -j route get`)
    shows on a link of this host, with its route; None when there is none."""
    net = ipaddress.ip_network(subnet, strict=False)
    for candidate in candidates:
        address = ipaddress.ip_address(candidate)
        if address.version != 4 or address in net:
            continue
        route = route_get(candidate)
        if route and route.get("type", "unicast") == "unicast" and "gateway" not in route:
            return candidate, route
    return None


def conflicts(routes: list[dict[str, Any]], subnet: str, gateway: str) -> list[dict[str, Any]]:
    """The routes (parsed `ip -j route show`) that cover or split the subnet, except the default
    route and the kit's own (subnet via gateway)."""
    net = ipaddress.ip_network(subnet, strict=False).with_prefixlen
    seen: list[dict[str, Any]] = []
    for route in routes:
        dst = str(route.get("dst", ""))
        if dst == "default" or (dst == net and route.get("gateway") == gateway):
            continue
        if route not in seen:
            seen.append(route)
    return seen


def describe(route: dict[str, Any]) -> str:
    parts = [str(route.get("dst", "?"))]
    if "gateway" in route:
        parts += ["via", str(route["gateway"])]
    if "dev" in route:
        parts += ["dev", str(route["dev"])]
    return " ".join(parts)


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "subnet": {"type": "str"},
            "gateways": {"type": "list", "elements": "str", "default": []},
            "state_file": {"type": "path", "required": True},
        },
        required_if=[("state", "present", ["subnet"])],
        supports_check_mode=True,
    )
    p = module.params
    ip_cmd = module.get_bin_path("ip", required=True)

    def fail(msg: str) -> NoReturn:
        module.fail_json(msg=f"bridge route: {msg}")
        raise AssertionError("fail_json returned")

    try:
        record = read_record(p["state_file"])
    except ValueError as exc:
        fail(str(exc))

    def routes(*args: str) -> list[dict[str, Any]]:
        """Parsed `ip -j route ARGS`; `get` of an unreachable address gives []."""
        rc, out, err = module.run_command([ip_cmd, "-j", "route", *args])
        if rc != 0 and args[0] == "get":
            return []
        if rc != 0:
            fail(f"ip route {' '.join(args)} failed: {err.strip()}")
        parsed: list[dict[str, Any]] = json.loads(out or "[]")
        return parsed

    if p["state"] == "absent":
        added, via = str(record.get("subnet", "")), str(record.get("gateway", ""))
        present = bool(added) and any(
            r.get("gateway") == via for r in routes("show", "exact", added)
        )
        if present and not module.check_mode:
            module.run_command([ip_cmd, "route", "del", added, "via", via], check_rc=True)
        if record and not module.check_mode:
            os.unlink(p["state_file"])
        module.exit_json(changed=present or bool(record), removed=added if present else None)

    try:
        subnet = ipaddress.ip_network(p["subnet"], strict=False).with_prefixlen
        for candidate in p["gateways"]:
            ipaddress.ip_address(candidate)
    except ValueError as exc:
        fail(str(exc))
    found = pick_gateway(p["gateways"], subnet, lambda a: next(iter(routes("get", a)), None))
    if found is None:
        known = ", ".join(p["gateways"]) or "none known"
        fail(
            f"none of the test host's addresses ({known}) is on a link of this host, so "
            f"{subnet} cannot be routed through it; set echolab_address on the test host to its "
            "address on the clients' network"
        )
    gateway, gateway_route = found
    if record and (record.get("subnet"), record.get("gateway")) != (subnet, gateway):
        fail(
            f"the kit's route {record.get('subnet')} via {record.get('gateway')} is recorded, "
            f"now asked for {subnet} via {gateway}: run the teardown first"
        )
    others = conflicts(
        routes("show", "match", subnet) + routes("show", "root", subnet), subnet, gateway
    )
    if others:
        fail(
            f"this host already routes {subnet} elsewhere "
            f"({'; '.join(describe(r) for r in others)}); the kit will not route the VM's bridge "
            "subnet over it. Choose another bridge subnet (bridge_address, bridge_prefix)"
        )
    exists = any(r.get("gateway") == gateway for r in routes("show", "exact", subnet))
    if not exists and not module.check_mode:
        module.run_command([ip_cmd, "route", "add", subnet, "via", gateway], check_rc=True)
        write_record(p["state_file"], {"subnet": subnet, "gateway": gateway})
    module.exit_json(
        changed=not exists,
        subnet=subnet,
        gateway=gateway,
        dev=gateway_route.get("dev"),
        source=gateway_route.get("prefsrc"),
    )


if __name__ == "__main__":
    main()
