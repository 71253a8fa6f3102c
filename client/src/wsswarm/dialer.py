"""Opening WebSocket connections: `connect` (one, awaited) and `Dialer` (many, by callbacks).

The protocol objects they open are `wsclient.ClientProtocol` subclasses; the TCP connect and the
upgrade are each bounded by the same timeout.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable, Sequence
from time import perf_counter_ns
from typing import Any, TypeVar

from wsswarm.wsclient import ClientProtocol, upgrade_request

P = TypeVar("P", bound=ClientProtocol)

# Linux: bind() takes the address only; the port is picked by connect() for the whole 4-tuple,
# so one source address serves a full port range per destination (not one range in total).
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def client_socket(family: int, source_address: str | None) -> socket.socket:
    """A non-blocking TCP socket, bound to `source_address` (port chosen at connect) if given."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        if source_address is not None:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source_address, 0))
    except BaseException:
        sock.close()
        raise
    return sock


class Deadline:
    """`with Deadline(loop, s):` cancels the current task after s seconds and exits with
    TimeoutError then: asyncio.timeout() of Python 3.11, which 3.10 lacks.

    Not wait_for: that costs an extra future and callbacks per attempt, and a ramp has
    hundreds of attempts in flight whose garbage, interleaved with the connections that stay,
    fragments the heap for the rest of the run.
    """

    __slots__ = ("_fired", "_handle", "_loop", "_seconds", "_task")

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        self._loop = loop
        self._seconds = seconds
        self._fired = False
        self._task: asyncio.Task[Any] | None = None
        self._handle: asyncio.TimerHandle | None = None

    def __enter__(self) -> Deadline:
        self._task = asyncio.current_task(self._loop)
        self._handle = self._loop.call_later(self._seconds, self._fire)
        return self

    def _fire(self) -> None:
        self._fired = True
        if self._task is not None:
            self._task.cancel()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, _tb: Any
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._fired and kind is asyncio.CancelledError:
            uncancel = getattr(self._task, "uncancel", None)  # 3.11+: keep the count right
            if uncancel is not None:
                uncancel()
            raise TimeoutError(f"no answer within {self._seconds:g} s") from exc


async def connect(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], P],
    *,
    host: str,
    path: str,
    timeout: float,
    sock: socket.socket | None = None,
    address: tuple[Any, ...] | None = None,
    family: int = 0,
) -> P:
    """Open a WebSocket; the protocol object once the upgrade has succeeded.

    Either over `sock`, already connected, or to `address` (an IP literal and port: no name
    lookup), then the TCP connect is bounded by `timeout` too. The loop creates that socket
    itself: with uvloop no Python socket object stays behind for the connection's life.
    `host` and `path` go into the request. Raises HandshakeError, TimeoutError (no answer
    within `timeout`), or the OSError of a connect that failed or a connection that ended
    during the upgrade.
    """
    request, accept = upgrade_request(host, path)
    waiter: asyncio.Future[None] = loop.create_future()
    conn = factory()
    conn.upgrade = (request, accept, waiter)
    transport = None
    try:
        if sock is not None:
            transport, _ = await loop.create_connection(lambda: conn, sock=sock)
        else:
            assert address is not None
            with Deadline(loop, timeout):
                transport, _ = await loop.create_connection(
                    lambda: conn, address[0], address[1], family=family
                )
        with Deadline(loop, timeout):
            await waiter
    except BaseException:
        conn.upgrade = None
        if transport is not None:
            transport.abort()
        elif sock is not None:
            sock.close()
        raise
    return conn


# States of an Attempt.
CONNECTING, UPGRADING, SUCCEEDED, FAILED = 0, 1, 2, 3


