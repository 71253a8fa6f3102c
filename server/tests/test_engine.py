"""The compiled hot path (wsecho._engine): the engine itself on socket pairs, then a running
wsecho whose established connections it serves, where everything it does not take (control
frames, fragments, pieces of frames, bad input) goes on, in order, on the Python path."""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from wsecho import hotpath
from wsecho._engine import CLOSED, HANDOVER, Engine
from wsecho.config import ConfigError, Settings

Service = Any  # conftest.Service (not importable under --import-mode=importlib)


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, key: bytes = b"\x01\x02\x03\x04"
) -> bytes:
    """A masked client frame."""
    size = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    head += bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + struct.pack("!H", size)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def echo(opcode: int, payload: bytes) -> bytes:
    """The server's unmasked frame of `payload`."""
    size = len(payload)
    head = bytes([0x80 | opcode])
    head += bytes([size]) if size < 126 else bytes([126]) + struct.pack("!H", size)
    return head + payload


@pytest.fixture
def pair() -> Iterator[tuple[Engine, socket.socket]]:
    """An engine holding one end of a socket pair; the test writes to and reads from the other."""
    engine = Engine(4096)
    held, peer = socket.socketpair()
    held.setblocking(False)
    peer.settimeout(5)
    engine.adopt(held.detach())
    yield engine, peer
    peer.close()
    for fd in engine.eject_all():
        os.close(fd)
    engine.close()


def serve(engine: Engine, peer: socket.socket, data: bytes) -> list[tuple[int, bytes, bytes, int]]:
    """Send `data` to the held end, let the engine serve it; what it ejected."""
    peer.sendall(data)
    time.sleep(0.01)  # a socket pair delivers at once; this only leaves room for the kernel
    return engine.poll()


