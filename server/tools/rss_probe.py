"""Memory of wsecho with N open, idle WebSocket connections, and its connect ramp (the issue's
"<= 60 MB at 10,000" and "10,000 connections opened at 1,000/s with zero refused").

    python server/tools/rss_probe.py --backend picows --connections 10000 [--connect-rate 1000]
        [--workers N]

Starts wsecho on 127.0.0.1 (port 0) and reads its idle RSS; opens the connections from several
client processes (each under the 20,000 open-file limit) on a fixed schedule of --connect-rate
attempts per second, each one connect + upgrade + one 2017-style message echoed within 10 s;
waits two seconds for the server to settle and reads its RSS again (from /proc/<pid>/status: the
server's processes only, the clients are separate processes). Prints the RSS figures, the ramp
(attempts, achieved rate, and how many opened, were refused, reset or timed out) and how the
connections spread over the workers; then sends SIGTERM with every connection still open and
prints how long wsecho took to exit and how many connections got close 1001 within 5 s.
Loopback only.
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
CONNECT_TIMEOUT = 10.0  # seconds for connect + upgrade + first echo (as the bench's client)


CLOSE_WAIT = 5.0  # seconds after SIGTERM for every connection's close frame


def service_pids(pid: int) -> list[int]:
    """wsecho's process and its workers (`--workers`)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *map(int, children)]


