#!/usr/bin/python3
"""Ansible module: before the kit builds the VM's bridge, refuse a bridge subnet that overlaps a
route or an address the test host already has, and a bridge device of that name that the kit did
not make. Read-only."""

from __future__ import annotations

import ipaddress
import json
import os
import xml.etree.ElementTree as ET
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: echolab_bridge_preflight
short_description: Refuse a bridge subnet or bridge name that collides with what the host has.
description:
  - Reads the main routing table (C(ip -j route show)) and the IPv4 addresses (C(ip -j addr
    show)), and fails naming each route or address that overlaps O(subnet), except the default
    route and those on the kit's own bridge.
  - Fails when a device named O(bridge) exists but is not the bridge of the kit's libvirt network
    (O(networks_dir)/O(network).xml names another bridge, or is missing).
  - Changes nothing; runs the same in check mode.
options:
  bridge:
    type: str
    required: true
    description: The bridge device the kit will make (bridge_name).
  subnet:
    type: str
    required: true
    description: The bridge subnet, the host's address with its prefix (10.0.0.1/24).
  network:
    type: str
    required: true
    description: The kit's libvirt network (bridge_network_name).
  networks_dir:
    type: path
    default: /etc/libvirt/qemu/networks
    description: Where libvirt keeps the definitions of persistent networks.
"""


def kit_bridge(network_xml: str | None) -> str | None:
    """The bridge name in a libvirt network definition (None without one)."""
    if not network_xml:
        return None
    try:
        element = ET.fromstring(network_xml).find("bridge")
    except ET.ParseError:
        return None
    return element.get("name") if element is not None else None


def collisions(
    routes: list[dict[str, Any]],
    links: list[dict[str, Any]],
    subnet: str,
    own_bridge: str | None,
) -> list[str]:
    """The routes (parsed `ip -j route show`) and addresses (parsed `ip -j addr show`) that
    overlap the subnet, as readable strings; those on own_bridge (the kit's) and the default
    route do not count."""
    net = ipaddress.ip_network(subnet, strict=False)
    found: list[str] = []
    for route in routes:
        dst, dev = str(route.get("dst", "")), route.get("dev")
        if dst == "default" or (own_bridge is not None and dev == own_bridge):
            continue
        try:
            other = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if other.version == net.version and other.overlaps(net):
            via = f" via {route['gateway']}" if "gateway" in route else ""
            found.append(f"route {dst}{via} dev {dev}")
    for link in links:
        dev = link.get("ifname")
        if own_bridge is not None and dev == own_bridge:
            continue
        for info in link.get("addr_info", []):
            address = ipaddress.ip_address(str(info.get("local")))
            if address.version == net.version and address in net:
                found.append(f"address {address}/{info.get('prefixlen')} on {dev}")
    return found


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "bridge": {"type": "str", "required": True},
            "subnet": {"type": "str", "required": True},
            "network": {"type": "str", "required": True},
            "networks_dir": {"type": "path", "default": "/etc/libvirt/qemu/networks"},
        },
        supports_check_mode=True,
    )
    p = module.params
    bridge = p["bridge"]
    try:
        subnet = ipaddress.ip_interface(p["subnet"]).network.with_prefixlen
    except ValueError as exc:
        module.fail_json(msg=f"bridge preflight: {exc}")
    ip_cmd = module.get_bin_path("ip", required=True)

    def ip_json(*args: str) -> list[dict[str, Any]]:
        rc, out, err = module.run_command([ip_cmd, "-j", *args], check_rc=False)
        if rc != 0:
            module.fail_json(msg=f"bridge preflight: ip {' '.join(args)} failed: {err.strip()}")
        parsed: list[dict[str, Any]] = json.loads(out or "[]")
        return parsed

    definition = os.path.join(p["networks_dir"], f"{p['network']}.xml")
    defined_bridge = kit_bridge(_read(definition))
    exists = os.path.exists(f"/sys/class/net/{bridge}")
    is_kits = (
        exists and defined_bridge == bridge and os.path.isdir(f"/sys/class/net/{bridge}/bridge")
    )
    problems = []
    if exists and not is_kits:
        problems.append(
            f"a device named {bridge} exists but the kit did not make it (it is not the bridge of "
            f"libvirt network {p['network']!r}, {definition}); choose another bridge_name"
        )
    overlaps = collisions(
        ip_json("-4", "route", "show"),
        ip_json("-4", "addr", "show"),
        subnet,
        bridge if is_kits else None,
    )
    if overlaps:
        problems.append(
            f"the bridge subnet {subnet} overlaps what this host has: {'; '.join(overlaps)}; "
            "choose another subnet (bridge_address, bridge_prefix)"
        )
    if problems:
        module.fail_json(msg="refusing to build the VM's bridge: " + " | ".join(problems))
    module.exit_json(changed=False, subnet=subnet, bridge_exists=exists)


if __name__ == "__main__":
    main()
