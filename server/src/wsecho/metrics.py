"""Counters of the service and their Prometheus text rendering.

The echo path only does plain integer increments on attributes of one `Metrics` object (a few
nanoseconds each); everything else happens when /metrics is scraped.
"""

from __future__ import annotations

import os
import resource

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


class Metrics:
    """Service counters; the backends increment the attributes directly."""

    __slots__ = (
        "bytes_total",
        "connections_current",
        "connections_total",
        "handshake_failures_total",
        "messages_total",
        "rejected_total",
    )

    def __init__(self) -> None:
        self.connections_current = 0
        self.connections_total = 0
        self.messages_total = 0
        self.bytes_total = 0
        self.handshake_failures_total = 0
        self.rejected_total = 0

    def render(self) -> bytes:
        """The Prometheus text exposition format (version 0.0.4)."""
        rows = (
            (
                "connections_current",
                "gauge",
                "Open WebSocket connections.",
                self.connections_current,
            ),
            (
                "connections_total",
                "counter",
                "WebSocket connections opened.",
                self.connections_total,
            ),
            ("messages_total", "counter", "Messages echoed.", self.messages_total),
            ("bytes_total", "counter", "Payload bytes echoed.", self.bytes_total),
            (
                "handshake_failures_total",
                "counter",
                "TCP connections that ended without completing a WebSocket handshake or an HTTP "
                "request (malformed, timed out or rejected).",
                self.handshake_failures_total,
            ),
            (
                "connections_rejected_total",
                "counter",
                "Handshakes answered with HTTP 503 because --max-connections was reached.",
                self.rejected_total,
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory of the wsecho process.",
                resident_memory_bytes(),
            ),
        )
        lines = []
        for name, kind, help_text, value in rows:
            lines.append(f"# HELP wsecho_{name} {help_text}")
            lines.append(f"# TYPE wsecho_{name} {kind}")
            lines.append(f"wsecho_{name} {value}")
        return ("\n".join(lines) + "\n").encode()


METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
