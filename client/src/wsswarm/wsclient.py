"""A minimal RFC 6455 client protocol on asyncio/uvloop transports, built for many small echoes.

Why not picows (used until 2026-11-26): each picows connection keeps its own 2 KiB read buffer,
a 1 KiB write buffer, the parsed upgrade request and response and a Cython protocol object
next to uvloop's transport; an open, idle wsswarm connection cost ~10-13 KiB of RSS. Here a
connection is uvloop's TCP transport (~1.4 KiB with its libuv handle, the floor of any asyncio
client) plus one `__slots__` object:

- no read buffer per connection: a plain `asyncio.Protocol` gets its bytes in uvloop's one
  loop-wide read buffer; an incomplete frame (rare: echoes are ~30 bytes) is kept until the
  next read, nothing else survives a callback;
- no write buffer: frames are written as ready-made bytes; the worker builds each distinct
  message once (masked, see `masked_frame`) and every connection that sends it writes the same
  object;
- nothing of the upgrade survives it: the key, the expected accept value and the waiter live in
  one slot that is cleared once the connection is open.

Subclasses override `data_received` with a fast path for the one frame they expect and fall
back to `receive` (the general parser) for anything else.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
from collections.abc import Callable
from typing import Any, TypeVar, cast
from typing import Protocol as Interface
from urllib.parse import urlsplit

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT = 0x1
BINARY = 0x2
CONTINUATION = 0x0
CLOSE = 0x8
PING = 0x9
PONG = 0xA
MAX_HEAD = 16 * 1024  # an upgrade response longer than this is not one
NORMAL_CLOSURE = 1000
PROTOCOL_ERROR = 1002
MESSAGE_TOO_BIG = 1009


class HandshakeError(Exception):
    """The server's answer to the upgrade request is not a WebSocket upgrade.

    `status` is the HTTP status when the answer had a readable status line (e.g. 503), None
    when it was not HTTP at all.
    """

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status


def masked_frame(opcode: int, payload: bytes, mask: bytes | None = None) -> bytes:
    """One final client frame (RFC 6455 5.2): header, 4-byte masking key, masked payload."""
    if mask is None:
        mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0xFE)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0xFF)) + n.to_bytes(8, "big")
    # XOR as one big integer: a few hundred ns for an echo-sized payload, no per-byte loop.
    key = (mask * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")
    return head + mask + body


def server_frame(opcode: int, payload: bytes) -> bytes:
    """The unmasked frame a server sends with `payload` (what an echo of it looks like)."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload
    return bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload


def close_frame(code: int) -> bytes:
    return masked_frame(CLOSE, code.to_bytes(2, "big"))


def host_and_path(url: str) -> tuple[str, str]:
    """The Host header and the request target of a ws:// URL."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or not parts.hostname:
        raise ValueError(f"not a ws:// URL with a host: {url!r}")
    host = parts.netloc.rpartition("@")[2]
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return host, path


def upgrade_request(host: str, path: str) -> tuple[bytes, bytes]:
    """The HTTP upgrade request for `host` (the Host header) and `path`, and the accept value."""
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())  # RFC 6455 4.2.2
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: "
    ).encode("latin-1")
    return request + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n", accept


def check_response(head: bytes, accept: bytes) -> None:
    """Raise HandshakeError unless `head` (up to the blank line) accepts the upgrade (RFC 4.1)."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if (
        len(parts) < 2
        or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0")
        or len(parts[1]) != 3
        or not parts[1].isdigit()
    ):
        raise HandshakeError(None, f"not an HTTP response: {lines[0][:80]!r}")
    status = int(parts[1])
    if status != 101:
        reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
        raise HandshakeError(status, f"upgrade rejected: HTTP {status} {reason}".rstrip())
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            raise HandshakeError(None, f"malformed header line in the upgrade response: {line!r}")
        key = name.lower()
        headers[key] = headers[key] + b"," + value.strip() if key in headers else value.strip()
    if headers.get(b"upgrade", b"").lower() != b"websocket":
        raise HandshakeError(None, "101 response without 'Upgrade: websocket'")
    tokens = [token.strip() for token in headers.get(b"connection", b"").lower().split(b",")]
    if b"upgrade" not in tokens:
        raise HandshakeError(None, "101 response without 'Connection: Upgrade'")
    if headers.get(b"sec-websocket-accept") != accept:
        raise HandshakeError(None, "101 response with a wrong Sec-WebSocket-Accept")
    for name in (b"sec-websocket-extensions", b"sec-websocket-protocol"):
        if name in headers:  # we asked for none: RFC 6455 4.1 says fail
            raise HandshakeError(None, f"101 response with {name.decode()} that was not requested")


