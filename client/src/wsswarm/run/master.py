"""The master process of `wsswarm run`: spawns the workers, starts them, picks the window."""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import socket
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from wsswarm import slo, sockstat
from wsswarm.console import Console
from wsswarm.formats import StoppedBy
from wsswarm.run.exits import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_SLO
from wsswarm.run.plan import planned_steps, planned_window, split, window_missed
from wsswarm.run.summary import step_figures, summarize, write_atomic
from wsswarm.run.target import Target
from wsswarm.worker import WorkerConfig, worker_main

STEP_OPTIONS = ("steps", "step_duration", "stop_when")
# Fail fast: this many attempts without a single open connection ends the run.
FAIL_FAST_ATTEMPTS = 50


@dataclass
class WorkerState:
    index: int
    pipe: Connection
    process: Any
    ready: bool = False
    ramp: dict[str, Any] | None = None
    end: dict[str, Any] | None = None
    last_tick: dict[str, Any] | None = None
    measure_ticks: list[dict[str, Any]] = field(default_factory=list)
    compat_windows: list[dict[str, Any]] = field(default_factory=list)
    cpu_measure: list[float] = field(default_factory=list)
    # --steps: when this worker's ramp of each step but the last ended (the last: `ramp`).
    step_ramps: dict[int, float] = field(default_factory=dict)


