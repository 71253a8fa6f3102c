"""The picows backend (default): the lean path of wsecho's own, with picows behind it.

Every connection starts on a lean connection (`wsecho.lean`), accepted by wsecho's own accept
loop (`wsecho.accept`); requests outside the lean path's strict subset are handed to picows
(`wsecho.picows_fallback`), which gives upgraded connections back. This server keeps both sets of
connections: /metrics counts, --max-connections and the 1001 close on shutdown come from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from wsecho.accept import Acceptor, listening_sockets
from wsecho.common import CLOSE_TIMEOUT, EventLog
from wsecho.config import Settings
from wsecho.frames import CLOSE_GOING_AWAY
from wsecho.lean import LeanConnection, lean_class
from wsecho.metrics import Metrics
from wsecho.picows_fallback import PicowsConnection, block_aiofastnet, hand_over

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
        sockets = listening_sockets(
            settings.host, settings.port, backlog=BACKLOG, reuse_port=settings.workers > 1
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
        self._running.close()
