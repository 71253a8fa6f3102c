"""Churn: connect / echo / close cycles against wsecho; does it give back its fds and memory?

wsecho runs on CPU 0; this script (CPU 1) runs `--concurrency` loops, each doing cycles of: TCP
connect, WebSocket upgrade (the accept value checked), one masked text message and its echo, a
close handshake (1000), the server's TCP close. A warm-up batch first (so the allocator's
first growth is not counted), then wsecho's open fds and RSS are read, then `--cycles` more
cycles, then they are read again once wsecho has closed every connection. Both must be back
within `--bound` percent. See bench/README.md.

    .venv/bin/python bench/churn.py [--cycles 100000] [--warmup-cycles 2000] [--concurrency 50]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import json
import os
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from _benchlib import (
    CLIENT_CPU,
    DEFAULT_NICE,
    SERVER_CPU,
    BenchError,
    begin,
    check_machine,
    serving,
    table,
)

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CYCLE_TIMEOUT = 30.0  # seconds for one whole cycle; beyond, it counts as failed ("timeout")


class CycleError(Exception):
    """A cycle did not go as RFC 6455 says: the message names what differed."""


def masked_frame(opcode: int, payload: bytes) -> bytes:
    """One client frame (FIN set, masked), payload under 126 bytes."""
    key = os.urandom(4)
    body = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + key + body


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    if b1 & 0x80:
        raise CycleError("the server masked a frame")
    size = b1 & 0x7F
    if size >= 126:
        raise CycleError(f"unexpected long frame (length code {size})")
    return b0 & 0x0F, await reader.readexactly(size)


async def cycle(port: int, n: int) -> None:
    """One connect / upgrade / echo / close cycle; raises on any deviation."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        key = base64.b64encode(os.urandom(16))
        writer.write(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = await reader.readuntil(b"\r\n\r\n")
        status, *lines = head.split(b"\r\n")
        fields = (line.partition(b":") for line in lines)
        headers = {name.strip().lower(): value.strip() for name, _, value in fields}
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        if headers.get(b"sec-websocket-accept") != accept or not status.startswith(b"HTTP/1.1 101"):
            raise CycleError(f"bad upgrade answer {head[:80]!r}")
        message = b'{"timestamp": %d}' % n
        writer.write(masked_frame(0x1, message))
        if await read_frame(reader) != (0x1, message):
            raise CycleError("the echo differs from the message")
        writer.write(masked_frame(0x8, struct.pack("!H", 1000)))
        opcode, payload = await read_frame(reader)
        if opcode != 0x8 or payload[:2] != struct.pack("!H", 1000):
            raise CycleError(f"expected a close 1000, got opcode {opcode} {payload[:2]!r}")
        if await reader.read(1) != b"":
            raise CycleError("data after the close frame")
    finally:
        writer.close()
        await writer.wait_closed()


@dataclass
class Batch:
    cycles: int = 0
    failed: collections.Counter[str] = field(default_factory=collections.Counter)
    seconds: float = 0.0


async def run_cycles(port: int, total: int, concurrency: int, rate: float) -> Batch:
    """`total` cycles on `concurrency` loops, started at most `rate` per second (a slot missed
    is not made up later: no burst after a stall); failures counted by kind, never retried."""
    batch = Batch()
    counter = iter(range(total))
    started = time.monotonic()
    next_slot = started

    async def loop() -> None:
        nonlocal next_slot
        for n in counter:
            slot = max(next_slot, time.monotonic())
            next_slot = slot + 1 / rate
            if slot > time.monotonic():
                await asyncio.sleep(slot - time.monotonic())
            try:
                await asyncio.wait_for(cycle(port, n), CYCLE_TIMEOUT)
            except (asyncio.TimeoutError, TimeoutError):
                batch.failed["timeout"] += 1
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                batch.failed[type(exc).__name__] += 1
            except CycleError as exc:
                batch.failed[str(exc)] += 1
            batch.cycles += 1

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    batch.seconds = time.monotonic() - started
    return batch


@dataclass
class Reading:
    fds: int
    rss: int
    connections: int  # TCP connections of the process (listening socket excluded)


def settle(proc: psutil.Process, timeout: float = 30.0) -> Reading:
    """wsecho's fds and RSS once it holds no client connection and its fd count has stopped
    changing for a second (closes finish asynchronously in its loop)."""
    deadline = time.monotonic() + timeout
    last: tuple[int, int] | None = None
    stable_since = time.monotonic()
    while True:
        conns = sum(1 for c in proc.net_connections("tcp") if c.status != psutil.CONN_LISTEN)
        now = (proc.num_fds(), conns)
        if now != last:
            last, stable_since = now, time.monotonic()
        elif conns == 0 and time.monotonic() - stable_since >= 1.0:
            return Reading(now[0], proc.memory_info().rss, conns)
        if time.monotonic() > deadline:
            return Reading(now[0], proc.memory_info().rss, conns)
        time.sleep(0.1)


@dataclass
class ChurnResult:
    warmup: Batch
    measured: Batch
    before: Reading
    after: Reading

    def growth(self, bound: float) -> dict[str, tuple[int, int, float, bool]]:
        """name -> (before, after, percent, within bound)."""
        out = {}
        for name in ("fds", "rss"):
            a, b = getattr(self.before, name), getattr(self.after, name)
            percent = 100 * (b - a) / a
            out[name] = (a, b, percent, b <= a * (1 + bound / 100))
        return out

    def passed(self, bound: float) -> bool:
        return (
            not self.measured.failed
            and not self.warmup.failed
            and self.after.connections == 0
            and all(ok for *_, ok in self.growth(bound).values())
        )


def churn(
    work: Path,
    *,
    cycles: int,
    warmup_cycles: int,
    concurrency: int,
    rate: float,
    backend: str = "picows",
) -> ChurnResult:
    with serving(f"wsecho-{backend}", work) as (server, port):
        proc = psutil.Process(server.pid)
        warmup = asyncio.run(run_cycles(port, warmup_cycles, concurrency, rate))
        before = settle(proc)
        measured = asyncio.run(run_cycles(port, cycles, concurrency, rate))
        after = settle(proc)
    return ChurnResult(warmup, measured, before, after)


def render(result: ChurnResult, bound: float) -> str:
    rows = []
    for name, (a, b, percent, ok) in result.growth(bound).items():
        unit = (lambda v: f"{v / 1e6:.2f} MB") if name == "rss" else str
        verdict = "ok" if ok else f"GROWS (bound {bound:g}%)"
        rows.append([name, unit(a), unit(b), f"{percent:+.2f}%", verdict])
    m, w = result.measured, result.warmup
    lines = [
        table(["wsecho", "after warm-up", "after all closed", "growth", "verdict"], rows),
        f"warm-up: {w.cycles:,} cycles in {w.seconds:.1f} s ({w.cycles / w.seconds:,.0f}/s), "
        f"failed {dict(w.failed) or 0}; measured: {m.cycles:,} "
        f"cycles in {m.seconds:.1f} s ({m.cycles / m.seconds:,.0f}/s), failed "
        f"{dict(m.failed) or 0}; client connections left in wsecho: {result.after.connections}",
    ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cycles", type=int, default=100_000, help="measured cycles (100000)")
    p.add_argument("--warmup-cycles", type=int, default=5_000, help="cycles before (5000)")
    p.add_argument("--concurrency", type=int, default=50, help="cycles in flight at most (50)")
    p.add_argument(
        "--rate", type=float, default=1000.0, help="cycles started per second at most (1000)"
    )
    p.add_argument("--backend", choices=["picows", "websockets"], default="picows")
    p.add_argument("--bound", type=float, default=2.0, help="allowed growth, percent (2)")
    p.add_argument("--nice", type=int, default=DEFAULT_NICE, help=f"niceness ({DEFAULT_NICE})")
    p.add_argument("--json", type=Path, help="also write the result as JSON to this file")
    args = p.parse_args(argv)
    if min(args.cycles, args.warmup_cycles, args.concurrency, args.rate) <= 0:
        p.error("--cycles, --warmup-cycles, --concurrency and --rate must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    check_machine()
    args = parse_args(argv)
    started = begin(args.nice)
    print(
        f"wsecho ({args.backend}) on CPU {SERVER_CPU}, churn client on CPU {CLIENT_CPU}: "
        f"{args.warmup_cycles:,} + {args.cycles:,} cycles, at most {args.concurrency} at once "
        f"and {args.rate:g}/s",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="echolab-churn-") as work:
        try:
            result = churn(
                Path(work),
                cycles=args.cycles,
                warmup_cycles=args.warmup_cycles,
                concurrency=args.concurrency,
                rate=args.rate,
                backend=args.backend,
            )
        except BenchError as exc:
            print(f"churn failed: {exc}", file=sys.stderr)
            return 1
    cmd = " ".join(["bench/churn.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"\n{started:%Y-%m-%d %H:%M} UTC, `{cmd}`")
    print(render(result, args.bound))
    if args.json is not None:
        growth = {
            k: dict(zip(("before", "after", "percent", "ok"), v, strict=True))
            for k, v in result.growth(args.bound).items()
        }
        args.json.write_text(json.dumps({"growth": growth, "failed": dict(result.measured.failed)}))
    return 0 if result.passed(args.bound) else 1


if __name__ == "__main__":
    sys.exit(main())
