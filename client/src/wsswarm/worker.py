"""One wsswarm worker process: its share of the connections, one event loop, no thread.

Per-connection state is one small protocol object with `__slots__` (no Task per connection once
it is open, see wsclient.py): uvloop calls `data_received` with each echo, the connection records
the latency and sends the next message from inside that callback (closed loop). The worker ticks
once a second on the master's wall-clock schedule and writes one JSON line to its file (the
same record goes to the master over a pipe); raw latencies are folded into the tick's HDR
histogram every 0.1 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import math
import os
import resource
import signal
import sys
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from time import perf_counter_ns
from typing import IO, TYPE_CHECKING, Any

from wsswarm import errors, latency
from wsswarm.connections import ClosedConn, CompatConn, EngineConn, OpenConn
from wsswarm.dialer import Dialer
from wsswarm.formats import FORMAT_VERSION
from wsswarm.wsclient import (
    TEXT,
    ClientProtocol,
    host_and_path,
    masked_frame,
    server_frame,
)

if TYPE_CHECKING:
    from wsswarm._engine import Engine

COMPAT_BATCH = 3  # 2017: BATCH_SIZE
COMPAT_BATCH_DELAY_S = 0.2  # 2017: BATCH_DELAY
COMPAT_REPORT_S = 0.2  # 2017: REPORT_DELAY
# Raw latencies are folded into the tick's histogram this often, not only once a tick: the
# array of raw values then holds ~1/10 of a tick's round trips (40 KB at 50k/s, not 400 KB).
FOLD_S = 0.1


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker needs; built by the master, pickled into the spawned process."""

    index: int
    url: str
    address: tuple[Any, ...]  # resolved once by the master: no DNS per connection
    family: int
    connections: int
    connect_rate: float  # this worker's attempts per second
    offset_s: float  # first attempt at t0 + offset_s (workers interleave)
    t0: float  # epoch s: start of the ramp; ticks at t0 + k * tick_s
    tick_s: float
    mode: str  # "closed" | "open"
    rate: float  # open mode: messages per second per connection
    compat: bool
    connect_timeout: float
    reconnect: bool
    out_dir: str | None
    label: str
    host: str
    params: dict[str, Any] = field(default_factory=dict)
    source_addresses: tuple[str, ...] = ()  # taken in turn, from the one at `index`
    rlimit_nofile: int | None = None
    drain_timeout: float = 2.0
    # --steps: per step this worker's connections and, in s after t0, the step's ramp start and
    # measured window (start, end); empty: one ramp to `connections`, the window from the master.
    steps: tuple[tuple[int, float, float, float], ...] = ()
    # "compiled": the closed loop's echoes in wsswarm._engine (see hotpath.py); "python".
    hot_path: str = "python"


