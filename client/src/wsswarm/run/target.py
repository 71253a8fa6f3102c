"""The target: its URL, its address, and the probe made before any worker starts."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import urllib.parse
from dataclasses import dataclass
from typing import Any

from wsswarm import dialer, errors, wsclient
from wsswarm.run.exits import UsageError


@dataclass
@dataclass
class Target:
    url: str
    host: str
    port: int
    address: tuple[Any, ...]
    family: int


def parse_url(url: str) -> tuple[str, int]:
    """Host and port of a ws:// URL, or UsageError."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "wss":
        raise UsageError(f"--url {url}: wss:// is not supported (the lab targets are plain ws://)")
    if parsed.scheme != "ws":
        raise UsageError(f"--url {url}: must start with ws://")
    try:
        port = parsed.port or 80
    except ValueError:
        raise UsageError(f"--url {url}: invalid port") from None
    if not parsed.hostname:
        raise UsageError(f"--url {url}: no host")
    return parsed.hostname, port


def resolve(url: str) -> Target:
    host, port = parse_url(url)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"--url {url}: cannot resolve {host}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    return Target(url=url, host=host, port=port, address=tuple(address), family=family)


class _ProbeConn(wsclient.ClientProtocol):
    """The probe's connection: it only needs to know when the connection has ended."""

    __slots__ = ("lost",)

    def __init__(self) -> None:
        super().__init__()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_lost(self) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


def probe(target: Target, timeout: float, source_address: str | None) -> str | None:
    """One WebSocket handshake (no message) before the workers start.

    Returns a fatal message when the target cannot be reached at all; a rejected handshake is
    only reported (the run counts those per connection).
    """

    async def attempt() -> None:
        sock = socket.socket(target.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            if source_address:
                sock.bind((source_address, 0))
            await asyncio.wait_for(loop.sock_connect(sock, target.address), timeout)
        except BaseException:
            sock.close()
            raise
        host, path = wsclient.host_and_path(target.url)
        conn = await dialer.connect(
            loop, _ProbeConn, sock=sock, host=host, path=path, timeout=timeout
        )
        conn.send_close()  # 1000; then wait (bounded) until the connection has ended
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(conn.lost, timeout)

    try:
        asyncio.run(attempt())
    except Exception as exc:
        kind = errors.classify(exc)
        where = f"{target.host}:{target.port}"
        if kind == errors.REFUSED:
            return f"target unreachable: connection to {where} refused (is the server running?)"
        if kind == errors.TIMEOUT:
            return f"target unreachable: no answer from {where} within {timeout:g} s"
        if kind in (errors.UNREACHABLE, errors.ADDR_NOT_AVAILABLE, errors.RESET):
            return f"target unreachable: {where}: {errors.describe(exc)}"
        print(
            f"wsswarm: warning: test connection to {target.url}: {kind}: {errors.describe(exc)}",
            file=sys.stderr,
            flush=True,
        )
    return None
