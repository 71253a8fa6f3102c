"""The service with well-behaved clients, on both backends (real processes on loopback)."""

from __future__ import annotations

import base64
import json
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

Service = Any  # conftest.Service (not importable under --import-mode=importlib)

METRIC_NAMES = (
    "wsecho_connections_current",
    "wsecho_connections_total",
    "wsecho_messages_total",
    "wsecho_bytes_total",
    "wsecho_handshake_failures_total",
    "wsecho_process_resident_memory_bytes",
)


def test_text_and_binary_round_trip_byte_for_byte(service: Service) -> None:
    """The 2017 message, any text or binary payload (empty to 1 MiB) comes back as sent."""
    payloads: list[str | bytes] = [
        json.dumps({"timestamp": int(time.time() * 1000)}),
        "",
        "héllo wörld ✓ 𝄞",
        b"",
        bytes(range(256)),
        "x" * 125,  # the largest payload with a 7-bit length
        "y" * 126,  # the smallest with a 16-bit length
        os.urandom(65535),  # the largest with a 16-bit length
        os.urandom(70_000),
        os.urandom(1024 * 1024),  # exactly --max-message-size: still accepted
    ]
    with connect(service.url, compression=None, max_size=None) as ws:
        for payload in payloads:
            ws.send(payload)
            echo = ws.recv()
            assert type(echo) is type(payload)
            assert echo == payload


def test_echoes_keep_their_order(service: Service) -> None:
    """1,000 messages sent back to back come back in the same order."""
    with connect(service.url, compression=None) as ws:
        for i in range(1000):
            ws.send(f"message {i}" if i % 2 else f"message {i}".encode())
        for i in range(1000):
            assert ws.recv() in (f"message {i}", f"message {i}".encode())


def test_frames_split_over_reads_and_packed_into_one(service: Service, raw_client: Any) -> None:
    """A frame arriving in pieces is echoed once whole; frames sent together are all echoed."""
    with raw_client(service.port) as client:
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        frame = raw_client.frame(0x1, b'{"timestamp": 1700000000000}')
        for piece in (frame[:1], frame[1:2], frame[2:5], frame[5:9], frame[9:]):
            client.sock.sendall(piece)
            time.sleep(0.02)  # separate reads on the server, most likely
        assert client.recv_frame() == (0x1, b'{"timestamp": 1700000000000}')
        big = os.urandom(3000)
        four = raw_client.frame(0x1, b"four")
        client.sock.sendall(
            raw_client.frame(0x1, b"one")
            + raw_client.frame(0x2, b"two")
            + raw_client.frame(0x2, big)
            + four[:3]
        )
        client.sock.sendall(four[3:])
        assert [client.recv_frame() for _ in range(4)] == [
            (0x1, b"one"),
            (0x2, b"two"),
            (0x2, big),
            (0x1, b"four"),
        ]


def test_data_right_behind_the_upgrade_request(service: Service, raw_client: Any) -> None:
    """A client that sends frames without waiting for the 101 (RFC 6455 4.1 says it must wait)
    is still served: the frames are echoed, later ones too, and a close is echoed."""
    with raw_client(service.port, handshake=False) as client:
        key = base64.b64encode(os.urandom(16)).decode()
        bird = raw_client.frame(0x2, b"bird")
        client.sock.sendall(
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
            + raw_client.frame(0x1, b"early")
            + bird[:4]  # and half a frame
        )
        assert client.read_http_head()[0].startswith("HTTP/1.1 101")
        assert client.recv_frame() == (0x1, b"early")
        client.sock.sendall(bird[4:])
        assert client.recv_frame() == (0x2, b"bird")
        client.send_frame(0x1, b"later")
        assert client.recv_frame() == (0x1, b"later")
        client.send_frame(0x8, (1000).to_bytes(2, "big"))
        assert client.recv_close_code() == 1000


def _upgrade(client: Any, **headers: str) -> str:
    """Send an upgrade request with these headers (None drops one); return the status line."""
    fields = {
        "Host": "127.0.0.1",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        "Sec-WebSocket-Version": "13",
    }
    fields.update({name.replace("_", "-"): value for name, value in headers.items()})
    request = "GET / HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    client.sock.sendall((request + "\r\n").encode())
    return str(client.read_http_head()[0])


def test_connection_header_with_several_tokens(service: Service, raw_client: Any) -> None:
    """`Connection: keep-alive, Upgrade` (what browsers send) upgrades like `Upgrade` alone."""
    with raw_client(service.port, handshake=False) as client:
        assert _upgrade(client, Connection="keep-alive, Upgrade").startswith("HTTP/1.1 101")
        client.send_frame(0x1, b"browser")
        assert client.recv_frame() == (0x1, b"browser")


