"""Accepting: a busy server takes every queued connection at once, on uvloop and on asyncio.

uvloop's own create_server accepts one connection per loop iteration; a saturated echo server
then answers a ramp's upgrades seconds late (see wsecho.accept). These tests count loop
iterations, not seconds: the kernel completes the TCP handshakes of QUEUED clients while the
server's loop is not running, then the loop gets a few iterations and must have taken them all.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop
from wsecho import accept
from wsecho.backend_picows import PicowsServer
from wsecho.config import Settings
from wsecho.metrics import Metrics

QUEUED = 200
ITERATIONS = 6  # readiness, accept, transport, connection_made, with room to spare

LOOPS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {
    "uvloop": uvloop.run,
    "asyncio": asyncio.run,
}


async def _iterations(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_every_queued_connection_is_accepted_within_a_few_iterations(loop_name: str) -> None:
    async def scenario() -> None:
        server = PicowsServer(Settings(host="127.0.0.1", port=0), Metrics())
        await server.start()
        port = server.ports[0]
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(QUEUED)]
        try:
            await _iterations(ITERATIONS)
            assert len(server.lean) == QUEUED
        finally:
            for client in clients:
                client.close()
            await server.shutdown()

    LOOPS[loop_name](scenario())


def test_accepted_connections_are_served() -> None:
    """An accepted socket becomes a working WebSocket connection (upgrade and echo)."""

    async def scenario() -> None:
        server = PicowsServer(Settings(host="127.0.0.1", port=0), Metrics())
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.ports[0])
        try:
            writer.write(
                b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            assert head.startswith(b"HTTP/1.1 101")
            assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # RFC 6455 1.3's example
            writer.write(b"\x81\x82" + b"\x00\x00\x00\x00" + b"hi")  # masked with a zero key
            assert await asyncio.wait_for(reader.readexactly(4), 10) == b"\x81\x02hi"
        finally:
            writer.close()
            await server.shutdown()

    uvloop.run(scenario())


def test_listening_on_a_port_in_use_names_the_address() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=rf"cannot listen on \('127.0.0.1', {port}\)") as info:
            accept.listening_sockets("127.0.0.1", port, backlog=16)
        assert info.value.errno == errno.EADDRINUSE


def test_out_of_file_descriptors_pauses_accepting_and_loses_nothing(
    start_service: Callable[..., Any], raw_client: Any
) -> None:
    """A real EMFILE: wsecho limited to 40 file descriptors (room for ~25 connections) gets 40
    upgrades. It serves what it can, says why it cannot accept the rest, and once clients leave
    it serves the queued ones: none is dropped."""
    # util-linux's prlimit runs wsecho with these limits.
    service = start_service("picows", wrapper=["prlimit", "--nofile=40:40"])
    clients = [raw_client(service.port, handshake=False) for _ in range(40)]
    try:
        for client in clients:
            client.send_upgrade()
        output = service.wait_for_log("cannot accept connections")
        assert "Too many open files" in output
        # The kernel queues connections in order: the first 20 were served. Their leaving frees
        # descriptors for the queued ones.
        for client in clients[:20]:
            assert client.read_http_head()[0].startswith("HTTP/1.1 101")
            client.sock.close()
        for client in clients[20:]:  # served after the pause, not dropped
            assert client.read_http_head()[0].startswith("HTTP/1.1 101")
    finally:
        for client in clients:
            client.sock.close()


UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def _waiting(sock: socket.socket) -> bytes:
    """What the server has sent to `sock` so far, without waiting."""
    try:
        return sock.recv(65536, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


@pytest.mark.parametrize("hot_path", ["compiled", "python"])
@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_queued_upgrade_is_answered_at_the_accept(loop_name: str, hot_path: str) -> None:
    """Requests already waiting when their connection is accepted: a plain upgrade gets its
    101 from the accept itself, before the loop makes the transport (a saturated uvloop makes
    it an iteration of up to 48 x 1,024 connections later), and goes to the compiled engine
    when it runs; a /healthz request and a partial upgrade are left for the transport. Then
    every one is served as usual."""

    async def scenario() -> None:
        metrics = Metrics()
        settings = Settings(host="127.0.0.1", port=0, hot_path=hot_path)
        server = PicowsServer(settings, metrics)
        await server.start()
        assert server._acceptor is not None
        listener = server._acceptor.sockets[0]
        port = server.ports[0]
        upgrades = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        health = socket.create_connection(("127.0.0.1", port))
        partial = socket.create_connection(("127.0.0.1", port))
        clients = [*upgrades, health, partial]
        try:
            for client in upgrades:
                client.sendall(UPGRADE)
            health.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            partial.sendall(UPGRADE[:40])
            server._acceptor._ready(listener)  # the listener's readiness, nothing else yet
            for client in upgrades:
                assert _waiting(client).startswith(b"HTTP/1.1 101")
            assert metrics.connections_current == 3
            assert _waiting(health) == _waiting(partial) == b""
            if server.engine is not None:  # the compiled hot path holds them already
                assert server.engine.connections == 3

            partial.sendall(UPGRADE[40:])
            await _iterations(ITERATIONS)
            # /healthz went to picows; the compiled engine holds every upgraded connection
            held = 4 if hot_path == "compiled" else 0
            assert len(server.lean) == 4 - held
            assert (server.engine.connections if server.engine else 0) == held
            health.settimeout(10)
            assert health.recv(65536).startswith(b"HTTP/1.1 200")
            partial.settimeout(10)
            assert partial.recv(65536).startswith(b"HTTP/1.1 101")
            for client in (upgrades[0], partial):
                client.sendall(b"\x81\x82" + b"\x00\x00\x00\x00" + b"hi")
            await _iterations(ITERATIONS)
            for client in (upgrades[0], partial):
                assert _waiting(client) == b"\x81\x02hi"
            assert metrics.connections_current == 4
        finally:
            await server.shutdown()  # first: asyncio's write_eof fails on a vanished peer
            for client in clients:
                client.close()

    LOOPS[loop_name](scenario())
