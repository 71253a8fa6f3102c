"""Run inside `unshare --net`: wsecho on 127.0.0.1 and N WebSocket connections that hold data.

    netns_holder.py DIR N

Writes DIR/pid (wsecho's pid) once wsecho serves; when DIR/go appears, opens N connections,
sends HOLD_BYTES on each and never reads the echoes (so they stay in kernel socket buffers),
writes DIR/held, and ends everything when DIR/stop appears (or after 60 s).
The amount (100 MiB for 100 connections) is large enough to stand out of what the rest of the
machine does meanwhile (sockstat's memory is kernel-wide) and far below the kernel's TCP memory
pressure threshold (`net.ipv4.tcp_mem`, 1.5 GB on these machines).
"""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

HOLD_BYTES = 1024 * 1024
UPGRADE = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
PAYLOAD = b"x" * 4096
# A masked binary frame (mask 0: the payload goes out as is).
FRAME = bytes([0x82, 0xFE]) + struct.pack("!H", len(PAYLOAD)) + b"\0\0\0\0" + PAYLOAD


def wait_file(path: Path, limit: float = 60.0) -> bool:
    deadline = time.monotonic() + limit
    while not path.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def open_holding(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(UPGRADE)
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    for _ in range(HOLD_BYTES // len(PAYLOAD)):
        sock.sendall(FRAME)
    return sock


def main() -> None:
    out, count = Path(sys.argv[1]), int(sys.argv[2])
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    log = (out / "wsecho.log").open("wb")
    argv = [sys.executable, "-m", "wsecho", "--backend", "picows", "--host", "127.0.0.1"]
    server = subprocess.Popen([*argv, "--port", "0"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not (match := re.search(r"serving on port (\d+)", (out / "wsecho.log").read_text())):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("wsecho did not start")
            time.sleep(0.05)
        (out / "pid").write_text(str(server.pid))
        if not wait_file(out / "go"):
            return
        held = [open_holding(int(match.group(1))) for _ in range(count)]
        (out / "held").write_text(str(len(held)))
        wait_file(out / "stop")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
