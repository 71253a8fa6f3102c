"""The target: its URL, its address, and the probe made before any worker starts."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http.client
import socket
import urllib.parse
from dataclasses import dataclass
from typing import Any

from wsswarm import dialer, errors, wsclient
from wsswarm.run.exits import EXIT_FAILED, EXIT_NOT_WEBSOCKET, EXIT_WRONG_TARGET, UsageError

HEALTH_PATH = "/healthz"
# The header of /healthz that names the run (wsecho --run-token, the node.js baseline's
# ECHOLAB_RUN_TOKEN).
RUN_TOKEN_HEADER = "Echolab-Run-Token"
MAX_HEALTH_BODY = 4096


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


@dataclass(frozen=True)
class Refusal:
    """Why no load may be sent: the exit status and one line for the user."""

    exit_code: int
    message: str


def _unreachable(target: Target, exc: BaseException, timeout: float) -> Refusal:
    kind = errors.classify(exc)
    where = f"{target.host}:{target.port}"
    if kind == errors.REFUSED:
        message = f"target unreachable: connection to {where} refused (is the server running?)"
    elif kind == errors.TIMEOUT:
        message = f"target unreachable: no answer from {where} within {timeout:g} s"
    else:
        message = f"target unreachable: {where}: {kind}: {errors.describe(exc)}"
    return Refusal(EXIT_FAILED, message)


def check_run_token(
    target: Target, token: str, timeout: float, source_address: str | None
) -> Refusal | None:
    """GET /healthz from the target's address: it must carry `token` in RUN_TOKEN_HEADER.

    An answer without it, or with another token, is some other server (another run's target,
    or whatever owns that address on this network): no load goes there.
    """
    ip = str(target.address[0])
    conn = http.client.HTTPConnection(
        f"[{ip}]" if ":" in ip else ip,
        target.port,
        timeout=timeout,
        source_address=(source_address, 0) if source_address else None,
    )
    where = f"{target.host}:{target.port}"
    try:
        conn.request("GET", HEALTH_PATH, headers={"Host": wsclient.host_and_path(target.url)[0]})
        response = conn.getresponse()
        response.read(MAX_HEALTH_BODY)
        got = response.getheader(RUN_TOKEN_HEADER)
        status = response.status
    except http.client.HTTPException as exc:
        return Refusal(
            EXIT_WRONG_TARGET,
            f"not this run's target: {where} answered GET {HEALTH_PATH} with something that "
            f"is not HTTP ({type(exc).__name__}); no load sent",
        )
    except OSError as exc:
        return _unreachable(target, exc, timeout)
    finally:
        conn.close()
    if status != 200:
        return Refusal(
            EXIT_WRONG_TARGET,
            f"not this run's target: {where} answered GET {HEALTH_PATH} with HTTP {status}; "
            "no load sent",
        )
    if got is None:
        return Refusal(
            EXIT_WRONG_TARGET,
            f"not this run's target: {where}'s {HEALTH_PATH} carries no {RUN_TOKEN_HEADER} "
            "(another server, or one started without --run-token); no load sent",
        )
    if not hmac.compare_digest(got.encode(), token.encode()):
        return Refusal(
            EXIT_WRONG_TARGET,
            f"not this run's target: {where}'s {HEALTH_PATH} carries run token {got!r}, "
            f"not {token!r} (another run's target); no load sent",
        )
    return None


def probe(target: Target, timeout: float, source_address: str | None) -> Refusal | None:
    """One WebSocket handshake (no message) before the workers start.

    Anything but a valid upgrade stops the run: an unreachable target, and any other answer
    (an HTTP 404 from whatever owns the address, a 503, something that is not HTTP).
    """

    async def attempt() -> None:
        loop = asyncio.get_running_loop()
        sock = dialer.client_socket(target.family, source_address)
        try:
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
    except wsclient.HandshakeError as exc:
        return Refusal(
            EXIT_NOT_WEBSOCKET,
            f"not a WebSocket server: {target.url} answered the test connection's upgrade "
            f"with {errors.describe(exc)}; no worker started",
        )
    except Exception as exc:
        return _unreachable(target, exc, timeout)
    return None
