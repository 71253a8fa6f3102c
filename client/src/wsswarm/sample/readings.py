"""What a source reads at one instant: cumulative counters per component, and problems."""

from __future__ import annotations

from dataclasses import dataclass, field

from wsswarm.sockstat import SockStat


class SampleError(Exception):
    """The thing to sample cannot be found or read; the message says what to check."""


@dataclass
class Reading:
    """Cumulative counters of one component at one instant."""

    cpu_s: float  # cumulative CPU seconds since the component came to life
    rss_bytes: int
    # When the component came to life (epoch s), if known: a component born after the previous
    # sample had all its CPU time inside this interval.
    born: float | None = None
    extra: dict[str, int] = field(default_factory=dict)


@dataclass
class Snapshot:
    """What a source saw at one instant: readings by component name, problems by subject."""

    readings: dict[str, Reading] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    # TCP socket memory as the server's network namespace sees it, where the source has one here.
    kernel: SockStat | None = None
