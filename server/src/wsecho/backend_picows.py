"""The picows backend (default): a Cython WebSocket core driven by small Python callbacks.

Why it is built this way:
- The echo path is one Python method per frame, `_EchoListener.on_ws_frame`: a type check, a
  UTF-8 check for text, `transport.send()` of a memoryview into picows' read buffer (no copy in
  Python), two integer increments. Everything rare (fragments, close, errors) is out of it.
- Memory per idle connection is what decides the 10,000-connection footprint, so: a 2 KiB initial
  read buffer (picows' minimum; it grows on demand) instead of the 16 KiB default, no per-connection
  `logging.Logger` (picows creates a child logger per connection unless it gets a non-Logger), the
  handshake's header dictionaries released once the connection is open, `__slots__` everywhere.
- picows does not track connections, so this backend keeps one set of its protocols: /metrics
  counts, --max-connections and the 1001 close on shutdown come from there.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
from http import HTTPStatus
from typing import Any

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import WSAutoPingStrategy, WSProtocol  # type: ignore[attr-defined]

from wsecho.common import CLOSE_TIMEOUT, REJECT_BODY, EventLog, http_endpoint
from wsecho.config import Settings
from wsecho.metrics import Metrics

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


class _EchoListener(WSListener):
    """One per WebSocket connection: echoes messages, enforces the message size limit."""

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


class _Protocol(WSProtocol):  # type: ignore[misc]
    """picows' protocol, plus the bookkeeping of one TCP connection."""

    __slots__ = ("reason", "server", "state", "tcp")

    def __init__(self, server: PicowsServer) -> None:
        self.server = server
        self.state = _PENDING
        self.reason = ""
        self.tcp: asyncio.Transport | None = None
        settings = server.settings
        super().__init__(
            None,  # host:port (client side only)
            None,  # path (client side only)
            False,  # is_client_side
            self._route,  # called with the parsed HTTP request
            _ConnectionLog(self),
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
        self.protocols: set[_Protocol] = set()
        self.event = EventLog(log)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Protocol(self),
            self.settings.host,
            self.settings.port,
            backlog=4096,  # bursts of connects (1,000/s ramps) must not overflow the accept queue
            reuse_address=True,
        )

    @property
    def ports(self) -> list[int]:
        assert self._server is not None
        return [s.getsockname()[1] for s in self._server.sockets]

    async def shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for proto in list(self.protocols):
            transport = proto.transport
            if proto.state == _WEBSOCKET and transport is not None:
                transport.send_close(WSCloseCode.GOING_AWAY, b"server shutting down")
            elif proto.tcp is not None:
                proto.tcp.abort()
        # Give clients a moment to answer the close frame, then drop whoever has not.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_TIMEOUT
        while self.protocols and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for proto in list(self.protocols):
            if proto.tcp is not None:
                proto.tcp.abort()
        await asyncio.sleep(0)  # let connection_lost callbacks run
