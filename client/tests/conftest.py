"""Fixtures of the wsswarm tests: a real wsecho, the misbehaving fault server, a run helper.

Everything listens on 127.0.0.1 port 0. Waits scale with WSSWARM_TEST_TIMEOUT_FACTOR.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TIMEOUT_FACTOR = float(os.environ.get("WSSWARM_TEST_TIMEOUT_FACTOR", "1"))
HERE = Path(__file__).parent
_WSECHO_PORT = re.compile(r"serving on port (\d+)")


def timeout(seconds: float) -> float:
    return seconds * TIMEOUT_FACTOR


class Server:
    """A server subprocess that prints its port; stopped (and reaped) by the fixture."""

    def __init__(self, argv: list[str], pattern: re.Pattern[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout(20)
        while time.monotonic() < deadline:
            match = pattern.search(self.log())
            if match:
                self.port = int(match.group(1))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"{argv} did not start; its output:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def url(self, path: str = "/") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def http_get(self, path: str) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.port}{path}", timeout=timeout(5)
        ) as response:
            return str(response.read().decode())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout(5))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Wsecho(Server):
    def metric(self, name: str) -> int:
        for line in self.http_get("/metrics").splitlines():
            if line.startswith(f"wsecho_{name} "):
                return int(float(line.split()[1]))
        raise AssertionError(f"wsecho_{name} missing from /metrics")

    def messages_total(self) -> int:
        return self.metric("messages_total")

    def connections_total(self) -> int:
        """WebSocket connections opened since wsecho started (/healthz requests not counted)."""
        return self.metric("connections_total")


class FaultServer(Server):
    def stats(self) -> dict[str, Any]:
        return dict(json.loads(self.http_get("/stats")))


@pytest.fixture(scope="module")
def wsecho(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wsecho]:
    """The real echo service of echolab (picows backend), as deployed in every target."""
    log = tmp_path_factory.mktemp("wsecho") / "wsecho.log"
    argv = [sys.executable, "-m", "wsecho", "--backend", "picows", "--host", "127.0.0.1"]
    server = Wsecho([*argv, "--port", "0"], _WSECHO_PORT, log)
    yield server
    server.stop()


RUN_TOKEN = "echolab-test.run-1"


@pytest.fixture(scope="module")
def wsecho_with_token(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wsecho]:
    """wsecho started with --run-token RUN_TOKEN, as the kit deploys it for a run."""
    log = tmp_path_factory.mktemp("wsecho") / "wsecho.log"
    argv = [sys.executable, "-m", "wsecho", "--backend", "picows", "--host", "127.0.0.1"]
    server = Wsecho([*argv, "--port", "0", "--run-token", RUN_TOKEN], _WSECHO_PORT, log)
    yield server
    server.stop()


@pytest.fixture
def fault_server(tmp_path: Path) -> Iterator[Callable[..., FaultServer]]:
    """Factory: start tests/faultserver.py with extra arguments."""
    started: list[FaultServer] = []

    def start(*args: str) -> FaultServer:
        argv = [sys.executable, str(HERE / "faultserver.py"), *args]
        server = FaultServer(argv, re.compile(r"PORT (\d+)"), tmp_path / f"fault{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@dataclass
class RunResult:
    returncode: int
    stdout: str
    stderr: str
    out: Path
    elapsed: float

    @property
    def summary(self) -> dict[str, Any]:
        return dict(json.loads((self.out / "summary.json").read_text()))

    def worker_records(self, index: int) -> list[dict[str, Any]]:
        lines = (self.out / f"worker-{index}.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]


@pytest.fixture
def wsswarm(tmp_path: Path) -> Callable[..., RunResult]:
    """Run `python -m wsswarm run ARGS --out DIR` as a real subprocess (its own process group)."""
    counter = iter(range(1000))

    def run(*args: str, limit: float = 60, out: bool = True, **popen: Any) -> RunResult:
        out_dir = tmp_path / f"run{next(counter)}"
        argv = [sys.executable, "-m", "wsswarm", "run", *args]
        if out:
            argv += ["--out", str(out_dir)]
        started = time.monotonic()
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout(limit), check=False, **popen
        )
        return RunResult(
            proc.returncode, proc.stdout, proc.stderr, out_dir, time.monotonic() - started
        )

    return run


@pytest.fixture
def in_private_netns() -> Callable[[Path], subprocess.CompletedProcess[str]]:
    """Run a shell script in a network namespace of its own (`unshare --net`: loopback only, so
    nothing it does can reach another address); fail when the script fails."""

    def run(script: Path) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["unshare", "--net", "sh", str(script)],
            capture_output=True, text=True, timeout=timeout(60), check=False,
            start_new_session=True,
        )  # fmt: skip
        # unshare may be forbidden in some containers: that must fail loudly, not skip.
        assert proc.returncode == 0, proc.stderr + proc.stdout
        return proc

    return run
