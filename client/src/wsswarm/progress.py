"""`wsswarm progress`: the progress of a running `wsswarm run --out DIR`, read from the tails of
its worker files.

Waits until --until (epoch seconds, at most --max-wait seconds from now), then prints one JSON
object: the current round-trips/s (sum over workers of their latest tick), open connections,
attempts, failures, the phase, and how many workers have ended. A worker that has already ended
counts with its last measured tick, and once the run's summary.json exists its measured
round-trips/s is reported too: a short run that ends between two of Ansible's polls must not read
as 0 round-trips/s. Read-only; the swarm_run role polls it so that a running target is never a
silent wait.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

TAIL_BYTES = 65536
# A tick older than this (seconds) means the worker stopped writing.
STALE_S = 5.0


Record = dict[str, Any]


def last_records(path: Path) -> tuple[Record | None, Record | None, Record | None, Record | None]:
    """Return (start record, last complete record, last tick, last measured tick) of a worker
    file; the last tick carries the cumulative attempts and failures of a worker that ended."""
    start: Record | None = None
    last: Record | None = None
    final_tick: Record | None = None
    measured: Record | None = None
    with path.open("rb") as handle:
        first = handle.readline()
        try:
            start = json.loads(first)
        except ValueError:
            start = None
        size = path.stat().st_size
        handle.seek(max(0, size - TAIL_BYTES))
        for raw in reversed(handle.read().splitlines()):
            try:
                record = json.loads(raw)
            except ValueError:
                continue  # a partly written last line or a cut first line
            if not isinstance(record, dict):
                continue
            if last is None:
                last = record
            if record.get("type") == "tick" and final_tick is None:
                final_tick = record
            if record.get("type") == "tick" and record.get("phase") == "measure":
                measured = record
                break
    return start, last, final_tick, measured


def tick_rate(tick: dict[str, Any]) -> float:
    """Round trips per second of one tick record."""
    interval = float(tick.get("interval_s") or 1.0)
    return float(tick.get("roundtrips", 0)) / max(interval, 1e-3)


def summary_rate(out_dir: Path) -> float | None:
    """The measured round-trips/s of a finished run (its summary.json), None before it exists."""
    try:
        value = json.loads((out_dir / "summary.json").read_text()).get("roundtrips_per_s")
    except (OSError, ValueError, AttributeError):
        return None
    return round(float(value), 1) if isinstance(value, int | float) else None


def progress(out_dir: Path, now: float) -> dict[str, Any]:
    workers = sorted(out_dir.glob("worker-*.jsonl"))
    phases: Counter[str] = Counter()
    result: dict[str, Any] = {
        "t": now,
        "workers": len(workers),
        "ended": 0,
        "stale": 0,
        "roundtrips_per_s": 0.0,
        "open": 0,
        "attempted": 0,
        "failed": 0,
        "summary": (out_dir / "summary.json").exists(),
        "measured_roundtrips_per_s": summary_rate(out_dir),
    }
    for path in workers:
        try:
            _, last, final_tick, measured = last_records(path)
        except OSError:
            continue
        if last is None:
            continue
        if last.get("type") == "end":
            result["ended"] += 1
            phases["ended"] += 1
            if measured is not None:
                result["roundtrips_per_s"] += tick_rate(measured)
            if final_tick is not None:
                result["attempted"] += int(final_tick.get("attempted", 0))
                result["failed"] += int(final_tick.get("failed", 0))
            continue
        if last.get("type") != "tick":
            phases["starting"] += 1
            continue
        phases[str(last.get("phase", "?"))] += 1
        if now - float(last.get("t", 0.0)) > STALE_S:
            result["stale"] += 1
            continue
        result["roundtrips_per_s"] += tick_rate(last)
        result["open"] += int(last.get("open", 0))
        result["attempted"] += int(last.get("attempted", 0))
        result["failed"] += int(last.get("failed", 0))
    result["roundtrips_per_s"] = round(result["roundtrips_per_s"], 1)
    result["phase"] = phases.most_common(1)[0][0] if phases else "waiting"
    return result


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, required=True, help="the wsswarm run --out directory")
    parser.add_argument("--until", type=float, default=0.0, help="epoch seconds to wait for")
    parser.add_argument("--max-wait", type=float, default=60.0, help="longest wait, seconds")


def main(args: argparse.Namespace) -> int:
    wait = min(max(0.0, args.until - time.time()), args.max_wait)
    time.sleep(wait)
    print(json.dumps(progress(args.dir, time.time())))
    return 0