class Attempt:
    """One connection attempt of a Dialer: the protocol factory, and the upgrade's waiter."""

    __slots__ = ("conn", "dialer", "since", "sock", "started_ns", "state", "task", "written")

    def __init__(self, dialer: Dialer, conn: ClientProtocol) -> None:
        self.dialer = dialer
        self.conn: ClientProtocol | None = conn  # None once finished: the attempt holds nothing
        self.state = CONNECTING
        self.since = dialer.loop.time()  # start of the current phase (its deadline's origin)
        self.started_ns = perf_counter_ns()  # dial, then the request written: for durations
        self.written = False
        self.task: asyncio.Task[Any] | None = None  # uvloop's create_connection, until it ends
        # With a source address: our socket, while its non-blocking connect is pending.
        self.sock: socket.socket | None = None

    def __call__(self) -> ClientProtocol:
        """The protocol factory given to create_connection (no closure per attempt)."""
        assert self.conn is not None
        return self.conn

    def connected(self, task: asyncio.Task[Any]) -> None:
        self.task = None
        self.dialer.connected(self, task)

    def writable(self) -> None:
        """The pending connect of `sock` has ended (the loop's writer callback)."""
        self.dialer.sock_connected(self)

    # ---- Waiter: what the protocol calls --------------------------------------------------

    def request_written(self) -> None:
        """The TCP connect is done and the upgrade request written (`connection_made`)."""
        now_ns = perf_counter_ns()
        self.dialer.connect_us.append((now_ns - self.started_ns) // 1000)
        self.started_ns = now_ns
        self.written = True

    def done(self) -> bool:
        return self.state >= SUCCEEDED

    def set_result(self, _result: None, /) -> None:
        self.dialer.finish(self, None)

    def set_exception(self, exception: BaseException, /) -> None:
        self.dialer.finish(self, exception)


class Dialer:
    """Opens WebSocket connections to one address, driven by callbacks.

    What `connect` does, for many attempts at once and with less short-lived memory: per
    attempt `connect` costs a Task, two coroutine frames, a waiter future, and a timer and a
    Deadline per phase (~2.7 KB while in flight, measured); a busy ramp has thousands of
    attempts in flight, and their memory, freed once they end, stays behind as fragmentation
    between the connections that remain (CPython's allocator returns none of a 1 MiB arena
    while one object in it lives). Here an attempt is one small `Attempt` (the protocol
    factory and the upgrade's waiter); only uvloop's `create_connection` coroutine still runs
    in a Task, and only until the TCP connect is done. With source addresses the TCP connect
    is a non-blocking `connect` on a socket of ours and a writer callback (no Task), then the
    same Task makes the transport over the connected socket. The deadlines of all attempts are
    checked by one timer every `SWEEP_S`: attempts sit in two insertion-ordered dicts (one per
    phase, oldest first, all with the same timeout), so the check stops at the first attempt
    not yet due, and an attempt that ends leaves its dict at once.

    Durations are kept in µs for the owner to take (`take_timings`): `connect_us`, dial to the
    TCP connection made (the protocol's `connection_made`, which writes the request), and
    `upgrade_us`, from then to the 101 handled (successful upgrades only).

    Timeouts are those of `connect`: the TCP connect, then the upgrade, each within `timeout`
    (up to `SWEEP_S` later). `on_done(conn, exc)` reports every attempt exactly once: exc None
    after a successful upgrade (after the protocol's `on_open`), else the exception `connect`
    would have raised (OSError, HandshakeError, TimeoutError). Nothing is reported after
    `cancel_all()`.
    """

    SWEEP_S = 0.1

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_done: Callable[[ClientProtocol, BaseException | None], None],
        *,
        host: str,
        path: str,
        timeout: float,
        address: tuple[Any, ...],
        family: int = 0,
        source_addresses: Sequence[str] = (),
        first_source: int = 0,
    ) -> None:
        self.loop = loop
        self.on_done = on_done
        self.host = host
        self.path = path
        self.timeout = timeout
        self.address = address
        self.family = family
        # Attempts take the source addresses in turn, from the one at `first_source`.
        self.source_addresses = tuple(source_addresses)
        self.next_source = first_source
        self.connecting: dict[Attempt, None] = {}
        self.upgrading: dict[Attempt, None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.connect_us: list[int] = []
        self.upgrade_us: list[int] = []

    def take_timings(self) -> tuple[list[int], list[int]]:
        """The connect and upgrade durations (µs) recorded since the last call."""
        taken = self.connect_us, self.upgrade_us
        self.connect_us, self.upgrade_us = [], []
        return taken

    @property
    def in_flight(self) -> int:
        return len(self.connecting) + len(self.upgrading)

    def dial(self, conn: ClientProtocol) -> None:
        """Start an attempt with `conn` as its protocol."""
        attempt = Attempt(self, conn)
        request, accept = upgrade_request(self.host, self.path)
        conn.upgrade = (request, accept, attempt)
        self.connecting[attempt] = None
        if self.source_addresses:
            source = self.source_addresses[self.next_source % len(self.source_addresses)]
            self.next_source += 1
            self._connect_from(attempt, source)
        else:
            host, port = self.address[0], self.address[1]
            self._transport(attempt, host, port, family=self.family)
        if self._timer is None:
            self._timer = self.loop.call_later(self.SWEEP_S, self._sweep)

    def _transport(self, attempt: Attempt, *args: Any, **kwargs: Any) -> None:
        """uvloop's create_connection for `attempt`: its one Task, until the transport exists."""
        task = self.loop.create_task(self.loop.create_connection(attempt, *args, **kwargs))
        attempt.task = task
        task.add_done_callback(attempt.connected)

    def _connect_from(self, attempt: Attempt, source: str) -> None:
        """The TCP connect from `source`: on a socket of ours (the loop cannot set the bind
        option), non-blocking, its end told by a writer callback; no Task, coroutine or
        future until the loop makes the transport over the connected socket."""
        try:
            sock = client_socket(self.family, source)
        except OSError as exc:  # EMFILE, or an address this host no longer has
            self.loop.call_soon(self.finish, attempt, exc)
            return
        attempt.sock = sock
        try:
            code = sock.connect_ex(self.address)
        except OSError as exc:
            code = exc.errno or errno.EINVAL
        if code == errno.EINPROGRESS:
            self.loop.add_writer(sock.fileno(), attempt.writable)
        elif code == 0:
            self.loop.call_soon(self.sock_connected, attempt)
        else:  # EADDRNOTAVAIL: no local port left for this 4-tuple; ENETUNREACH
            self.loop.call_soon(self.finish, attempt, OSError(code, os.strerror(code)))

    def sock_connected(self, attempt: Attempt) -> None:
        """The connect of `attempt.sock` has ended: fail, or hand the socket to the loop."""
        sock = attempt.sock
        if sock is None:  # the attempt ended meanwhile (timeout, cancel)
            return
        self.loop.remove_writer(sock.fileno())
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.finish(attempt, OSError(code, os.strerror(code)))  # closes the socket
            return
        attempt.sock = None  # the transport owns it from here
        self._transport(attempt, sock=sock)

    def connected(self, attempt: Attempt, task: asyncio.Task[Any]) -> None:
        """create_connection ended (its Task's done callback)."""
        if attempt.state >= SUCCEEDED:
            # Already reported: the upgrade can be answered before this callback runs; a
            # transport that arrives after a failure (timeout, cancel) is dropped.
            if attempt.state == FAILED and not task.cancelled() and task.exception() is None:
                task.result()[0].abort()
            return
        if task.cancelled():
            self.finish(attempt, ConnectionAbortedError("connection attempt cancelled"))
            return
        exc = task.exception()
        if exc is not None:
            self.finish(attempt, exc)
            return
        del self.connecting[attempt]
        attempt.state = UPGRADING
        attempt.since = self.loop.time()  # the upgrade has its own timeout, as in `connect`
        self.upgrading[attempt] = None

    def finish(self, attempt: Attempt, exc: BaseException | None) -> None:
        if attempt.state >= SUCCEEDED:
            return
        if exc is None and attempt.written:
            self.upgrade_us.append((perf_counter_ns() - attempt.started_ns) // 1000)
        self._forget(attempt)
        conn = attempt.conn
        assert conn is not None
        attempt.conn = None
        attempt.state = FAILED if exc is not None else SUCCEEDED
        if exc is not None:
            self._drop(attempt, conn)
        self.on_done(conn, exc)

    def cancel_all(self) -> None:
        """Give up every attempt in flight, silently (the owner is stopping)."""
        for attempt in [*self.connecting, *self.upgrading]:
            self._forget(attempt)
            conn = attempt.conn
            assert conn is not None
            attempt.conn = None
            attempt.state = FAILED
            self._drop(attempt, conn)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def shrink(self) -> None:
        """Let go of the tables that held the most attempts in flight (dicts never shrink)."""
        if not self.connecting:
            self.connecting = {}
        if not self.upgrading:
            self.upgrading = {}

    def _forget(self, attempt: Attempt) -> None:
        if attempt.state == CONNECTING:
            del self.connecting[attempt]
        else:
            del self.upgrading[attempt]

    def _drop(self, attempt: Attempt, conn: ClientProtocol) -> None:
        conn.upgrade = None
        sock = attempt.sock
        if sock is not None:
            attempt.sock = None
            self.loop.remove_writer(sock.fileno())
            sock.close()
        elif attempt.task is not None:
            attempt.task.cancel()  # uvloop closes the transport it was connecting
        elif conn.transport is not None:
            conn.transport.abort()  # nothing when the protocol closed it already

    def _sweep(self) -> None:
        self._timer = None
        due = self.loop.time() - self.timeout
        expired: list[Attempt] = []
        for phase in (self.connecting, self.upgrading):
            for attempt in phase:  # oldest first: stop at the first one not yet due
                if attempt.since > due:
                    break
                expired.append(attempt)
        for attempt in expired:
            self.finish(attempt, TimeoutError(f"no answer within {self.timeout:g} s"))
        if self.connecting or self.upgrading:
            self._timer = self.loop.call_later(self.SWEEP_S, self._sweep)
