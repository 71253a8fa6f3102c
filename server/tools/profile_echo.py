"""Where wsecho's echo path spends its time: py-spy samples of the server under load.

    python server/tools/profile_echo.py [--connections 200] [--seconds 8] [--raw FILE]

Runs under the bench lock (flock /tmp/echolab-bench.lock ...): it loads both cores. wsecho
(picows backend) on CPU 0, the picows client of echo_cost.py on CPU 1 (each connection sends its
next message when the echo arrives), loopback; py-spy (`pip install py-spy`) samples the server
with native frames for --seconds and the samples are grouped by the innermost frame: system
calls (write, read, epoll_pwait), wsecho's Python code, uvloop/libuv, the rest of CPython.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from echo_cost import CLIENT, go, start_client

GROUPS = (
    ("write() system call", ("write (libc",)),
    ("read() system call", ("read (libc",)),
    ("epoll_pwait() (waiting for events)", ("epoll_pwait",)),
    ("wsecho's Python code", ("wsecho/",)),
    ("uvloop and libuv", ("loop.c", "uv__", "stream.c", "core.c", "linux.c", "handles/")),
)


def group(frame: str) -> str:
    for name, markers in GROUPS:
        if any(marker in frame for marker in markers):
            return name
    return "CPython and the rest"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--port", type=int, default=18_766)
    parser.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks here")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        print("profile_echo: py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        client_py = Path(tmp, "client.py")
        client_py.write_text(CLIENT)
        raw = args.raw or Path(tmp, "stacks.txt")
        wsecho = [sys.executable, "-m", "wsecho", "--host", "127.0.0.1", "--port", str(args.port)]
        server = subprocess.Popen(
            ["taskset", "-c", "0", *wsecho],
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(2)
            client = start_client(client_py, args.port, args.connections, args.seconds + 3)
            assert client.stdout is not None
            go(client)
            time.sleep(1)
            record = [py_spy, "record", "--native", "--rate", "500", "--format", "raw", "-o"]
            subprocess.run(
                [*record, str(raw), "--duration", str(int(args.seconds)), "--pid", str(server.pid)],
                capture_output=True,
                check=True,
            )
            roundtrips = int(client.stdout.readline())
            client.wait(10)
        finally:
            server.terminate()
            server.wait(10)
        by_group: collections.Counter[str] = collections.Counter()
        by_line: collections.Counter[str] = collections.Counter()
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            innermost = stack.split(";")[-1]
            by_group[group(innermost)] += int(count)
            if "wsecho/" in innermost:
                by_line[innermost] += int(count)
    total = sum(by_group.values())
    print(f"{roundtrips / (args.seconds + 3):.0f} round trips/s; {total} samples of the server")
    for name, count in by_group.most_common():
        print(f"{count / total:6.1%}  {name}")
    print("wsecho's lines with the most samples:")
    for frame, count in by_line.most_common(5):
        print(f"{count / total:6.1%}  {frame}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
