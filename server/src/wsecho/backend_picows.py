"""The picows backend (default): the lean path of wsecho's own, with picows behind it.

Every connection starts on a lean connection (`wsecho.lean`), accepted by wsecho's own accept
loop (`wsecho.accept`); requests outside the lean path's strict subset are handed to picows
(`wsecho.picows_fallback`), which gives upgraded connections back. This server keeps both sets of
connections: /metrics counts, --max-connections and the 1001 close on shutdown come from there.

With the compiled hot path (`wsecho.hotpath`), a connection that the accept loop upgrades at
once goes to the engine (`wsecho._engine.Engine`) without a transport; the engine's epoll
descriptor is one reader of the loop, and each time it is readable one call serves every ready
connection. A connection the engine ejects gets its transport and lean connection then, and
stays on the Python path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import TYPE_CHECKING

from wsecho.accept import Acceptor, listening_sockets
from wsecho.common import CLOSE_TIMEOUT, EventLog
from wsecho.config import Settings
from wsecho.frames import CLOSE_GOING_AWAY
from wsecho.hotpath import choose
from wsecho.lean import LeanConnection, lean_class
from wsecho.metrics import Metrics
from wsecho.picows_fallback import PicowsConnection, block_aiofastnet, hand_over

if TYPE_CHECKING:
    from wsecho._engine import Engine

log = logging.getLogger("wsecho.picows")

# Bursts of connects (1,000/s ramps) must not overflow the accept queue.
BACKLOG = 4096


class PicowsServer:
    """A running picows echo server: the host of its lean and its picows connections."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.event = EventLog(log)
        # Connections in picows: handshakes, plain HTTP requests, the rare ones that stay.
        self.protocols: set[PicowsConnection] = set()
        # Connections on the lean path (open, or in their handshake).
        self.lean: set[LeanConnection] = set()
        self.lean_type = lean_class(self, settings, metrics)
        self._acceptor: Acceptor | None = None
        self._running = contextlib.ExitStack()
        self.engine: Engine | None = None  # with the compiled hot path
        self._engine_closed = -1  # the reason the engine gives for a connection found closed

    def delegate(self, tcp: asyncio.Transport, head: bytes) -> None:
        hand_over(self, tcp, head)

    def adopt(self, tcp: asyncio.Transport) -> None:
        lean = self.lean_type()
        lean.adopt_open(tcp)
        tcp.set_protocol(lean)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._running.enter_context(block_aiofastnet())
        settings = self.settings
        hot = choose(settings)
        self.metrics.hot_path = hot.name
        hold = None
        if hot.engine is not None:
            # The engine echoes frames of up to 65,535 bytes (a 16-bit length) itself.
            self.engine = hot.engine.Engine(min(settings.max_message_size, 65535))
            self.metrics.engine = self.engine
            self._engine_closed = hot.engine.CLOSED
            loop.add_reader(self.engine.fileno(), self._engine_ready)
            hold = self._hold
        sockets = listening_sockets(
            settings.host, settings.port, backlog=BACKLOG, reuse_port=settings.workers > 1
        )
        self._acceptor = Acceptor(loop, self.lean_type, sockets, hold)
        self._acceptor.start()

    def _hold(self, conn: socket.socket) -> None:
        """Give an accepted connection, open with nothing pending, to the engine."""
        assert self.engine is not None
        fd = conn.detach()
        try:
            self.engine.adopt(fd)
        except OSError as exc:
            os.close(fd)
            self.metrics.connections_current -= 1
            self.event(logging.WARNING, "cannot hold a connection in the engine: %s", exc)

    def hold(self, fd: int) -> bool:
        if self.engine is None:
            return False
        try:
            held = os.dup(fd)
        except OSError:
            return False
        try:
            self.engine.adopt(held)
        except OSError:
            os.close(held)
            return False
        return True

    def _engine_ready(self) -> None:
        """Serve the engine's ready connections; continue the ejected ones in Python."""
        assert self.engine is not None
        for fd, unsent, unparsed, reason in self.engine.poll():
            if reason == self._engine_closed:  # end of stream or a socket error
                os.close(fd)
                self.metrics.connections_current -= 1
            else:
                self._take_over(fd, unsent, unparsed)

    def _take_over(self, fd: int, unsent: bytes, unparsed: bytes) -> asyncio.Task[object]:
        """A lean connection on a transport, from the engine's connection `fd` on."""
        assert self._acceptor is not None
        lean = self.lean_type()
        lean.take_over(unsent, unparsed)
        return self._acceptor.attach(socket.socket(fileno=fd), lean)

    @property
    def ports(self) -> list[int]:
        assert self._acceptor is not None
        return self._acceptor.ports

    async def shutdown(self) -> None:
        assert self._acceptor is not None
        self._acceptor.close()
        if self.engine is not None:
            # The engine's connections close like the others: on a transport, in Python.
            asyncio.get_running_loop().remove_reader(self.engine.fileno())
            taken = [self._take_over(fd, b"", b"") for fd in self.engine.eject_all()]
            await asyncio.gather(*taken, return_exceptions=True)
        for conn in list(self.lean):
            if conn.is_open:
                conn.close_with(CLOSE_GOING_AWAY, b"server shutting down")
            else:
                conn.abort()  # a handshake in progress
        for proto in list(self.protocols):
            proto.close_going_away()
        # Give clients a moment to answer the close frame, then drop whoever has not.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CLOSE_TIMEOUT
        while (self.protocols or self.lean) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.lean):
            conn.abort()
        for proto in list(self.protocols):
            proto.abort()
        await asyncio.sleep(0)  # let connection_lost callbacks run
        if self.engine is not None:
            self.engine.close()
        self._running.close()