def test_picows_handshake_then_lean_path(
    start_service: Callable[..., Service], raw_client: Any
) -> None:
    """picows backend: a request outside the lean path's strict subset (here the draft version 8,
    which picows accepts) is handshaken by picows, then served like any other connection:
    echo, fragments, ping, close."""
    service = start_service("picows", "--handshake-timeout", "1")
    with raw_client(service.port, handshake=False) as client:
        assert _upgrade(client, Sec_WebSocket_Version="8").startswith("HTTP/1.1 101")
        client.send_frame(0x1, b"old draft")
        assert client.recv_frame() == (0x1, b"old draft")
        client.send_frame(0x2, b"frag", fin=False)
        client.send_frame(0x9, b"ping")
        client.send_frame(0x0, b"ment", fin=True)
        assert client.recv_frame() == (0xA, b"ping")
        assert client.recv_frame() == (0x2, b"fragment")
        client.send_frame(0x8, (1000).to_bytes(2, "big"))
        assert client.recv_close_code() == 1000
    deadline = time.monotonic() + 5
    while service.metrics()["wsecho_connections_current"] != 0:
        assert time.monotonic() < deadline, "the closed connection is still counted"
        time.sleep(0.05)


def test_fragmented_message_is_echoed_whole(service: Service, raw_client: Any) -> None:
    """Fragments (with a ping between them) are reassembled and echoed as one message."""
    with raw_client(service.port) as client:
        client.send_frame(0x1, b"frag", fin=False)
        client.send_frame(0x9, b"ping in between")
        client.send_frame(0x0, b"ment", fin=False)
        client.send_frame(0x0, " ✓".encode(), fin=True)
        assert client.recv_frame() == (0xA, b"ping in between")
        assert client.recv_frame() == (0x1, "fragment ✓".encode())


def test_ping_gets_pong(service: Service, raw_client: Any) -> None:
    """A ping is answered with a pong carrying the same payload."""
    with raw_client(service.port) as client:
        client.send_frame(0x9, b"are you there")
        assert client.recv_frame() == (0xA, b"are you there")


def test_close_is_echoed(service: Service, raw_client: Any) -> None:
    """A close frame gets the same status code back, then the server ends the TCP connection."""
    with raw_client(service.port) as client:
        client.send_frame(0x8, (4000).to_bytes(2, "big") + b"bye")
        assert client.recv_close_code() == 4000
        assert client.closed_by_server()


