"""The records wsswarm writes and reads (docs/formats.md), as types, and their format version.

Writers (the worker, `run`'s summary, the sampler, `report`) build these records; readers
(`report`, the progress reader) check them field by field. This module imports nothing of
wsswarm: the report depends on it, not on the load generator's runtime.
"""

from __future__ import annotations

import math
from typing import Any, Literal, TypedDict

# Every file carries it (in each record, or in its first record).
FORMAT_VERSION = 1
# Versions the readers understand.
KNOWN_VERSIONS = frozenset({FORMAT_VERSION})

# A worker counts as client-bound when its CPU stayed above this during the measured window...
CLIENT_BOUND_PERCENT = 90.0
# ...in at least this share of the measured ticks (one slow tick is noise, not a bottleneck).
CLIENT_BOUND_SHARE = 0.8

EndReason = Literal["completed", "interrupted", "error"]
Phase = Literal["ramp", "warmup", "measure", "drain"]


class LatencyMs(TypedDict):
    mean: float
    p50: float
    p90: float
    p99: float
    p999: float
    max: float


class _WorkerStartBase(TypedDict):
    type: Literal["start"]
    format_version: int
    worker: int
    host: str
    pid: int
    label: str
    url: str
    params: dict[str, Any]
    t: float


class WorkerStart(_WorkerStartBase, total=False):
    """First line of `worker-N.jsonl`."""

    rss_bytes: int  # absent in files written before 2026-11-27


class _TickBase(TypedDict):
    type: Literal["tick"]
    t: float
    phase: str  # one of Phase
    roundtrips: int
    interval_s: float
    latency_ms: LatencyMs | None
    open: int
    attempted: int
    failed: int
    dropped: int
    errors: dict[str, int]
    cpu_percent: float
    rss_bytes: int
    histogram: str


class Tick(_TickBase, total=False):
    """One line of `worker-N.jsonl` per second (also sent to the master over the pipe)."""

    connect_histogram: str  # durations (µs) of the connects that succeeded in this tick
    upgrade_histogram: str  # durations (µs) of the upgrades that succeeded in this tick


class RampTimes(TypedDict):
    first_attempt: float | None
    last_attempt: float | None
    done: float | None


class WorkerEnd(TypedDict):
    """Last line of `worker-N.jsonl`."""

    type: Literal["end"]
    t: float
    reason: str  # one of EndReason
    message: str
    roundtrips_total: int
    sent_total: int
    latency_sum_us: int
    ramp: RampTimes


class SummaryConnections(TypedDict):
    attempted: int
    open: int
    failed: int
    dropped: int


class SummaryRamp(TypedDict):
    requested_rate: float
    achieved_rate: float | None
    first_attempt: float | None
    last_attempt: float | None
    completed: float | None
    completed_before_window: bool | None
    window: Literal["planned", "after_ramp"]


class SloResult(TypedDict):
    """One SLO gate checked on a result (`slo[]` of summary.json)."""

    expr: str
    metric: str
    op: str
    threshold: float  # in the metric's unit: ms for latency
    value: float | None  # None: the result has no such figure (no round trip measured)
    passed: bool


class ClientKernel(TypedDict):
    """A client host's sockstat over its measured window (summary.json `kernel`)."""

    tcp_inuse_max: int  # TCP sockets of the run's network namespace
    tcp_mem_bytes_max: int  # the kernel's TCP socket buffer memory at its peak
    tcp_alloc_at_max: int  # the kernel's TCP sockets then


class _RunSummaryBase(TypedDict):
    format_version: int
    tool: str
    status: str  # one of EndReason
    message: str
    host: str
    label: str
    url: str
    params: dict[str, Any]
    started: float
    measure_started: float | None
    measure_ended: float | None
    roundtrips: int
    roundtrips_per_s: float
    latency_ms: LatencyMs | None
    connections: SummaryConnections
    errors: dict[str, int]
    client_bound: bool
    client_cpu_percent: dict[str, float]
    ramp: SummaryRamp
    roundtrips_total: int
    messages_sent: int
    histogram: str


