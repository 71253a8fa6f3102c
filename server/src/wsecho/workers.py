"""`--workers N`: N processes serve one port, each with its own event loop.

The parent reserves the port, forks the workers and then only waits: for their readiness, for
SIGTERM/SIGINT (forwarded to every worker as SIGTERM: each closes its connections with 1001),
and for a worker that exits on its own (the service then stops: exit 1). Each worker listens
on its own socket with SO_REUSEPORT, so the kernel spreads new connections over the workers.

/metrics and /healthz answer for the whole service from any worker: every worker publishes its
counters to a `Board` (an anonymous shared memory map, one slot per process) every
PUBLISH_INTERVAL and whenever it renders /metrics; the answering worker sums the slots. The
others' counters are thus up to PUBLISH_INTERVAL old. A worker that has not published for
STALE_AFTER makes /healthz answer 503. The echo path itself never touches the board.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import mmap
import os
import select
import signal
import socket
import struct
import time

from wsecho import __version__
from wsecho.common import describe
from wsecho.config import Settings
from wsecho.metrics import Counters, Metrics, resident_memory_bytes

log = logging.getLogger("wsecho")

PUBLISH_INTERVAL = 0.25  # seconds between two publications of a worker's counters
STALE_AFTER = 5.0  # a worker silent this long makes /healthz answer 503
START_TIMEOUT = 30.0  # seconds for every worker to listen
KILL_AFTER = 10.0  # seconds after SIGTERM before the remaining workers are killed
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGCHLD}

# A slot: sequence number (odd while being written), heartbeat (time.monotonic, one clock for
# every process), pid, then the fields of Counters.
_SEQ = struct.Struct("<Q")
_BODY = struct.Struct("<dq" + "q" * len(dataclasses.fields(Counters)))
_SLOT_SIZE = _SEQ.size + _BODY.size


@dataclasses.dataclass(frozen=True)
class Slot:
    """What one process last published."""

    heartbeat: float
    pid: int
    counters: Counters


class Board:
    """One slot per worker and one for the parent (its memory), shared across fork()."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._map = mmap.mmap(-1, _SLOT_SIZE * (workers + 1))  # anonymous, MAP_SHARED

    def write(self, index: int, counters: Counters) -> None:
        """Publish (one writer per slot; a sequence number lets readers skip torn reads)."""
        offset = index * _SLOT_SIZE
        (seq,) = _SEQ.unpack_from(self._map, offset)
        _SEQ.pack_into(self._map, offset, seq + 1)
        fields = dataclasses.astuple(counters)
        _BODY.pack_into(self._map, offset + _SEQ.size, time.monotonic(), os.getpid(), *fields)
        _SEQ.pack_into(self._map, offset, seq + 2)

    def read(self, index: int) -> Slot:
        offset = index * _SLOT_SIZE
        for _ in range(1000):
            (seq,) = _SEQ.unpack_from(self._map, offset)
            body = _BODY.unpack_from(self._map, offset + _SEQ.size)
            if not seq & 1 and _SEQ.unpack_from(self._map, offset)[0] == seq:
                break
        heartbeat, pid, *fields = body
        return Slot(heartbeat, pid, Counters(*fields))

    @property
    def parent_index(self) -> int:
        return self.workers


class WorkerView:
    """The service as worker `index` sees it: wsecho.metrics.ServiceView on a Board."""

    def __init__(self, board: Board, index: int) -> None:
        self.board = board
        self.index = index

    def workers(self, own: Counters) -> list[Counters]:
        self.board.write(self.index, own)
        return [self.board.read(i).counters for i in range(self.board.workers)]

    def parent_memory_bytes(self) -> int:
        return self.board.read(self.board.parent_index).counters.resident_memory_bytes

    def health_problem(self) -> str | None:
        now = time.monotonic()
        for index in range(self.board.workers):
            if index == self.index:
                continue
            slot = self.board.read(index)
            if slot.pid == 0:
                return f"worker {index} has not started"
            if now - slot.heartbeat > STALE_AFTER:
                silent = now - slot.heartbeat
                return f"worker {index} (pid {slot.pid}) has not reported for {silent:.1f} s"
        return None


class Worker:
    """What `wsecho.service.serve` does differently in a worker."""

    def __init__(self, board: Board, index: int, ready_fd: int) -> None:
        self.board = board
        self.index = index
        self._ready_fd = ready_fd
        self._metrics: Metrics | None = None
        self._timer: asyncio.TimerHandle | None = None

    def attach(self, metrics: Metrics) -> None:
        """Answer /metrics and /healthz for the service; publish `metrics` from now on. Called
        once the loop handles SIGTERM/SIGINT: a signal that came earlier (blocked since the
        fork) is delivered now, to the handler, instead of killing the worker."""
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        metrics.service = WorkerView(self.board, self.index)
        self._metrics = metrics
        self._publish()

    def _publish(self) -> None:
        assert self._metrics is not None
        self.board.write(self.index, self._metrics.snapshot())
        self._timer = asyncio.get_running_loop().call_later(PUBLISH_INTERVAL, self._publish)

    def ready(self) -> None:
        """Listening: tell the parent."""
        os.write(self._ready_fd, b"r")
        os.close(self._ready_fd)

    def detach(self) -> None:
        """Stopped: publish the final counters."""
        if self._timer is not None:
            self._timer.cancel()
        if self._metrics is not None:
            self.board.write(self.index, self._metrics.snapshot())