def test_healthz_and_metrics(service: Service) -> None:
    """/healthz says ok; /metrics is Prometheus text whose counters follow the traffic."""
    assert service.http_get("/healthz") == (200, "text/plain; charset=utf-8", "ok")
    status, content_type, body = service.http_get("/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    for name in METRIC_NAMES:
        assert f"# TYPE {name} " in body
    before = service.metrics()
    with connect(service.url, compression=None) as ws:
        for _ in range(10):
            ws.send("0123456789")
            ws.recv()
        during = service.metrics()
    assert during["wsecho_connections_current"] == before["wsecho_connections_current"] + 1
    assert during["wsecho_connections_total"] == before["wsecho_connections_total"] + 1
    assert during["wsecho_messages_total"] == before["wsecho_messages_total"] + 10
    assert during["wsecho_bytes_total"] == before["wsecho_bytes_total"] + 100
    assert 5e6 < during["wsecho_process_resident_memory_bytes"] < 1e9
    deadline = time.monotonic() + 5
    while service.metrics()["wsecho_connections_current"] != before["wsecho_connections_current"]:
        assert time.monotonic() < deadline, "connections_current did not go back down"
        time.sleep(0.05)


def test_healthz_carries_the_run_token(start_service: Callable[..., Service], backend: str) -> None:
    """--run-token: /healthz answers with the token in its Echolab-Run-Token header, and still
    says ok; without a token, that header is absent."""
    token = "run-20261130T1624Z.a1b2"
    service = start_service(backend, "--run-token", token)
    assert service.http_get("/healthz") == (200, "text/plain; charset=utf-8", "ok")
    assert service.http_get("/healthz?probe=1")[0] == 200
    assert service.http_header("/healthz", "Echolab-Run-Token") == token
    assert f"run_token={token}" in service.log()
    plain = start_service(backend)
    assert plain.http_header("/healthz", "Echolab-Run-Token") is None


def test_run_token_from_the_environment(
    start_service: Callable[..., Service], backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WSECHO_RUN_TOKEN sets the token as --run-token does."""
    monkeypatch.setenv("WSECHO_RUN_TOKEN", "from-env")
    service = start_service(backend)
    assert service.http_header("/healthz", "Echolab-Run-Token") == "from-env"


def test_run_token_file_follows_a_new_token(
    start_service: Callable[..., Service], backend: str, tmp_path: Path
) -> None:
    """--run-token-file: /healthz answers with what the file holds at each request, so a new
    run's token is answered without a restart; no file, no header."""
    path = tmp_path / "run-token"
    service = start_service(backend, "--run-token-file", str(path))
    assert service.http_get("/healthz")[0] == 200
    assert service.http_header("/healthz", "Echolab-Run-Token") is None
    path.write_text("run-one\n")
    assert service.http_header("/healthz", "Echolab-Run-Token") == "run-one"
    path.write_text("run-two\n")
    assert service.http_header("/healthz", "Echolab-Run-Token") == "run-two"


def test_connection_limit_answers_503_and_keeps_serving(
    start_service: Callable[..., Service], backend: str
) -> None:
    """Beyond --max-connections the handshake gets HTTP 503; a slot freed is usable again."""
    service = start_service(backend, "--max-connections", "2")
    with connect(service.url, compression=None) as first, connect(service.url, compression=None):
        with pytest.raises(InvalidStatus) as rejected:
            connect(service.url, compression=None)
        assert rejected.value.response.status_code == 503
        assert service.http_get("/healthz")[0] == 200  # HTTP endpoints do not count
        metrics = service.metrics()
        assert metrics["wsecho_connections_rejected_total"] == 1
        assert metrics["wsecho_handshake_failures_total"] == 1
        first.close()
        deadline = time.monotonic() + 5
        while service.metrics()["wsecho_connections_current"] > 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with connect(service.url, compression=None) as third:
            third.send("still here")
            assert third.recv() == "still here"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_closes_connections_with_1001_and_exits_0(
    start_service: Callable[..., Service], backend: str, raw_client: Any, sig: int
) -> None:
    """SIGTERM/SIGINT: open connections get close 1001, the process exits 0 within 5 s."""
    service = start_service(backend)
    clients = [raw_client(service.port) for _ in range(20)]
    clients[0].send_frame(0x1, b"hello")
    assert clients[0].recv_frame() == (0x1, b"hello")
    # With SIGTERM, one client that never answers the close frame must not hold the exit up.
    stalled = raw_client(service.port) if sig == signal.SIGTERM else None
    started = time.monotonic()
    service.proc.send_signal(sig)
    for client in clients:
        assert client.recv_close_code() == 1001
        client.send_frame(0x8, (1001).to_bytes(2, "big"))
        client.sock.close()
    assert service.proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    if stalled is not None:
        stalled.sock.close()
    log = service.log()
    assert "wsecho stopped" in log
    assert f"closed {21 if stalled else 20} open connections with 1001" in log


def test_log_has_start_and_stop_lines_only(
    start_service: Callable[..., Service], backend: str
) -> None:
    """Normal traffic logs nothing: one line at start, one at stop."""
    service = start_service(backend)
    for _ in range(5):
        with connect(service.url, compression=None) as ws:
            for _ in range(100):
                ws.send("x")
                ws.recv()
    service.http_get("/metrics")
    assert service.stop() == 0
    lines = service.log().splitlines()
    assert len(lines) == 2, lines
    assert "serving on port" in lines[0]
    assert "stopped" in lines[1]


def test_json_log_format(start_service: Callable[..., Service], backend: str) -> None:
    """--log-format json: every line is a JSON object with time, level, logger and message."""
    service = start_service(backend, "--log-format", "json")
    assert service.stop() == 0
    records = [json.loads(line) for line in service.log().splitlines()]
    assert len(records) == 2
    for record in records:
        assert {"t", "time", "level", "logger", "message"} <= record.keys()
    assert records[0]["level"] == "info"
    assert "serving on port" in records[0]["message"]


def test_a_client_that_does_not_read_is_not_read_either(service: Service, raw_client: Any) -> None:
    """A client that sends without reading its echoes: wsecho stops reading from it once its
    echoes back up (the client's sends block instead of wsecho buffering them), serves others
    meanwhile, and returns every echo, in order, once the client reads."""
    frame = raw_client.frame(0x2, bytes(125))
    bound = 64 * 1024 * 1024  # far above both kernels' socket buffers, far below "buffer it all"
    with raw_client(service.port) as client:
        client.sock.setblocking(False)
        sent = 0  # bytes
        while sent < bound:
            try:
                sent += client.sock.send(frame[sent % len(frame) :])
            except BlockingIOError:
                # Full buffers; a server that still reads makes room again within moments.
                if not select.select([], [client.sock], [], 0.5)[1]:
                    break
        assert sent < bound, f"wsecho read {sent:,} bytes from a client that never read"
        service.assert_serving()
        client.sock.settimeout(10)
        # The rest of a frame sent in part goes out while the echoes are read.
        rest = threading.Thread(target=client.sock.sendall, args=(frame[sent % len(frame) :],))
        rest.start()
        frames = -(-sent // len(frame))
        for i in range(frames):
            assert client.recv_frame() == (0x2, bytes(125)), f"echo {i} of {frames}"
        rest.join()
        client.send_frame(0x1, b"after")
        assert client.recv_frame() == (0x1, b"after")
