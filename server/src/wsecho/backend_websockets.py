"""The websockets backend: the reference implementation, pure Python, one task per connection.

It is here to cross-check behaviour (the same tests and the same Autobahn run pass on both) and as
the readable baseline of the benchmarks; picows is the fast one.
"""

from __future__ import annotations

import http
import logging
from typing import Any

import websockets.asyncio.messages
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol

from wsecho.common import CLOSE_TIMEOUT, REJECT_BODY, EventLog, http_endpoint
from wsecho.config import Settings
from wsecho.metrics import Metrics

log = logging.getLogger("wsecho.websockets")

_PENDING, _WEBSOCKET, _HTTP, _REJECTED = range(4)


# websockets refuses messages of more than 4096 fragments (WEBSOCKETS_MAX_FRAGMENTS, read at import)
# with 1009, whatever their size: Autobahn 9.3/9.4 send 4 MiB in 64-byte fragments. The service
# allows as many fragments as a message of --max-message-size has 64-byte pieces (the same bound
# on the per-fragment bookkeeping, relative to the size limit that is configured anyway).
MIN_FRAGMENT_SIZE = 64


class _ServerProtocol(ServerProtocol):
    """websockets' sans-I/O protocol, with one change: a close frame in the middle of a fragmented
    message closes normally (the partial message is dropped), as Autobahn 7.1.5 expects, instead
    of failing with 1002 "incomplete fragmented message" (RFC 6455 5.4 allows control frames
    between fragments, and 5.5.1 says to answer a close with a close).
    """

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.CLOSE:
            self.current_size = None
        super().recv_frame(frame)


def _response(
    status: int, content_type: str, body: bytes, extra: tuple[tuple[str, str], ...] = ()
) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            *extra,
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


class WebsocketsServer:
    """A running websockets echo server."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.event = EventLog(log)
        self._server: Server | None = None

    async def start(self) -> None:
        server = self
        messages: Any = websockets.asyncio.messages
        if hasattr(messages, "MAX_FRAGMENTS"):  # websockets >= 17 (on Python 3.10: 16, no limit)
            messages.MAX_FRAGMENTS = max(
                messages.MAX_FRAGMENTS, self.settings.max_message_size // MIN_FRAGMENT_SIZE
            )

        class Connection(ServerConnection):
            """ServerConnection that knows how its TCP connection ended, for /metrics and logs."""

            wsecho_state = _PENDING

            def __init__(self, protocol: ServerProtocol, *args: Any, **kwargs: Any) -> None:
                # serve() builds a plain ServerProtocol; this one differs only in recv_frame.
                protocol.__class__ = _ServerProtocol
                super().__init__(protocol, *args, **kwargs)

            def connection_lost(self, exc: Exception | None) -> None:
                if self.wsecho_state == _PENDING:
                    server.metrics.handshake_failures_total += 1
                    reason = self.protocol.handshake_exc or exc or "connection closed"
                    server.event(
                        logging.INFO,
                        "handshake failed from %s: %s",
                        _peer(self),
                        reason,
                    )
                super().connection_lost(exc)

        self._server = await serve(
            self._echo,
            self.settings.host,
            self.settings.port,
            process_request=self._route,
            create_connection=Connection,
            compression=None,  # permessage-deflate off, as in the 2017 runs
            max_size=self.settings.max_message_size,  # larger messages get close 1009
            open_timeout=self.settings.handshake_timeout,
            close_timeout=CLOSE_TIMEOUT,
            ping_interval=None,  # no keepalive pings, like the picows backend
            server_header=None,
            backlog=4096,
            reuse_address=True,
            reuse_port=self.settings.workers > 1,  # one socket per worker (wsecho.workers)
        )

    @property
    def ports(self) -> list[int]:
        assert self._server is not None
        return [s.getsockname()[1] for s in self._server.sockets]

    def _route(self, connection: ServerConnection, request: Request) -> Response | None:
        """websockets' process_request: plain HTTP endpoints, the connection limit, or None."""
        endpoint = http_endpoint(request.path, self.metrics, self.settings.current_run_token())
        if endpoint is not None:
            connection.wsecho_state = _HTTP  # type: ignore[attr-defined]
            return _response(
                endpoint.status, endpoint.content_type, endpoint.body, endpoint.headers
            )
        if self.metrics.connections_current >= self.settings.max_connections:
            connection.wsecho_state = _REJECTED  # type: ignore[attr-defined]
            self.metrics.rejected_total += 1
            self.metrics.handshake_failures_total += 1
            self.event(
                logging.WARNING,
                "rejected %s with HTTP 503: %d connections open (--max-connections)",
                _peer(connection),
                self.metrics.connections_current,
            )
            return _response(503, "text/plain; charset=utf-8", REJECT_BODY)
        return None

    async def _echo(self, connection: ServerConnection) -> None:
        connection.wsecho_state = _WEBSOCKET  # type: ignore[attr-defined]
        metrics = self.metrics
        metrics.connections_current += 1
        metrics.connections_total += 1
        try:
            # Text arrives as str (websockets validates UTF-8, 1007 otherwise) and leaves as text.
            async for message in connection:
                await connection.send(message)
                metrics.messages_total += 1
                # str.isascii() is O(1): only non-ASCII text pays for an encode to count bytes.
                metrics.bytes_total += (
                    len(message)
                    if isinstance(message, bytes) or message.isascii()
                    else len(message.encode())
                )
        except ConnectionClosed as exc:
            sent = exc.sent
            if sent is not None and sent.code not in (1000, 1001) and not exc.rcvd_then_sent:
                self.event(logging.WARNING, "closed %s with %s", _peer(connection), sent)
        finally:
            metrics.connections_current -= 1

    async def shutdown(self) -> None:
        assert self._server is not None
        # Stops accepting, answers pending handshakes 503, closes open connections with 1001 and
        # waits for them (each at most close_timeout).
        self._server.close(close_connections=True)
        await self._server.wait_closed()


def _peer(connection: ServerConnection) -> str:
    try:
        address: Any = connection.remote_address
        return f"{address[0]}:{address[1]}"
    except (OSError, TypeError, IndexError):
        return "?"
