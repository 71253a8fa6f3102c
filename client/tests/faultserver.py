"""A deliberately misbehaving WebSocket server for the wsswarm tests (run as a subprocess).

    python faultserver.py [--accept-limit N] [--health-token T]
                                                  prints "PORT <n>" and serves on 127.0.0.1

It is a real, minimal RFC 6455 server written on raw asyncio so that it can break the protocol
on purpose. The request path picks the behaviour of every `every`-th connection on that path
(the others echo correctly), e.g. `ws://127.0.0.1:P/fault/503/2`:

    echo            echo every text frame (the control path)
    503             answer the upgrade with HTTP 503
    404             answer the upgrade with HTTP 404 (a web server that is not the target)
    hang            accept TCP, never answer the upgrade (client: timeout)
    reset           answer nothing, close with SO_LINGER 0 (RST) (client: reset)
    close1001       upgrade, then answer the first message with a close frame 1001
    wrong           upgrade, then echo a different text than received (client: echo_mismatch)
    drop            upgrade, then abort the TCP connection on the first message (client: dropped)
    slow            echo each message 1 s late (a light, steady load)
    lateup          answer the upgrade 1.5 s late, then echo (a ramp that ends late)
    badaccept       answer 101 with a wrong Sec-WebSocket-Accept (client: handshake_invalid)
    nothttp         answer with a line that is not HTTP at all (client: handshake_invalid)
    swallow         upgrade, then read every message and never answer (open mode: backlog)

`/fault/mix` gives connections 2, 4, 6, ... one fault each, in the order 503, hang, reset,
close1001, drop, wrong (then again); the odd ones echo.

`/fault/latermix` gives connections 1, 2, 3, 4, ... in turn a behaviour that starts after a few
correct echoes (wsswarm's compiled closed loop owns a connection from its first echo on):

    echo            echo every text frame
    split           echo every text frame in two writes 20 ms apart, from the 3rd message on
    wronglater      echo a different text for the 5th message only
    closelater      answer the 5th message with a close frame 1001

`--accept-limit N` closes the listening socket after N connections: later connects are refused.
`--accept-delay S` listens with a backlog of 0 and accepts nothing until S seconds after the
first connection arrived: the connects after the first wait for the kernel's SYN (or SYN-ACK)
retransmits (1 s, 3 s, ...) past S.
`GET /healthz` answers 200 "ok" with the header `Echolab-Run-Token: T` given `--health-token T`
(as wsecho --run-token does), and 404 without it.
`GET /stats` answers JSON: health (count of /healthz requests), upgrades (epoch times of upgrade
requests, /healthz and /stats excluded), messages echoed,
messages swallowed, and closes: {"<status code of each close frame received>": count} ("none"
for an empty close).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import socket
import struct
import sys
import time
from collections import Counter

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
LATE_UPGRADE_S = 1.5
MIX = ("503", "hang", "reset", "close1001", "drop", "wrong")
LATER_MIX = ("echo", "split", "wronglater", "closelater")
LATER_MESSAGE = 5  # the message of a connection at which wronglater and closelater act
SPLIT_FROM = 3  # split echoes from this message on
SPLIT_GAP_S = 0.02
# Faults that answer the upgrade with plain HTTP: status line, body.
HTTP_REFUSALS = {
    "503": (b"503 Service Unavailable", b""),
    "404": (b"404 Not Found", b"Not Found"),
}


class State:
    def __init__(self, accept_limit: int | None, health_token: str | None) -> None:
        self.accept_limit = accept_limit
        self.health_token = health_token
        self.health = 0
        self.accepted = 0
        self.upgrades: list[float] = []
        self.messages = 0
        self.swallowed = 0
        self.per_path: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.server: asyncio.base_events.Server | None = None


def frame(opcode: int, payload: bytes) -> bytes:
    head = bytes([0x80 | opcode])
    if len(payload) < 126:
        return head + bytes([len(payload)]) + payload
    return head + bytes([126]) + struct.pack("!H", len(payload)) + payload


class Conn(asyncio.Protocol):
    def __init__(self, state: State) -> None:
        self.state = state
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.fault = "echo"
        self.received = 0  # text messages received on this connection

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        state = self.state
        state.accepted += 1
        limit = state.accept_limit
        if limit is not None and state.accepted >= limit and state.server is not None:
            state.server.close()  # new connects are refused from now on

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            self.handle_request()
        else:
            self.handle_frames()

    def handle_request(self) -> None:
        assert self.transport is not None
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
        lines = head.decode("latin-1").split("\r\n")
        path = lines[0].split(" ")[1]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if path == "/healthz":
            self.state.health += 1
            token = self.state.health_token
            if token is None:
                self.transport.write(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
            else:
                self.transport.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
                    b"Echolab-Run-Token: %s\r\nConnection: close\r\n\r\nok" % token.encode()
                )
            self.transport.close()
            return
        if path == "/stats":
            body = json.dumps(
                {
                    "health": self.state.health,
                    "upgrades": self.state.upgrades,
                    "messages": self.state.messages,
                    "swallowed": self.state.swallowed,
                    "closes": self.state.closes,
                }
            ).encode()
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%s" % (len(body), body)
            )
            self.transport.close()
            return
        self.state.upgrades.append(time.time())
        parts = path.strip("/").split("/")
        if parts == ["fault", "mix"]:
            # One of each fault, every other connection: one run meets them all.
            self.state.per_path[path] += 1
            n = self.state.per_path[path] - 1
            self.fault = "echo" if n % 2 == 0 else MIX[(n // 2) % len(MIX)]
        elif parts == ["fault", "latermix"]:
            self.state.per_path[path] += 1
            self.fault = LATER_MIX[(self.state.per_path[path] - 1) % len(LATER_MIX)]
        elif len(parts) >= 2 and parts[0] == "fault":
            kind = parts[1]
            every = int(parts[2]) if len(parts) > 2 else 1
            self.state.per_path[path] += 1
            if self.state.per_path[path] % every == 0:
                self.fault = kind
        if self.fault == "hang":
            return
        if self.fault in HTTP_REFUSALS:
            status, body = HTTP_REFUSALS[self.fault]
            self.transport.write(
                b"HTTP/1.1 %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                % (status, len(body), body)
            )
            self.transport.close()
            return
        if self.fault == "reset":
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
            return
        if self.fault == "nothttp":
            self.transport.write(b"SSH-2.0-OpenSSH_9.2p1\r\n\r\n")
            return
        key = headers.get("sec-websocket-key", "").encode()
        if self.fault == "badaccept":
            key += b"x"  # the accept value of another key
        if self.fault == "lateup":
            asyncio.get_running_loop().call_later(LATE_UPGRADE_S, self.upgrade, key)
            return
        self.upgrade(key)

    def upgrade(self, key: bytes) -> None:
        assert self.transport is not None
        if self.transport.is_closing():
            return
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.upgraded = True
        if self.buffer:
            self.handle_frames()

    def handle_frames(self) -> None:
        assert self.transport is not None
        while len(self.buffer) >= 2:
            b0, b1 = self.buffer[0], self.buffer[1]
            opcode = b0 & 0x0F
            length = b1 & 0x7F
            pos = 2
            if length == 126:
                if len(self.buffer) < 4:
                    return
                length = struct.unpack("!H", self.buffer[2:4])[0]
                pos = 4
            elif length == 127:
                if len(self.buffer) < 10:
                    return
                length = struct.unpack("!Q", self.buffer[2:10])[0]
                pos = 10
            masked = b1 & 0x80
            mask = b""
            if masked:
                mask = self.buffer[pos : pos + 4]
                pos += 4
            if len(self.buffer) < pos + length:
                return
            payload = bytearray(self.buffer[pos : pos + length])
            self.buffer = self.buffer[pos + length :]
            if masked:
                for i in range(length):
                    payload[i] ^= mask[i % 4]
            if opcode == 0x8:  # close: answer and end
                code = str(struct.unpack("!H", payload[:2])[0]) if length >= 2 else "none"
                self.state.closes[code] += 1
                self.transport.write(frame(0x8, bytes(payload[:2])))
                self.transport.close()
                return
            if opcode == 0x9:
                self.transport.write(frame(0xA, bytes(payload)))
                continue
            if opcode != 0x1:
                continue
            if self.fault == "swallow":
                self.state.swallowed += 1
                continue
            self.received += 1
            if self.fault == "closelater" and self.received == LATER_MESSAGE:
                self.transport.write(frame(0x8, struct.pack("!H", 1001) + b"going away"))
                self.transport.close()
                return
            if self.fault == "wronglater" and self.received == LATER_MESSAGE:
                payload = bytearray(b'{"timestamp":0}')
            if self.fault == "split" and self.received >= SPLIT_FROM:
                self.state.messages += 1
                whole = frame(0x1, bytes(payload))
                self.transport.write(whole[:5])
                loop = asyncio.get_running_loop()
                loop.call_later(SPLIT_GAP_S, self.transport.write, whole[5:])
                continue
            if self.fault == "close1001":
                self.transport.write(frame(0x8, struct.pack("!H", 1001) + b"going away"))
                self.transport.close()
                return
            if self.fault == "drop":
                self.transport.abort()
                return
            if self.fault == "wrong":
                payload = bytearray(b'{"timestamp":0}')
            self.state.messages += 1
            if self.fault == "slow":
                loop = asyncio.get_running_loop()
                loop.call_later(1.0, self.transport.write, frame(0x1, bytes(payload)))
                continue
            self.transport.write(frame(0x1, bytes(payload)))


def resolve_once(future: asyncio.Future[None]) -> None:
    """Resolve `future` unless it already is (a reader callback may run again before removal)."""
    if not future.done():
        future.set_result(None)


async def serve(accept_limit: int | None, health_token: str | None, accept_delay: float) -> None:
    state = State(accept_limit, health_token)
    loop = asyncio.get_running_loop()
    if accept_delay:
        # Backlog 0: one connection completes in the kernel, the SYNs of the others are dropped
        # (the client retransmits after 1 s, then 3 s, ...) until we start accepting.
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(0)
        print(f"PORT {sock.getsockname()[1]}", flush=True)
        pending: asyncio.Future[None] = loop.create_future()  # readable: a connection waits
        loop.add_reader(sock.fileno(), resolve_once, pending)
        await pending
        loop.remove_reader(sock.fileno())
        await asyncio.sleep(accept_delay)
        state.server = await loop.create_server(lambda: Conn(state), sock=sock, backlog=1024)
        await asyncio.sleep(600)
        return
    server = await loop.create_server(lambda: Conn(state), "127.0.0.1", 0, backlog=1024)
    state.server = server
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    # Bounded life: a test that forgets to stop us does not leave a server behind for long.
    await asyncio.sleep(600)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accept-limit", type=int, default=None)
    parser.add_argument("--health-token", default=None)
    parser.add_argument("--accept-delay", type=float, default=0.0)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.accept_limit, args.health_token, args.accept_delay))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
