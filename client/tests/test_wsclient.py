"""wsswarm's own RFC 6455 client protocol, over a real socket pair on a uvloop loop.

The test plays the server with raw bytes on the other end of the pair: frames split across
reads, several in one read, fragmented messages, ping, close, protocol errors, and every way
an upgrade answer can be wrong.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any, cast

import pytest
import uvloop
from wsswarm import errors, wsclient
from wsswarm.dialer import Dialer, connect
from wsswarm.wsclient import CLOSE, PING, PONG, TEXT, HandshakeError

TIMEOUT_FACTOR = float(os.environ.get("WSSWARM_TEST_TIMEOUT_FACTOR", "1"))


class Recorder(wsclient.ClientProtocol):
    """Keeps what the protocol delivered."""

    __slots__ = ("closes", "lost", "opened", "texts")

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[bytes] = []
        self.closes: list[int] = []
        self.opened = False
        self.lost = False

    def on_open(self) -> None:
        self.opened = True

    def on_text(self, payload: bytes) -> None:
        self.texts.append(payload)

    def on_close_frame(self, code: int) -> None:
        self.closes.append(code)

    def on_lost(self) -> None:
        self.lost = True


def unmask(frame: bytes) -> tuple[int, bytes]:
    """Opcode and payload of one client frame (checks it is final and masked)."""
    assert frame[0] & 0x80, "FIN"
    assert frame[1] & 0x80, "client frames are masked"
    length = frame[1] & 0x7F
    pos = 2
    if length == 126:
        length, pos = int.from_bytes(frame[2:4], "big"), 4
    mask, body = frame[pos : pos + 4], frame[pos + 4 : pos + 4 + length]
    return frame[0] & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(body))


def good_answer(request: bytes) -> bytes:
    key = next(
        line.split(b":", 1)[1].strip()
        for line in request.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key:")
    )
    accept = base64.b64encode(hashlib.sha1(key + wsclient.GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


Scenario = Callable[
    [asyncio.AbstractEventLoop, socket.socket, "asyncio.Task[Recorder]"], Awaitable[Any]
]


def run(scenario: Scenario) -> Any:
    """Open a Recorder over a socket pair; `scenario` plays the server on the other end."""

    async def main() -> Any:
        loop = asyncio.get_running_loop()
        client_sock, server_sock = socket.socketpair()
        client_sock.setblocking(False)
        server_sock.setblocking(False)
        try:
            task = loop.create_task(
                connect(loop, Recorder, sock=client_sock, host="h:1", path="/p?q", timeout=2)
            )
            return await asyncio.wait_for(scenario(loop, server_sock, task), 10 * TIMEOUT_FACTOR)
        finally:
            server_sock.close()

    loop = uvloop.new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


async def read_request(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += await loop.sock_recv(sock, 4096)
    return data


async def upgraded(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, task: asyncio.Task[Recorder]
) -> Recorder:
    await loop.sock_sendall(sock, good_answer(await read_request(loop, sock)))
    return await task


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0.005)


def test_request_is_a_websocket_upgrade() -> None:
    """The request names the path, the Host, and a fresh 16-byte key."""

    async def scenario(loop: Any, sock: socket.socket, task: Any) -> bytes:
        request = await read_request(loop, sock)
        await loop.sock_sendall(sock, good_answer(request))
        await task
        return request

    request = run(scenario)
    lines = request.split(b"\r\n")
    assert lines[0] == b"GET /p?q HTTP/1.1"
    assert b"Host: h:1" in lines
    assert b"Upgrade: websocket" in lines
    assert b"Connection: Upgrade" in lines
    assert b"Sec-WebSocket-Version: 13" in lines
    key = next(ln for ln in lines if ln.startswith(b"Sec-WebSocket-Key: ")).split(b": ")[1]
    assert len(base64.b64decode(key)) == 16


def test_frames_split_and_coalesced_are_delivered_whole() -> None:
    """An echo cut in three reads, then three messages in one read (one 300 bytes long)."""

    async def scenario(loop: Any, sock: socket.socket, task: Any) -> list[bytes]:
        conn = await upgraded(loop, sock, task)
        frame = wsclient.server_frame(TEXT, b'{"timestamp":1}')
        for part in (frame[:1], frame[1:5], frame[5:]):
            await loop.sock_sendall(sock, part)
            await settle()
        long = b"x" * 300  # 16-bit length
        await loop.sock_sendall(
            sock,
            wsclient.server_frame(TEXT, b"a")
            + wsclient.server_frame(TEXT, long)
            + wsclient.server_frame(TEXT, b"b"),
        )
        await settle()
        return list(conn.texts)

    assert run(scenario) == [b'{"timestamp":1}', b"a", b"x" * 300, b"b"]


def test_upgrade_answer_and_first_frame_in_one_read() -> None:
    async def scenario(loop: Any, sock: socket.socket, task: Any) -> list[bytes]:
        request = await read_request(loop, sock)
        await loop.sock_sendall(sock, good_answer(request) + wsclient.server_frame(TEXT, b"hi"))
        conn = await task
        await settle()
        return list(conn.texts)

    assert run(scenario) == [b"hi"]


def test_fragmented_message_is_reassembled_and_ping_answered() -> None:
    """A text in three fragments with a ping between them: one message, one pong (same data)."""

    async def scenario(loop: Any, sock: socket.socket, task: Any) -> tuple[list[bytes], bytes]:
        conn = await upgraded(loop, sock, task)
        await loop.sock_sendall(
            sock,
            bytes((0x01, 3)) + b"abc"  # TEXT, not final
            + bytes((0x89, 4)) + b"ping"  # PING, between fragments (allowed)
            + bytes((0x00, 2)) + b"de"  # CONTINUATION, not final
            + bytes((0x80, 1)) + b"f",  # CONTINUATION, final
        )  # fmt: skip
        await settle()
        return list(conn.texts), await loop.sock_recv(sock, 100)

    texts, pong = run(scenario)
    assert texts == [b"abcdef"]
    assert unmask(pong) == (PONG, b"ping")


@pytest.mark.parametrize(("sent", "reply"), [(1001, 1001), (1005, 1000), (1006, 1000)])
def test_server_close_is_answered_with_its_code(sent: int, reply: int) -> None:
    """A close is echoed (RFC 6455 5.5.1), or answered 1000 when its code may not be sent."""

    async def scenario(loop: Any, sock: socket.socket, task: Any) -> Any:
        conn = await upgraded(loop, sock, task)
        payload = b"" if sent == 1005 else sent.to_bytes(2, "big") + b"bye"
        await loop.sock_sendall(sock, wsclient.server_frame(CLOSE, payload))
        answer = await loop.sock_recv(sock, 100)
        await settle()
        return conn.closes, answer, conn.lost

    closes, answer, lost = run(scenario)
    assert closes == [sent]
    assert unmask(answer) == (CLOSE, reply.to_bytes(2, "big"))
    assert lost  # the client ends the TCP connection after its answer


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (bytes((0x81, 0x81)) + b"\0\0\0\0" + b"x", 1002),  # a masked frame from a server
        (bytes((0xC1, 1)) + b"x", 1002),  # RSV1 without an extension
        (bytes((0x83, 1)) + b"x", 1002),  # reserved opcode
        (bytes((0x80, 1)) + b"x", 1002),  # continuation without a start
        (bytes((0x81, 127)) + (1 << 20).to_bytes(8, "big"), 1009),  # 1 MiB: too big
    ],
)
def test_protocol_errors_close_the_connection(bad: bytes, code: int) -> None:
    async def scenario(loop: Any, sock: socket.socket, task: Any) -> Any:
        conn = await upgraded(loop, sock, task)
        await loop.sock_sendall(sock, bad)
        answer = await loop.sock_recv(sock, 100)
        await settle()
        return conn.texts, answer, conn.lost

    texts, answer, lost = run(scenario)
    assert texts == []
    assert unmask(answer) == (CLOSE, code.to_bytes(2, "big"))
    assert lost


@pytest.mark.parametrize(
    ("answer", "kind", "message"),
    [
        (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0", "handshake_503", "HTTP 503"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0", "handshake_200", "HTTP 200"),
        (b"SSH-2.0-OpenSSH_9.2p1", "handshake_invalid", "not an HTTP response"),
        (b"HTTP/1.1 101 OK\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x", "handshake_invalid",
         "Upgrade: websocket"),
        (b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: x", "handshake_invalid",
         "Connection: Upgrade"),
        (b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\nConnection: Upgrade", "handshake_invalid",
         "Sec-WebSocket-Accept"),
        (b"HTTP/1.1 101 OK\r\nno colon here", "handshake_invalid", "malformed header line"),
    ],
)  # fmt: skip
def test_invalid_upgrade_answers(answer: bytes, kind: str, message: str) -> None:
    async def scenario(loop: Any, sock: socket.socket, task: Any) -> BaseException | None:
        await read_request(loop, sock)
        await loop.sock_sendall(sock, answer + b"\r\n\r\n")
        try:
            await task
        except HandshakeError as exc:
            return exc
        return None

    exc = run(scenario)
    assert isinstance(exc, HandshakeError)
    assert errors.classify(exc) == kind
    assert message in str(exc)


def test_extension_that_was_not_asked_for_is_refused() -> None:
    async def scenario(loop: Any, sock: socket.socket, task: Any) -> BaseException | None:
        answer = good_answer(await read_request(loop, sock))
        answer = answer[:-2] + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
        await loop.sock_sendall(sock, answer)
        try:
            await task
        except HandshakeError as exc:
            return exc
        return None

    exc = run(scenario)
    assert isinstance(exc, HandshakeError)
    assert errors.classify(exc) == "handshake_invalid"


def test_no_answer_is_a_timeout_and_a_close_is_a_reset() -> None:
    async def silent(loop: Any, sock: socket.socket, task: Any) -> BaseException | None:
        await read_request(loop, sock)
        try:
            await task
        except TimeoutError as exc:
            return exc
        return None

    async def closing(loop: Any, sock: socket.socket, task: Any) -> BaseException | None:
        await read_request(loop, sock)
        sock.close()
        try:
            await task
        except OSError as exc:
            return exc
        return None

    assert errors.classify(run(silent)) == "timeout"
    assert errors.classify(run(closing)) == "reset"


def test_masked_frame_round_trips() -> None:
    """Payload lengths on both sides of the 7-bit and 16-bit length encodings."""
    for n in (0, 1, 5, 125, 126, 127, 65535, 65536):
        payload = os.urandom(n)
        assert unmask_long(wsclient.masked_frame(TEXT, payload)) == (TEXT, payload)
    assert unmask(wsclient.masked_frame(PING, b"p", b"\x01\x02\x03\x04")) == (PING, b"p")


def unmask_long(frame: bytes) -> tuple[int, bytes]:
    length = frame[1] & 0x7F
    pos = 2
    if length == 126:
        length, pos = int.from_bytes(frame[2:4], "big"), 4
    elif length == 127:
        length, pos = int.from_bytes(frame[2:10], "big"), 10
    mask, body = frame[pos : pos + 4], frame[pos + 4 : pos + 4 + length]
    return frame[0] & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(body))


# ---- Dialer: many attempts by callbacks, one timer for all deadlines ----------------------


class Dialed(Recorder):
    """A Recorder that notes, when it opens, what the dialer has reported so far."""

    __slots__ = ("reported_at_open",)
    log: list[tuple[Recorder, BaseException | None]]

    def on_open(self) -> None:
        super().on_open()
        self.reported_at_open = len(self.log)


@pytest.fixture(params=[(), ("127.0.0.1",)], ids=["loop_socket", "source_address"])
def sources(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """Both ways a Dialer connects: a socket the loop makes, or one of ours bound to a source
    address (IP_BIND_ADDRESS_NO_PORT) whose connect ends in a writer callback."""
    return tuple(request.param)


def dial_all(
    port: int,
    count: int,
    timeout: float,
    answer: Callable[[bytes], bytes | None] | None = None,
    sources: tuple[str, ...] = (),
) -> tuple[list[tuple[Recorder, BaseException | None]], float, Dialer]:
    """Dial `count` attempts to 127.0.0.1:`port` (from `sources` in turn, when given); the
    server (when `answer` is given) replies to each request with answer(request), or closes
    when that is None."""
    log: list[tuple[Recorder, BaseException | None]] = []

    async def main() -> tuple[float, Dialer]:
        loop = asyncio.get_running_loop()
        server = None
        if answer is not None:

            async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                request = await reader.readuntil(b"\r\n\r\n")
                reply = answer(request)
                if reply is not None:
                    writer.write(reply)
                    await reader.read()  # until the client closes
                writer.close()

            server = await asyncio.start_server(serve, "127.0.0.1", port)
        dialer = Dialer(
            loop,
            lambda conn, exc: log.append((cast(Recorder, conn), exc)),
            host=f"127.0.0.1:{port}",
            path="/",
            timeout=timeout,
            address=("127.0.0.1", port),
            family=socket.AF_INET,
            source_addresses=sources,
        )
        Dialed.log = log
        started = loop.time()
        for _ in range(count):
            dialer.dial(Dialed())
        while len(log) < count and loop.time() - started < 10 * TIMEOUT_FACTOR:
            await asyncio.sleep(0.01)
        elapsed = loop.time() - started
        for conn, exc in log:
            if exc is None:
                conn.send_close()
        await settle()
        if server is not None:
            server.close()
        return elapsed, dialer

    loop = uvloop.new_event_loop()
    try:
        elapsed, dialer = loop.run_until_complete(main())
    finally:
        loop.close()
    return log, elapsed, dialer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_dialer_opens_connections_and_reports_each_once(sources: tuple[str, ...]) -> None:
    """Every attempt is reported once, after the protocol's on_open (so owners count it)."""
    log, _elapsed, dialer = dial_all(free_port(), 30, 5.0, good_answer, sources)
    assert len(log) == 30
    assert len({id(conn) for conn, _ in log}) == 30
    for index, (conn, exc) in enumerate(log):
        assert exc is None
        assert conn.opened
        assert isinstance(conn, Dialed)
        assert conn.reported_at_open == index  # on_open ran just before its own report
        assert conn.upgrade is None
    assert dialer.in_flight == 0


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        (lambda _request: b"HTTP/1.1 503 Busy\r\n\r\n", "handshake_503"),
        (lambda _request: None, "reset"),
    ],
)
def test_dialer_reports_rejected_and_closed_upgrades(
    answer: Callable[[bytes], bytes | None], kind: str, sources: tuple[str, ...]
) -> None:
    log, _elapsed, dialer = dial_all(free_port(), 5, 5.0, answer, sources)
    assert [errors.classify(exc) for _conn, exc in log if exc is not None] == [kind] * 5
    assert not any(conn.opened for conn, _ in log)
    assert dialer.in_flight == 0


