#!/usr/bin/python3
"""Ansible module: let the test host route between the VM's bridge and the client hosts, and
nothing else; take exactly that away again."""

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
module: echolab_bridge_forward
short_description: Forwarding between the VM's bridge and the client hosts only.
description:
  - C(state=present) keeps one iptables chain, O(chain), holding exactly two ACCEPT rules per
    client address (client to the bridge subnet out of the bridge, the bridge subnet to the client
    in from the bridge), and a jump to it in FORWARD ahead of libvirt's C(LIBVIRT_*) jumps, whose
    REJECT rules keep everything else off the isolated bridge.
  - IPv4 forwarding is switched on only where it is off, and only on the bridge and on the
    interfaces that reach the client addresses (C(net.ipv4.conf.IF.forwarding), never
    C(ip_forward)); the ones it switched on are recorded in O(state_file).
  - C(state=absent) removes the jump and the chain and switches off recorded forwarding again,
    unless the host forwards on all interfaces by then (C(ip_forward=1), e.g. Docker's).
  - A client address that is the test host's own is left out; one on the bridge subnet, or
    routed over the bridge, is refused. Check mode reports and changes nothing.
options:
  state:
    type: str
    choices: [present, absent]
    default: present
  bridge:
    type: str
    description: The bridge device (required with state=present).
  subnet:
    type: str
    description: The bridge subnet, CIDR (required with state=present).
  clients:
    type: list
    elements: str
    default: []
    description: The client hosts' IPv4 addresses (an optional /prefix is ignored).
  chain:
    type: str
    default: ECHOLAB_FORWARD
  state_file:
    type: path
    required: true
    description: JSON record of the interfaces whose forwarding this module switched on.
"""


def client_addresses(clients: list[str], subnet: str) -> list[str]:
    """Each client as a host network ("192.0.2.5/32"), in order, once; raises ValueError naming a
    bad entry or one inside the bridge subnet."""
    net = ipaddress.ip_network(subnet, strict=False)
    out: list[str] = []
    for text in clients:
        try:
            address = ipaddress.ip_interface(text).ip
        except ValueError:
            raise ValueError(f"client {text!r} is not an IP address") from None
        if address.version != 4:
            raise ValueError(f"client {text!r} is not an IPv4 address")
        if address in net:
            raise ValueError(f"client {text!r} is inside the bridge subnet {net}")
        host = f"{address}/32"
        if host not in out:
            out.append(host)
    return out


def wanted_rules(chain: str, bridge: str, subnet: str, clients: list[str]) -> list[str]:
    """The chain's rules as `iptables -S CHAIN` prints them."""
    net = ipaddress.ip_network(subnet, strict=False).with_prefixlen
    rules = []
    for client in clients:
        rules.append(f"-A {chain} -s {client} -d {net} -o {bridge} -j ACCEPT")
        rules.append(f"-A {chain} -s {net} -d {client} -i {bridge} -j ACCEPT")
    return rules


def chain_rules(chain: str, listing: str) -> list[str]:
    """The `-A` lines of `iptables -S CHAIN`."""
    return [line.strip() for line in listing.splitlines() if line.startswith(f"-A {chain} ")]


def jump_action(chain: str, forward_listing: str) -> str:
    """ "" when FORWARD jumps to the chain before any libvirt chain, "insert" when it does not jump
    to it, "move" when the jump comes after one of libvirt's."""
    lines = [line.split() for line in forward_listing.splitlines() if line.startswith("-A FORWARD")]
    targets = [tokens[tokens.index("-j") + 1] for tokens in lines if "-j" in tokens[:-1]]
    if chain not in targets:
        return "insert"
    libvirt = [i for i, target in enumerate(targets) if target.startswith("LIBVIRT_")]
    return "move" if libvirt and libvirt[0] < targets.index(chain) else ""


def route_device(route_json: str) -> tuple[str, str]:
    """(type, device) of `ip -j route get ADDRESS`."""
    routes = json.loads(route_json)
    if not routes:
        raise ValueError("`ip -j route get` printed no route")
    return str(routes[0].get("type", "unicast")), str(routes[0].get("dev", ""))


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def _forwarding(iface: str) -> str | None:
    return _read(f"/proc/sys/net/ipv4/conf/{iface}/forwarding")


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
            "bridge": {"type": "str"},
            "subnet": {"type": "str"},
            "clients": {"type": "list", "elements": "str", "default": []},
            "chain": {"type": "str", "default": "ECHOLAB_FORWARD"},
            "state_file": {"type": "path", "required": True},
        },
        required_if=[("state", "present", ["bridge", "subnet"])],
        supports_check_mode=True,
    )
    p = module.params
    chain = p["chain"]
    try:
        record = read_record(p["state_file"])
    except ValueError as exc:
        module.fail_json(msg=f"bridge forwarding: {exc}")

    def iptables(*args: str, check: bool = True) -> tuple[int, str]:
        binary = module.get_bin_path("iptables", required=True)
        rc, out, err = module.run_command([binary, "-w", *args])
        if check and rc != 0:
            module.fail_json(msg=f"iptables {' '.join(args)} failed: {err.strip()}")
        return rc, out

    if p["state"] == "absent":
        have_iptables = module.get_bin_path("iptables") is not None
        rc, listing = iptables("-S", chain, check=False) if have_iptables else (1, "")
        has_chain = rc == 0
        _, forward = iptables("-S", "FORWARD") if has_chain else (0, "")
        has_jump = jump_action(chain, forward) != "insert"
        global_on = _read("/proc/sys/net/ipv4/ip_forward") == "1"
        switch_off = [
            i for i in record.get("forwarding_on", []) if _forwarding(i) == "1" and not global_on
        ]
        changed = has_chain or bool(switch_off) or bool(record)
        if not module.check_mode:
            if has_jump:
                iptables("-D", "FORWARD", "-j", chain)
            if has_chain:
                iptables("-F", chain)
                iptables("-X", chain)
            for iface in switch_off:
                with open(f"/proc/sys/net/ipv4/conf/{iface}/forwarding", "w") as f:
                    f.write("0\n")
            if record:
                os.unlink(p["state_file"])
        module.exit_json(changed=changed, removed_chain=has_chain, forwarding_off=switch_off)

    bridge, subnet = p["bridge"], p["subnet"]
    try:
        clients = client_addresses(p["clients"], subnet)
    except ValueError as exc:
        module.fail_json(msg=f"bridge forwarding: {exc}")
    ip_cmd = module.get_bin_path("ip", required=True)
    kept, own, ifaces = [], [], [bridge]
    for client in clients:
        address = client.split("/")[0]
        rc, out, err = module.run_command([ip_cmd, "-j", "route", "get", address])
        if rc != 0:
            module.fail_json(msg=f"bridge forwarding: no route to client {address}: {err.strip()}")
        kind, dev = route_device(out)
        if kind == "local":
            own.append(address)
            continue
        if dev == bridge:
            module.fail_json(msg=f"bridge forwarding: client {address} is routed over {bridge}")
        kept.append(client)
        if dev not in ifaces:
            ifaces.append(dev)
    rules = wanted_rules(chain, bridge, subnet, kept)

    if module.get_bin_path("iptables") is None and module.check_mode:
        # A fresh host in check mode: iptables comes with the role's package step.
        module.exit_json(
            changed=True, clients=kept, rules=rules, own_addresses=own, interfaces=ifaces
        )
    rc, listing = iptables("-S", chain, check=False)
    has_chain = rc == 0
    rules_differ = not has_chain or chain_rules(chain, listing) != rules
    _, forward = iptables("-S", "FORWARD")
    action = jump_action(chain, forward)
    # A bridge that does not exist yet (check mode before libvirt) counts as switched off.
    forwarding_on = [i for i in ifaces if _forwarding(i) != "1"]
    if bridge in forwarding_on and _forwarding(bridge) is None and not module.check_mode:
        module.fail_json(msg=f"bridge forwarding: bridge {bridge} does not exist")
    changed = rules_differ or bool(action) or bool(forwarding_on)
    if changed and not module.check_mode:
        if not has_chain:
            iptables("-N", chain)
        if rules_differ:
            iptables("-F", chain)
            for rule in rules:
                iptables(*rule.split())
        if action == "move":
            iptables("-D", "FORWARD", "-j", chain)
        if action:
            iptables("-I", "FORWARD", "1", "-j", chain)
        for iface in forwarding_on:
            with open(f"/proc/sys/net/ipv4/conf/{iface}/forwarding", "w") as f:
                f.write("1\n")
        if forwarding_on:
            on = list(dict.fromkeys([*record.get("forwarding_on", []), *forwarding_on]))
            write_record(p["state_file"], {"forwarding_on": on})
    module.exit_json(
        changed=changed,
        clients=kept,
        rules=rules,
        own_addresses=own,
        interfaces=ifaces,
        rules_changed=rules_differ,
        jump=action,
        forwarding_on=forwarding_on,
    )


if __name__ == "__main__":
    main()
