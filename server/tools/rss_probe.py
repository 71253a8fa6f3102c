"""Memory of wsecho with N open, idle WebSocket connections (the issue's "<= 60 MB at 10,000").

    python server/tools/rss_probe.py --backend picows --connections 10000

Starts wsecho on 127.0.0.1 (port 0), opens the connections from several client processes (each
under the 20,000 open-file limit), echoes one 2017-style message on each, waits for the server to
settle, and prints the server's RSS (from /proc/<pid>/status) before and after. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import multiprocessing
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PER_PROCESS = 2500


def rss_bytes(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    assert match
    return int(match.group(1)) * 1024


def _frame(payload: bytes) -> bytes:
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + key + masked


async def _hold(
    port: int,
    count: int,
    ready: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
) -> None:
    writers = []
    request = (
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(request.format(key=key).encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        message = json.dumps({"timestamp": int(time.time() * 1000)}).encode()
        writer.write(_frame(message))
        echo = await reader.readexactly(2 + len(message))
        assert echo[2:] == message
        writers.append(writer)

    for start in range(0, count, 100):  # 100 at a time: a ramp, not a SYN flood
        await asyncio.gather(*(one() for _ in range(min(100, count - start))))
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.2)
    for writer in writers:
        writer.close()


def _client(
    port: int,
    count: int,
    ready: multiprocessing.synchronize.Event,
    stop: multiprocessing.synchronize.Event,
) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 100), hard))
    asyncio.run(_hold(port, count, ready, stop))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="picows", choices=("picows", "websockets"))
    parser.add_argument("--connections", type=int, default=10_000)
    args = parser.parse_args()

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by wsecho
    with tempfile.NamedTemporaryFile("w+b", suffix=".log") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "wsecho",
                "--backend",
                args.backend,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        port = 0
        for _ in range(200):
            match = re.search(rb"serving on port (\d+)", Path(log.name).read_bytes())
            if match:
                port = int(match.group(1))
                break
            time.sleep(0.05)
        assert port, Path(log.name).read_text()
        idle = rss_bytes(server.pid)
        stop = multiprocessing.Event()
        clients = []
        started = time.monotonic()
        for first in range(0, args.connections, PER_PROCESS):
            ready = multiprocessing.Event()
            proc = multiprocessing.Process(
                target=_client, args=(port, min(PER_PROCESS, args.connections - first), ready, stop)
            )
            proc.start()
            clients.append((proc, ready))
        for proc, ready in clients:
            while not ready.wait(1):
                assert proc.is_alive(), "a client process failed"
        opened = time.monotonic() - started
        time.sleep(2)
        loaded = rss_bytes(server.pid)
        metrics = subprocess.run(
            ["curl", "-s", f"http://127.0.0.1:{port}/metrics"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        current = re.search(r"^wsecho_connections_current (\d+)", metrics, re.MULTILINE)
        stop.set()
        for proc, _ in clients:
            proc.join(30)
        server.send_signal(signal.SIGTERM)
        server.wait(10)
    print(
        f"backend={args.backend} connections={current.group(1) if current else '?'} "
        f"opened_in={opened:.1f}s rss_idle={idle / 1e6:.1f}MB rss_loaded={loaded / 1e6:.1f}MB "
        f"per_connection={(loaded - idle) / args.connections:.0f}B"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
