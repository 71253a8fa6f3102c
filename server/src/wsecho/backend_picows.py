"""The picows backend (default): a lean WebSocket path of wsecho's own, with picows behind it.

Why it is built this way (measured: server/README.md, "Performance"):
- Every connection starts on `_LeanConnection`, a plain asyncio protocol with eight slots. It
  answers a well-formed WebSocket upgrade itself and then serves frames itself: the event loop
  reads into its one shared buffer, and a whole frame is parsed, unmasked (websockets' C
  function), checked and echoed within one `data_received` call. An idle connection costs this
  object plus the event loop's transport: ~1.3 KB, against ~6 KB on picows' protocol (its 2 KiB
  read and 1 KiB write buffers, transport, futures, timer), and a connect costs about a quarter
  of the CPU time (picows' setup makes a dozen socket-option system calls).
- picows (Cython) answers every request outside the lean path's strict subset: /healthz,
  /metrics, the 503 beyond --max-connections, malformed requests, unusual but valid upgrades.
  The connection is handed over with the bytes already received (`_delegate`); when picows
  upgrades it, the open connection moves back to the lean path (`_Protocol.take_over`), unless
  the client already sent frames behind its request (they are in picows' private buffer); that
  rare connection stays on picows, served by `_EchoListener`.
- The echo path in numbers: a few integer tests, two slices, the C unmask, a UTF-8 check (free
  for ASCII), a prebuilt two-byte header, one transport write, two counter increments.
- picows does not track connections, so this backend keeps sets of its protocols: /metrics
  counts, --max-connections and the 1001 close on shutdown come from there.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import contextlib
import hashlib
import logging
from http import HTTPStatus
from typing import Any, ClassVar

from wsecho.accept import Acceptor, listening_sockets
from wsecho.common import (
    CLOSE_TIMEOUT,
    HEALTH_PATH,
    METRICS_PATH,
    REJECT_BODY,
    EventLog,
    http_endpoint,
)
from wsecho.config import Settings
from wsecho.mask import apply_mask
from wsecho.metrics import Metrics
from wsecho.picows_core import (
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSProtocol,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    block_aiofastnet,
)

log = logging.getLogger("wsecho.picows")

_TEXT = WSMsgType.TEXT
_BINARY = WSMsgType.BINARY
_CONTINUATION = WSMsgType.CONTINUATION
_CLOSE = WSMsgType.CLOSE
_PONG = WSMsgType.PONG

# picows' minimum; it doubles the buffer when a frame needs more.
READ_BUFFER_INIT_SIZE = 2048

# What became of a TCP connection (for /metrics and the handshake-failure log line).
_PENDING, _WEBSOCKET, _HTTP, _REJECTED = range(4)


def valid_close_code(code: int) -> bool:
    """May `code` appear in a close frame? (RFC 6455 7.4, IANA registry: 1012-1014 added later)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


# Opcodes (RFC 6455 5.2), for wsecho's own frame layer.
_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
# First header byte of an unfragmented text / binary frame (FIN set, no reserved bits).
_FIN_TEXT, _FIN_BINARY = 0x80 | _OP_TEXT, 0x80 | _OP_BINARY
# The two header bytes of every small server frame, prebuilt: the echo path only looks one up.
_SMALL_HEADS = {
    first: tuple(bytes((first, size)) for size in range(126)) for first in (_FIN_TEXT, _FIN_BINARY)
}


_utf8_decoder = codecs.getincrementaldecoder("utf-8")

# States of a _LeanConnection.
_HANDSHAKE, _OPEN, _CLOSING, _DELEGATED = range(4)
# picows' limit for a request head (larger: it disconnects); the lean path hands such requests
# to picows as soon as they pass it, so both paths behave the same.
_HTTP_MAX_SIZE = 16 * 1024
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_SWITCHING_PROTOCOLS = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: %b\r\n\r\n"
)
_HTTP_PATHS = (HEALTH_PATH.encode(), METRICS_PATH.encode())


