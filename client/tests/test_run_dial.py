"""Connect and upgrade latency (`connect_ms`, `upgrade_ms`) and the client host's kernel TCP
figures (`kernel`) of `wsswarm run`, on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Callable
from itertools import pairwise
from typing import Any

from wsswarm import latency

Wsecho = Any
FaultServer = Any
RunResult = Any
SMALL: tuple[str, ...] = ("--processes", "1", "--connections", "6", "--connect-rate", "100")
SMALL += ("--no-probe", "--warmup", "0.5", "--duration", "1")
ACCEPT_DELAY_S = 2.0


def ordered(figures: dict[str, float]) -> bool:
    keys = ("p50", "p90", "p99", "p999", "max")
    return all(figures[a] <= figures[b] for a, b in pairwise(keys))


def test_connect_and_upgrade_latency_of_every_connection(
    wsecho: Wsecho, wsswarm: Callable[..., RunResult]
) -> None:
    """Against wsecho: one connect and one upgrade per connection, in the ticks of the ramp,
    merged into the summary; both short on loopback."""
    result = wsswarm("--url", wsecho.url("/"), *SMALL)
    assert result.returncode == 0, result.stderr
    ticks = [r for r in result.worker_records(0) if r["type"] == "tick"]
    for key in ("connect_histogram", "upgrade_histogram"):
        counts = [latency.decode(t[key]).get_total_count() for t in ticks if key in t]
        assert sum(counts) == 6, key
    summary = result.summary
    for key in ("connect_ms", "upgrade_ms"):
        assert ordered(summary[key]), summary[key]
        assert 0 < summary[key]["p50"] < 1000
    # The client host's sockstat in the window: both ends of the 6 connections live in this
    # network namespace (wsecho is on loopback), and the kernel's TCP memory is counted.
    kernel = summary["kernel"]
    assert kernel["tcp_inuse_max"] >= 12
    assert kernel["tcp_alloc_at_max"] >= 12
    assert kernel["tcp_mem_bytes_max"] % os.sysconf("SC_PAGE_SIZE") == 0


def test_connect_latency_shows_a_server_that_does_not_accept(
    fault_server: Callable[..., FaultServer],
    wsecho: Wsecho,
    wsswarm: Callable[..., RunResult],
) -> None:
    """A server that accepts nothing for 2 s after the first connection arrives: the connects
    that waited take those 2 s (up to a kernel retransmit more), wsecho's take milliseconds."""
    slow = fault_server("--accept-delay", str(ACCEPT_DELAY_S))
    delayed = wsswarm("--url", slow.url("/echo"), *SMALL, "--connect-timeout", "10", limit=90)
    assert delayed.returncode == 0, delayed.stderr
    fast = wsswarm("--url", wsecho.url("/"), *SMALL)
    assert fast.returncode == 0, fast.stderr
    slow_ms, fast_ms = delayed.summary["connect_ms"], fast.summary["connect_ms"]
    upgrade_ms = delayed.summary["upgrade_ms"]
    delay_ms = ACCEPT_DELAY_S * 1000
    # The first connection fits the backlog of 0: it connects at once and waits in its upgrade.
    assert upgrade_ms["max"] >= delay_ms * 0.95
    assert upgrade_ms["p50"] < delay_ms / 4
    # The five others connect once the server accepts: after the delay, at most one kernel
    # retransmit (1 s) later; against wsecho a connect takes milliseconds.
    assert delay_ms <= slow_ms["p50"] <= delay_ms + 1100
    assert fast_ms["p99"] < delay_ms / 4
    assert delayed.summary["connections"]["open"] == 6
