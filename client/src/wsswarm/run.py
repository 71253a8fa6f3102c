"""`wsswarm run`: open many WebSocket connections to an echo server and measure round trips.

The master process validates the input, checks the limits, probes the target once (so that an
unreachable target fails at once, not after the ramp), spawns the worker processes, tells them
when to start (a common wall-clock epoch, `--start-at` for several hosts), decides when the
measured window starts (ramp complete + warm-up, on a tick boundary), prints the console and
writes `summary.json`. The workers write their own JSON-lines files as they go.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import multiprocessing
import os
import signal
import socket
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from wsswarm import __version__, errors, latency, limits, wsclient
from wsswarm.console import Console
from wsswarm.worker import FORMAT_VERSION, WorkerConfig, worker_main

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
# A worker counts as client-bound when its CPU stayed above this during the measured window...
CLIENT_BOUND_PERCENT = 90.0
# ...in at least this share of the measured ticks (one slow tick is noise, not a bottleneck).
CLIENT_BOUND_SHARE = 0.8
# Fail fast: this many attempts without a single open connection ends the run.
FAIL_FAST_ATTEMPTS = 50
# 2017 compat: one batch per worker every 200 ms.
COMPAT_STEP_S = 0.2


class UsageError(Exception):
    """Bad input: one line for the user, exit code 2."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number: {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more: {text}")
    return value


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of `wsswarm run` (see client/README.md for the why of each default)."""
    target = parser.add_argument_group("target")
    target.add_argument("--url", required=True, help="ws://HOST:PORT/PATH of the echo server")
    target.add_argument("--label", default="", help="free text stored in every file (target name)")
    load = parser.add_argument_group("load")
    load.add_argument("--processes", type=_positive_int, default=5, help="worker processes (5)")
    load.add_argument(
        "--connections", type=_positive_int, default=10_000, help="total connections (10000)"
    )
    load.add_argument(
        "--connect-rate",
        type=_positive_float,
        default=75.0,
        help="new connections per second in total, paced evenly (75, as in 2017)",
    )
    load.add_argument(
        "--mode",
        choices=("closed", "open"),
        default="closed",
        help="closed: next message when the echo arrives (2017); open: fixed --rate",
    )
    load.add_argument(
        "--rate",
        type=_positive_float,
        default=None,
        help="open mode: messages per second per connection",
    )
    load.add_argument("--reconnect", action="store_true", help="reopen dropped connections")
    load.add_argument(
        "--compat",
        action="store_true",
        help="reproduce the 2017 client: batches of 3 per 200 ms per worker, its console line",
    )
    timing = parser.add_argument_group("timing")
    timing.add_argument(
        "--warmup", type=_non_negative_float, default=10.0, help="seconds after the ramp (10)"
    )
    timing.add_argument(
        "--duration", type=_positive_float, default=60.0, help="measured seconds (60)"
    )
    timing.add_argument(
        "--start-at",
        type=float,
        default=None,
        metavar="EPOCH",
        help="start the ramp at this wall-clock time (several client hosts start together)",
    )
    timing.add_argument(
        "--measure-at",
        type=float,
        default=None,
        metavar="EPOCH",
        help="with --start-at: start the measured window here (a whole number of seconds after "
        "--start-at) instead of the planned ramp + warm-up",
    )
    timing.add_argument(
        "--connect-timeout",
        type=_positive_float,
        default=10.0,
        help="seconds for the TCP connect, and again for the WebSocket upgrade (10)",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, default=None, help="directory for the metrics files")
    output.add_argument(
        "--progress",
        choices=("auto", "bar", "lines"),
        default="auto",
        help="console: a live bar during the ramp (auto: when stdout is a terminal)",
    )
    expert = parser.add_argument_group("expert")
    expert.add_argument(
        "--source-address", default=None, help="bind the client sockets to this local address"
    )
    expert.add_argument(
        "--rlimit-nofile",
        type=_positive_int,
        default=None,
        help="set each worker's open-file soft limit to N (to test EMFILE; preflight only warns)",
    )
    expert.add_argument(
        "--no-probe",
        action="store_true",
        help="skip the single test connection made before the workers start",
    )


@dataclass
class Target:
    url: str
    host: str
    port: int
    address: tuple[Any, ...]
    family: int


def parse_url(url: str) -> tuple[str, int]:
    """Host and port of a ws:// URL, or UsageError."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "wss":
        raise UsageError(f"--url {url}: wss:// is not supported (the lab targets are plain ws://)")
    if parsed.scheme != "ws":
        raise UsageError(f"--url {url}: must start with ws://")
    try:
        port = parsed.port or 80
    except ValueError:
        raise UsageError(f"--url {url}: invalid port") from None
    if not parsed.hostname:
        raise UsageError(f"--url {url}: no host")
    return parsed.hostname, port


