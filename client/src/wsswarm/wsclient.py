"""A minimal RFC 6455 client protocol on asyncio/uvloop transports, built for many small echoes.

A connection is uvloop's TCP transport (~1.4 KiB with its libuv handle, the floor of any asyncio
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
from typing import Protocol as Interface
from typing import cast
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
        written = getattr(self.upgrade[2], "request_written", None)  # a Dialer's attempt
        if written is not None:
            written()

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
