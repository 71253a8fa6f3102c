"""Preflight: do the connections fit the open-file limit and the local port range?"""

from __future__ import annotations

import math
import resource
from pathlib import Path

# Files a worker holds besides its sockets: interpreter, pipes, epoll, log file, some slack.
FD_OVERHEAD = 64
PORT_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def local_port_range(path: Path = PORT_RANGE_FILE) -> tuple[int, int] | None:
    """The kernel's ephemeral port range, or None where it cannot be read (not Linux)."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return None
    return low, high


def check_open_files(connections: int, processes: int) -> tuple[list[str], list[str]]:
    """Raise the soft RLIMIT_NOFILE as far as needed (children inherit it).

    Returns (problems, notes): problems mean the run cannot work as asked.
    """
    per_process = math.ceil(connections / processes) + FD_OVERHEAD
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    notes: list[str] = []
    if per_process <= soft:
        return [], notes
    if hard == resource.RLIM_INFINITY or per_process <= hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (per_process, hard))
        notes.append(f"raised the open-file soft limit from {soft} to {per_process}")
        return [], notes
    needed_processes = math.ceil(connections / max(hard - FD_OVERHEAD, 1))
    return [
        f"each of the {processes} processes needs about {per_process} open files "
        f"({math.ceil(connections / processes)} connections + {FD_OVERHEAD}), but the hard "
        f"limit is {hard}: use --processes {needed_processes} or more, or raise the hard "
        "limit (LimitNOFILE= in a systemd unit, nofile in /etc/security/limits.conf)"
    ], notes


def check_port_range(
    connections: int, source_addresses: int = 1, path: Path = PORT_RANGE_FILE
) -> list[str]:
    """The connections go to one ip:port from `source_addresses` addresses in turn: each
    connection needs a local port of its address, and each address has the whole range (its
    sockets are bound with IP_BIND_ADDRESS_NO_PORT, so ports are per 4-tuple)."""
    port_range = local_port_range(path)
    if port_range is None:
        return []
    low, high = port_range
    available = high - low + 1
    per_address = math.ceil(connections / source_addresses)
    if per_address <= available:
        return []
    needed = math.ceil(connections / available)
    where = (
        "one source address"
        if source_addresses == 1
        else f"each of {source_addresses} source addresses"
    )
    return [
        f"{connections} connections to one ip:port need {per_address} local ports from {where}, "
        f"but net.ipv4.ip_local_port_range ({low}-{high}) gives {available}: widen it "
        "(sysctl -w net.ipv4.ip_local_port_range='1024 65535'), give --source-address "
        f"{needed} addresses or more, or spread the connections over more client hosts"
    ]