def rss_bytes(pid: int) -> int:
    """Resident memory of wsecho's processes."""
    total = 0
    for each in service_pids(pid):
        text = Path(f"/proc/{each}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
        assert match
        total += int(match.group(1)) * 1024
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of wsecho's processes so far (from /proc/<pid>/stat)."""
    total = 0.0
    for each in service_pids(pid):
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _frame(payload: bytes) -> bytes:
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + key + masked


REQUEST = (
    "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _close_code(reader: asyncio.StreamReader) -> int:
    """The status code of the server's close frame (the connection is otherwise idle)."""
    first, second = await reader.readexactly(2)
    payload = await reader.readexactly(second & 0x7F)
    if first & 0x0F != 0x8 or len(payload) < 2:
        return 0
    return int.from_bytes(payload[:2], "big")


async def _open_one(port: int, writers: list[Connection]) -> None:
    """Connect, upgrade, echo one 2017 message; the connection then stays open, idle."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(REQUEST.format(key=key).encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ValueError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        message = json.dumps({"timestamp": int(time.time() * 1000)}).encode()
        writer.write(_frame(message))
        echo = await reader.readexactly(2 + len(message))
        if echo[2:] != message:
            raise ValueError("wrong echo")
    except BaseException:
        writer.close()
        raise
    writers.append((reader, writer))


def _outcome(exc: BaseException | None) -> str:
    if exc is None:
        return "open"
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (ConnectionResetError, asyncio.IncompleteReadError, BrokenPipeError)):
        return "reset"
    if isinstance(exc, asyncio.TimeoutError):
        return "timeout"
    return f"error: {exc!r}"


async def _hold(
    port: int,
    count: int,
    rate: float,
    results: multiprocessing.Queue[dict[str, float]],
    stop: multiprocessing.synchronize.Event,
) -> None:
    writers: list[Connection] = []
    outcomes: dict[str, float] = {}

    async def attempt() -> None:
        try:
            await asyncio.wait_for(_open_one(port, writers), CONNECT_TIMEOUT)
            exc = None
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as err:
            exc = err
        key = _outcome(exc)
        outcomes[key] = outcomes.get(key, 0) + 1

    loop = asyncio.get_running_loop()
    start = loop.time()
    tasks = []
    for i in range(count):
        # Attempts on a fixed schedule (rate per second), not "as fast as the last one finished":
        # a slow server must not slow the ramp down, it must show up as timeouts.
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(attempt()))
    last_attempt = loop.time() - start
    await asyncio.gather(*tasks)
    outcomes["ramp_seconds"] = last_attempt
    outcomes["completed_seconds"] = loop.time() - start
    results.put(outcomes)
    while not stop.is_set():
        await asyncio.sleep(0.2)
    # The server was sent SIGTERM: every connection should get close 1001.
    deadline = loop.time() + CLOSE_WAIT

    async def close_code(reader: asyncio.StreamReader) -> str:
        try:
            code = await asyncio.wait_for(_close_code(reader), deadline - loop.time())
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            return "no close frame"
        return f"close {code}"

    codes: dict[str, float] = {}
    for code in await asyncio.gather(*(close_code(reader) for reader, _ in writers)):
        codes[code] = codes.get(code, 0) + 1
    results.put(codes)
    for _, writer in writers:
        writer.close()


def _client(
    port: int,
    count: int,
    rate: float,
    results: multiprocessing.Queue[dict[str, float]],
    stop: multiprocessing.synchronize.Event,
) -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 100), hard))
    asyncio.run(_hold(port, count, rate, results, stop))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="picows", choices=("picows", "websockets"))
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=1, help="wsecho --workers (default 1)")
    parser.add_argument(
        "--connect-rate",
        type=float,
        default=1000.0,
        help="new connections per second, all client processes together (default 1000)",
    )
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
                "--workers",
                str(args.workers),
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
        cpu_before = cpu_seconds(server.pid)
        stop = multiprocessing.Event()
        results: multiprocessing.Queue[dict[str, float]] = multiprocessing.Queue()
        clients = []
        for first in range(0, args.connections, PER_PROCESS):
            count = min(PER_PROCESS, args.connections - first)
            share = args.connect_rate * count / args.connections  # all finish the ramp together
            proc = multiprocessing.Process(target=_client, args=(port, count, share, results, stop))
            proc.start()
            clients.append(proc)
        totals: dict[str, float] = {}
        ramp = completed = 0.0
        for _ in clients:
            outcome = results.get(timeout=args.connections / args.connect_rate + 120)
            ramp = max(ramp, outcome.pop("ramp_seconds"))
            completed = max(completed, outcome.pop("completed_seconds"))
            for key, value in outcome.items():
                totals[key] = totals.get(key, 0) + value
        server_cpu = cpu_seconds(server.pid) - cpu_before
        time.sleep(2)
        loaded = rss_bytes(server.pid)
        metrics = subprocess.run(
            ["curl", "-s", f"http://127.0.0.1:{port}/metrics"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        current = re.search(r"^wsecho_connections_current (\d+)", metrics, re.MULTILINE)
        spread = re.findall(
            r'^wsecho_worker_connections_current\{worker="(\d+)"\} (\d+)', metrics, re.MULTILINE
        )
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        stop.set()
        server.wait(30)
        exited = time.monotonic() - signalled
        closes: dict[str, float] = {}
        for _ in clients:
            for key, value in results.get(timeout=CLOSE_WAIT + 30).items():
                closes[key] = closes.get(key, 0) + value
        for proc in clients:
            proc.join(30)
    failed = {key: int(value) for key, value in totals.items() if key != "open"}
    print(
        f"backend={args.backend} connections={current.group(1) if current else '?'} "
        f"rss_idle={idle / 1e6:.1f}MB rss_loaded={loaded / 1e6:.1f}MB "
        f"per_connection={(loaded - idle) / args.connections:.0f}B"
    )
    print(
        f"ramp: {args.connections} attempts at {args.connect_rate:g}/s in {ramp:.1f} s "
        f"(achieved {args.connections / max(ramp, 1e-9):.0f}/s), all settled after "
        f"{completed:.1f} s; open={int(totals.get('open', 0))} failed={sum(failed.values())} "
        f"{failed if failed else ''}".rstrip()
    )
    print(
        f"server CPU during the ramp: {server_cpu:.1f} s "
        f"({server_cpu / args.connections * 1e6:.0f} us per connection)"
    )
    opened = sum(int(n) for _, n in spread) or 1
    print(
        f"workers={args.workers}: "
        + ", ".join(f"worker {w} {int(n)} ({int(n) / opened:.1%})" for w, n in spread)
    )
    print(
        f"SIGTERM: wsecho exited {server.returncode} after {exited:.2f} s; within "
        f"{CLOSE_WAIT:g} s: {', '.join(f'{k}: {int(v)}' for k, v in sorted(closes.items()))}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
