"""The node.js baseline's /healthz has wsecho's contract: 200 "ok", and the run token in the
Echolab-Run-Token header when one is set (roles/container_target/files/nodejs_ws/server.js).

It runs the real server.js with node and the `ws` version the container target pins, installed
by npm into a temporary directory (from npm's cache when it has it)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

REPO = Path(__file__).resolve().parents[2]
SERVER_JS = REPO / "roles" / "container_target" / "files" / "nodejs_ws" / "server.js"
DEFAULTS = REPO / "roles" / "container_target" / "defaults" / "main.yml"


@pytest.fixture(scope="module")
def node_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NODE_PATH with the pinned `ws` (node and npm come with scripts/bootstrap.sh)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    assert node, "node is needed (scripts/bootstrap.sh installs it)"
    assert npm, "npm is needed (scripts/bootstrap.sh installs it)"
    match = re.search(r'^container_target_ws_version: "([^"]+)"', DEFAULTS.read_text(), re.M)
    assert match, f"no container_target_ws_version in {DEFAULTS}"
    prefix = tmp_path_factory.mktemp("node")
    options = ["--no-audit", "--no-fund", "--no-save", "--prefer-offline"]
    done = subprocess.run(
        [npm, "install", "--prefix", str(prefix), *options, f"ws@{match.group(1)}"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"npm install ws failed:\n{done.stderr[-2000:]}"
    return prefix / "node_modules"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def start_node(node_path: Path) -> Iterator[Callable[..., int]]:
    """Start server.js with extra environment variables; its port."""
    procs: list[subprocess.Popen[str]] = []

    def start(**env: str) -> int:
        port = _free_port()
        environ = dict(os.environ, NODE_PATH=str(node_path), PORT=str(port), **env)
        proc = subprocess.Popen(
            ["node", str(SERVER_JS)], env=environ, stdout=subprocess.PIPE, text=True
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert "listening" in proc.stdout.readline()
        return port

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def _healthz(port: int) -> tuple[int, str | None, str]:
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
                return answer.status, answer.headers["Echolab-Run-Token"], answer.read().decode()
        except ConnectionRefusedError:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_healthz_carries_the_run_token(start_node: Callable[..., int]) -> None:
    port = start_node(ECHOLAB_RUN_TOKEN="run-20261130.a1")
    assert _healthz(port) == (200, "run-20261130.a1", "ok")
    with connect(f"ws://127.0.0.1:{port}/", compression=None) as ws:
        ws.send('{"timestamp": 1}')
        assert ws.recv() == '{"timestamp": 1}'


def test_no_token_no_header(start_node: Callable[..., int]) -> None:
    assert _healthz(start_node()) == (200, None, "ok")
    assert _healthz(start_node(ECHOLAB_RUN_TOKEN="")) == (200, None, "ok")


def test_token_file_is_read_at_each_request(start_node: Callable[..., int], tmp_path: Path) -> None:
    """ECHOLAB_RUN_TOKEN_FILE: /healthz answers with what the file holds now; none: no header."""
    path = tmp_path / "run-token"
    port = start_node(ECHOLAB_RUN_TOKEN_FILE=str(path))
    assert _healthz(port) == (200, None, "ok")
    path.write_text("run-one\n")
    assert _healthz(port) == (200, "run-one", "ok")
    path.write_text("run-two\n")
    assert _healthz(port) == (200, "run-two", "ok")
    path.write_text("not a token\n")
    assert _healthz(port) == (200, None, "ok")


def test_bad_token_exits_2_with_one_line(node_path: Path) -> None:
    done = subprocess.run(
        ["node", str(SERVER_JS)],
        env=dict(os.environ, NODE_PATH=str(node_path), PORT="0", ECHOLAB_RUN_TOKEN="a b"),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("nodejs_ws: error: ECHOLAB_RUN_TOKEN must be 1-128 characters")
    assert done.stderr.count("\n") == 1