class StepConnections(TypedDict):
    """At the end of a step's window, counted from the start of the run."""

    attempted: int
    open: int
    failed: int
    dropped: int


class StepSummary(TypedDict):
    """One entry of `summary.json` `steps[]` (`wsswarm run --steps`)."""

    step: int  # 0, 1, ... in the order of --steps
    connections_planned: int
    measure_started: float
    measure_ended: float
    ramp_completed_before_window: bool | None  # null: a worker's ramp of the step never ended
    roundtrips: int
    roundtrips_per_s: float
    latency_ms: LatencyMs | None
    connections: StepConnections
    connect_ms: LatencyMs | None  # the connects of the step's ramp (and reconnects) to its end
    upgrade_ms: LatencyMs | None


class StoppedBy(TypedDict):
    """The --stop-when condition that ended a --steps run."""

    step: int
    connections: int
    expr: str
    value: float | None


class RunSummary(_RunSummaryBase, total=False):
    """`summary.json` of one `wsswarm run --out` directory."""

    steps: list[StepSummary]  # --steps only
    stopped_by: StoppedBy | None  # --steps only; null: no --stop-when held

    kernel: ClientKernel | None  # this host's sockstat over the measured window
    connect_ms: LatencyMs | None  # dial to TCP connected, all successful attempts of the run
    upgrade_ms: LatencyMs | None  # TCP connected (request written) to the 101 handled
    slo: list[SloResult]  # the --slo gates; [] without any


class SampleStart(TypedDict):
    """First line of `sample.jsonl`."""

    type: Literal["start"]
    format_version: int
    host: str
    target: str
    kind: str  # "process" | "docker" | "libvirt"
    what: str
    interval_s: float
    pid: int
    t: float


class _ComponentBase(TypedDict):
    cpu_percent: float | None
    rss_bytes: int


class Component(_ComponentBase, total=False):
    usage_bytes: int  # containers only: the raw cgroup usage


class KernelTcp(TypedDict):
    """sockstat's TCP line as the sampled server's network namespace sees it."""

    tcp_inuse: int  # TCP sockets of that namespace
    tcp_alloc: int  # TCP sockets of the whole kernel
    tcp_mem_bytes: int  # TCP socket buffer memory of the whole kernel


class _SampleBase(TypedDict):
    type: Literal["sample"]
    t: float
    interval_s: float
    cpu_percent: float | None
    rss_bytes: int
    components: dict[str, Component]


class Sample(_SampleBase, total=False):
    """One line of `sample.jsonl` per interval."""

    errors: dict[str, str]  # only when something could not be read
    kernel: KernelTcp  # only when the source has a network namespace on the sampler's host


class SampleEnd(TypedDict):
    """Last line of `sample.jsonl`."""

    type: Literal["end"]
    t: float
    reason: str  # "signal" | "completed" | "target_gone" | "error"
    message: str
    samples: int


class HostStatus(TypedDict, total=False):
    status: str
    ended: str
    rc: int
    message: str


class _TargetStatusBase(TypedDict):
    target: str
    status: str  # "ok" | "failed"


class TargetStatus(_TargetStatusBase, total=False):
    """`<target>/status.json`, written by the swarm_run role."""

    reason: str
    hosts: dict[str, HostStatus]


def sustained_cpu(values: list[float]) -> float:
    """The CPU% a worker stayed at or above during CLIENT_BOUND_SHARE of the measured ticks."""
    if not values:
        return 0.0
    ordered = sorted(values)
    # The k-th highest value, k = ceil(80% of n): at least k ticks were at or above it.
    index = len(ordered) - math.ceil(len(ordered) * CLIENT_BOUND_SHARE - 1e-9)
    return ordered[index]
