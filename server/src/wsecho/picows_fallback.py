"""Everything tied to picows and its internals: the requests the lean path does not answer.

picows (Cython) answers /healthz, /metrics, the 503 beyond --max-connections, malformed requests
and unusual but valid upgrades (`hand_over` gives it a connection with the bytes already
received). A connection picows upgrades moves back to the lean path (`PicowsConnection.take_over`)
unless the client already sent frames behind its request: those are in picows' private buffer,
so that rare connection stays on picows, served by `_EchoListener` with the lean path's behaviour.

picows is imported without `picows/__init__.py`, which also imports its client API, SOCKS proxy
support (`python_socks`) and `aiofastnet` (a TLS transport library): ~3 MB of resident memory
that an echo server never uses. The server needs only the Cython module `picows.picows` and the
pure-Python `picows.common`; they are imported under a stand-in parent package that is removed
again right after, so a later `import picows` runs the real `__init__.py` and reuses them.
picows also imports `aiofastnet` at every new connection to ask whether its transport is an
aiofastnet one; while the server runs, that import is blocked (`block_aiofastnet()`:
`sys.modules["aiofastnet"] = None`, the documented way) and fails fast with the right answer.

This file is over 400 lines on purpose: a picows upgrade is checked against this one file.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import importlib
import importlib.util
import logging
import sys
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any, Protocol

from wsecho.common import CLOSE_TIMEOUT, REJECT_BODY, EventLog, http_endpoint
from wsecho.config import Settings
from wsecho.frames import valid_close_code
from wsecho.handshake import HEAD_END
from wsecho.metrics import Metrics


def _import_core() -> None:
    if "picows.picows" in sys.modules:
        return
    spec = importlib.util.find_spec("picows")  # finds the package without running it
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("picows is not installed (pip install picows)")
    stand_in = "picows" not in sys.modules
    if stand_in:
        sys.modules["picows"] = importlib.util.module_from_spec(spec)  # __path__, not executed
    try:
        importlib.import_module("picows.common")
        importlib.import_module("picows.picows")
    finally:
        if stand_in:
            del sys.modules["picows"]


@contextlib.contextmanager
def block_aiofastnet() -> Iterator[None]:
    """While the server runs: `import aiofastnet` fails (unless it was imported before)."""
    blocked = "aiofastnet" not in sys.modules
    if blocked:
        sys.modules["aiofastnet"] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if blocked and sys.modules.get("aiofastnet", ...) is None:
            del sys.modules["aiofastnet"]


_import_core()

from picows.common import (  # noqa: E402
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
)
from picows.picows import (  # type: ignore[attr-defined]  # noqa: E402
    WSAutoPingStrategy,
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSProtocol,
    WSTransport,
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


class FallbackHost(Protocol):
    """What the picows connections need from the server that runs them."""

    @property
    def settings(self) -> Settings:
        """The service's settings."""

    @property
    def metrics(self) -> Metrics:
        """The service's counters."""

    @property
    def event(self) -> EventLog:
        """The rate-limited log of abnormal events."""

    @property
    def protocols(self) -> set[PicowsConnection]:
        """The connections on picows."""

    def adopt(self, tcp: asyncio.Transport) -> None:
        """Serve an upgraded connection on the lean path from now on."""


def hand_over(host: FallbackHost, tcp: asyncio.Transport, head: bytes) -> None:
    """Give a connection, with the bytes received so far, to a new PicowsConnection."""
    proto = PicowsConnection(host)
    tcp.set_protocol(proto)  # the event loop reads into picows' buffer from now on
    proto.connection_made(tcp)
    while head and not tcp.is_closing():
        view = proto.get_buffer(-1)
        size = min(len(view), len(head))
        view[:size] = head[:size]
        proto.buffer_updated(size)
        head = head[size:]


class _EchoListener(WSListener):
    """A WebSocket connection that stays on picows (see PicowsConnection): echoes messages,
    enforces the message size limit, with the same behaviour as the lean connection."""

    __slots__ = ("_decoder", "_frag", "_frag_type", "_metrics", "_proto", "_transport")

    def __init__(self, proto: PicowsConnection) -> None:
        self._proto = proto
        self._metrics = proto.host.metrics  # one attribute lookup on the hot path, not three
        self._transport: WSTransport | None = None
        # A fragmented message being reassembled: its bytes, its type, its UTF-8 decoder (text).
        self._frag: bytearray | None = None
        self._frag_type = _BINARY
        self._decoder: codecs.IncrementalDecoder | None = None

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._transport = transport
        proto = self._proto
        proto.state = _WEBSOCKET
        metrics = proto.host.metrics
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
        self._proto.host.metrics.connections_current -= 1
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
                proto.host.event(logging.WARNING, "closing %s: bad close code", proto.peer)
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
        if size > self._proto.host.settings.max_message_size:
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
            metrics = self._proto.host.metrics
            metrics.messages_total += 1
            metrics.bytes_total += size

    def _fail(self, transport: WSTransport, code: WSCloseCode, reason: str) -> None:
        """Close because of the peer: send the close code, drop the connection if it lingers."""
        proto = self._proto
        proto.host.event(logging.WARNING, "closing %s with %d: %s", proto.peer, code, reason)
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

    def __init__(self, proto: PicowsConnection) -> None:
        self._proto = proto

    def detach(self) -> None:
        """The connection moved to the lean path: cut the reference cycle with picows."""
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
        self._proto.host.event(logging.WARNING, "picows: " + msg, *args)

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
            proto.host.event(logging.WARNING, "protocol error from %s: %s", proto.peer, detail)
            return
        proto.host.event(logging.ERROR, "picows: " + msg, *args)

    def exception(self, msg: str, *args: object, **_kwargs: Any) -> None:
        log.exception("picows: " + msg, *args)


