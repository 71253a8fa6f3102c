"""The sampling loop: per-interval CPU% and memory from cumulative readings, as JSON lines."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import psutil

from wsswarm.formats import FORMAT_VERSION
from wsswarm.sample.readings import SampleError
from wsswarm.sample.sources import Source

# A process start time is the kernel's boot time (whole seconds) plus clock ticks, so it can read
# up to a second early: a new process that started this close before the last sample counts as
# born in this interval.
BIRTH_SLACK_S = 1.0


class Sampler:
    """Turns cumulative readings into per-interval CPU% and current memory, one record per call."""

    def __init__(self, source: Source) -> None:
        self.source = source
        first = source.read()
        self._prev = first.readings
        self._prev_mono = time.monotonic()
        self._prev_t = time.time()

    def sample(self) -> dict[str, Any]:
        snap = self.source.read()
        mono, now = time.monotonic(), time.time()
        elapsed = max(mono - self._prev_mono, 1e-9)
        components: dict[str, dict[str, Any]] = {}
        errors = dict(snap.errors)
        cpu_total, rss_total = 0.0, 0
        for name, reading in sorted(snap.readings.items()):
            prev = self._prev.get(name)
            cpu: float | None
            if prev is not None and reading.cpu_s >= prev.cpu_s:
                cpu = (reading.cpu_s - prev.cpu_s) / elapsed * 100.0
            elif (
                prev is None
                and reading.born is not None
                and reading.born >= self._prev_t - BIRTH_SLACK_S
            ):
                cpu = reading.cpu_s / elapsed * 100.0  # born in this interval: all of it is new
            else:
                # Seen for the first time (or its counter restarted): no baseline yet.
                cpu = None
                errors[name] = "no CPU baseline yet (new or restarted); counted from next sample"
            comp: dict[str, Any] = {
                "cpu_percent": None if cpu is None else round(cpu, 2),
                "rss_bytes": reading.rss_bytes,
            }
            comp.update(reading.extra)
            components[name] = comp
            cpu_total += cpu or 0.0
            rss_total += reading.rss_bytes
        self._prev, self._prev_mono, self._prev_t = snap.readings, mono, now
        record: dict[str, Any] = {
            "type": "sample",
            "t": round(now, 3),
            "interval_s": round(elapsed, 4),
            "cpu_percent": round(cpu_total, 2),
            "rss_bytes": rss_total,
            "components": components,
        }
        if snap.kernel is not None:
            record["kernel"] = snap.kernel.as_record()
        if errors:
            record["errors"] = errors
        return record


@dataclass
class _Stop:
    reason: str = ""
    message: str = ""


def _ticks(interval: float, duration: float | None) -> Iterator[float]:
    """Monotonic deadlines on a fixed grid, so that the samples do not drift."""
    start = time.monotonic()
    k = 1
    while duration is None or k * interval <= duration + 1e-9:
        yield start + k * interval
        k += 1


def run_sampler(
    source: Source,
    out: IO[str],
    *,
    target: str,
    interval: float,
    duration: float | None,
    wait: Callable[[float], int | None],
) -> _Stop:
    """Write start, samples and end records; `wait(s)` sleeps, returns a signal number or None."""

    def write(record: dict[str, Any]) -> None:
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
        out.flush()  # each line is complete on disk as soon as it is written

    write(
        {
            "type": "start",
            "format_version": FORMAT_VERSION,
            "host": socket.gethostname(),
            "target": target,
            "kind": source.kind,
            "what": source.what,
            "interval_s": interval,
            "pid": os.getpid(),
            "t": round(time.time(), 3),
        }
    )
    stop = _Stop("completed", f"duration of {duration} s reached")
    samples = 0
    try:
        sampler = Sampler(source)
        for deadline in _ticks(interval, duration):
            signum = wait(max(deadline - time.monotonic(), 0.0))
            if signum is not None:
                stop = _Stop("signal", f"stopped by {signal.Signals(signum).name}")
                break
            write(sampler.sample())
            samples += 1
            if source.gone:
                stop = _Stop("target_gone", f"{source.what}: the sampled process has exited")
                break
    except (SampleError, OSError, psutil.Error) as exc:
        stop = _Stop("error", str(exc))
    write(
        {
            "type": "end",
            "t": round(time.time(), 3),
            "reason": stop.reason,
            "message": stop.message,
            "samples": samples,
        }
    )
    return stop


def signal_wait(signals: tuple[signal.Signals, ...]) -> Callable[[float], int | None]:
    """A sleep that a SIGTERM/SIGINT ends at once: the signals are blocked and waited for."""

    def wait(timeout: float) -> int | None:
        info = signal.sigtimedwait(signals, timeout)
        return None if info is None else info.si_signo

    return wait