def _upgrade_accept(raw: bytes) -> bytes | None:
    """The Sec-WebSocket-Accept value for a plain, valid WebSocket upgrade request head (RFC 6455
    4.2.1); None for anything else, which picows then answers (an HTTP endpoint, an error...).

    Deliberately strict: `GET <path> HTTP/1.1`, each of the four headers once, `Upgrade:
    websocket`, an `upgrade` token in `Connection`, version 13, a key of 16 base64-encoded bytes.
    """
    lines = raw.split(b"\r\n")
    request = lines[0].split(b" ")
    if len(request) != 3 or request[0] != b"GET" or request[2] != b"HTTP/1.1":
        return None
    if request[1].split(b"?", 1)[0] in _HTTP_PATHS:
        return None
    upgrade = connection = version = key = None
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name[0] in b" \t" or name[-1] in b" \t":
            return None  # not a header line, or an obsolete folded one: picows decides
        name = name.lower()
        if name == b"upgrade":
            if upgrade is not None:
                return None
            upgrade = value.strip().lower()
        elif name == b"connection":
            if connection is not None:
                return None
            connection = value.lower()
        elif name == b"sec-websocket-version":
            if version is not None:
                return None
            version = value.strip()
        elif name == b"sec-websocket-key":
            if key is not None:
                return None
            key = value.strip()
    if upgrade != b"websocket" or version != b"13" or key is None or connection is None:
        return None
    if b"upgrade" not in [token.strip() for token in connection.split(b",")]:
        return None
    try:
        if len(key) != 24 or len(base64.b64decode(key, validate=True)) != 16:
            return None
    except binascii.Error:
        return None
    return base64.b64encode(hashlib.sha1(key + _WS_GUID).digest())


def _frame_head(opcode: int, size: int) -> bytes:
    """Header of an unmasked, unfragmented server frame with a `size`-byte payload."""
    first = 0x80 | opcode
    if size < 126:
        return bytes((first, size))
    if size < 65536:
        return bytes((first, 126)) + size.to_bytes(2, "big")
    return bytes((first, 127)) + size.to_bytes(8, "big")


