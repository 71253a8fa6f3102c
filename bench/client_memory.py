"""Where a wsswarm connection's memory goes: RSS per connection of one worker, by ramp speed.

    .venv/bin/python bench/client_memory.py [--connections 6000] [--rates 300,3000]
                                            [--source-address 127.0.0.1]

Starts wsecho (picows) on 127.0.0.1, then for each connect rate two fresh interpreters, each
running one wsswarm worker in-process: a quiet ramp (no message until all are open: the cost
of a connection itself) and a busy one (each connection starts its closed loop once open, as
`wsswarm run` does). RSS (from /proc) just before the ramp, 1 s after the last connection
opened, and after 3 s more of closed-loop traffic; per connection = growth / open
connections; and the most attempts in flight at once (sampled every 0.1 s). With
`--source-address`, every case runs twice, without and with the sockets bound to that address
(wsswarm's own socket with IP_BIND_ADDRESS_NO_PORT instead of one the loop makes), so the two
compare within one run. The difference
between a quiet and a busy ramp is heap that the attempts in flight leave fragmented between
the connections that stay, not memory a connection holds (short-lived objects per attempt,
besides the transport it opens, since 2026-11-27: ~0.7 KB while it waits for the upgrade
answer, ~2.4 KB while its TCP connect is pending; ~2.7 KB waiting for the answer before). Not
a test: it prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _benchlib import parse_int_list, table, venv_bin


def rss() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child(port: int, connections: int, rate: float, busy: bool, source: str | None) -> None:
    """One worker in this process; prints one JSON line."""
    import uvloop  # noqa: PLC0415 - the worker's loop, as in `wsswarm run`
    from wsswarm import connections as conn_classes  # noqa: PLC0415
    from wsswarm import worker  # noqa: PLC0415

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    cfg = worker.WorkerConfig(
        index=0, url=f"ws://127.0.0.1:{port}/", address=("127.0.0.1", port),
        family=socket.AF_INET, connections=connections, connect_rate=rate, offset_s=0.0,
        t0=time.time() + 0.5, tick_s=1.0, mode="closed", rate=0.0, compat=False,
        connect_timeout=10.0, reconnect=False, out_dir=None, label="", host="",
        source_addresses=(source,) if source else (),
    )  # fmt: skip

    async def main() -> None:
        w = worker.Worker(cfg, None)
        conn_classes.ClosedConn.w = w
        # Quiet: no message until every connection is open. Busy: as `wsswarm run` does, each
        # connection starts its closed loop as soon as it is open, so the ramp competes with
        # the traffic of the connections already open (handshakes take longer, more at once).
        w.sending = busy
        result: dict[str, float] = {}

        async def measure() -> None:
            before = rss()
            in_flight = 0
            while w.ramp_done_at is None:
                in_flight = max(in_flight, w.dialer.in_flight)
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
            opened = max(w.open_now, 1)
            result.update(open=w.open_now, failed=w.failed, idle=(rss() - before) / opened)
            result["in_flight"] = in_flight
            if not busy:
                w.sending = True
                now = time.perf_counter_ns()
                for conn in list(w.conns):
                    conn.send_next(now)
            await asyncio.sleep(3.0)
            result["traffic"] = (rss() - before) / opened
            w.request_stop("completed", "")

        task = asyncio.get_running_loop().create_task(measure())
        await w.run()
        await task
        print(json.dumps(result), flush=True)

    uvloop.run(main())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=6000)
    p.add_argument("--rates", default="300,3000", help="connect rates, comma-separated")
    p.add_argument(
        "--source-address",
        default=None,
        metavar="IP",
        help="also run every case with the sockets bound to this address (e.g. 127.0.0.1)",
    )
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        port, connections, rate, busy, source = args.child
        child(int(port), int(connections), float(rate), busy == "1", source or None)
        return 0
    log = Path(tempfile.mkstemp(prefix="echolab-client-memory-", suffix=".log")[1])
    cmd = [venv_bin("wsecho"), "--backend", "picows", "--host", "127.0.0.1", "--port", "0"]
    with log.open("wb") as out:
        server = subprocess.Popen([*cmd, "--max-connections", "50000"], stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 20
        port = None
        while port is None and time.monotonic() < deadline and server.poll() is None:
            match = re.search(r"serving on port (\d+)", log.read_text())
            port = int(match.group(1)) if match else None
            time.sleep(0.05)
        if port is None:
            print(f"wsecho did not start: {log.read_text()}", file=sys.stderr)
            return 1
        rows = []
        sources = ["", args.source_address] if args.source_address else [""]
        cases = [(r, b, s) for r in parse_int_list(args.rates) for b in (0, 1) for s in sources]
        for rate, busy, source in cases:
            argv = [sys.executable, __file__, "--child", str(port), str(args.connections)]
            argv += [str(rate), str(busy), source]
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                print(f"rate {rate}: failed: {proc.stderr[-2000:]}", file=sys.stderr)
                return 1
            r = json.loads(lines[-1])
            rows.append(
                [f"{rate:,}/s", "yes" if busy else "no", source or "-", f"{int(r['open']):,}",
                 f"{int(r['failed']):,}", f"{int(r['in_flight']):,}", f"{r['idle'] / 1024:.2f}",
                 f"{r['traffic'] / 1024:.2f}"]
            )  # fmt: skip
        print(f"one wsswarm worker, {args.connections:,} connections to wsecho on 127.0.0.1")
        headers = ["ramp", "traffic in ramp", "source address", "open", "failed", "max in flight"]
        print(table([*headers, "KiB/conn all open", "KiB/conn 3 s later"], rows))
    finally:
        server.terminate()
        server.wait(timeout=10)
        log.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
