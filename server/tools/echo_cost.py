"""Server CPU per round trip: wsecho (picows) against a naive picows echo, same client, same load.

    python server/tools/echo_cost.py [--connections 200] [--seconds 6] [--rounds 2]

A sanity check of the echo path, not the benchmark (that is bench/server_bench.py, against
node.js ws): it shows what wsecho's checks and counters cost compared with the four-line echo
that picows' README would suggest. Server on CPU 0, a picows client on CPU 1 (taskset), loopback;
prints round trips per second of server CPU time (utime + stime from /proc) for each, and the ratio.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NAIVE = """
import asyncio, sys, uvloop
from picows import ws_create_server, WSListener, WSMsgType
class Echo(WSListener):
    def on_ws_frame(self, transport, frame):
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code()); transport.disconnect(); return
        transport.send(frame.msg_type, frame.get_payload_as_memoryview())
async def main():
    server = await ws_create_server(lambda r: Echo(), "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
uvloop.run(main())
"""

CLIENT = """
import asyncio, os, sys, uvloop
from picows import ws_connect, WSListener, WSMsgType
MESSAGE = b'{"timestamp": 1700000000000}'
count = 0
class Client(WSListener):
    def on_ws_connected(self, transport): transport.send(WSMsgType.TEXT, MESSAGE)
    def on_ws_frame(self, transport, frame):
        global count
        count += 1
        transport.send(WSMsgType.TEXT, MESSAGE)
async def main():
    for _ in range(int(sys.argv[2])):
        await ws_connect(Client, f"ws://127.0.0.1:{sys.argv[1]}/")
    print("ready", flush=True)
    sys.stdin.readline()
    start = count
    await asyncio.sleep(float(sys.argv[3]))
    print(count - start, flush=True)
    os._exit(0)
uvloop.run(main())
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_client(
    client_py: Path, port: int, connections: int, seconds: float
) -> subprocess.Popen[str]:
    """The picows client on CPU 1 with its connections open; `go(client)` starts the load."""
    args = [str(client_py), str(port), str(connections), str(seconds)]
    client = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert client.stdout is not None
    assert client.stdout.readline().strip() == "ready"
    return client


def go(client: subprocess.Popen[str]) -> None:
    """Start the load: the client prints the round trips of its next `seconds`."""
    assert client.stdin is not None
    client.stdin.write("go\n")
    client.stdin.flush()


def measure(
    server_cmd: list[str], port: int, connections: int, seconds: float
) -> tuple[float, float]:
    """(round trips per second, round trips per server CPU second)."""
    with tempfile.TemporaryDirectory() as tmp:
        client_py = Path(tmp, "client.py")
        client_py.write_text(CLIENT)
        server = subprocess.Popen(["taskset", "-c", "0", *server_cmd], stderr=subprocess.DEVNULL)
        try:
            time.sleep(2)
            client = start_client(client_py, port, connections, seconds)
            assert client.stdout is not None
            cpu_before = cpu_seconds(server.pid)
            go(client)
            roundtrips = int(client.stdout.readline())
            cpu = cpu_seconds(server.pid) - cpu_before
            client.wait(10)
        finally:
            server.terminate()
            server.wait(10)
    return roundtrips / seconds, roundtrips / max(cpu, 1e-9)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--port", type=int, default=18_765)
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as naive:
        naive.write(NAIVE)
    servers = {
        "naive picows echo": [sys.executable, naive.name, str(args.port)],
        "wsecho (picows)": [
            sys.executable,
            "-m",
            "wsecho",
            "--host",
            "127.0.0.1",
            "--port",
            str(args.port),
        ],
    }
    per_cpu: dict[str, list[float]] = {name: [] for name in servers}
    for _ in range(args.rounds):
        for name, cmd in servers.items():  # alternate, so that machine noise hits both
            rate, efficiency = measure(cmd, args.port, args.connections, args.seconds)
            per_cpu[name].append(efficiency)
            print(f"{name:20} {rate:9.0f} round trips/s {efficiency:9.0f} per server CPU second")
    os.unlink(naive.name)
    best = {name: max(values) for name, values in per_cpu.items()}
    ratio = best["wsecho (picows)"] / best["naive picows echo"]
    print(f"wsecho / naive, round trips per server CPU second (best of {args.rounds}): {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