class _LeanConnection(asyncio.Protocol):
    """One TCP connection of the picows backend, served by wsecho's own lean WebSocket path.

    picows keeps a read buffer (>= 2 KiB), a write buffer (1 KiB), a transport, two futures and
    a handshake timer per connection, and its setup costs a dozen socket-option system calls:
    ~6 KB of an idle connection's memory and about half the CPU time of a connect. This small
    protocol holds none of that: the event loop reads into its one shared buffer (uvloop and
    asyncio both do for a plain `Protocol`), a request or a frame is parsed and answered within
    `data_received`, and nothing is kept between reads except what arrived incomplete. An idle
    open connection is this object (eight slots) plus the event loop's transport.

    - Handshake: a well-formed WebSocket upgrade request (`_upgrade_accept`) is answered here.
      Anything else (/healthz, /metrics, the 503 beyond --max-connections, malformed or unusual
      requests) is handed, bytes and all, to picows' protocol (`_delegate`), which answers it.
    - Hot path: one unfragmented, masked text or binary frame of up to 125 bytes per read (the
      2017 load): a few integer tests, the C unmask, a UTF-8 check (free for ASCII), one write.
    - Everything else goes through `_parse`, which implements the rest of RFC 6455 for a server.
    """

    __slots__ = ("_decoder", "_frag", "_head", "_rest", "_state", "_tcp", "_timer")

    # Set on the per-server subclass (see PicowsServer): class attributes, not per-connection.
    server: ClassVar[PicowsServer]
    metrics: ClassVar[Metrics]
    max_size: ClassVar[int]
    fast_max: ClassVar[int]  # min(125, max_size): the largest payload the hot path takes
    handshake_timeout: ClassVar[float]
    max_connections: ClassVar[int]

    def __init__(self) -> None:
        self._tcp: asyncio.Transport = None  # type: ignore[assignment]  # set in connection_made
        self._state = _HANDSHAKE
        self._head: bytes | None = b""  # the request received so far (during the handshake)
        self._timer: asyncio.TimerHandle | None = None  # the handshake timeout
        # Bytes of an incomplete frame; None means "open, nothing pending, no fragmented
        # message, not closing": the only state in which the hot path applies.
        self._rest: bytearray | None = bytearray()
        self._frag: bytearray | None = None  # a fragmented message being reassembled
        self._decoder: codecs.IncrementalDecoder | None = None  # its UTF-8 check (text)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._tcp = transport  # type: ignore[assignment]
        self.server.lean.add(self)
        self._timer = asyncio.get_running_loop().call_later(
            self.handshake_timeout, self._handshake_timed_out
        )

    def opened_by_picows(self, tcp: asyncio.Transport) -> None:
        """Take over a connection whose handshake picows did (see _Protocol.take_over)."""
        self._tcp = tcp
        self._state = _OPEN
        self._head = None
        self._rest = None
        self.server.lean.add(self)

    def data_received(self, data: bytes) -> None:
        if self._rest is None:
            size = len(data)
            if size >= 6:
                first = data[0]
                length = data[1] - 0x80  # negative when the frame is not masked
                if size == length + 6 and length <= self.fast_max:
                    if first == _FIN_TEXT:
                        payload = apply_mask(data[6:], data[2:6])
                        if not payload.isascii():
                            try:
                                payload.decode()
                            except UnicodeDecodeError:
                                self._fail(1007, "invalid UTF-8 in text message")
                                return
                    elif first == _FIN_BINARY:
                        payload = apply_mask(data[6:], data[2:6])
                    else:
                        self._parse(data)
                        return
                    self._tcp.write(_SMALL_HEADS[first][length] + payload)
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
            return  # closing, or handed to picows: input is dropped
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
                self._fail(1002, "reserved bits set, no extension")
                return
            if not second & 0x80:
                self._fail(1002, "unmasked client frame")
                return
            if opcode >= _OP_CLOSE:
                if opcode > _OP_PONG:
                    self._fail(1002, f"reserved opcode {opcode}")
                    return
                if not fin:
                    self._fail(1002, "fragmented control frame")
                    return
            elif opcode > _OP_BINARY:
                self._fail(1002, f"reserved opcode {opcode}")
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
            if opcode >= _OP_CLOSE:
                if length > 125:
                    self._fail(1002, "control frame longer than 125 bytes")
                    return
            else:
                if opcode == _OP_CONT:
                    if self._frag is None:
                        self._fail(1002, "continuation without a message")
                        return
                    total = len(self._frag) + length
                elif self._frag is not None:
                    self._fail(1002, "new message inside a fragmented one")
                    return
                else:
                    total = length
                if total > self.max_size:  # checked before the payload is waited for
                    self._fail(1009, "message too big")
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
        """The HTTP request: answer a WebSocket upgrade, or hand the connection to picows."""
        head = self._head + data if self._head else data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            if len(head) >= _HTTP_MAX_SIZE:
                self._delegate(head)  # picows answers an oversized request
            else:
                self._head = head
            return
        accept = None
        if self.metrics.connections_current < self.max_connections:
            accept = _upgrade_accept(head[:end])
        if accept is None:
            self._delegate(head)
            return
        self._tcp.write(_SWITCHING_PROTOCOLS % accept)
        self._opened()
        if end + 4 < len(head):  # frames sent right behind the request
            self._parse(head[end + 4 :])

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
        """Hand the connection, with the bytes received so far, to picows' protocol."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._state = _DELEGATED
        self._head = None
        self.server.lean.discard(self)
        tcp = self._tcp
        proto = _Protocol(self.server)
        tcp.set_protocol(proto)  # the event loop reads into picows' buffer from now on
        proto.connection_made(tcp)
        while head and not tcp.is_closing():
            view = proto.get_buffer(-1)
            size = min(len(view), len(head))
            view[:size] = head[:size]
            proto.buffer_updated(size)
            head = head[size:]

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self._state == _HANDSHAKE:
            self._handshake_failed("handshake timed out")
            self._tcp.abort()

    def _handshake_failed(self, reason: str) -> None:
        self._state = _DELEGATED  # i.e. gone: counted once, nothing more to do
        self.metrics.handshake_failures_total += 1
        self.server.event(logging.INFO, "handshake failed from %s: %s", self.peer, reason)

    def _frame(self, opcode: int, fin: int, payload: bytes) -> None:
        """One complete, well-formed frame."""
        if opcode == _OP_PING:
            self._tcp.write(_frame_head(_OP_PONG, len(payload)) + payload)
            return
        if opcode == _OP_PONG:
            return  # unsolicited pongs are allowed and ignored
        if opcode == _OP_CLOSE:
            self._close_received(payload)
            return
        frag = self._frag
        if frag is None:  # a new message
            if fin:
                if opcode == _OP_TEXT and not payload.isascii():
                    try:
                        payload.decode()
                    except UnicodeDecodeError:
                        self._fail(1007, "invalid UTF-8 in text message")
                        return
                self._send(opcode, payload)
                return
            # The first fragment. A text message always has a decoder, a binary one never: the
            # decoder slot also says which type to echo.
            frag = self._frag = bytearray()
            self._decoder = _utf8_decoder() if opcode == _OP_TEXT else None
        if self._decoder is not None:
            # Validate as the fragments come, so invalid text fails at the first bad fragment.
            try:
                self._decoder.decode(payload, bool(fin))
            except UnicodeDecodeError:
                self._fail(1007, "invalid UTF-8 in text message")
                return
        frag += payload
        if fin:
            opcode = _OP_TEXT if self._decoder is not None else _OP_BINARY
            self._frag = None
            self._decoder = None
            self._send(opcode, frag)

    def _send(self, opcode: int, payload: bytes | bytearray) -> None:
        """Echo one whole message."""
        size = len(payload)
        self._tcp.write(_frame_head(opcode, size))
        self._tcp.write(payload)
        metrics = self.metrics
        metrics.messages_total += 1
        metrics.bytes_total += size

    def _close_received(self, payload: bytes) -> None:
        """The peer's close frame: echo its status code (RFC 6455 5.5.1), then end the TCP
        connection (the server closes first, 7.1.1). A partial message is dropped."""
        if not payload:
            code = 1000
        elif len(payload) == 1:
            self._fail(1002, "close frame with a one-byte payload")
            return
        else:
            code = int.from_bytes(payload[:2], "big")
            if not valid_close_code(code):
                self._fail(1002, f"bad close code {code}")
                return
            try:
                payload[2:].decode()
            except UnicodeDecodeError:
                self._fail(1007, "invalid UTF-8 in close reason")
                return
        self._state = _CLOSING
        self._rest = bytearray()  # keeps the hot path off: input goes to _parse, which drops it
        self._frag = self._decoder = None
        tcp = self._tcp
        tcp.write(bytes((0x80 | _OP_CLOSE, 2)) + code.to_bytes(2, "big"))
        tcp.close()  # after the write buffer is flushed
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, tcp.abort)  # a peer that won't read

    def _fail(self, code: int, reason: str) -> None:
        """Fail the connection because of the peer (RFC 6455 7.1.7)."""
        self.server.event(logging.WARNING, "closing %s with %d: %s", self.peer, code, reason)
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
        body = code.to_bytes(2, "big") + reason
        tcp.write(_frame_head(_OP_CLOSE, len(body)) + body)
        tcp.write_eof()
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, tcp.abort)  # no-op once closed

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
        self.server.lean.discard(self)
        state = self._state
        if state in (_OPEN, _CLOSING):
            self.metrics.connections_current -= 1
        elif state == _HANDSHAKE:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._handshake_failed(f"connection lost: {exc}" if exc else "connection closed")
        self._rest = self._frag = self._decoder = None
        self._head = None

    @property
    def is_open(self) -> bool:
        return self._state == _OPEN


class _EchoListener(WSListener):
    """A WebSocket connection that stays on picows (see _Protocol): echoes messages, enforces the
    message size limit, with the same behaviour as _LeanConnection."""

    __slots__ = ("_decoder", "_frag", "_frag_type", "_metrics", "_proto", "_transport")

    def __init__(self, proto: _Protocol) -> None:
        self._proto = proto
        self._metrics = proto.server.metrics  # one attribute lookup on the hot path, not three
        self._transport: WSTransport | None = None
        # A fragmented message being reassembled: its bytes, its type, its UTF-8 decoder (text).
        self._frag: bytearray | None = None
        self._frag_type = _BINARY
        self._decoder: codecs.IncrementalDecoder | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport
        proto = self._proto
        proto.state = _WEBSOCKET
        metrics = proto.server.metrics
        metrics.connections_current += 1
        metrics.connections_total += 1
        if proto.take_over():
            # picows' objects of this connection are garbage now; cutting this reference cycle
            # lets reference counting free them at once rather than the cyclic GC some time later.
            self._proto = None  # type: ignore[assignment]
            return
        # The connection stays on picows (the client sent data before our handshake response).
        # picows keeps the handshake request and response for the connection's lifetime; their
        # header dictionaries are ~1 KiB per connection that nothing reads again.
        transport.request.headers = None  # type: ignore[assignment]
        transport.response.headers = None  # type: ignore[assignment]

    def on_ws_disconnected(self, _transport: WSTransport) -> None:
        self._proto.server.metrics.connections_current -= 1
        self._frag = None
        self._decoder = None

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # The hot path: a whole text or binary message in one frame, nothing in progress.
        msg_type = frame.msg_type
        if (
            (msg_type is _TEXT or msg_type is _BINARY)
            and frame.fin
            and self._frag is None
            and not (frame.rsv1 or frame.rsv2 or frame.rsv3)
        ):
            if msg_type is _TEXT:
                try:
                    frame.get_payload_as_utf8_text()
                except UnicodeDecodeError:
                    self._fail(transport, WSCloseCode.INVALID_TEXT, "invalid UTF-8 in text message")
                    return
            transport.send(msg_type, frame.get_payload_as_memoryview())
            metrics = self._metrics
            metrics.messages_total += 1
            metrics.bytes_total += frame.payload_size
            return
        self._rare_frame(transport, frame, msg_type)

    def _rare_frame(self, transport: WSTransport, frame: WSFrame, msg_type: WSMsgType) -> None:
        """Fragments, close frames, pongs, protocol errors."""
        if transport.is_close_frame_sent:
            # Closing (we answered a close or failed the connection): only the peer's close
            # frame matters now; it ends the connection.
            if msg_type is _CLOSE:
                transport.disconnect()
            return
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            self._fail(transport, WSCloseCode.PROTOCOL_ERROR, "reserved bits set, no extension")
            return
        if msg_type is _CLOSE:
            # Echo the peer's status code (RFC 6455 5.5.1). picows lets 0 and 1006 through (they
            # are in its enum), so the service checks the code itself.
            code = frame.get_close_code() if frame.payload_size >= 2 else WSCloseCode.OK
            if not valid_close_code(code.value):
                code = WSCloseCode.PROTOCOL_ERROR
                proto = self._proto
                proto.server.event(logging.WARNING, "closing %s: bad close code", proto.peer)
            transport.send_close(code)
            transport.disconnect()
            return
        if msg_type is _PONG:
            return  # unsolicited pongs are allowed and ignored
        frag = self._frag
        if msg_type is _CONTINUATION:
            if frag is None:
                self._fail(transport, WSCloseCode.PROTOCOL_ERROR, "continuation without a message")
                return
        elif frag is not None:
            self._fail(transport, WSCloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
            return
        else:  # the first fragment of a message
            frag = self._frag = bytearray()
            self._frag_type = msg_type
            self._decoder = codecs.getincrementaldecoder("utf-8")() if msg_type is _TEXT else None
        size = len(frag) + frame.payload_size
        if size > self._proto.server.settings.max_message_size:
            self._fail(transport, WSCloseCode.MESSAGE_TOO_BIG, "message too big")
            return
        payload = frame.get_payload_as_memoryview()
        if self._decoder is not None:
            # Validate as the fragments come, so invalid text fails at the first bad fragment.
            try:
                self._decoder.decode(payload, frame.fin)
            except UnicodeDecodeError:
                self._fail(transport, WSCloseCode.INVALID_TEXT, "invalid UTF-8 in text message")
                return
        frag += payload
        if frame.fin:
            transport.send(self._frag_type, frag)
            self._frag = None
            self._decoder = None
            metrics = self._proto.server.metrics
            metrics.messages_total += 1
            metrics.bytes_total += size

    def _fail(self, transport: WSTransport, code: WSCloseCode, reason: str) -> None:
        """Close because of the peer: send the close code, drop the connection if it lingers."""
        proto = self._proto
        proto.server.event(logging.WARNING, "closing %s with %d: %s", proto.peer, code, reason)
        self._frag = None
        self._decoder = None
        transport.send_close(code, reason.encode())
        asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.disconnect, False)

    def pause_writing(self) -> None:
        # The peer does not read its echoes: stop reading its messages until it catches up, so
        # its data waits in its own socket buffer instead of in our memory.
        if self._transport is not None:
            self._transport.underlying_transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_disconnected:
            self._transport.underlying_transport.resume_reading()


class _ConnectionLog:
    """The logger picows gets for one connection (it only needs these methods).

    Being no `logging.Logger` spares picows' per-connection child logger (memory), keeps picows'
    per-connection INFO lines out of the log, and lets the service see picows' errors:
    - protocol errors become one rate-limited WARNING each (a misbehaving client, not our fault);
    - picows 2.3.1 answers "a close frame, then another one in the same read" with 1002 before it
      hands the first close to the listener (Autobahn case 7.1.2 expects the first close echoed and
      the second ignored, RFC 6455 5.5.1). Its log call comes just before its send_close, so the
      echo is sent here, and picows' own 1002 is then dropped as a second close frame.
    """

    __slots__ = ("_proto",)

    def __init__(self, proto: _Protocol) -> None:
        self._proto = proto

    def detach(self) -> None:
        """The connection moved to a _LeanConnection: cut the reference cycle with picows."""
        self._proto = None  # type: ignore[assignment]

    def isEnabledFor(self, _level: int) -> bool:
        return False  # picows' debug logging stays off: it would cost on every frame

    def log(self, _level: int, msg: str, *args: object, **_kwargs: Any) -> None:
        pass

    def debug(self, msg: str, *args: object, **_kwargs: Any) -> None:
        pass

    def info(self, msg: str, *args: object, **_kwargs: Any) -> None:
        # Per-connection chatter ("New connection accepted", "Disconnected") is dropped; the rest
        # (handshake timeout, oversized HTTP request) explains a handshake failure.
        if not msg.startswith(("New connection", "Disconnected")):
            self._proto.reason = msg % args if args else msg

    def warning(self, msg: str, *args: object, **_kwargs: Any) -> None:
        self._proto.server.event(logging.WARNING, "picows: " + msg, *args)

    def error(self, msg: str, *args: object, **_kwargs: Any) -> None:
        proto = self._proto
        if msg.startswith("WS parser error") and args:
            detail = args[0]
            transport = proto.transport
            if (
                isinstance(detail, tuple)
                and "CLOSE for the second time" in str(detail[-1])
                and transport is not None
                and not transport.is_close_frame_sent
                and transport.close_handshake is not None
                and transport.close_handshake.recv is not None
            ):
                transport.send_close(transport.close_handshake.recv.code)
                return
            proto.server.event(logging.WARNING, "protocol error from %s: %s", proto.peer, detail)
            return
        proto.server.event(logging.ERROR, "picows: " + msg, *args)

    def exception(self, msg: str, *args: object, **_kwargs: Any) -> None:
        log.exception("picows: " + msg, *args)


class _Detached(asyncio.BufferedProtocol):
    """A stand-in protocol set on a transport between picows' protocol and _LeanConnection.

    uvloop keeps the `get_buffer` and `buffer_updated` methods of the last buffered protocol of
    a transport even after `set_protocol()` to a plain one; had picows' protocol been the last,
    those bound methods would keep its whole connection state (buffers included) alive. These
    are static functions of one shared class, so what stays referenced costs nothing.
    """

    @staticmethod
    def get_buffer(_sizehint: int) -> memoryview:
        raise RuntimeError("a detached wsecho protocol was asked for a read buffer")

    @staticmethod
    def buffer_updated(_nbytes: int) -> None:
        raise RuntimeError("a detached wsecho protocol received data")


_DETACHED = _Detached()


class _Protocol(WSProtocol):  # type: ignore[misc]
    """picows' protocol for the requests the lean path hands over (_LeanConnection._delegate):
    plain HTTP endpoints, rejections, errors, unusual upgrades; plus wsecho's bookkeeping.

    Once a WebSocket handshake succeeds, `take_over()` moves the TCP transport to a
    _LeanConnection and this object, its listener and picows' buffers are freed. Only when the
    client sent data right behind its upgrade request (RFC 6455 4.1 says it must wait for the
    response; few do) is that data already in picows' buffer, out of reach: that connection then
    stays on picows, served by _EchoListener.
    """

    __slots__ = ("head", "log", "reason", "server", "state", "tcp", "view")

    def __init__(self, server: PicowsServer) -> None:
        self.server = server
        self.state = _PENDING
        self.reason = ""
        self.tcp: asyncio.Transport | None = None
        # Everything received until the handshake completes (picows' own copy is private), to
        # know whether anything follows the request; and picows' last read buffer, to fill it.
        self.head: bytes | None = b""
        self.view: memoryview | None = None
        self.log = _ConnectionLog(self)
        settings = server.settings
        super().__init__(
            None,  # host:port (client side only)
            None,  # path (client side only)
            False,  # is_client_side
            self._route,  # called with the parsed HTTP request
            self.log,
            True,  # disconnect_on_exception: a bug in a callback closes with 1011
            settings.handshake_timeout,
            False,  # enable_auto_ping: idle clients are legitimate (the 2017 load is idle-ish)
            20.0,
            20.0,
            WSAutoPingStrategy.PING_WHEN_IDLE,
            True,  # enable_auto_pong: answer pings inside picows
            settings.max_message_size,  # max_frame_size: larger frames get close 1009
            None,  # extra_headers
            READ_BUFFER_INIT_SIZE,
        )

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tcp = transport  # type: ignore[assignment]
        self.server.protocols.add(self)
        super().connection_made(transport)

    def get_buffer(self, size_hint: int) -> memoryview:
        view: memoryview = super().get_buffer(size_hint)
        if self.head is not None:
            self.view = view
        return view

    def buffer_updated(self, nbytes: int) -> None:
        if self.head is not None and self.view is not None:
            self.head += self.view[:nbytes]  # before picows parses it (and may call take_over)
            self.view = None
        super().buffer_updated(nbytes)

    def take_over(self) -> bool:
        """Called when the handshake succeeded: move the connection to a _LeanConnection, unless
        data follows the request in picows' buffer. True if it moved."""
        head, self.head = self.head, None
        tcp = self.tcp
        if head is None or tcp is None or head.find(b"\r\n\r\n") + 4 != len(head):
            return False
        server = self.server
        lean = server.lean_type()
        lean.opened_by_picows(tcp)
        server.protocols.discard(self)
        tcp.set_protocol(_DETACHED)
        tcp.set_protocol(lean)  # the event loop restarts reading with the new protocol
        self.log.detach()
        return True

    @property
    def peer(self) -> str:
        """The client's address, for log lines (computed only when one is written)."""
        peer = self.tcp.get_extra_info("peername") if self.tcp is not None else None
        return f"{peer[0]}:{peer[1]}" if peer else "?"

    def connection_lost(self, exc: Exception | None) -> None:
        server = self.server
        server.protocols.discard(self)
        if self.state == _PENDING:
            server.metrics.handshake_failures_total += 1
            server.event(
                logging.INFO,
                "handshake failed from %s: %s",
                self.peer,
                self.reason or (f"connection lost: {exc}" if exc else "connection closed"),
            )
        super().connection_lost(exc)

    def _route(self, request: WSUpgradeRequest) -> Any:
        """picows' listener factory: plain HTTP endpoints, the connection limit, or an echo."""
        server = self.server
        endpoint = http_endpoint(request.path.decode("latin-1"), server.metrics)
        if endpoint is not None:
            self.state = _HTTP
            status, content_type, body = endpoint
            response = WSUpgradeResponse.create_ok_response(body, {"Content-Type": content_type})
            response.status = HTTPStatus(status)
            return WSUpgradeResponseWithListener(response, None)
        if server.metrics.connections_current >= server.settings.max_connections:
            self.state = _REJECTED
            server.metrics.rejected_total += 1
            server.metrics.handshake_failures_total += 1
            server.event(
                logging.WARNING,
                "rejected %s with HTTP 503: %d connections open (--max-connections)",
                self.peer,
                server.metrics.connections_current,
            )
            response = WSUpgradeResponse.create_error_response(503, REJECT_BODY)
            return WSUpgradeResponseWithListener(response, None)
        # Not yet _WEBSOCKET: picows validates the upgrade headers after this returns.
        return _EchoListener(self)


