"""Listening sockets whose accept loop takes every pending connection at once.

Why not `loop.create_server`: uvloop's libuv (1.52 in uvloop 0.23) accepts **one** connection per
listening socket per loop iteration. A busy echo server's iteration serves every open
connection, so an iteration takes tens of milliseconds at 10,000 connections (and ~150 ms with a
few hundred in a VM under TCG), and accepting trails any ramp faster than one connection per
iteration: the accept queue grows, upgrades wait for seconds and clients time out (figures:
server/README.md, "Design"). asyncio's own loop accepts up to its backlog per readiness event;
this module does the same on any loop, with `connect_accepted_socket` turning each accepted
socket into the loop's own transport (uvloop's, with its shared read buffer).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from functools import partial

log = logging.getLogger("wsecho")

# Connections accepted per readiness event at most: a connect flood must not keep the loop from
# the open connections for long. The kernel keeps the rest queued for the next iteration.
ACCEPT_BATCH = 512
# After EMFILE and the like the queue is left alone this long (asyncio does the same).
ACCEPT_RETRY_DELAY = 1.0
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def listening_sockets(
    host: str, port: int, backlog: int, *, reuse_port: bool = False
) -> list[socket.socket]:
    """Non-blocking listening sockets for every address of `host` (as asyncio binds them);
    with `reuse_port`, other processes' sockets share the port and the kernel spreads new
    connections over them (SO_REUSEPORT)."""
    infos = socket.getaddrinfo(
        host, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _name, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                # One socket per family, as asyncio does: no IPv4-mapped addresses on this one.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot listen on {address!r}: {exc.strerror}") from exc
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Acceptor:
    """Accepts connections on `sockets` and gives each to a new protocol of `factory`; with
    `hold`, a connection whose protocol's `answer_early` answered it completely goes to `hold`
    instead (it owns the socket then; no transport is made)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        factory: Callable[[], asyncio.BaseProtocol],
        sockets: list[socket.socket],
        hold: Callable[[socket.socket], None] | None = None,
    ) -> None:
        self._loop = loop
        self._factory = factory
        self._hold = hold
        self.sockets = sockets
        # connect_accepted_socket is a coroutine: its tasks live here until the transport exists.
        self._pending: set[asyncio.Task[object]] = set()
        self._serving = False

    def start(self) -> None:
        self._serving = True
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._ready, sock)

    def close(self) -> None:
        """Stop accepting and close the listening sockets (open connections stay)."""
        if self._serving:
            self._serving = False
            for sock in self.sockets:
                self._loop.remove_reader(sock.fileno())
        for sock in self.sockets:
            sock.close()
        for task in list(self._pending):
            task.cancel()

    @property
    def ports(self) -> list[int]:
        return [sock.getsockname()[1] for sock in self.sockets]

    def _ready(self, listener: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return  # the queue is empty
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                log.error(
                    "cannot accept connections (%s): retrying in %g s (the kernel queues them)",
                    exc.strerror,
                    ACCEPT_RETRY_DELAY,
                )
                self._loop.remove_reader(listener.fileno())
                self._loop.call_later(ACCEPT_RETRY_DELAY, self._resume, listener)
                return
            conn.setblocking(False)
            protocol = self._factory()
            # A protocol that can answer a request already waiting in the socket does so now:
            # the loop makes the transport (and so calls data_received) only an iteration later.
            answer_early = getattr(protocol, "answer_early", None)
            if answer_early is not None and answer_early(conn) and self._hold is not None:
                self._hold(conn)
                continue
            self.attach(conn, protocol)

    def attach(self, conn: socket.socket, protocol: asyncio.BaseProtocol) -> asyncio.Task[object]:
        """Serve the connected socket `conn` with `protocol` on a transport of the loop; the task
        that makes the transport."""
        task = self._loop.create_task(
            self._loop.connect_accepted_socket(partial(_same, protocol), conn)
        )
        self._pending.add(task)
        task.add_done_callback(partial(self._accepted, conn, protocol))
        return task

    def _resume(self, listener: socket.socket) -> None:
        if self._serving and listener.fileno() >= 0:
            self._loop.add_reader(listener.fileno(), self._ready, listener)

    def _accepted(
        self, conn: socket.socket, protocol: asyncio.BaseProtocol, task: asyncio.Task[object]
    ) -> None:
        self._pending.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is None and not task.cancelled():
            return  # the connection has its transport
        conn.close()
        if exc is not None:  # e.g. the client reset the connection before it got a transport
            log.debug("accepted connection lost before it was served: %r", exc)
        if getattr(protocol, "is_open", False):  # answered early: it counts as open until lost
            protocol.connection_lost(exc if isinstance(exc, Exception) else None)


def _same(protocol: asyncio.BaseProtocol) -> asyncio.BaseProtocol:
    """The protocol factory of one accepted connection: its protocol, made at the accept."""
    return protocol