class Master:
    def __init__(
        self, args: argparse.Namespace, target: Target, hot_path: tuple[str, str] = ("python", "")
    ) -> None:
        self.args = args
        self.target = target
        # ("compiled" or "python", the console line saying which and why): hotpath.resolve.
        self.hot_path, self.hot_path_line = hot_path
        self.params = {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(args).items()
            if key not in ("handler", "command")
            # Without --steps the files are those of a run before steps existed.
            and (args.steps is not None or key not in STEP_OPTIONS)
        }
        self.host = socket.gethostname()
        self.console = Console(args.progress, args.compat, args.connections)
        self.workers: list[WorkerState] = []
        self.t0 = 0.0
        self.measure_start: float | None = None
        self.measure_end: float | None = None
        # Fixed in advance (--start-at): every host measures the same seconds.
        self.window_planned = False
        self.ramp_done_at: float | None = None
        self.late_ramp_warned = False
        self.started = time.time()
        self.status = "completed"
        self.message = ""
        self.stop_sent = False
        self.pending_ticks: dict[int, dict[int, dict[str, Any]]] = {}
        self.compat_rt = 0
        self.compat_latencies: list[float] = []
        # This host's TCP sockets and the kernel's TCP memory at its peak in the window.
        self.kernel_peak: sockstat.SockStat | None = None
        self.kernel_inuse_max = 0
        # Encoded connect and upgrade histograms of every tick (all phases), for the summary.
        self.dial_histograms: dict[str, list[str]] = {"connect": [], "upgrade": []}
        # --steps: (ramp start, window start, window end) of each step, epoch s; per step its
        # connect and upgrade histograms; the steps judged by --stop-when, and what stopped it.
        self.steps: list[tuple[float, float, float]] = []
        self.step_dial: list[dict[str, list[str]]] = [
            {"connect": [], "upgrade": []} for _ in (args.steps or [])
        ]
        self.steps_judged = 0
        self.stopped_by: StoppedBy | None = None

    # ---- lifecycle ---------------------------------------------------------------------

    def spawn(self) -> None:
        args = self.args
        ctx = multiprocessing.get_context("spawn")
        shares = split(args.connections, args.processes)
        rate = args.connect_rate / args.processes
        plan = planned_steps(args, 0.0) if args.steps else []
        step_shares = [split(count, args.processes) for count in args.steps or []]
        for index, share in enumerate(shares):
            cfg = WorkerConfig(
                index=index,
                url=args.url,
                address=self.target.address,
                family=self.target.family,
                connections=share,
                connect_rate=rate,
                # Worker i's attempts fall between worker i-1's: the total is evenly paced.
                offset_s=0.0 if args.compat else index / args.connect_rate,
                t0=0.0,
                tick_s=1.0,
                mode=args.mode,
                rate=args.rate or 0.0,
                compat=args.compat,
                hot_path=self.hot_path,
                connect_timeout=args.connect_timeout,
                reconnect=args.reconnect,
                out_dir=str(args.out) if args.out else None,
                label=args.label,
                host=self.host,
                params=self.params,
                source_addresses=tuple(args.source_address),
                rlimit_nofile=args.rlimit_nofile,
                drain_timeout=min(2.0, args.connect_timeout),
                # Steps after the first start their ramp half an interval after the window
                # before ends: none of their attempts is counted in the tick that closes it.
                steps=tuple(
                    (counts[index], ramp + (0.5 / args.connect_rate if ramp else 0.0), a, b)
                    for counts, (ramp, a, b) in zip(step_shares, plan, strict=True)
                ),
            )
            parent, child = ctx.Pipe()
            process = ctx.Process(target=worker_main, args=(cfg, child), name=f"wsswarm-{index}")
            process.start()
            child.close()
            self.workers.append(WorkerState(index, parent, process))

    def broadcast(self, message: tuple[str, Any]) -> None:
        for worker in self.workers:
            if worker.end is None:
                with contextlib.suppress(OSError):
                    worker.pipe.send(message)

    def stop(self, status: str, message: str) -> None:
        if self.stop_sent:
            return
        self.stop_sent = True
        if self.status == "completed":
            self.status, self.message = status, message
        self.broadcast(("stop", {"reason": status, "message": message}))

    def wait_ready(self, deadline: float) -> None:
        while not all(w.ready for w in self.workers):
            remaining = deadline - time.time()
            if remaining <= 0:
                raise RuntimeError("worker processes did not start within 30 s")
            self.poll(min(remaining, 0.2))
            if self.status == "error":
                raise RuntimeError(self.message)

    def poll(self, timeout: float) -> None:
        pipes = {w.pipe: w for w in self.workers if w.end is None}
        sentinels = {w.process.sentinel: w for w in self.workers if w.end is None}
        if not pipes:
            time.sleep(timeout)
            return
        for ready in wait(list(pipes) + list(sentinels), timeout):
            if ready in sentinels:
                worker = sentinels[ready]
                # Read what the pipe still holds before judging the exit.
                self.drain_pipe(worker)
                if worker.end is None:
                    worker.end = {"reason": "error", "message": "worker exited"}
                    self.status = "error"
                    self.message = (
                        f"worker {worker.index} exited unexpectedly "
                        f"(exit code {worker.process.exitcode})"
                    )
                    self.stop("error", self.message)
                continue
            self.drain_pipe(pipes[ready])  # type: ignore[index]

    def drain_pipe(self, worker: WorkerState) -> None:
        try:
            while worker.pipe.poll():
                kind, body = worker.pipe.recv()
                self.handle(worker, kind, body)
        except (EOFError, OSError):
            return

    def handle(self, worker: WorkerState, kind: str, body: Any) -> None:
        if kind == "ready":
            worker.ready = True
        elif kind == "tick":
            self.on_tick(worker, body)
        elif kind == "ramp_done":
            worker.ramp = body
            self.on_ramp_done()
        elif kind == "step_ramp_done":
            worker.step_ramps[body["step"]] = time.time()
            if worker.step_ramps[body["step"]] > self.steps[body["step"]][1]:
                self.warn_late_ramp(worker.step_ramps[body["step"]], self.steps[body["step"]][1])
        elif kind == "compat":
            self.compat_rt += body["roundtrips"]
            self.compat_latencies.append(body["avg"])
        elif kind == "end":
            worker.end = body
        elif kind == "fatal":
            self.status = "error"
            self.message = body
            self.stop("error", body)

    def on_ramp_done(self) -> None:
        if self.ramp_done_at is not None or not all(w.ramp for w in self.workers):
            return
        done = max(w.ramp["t"] for w in self.workers if w.ramp)
        self.ramp_done_at = done
        opened = sum(w.ramp["open"] for w in self.workers if w.ramp)
        self.console.ramp_complete(opened, done - self.t0)
        if self.window_planned:
            assert self.measure_start is not None
            began = self.steps[-1][1] if self.steps else self.measure_start
            if done > began:
                self.warn_late_ramp(done, began)
            return
        # One host on its own: the window starts on the first tick boundary after ramp + warm-up.
        ready_at = max(done + self.args.warmup, time.time() + 0.05)
        k = math.ceil((ready_at - self.t0) - 1e-9)
        self.measure_start = self.t0 + k
        self.measure_end = self.measure_start + self.args.duration
        self.broadcast(("measure", (self.measure_start, self.measure_end)))

    def warn_late_ramp(self, done: float | None, began: float | None = None) -> None:
        """The planned window (`began`: a step's) began before this host's ramp ended: keep
        it, but say so."""
        began = began if began is not None else self.measure_start
        if self.late_ramp_warned or began is None:
            return
        self.late_ramp_warned = True
        when = (
            f"it ended {done - began:.1f} s after the window began"
            if done is not None
            else "it was still running when the window began"
        )
        self.console.plain(
            f"WARNING: the ramp was not complete when the common measured window began ({when}); "
            "this host keeps the window shared with the other hosts, so its first measured "
            "seconds include ramp and warm-up. Lower --connections or raise --connect-rate, "
            "--warmup or --measure-at."
        )

    def on_tick(self, worker: WorkerState, record: dict[str, Any]) -> None:
        worker.last_tick = record
        for phase, encoded in self.dial_histograms.items():
            if f"{phase}_histogram" in record:
                encoded.append(record[f"{phase}_histogram"])
                if "step" in record:
                    self.step_dial[record["step"] - 1][phase].append(record[f"{phase}_histogram"])
        if record["phase"] == "measure":
            if worker.index == 0:
                self.read_kernel()
            worker.measure_ticks.append(record)
            worker.cpu_measure.append(record["cpu_percent"])
        index = round(record["t"] - self.t0)
        bucket = self.pending_ticks.setdefault(index, {})
        bucket[worker.index] = record
        alive = [w for w in self.workers if w.end is None]
        if len(bucket) >= len(alive):
            self.pending_ticks.pop(index, None)
            self.console.tick(index, list(bucket.values()), self.args.connections)
            self.check_fail_fast()
            self.judge_steps(index)

    def judge_steps(self, index: int) -> None:
        """--stop-when, once every worker's ticks of a step's window are in: stop after the
        first step where one of the conditions holds."""
        while self.steps_judged < len(self.steps):
            step = self.steps_judged
            if index < round(self.steps[step][2] - self.t0):
                return
            self.steps_judged += 1
            figures = step_figures(self, step)
            for cond in (slo.parse(expr) for expr in self.args.stop_when):
                outcome = cond.check(figures)
                if outcome["passed"]:
                    self.stopped_by = {
                        "step": step + 1,
                        "connections": self.args.steps[step],
                        "expr": outcome["expr"],
                        "value": outcome["value"],
                    }
                    self.console.plain(
                        f"step {step + 1} ({self.args.steps[step]} connections): --stop-when "
                        f"{outcome['expr']} holds (value {outcome['value']:g}): the run ends here"
                    )
                    if step < len(self.steps) - 1:
                        self.stop("completed", f"--stop-when {outcome['expr']} at step {step + 1}")
                    return

    def read_kernel(self) -> None:
        """Once a measured second: this host's sockstat (its network namespace, the kernel's
        TCP memory); a kernel without it leaves the summary's `kernel` null."""
        try:
            now = sockstat.read_sockstat()
        except (OSError, ValueError):
            return
        self.kernel_inuse_max = max(self.kernel_inuse_max, now.tcp_inuse)
        if self.kernel_peak is None or now.tcp_mem_bytes > self.kernel_peak.tcp_mem_bytes:
            self.kernel_peak = now

    def check_fail_fast(self) -> None:
        ticks = [w.last_tick for w in self.workers if w.last_tick]
        attempted = sum(t["attempted"] for t in ticks)
        failed = sum(t["failed"] for t in ticks)
        opened = sum(t["open"] for t in ticks) + sum(t.get("dropped", 0) for t in ticks)
        if (
            opened == 0
            and failed >= min(FAIL_FAST_ATTEMPTS, self.args.connections)
            and (failed == attempted)
        ):
            kinds: dict[str, int] = {}
            for tick in ticks:
                for kind, count in tick["errors"].items():
                    kinds[kind] = kinds.get(kind, 0) + count
            detail = ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items()))
            self.stop(
                "error",
                f"no connection could be opened to {self.args.url}: {failed} of {attempted} "
                f"attempts failed ({detail})",
            )
            self.status = "error"

    def flush_pending(self) -> None:
        for index in sorted(self.pending_ticks):
            self.console.tick(
                index, list(self.pending_ticks[index].values()), self.args.connections
            )
        self.pending_ticks.clear()

    def compat_print(self) -> None:
        # 2017 master: sum of round trips; unweighted mean of the 200 ms window averages.
        n = len(self.compat_latencies)
        average = sum(self.compat_latencies) / n if n else math.nan
        self.console.compat_line(self.compat_rt, average)
        self.compat_rt = 0
        self.compat_latencies = []

    def check_measured(self) -> None:
        """A run that completed without a single measured tick has not measured: an error."""
        window = (
            self.measure_end - self.measure_start
            if self.measure_start is not None and self.measure_end is not None
            else None
        )
        measured = bool(window) and any(w.measure_ticks for w in self.workers)
        if self.status == "completed" and not measured:
            self.status = "error"
            late = max(
                (t["interval_s"] for w in self.workers for t in [w.last_tick] if t), default=0.0
            )
            self.message = "no worker tick fell inside the measured window" + (
                f": the workers were starved of CPU (a tick came {late:.0f} s late); "
                "the machine is overloaded"
                if late > 2
                else ""
            )

    def run(self) -> int:
        args = self.args
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
        if args.compat:
            self.console.plain(f"benchmarking server {self.target.host}:{self.target.port}")
        self.spawn()
        self.wait_ready(time.time() + 30)
        self.t0 = args.start_at if args.start_at is not None else time.time() + 0.2
        self.broadcast(("start", self.t0))
        window = planned_window(args)
        if args.steps:
            self.steps = [
                (self.t0 + r, self.t0 + a, self.t0 + b) for r, a, b in planned_steps(args, 0.0)
            ]
            window = (self.steps[0][1], self.steps[-1][2])
        if window is not None:
            self.window_planned = True
            self.measure_start, self.measure_end = window
            if not args.steps:  # the workers know the steps' windows from their config
                self.broadcast(("measure", window))
        self.console.started(args, self.t0, window)
        if self.hot_path_line and not args.compat:
            self.console.plain(self.hot_path_line)
        late = time.time() - self.t0
        too_late = window_missed(window, self.t0, time.time())
        if too_late:
            self.stop("error", too_late)
        elif late > 0.5:
            self.console.plain(
                f"WARNING: the workers were ready {late:.1f} s after --start-at: the ramp "
                "starts late (attempts already due are launched at once)"
            )
        next_compat = time.time() + 1.0
        while not all(w.end is not None for w in self.workers):
            timeout = 0.2
            if args.compat:
                timeout = max(0.0, min(timeout, next_compat - time.time()))
            self.poll(timeout)
            if (
                self.window_planned
                and not self.steps
                and self.ramp_done_at is None
                and self.measure_start is not None
                # A tick of grace: the workers' ramp_done may still be in the pipe.
                and time.time() > self.measure_start + 1.0
            ):
                self.warn_late_ramp(None)
            if args.compat and time.time() >= next_compat:
                next_compat += 1.0
                self.compat_print()
        for worker in self.workers:
            worker.process.join(timeout=5)
        self.flush_pending()
        self.check_measured()
        summary = summarize(self)
        gates = [slo.parse(expr) for expr in getattr(args, "slo", None) or []]
        summary["slo"] = slo.check_all(gates, summary)
        if args.out:
            write_atomic(args.out / "summary.json", summary)
        self.console.final(summary)
        for outcome in summary["slo"]:
            self.console.plain(slo.line(outcome))
        if self.status == "completed":
            return EXIT_SLO if any(not o["passed"] for o in summary["slo"]) else EXIT_OK
        if self.status == "interrupted":
            return EXIT_INTERRUPTED
        return EXIT_FAILED