def resolve(url: str) -> Target:
    host, port = parse_url(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"--url {url}: cannot resolve {host}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    return Target(url=url, host=host, port=port, address=tuple(address), family=family)


def validate(args: argparse.Namespace) -> None:
    if args.mode == "open" and args.rate is None:
        raise UsageError("--mode open needs --rate N (messages per second per connection)")
    if args.mode == "closed" and args.rate is not None:
        raise UsageError("--rate only applies to --mode open")
    if args.compat and args.mode != "closed":
        raise UsageError("--compat reproduces the 2017 closed loop: not with --mode open")
    if args.processes > args.connections:
        raise UsageError(
            f"--processes {args.processes} is more than --connections {args.connections}"
        )
    if args.start_at is not None and args.start_at < time.time() - 1:
        raise UsageError(f"--start-at {args.start_at} is in the past (now {time.time():.0f})")
    if args.measure_at is not None:
        if args.start_at is None:
            raise UsageError("--measure-at needs --start-at (the window is aligned to its ticks)")
        offset = args.measure_at - args.start_at
        if offset < 0 or not math.isfinite(offset) or abs(offset - round(offset)) > 1e-3:
            raise UsageError(
                f"--measure-at {args.measure_at}: must be a whole number of seconds at or after "
                f"--start-at {args.start_at} (ticks are on whole seconds from it)"
            )
    if args.source_address is not None:
        try:
            ipaddress.ip_address(args.source_address)
        except ValueError:
            raise UsageError(f"--source-address {args.source_address}: not an IP address") from None


class _ProbeConn(wsclient.ClientProtocol):
    """The probe's connection: it only needs to know when the connection has ended."""

    __slots__ = ("lost",)

    def __init__(self) -> None:
        super().__init__()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_lost(self) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


def probe(target: Target, timeout: float, source_address: str | None) -> str | None:
    """One WebSocket handshake (no message) before the workers start.

    Returns a fatal message when the target cannot be reached at all; a rejected handshake is
    only reported (the run counts those per connection).
    """

    async def attempt() -> None:
        sock = socket.socket(target.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            if source_address:
                sock.bind((source_address, 0))
            await asyncio.wait_for(loop.sock_connect(sock, target.address), timeout)
        except BaseException:
            sock.close()
            raise
        host, path = wsclient.host_and_path(target.url)
        conn = await wsclient.connect(
            loop, _ProbeConn, sock=sock, host=host, path=path, timeout=timeout
        )
        conn.send_close()  # 1000; then wait (bounded) until the connection has ended
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.lost, timeout)

    try:
        asyncio.run(attempt())
    except Exception as exc:
        kind = errors.classify(exc)
        where = f"{target.host}:{target.port}"
        if kind == errors.REFUSED:
            return f"target unreachable: connection to {where} refused (is the server running?)"
        if kind == errors.TIMEOUT:
            return f"target unreachable: no answer from {where} within {timeout:g} s"
        if kind in (errors.UNREACHABLE, errors.ADDR_NOT_AVAILABLE, errors.RESET):
            return f"target unreachable: {where}: {errors.describe(exc)}"
        print(
            f"wsswarm: warning: test connection to {target.url}: {kind}: {errors.describe(exc)}",
            file=sys.stderr,
            flush=True,
        )
    return None


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


def sustained_cpu(values: list[float]) -> float:
    """The CPU% a worker stayed at or above during CLIENT_BOUND_SHARE of the measured ticks."""
    if not values:
        return 0.0
    ordered = sorted(values)
    # The k-th highest value, k = ceil(80% of n): at least k ticks were at or above it.
    index = len(ordered) - math.ceil(len(ordered) * CLIENT_BOUND_SHARE - 1e-9)
    return ordered[index]


class Master:
    def __init__(self, args: argparse.Namespace, target: Target) -> None:
        self.args = args
        self.target = target
        self.params = {
            key: (str(value) if isinstance(value, Path) else value)
            for key, value in vars(args).items()
            if key not in ("handler", "command")
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

    # ---- lifecycle ---------------------------------------------------------------------

    def spawn(self) -> None:
        args = self.args
        ctx = multiprocessing.get_context("spawn")
        shares = split(args.connections, args.processes)
        rate = args.connect_rate / args.processes
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
                connect_timeout=args.connect_timeout,
                reconnect=args.reconnect,
                out_dir=str(args.out) if args.out else None,
                label=args.label,
                host=self.host,
                params=self.params,
                source_address=args.source_address,
                rlimit_nofile=args.rlimit_nofile,
                drain_timeout=min(2.0, args.connect_timeout),
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
            if done > self.measure_start:
                self.warn_late_ramp(done)
            return
        # One host on its own: the window starts on the first tick boundary after ramp + warm-up.
        ready_at = max(done + self.args.warmup, time.time() + 0.05)
        k = math.ceil((ready_at - self.t0) - 1e-9)
        self.measure_start = self.t0 + k
        self.measure_end = self.measure_start + self.args.duration
        self.broadcast(("measure", (self.measure_start, self.measure_end)))

    def warn_late_ramp(self, done: float | None) -> None:
        """The planned window began before this host's ramp ended: keep it, but say so."""
        if self.late_ramp_warned or self.measure_start is None:
            return
        self.late_ramp_warned = True
        when = (
            f"it ended {done - self.measure_start:.1f} s after the window began"
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
        if record["phase"] == "measure":
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
        if window is not None:
            self.window_planned = True
            self.measure_start, self.measure_end = window
            self.broadcast(("measure", window))
        self.console.started(args, self.t0, window)
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
        summary = self.summary()
        if args.out:
            write_atomic(args.out / "summary.json", summary)
        self.console.final(summary)
        if self.status == "completed":
            return EXIT_OK
        if self.status == "interrupted":
            return EXIT_INTERRUPTED
        return EXIT_FAILED

    # ---- summary -----------------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        hist = latency.new_histogram()
        roundtrips = 0
        lat_sum_ms = 0.0
        for worker in self.workers:
            for tick in worker.measure_ticks:
                roundtrips += tick["roundtrips"]
                if tick["latency_ms"]:
                    lat_sum_ms += tick["latency_ms"]["mean"] * tick["roundtrips"]
                hist.add(latency.decode(tick["histogram"]))
        window = None
        if self.measure_start is not None and self.measure_end is not None:
            window = self.measure_end - self.measure_start
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
        summary_latency = latency.summarize_ms(hist)
        if summary_latency is not None and roundtrips:
            summary_latency["mean"] = round(lat_sum_ms / roundtrips, 4)
        finals = [w.last_tick for w in self.workers if w.last_tick]
        errors_total: dict[str, int] = {}
        for tick in finals:
            for kind, count in tick["errors"].items():
                errors_total[kind] = errors_total.get(kind, 0) + count
        open_at_end = 0
        for worker in self.workers:
            if worker.measure_ticks:
                open_at_end += worker.measure_ticks[-1]["open"]
        cpu = {str(w.index): round(sustained_cpu(w.cpu_measure), 1) for w in self.workers}
        client_bound = any(value > CLIENT_BOUND_PERCENT for value in cpu.values())
        # Ramp figures come from the workers' ramp_done reports (later reconnects excluded).
        ramps = [w.ramp for w in self.workers if w.ramp]
        firsts = [r["first_attempt"] for r in ramps if r.get("first_attempt")]
        lasts = [r["last_attempt"] for r in ramps if r.get("last_attempt")]
        dones = [r["t"] for r in ramps]
        attempted = sum(t["attempted"] for t in finals)
        requested = 15.0 * self.args.processes if self.args.compat else self.args.connect_rate
        achieved = None
        if lasts and len(ramps) == len(self.workers):
            # n attempts paced 1/R apart span (n-1)/R: count the span from the scheduled start
            # (t0) to the last launch, plus one interval. A late loop lowers this figure.
            step = COMPAT_STEP_S if self.args.compat else 1.0 / requested
            ramp_attempts = sum(r["attempted"] for r in ramps)
            achieved = round(ramp_attempts / (max(lasts) - self.t0 + step), 3)
        ends = [w.end for w in self.workers if w.end]
        return {
            "format_version": FORMAT_VERSION,
            "tool": f"wsswarm {__version__}",
            "status": self.status,
            "message": self.message,
            "host": self.host,
            "label": self.args.label,
            "url": self.args.url,
            "params": self.params,
            "started": round(self.t0 or self.started, 4),
            "measure_started": self.measure_start,
            "measure_ended": self.measure_end,
            "roundtrips": roundtrips,
            "roundtrips_per_s": round(roundtrips / window, 3) if window else 0.0,
            "latency_ms": summary_latency,
            "connections": {
                "attempted": attempted,
                "open": open_at_end,
                "failed": sum(t["failed"] for t in finals),
                "dropped": sum(t.get("dropped", 0) for t in finals),
            },
            "errors": dict(sorted(errors_total.items())),
            "client_bound": client_bound,
            "client_cpu_percent": cpu,
            "ramp": {
                "requested_rate": requested,
                "achieved_rate": achieved,
                "first_attempt": min(firsts) if firsts else None,
                "last_attempt": max(lasts) if lasts else None,
                "completed": max(dones) if dones else None,
                # False: the window (fixed by --start-at for all hosts) began before the ramp
                # ended on this host; null: the ramp never ended.
                "completed_before_window": (
                    None
                    if not dones or len(dones) < len(self.workers) or self.measure_start is None
                    else max(dones) <= self.measure_start
                ),
                "window": "planned" if self.window_planned else "after_ramp",
            },
            "roundtrips_total": sum(e.get("roundtrips_total", 0) for e in ends),
            "messages_sent": sum(e.get("sent_total", 0) for e in ends),
            "histogram": latency.encode(hist),
        }


def write_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write JSON to a temporary file beside `path` and rename it over (readers never see half)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def main(args: argparse.Namespace) -> int:
    try:
        validate(args)
        target = resolve(args.url)
        problems: list[str] = []
        nofile_problems, notes = limits.check_open_files(args.connections, args.processes)
        if args.rlimit_nofile is not None:
            notes.extend(nofile_problems)  # deliberate low limit: the user asked for EMFILE
        else:
            problems.extend(nofile_problems)
        problems.extend(limits.check_port_range(args.connections))
        if problems:
            for problem in problems:
                print(f"wsswarm run: limits: {problem}", file=sys.stderr)
            return EXIT_USAGE
        for note in notes:
            print(f"wsswarm run: {note}", file=sys.stderr)
    except UsageError as exc:
        print(f"wsswarm run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.no_probe:
        fatal = probe(target, args.connect_timeout, args.source_address)
        if fatal:
            print(f"wsswarm run: {fatal}", file=sys.stderr)
            return EXIT_FAILED
    master = Master(args, target)

    def on_signal(signum: int, _frame: Any) -> None:
        master.stop("interrupted", f"stopped by {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = master.run()
    except RuntimeError as exc:
        master.stop("error", str(exc))
        for worker in master.workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
        print(f"wsswarm run: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code != EXIT_OK:
        print(f"wsswarm run: {master.status}: {master.message}", file=sys.stderr)
    return code