class PicowsServer:
    """A running picows echo server."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        # Connections in picows: handshakes, plain HTTP requests, the rare ones that stay.
        self.protocols: set[_Protocol] = set()
        # Open WebSocket connections moved to wsecho's frame layer.
        self.lean: set[_LeanConnection] = set()
        # The lean protocol class of this server: its settings are class attributes, so that
        # connections do not carry them.
        self.lean_type: type[_LeanConnection] = type(
            "LeanConnection",
            (_LeanConnection,),
            {
                "__slots__": (),
                "server": self,
                "metrics": metrics,
                "max_size": settings.max_message_size,
                "fast_max": min(125, settings.max_message_size),
                "handshake_timeout": settings.handshake_timeout,
                "max_connections": settings.max_connections,
            },
        )
        self.event = EventLog(log)
        self._acceptor: Acceptor | None = None
        self._running = contextlib.ExitStack()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._running.enter_context(block_aiofastnet())
        # Our own accept loop, not loop.create_server: uvloop accepts one connection per loop
        # iteration (see wsecho.accept). Every connection starts on the lean path.
        sockets = listening_sockets(
            self.settings.host,
            self.settings.port,
            backlog=4096,  # bursts of connects (1,000/s ramps) must not overflow the accept queue
        )
        self._acceptor = Acceptor(loop, self.lean_type, sockets)
        self._acceptor.start()

    @property
    def ports(self) -> list[int]:
        assert self._acceptor is not None
        return self._acceptor.ports

    async def shutdown(self) -> None:
        assert self._acceptor is not None
        self._acceptor.close()
        for conn in list(self.lean):
            if conn.is_open:
                conn.close_with(1001, b"server shutting down")
            else:
                conn.abort()  # a handshake in progress
        for proto in list(self.protocols):
            transport = proto.transport
            if proto.state == _WEBSOCKET and transport is not None:
                transport.send_close(WSCloseCode.GOING_AWAY, b"server shutting down")
            elif proto.tcp is not None:
                proto.tcp.abort()
        # Give clients a moment to answer the close frame, then drop whoever has not.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_TIMEOUT
        while (self.protocols or self.lean) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.lean):
            conn.abort()
        for proto in list(self.protocols):
            if proto.tcp is not None:
                proto.tcp.abort()
        await asyncio.sleep(0)  # let connection_lost callbacks run
        self._running.close()
