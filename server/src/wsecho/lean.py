"""The lean connection: one TCP connection served by wsecho's own WebSocket code.

An idle open connection is this object (seven slots) plus the event loop's transport: the loop
reads into its one shared buffer (uvloop and asyncio both do for a plain `Protocol`), a request
or a frame is parsed and answered within `data_received`, and nothing is kept between reads
except what arrived incomplete.

- Handshake: a well-formed WebSocket upgrade request (`handshake.upgrade_accept`) is answered
  here. Anything else (/healthz, /metrics, the 503 beyond --max-connections, malformed or unusual
  requests) is handed, bytes and all, to the host's `delegate`.
- Hot path: one unfragmented, masked text or binary frame of up to 125 bytes per read (the 2017
  load): a few integer tests, the C unmask, a UTF-8 check (free for ASCII), one write.
- Everything else goes through `_parse`, which implements the rest of RFC 6455 for a server.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import socket
from typing import ClassVar, Protocol

from wsecho.common import CLOSE_TIMEOUT, EventLog
from wsecho.config import Settings
from wsecho.frames import (
    CLOSE_INVALID_TEXT,
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    FIN_BINARY,
    FIN_TEXT,
    MAX_SMALL_PAYLOAD,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    SMALL_HEADS,
    close_frame,
    frame_head,
    valid_close_code,
)
from wsecho.handshake import HEAD_END, HTTP_MAX_SIZE, switching_protocols, upgrade_accept
from wsecho.mask import apply_mask
from wsecho.metrics import Metrics

_utf8_decoder = codecs.getincrementaldecoder("utf-8")

# States of a LeanConnection (delegated: to picows, or to the compiled hot path).
_HANDSHAKE, _OPEN, _CLOSING, _DELEGATED = range(4)


class LeanHost(Protocol):
    """What a lean connection needs from the server that runs it."""

    @property
    def lean(self) -> set[LeanConnection]:
        """The open lean connections (and those in their handshake)."""

    @property
    def event(self) -> EventLog:
        """The rate-limited log of abnormal events."""

    def delegate(self, tcp: asyncio.Transport, head: bytes) -> None:
        """Serve a connection whose request the lean path does not answer, from `head` (the
        bytes received so far) on."""

    def hold(self, fd: int) -> bool:
        """Give the open connection on `fd` (a duplicate the host then owns) to the compiled
        hot path; False when there is none (`fd` is left alone then)."""


def lean_class(host: LeanHost, settings: Settings, metrics: Metrics) -> type[LeanConnection]:
    """The lean protocol class of one server: its settings are class attributes, so that the
    connections do not carry them."""
    return type(
        "LeanConnection",
        (LeanConnection,),
        {
            "__slots__": (),
            "host": host,
            "metrics": metrics,
            "max_size": settings.max_message_size,
            "fast_max": min(MAX_SMALL_PAYLOAD, settings.max_message_size),
            "handshake_timeout": settings.handshake_timeout,
            "max_connections": settings.max_connections,
        },
    )


class LeanConnection(asyncio.Protocol):
    """One TCP connection: handshake, frames, close (use a `lean_class` subclass)."""

    __slots__ = ("_decoder", "_frag", "_head", "_rest", "_state", "_tcp", "_timer")

    host: ClassVar[LeanHost]
    metrics: ClassVar[Metrics]
    max_size: ClassVar[int]
    fast_max: ClassVar[int]  # min(125, max_size): the largest payload the hot path takes
    handshake_timeout: ClassVar[float]
    max_connections: ClassVar[int]

    def __init__(self) -> None:
        self._tcp: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made
        self._state = _HANDSHAKE
        self._head: bytes | None = b""  # the request received so far (during the handshake)
        # The handshake timeout, then the close timeout; cancelled when the connection is lost,
        # so a closed connection's transport is freed at once instead of CLOSE_TIMEOUT later.
        self._timer: asyncio.TimerHandle | None = None
        # Bytes of an incomplete frame; None means "open, nothing pending, no fragmented
        # message, not closing": the only state in which the hot path applies.
        self._rest: bytearray | None = bytearray()
        self._frag: bytearray | None = None  # a fragmented message being reassembled
        self._decoder: codecs.IncrementalDecoder | None = None  # its UTF-8 check (text)

    def answer_early(self, sock: socket.socket) -> bool:
        """Answer the upgrade request that already waits in `sock`, just accepted, before the
        loop makes its transport. That takes a whole loop iteration, and an iteration of a
        saturated uvloop serves up to 48 x 1,024 ready connections (libuv polls again while
        epoll returns full batches): in a VM under TCG, longer than a client waits for its
        upgrade. Only a complete, plain upgrade with nothing behind it is taken here; it is
        peeked first, so that anything else stays in the socket for `data_received`.
        True when the connection is open with its whole answer sent (nothing pending)."""
        try:
            head = sock.recv(HTTP_MAX_SIZE, socket.MSG_PEEK)
        except OSError:  # nothing yet (BlockingIOError), or an error the transport will meet
            return False
        end = len(head) - len(HEAD_END)
        if end < 0 or head.find(HEAD_END) != end:  # incomplete, or something behind it
            return False
        if self.metrics.connections_current >= self.max_connections:
            return False
        accept = upgrade_accept(head[:end])
        if accept is None:
            return False
        response = switching_protocols(accept)
        try:
            sock.recv(len(head))
            sent = sock.send(response)
        except OSError:  # the peer is gone: the transport meets the error or the EOF
            return False
        self._opened()
        if sent < len(response):
            self._head = response[sent:]  # connection_made writes the rest
            return False
        return True

    def take_over(self, unsent: bytes, unparsed: bytes) -> None:
        """Continue an open connection that the compiled hot path (`wsecho._engine`) handed
        over: `unsent` is output it had not written yet, `unparsed` input it had not parsed;
        connection_made writes the one, then parses the other."""
        self._state = _OPEN
        self._head = unsent
        self._rest = bytearray(unparsed) if unparsed else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tcp = transport  # type: ignore[assignment]
        self.host.lean.add(self)
        if self._state == _OPEN:  # answered by answer_early, or taken over
            if self._head:
                self._tcp.write(self._head)
            self._head = None
            unparsed = self._rest
            if unparsed:
                self._rest = None
                self._parse(bytes(unparsed))
            return
        self._timer = asyncio.get_running_loop().call_later(
            self.handshake_timeout, self._handshake_timed_out
        )

    def adopt_open(self, tcp: asyncio.Transport) -> None:
        """Serve a connection whose handshake was completed elsewhere (by picows)."""
        self._tcp = tcp
        self._state = _OPEN
        self._head = None
        self._rest = None
        self.host.lean.add(self)

    def data_received(self, data: bytes) -> None:
        if self._rest is None:
            size = len(data)
            if size >= 6:
                first = data[0]
                length = data[1] - 0x80  # negative when the frame is not masked
                if size == length + 6 and length <= self.fast_max:
                    if first == FIN_TEXT:
                        payload = apply_mask(data[6:], data[2:6])
                        if not payload.isascii():
                            try:
                                payload.decode()
                            except UnicodeDecodeError:
                                self._fail(CLOSE_INVALID_TEXT, "invalid UTF-8 in text message")
                                return
                    elif first == FIN_BINARY:
                        payload = apply_mask(data[6:], data[2:6])
                    else:
                        self._parse(data)
                        return
                    self._tcp.write(SMALL_HEADS[first][length] + payload)
                    metrics = self.metrics
                    metrics.messages_total += 1
                    metrics.bytes_total += length
                    return
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        """Every frame that is not the hot path's: pieces, fragments, control frames, errors."""
        if self._state != _OPEN:
            if self._state == _HANDSHAKE:
                self._handshake(data)
            return  # closing, or delegated: input is dropped
        buf: bytes | bytearray
        rest = self._rest
        if rest:
            rest += data
            buf = rest
        else:
            buf = data
        pos = 0
        end = len(buf)
        while end - pos >= 2 and self._state == _OPEN:
            first = buf[pos]
            second = buf[pos + 1]
            fin = first & 0x80
            opcode = first & 0x0F
            if first & 0x70:
                self._fail(CLOSE_PROTOCOL_ERROR, "reserved bits set, no extension")
                return
            if not second & 0x80:
                self._fail(CLOSE_PROTOCOL_ERROR, "unmasked client frame")
                return
            if opcode >= OP_CLOSE:
                if opcode > OP_PONG:
                    self._fail(CLOSE_PROTOCOL_ERROR, f"reserved opcode {opcode}")
                    return
                if not fin:
                    self._fail(CLOSE_PROTOCOL_ERROR, "fragmented control frame")
                    return
            elif opcode > OP_BINARY:
                self._fail(CLOSE_PROTOCOL_ERROR, f"reserved opcode {opcode}")
                return
            length = second & 0x7F
            head = pos + 2
            if length == 126:
                if end - head < 2:
                    break
                length = int.from_bytes(buf[head : head + 2], "big")
                head += 2
            elif length == 127:
                if end - head < 8:
                    break
                length = int.from_bytes(buf[head : head + 8], "big")
                head += 8
            if opcode >= OP_CLOSE:
                if length > MAX_SMALL_PAYLOAD:
                    self._fail(CLOSE_PROTOCOL_ERROR, "control frame longer than 125 bytes")
                    return
            else:
                if opcode == OP_CONT:
                    if self._frag is None:
                        self._fail(CLOSE_PROTOCOL_ERROR, "continuation without a message")
                        return
                    total = len(self._frag) + length
                elif self._frag is not None:
                    self._fail(CLOSE_PROTOCOL_ERROR, "new message inside a fragmented one")
                    return
                else:
                    total = length
                if total > self.max_size:  # checked before the payload is waited for
                    self._fail(CLOSE_MESSAGE_TOO_BIG, "message too big")
                    return
            stop = head + 4 + length
            if stop > end:
                break
            payload = apply_mask(buf[head + 4 : stop], buf[head : head + 4])
            pos = stop
            self._frame(opcode, fin, payload)
        if self._state != _OPEN:
            return
        if pos == end and self._frag is None:
            self._rest = None
        elif rest is None or not rest:
            self._rest = bytearray(buf[pos:])
        else:
            del rest[:pos]
            self._rest = rest

    def _handshake(self, data: bytes) -> None:
        """The HTTP request: answer a WebSocket upgrade, or delegate the connection."""
        head = self._head + data if self._head else data
        end = head.find(HEAD_END)
        if end < 0:
            if len(head) >= HTTP_MAX_SIZE:
                self._delegate(head)  # picows answers an oversized request
            else:
                self._head = head
            return
        accept = None
        if self.metrics.connections_current < self.max_connections:
            accept = upgrade_accept(head[:end])
        if accept is None:
            self._delegate(head)
            return
        tcp = self._tcp
        tcp.write(switching_protocols(accept))
        self._opened()
        if end + 4 < len(head):  # frames sent right behind the request
            self._parse(head[end + 4 :])
        elif not tcp.get_write_buffer_size() and self.host.hold(self._fileno()):
            # The compiled hot path has the connection (on a duplicate of its descriptor):
            # this transport goes, without counting the connection as lost.
            self._state = _DELEGATED
            self.host.lean.discard(self)
            tcp.abort()

    def _fileno(self) -> int:
        sock: socket.socket = self._tcp.get_extra_info("socket")
        return sock.fileno()

    def _opened(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._state = _OPEN
        self._head = None
        self._rest = None
        metrics = self.metrics
        metrics.connections_current += 1
        metrics.connections_total += 1

    def _delegate(self, head: bytes) -> None:
        """Hand the connection, with the bytes received so far, to the host."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._state = _DELEGATED
        self._head = None
        self.host.lean.discard(self)
        self.host.delegate(self._tcp, head)

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self._state == _HANDSHAKE:
            self._handshake_failed("handshake timed out")
            self._tcp.abort()

    def _handshake_failed(self, reason: str) -> None:
        self._state = _DELEGATED  # i.e. gone: counted once, nothing more to do
        self.metrics.handshake_failures_total += 1
        self.host.event(logging.INFO, "handshake failed from %s: %s", self.peer, reason)

    def _frame(self, opcode: int, fin: int, payload: bytes) -> None:
        """One complete, well-formed frame."""
        if opcode == OP_PING:
            self._tcp.write(frame_head(OP_PONG, len(payload)) + payload)
            return
        if opcode == OP_PONG:
            return  # unsolicited pongs are allowed and ignored
        if opcode == OP_CLOSE:
            self._close_received(payload)
            return
        frag = self._frag
        if frag is None:  # a new message
            if fin:
                if opcode == OP_TEXT and not payload.isascii():
                    try:
                        payload.decode()
                    except UnicodeDecodeError:
                        self._fail(CLOSE_INVALID_TEXT, "invalid UTF-8 in text message")
                        return
                self._send(opcode, payload)
                return
            # The first fragment. A text message always has a decoder, a binary one never: the
            # decoder slot also says which type to echo.
            frag = self._frag = bytearray()
            self._decoder = _utf8_decoder() if opcode == OP_TEXT else None
        if self._decoder is not None:
            # Validate as the fragments come, so invalid text fails at the first bad fragment.
            try:
                self._decoder.decode(payload, bool(fin))
            except UnicodeDecodeError:
                self._fail(CLOSE_INVALID_TEXT, "invalid UTF-8 in text message")
                return
        frag += payload
        if fin:
            opcode = OP_TEXT if self._decoder is not None else OP_BINARY
            self._frag = None
            self._decoder = None
            self._send(opcode, frag)

    def _send(self, opcode: int, payload: bytes | bytearray) -> None:
        """Echo one whole message."""
        size = len(payload)
        self._tcp.write(frame_head(opcode, size))
        self._tcp.write(payload)
        metrics = self.metrics
        metrics.messages_total += 1
        metrics.bytes_total += size

    def _close_received(self, payload: bytes) -> None:
        """The peer's close frame: echo its status code (RFC 6455 5.5.1), then end the TCP
        connection (the server closes first, 7.1.1). A partial message is dropped."""
        if not payload:
            code = CLOSE_NORMAL
        elif len(payload) == 1:
            self._fail(CLOSE_PROTOCOL_ERROR, "close frame with a one-byte payload")
            return
        else:
            code = int.from_bytes(payload[:2], "big")
            if not valid_close_code(code):
                self._fail(CLOSE_PROTOCOL_ERROR, f"bad close code {code}")
                return
            try:
                payload[2:].decode()
            except UnicodeDecodeError:
                self._fail(CLOSE_INVALID_TEXT, "invalid UTF-8 in close reason")
                return
        self._state = _CLOSING
        self._rest = bytearray()  # keeps the hot path off: input goes to _parse, which drops it
        self._frag = self._decoder = None
        tcp = self._tcp
        tcp.write(close_frame(code))
        tcp.close()  # after the write buffer is flushed
        self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, tcp.abort)

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection because of the peer (RFC 6455 7.1.7)."""
        self.host.event(logging.WARNING, "closing %s with %d: %s", self.peer, code, reason)
        self.close_with(code, reason.encode())

    def close_with(self, code: int, reason: bytes) -> None:
        """Send a close frame, then a TCP FIN; whatever the peer still sends is read and dropped
        (closing the socket at once could turn unread input into a reset that destroys our close
        frame). The peer closes its side in answer; if it does not, it is dropped after
        CLOSE_TIMEOUT."""
        if self._state != _OPEN:
            return
        self._state = _CLOSING
        self._rest = bytearray()  # keeps the hot path off: input goes to _parse, which drops it
        self._frag = self._decoder = None
        tcp = self._tcp
        tcp.write(close_frame(code, reason))
        tcp.write_eof()
        self._timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, tcp.abort)

    @property
    def peer(self) -> str:
        """The client's address, for log lines (computed only when one is written)."""
        peer = self._tcp.get_extra_info("peername")
        return f"{peer[0]}:{peer[1]}" if peer else "?"

    def abort(self) -> None:
        if self._tcp is not None:
            self._tcp.abort()

    def eof_received(self) -> bool:
        return False  # the peer is done: close our side too

    def pause_writing(self) -> None:
        # The peer does not read its echoes: stop reading its messages until it catches up, so
        # its data waits in its own socket buffer instead of in our memory.
        self._tcp.pause_reading()

    def resume_writing(self) -> None:
        if self._state == _OPEN and not self._tcp.is_closing():
            self._tcp.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.host.lean.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        state = self._state
        if state in (_OPEN, _CLOSING):
            self.metrics.connections_current -= 1
        elif state == _HANDSHAKE:
            self._handshake_failed(f"connection lost: {exc}" if exc else "connection closed")
        self._rest = self._frag = self._decoder = None
        self._head = None

    @property
    def is_open(self) -> bool:
        return self._state == _OPEN
