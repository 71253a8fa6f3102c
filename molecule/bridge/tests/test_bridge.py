"""bridge on a lab container in routed mode: bridge43 up at 10.0.0.1/24, the libvirt network
isolated (no uplink, no NAT, REJECT for forwarding), the kit's chain ahead of those rules letting
only the one client address through, persistent (defined and autostarted), libvirt available."""

from __future__ import annotations

import json

from testinfra.host import Host


def test_bridge_has_host_address(host: Host) -> None:
    """bridge43 exists, is administratively up and carries 10.0.0.1/24."""
    link = json.loads(host.check_output("ip -json -4 addr show dev bridge43"))[0]
    assert "UP" in link["flags"]
    assert [(a["local"], a["prefixlen"]) for a in link["addr_info"]] == [("10.0.0.1", 24)]
    assert host.file("/sys/class/net/bridge43/bridge").is_directory


def test_bridge_has_no_uplink(host: Host) -> None:
    """No interface is enslaved to the bridge (no VM runs in this scenario): no uplink."""
    assert host.check_output("ls /sys/class/net/bridge43/brif") == ""


def test_no_nat_rules(host: Host) -> None:
    """Nothing masquerades or translates the bridge subnet."""
    nat = host.check_output("iptables -t nat -S")
    assert "10.0.0." not in nat
    assert "MASQUERADE" not in nat


def test_forwarding_rejected(host: Host) -> None:
    """Isolated mode rejects forwarding to and from the bridge, whatever ip_forward says."""
    rules = host.check_output("iptables -S").splitlines()
    assert "-A LIBVIRT_FWI -o bridge43 -j REJECT --reject-with icmp-port-unreachable" in rules
    assert "-A LIBVIRT_FWO -i bridge43 -j REJECT --reject-with icmp-port-unreachable" in rules
    # Only bridge43 -> bridge43 (guests talking to each other) may be accepted by libvirt.
    assert not [
        r
        for r in rules
        if "LIBVIRT_FW" in r and r.endswith("-j ACCEPT") and r.count("bridge43") == 1
    ]


def test_routed_mode_lets_only_the_client_through(host: Host) -> None:
    """The kit's chain accepts 192.0.2.10 <-> 10.0.0.0/24 only, jumped to before libvirt's
    REJECT rules; forwarding is on for the bridge."""
    assert host.check_output("iptables -S ECHOLAB_FORWARD").splitlines() == [
        "-N ECHOLAB_FORWARD",
        "-A ECHOLAB_FORWARD -s 192.0.2.10/32 -d 10.0.0.0/24 -o bridge43 -j ACCEPT",
        "-A ECHOLAB_FORWARD -s 10.0.0.0/24 -d 192.0.2.10/32 -i bridge43 -j ACCEPT",
    ]
    jumps = [
        line.split()[-1]
        for line in host.check_output("iptables -S FORWARD").splitlines()
        if line.startswith("-A FORWARD -j ")
    ]
    assert jumps.index("ECHOLAB_FORWARD") < jumps.index("LIBVIRT_FWI")
    assert jumps.index("ECHOLAB_FORWARD") < jumps.index("LIBVIRT_FWO")
    assert host.file("/proc/sys/net/ipv4/conf/bridge43/forwarding").content_string.strip() == "1"


def test_network_is_persistent_and_isolated(host: Host) -> None:
    """The libvirt network is defined, active, autostarted and has no forward mode."""
    info = host.check_output("virsh --connect qemu:///system net-info echolab")
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    assert fields["Active"].strip() == "yes"
    assert fields["Persistent"].strip() == "yes"
    assert fields["Autostart"].strip() == "yes"
    assert fields["Bridge"].strip() == "bridge43"
    xml = host.check_output("virsh --connect qemu:///system net-dumpxml echolab")
    assert "<forward" not in xml


def test_libvirt_socket_enabled(host: Host) -> None:
    """libvirtd is socket-activated: its socket is listening and starts at boot."""
    socket = host.service("libvirtd.socket")
    assert socket.is_running
    assert socket.is_enabled
