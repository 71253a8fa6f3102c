"""Test helpers: a real wsecho process on 127.0.0.1 (port 0) and a raw-socket WebSocket client."""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

BACKENDS = ("picows", "websockets")
# The services shared by a test module also run the picows backend on its Python hot path
# ("picows" is its default: the compiled one, wsecho._engine, when that is built).
SHARED_VARIANTS = ("picows", "picows-python", "websockets")
# Scale every wait by WSECHO_TEST_TIMEOUT_FACTOR on slow machines (websockets' tests do the same).
TIMEOUT_FACTOR = float(os.environ.get("WSECHO_TEST_TIMEOUT_FACTOR", "1"))
_PORT_RE = re.compile(r"serving on port (\d+)")


def timeout(seconds: float) -> float:
    return seconds * TIMEOUT_FACTOR


class Service:
    """A wsecho process started with `python -m wsecho ... --host 127.0.0.1 --port 0`, behind
    the command prefix `wrapper` if one is given (e.g. `prlimit` to lower its limits).
    `backend` may name a hot path too: "picows-python" is `--backend picows --hot-path python`."""

    def __init__(
        self, backend: str, args: list[str], log_path: Path, wrapper: Sequence[str] = ()
    ) -> None:
        self.backend = backend
        self.log_path = log_path
        self._log = log_path.open("wb")
        name, _, hot_path = backend.partition("-")
        if hot_path:
            args = ["--hot-path", hot_path, *args]
        command = [sys.executable, "-m", "wsecho", "--backend", name, "--host", "127.0.0.1"]
        self.proc = subprocess.Popen(
            [*wrapper, *command, "--port", "0", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            match = _PORT_RE.search(self.wait_for_log("serving on port"))
        except AssertionError:
            self.stop()
            raise
        assert match is not None
        self.port = int(match.group(1))

    def wait_for_log(self, text: str) -> str:
        """Wait until wsecho's output shows `text`; that output."""
        deadline = time.monotonic() + timeout(20)
        while time.monotonic() < deadline:
            output = self.log()
            if text in output:
                return output
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"wsecho's output does not show {text!r}; its output:\n{self.log()}")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def http_get(self, path: str) -> tuple[int, str, str]:
        """(status, content type, body) of a plain GET."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port}{path}", timeout=timeout(5)
            ) as response:
                return (
                    response.status,
                    response.headers["Content-Type"],
                    response.read().decode(),
                )
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers["Content-Type"], exc.read().decode()

    def http_header(self, path: str, name: str) -> str | None:
        """Header `name` of a plain GET's answer (None when absent)."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.port}{path}", timeout=timeout(5)
        ) as response:
            value: str | None = response.headers[name]
            return value

    def metrics(self) -> dict[str, float]:
        status, _, body = self.http_get("/metrics")
        assert status == 200
        values = {}
        for line in body.splitlines():
            if line and not line.startswith("#"):
                name, value = line.split()
                values[name] = float(value)
        return values

    def assert_serving(self) -> None:
        """The service still answers /healthz and echoes for a new client."""
        assert self.proc.poll() is None, f"wsecho exited:\n{self.log()}"
        assert self.http_get("/healthz")[:3:2] == (200, "ok")
        with RawClient(self.port) as client:
            client.send_frame(0x1, b'{"timestamp": 1}')
            assert client.recv_frame() == (0x1, b'{"timestamp": 1}')

    def stop(self) -> int:
        """SIGTERM, and the exit code (killed after 10 s: a test then fails on the code)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout(10))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Start wsecho processes; all are stopped (and their logs shown on failure) at the end."""
    started: list[Service] = []

    def start(backend: str, *args: str, wrapper: Sequence[str] = ()) -> Service:
        log_path = tmp_path / f"wsecho-{len(started)}.log"
        service = Service(backend, list(args), log_path, wrapper)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()
        print(f"--- wsecho ({service.backend}) output ---\n{service.log()}")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every behaviour test runs against both backends."""
    return str(request.param)


def shared_service(
    request: pytest.FixtureRequest, factory: pytest.TempPathFactory, *args: str
) -> Iterator[Service]:
    """A wsecho (backend from the fixture's param) shared by the tests of a module: starting a
    process per test would dominate the run time, and sharing also shows that one service
    survives every case in turn."""
    backend = str(request.param)
    service = Service(backend, list(args), factory.mktemp(f"wsecho-{backend}") / "wsecho.log")
    yield service
    service.stop()
    print(f"--- wsecho ({backend}) output ---\n{service.log()}")


@pytest.fixture(scope="module", params=SHARED_VARIANTS)
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """A wsecho with default settings (and a 1 s handshake timeout, to keep tests short)."""
    yield from shared_service(request, tmp_path_factory, "--handshake-timeout", "1")


class RawClient:
    """A WebSocket client on a plain socket: it can send what a library would refuse to."""

    def __init__(self, port: int, *, handshake: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout(10))
        self._buf = b""
        if handshake:
            status, _ = self.handshake()
            assert status.startswith("HTTP/1.1 101"), status

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def handshake(self, key: str | None = None, path: str = "/") -> tuple[str, bytes]:
        """Send an upgrade request; return the status line and the whole response head."""
        self.send_upgrade(key, path)
        return self.read_http_head()

    def send_upgrade(self, key: str | None = None, path: str = "/") -> None:
        """Send an upgrade request (its answer is read by `read_http_head`)."""
        key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def read_http_head(self) -> tuple[str, bytes]:
        while b"\r\n\r\n" not in self._buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self._buf += chunk
        head, _, self._buf = self._buf.partition(b"\r\n\r\n")
        return head.split(b"\r\n", 1)[0].decode(), head

    @staticmethod
    def frame(
        opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0
    ) -> bytes:
        """Encode one frame; `length` in the header is always the true payload length."""
        head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
        size = len(payload)
        mask_bit = 0x80 if mask else 0
        if size < 126:
            head += bytes([mask_bit | size])
        elif size < 65536:
            head += bytes([mask_bit | 126]) + struct.pack("!H", size)
        else:
            head += bytes([mask_bit | 127]) + struct.pack("!Q", size)
        if not mask:
            return head + payload
        key = os.urandom(4)
        masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if size < 4096 else None
        if masked is None:  # fast path for big payloads: XOR as integers
            repeated = (key * (size // 4 + 1))[:size]
            masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
                size, "big"
            )
        return head + key + masked

    def send_frame(self, opcode: int, payload: bytes, **kwargs: bool | int) -> None:
        self.sock.sendall(self.frame(opcode, payload, **kwargs))  # type: ignore[arg-type]

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self._buf)))
            if not chunk:
                raise ConnectionError(f"closed after {len(self._buf)} of {n} bytes")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def recv_frame(self) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame (servers never mask)."""
        b0, b1 = self._read_exact(2)
        assert b1 & 0x80 == 0, "server frames must not be masked"
        size = b1 & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._read_exact(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._read_exact(8))
        return b0 & 0x0F, self._read_exact(size)

    def recv_close_code(self) -> int:
        """Skip data frames up to the server's close frame and return its status code."""
        while True:
            opcode, payload = self.recv_frame()
            if opcode == 0x8:
                return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005

    def closed_by_server(self) -> bool:
        """Does the server close the TCP connection (EOF or reset) within the timeout?"""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False
        return True


@pytest.fixture(scope="session")
def shared_service_factory() -> Callable[..., Iterator[Service]]:
    """`shared_service` for module-scoped fixtures in test modules."""
    return shared_service


@pytest.fixture(scope="session")
def raw_client() -> type[RawClient]:
    return RawClient
