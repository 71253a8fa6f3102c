"""Counters of the service and their Prometheus text rendering.

The echo path only does plain integer increments on attributes of one `Metrics` object (a few
nanoseconds each); everything else happens when /metrics is scraped.
"""

from __future__ import annotations

import dataclasses
import os
import resource
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from wsecho._engine import Engine

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_memory_bytes() -> int:
    """Current resident set size of this process.

    /proc/self/statm gives the current value on Linux; elsewhere fall back to the peak RSS that
    getrusage reports (kilobytes on Linux, bytes on macOS), which is the best the OS offers.
    """
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if os.uname().sysname == "Darwin" else peak * 1024


@dataclasses.dataclass(frozen=True)
class Counters:
    """One process's counters at one instant (what a worker publishes to the others)."""

    connections_current: int = 0
    connections_total: int = 0
    messages_total: int = 0
    bytes_total: int = 0
    handshake_failures_total: int = 0
    rejected_total: int = 0
    resident_memory_bytes: int = 0
    hot_path_connections: int = 0
    hot_path_ejections_total: int = 0

    def __add__(self, other: Counters) -> Counters:
        return Counters(
            *(
                a + b
                for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)
            )
        )


class ServiceView(Protocol):
    """The whole service as one worker sees it (wsecho.workers), for /metrics and /healthz."""

    def workers(self, own: Counters) -> list[Counters]:
        """Every worker's counters, in worker order; this worker's are `own`."""

    def parent_memory_bytes(self) -> int:
        """Resident memory of the process that started the workers."""

    def health_problem(self) -> str | None:
        """Why the service is not healthy (a worker has stopped reporting), or None."""


class Metrics:
    """One process's counters; the backends increment the attributes directly. `service` is set
    in a worker of `--workers N`: /metrics and /healthz then answer for every worker. `engine`
    is set when the compiled hot path runs: its messages and bytes count with the others'."""

    __slots__ = (
        "bytes_total",
        "connections_current",
        "connections_total",
        "engine",
        "handshake_failures_total",
        "hot_path",
        "messages_total",
        "rejected_total",
        "service",
    )

    def __init__(self) -> None:
        self.connections_current = 0
        self.connections_total = 0
        self.messages_total = 0
        self.bytes_total = 0
        self.handshake_failures_total = 0
        self.rejected_total = 0
        self.service: ServiceView | None = None
        self.engine: Engine | None = None
        self.hot_path = "python"  # which one serves established connections (wsecho.hotpath)

    @property
    def messages_echoed(self) -> int:
        """Messages echoed, by either hot path."""
        return self.messages_total + (self.engine.messages if self.engine else 0)

    @property
    def bytes_echoed(self) -> int:
        """Payload bytes echoed, by either hot path."""
        return self.bytes_total + (self.engine.bytes if self.engine else 0)

    def snapshot(self) -> Counters:
        engine = self.engine
        return Counters(
            self.connections_current,
            self.connections_total,
            self.messages_echoed,
            self.bytes_echoed,
            self.handshake_failures_total,
            self.rejected_total,
            resident_memory_bytes(),
            engine.connections if engine else 0,
            engine.ejections if engine else 0,
        )

    def health_problem(self) -> str | None:
        """None when the service is healthy, else why not."""
        return None if self.service is None else self.service.health_problem()

    def render(self) -> bytes:
        """The service's counters in the Prometheus text format."""
        own = self.snapshot()
        if self.service is None:
            return render(own, [own], self.hot_path)
        workers = self.service.workers(own)
        total = sum(workers, Counters(resident_memory_bytes=self.service.parent_memory_bytes()))
        return render(total, workers, self.hot_path)


def render(total: Counters, workers: list[Counters], hot_path: str) -> bytes:
    """The Prometheus text exposition format (version 0.0.4) of the service's counters."""
    rows = (
        ("connections_current", "gauge", "Open WebSocket connections.", total.connections_current),
        ("connections_total", "counter", "WebSocket connections opened.", total.connections_total),
        ("messages_total", "counter", "Messages echoed.", total.messages_total),
        ("bytes_total", "counter", "Payload bytes echoed.", total.bytes_total),
        (
            "handshake_failures_total",
            "counter",
            "TCP connections that ended without completing a WebSocket handshake or an HTTP "
            "request (malformed, timed out or rejected).",
            total.handshake_failures_total,
        ),
        (
            "connections_rejected_total",
            "counter",
            "Handshakes answered with HTTP 503 because --max-connections was reached.",
            total.rejected_total,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the wsecho processes (every worker, and their parent).",
            total.resident_memory_bytes,
        ),
        ("workers", "gauge", "Worker processes (--workers).", len(workers)),
        (
            "hot_path_connections",
            "gauge",
            "Open connections served by the compiled hot path now (the rest of "
            "connections_current are on the Python path).",
            total.hot_path_connections,
        ),
        (
            "hot_path_ejections_total",
            "counter",
            "Connections the compiled hot path handed to the Python path (a control frame, a "
            "fragment, a partial frame, a full socket) or found closed.",
            total.hot_path_ejections_total,
        ),
    )
    lines = []
    for name, kind, help_text, value in rows:
        lines.append(f"# HELP wsecho_{name} {help_text}")
        lines.append(f"# TYPE wsecho_{name} {kind}")
        lines.append(f"wsecho_{name} {value}")
    lines.append("# HELP wsecho_hot_path_info The hot path of established connections.")
    lines.append("# TYPE wsecho_hot_path_info gauge")
    lines.append(f'wsecho_hot_path_info{{hot_path="{hot_path}"}} 1')
    lines.append("# HELP wsecho_worker_connections_current Open WebSocket connections per worker.")
    lines.append("# TYPE wsecho_worker_connections_current gauge")
    for index, counters in enumerate(workers):
        lines.append(
            f'wsecho_worker_connections_current{{worker="{index}"}} {counters.connections_current}'
        )
    return ("\n".join(lines) + "\n").encode()


METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