def _reserve(host: str, port: int) -> socket.socket:
    """A bound, not listening socket on `host`'s first address: fixes the port (`--port 0`)
    until the workers listen on it. The port is first bound without SO_REUSEPORT, so that a
    port that another service holds (even with SO_REUSEPORT) is refused, not shared."""
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    for reuse_port in (False, True):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(address)
        except BaseException:
            sock.close()
            raise
        if not reuse_port:
            address = (address[0], sock.getsockname()[1], *address[2:])
            sock.close()
    return sock


def _worker_main(settings: Settings, open_files: int, worker: Worker) -> int:
    from wsecho.service import run_loop, serve  # noqa: PLC0415 (service imports this module)

    try:
        run_loop(serve(settings, open_files, worker))
    except OSError as exc:
        log.error(
            "worker %d cannot listen on %s:%s: %s", worker.index, settings.host, settings.port, exc
        )
        return 1
    except BaseException:
        log.exception("worker %d failed", worker.index)
        return 1
    return 0


def supervise(settings: Settings, open_files: int, loop_name: str) -> int:
    """Run `settings.workers` workers until SIGTERM/SIGINT; the exit code (0: all stopped
    cleanly). Raises OSError when the port cannot be reserved."""
    count = settings.workers
    reservation = _reserve(settings.host, settings.port)
    port = reservation.getsockname()[1]
    # Each worker allows its share of --max-connections.
    worker_settings = dataclasses.replace(
        settings, port=port, max_connections=math.ceil(settings.max_connections / count)
    )
    board = Board(count)
    board.write(board.parent_index, Counters(resident_memory_bytes=resident_memory_bytes()))
    ready_r, ready_w = os.pipe()
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    workers: dict[int, int] = {}  # pid -> index
    failed = False
    ready = 0
    started = time.monotonic()
    stopping_since: float | None = None

    def stop(signo: int = signal.SIGTERM) -> None:
        nonlocal stopping_since
        if stopping_since is None:
            stopping_since = time.monotonic()
        for pid in workers:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signo)

    for index in range(count):
        try:
            pid = os.fork()
        except OSError as exc:  # e.g. out of memory or processes: stop the ones started
            log.error("cannot start worker %d: %s", index, exc)
            failed = True
            stop()
            break
        if pid == 0:
            os.close(ready_r)
            reservation.close()
            code = _worker_main(worker_settings, open_files, Worker(board, index, ready_w))
            logging.shutdown()
            os._exit(code)
        workers[pid] = index
    os.close(ready_w)

    while workers:
        waiting = ready < count and stopping_since is None
        received = signal.sigtimedwait(_SIGNALS, 0.05 if waiting else 1.0)
        if received is not None and received.si_signo != signal.SIGCHLD:
            stop()
        while workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            index = workers.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if stopping_since is None:
                log.error("worker %d (pid %d) exited (%d): stopping the service", index, pid, code)
                failed = True
                stop()
            elif code != 0:
                log.error("worker %d (pid %d) exited with %d", index, pid, code)
                failed = True
        if waiting:
            if select.select([ready_r], [], [], 0)[0]:
                ready += len(os.read(ready_r, count))
                if ready == count:
                    reservation.close()
                    log.info(
                        "wsecho %s serving on port %d (%s, loop=%s, open_files_limit=%d%s)",
                        __version__,
                        port,
                        describe(settings),
                        loop_name,
                        open_files,
                        " < max_connections!"
                        if open_files < worker_settings.max_connections
                        else "",
                    )
            elif time.monotonic() - started > START_TIMEOUT:
                log.error(
                    "%d of %d workers listening after %g s: stopping", ready, count, START_TIMEOUT
                )
                failed = True
                stop()
        elif stopping_since is not None and time.monotonic() - stopping_since > KILL_AFTER:
            stop(signal.SIGKILL)
        board.write(board.parent_index, Counters(resident_memory_bytes=resident_memory_bytes()))
    os.close(ready_r)
    reservation.close()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    total = sum((board.read(i).counters for i in range(count)), Counters())
    log.info(
        "wsecho stopped in %.2f s: %d workers; served %d connections, %d messages, %d bytes",
        time.monotonic() - (stopping_since or started),
        count,
        total.connections_total,
        total.messages_total,
        total.bytes_total,
    )
    return 1 if failed else 0