class _Detached(asyncio.BufferedProtocol):
    """A stand-in protocol set on a transport between picows' protocol and the lean one.

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


class PicowsConnection(WSProtocol):  # type: ignore[misc]
    """picows' protocol for a connection handed over by the lean path (`hand_over`), plus
    wsecho's bookkeeping.

    Once a WebSocket handshake succeeds, `take_over()` moves the TCP transport to the lean path
    and this object, its listener and picows' buffers are freed. Only when the client sent data
    right behind its upgrade request (RFC 6455 4.1 says it must wait for the response; few do)
    is that data already in picows' buffer, out of reach: that connection then stays on picows,
    served by _EchoListener.
    """

    __slots__ = ("head", "host", "log", "reason", "state", "tcp", "view")

    def __init__(self, host: FallbackHost) -> None:
        self.host = host
        self.state = _PENDING
        self.reason = ""
        self.tcp: asyncio.Transport | None = None
        # Everything received until the handshake completes (picows' own copy is private), to
        # know whether anything follows the request; and picows' last read buffer, to fill it.
        self.head: bytes | None = b""
        self.view: memoryview | None = None
        self.log = _ConnectionLog(self)
        settings = host.settings
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
        self.host.protocols.add(self)
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
        """Called when the handshake succeeded: move the connection to the lean path, unless
        data follows the request in picows' buffer. True if it moved."""
        head, self.head = self.head, None
        tcp = self.tcp
        if head is None or tcp is None or head.find(HEAD_END) + 4 != len(head):
            return False
        self.host.protocols.discard(self)
        tcp.set_protocol(_DETACHED)
        self.host.adopt(tcp)  # the event loop restarts reading with the new protocol
        self.log.detach()
        return True

    def close_going_away(self) -> None:
        """Shutdown: an open WebSocket gets close 1001; anything else is dropped."""
        transport = self.transport
        if self.state == _WEBSOCKET and transport is not None:
            transport.send_close(WSCloseCode.GOING_AWAY, b"server shutting down")
        elif self.tcp is not None:
            self.tcp.abort()

    def abort(self) -> None:
        if self.tcp is not None:
            self.tcp.abort()

    @property
    def peer(self) -> str:
        """The client's address, for log lines (computed only when one is written)."""
        peer = self.tcp.get_extra_info("peername") if self.tcp is not None else None
        return f"{peer[0]}:{peer[1]}" if peer else "?"

    def connection_lost(self, exc: Exception | None) -> None:
        host = self.host
        host.protocols.discard(self)
        if self.state == _PENDING:
            host.metrics.handshake_failures_total += 1
            host.event(
                logging.INFO,
                "handshake failed from %s: %s",
                self.peer,
                self.reason or (f"connection lost: {exc}" if exc else "connection closed"),
            )
        super().connection_lost(exc)

    def _route(self, request: WSUpgradeRequest) -> Any:
        """picows' listener factory: plain HTTP endpoints, the connection limit, or an echo."""
        host = self.host
        metrics = host.metrics
        endpoint = http_endpoint(
            request.path.decode("latin-1"), metrics, host.settings.current_run_token()
        )
        if endpoint is not None:
            self.state = _HTTP
            response = WSUpgradeResponse.create_ok_response(
                endpoint.body, {"Content-Type": endpoint.content_type, **dict(endpoint.headers)}
            )
            response.status = HTTPStatus(endpoint.status)
            return WSUpgradeResponseWithListener(response, None)
        if metrics.connections_current >= host.settings.max_connections:
            self.state = _REJECTED
            metrics.rejected_total += 1
            metrics.handshake_failures_total += 1
            host.event(
                logging.WARNING,
                "rejected %s with HTTP 503: %d connections open (--max-connections)",
                self.peer,
                metrics.connections_current,
            )
            response = WSUpgradeResponse.create_error_response(503, REJECT_BODY)
            return WSUpgradeResponseWithListener(response, None)
        # Not yet _WEBSOCKET: picows validates the upgrade headers after this returns.
        return _EchoListener(self)
