"""TCP socket memory from the kernel's view, `/proc/<pid>/net/sockstat` (sampler and run).

Read through a process, sockstat shows that process's network namespace. Its
`TCP: inuse` counts the sockets of that namespace; `alloc` and `mem` (socket buffer memory,
in pages) are kept by the kernel for all namespaces together, so they are the whole kernel's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from wsswarm.formats import KernelTcp

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class SockStat:
    """The TCP line of one sockstat read."""

    tcp_inuse: int  # TCP sockets in the network namespace that was read
    tcp_alloc: int  # TCP sockets of the whole kernel
    tcp_mem_bytes: int  # TCP socket buffer memory of the whole kernel

    def as_record(self) -> KernelTcp:
        return {
            "tcp_inuse": self.tcp_inuse,
            "tcp_alloc": self.tcp_alloc,
            "tcp_mem_bytes": self.tcp_mem_bytes,
        }


def parse_sockstat(text: str, page_size: int = PAGE_SIZE) -> SockStat:
    """The `TCP:` line of a sockstat file; ValueError when it is missing or malformed."""
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name != "TCP":
            continue
        words = rest.split()
        values = dict(zip(words[::2], words[1::2], strict=False))
        try:
            return SockStat(
                tcp_inuse=int(values["inuse"]),
                tcp_alloc=int(values["alloc"]),
                tcp_mem_bytes=int(values["mem"]) * page_size,
            )
        except (KeyError, ValueError) as exc:
            raise ValueError(f"sockstat TCP line without inuse/alloc/mem: {line!r}") from exc
    raise ValueError("sockstat has no TCP line")


def read_sockstat(pid: int | None = None) -> SockStat:
    """sockstat as the network namespace of PID sees it (this process's own when None)."""
    path = Path("/proc/net/sockstat" if pid is None else f"/proc/{pid}/net/sockstat")
    return parse_sockstat(path.read_text())
