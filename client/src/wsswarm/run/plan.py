"""The run's plan: each worker's share, how long the ramp takes, the planned measured window."""

from __future__ import annotations

import argparse
import math

# 2017 compat: one batch per worker every 200 ms.
COMPAT_STEP_S = 0.2


def planned_ramp_s(connections: int, processes: int, connect_rate: float, compat: bool) -> float:
    """How long the ramp takes by its schedule: the last attempt's offset plus one interval.

    Paced mode: attempt j of all workers leaves at j/R, the last at (C-1)/R; one more interval
    gives C/R, time for that last handshake on a healthy target. Compat: the biggest worker's
    batches of 3, 200 ms apart.
    """
    if compat:
        batches = math.ceil(max(split(connections, processes)) / 3)
        return batches * COMPAT_STEP_S
    return connections / connect_rate


def planned_window(args: argparse.Namespace) -> tuple[float, float] | None:
    """The measured window fixed in advance when several hosts share --start-at, else None.

    Every host computes it from the shared parameters alone, never from its own ramp's actual
    end: two hosts that round "ramp done + warm-up" each on their own land a tick apart, and
    the report, which counts only the common window, then loses a second of each.
    """
    if args.start_at is None:
        return None
    if args.measure_at is not None:
        start = float(args.start_at + round(args.measure_at - args.start_at))
    else:
        ramp = planned_ramp_s(args.connections, args.processes, args.connect_rate, args.compat)
        start = args.start_at + math.ceil(ramp + args.warmup - 1e-9)
    return start, start + args.duration


def window_missed(window: tuple[float, float] | None, t0: float, now: float) -> str | None:
    """Why a host cannot measure when its workers were ready at `now`, after the planned window."""
    if window is None or now < window[1]:
        return None
    return (
        f"the workers were ready only {now - t0:.1f} s after --start-at, when the common "
        f"measured window ({window[0] - t0:g}..{window[1] - t0:g} s after it) had already "
        "ended: start the hosts earlier before --start-at"
    )


def split(total: int, parts: int) -> list[int]:
    """`total` spread over `parts` as evenly as possible (the first ones get one more)."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def planned_steps(args: argparse.Namespace, t0: float) -> list[tuple[float, float, float]]:
    """With --steps: per step its ramp's start and its measured window (epoch s), from t0.

    Planned from the shared parameters alone, like the single window with --start-at, so
    every host measures the same seconds: step i's ramp starts when step i-1's window ends
    (step 0's at t0), its window on the first whole second after that ramp's planned length
    plus the warm-up, and lasts --step-duration.
    """
    plan: list[tuple[float, float, float]] = []
    ramp_start = t0
    previous = 0
    for count in args.steps:
        ramp = planned_ramp_s(count - previous, args.processes, args.connect_rate, False)
        start = ramp_start + math.ceil(ramp + args.warmup - 1e-9)  # a whole second after t0
        plan.append((ramp_start, start, start + args.step_duration))
        ramp_start = start + args.step_duration
        previous = count
    return plan
