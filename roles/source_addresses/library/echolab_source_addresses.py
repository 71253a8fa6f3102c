#!/usr/bin/python
"""Ansible module: add secondary IP addresses to an interface, and remove exactly those it added."""

from __future__ import annotations

import ipaddress
import json
import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.echolab_record import (
    read_record,
    write_record,
)

DOCUMENTATION = r"""
module: echolab_source_addresses
short_description: Secondary source addresses on an interface, removed again at teardown.
description:
  - C(state=present) adds each address the interface does not have yet and records in
    O(state_file) the ones it added (an address the host already had is never recorded, so never
    removed).
  - C(state=absent) removes the recorded addresses that are still there and deletes the record.
  - Check mode reports what would change and changes nothing.
options:
  state:
    type: str
    choices: [present, absent]
    default: present
    description: Add (present) or remove the recorded ones (absent).
  interface:
    type: str
    description: The interface to add the addresses to (required with state=present).
  addresses:
    type: list
    elements: str
    default: []
    description: IPv4 or IPv6 addresses, each with an optional /prefix.
  prefix:
    type: int
    default: 32
    description: Prefix length of an IPv4 address given without one (IPv6 gets 128).
  state_file:
    type: path
    required: true
    description: JSON record of the addresses this module added.
"""


def normalise(addresses: list[str], prefix: int) -> list[str]:
    """ "10.0.0.5" -> "10.0.0.5/32"; raises ValueError naming a bad entry."""
    out = []
    for text in addresses:
        try:
            iface = ipaddress.ip_interface(text if "/" in text else f"{text}/{prefix}")
            if "/" not in text and iface.version == 6:
                iface = ipaddress.ip_interface(f"{text}/128")
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address with an optional /prefix") from None
        out.append(iface.with_prefixlen)
    return list(dict.fromkeys(out))


def interface_addresses(ip_json: str) -> set[str]:
    """The "address/prefix" of every address in `ip -j addr show dev IF` output."""
    return {
        f"{info['local']}/{info['prefixlen']}"
        for link in json.loads(ip_json)
        for info in link.get("addr_info", [])
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "interface": {"type": "str"},
            "addresses": {"type": "list", "elements": "str", "default": []},
            "prefix": {"type": "int", "default": 32},
            "state_file": {"type": "path", "required": True},
        },
        required_if=[("state", "present", ["interface"])],
        supports_check_mode=True,
    )
    p = module.params
    try:
        record = read_record(p["state_file"])
    except ValueError as exc:
        module.fail_json(msg=f"echolab source addresses: {exc}")

    if p["state"] == "absent":
        iface = record.get("interface")
        added = list(record.get("added", []))
        removed: list[str] = []
        if iface and added:
            rc, out, err = module.run_command(["ip", "-j", "addr", "show", "dev", iface])
            have = interface_addresses(out) if rc == 0 else set()
            removed = [a for a in added if a in have]
            for addr in removed if not module.check_mode else []:
                module.run_command(["ip", "addr", "del", addr, "dev", iface], check_rc=True)
        changed = bool(removed) or bool(record)
        if record and not module.check_mode:
            os.unlink(p["state_file"])
        module.exit_json(changed=changed, interface=iface, removed=removed)

    try:
        wanted = normalise(p["addresses"], p["prefix"])
    except ValueError as exc:
        module.fail_json(msg=f"echolab source addresses: {exc}")
    iface = p["interface"]
    rc, out, err = module.run_command(["ip", "-j", "addr", "show", "dev", iface])
    if rc != 0:
        module.fail_json(msg=f"interface {iface!r} not found on this host: {err.strip()}")
    have = interface_addresses(out)
    if record and record.get("interface") not in (None, iface):
        module.fail_json(
            msg=f"addresses recorded on {record['interface']!r}, now asked for {iface!r}: "
            "run the teardown first"
        )
    to_add = [a for a in wanted if a not in have]
    added = list(dict.fromkeys([*record.get("added", []), *to_add]))
    if to_add and not module.check_mode:
        for addr in to_add:
            module.run_command(["ip", "addr", "add", addr, "dev", iface], check_rc=True)
        write_record(p["state_file"], {"interface": iface, "added": added})
    module.exit_json(changed=bool(to_add), interface=iface, added=to_add, addresses=wanted)


if __name__ == "__main__":
    main()