class Waiter(Interface):
    """What a protocol tells the outcome of its upgrade: an asyncio.Future, or an Attempt."""

    def done(self) -> bool: ...
    def set_result(self, result: None, /) -> None: ...
    def set_exception(self, exception: BaseException, /) -> None: ...


class ClientProtocol(asyncio.Protocol):
    """One client connection: the upgrade, then frames to `on_text`, `on_close_frame`.

    The base class is complete and correct for any frame sequence; subclasses add a fast path
    for their expected echo in `data_received` and call `receive` for everything else.
    """

    __slots__ = ("frag", "rest", "transport", "upgrade")
    max_frame: int = 64 * 1024

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        # (request, expected accept, waiter) until the upgrade is answered, then None.
        self.upgrade: tuple[bytes, bytes, Waiter] | None = None
        self.rest: bytes | None = None  # bytes of an incomplete frame (or response head)
        self.frag: tuple[int, bytes] | None = None  # opcode and payload of a fragmented message

    # ---- hooks of subclasses -------------------------------------------------------------

    def on_open(self) -> None:
        """The upgrade succeeded."""

    def on_text(self, payload: bytes) -> None:
        """A complete text message."""

    def on_close_frame(self, code: int) -> None:
        """The server sent a close frame (1005 when it had no code); the reply is sent after."""

    def on_lost(self) -> None:
        """An open connection ended (after a close handshake or not)."""

    # ---- asyncio -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast("asyncio.Transport", transport)
        assert self.upgrade is not None
        self.transport.write(self.upgrade[0])

    def data_received(self, data: bytes) -> None:
        self.receive(data)

    def connection_lost(self, exc: Exception | None) -> None:
        upgrade = self.upgrade
        if upgrade is not None:
            self.upgrade = None
            if not upgrade[2].done():
                closed = "connection closed by the server during the upgrade"
                upgrade[2].set_exception(exc or ConnectionResetError(closed))
            return
        self.on_lost()

    # ---- sending -------------------------------------------------------------------------

    def send_close(self, code: int = NORMAL_CLOSURE) -> None:
        """Send a close frame and end the connection once it is written."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(close_frame(code))
            transport.close()

    # ---- receiving -----------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """Parse whatever arrived (general path: upgrade response, any frames, partial ones)."""
        if self.rest is not None:
            data = self.rest + data
            self.rest = None
        if self.upgrade is not None:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > MAX_HEAD:
                    self._fail_upgrade(HandshakeError(None, "upgrade response head too long"))
                else:
                    self.rest = data
                return
            _request, accept, waiter = self.upgrade
            try:
                check_response(data[:end], accept)
            except HandshakeError as exc:
                self._fail_upgrade(exc)
                return
            self.upgrade = None
            if waiter.done():  # the upgrade timed out just now: the connection is being dropped
                return
            # on_open first: a Dialer learns of the success synchronously (set_result), and its
            # owner's counts must already include this connection then.
            self.on_open()
            waiter.set_result(None)
            data = data[end + 4 :]
            if not data:
                return
        self._frames(data)

    def _fail_upgrade(self, exc: HandshakeError) -> None:
        assert self.upgrade is not None
        assert self.transport is not None
        waiter = self.upgrade[2]
        self.upgrade = None
        if not waiter.done():
            waiter.set_exception(exc)
        self.transport.close()

    def _frames(self, data: bytes) -> None:
        pos = 0
        size = len(data)
        transport = self.transport
        assert transport is not None
        while size - pos >= 2:
            if transport.is_closing():
                return
            b0 = data[pos]
            b1 = data[pos + 1]
            length = b1 & 0x7F
            start = pos + 2
            if length == 126:
                start = pos + 4
                if size < start:
                    break
                length = int.from_bytes(data[pos + 2 : start], "big")
            elif length == 127:
                start = pos + 10
                if size < start:
                    break
                length = int.from_bytes(data[pos + 2 : start], "big")
            if b1 & 0x80 or b0 & 0x70:  # a masked server frame, or RSV bits nobody negotiated
                self.send_close(PROTOCOL_ERROR)
                return
            if length > self.max_frame:
                self.send_close(MESSAGE_TOO_BIG)
                return
            end = start + length
            if end > size:
                break
            payload = data[start:end]
            pos = end
            self._frame(b0 & 0x80, b0 & 0x0F, payload)
        if pos < size and not transport.is_closing():
            self.rest = data[pos:]

    def _frame(self, fin: int, opcode: int, payload: bytes) -> None:
        if opcode in (TEXT, BINARY):
            if self.frag is not None:
                self.send_close(PROTOCOL_ERROR)  # a new message inside a fragmented one
            elif not fin:
                self.frag = (opcode, payload)
            elif opcode == TEXT:
                self.on_text(payload)
            # BINARY is not expected from an echo of text: ignored.
        elif opcode == CONTINUATION:
            if self.frag is None:
                self.send_close(PROTOCOL_ERROR)
                return
            first, so_far = self.frag
            if len(so_far) + len(payload) > self.max_frame:
                self.send_close(MESSAGE_TOO_BIG)
                return
            if not fin:
                self.frag = (first, so_far + payload)
                return
            self.frag = None
            if first == TEXT:
                self.on_text(so_far + payload)
        elif opcode == CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.on_close_frame(code)
            # Echo the server's code (RFC 6455 5.5.1) when it may be sent, else 1000.
            self.send_close(code if sendable_close_code(code) else NORMAL_CLOSURE)
        elif opcode == PING:
            assert self.transport is not None
            self.transport.write(masked_frame(PONG, payload))
        elif opcode != PONG:
            self.send_close(PROTOCOL_ERROR)  # reserved opcode


def sendable_close_code(code: int) -> bool:
    """Whether a close code may appear in a close frame (RFC 6455 7.4.1, 7.4.2, IANA registry).

    1005, 1006 and 1015 only name what happened locally; 1004 is reserved; below 1000 and from
    5000 on nothing is defined.
    """
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999


P = TypeVar("P", bound=ClientProtocol)


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
    local_addr: tuple[str, int] | None = None,
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
                    lambda: conn, address[0], address[1], family=family, local_addr=local_addr
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

    __slots__ = ("conn", "dialer", "since", "state", "task")

    def __init__(self, dialer: Dialer, conn: ClientProtocol) -> None:
        self.dialer = dialer
        self.conn: ClientProtocol | None = conn  # None once finished: the attempt holds nothing
        self.state = CONNECTING
        self.since = dialer.loop.time()  # start of the current phase (its deadline's origin)
        self.task: asyncio.Task[Any] | None = None  # uvloop's create_connection, until it ends

    def __call__(self) -> ClientProtocol:
        """The protocol factory given to create_connection (no closure per attempt)."""
        assert self.conn is not None
        return self.conn

    def connected(self, task: asyncio.Task[Any]) -> None:
        self.task = None
        self.dialer.connected(self, task)

    # ---- Waiter: what the protocol calls --------------------------------------------------

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
    in a Task, and only until the TCP connect is done. The deadlines of all attempts are
    checked by one timer every `SWEEP_S`: attempts sit in two insertion-ordered dicts (one per
    phase, oldest first, all with the same timeout), so the check stops at the first attempt
    not yet due, and an attempt that ends leaves its dict at once.

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
        local_addr: tuple[str, int] | None = None,
    ) -> None:
        self.loop = loop
        self.on_done = on_done
        self.host = host
        self.path = path
        self.timeout = timeout
        self.address = address
        self.family = family
        self.local_addr = local_addr
        self.connecting: dict[Attempt, None] = {}
        self.upgrading: dict[Attempt, None] = {}
        self._timer: asyncio.TimerHandle | None = None

    @property
    def in_flight(self) -> int:
        return len(self.connecting) + len(self.upgrading)

    def dial(self, conn: ClientProtocol) -> None:
        """Start an attempt with `conn` as its protocol."""
        attempt = Attempt(self, conn)
        request, accept = upgrade_request(self.host, self.path)
        conn.upgrade = (request, accept, attempt)
        host, port = self.address[0], self.address[1]
        task = self.loop.create_task(
            self.loop.create_connection(
                attempt, host, port, family=self.family, local_addr=self.local_addr
            )
        )
        attempt.task = task
        task.add_done_callback(attempt.connected)
        self.connecting[attempt] = None
        if self._timer is None:
            self._timer = self.loop.call_later(self.SWEEP_S, self._sweep)

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

    @staticmethod
    def _drop(attempt: Attempt, conn: ClientProtocol) -> None:
        conn.upgrade = None
        if attempt.task is not None:
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
