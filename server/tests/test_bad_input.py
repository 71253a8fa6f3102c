"""Bad input against a real running service, on both backends: each gets the protocol's answer,
and the service keeps serving other clients (checked after every case)."""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

Service = Any  # conftest.Service (not importable under --import-mode=importlib)
LIMIT = 4096  # --max-message-size of these tests, small so that limits are cheap to hit


@pytest.fixture(scope="module", params=["picows", "picows-python", "websockets"])
def limited(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    shared_service_factory: Callable[..., Iterator[Service]],
) -> Iterator[Service]:
    """A service with a 4 KiB message limit and a 1 s handshake timeout, shared by the module."""
    yield from shared_service_factory(
        request, tmp_path_factory, "--max-message-size", str(LIMIT), "--handshake-timeout", "1"
    )


@pytest.fixture(autouse=True)
def still_serving(limited: Service) -> Iterator[None]:
    """After every case: the service still answers /healthz and echoes for a new client."""
    yield
    limited.assert_serving()


def _http_status(port: int, request: bytes) -> str:
    """Send raw bytes as an HTTP request; return the status line ("" if the server hangs up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request)
        response = b""
        try:
            while b"\r\n" not in response:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                response += chunk
        except ConnectionResetError:
            pass
        return response.split(b"\r\n", 1)[0].decode(errors="replace")


def test_garbage_request_line(limited: Service) -> None:
    """Random bytes and a nonsense request line get HTTP 400 (or a hang-up), nothing else."""
    status = _http_status(limited.port, b"\x16\x03\x01\x02\x00 BLAH\r\n\r\n")
    assert status == "" or status.startswith("HTTP/1.1 400"), status
    status = _http_status(limited.port, b"HELLO THERE\r\n\r\n")
    assert status == "" or status.startswith("HTTP/1.1 400"), status
    assert limited.metrics()["wsecho_handshake_failures_total"] >= 2


def test_endless_request_head_is_cut_off(limited: Service) -> None:
    """A request head that never ends (64 KiB of headers, no blank line) is not buffered without
    bound: the server answers 4xx or hangs up, and counts a failed handshake."""
    before = limited.metrics()["wsecho_handshake_failures_total"]
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as sock:
        head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        try:
            sock.sendall(head)
            for i in range(64):
                sock.sendall(b"X-Filler-%d: %b\r\n" % (i, b"x" * 1000))
            response = sock.recv(4096)
        except (ConnectionResetError, BrokenPipeError):
            response = b""
    assert response == b"" or response.startswith((b"HTTP/1.1 4", b"HTTP/1.0 4")), response[:80]
    deadline = time.monotonic() + 5
    while limited.metrics()["wsecho_handshake_failures_total"] < before + 1:
        assert time.monotonic() < deadline, "the cut-off request is not counted"
        time.sleep(0.05)


def test_http_request_without_upgrade(limited: Service) -> None:
    """A plain GET of the WebSocket path is refused with a 4xx status."""
    status = _http_status(limited.port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert status.startswith(("HTTP/1.1 400", "HTTP/1.1 426")), status


def test_bad_sec_websocket_key(limited: Service, raw_client: Any) -> None:
    """A key that is not 16 base64-encoded bytes fails the handshake with 400."""
    with raw_client(limited.port, handshake=False) as client:
        status, _ = client.handshake(key="not a valid key!")
        assert status.startswith("HTTP/1.1 400"), status


def test_unmasked_client_frame_gets_1002(limited: Service, raw_client: Any) -> None:
    """Client frames must be masked (RFC 6455 5.1)."""
    with raw_client(limited.port) as client:
        client.send_frame(0x1, b"hello", mask=False)
        assert client.recv_close_code() == 1002


def test_reserved_bits_get_1002(limited: Service, raw_client: Any) -> None:
    """RSV bits without a negotiated extension are a protocol error."""
    with raw_client(limited.port) as client:
        client.send_frame(0x1, b"hello", rsv=0b100)
        assert client.recv_close_code() == 1002


@pytest.mark.parametrize(
    "payload", [b"\xff\xfe", b"caf\xc3", "surrogate \ud800".encode("utf-8", "surrogatepass")]
)
def test_invalid_utf8_text_gets_1007(limited: Service, raw_client: Any, payload: bytes) -> None:
    """Text messages must be valid UTF-8."""
    with raw_client(limited.port) as client:
        client.send_frame(0x1, payload)
        assert client.recv_close_code() == 1007


def test_invalid_utf8_in_fragments_gets_1007(limited: Service, raw_client: Any) -> None:
    """Invalid UTF-8 split over fragments is caught too."""
    with raw_client(limited.port) as client:
        client.send_frame(0x1, b"valid so far \xce", fin=False)
        client.send_frame(0x0, b"\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5", fin=False)
        client.send_frame(0x0, b"\xed\xa0\x80", fin=True)  # a UTF-16 surrogate: invalid
        assert client.recv_close_code() == 1007


def test_frame_over_size_limit_gets_1009(limited: Service, raw_client: Any) -> None:
    """One frame larger than --max-message-size: close 1009."""
    with raw_client(limited.port) as client:
        at_limit = os.urandom(LIMIT)
        client.send_frame(0x2, at_limit)
        assert client.recv_frame() == (0x2, at_limit)  # at the limit: echoed
        client.send_frame(0x2, os.urandom(LIMIT + 1))
        assert client.recv_close_code() == 1009


def test_fragments_over_size_limit_get_1009(limited: Service, raw_client: Any) -> None:
    """Fragments each under the limit but together over it: close 1009."""
    with raw_client(limited.port) as client:
        for opcode in (0x2, 0x0, 0x0, 0x0):
            client.send_frame(opcode, os.urandom(LIMIT // 4), fin=False)
        client.send_frame(0x0, b"x", fin=True)
        assert client.recv_close_code() == 1009


def test_protocol_violations_get_1002(limited: Service, raw_client: Any) -> None:
    """A stray continuation, a new message inside a fragmented one, a bad opcode, a bad close."""
    violations = [
        [raw_client.frame(0x0, b"continuation of nothing")],
        [raw_client.frame(0x1, b"first", fin=False), raw_client.frame(0x1, b"second")],
        [raw_client.frame(0x3, b"reserved opcode")],
        [raw_client.frame(0x9, b"fragmented ping", fin=False)],
        [raw_client.frame(0x8, struct.pack("!H", 1006))],  # 1006 must never be sent
        [raw_client.frame(0x8, struct.pack("!H", 999))],
    ]
    for frames in violations:
        with raw_client(limited.port) as client:
            client.sock.sendall(b"".join(frames))
            assert client.recv_close_code() == 1002, frames


def test_two_close_frames_in_one_read(limited: Service, raw_client: Any) -> None:
    """Close, close: the first is echoed (1000), the second ignored (Autobahn 7.1.2)."""
    with raw_client(limited.port) as client:
        client.sock.sendall(
            raw_client.frame(0x8, struct.pack("!H", 1000)) + raw_client.frame(0x8, b"")
        )
        assert client.recv_close_code() == 1000
        assert client.closed_by_server()


def test_close_inside_fragmented_message(limited: Service, raw_client: Any) -> None:
    """Fragment, close, fragment: a normal close, the partial message dropped (Autobahn 7.1.5)."""
    with raw_client(limited.port) as client:
        client.sock.sendall(
            raw_client.frame(0x1, b"frag", fin=False)
            + raw_client.frame(0x8, struct.pack("!H", 1000))
            + raw_client.frame(0x0, b"ment")
        )
        assert client.recv_close_code() == 1000


def test_unfinished_handshake_is_released_after_the_timeout(limited: Service) -> None:
    """A client that never completes its request is dropped after --handshake-timeout (1 s)."""
    before = limited.metrics()["wsecho_handshake_failures_total"]
    with socket.create_connection(("127.0.0.1", limited.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")  # no end
        started = time.monotonic()
        try:
            while sock.recv(4096):
                pass
        except ConnectionResetError:
            pass
        waited = time.monotonic() - started
    assert 0.5 < waited < 5, waited
    assert limited.metrics()["wsecho_handshake_failures_total"] == before + 1


def test_thousands_of_abrupt_resets(limited: Service, raw_client: Any) -> None:
    """2,000 connections reset (RST) at every stage: before, during and after the handshake,
    in the middle of a frame; the service stays up and forgets them all."""
    linger_rst = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
    request = (
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    half_frame = raw_client.frame(0x2, os.urandom(1000))[:500]
    for i in range(2000):
        sock = socket.create_connection(("127.0.0.1", limited.port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_rst)
        stage = i % 4
        if stage >= 1:
            sock.sendall(request[: len(request) // 2] if stage == 1 else request)
        if stage == 3:
            sock.recv(4096)  # the 101 response
            sock.sendall(half_frame)
        sock.close()
    deadline = time.monotonic() + 10
    while limited.metrics()["wsecho_connections_current"] != 0:
        assert time.monotonic() < deadline, "reset connections are still counted as open"
        time.sleep(0.1)


def test_peer_that_stops_reading(limited: Service, raw_client: Any) -> None:
    """A client that sends but never reads its echoes: the server stops reading from it (its data
    waits in the kernel buffers) instead of queueing echoes without bound, and serves others."""
    rss_before = limited.metrics()["wsecho_process_resident_memory_bytes"]
    with raw_client(limited.port) as stalled:
        stalled.sock.setblocking(False)
        frame = raw_client.frame(0x2, os.urandom(LIMIT))
        pushed = 0
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline and pushed < 512 * 1024 * 1024:
            try:
                # Resume where the last partial send stopped, so the frames stay well-formed.
                pushed += stalled.sock.send(frame[pushed % len(frame) :])
            except BlockingIOError:
                time.sleep(0.01)
        # Only socket buffers (a few MiB each way on loopback) and a bounded write buffer could
        # take data; unbounded queueing would have taken all 1.5 s worth (hundreds of MiB).
        assert pushed < 64 * 1024 * 1024, pushed
        limited.assert_serving()  # others are served while the stalled peer stays connected
        rss_after = limited.metrics()["wsecho_process_resident_memory_bytes"]
        assert rss_after - rss_before < 48 * 1024 * 1024, (rss_before, rss_after)