def received(peer: socket.socket) -> bytes:
    try:
        return peer.recv(1 << 20, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


def test_engine_echoes_whole_small_frames_in_one_send(pair: tuple[Engine, socket.socket]) -> None:
    """Text, binary, a 16-bit length, several frames in one read: one echo each, in order."""
    engine, peer = pair
    frames = [(0x1, b"hello"), (0x2, bytes(range(125))), (0x1, b"x" * 3000), (0x1, "é€𝄞".encode())]
    assert serve(engine, peer, b"".join(frame(op, data) for op, data in frames)) == []
    assert received(peer) == b"".join(echo(op, data) for op, data in frames)
    assert (engine.messages, engine.bytes) == (4, sum(len(data) for _, data in frames))
    assert (engine.connections, engine.ejections) == (1, 0)


@pytest.mark.parametrize(
    "text",
    [
        b"\xc0\xaf",  # overlong "/"
        b"\xe0\x80\xaf",  # overlong, three bytes
        b"\xf0\x80\x80\xaf",  # overlong, four bytes
        b"\xed\xa0\x80",  # a surrogate
        b"\xf4\x90\x80\x80",  # beyond U+10FFFF
        b"\xf5\x80\x80\x80",
        b"\x80",  # a lone continuation byte
        b"ok\xe2\x82",  # a character cut short
        b"\xe2\x28\xa1",
        b"abcdefgh\xff",
    ],
)
def test_engine_hands_over_invalid_utf8(pair: tuple[Engine, socket.socket], text: bytes) -> None:
    """Invalid text is not echoed: the engine sends the echoes before it and hands the
    connection over from that frame on (the Python path then closes with 1007)."""
    engine, peer = pair
    bad = frame(0x1, text)
    ejected = serve(engine, peer, frame(0x1, b"fine") + bad)
    assert len(ejected) == 1
    assert ejected[0][1:] == (b"", bad, HANDOVER)
    assert received(peer) == echo(0x1, b"fine")
    assert (engine.connections, engine.ejections) == (0, 1)


@pytest.mark.parametrize(
    "text", [b"\xc2\x80", b"\xdf\xbf", b"\xe0\xa0\x80", b"\xed\x9f\xbf", b"\xf0\x90\x80\x80"]
)
def test_engine_echoes_valid_utf8_edges(pair: tuple[Engine, socket.socket], text: bytes) -> None:
    """The first and last code points of each UTF-8 length class stay on the hot path."""
    engine, peer = pair
    text.decode()  # valid, as Python says too
    assert serve(engine, peer, frame(0x1, text + b"\xf4\x8f\xbf\xbf")) == []
    assert received(peer) == echo(0x1, text + b"\xf4\x8f\xbf\xbf")


@pytest.mark.parametrize(
    "rest",
    [
        frame(0x9, b"ping"),  # a control frame
        frame(0x1, b"frag", fin=False),  # a fragment
        frame(0x1, b"piece")[:5],  # a piece of a frame
        frame(0x2, b"x" * 4097),  # beyond max_payload
        bytes([0x81, 0x05]) + b"plain",  # not masked
        bytes([0xC1, 0x85]) + b"\x00" * 9,  # a reserved bit
        bytes([0x82, 0xFF]) + b"\x00" * 12,  # a 64-bit length
    ],
    ids=["ping", "fragment", "piece", "too-big", "unmasked", "rsv", "64-bit"],
)
def test_engine_hands_over_what_is_not_its_own(
    pair: tuple[Engine, socket.socket], rest: bytes
) -> None:
    """Anything but a whole small data frame: the echoes so far are sent, the rest of the
    input goes back to Python untouched."""
    engine, peer = pair
    ejected = serve(engine, peer, frame(0x2, b"first") + rest)
    assert [item[1:] for item in ejected] == [(b"", rest, HANDOVER)]
    assert received(peer) == echo(0x2, b"first")
    assert engine.poll() == []  # it is not the engine's any more


def test_engine_hands_over_what_it_cannot_send() -> None:
    """A peer that does not read: when its socket is full, the echoes not sent go back to
    Python, after what was sent, in order."""
    engine = Engine(4096)
    held, peer = socket.socketpair()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    held.setblocking(False)
    engine.adopt(held.detach())
    try:
        payload = bytes(range(256)) * 4
        sent = 0
        ejected: list[tuple[int, bytes, bytes, int]] = []
        while not ejected and sent < 10_000:
            ejected = serve(engine, peer, frame(0x2, payload) * 8)
            sent += 8
        assert len(ejected) == 1
        fd, unsent, unparsed, reason = ejected[0]
        os.close(fd)
        assert (unparsed, reason) == (b"", HANDOVER)
        assert unsent
        peer.setblocking(False)
        got = b""
        while chunk := received(peer):
            got += chunk
        assert got + unsent == echo(0x2, payload) * sent
    finally:
        peer.close()
        engine.close()


def test_engine_reports_end_of_stream(pair: tuple[Engine, socket.socket]) -> None:
    engine, peer = pair
    peer.shutdown(socket.SHUT_WR)
    time.sleep(0.01)
    ejected = engine.poll()
    assert [(unsent, unparsed, reason) for _fd, unsent, unparsed, reason in ejected] == [
        (b"", b"", CLOSED)
    ]
    os.close(ejected[0][0])


def test_engine_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_payload"):
        Engine(70000)
    engine = Engine(10)
    with open(os.devnull, "rb") as file, pytest.raises(PermissionError):
        engine.adopt(file.fileno())  # epoll refuses a plain file
    assert engine.connections == 0
    engine.close()
    with pytest.raises(ValueError, match="closed"):
        engine.fileno()


def test_without_the_engine_auto_falls_back_and_compiled_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wsecho built without its extension (or for another Python): auto says why it runs
    the Python hot path; --hot-path compiled is a clear usage error."""
    monkeypatch.setitem(sys.modules, "wsecho._engine", None)  # import now raises ImportError
    choice = hotpath.choose(Settings())
    assert (choice.name, choice.engine) == ("python", None)
    assert "wsecho._engine cannot be imported" in choice.why
    with pytest.raises(ConfigError, match="--hot-path compiled: the engine"):
        hotpath.choose(Settings(hot_path="compiled"))
    assert hotpath.choose(Settings(hot_path="python")).name == "python"


@pytest.fixture(scope="module", params=["picows-compiled"])
def compiled(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    shared_service_factory: Callable[..., Iterator[Service]],
) -> Iterator[Service]:
    """A wsecho on the compiled hot path, with a 4 KiB message limit."""
    yield from shared_service_factory(request, tmp_path_factory, "--max-message-size", "4096")


def counts(service: Service) -> tuple[float, float, float]:
    """(held by the engine, ejected so far, open connections) from /metrics."""
    values = service.metrics()
    assert values['wsecho_hot_path_info{hot_path="compiled"}'] == 1
    return (
        values["wsecho_hot_path_connections"],
        values["wsecho_hot_path_ejections_total"],
        values["wsecho_connections_current"],
    )


def wait_for_counts(service: Service, expected: tuple[float, float, float]) -> None:
    deadline = time.monotonic() + 5
    while counts(service) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert counts(service) == expected


def test_service_echoes_on_the_engine(compiled: Service, raw_client: Any) -> None:
    """An upgraded connection is the engine's; its small frames never leave it."""
    held, ejected, current = counts(compiled)
    with raw_client(compiled.port) as client:
        for opcode, payload in [(0x1, b"hi"), (0x2, b"\x00\xff" * 1000), (0x1, "€".encode())]:
            client.send_frame(opcode, payload)
            assert client.recv_frame() == (opcode, payload)
        assert counts(compiled) == (held + 1, ejected, current + 1)
    wait_for_counts(compiled, (held, ejected + 1, current))  # the end of stream


def test_service_continues_in_python_in_order(compiled: Service, raw_client: Any) -> None:
    """Hot frames, then a ping, a fragmented message, a frame in two pieces and a close, in
    one stream: every answer in order; the connection left the engine at the ping."""
    held, ejected, current = counts(compiled)
    with raw_client(compiled.port) as client:
        client.sock.sendall(
            frame(0x1, b"one")
            + frame(0x9, b"ping")
            + frame(0x1, b"two")
            + frame(0x1, b"fr", fin=False)
            + frame(0x0, b"ag")
        )
        assert [client.recv_frame() for _ in range(4)] == [
            (0x1, b"one"),
            (0xA, b"ping"),
            (0x1, b"two"),
            (0x1, b"frag"),
        ]
        assert counts(compiled) == (held, ejected + 1, current + 1)
        split = frame(0x2, b"x" * 300)
        client.sock.sendall(split[:100])
        time.sleep(0.05)
        client.sock.sendall(split[100:])
        assert client.recv_frame() == (0x2, b"x" * 300)
        client.send_frame(0x8, (1000).to_bytes(2, "big"))
        assert client.recv_close_code() == 1000
        assert client.closed_by_server()
    wait_for_counts(compiled, (held, ejected + 1, current))


def test_service_splits_a_frame_over_two_reads(compiled: Service, raw_client: Any) -> None:
    """A frame the engine gets in two pieces is echoed once, whole, by the Python path."""
    held, ejected, current = counts(compiled)
    with raw_client(compiled.port) as client:
        data = frame(0x1, b"y" * 1000) + frame(0x1, b"z" * 10)
        client.sock.sendall(frame(0x1, b"before") + data[:500])
        assert client.recv_frame() == (0x1, b"before")
        time.sleep(0.05)
        client.sock.sendall(data[500:])
        assert client.recv_frame() == (0x1, b"y" * 1000)
        assert client.recv_frame() == (0x1, b"z" * 10)
        assert counts(compiled) == (held, ejected + 1, current + 1)


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (frame(0x1, b"\xed\xa0\x80"), 1007),
        (bytes([0x81, 0x02]) + b"no", 1002),
        (frame(0x2, b"x" * 4097), 1009),
    ],
    ids=["invalid-utf8", "unmasked", "too-big"],
)
def test_service_fails_bad_frames_after_hot_ones(
    compiled: Service, raw_client: Any, bad: bytes, code: int
) -> None:
    """The hot frames before a bad one are echoed, then the close code of the Python path."""
    with raw_client(compiled.port) as client:
        client.sock.sendall(frame(0x1, b"good") + frame(0x2, b"also") + bad)
        assert client.recv_frame() == (0x1, b"good")
        assert client.recv_frame() == (0x2, b"also")
        assert client.recv_close_code() == code


def test_service_signal_closes_engine_connections_with_1001(
    start_service: Callable[..., Service], raw_client: Any
) -> None:
    """SIGTERM: the engine's connections get close 1001 like the others; exit 0 within 5 s."""
    service = start_service("picows", "--hot-path", "compiled")
    clients = [raw_client(service.port) for _ in range(10)]
    for client in clients:
        client.send_frame(0x1, b"hello")
        assert client.recv_frame() == (0x1, b"hello")
    assert counts(service) == (10, 0, 10)
    started = time.monotonic()
    service.proc.send_signal(signal.SIGTERM)
    for client in clients:
        assert client.recv_close_code() == 1001
        client.send_frame(0x8, (1001).to_bytes(2, "big"))
        client.sock.close()
    assert service.proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    assert "closed 10 open connections with 1001" in service.log()
    assert "served 10 connections, 10 messages, 50 bytes" in service.log()
