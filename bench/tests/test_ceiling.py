"""The ceiling server (bench/ceiling/ws_echo.c) builds and speaks RFC 6455 over loopback."""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import _benchlib
import pytest
from _benchlib import BenchError, ensure_ceiling
from websockets.sync.client import ClientConnection, connect

# The example of RFC 6455 section 1.3.
RFC_KEY, RFC_ACCEPT = "dGhlIHNhbXBsZSBub25jZQ==", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    """A ceiling server built from source, listening on a free loopback port."""
    proc = subprocess.Popen(
        [str(ensure_ceiling()), "0", "127.0.0.1"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        yield int(json.loads(line)["listening"])
        assert proc.poll() is None, "the ceiling server died during the tests"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def ws(port: int) -> Iterator[ClientConnection]:
    with connect(f"ws://127.0.0.1:{port}/", max_size=None, open_timeout=10) as conn:
        yield conn


def raw_upgrade(port: int, key: str = RFC_KEY) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, f"closed during the handshake after {head!r}"
        head += chunk
    return sock, head


def recv_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_handshake_accept_value_is_rfc_6455s(port: int) -> None:
    """The Sec-WebSocket-Accept of the RFC's own example key (SHA-1 and base64 in C)."""
    sock, head = raw_upgrade(port)
    with sock:
        assert head.startswith(b"HTTP/1.1 101 ")
        assert f"Sec-WebSocket-Accept: {RFC_ACCEPT}\r\n".encode() in head


@pytest.mark.parametrize(
    "message",
    ['{"timestamp": 1732550400000}', "", "é" * 200, b"\x00\xff" * 40_000, os.urandom(70_000)],
    ids=["2017-text", "empty", "utf8-16bit-length", "binary-16bit-length", "binary-64bit-length"],
)
def test_echoes_text_and_binary(ws: ClientConnection, message: str | bytes) -> None:
    """Text comes back as text, binary as binary, at every length encoding."""
    ws.send(message)
    assert ws.recv(timeout=10) == message


def test_many_messages_in_one_read_and_in_order(ws: ClientConnection) -> None:
    """Frames that arrive together are all answered, in order."""
    for i in range(200):
        ws.send(f"m{i}")
    assert [ws.recv(timeout=10) for _ in range(200)] == [f"m{i}" for i in range(200)]


def test_fragmented_message_comes_back_whole(ws: ClientConnection) -> None:
    ws.send(["frag", "mented"])
    assert ws.recv(timeout=10) == "fragmented"


def test_ping_gets_pong(ws: ClientConnection) -> None:
    assert ws.ping(b"are you there").wait(10)


def test_close_is_answered_with_the_same_code(port: int) -> None:
    with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as conn:
        conn.close(code=4001, reason="done")
        assert conn.protocol.close_rcvd is not None
        assert conn.protocol.close_rcvd.code == 4001


def test_unmasked_client_frame_is_a_protocol_error(port: int) -> None:
    sock, head = raw_upgrade(port)
    with sock:
        assert head.startswith(b"HTTP/1.1 101 ")
        sock.sendall(b"\x81\x02hi")  # text "hi" without the mask bit
        assert recv_all(sock) == b"\x88\x02" + struct.pack("!H", 1002)


def test_request_without_upgrade_gets_400_and_the_server_stays_up(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert recv_all(sock).startswith(b"HTTP/1.1 400 ")
    with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as conn:
        conn.send("still here")
        assert conn.recv(timeout=10) == "still here"


def test_client_vanishing_mid_frame_does_not_hurt_others(port: int) -> None:
    sock, _ = raw_upgrade(port)
    sock.sendall(b"\x82\xfe\x10\x00" + b"\x00" * 100)  # announces 4096 bytes, sends 100
    sock.close()
    with connect(f"ws://127.0.0.1:{port}/", open_timeout=10) as conn:
        conn.send(b"x")
        assert conn.recv(timeout=10) == b"x"


def test_a_failing_compiler_is_reported_with_its_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No half-built binary is left behind, and the error says which compiler failed."""
    compiler = tmp_path / "cc-that-fails"
    compiler.write_text("#!/bin/sh\necho 'cc: no space left on device' >&2\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", str(compiler))
    monkeypatch.setattr(_benchlib, "CEILING_CACHE", tmp_path / "cache")
    expected = r"cc-that-fails could not build ws_echo\.c:\ncc: no space left on device"
    with pytest.raises(BenchError, match=expected):
        ensure_ceiling()
    assert list((tmp_path / "cache").iterdir()) == []