def test_dialer_reports_a_refused_connect(sources: tuple[str, ...]) -> None:
    log, _elapsed, dialer = dial_all(free_port(), 3, 5.0, sources=sources)  # nothing listens
    assert [errors.classify(exc) for _conn, exc in log if exc is not None] == ["refused"] * 3
    assert dialer.in_flight == 0


def test_dialer_times_out_both_phases_with_one_timer(sources: tuple[str, ...]) -> None:
    """A listener that never accepts, queue of 1: some attempts wait for the upgrade answer,
    the others for a SYN-ACK; all end at the timeout (plus at most one sweep)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        log, elapsed, dialer = dial_all(listener.getsockname()[1], 8, 0.3, sources=sources)
    assert [errors.classify(exc) for _conn, exc in log if exc is not None] == ["timeout"] * 8
    assert 0.3 <= elapsed < (0.3 + Dialer.SWEEP_S) * 3 * TIMEOUT_FACTOR
    assert dialer.in_flight == 0


def test_dialer_cancel_all_reports_nothing_and_closes(sources: tuple[str, ...]) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(2)
        port = listener.getsockname()[1]
        log: list[BaseException | None] = []

        def peers_ended() -> list[bool]:
            """Accept the queued connections: did the client end each (EOF or reset)?"""
            ended = []
            for _ in range(4):
                conn, _addr = listener.accept()
                with conn:
                    conn.settimeout(2)
                    ended.append(read_to_end(conn))
            return ended

        async def main() -> tuple[int, list[bool]]:
            loop = asyncio.get_running_loop()
            dialer = Dialer(
                loop,
                lambda _conn, exc: log.append(exc),
                host="h",
                path="/",
                timeout=0.2,
                address=("127.0.0.1", port),
                family=socket.AF_INET,
                source_addresses=sources,
            )
            for _ in range(4):
                dialer.dial(Recorder())
            await asyncio.sleep(0.05)
            dialer.cancel_all()
            await asyncio.sleep(0.5)  # past the timeout: no report comes
            # Checked while the loop still runs (closing it would close its sockets anyway).
            return dialer.in_flight, await loop.run_in_executor(None, peers_ended)

        loop = uvloop.new_event_loop()
        try:
            in_flight, ended = loop.run_until_complete(main())
        finally:
            loop.close()
    assert in_flight == 0
    assert log == []
    assert ended == [True] * 4


def read_to_end(conn: socket.socket) -> bool:
    """Whether the peer ended the connection (EOF or reset) within the socket's timeout."""
    try:
        while conn.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True