class Worker:
    """Connection bookkeeping, ramp, ticks, drain of one process."""

    def __init__(self, cfg: WorkerConfig, pipe: Connection | None) -> None:
        self.cfg = cfg
        self.pipe = pipe
        self.loop = asyncio.get_running_loop()
        # Schedule: loop time of the master's epoch t0.
        self.mono_t0 = self.loop.time() + (cfg.t0 - time.time())
        self.host_header, self.path = host_and_path(cfg.url)
        self.listener_cls: type[ClosedConn] = (
            OpenConn
            if cfg.mode == "open"
            else CompatConn
            if cfg.compat
            else EngineConn
            if cfg.hot_path == "compiled"
            else ClosedConn
        )
        # Counters (cumulative unless said otherwise)
        self.attempted = 0
        self.failed = 0
        self.opened = 0
        self.open_now = 0
        self.dropped = 0
        self.wall_offset_ns = time.time_ns() - perf_counter_ns()
        self.rt_total = 0
        self.sent_total = 0
        self.lat_sum_us = 0
        self.errors: Counter[str] = Counter()
        self.lat = array("q")
        self.lat_append = self.lat.append
        # The compiled closed loop (hot path "compiled"), made in run(); None: all in Python.
        self.engine: Engine | None = None
        # Its fold in C too (wsswarm._engine.hdr_counts); None: latency.py's Python loop.
        self.counts_of: latency.CountsOf | None = None
        # One histogram for all ticks, emptied after each: allocated once, before the start
        # record (~0.8 MB with its encoder's buffer), not once a second.
        self.hist = latency.new_histogram()
        self.timing_hist: Any | None = None  # connect/upgrade durations, see timing_histogram
        # What the folds of the current tick added to `hist`.
        self.tick_rt = 0
        self.tick_lat_sum_us = 0
        self.tick_touched: set[int] = set()
        self.compat_rt = 0
        self.compat_lat_ms = 0
        # The message of the current millisecond, shared by every connection sending in it:
        # as the masked frame to write and as the echo frame expected back.
        self.payload_ms = -1
        self.frame = b""
        self.echo = b""
        # State
        self.sending = True
        self.closing = False
        self.stopping = False
        self.stop_reason = "completed"
        self.stop_message = ""
        self.conns: set[ClosedConn] = set()
        # Attempts in flight: callbacks and one timer for all (see wsclient.Dialer).
        self.dialer = Dialer(
            self.loop,
            self._attempt_done,
            host=self.host_header,
            path=self.path,
            timeout=cfg.connect_timeout,
            address=cfg.address,
            family=cfg.family,
            source_addresses=cfg.source_addresses,
            first_source=cfg.index,
        )
        self.ramp_launched = False
        self.ramp_done_at: float | None = None
        # Steps whose attempts are all launched, and when each one's last attempt finished.
        self.steps_launched = 0
        self.steps_done: list[float] = []
        self.windows = [(cfg.t0 + start, cfg.t0 + end) for _n, _r, start, end in cfg.steps]
        self.first_attempt_at: float | None = None
        self.last_attempt_at: float | None = None
        self.measure_start: float | None = self.windows[0][0] if self.windows else None
        self.measure_end: float | None = self.windows[-1][1] if self.windows else None
        self.stop_event = asyncio.Event()
        # Opened now, read with pread each tick: works even when EMFILE stops new opens.
        self.statm_fd = os.open("/proc/self/statm", os.O_RDONLY)
        self.page_size = os.sysconf("SC_PAGE_SIZE")
        self.cpu_last = time.process_time()
        self.tick_last = time.time()
        self.file: IO[str] | None = None
        self.first_error_printed = 0

    # ---- connections -------------------------------------------------------------------

    def new_payload(self, now_ms: int) -> None:
        """Build the 2017 message of millisecond `now_ms`, once for all its senders.

        One random masking key per message, not per frame: RFC 6455 wants the key
        unpredictable (it protects intermediaries from cache poisoning by crafted payloads);
        a key drawn from os.urandom each millisecond is that, and masking once instead of per
        send keeps the hot path a single write of ready bytes.
        """
        payload = b'{"timestamp":%d}' % now_ms
        self.payload_ms = now_ms
        self.frame = masked_frame(TEXT, payload)
        self.echo = server_frame(TEXT, payload)

    def engine_payload(self, now_ms: int) -> tuple[bytes, bytes]:
        """The engine's way to the message of millisecond `now_ms`: the one Python sends too."""
        if now_ms != self.payload_ms:
            self.new_payload(now_ms)
        return self.frame, self.echo

    def adopt(self, conn: ClosedConn) -> None:
        """Hand `conn`, its next message just sent, to the engine (its transport paused)."""
        assert self.engine is not None
        assert conn.transport is not None
        conn.transport.pause_reading()
        fd = conn.transport.get_extra_info("socket").fileno()
        sent = conn.sent
        assert sent is not None
        self.engine.adopt(conn, fd, conn.sent_ns, sent)

    def take_back(self, conn: ClosedConn, sent_ns: int, echo: bytes | None) -> None:
        """`conn` leaves the engine: its message in flight and its reading back to Python."""
        conn.sent = echo
        conn.sent_ns = sent_ns
        transport = conn.transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()

    def engine_ready(self) -> None:
        """The engine's epoll is readable: it serves the ready connections; ejected ones
        continue on the Python path with the bytes the engine read and did not process."""
        assert self.engine is not None
        try:
            ejected = self.engine.poll()
        except Exception as exc:  # a bug, or no memory: end the run loudly
            self.loop.remove_reader(self.engine.fileno())
            self._send(("fatal", f"worker {self.cfg.index}: engine: {type(exc).__name__}: {exc}"))
            self.request_stop("error", f"engine: {type(exc).__name__}: {exc}")
            return
        if ejected is None:
            return
        for conn, data, sent_ns, echo, unsent in ejected:
            self.take_back(conn, sent_ns, echo)
            if unsent:
                conn.transport.write(unsent)
            if data:
                conn.data_received(data)

    def release_engine(self) -> None:
        """Every connection back to the Python path (the drain runs there)."""
        engine = self.engine
        if engine is None:
            return
        self.loop.remove_reader(engine.fileno())
        for conn, sent_ns, echo in engine.release_all():
            self.take_back(conn, sent_ns, echo)

    def on_open(self, conn: ClosedConn) -> None:
        self.opened += 1
        self.open_now += 1
        self.conns.add(conn)

    def on_disconnected(self, conn: ClosedConn) -> None:
        if not conn.opened:
            return
        conn.opened = False
        self.open_now -= 1
        self.conns.discard(conn)
        if self.closing:
            return
        self.dropped += 1
        if not conn.closed_by_server:
            self.errors[errors.DROPPED] += 1
        if self.cfg.reconnect and not self.stopping:
            # Paced like the ramp so that a server that drops everything is not hammered.
            self.loop.call_later(1.0 / self.cfg.connect_rate, self.launch_attempt)

    def launch_attempt(self) -> None:
        if self.stopping:
            return
        self.attempted += 1
        now = time.time()
        if self.first_attempt_at is None:
            self.first_attempt_at = now
        self.last_attempt_at = now
        # The TCP connect, then the upgrade, each within --connect-timeout.
        self.dialer.dial(self.listener_cls())

    def _attempt_done(self, _conn: ClientProtocol, exc: BaseException | None) -> None:
        if exc is not None:
            self._fail(errors.classify(exc), errors.describe(exc))
        self._check_ramp_done()

    def _fail(self, kind: str, message: str) -> None:
        self.failed += 1
        self.errors[kind] += 1
        if self.cfg.compat:
            # 2017 only logged errors: `Connection error: ...`
            _say(f"Connection error: {message}")
        elif self.first_error_printed < 3:
            self.first_error_printed += 1
            _say(f"worker {self.cfg.index}: connection failed ({kind}): {message}")

    def _check_ramp_done(self) -> None:
        if (
            self.cfg.steps
            and len(self.steps_done) < self.steps_launched
            and self.dialer.in_flight == 0
            and not self.stopping
        ):
            # One step's ramp done: the master learns it (last step: the ramp_done below).
            self.steps_done.append(time.time())
            if len(self.steps_done) < len(self.cfg.steps):
                self._send(("step_ramp_done", {"step": len(self.steps_done) - 1}))
        if (
            self.ramp_done_at is None
            and self.ramp_launched
            and self.dialer.in_flight == 0  # the Dialer forgets an attempt before reporting it
            and not self.stopping
        ):
            self.ramp_done_at = time.time()
            self.dialer.shrink()
            _release_free_memory()
            self._send(
                (
                    "ramp_done",
                    {
                        "t": self.ramp_done_at,
                        "first_attempt": self.first_attempt_at,
                        "last_attempt": self.last_attempt_at,
                        "attempted": self.attempted,
                        "open": self.open_now,
                    },
                )
            )

    async def ramp(self) -> None:
        cfg = self.cfg
        start = self.mono_t0 + cfg.offset_s
        if cfg.compat:
            # 2017: a batch of 3 every 200 ms until the counter reaches the target (it counts
            # attempts, so 2000 per worker gives 667 batches = 2001 attempts).
            batch = 0
            while self.attempted < cfg.connections and not self.stopping:
                await self._sleep_until(start + batch * COMPAT_BATCH_DELAY_S)
                for _ in range(COMPAT_BATCH):
                    self.launch_attempt()
                batch += 1
        else:
            interval = 1.0 / cfg.connect_rate
            k = 0
            for share, ramp_s, _start, _end in cfg.steps or ((cfg.connections, 0.0, 0.0, 0.0),):
                first = k
                begin = start + ramp_s
                while k < share and not self.stopping:
                    await self._sleep_until(begin + (k - first) * interval)
                    now = self.loop.time()
                    # Launch everything due (the loop may wake late); pacing stays exact on
                    # average.
                    while k < share and begin + (k - first) * interval <= now:
                        self.launch_attempt()
                        k += 1
                self.steps_launched += 1
                if self.steps_launched < len(cfg.steps):
                    self._check_ramp_done()
        self.ramp_launched = True
        self._check_ramp_done()

    async def _sleep_until(self, when: float) -> None:
        delay = when - self.loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    # ---- open loop ---------------------------------------------------------------------

    async def open_loop(self) -> None:
        """Send one message per connection every 1/rate s, connections spread over buckets."""
        period_ns = int(1e9 / self.cfg.rate)
        buckets = max(1, min(100, period_ns // 2_000_000))  # a bucket at most every ~2 ms
        step_ns = period_ns // buckets
        regroup_every = max(1, 100_000_000 // period_ns)  # periods between regroupings
        origin = time.perf_counter_ns()
        fired = 0
        groups: list[list[ClosedConn]] = [[] for _ in range(buckets)]
        while self.sending and not self.stopping:
            intended = origin + fired * step_ns
            now = time.perf_counter_ns()
            if intended > now:
                await asyncio.sleep((intended - now) / 1e9)
                continue
            bucket = fired % buckets
            if bucket == 0 and (fired // buckets) % regroup_every == 0:
                # Regroup about every 100 ms: new connections join, closed ones leave.
                for group in groups:
                    group.clear()
                for i, conn in enumerate(self.conns):
                    groups[i % buckets].append(conn)
            for conn in groups[bucket]:
                if conn.opened and isinstance(conn, OpenConn):
                    conn.send_at(intended)
            fired += 1

    # ---- ticks, pipe, files ------------------------------------------------------------

    def phase(self, t: float) -> str:
        if self.windows:
            return self.step_phase(t)[0]
        if self.measure_end is not None and t > self.measure_end + 1e-6:
            return "drain"
        if self.measure_start is not None and t > self.measure_start + 1e-6:
            return "measure"
        if self.ramp_done_at is None or self.ramp_done_at > t:
            return "ramp"
        return "warmup"

    def step_phase(self, t: float) -> tuple[str, int]:
        """--steps: the phase at `t` and the step it belongs to (the window it is in or before)."""
        for step, (start, end) in enumerate(self.windows):
            if t <= start + 1e-6:
                done = self.steps_done[step] if step < len(self.steps_done) else None
                return ("ramp" if done is None or done > t else "warmup"), step
            if t <= end + 1e-6:
                return "measure", step
        return "drain", len(self.windows) - 1

    def fold(self) -> None:
        """Move the raw latencies recorded so far into the tick's histogram."""
        values = self.lat
        engine = self.engine
        if engine is not None:
            values.frombytes(engine.take_latencies())
            self.sent_total += engine.take_sent()
        if not values:
            return
        self.lat = array("q")
        self.lat_append = self.lat.append
        self.tick_touched.update(latency.record_bulk(self.hist, values, self.counts_of))
        self.tick_rt += len(values)  # one latency per round trip
        self.tick_lat_sum_us += sum(values)

    async def folder(self) -> None:
        while True:
            await asyncio.sleep(FOLD_S)
            self.fold()

    def make_tick(self, phase: str | None = None) -> dict[str, Any]:
        now = time.time()
        cpu = time.process_time()
        interval = max(now - self.tick_last, 1e-9)
        cpu_percent = 100.0 * (cpu - self.cpu_last) / interval
        self.tick_last, self.cpu_last = now, cpu
        self.fold()
        hist = self.hist
        rt, lat_sum, touched = self.tick_rt, self.tick_lat_sum_us, self.tick_touched
        self.tick_rt, self.tick_lat_sum_us, self.tick_touched = 0, 0, set()
        self.rt_total += rt
        self.wall_offset_ns = time.time_ns() - perf_counter_ns()
        if self.engine is not None:
            self.engine.wall_offset_ns = self.wall_offset_ns
        self.lat_sum_us += lat_sum
        mean_us = lat_sum / rt if rt else None
        record = {
            "type": "tick",
            "t": round(now, 4),
            "phase": phase or self.phase(now - interval / 2),
            "roundtrips": rt,
            "interval_s": round(interval, 4),
            "latency_ms": latency.summarize_ms(hist, mean_us),
            "open": self.open_now,
            "attempted": self.attempted,
            "failed": self.failed,
            "dropped": self.dropped,
            "errors": dict(self.errors),
            "cpu_percent": round(cpu_percent, 1),
            "rss_bytes": self.rss(),
            "histogram": latency.encode(hist),
        }
        if self.windows:
            record["step"] = self.step_phase(now - interval / 2)[1] + 1  # 1, 2, ...
        latency.clear(hist, touched)
        connect_us, upgrade_us = self.dialer.take_timings()
        if connect_us:
            record["connect_histogram"] = self.timing_histogram(connect_us)
        if upgrade_us:
            record["upgrade_histogram"] = self.timing_histogram(upgrade_us)
        return record

    def timing_histogram(self, values_us: list[int]) -> str:
        """Connect or upgrade durations of one tick, encoded (ticks of the ramp only)."""
        if self.timing_hist is None:
            self.timing_hist = latency.new_histogram()  # first used in the ramp, kept after
        touched = latency.record_bulk(self.timing_hist, values_us)
        encoded = latency.encode(self.timing_hist)
        latency.clear(self.timing_hist, touched)
        return encoded

    def rss(self) -> int:
        return int(os.pread(self.statm_fd, 128, 0).split()[1]) * self.page_size

    def watch(self, task: asyncio.Task[None]) -> None:
        """A helper task that dies must end the run loudly, not vanish."""

        def done(finished: asyncio.Task[None]) -> None:
            if finished.cancelled() or finished.exception() is None:
                return
            exc = finished.exception()
            self._send(("fatal", f"worker {self.cfg.index}: {type(exc).__name__}: {exc}"))
            self.request_stop("error", f"{type(exc).__name__}: {exc}")

        task.add_done_callback(done)

    def write(self, record: dict[str, Any]) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record, separators=(",", ":")) + "\n")
            self.file.flush()

    def _send(self, message: tuple[str, Any]) -> None:
        if self.pipe is None:
            return
        try:
            self.pipe.send(message)
        except (BrokenPipeError, OSError):
            self.request_stop("interrupted", "master process went away")

    async def ticker(self) -> None:
        k = 1
        while True:
            await self._sleep_until(self.mono_t0 + k * self.cfg.tick_s)
            # Next boundary after now: a starved process skips the ticks it missed instead of
            # writing a burst of empty ones.
            k = max(k + 1, math.floor((self.loop.time() - self.mono_t0) / self.cfg.tick_s) + 1)
            record = self.make_tick()
            self.write(record)
            self._send(("tick", record))
            if self.measure_end is not None and record["t"] >= self.measure_end - 0.001:
                self.request_stop("completed", "")
            if self.stop_event.is_set():
                return

    async def compat_reporter(self) -> None:
        """2017: every 200 ms send {roundtrips, averageLatency} (NaN when none) and reset."""
        while not self.stop_event.is_set():
            await asyncio.sleep(COMPAT_REPORT_S)
            rt, total = self.compat_rt, self.compat_lat_ms
            self.compat_rt = self.compat_lat_ms = 0
            self._send(("compat", {"roundtrips": rt, "avg": total / rt if rt else math.nan}))

    def on_pipe(self) -> None:
        assert self.pipe is not None
        try:
            while self.pipe.poll():
                kind, body = self.pipe.recv()
                if kind == "measure":
                    self.measure_start, self.measure_end = body
                    # The ticker stops the run right after the tick that closes the window.
                elif kind == "stop":
                    self.request_stop(body.get("reason", "interrupted"), body.get("message", ""))
        except (EOFError, OSError):
            self.loop.remove_reader(self.pipe.fileno())
            self.request_stop("interrupted", "master process went away")

    def request_stop(self, reason: str, message: str) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.stop_reason = reason
        self.stop_message = message
        self.stop_event.set()

    async def drain(self) -> None:
        """Stop sending, wait (bounded) for the echoes in flight, then close politely."""
        self.sending = False
        self.release_engine()
        self.dialer.cancel_all()
        deadline = self.loop.time() + self.cfg.drain_timeout
        while self.loop.time() < deadline and any(c.in_flight() for c in self.conns):
            await asyncio.sleep(0.02)
        self.closing = True
        for conn in list(self.conns):
            conn.send_close()  # 1000; the transport closes once the frame is written
        deadline = self.loop.time() + 1.0
        while self.conns and self.loop.time() < deadline:
            await asyncio.sleep(0.02)

    async def run(self) -> None:
        cfg = self.cfg
        if cfg.out_dir:
            path = os.path.join(cfg.out_dir, f"worker-{cfg.index}.jsonl")
            self.file = open(path, "w", encoding="utf-8")  # noqa: SIM115 - closed in finally
        try:
            self.write(
                {
                    "type": "start",
                    "format_version": FORMAT_VERSION,
                    "worker": cfg.index,
                    "host": cfg.host,
                    "pid": os.getpid(),
                    "label": cfg.label,
                    "url": cfg.url,
                    "params": cfg.params,
                    "hot_path": "compiled" if self.listener_cls is EngineConn else "python",
                    "t": round(time.time(), 4),
                    # Before any connection, with the loop, this object and its histogram
                    # allocated: the baseline of the memory the connections add.
                    "rss_bytes": self.rss(),
                }
            )
            if self.pipe is not None:
                self.loop.add_reader(self.pipe.fileno(), self.on_pipe)
            for sig in (signal.SIGTERM,):
                self.loop.add_signal_handler(sig, self.request_stop, "interrupted", "SIGTERM")
            if cfg.compat:
                _say("Worker started!")
            if self.listener_cls is EngineConn:
                from wsswarm._engine import Engine, hdr_counts  # noqa: PLC0415 - this path only

                self.engine = Engine(self.engine_payload, self.wall_offset_ns)
                self.counts_of = hdr_counts
                self.loop.add_reader(self.engine.fileno(), self.engine_ready)
            self.tick_last = time.time()
            self.cpu_last = time.process_time()
            helpers = [self.loop.create_task(self.ticker()), self.loop.create_task(self.folder())]
            if cfg.compat:
                helpers.append(self.loop.create_task(self.compat_reporter()))
            ramp = self.loop.create_task(self.ramp())
            if cfg.mode == "open":
                helpers.append(self.loop.create_task(self.open_loop()))
            for task in [*helpers, ramp]:
                self.watch(task)
            await self.stop_event.wait()
            ramp.cancel()
            await self.drain()
            # One last tick with what the drain received, then the end record.
            record = self.make_tick("drain")
            self.write(record)
            self._send(("tick", record))
            for task in helpers:
                task.cancel()
            end = {
                "type": "end",
                "t": round(time.time(), 4),
                "reason": self.stop_reason,
                "message": self.stop_message,
                "roundtrips_total": self.rt_total,
                "sent_total": self.sent_total,
                "latency_sum_us": self.lat_sum_us,
                "ramp": {
                    "first_attempt": self.first_attempt_at,
                    "last_attempt": self.last_attempt_at,
                    "done": self.ramp_done_at,
                },
            }
            if self.engine is not None:
                # How often the compiled loop handed a connection back to Python.
                end["engine_ejected"] = self.engine.ejected
            self.write(end)
            self._send(("end", end))
        finally:
            os.close(self.statm_fd)
            if self.file is not None:
                self.file.close()


def _say(line: str) -> None:
    """One whole console line: a single write(2), so lines of several workers never interleave.

    (print() may hand the text and its newline to the pipe in two writes.)
    """
    sys.stdout.flush()
    os.write(sys.stdout.fileno(), (line + "\n").encode())


def _release_free_memory() -> None:
    """Give the heap the ramp's transient objects (attempts, uvloop's connect tasks) used back.

    Without it glibc keeps the freed ramp memory, and the RSS per open connection looks twice
    what the connections themselves hold.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def worker_main(cfg: WorkerConfig, pipe: Connection | None) -> None:
    """Entry point of a spawned worker process."""
    # Ctrl-C reaches the whole process group: the master decides and tells us over the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cfg.rlimit_nofile is not None:
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (cfg.rlimit_nofile, hard))
    else:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # The loop (and uvloop's import) before "ready": a fixed cost of the process, paid before
    # the start record like everything else that does not depend on the connections.
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    if pipe is not None:
        # Handshake with the master: ready (imports done, loop made), then the start epoch.
        pipe.send(("ready", os.getpid()))
        kind, body = pipe.recv()
        if kind != "start":
            loop.close()
            return
        cfg = replace(cfg, t0=float(body))

    async def main() -> None:
        ClosedConn.w = Worker(cfg, pipe)
        await ClosedConn.w.run()

    try:
        loop.run_until_complete(main())
    except Exception as exc:
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.send(("fatal", f"worker {cfg.index}: {type(exc).__name__}: {exc}"))
        raise
    finally:
        loop.close()
        sys.stdout.flush()
