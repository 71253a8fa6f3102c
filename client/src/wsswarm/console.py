"""Console output of `wsswarm run`: a live bar during the ramp on a terminal, else plain lines."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from wsswarm.formats import RunSummary
from wsswarm.latency import js_number

BAR_WIDTH = 30


class Console:
    def __init__(
        self, progress: str, compat: bool, connections: int, stream: TextIO | None = None
    ) -> None:
        self.stream = stream or sys.stdout
        self.compat = compat
        self.connections = connections
        is_tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = progress == "bar" or (progress == "auto" and is_tty)
        self.bar_shown = False

    def _write(self, line: str) -> None:
        if self.bar_shown:
            self.stream.write("\n")
            self.bar_shown = False
        self.stream.write(line + "\n")
        self.stream.flush()

    def plain(self, line: str) -> None:
        self._write(line)

    def started(
        self, args: argparse.Namespace, t0: float, window: tuple[float, float] | None = None
    ) -> None:
        if self.compat:
            return
        if getattr(args, "steps", None):
            self._write(
                f"wsswarm: steps of {','.join(map(str, args.steps))} connections over "
                f"{args.processes} processes to {args.url}, {args.connect_rate:g}/s, warm-up "
                f"{args.warmup:g} s and {args.step_duration} s measured per step, "
                f"mode {args.mode}"
                + (f" at {args.rate:g}/s per connection" if args.mode == "open" else "")
                + f", start at {t0:.3f}"
                + (f", last window ends {window[1] - t0:g} s after start" if window else "")
            )
            return
        ramp_s = args.connections / args.connect_rate
        self._write(
            f"wsswarm: {args.connections} connections over {args.processes} processes to "
            f"{args.url}, {args.connect_rate:g}/s (ramp ~{ramp_s:.0f} s), warm-up "
            f"{args.warmup:g} s, measure {args.duration:g} s, mode {args.mode}"
            + (f" at {args.rate:g}/s per connection" if args.mode == "open" else "")
            + f", start at {t0:.3f}"
            + (
                f", measured window {window[0] - t0:g}..{window[1] - t0:g} s after start "
                "(fixed by --start-at, common to all hosts)"
                if window
                else ""
            )
        )

    def tick(self, index: int, records: list[dict[str, Any]], target: int) -> None:
        if self.compat or not records:
            return
        phases = [r["phase"] for r in records]
        phase = max(set(phases), key=phases.count)
        open_now = sum(r["open"] for r in records)
        failed = sum(r["failed"] for r in records)
        roundtrips = sum(r["roundtrips"] for r in records)
        interval = max(r["interval_s"] for r in records) or 1.0
        cpu = max(r["cpu_percent"] for r in records)
        errors: dict[str, int] = {}
        for record in records:
            for kind, count in record["errors"].items():
                errors[kind] = errors.get(kind, 0) + count
        error_text = ", ".join(f"{k} {v}" for k, v in sorted(errors.items())) or "none"
        if phase == "ramp" and self.bar:
            done = min(1.0, open_now / target) if target else 1.0
            filled = int(done * BAR_WIDTH)
            bar = "#" * filled + "." * (BAR_WIDTH - filled)
            self.stream.write(
                f"\rramp [{bar}] {open_now}/{target} open, {failed} failed ({error_text})  "
            )
            self.stream.flush()
            self.bar_shown = True
            return
        weighted = [(r["latency_ms"]["mean"], r["roundtrips"]) for r in records if r["latency_ms"]]
        count = sum(n for _, n in weighted)
        mean = sum(m * n for m, n in weighted) / count if count else None
        worst_p99 = max((r["latency_ms"]["p99"] for r in records if r["latency_ms"]), default=None)
        latency_text = (
            f"mean {mean:.2f} ms, p99 {worst_p99:.2f} ms" if mean is not None else "no round trip"
        )
        self._write(
            f"{index:4d}s {phase:<7} open {open_now}/{target}  "
            f"{roundtrips / interval:,.0f} round-trips/s  {latency_text}  "
            f"cpu max {cpu:.0f}%  errors: {error_text}"
        )

    def ramp_complete(self, open_now: int, seconds: float) -> None:
        if self.compat:
            return
        self._write(f"ramp complete after {seconds:.1f} s: {open_now} connections open")

    def compat_line(self, roundtrips: int, average: float) -> None:
        # Exactly the 2017 template literal, JavaScript number formatting included.
        self._write(
            f"Roundtrips per second: {roundtrips}, at average latency: {js_number(average)}ms"
        )

    def final(self, summary: RunSummary) -> None:
        if self.compat:
            return
        lat = summary["latency_ms"]
        conn = summary["connections"]
        self._write(
            f"measured {summary['roundtrips']} round trips: "
            f"{summary['roundtrips_per_s']:,.0f} round-trips/s"
            + (
                f", latency ms mean {lat['mean']:.2f} p50 {lat['p50']:.2f} p90 {lat['p90']:.2f}"
                f" p99 {lat['p99']:.2f} p99.9 {lat['p999']:.2f} max {lat['max']:.2f}"
                if lat
                else ", no round trip"
            )
        )
        self._write(
            f"connections: {conn['attempted']} attempted, {conn['open']} open, "
            f"{conn['failed']} failed, {conn['dropped']} dropped; errors: "
            + (", ".join(f"{k} {v}" for k, v in summary["errors"].items()) or "none")
        )
        if summary["client_bound"]:
            busy = [
                f"worker {w} at {p:.0f}%"
                for w, p in summary["client_cpu_percent"].items()
                if p > 90
            ]
            self._write(
                "WARNING: the client was the bottleneck (client-bound): "
                + ", ".join(busy)
                + " CPU for most of the measured window. These numbers measure this client, "
                "not the server: use more --processes or more client hosts."
            )
