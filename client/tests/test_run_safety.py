"""`wsswarm run` sends load only to a target that proves it is this run's and speaks WebSocket.

Against a real wsecho (with and without --run-token) and the fault server, on 127.0.0.1: a
missing or wrong run token, or a probe answered by anything but an upgrade, ends the run
before any worker opens a connection, each with its own exit status.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# Fixture types live in conftest.py, which importlib mode does not let us import: alias them.
Wsecho = Any
FaultServer = Any
RunResult = Any

RUN_TOKEN = "echolab-test.run-1"  # conftest's wsecho_with_token
EXIT_WRONG_TARGET = 4
EXIT_NOT_WEBSOCKET = 5
SMALL = ("--processes", "1", "--connections", "20", "--connect-rate", "200")
SHORT = ("--warmup", "0", "--duration", "1")


def test_correct_token_runs(wsecho_with_token: Wsecho, wsswarm: Callable[..., RunResult]) -> None:
    """The target's /healthz carries the run's token: the run goes ahead as usual."""
    before = wsecho_with_token.connections_total()
    result = wsswarm(
        "--url", wsecho_with_token.url("/"), "--run-token", RUN_TOKEN, *SMALL, *SHORT
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.summary["connections"]["open"] == 20
    # The probe's connection and the workers' 20.
    assert wsecho_with_token.connections_total() - before == 21


def test_wrong_token_sends_no_load(
    wsecho_with_token: Wsecho, wsswarm: Callable[..., RunResult]
) -> None:
    """Another run's target: exit 4, saying which token it carries; not one connection."""
    before = wsecho_with_token.connections_total()
    result = wsswarm(
        "--url", wsecho_with_token.url("/"), "--run-token", "other-run", *SMALL, *SHORT
    )  # fmt: skip
    assert result.returncode == EXIT_WRONG_TARGET, result.stderr
    assert "not this run's target" in result.stderr
    assert f"carries run token '{RUN_TOKEN}', not 'other-run'" in result.stderr
    assert "Traceback" not in result.stderr
    assert wsecho_with_token.connections_total() == before
    assert not result.out.exists()  # no worker ever started


def test_missing_token_sends_no_load(wsecho: Wsecho, wsswarm: Callable[..., RunResult]) -> None:
    """A wsecho started without --run-token answers /healthz without the header: exit 4."""
    before = wsecho.connections_total()
    result = wsswarm("--url", wsecho.url("/"), "--run-token", RUN_TOKEN, *SMALL, *SHORT)
    assert result.returncode == EXIT_WRONG_TARGET, result.stderr
    assert "carries no Echolab-Run-Token" in result.stderr
    assert wsecho.connections_total() == before


def test_token_check_is_not_skipped_by_no_probe(
    fault_server: Callable[..., FaultServer], wsswarm: Callable[..., RunResult]
) -> None:
    """Some other web server (404 on /healthz): exit 4 even with --no-probe; no upgrade asked."""
    server = fault_server()
    result = wsswarm(
        "--url", server.url("/"), "--run-token", RUN_TOKEN, "--no-probe", *SMALL, *SHORT
    )  # fmt: skip
    assert result.returncode == EXIT_WRONG_TARGET, result.stderr
    assert "answered GET /healthz with HTTP 404" in result.stderr
    stats = server.stats()
    assert stats["health"] == 1
    assert stats["upgrades"] == []


def test_probe_answered_by_404_starts_no_worker(
    fault_server: Callable[..., FaultServer], wsswarm: Callable[..., RunResult]
) -> None:
    """The 2026-11-30 case: the probe's upgrade gets HTTP 404 from another machine. Exit 5 at
    once; the probe's request is the only one the server ever sees."""
    server = fault_server()
    result = wsswarm("--url", server.url("/fault/404"), *SMALL, *SHORT)
    assert result.returncode == EXIT_NOT_WEBSOCKET, result.stderr
    assert "not a WebSocket server" in result.stderr
    assert "HTTP 404" in result.stderr
    assert len(server.stats()["upgrades"]) == 1
    assert not result.out.exists()


def test_right_token_but_no_websocket_starts_no_worker(
    fault_server: Callable[..., FaultServer], wsswarm: Callable[..., RunResult]
) -> None:
    """The token matches, the upgrade is refused (503): still no worker (exit 5)."""
    server = fault_server("--health-token", RUN_TOKEN)
    result = wsswarm(
        "--url", server.url("/fault/503"), "--run-token", RUN_TOKEN, *SMALL, *SHORT
    )  # fmt: skip
    assert result.returncode == EXIT_NOT_WEBSOCKET, result.stderr
    assert "HTTP 503" in result.stderr
    stats = server.stats()
    assert stats["health"] == 1
    assert len(stats["upgrades"]) == 1


def test_right_token_on_the_fault_server_runs(
    fault_server: Callable[..., FaultServer], wsswarm: Callable[..., RunResult]
) -> None:
    """The control of the two tests above: same server, token and echo path: the run goes."""
    server = fault_server("--health-token", RUN_TOKEN)
    result = wsswarm("--url", server.url("/"), "--run-token", RUN_TOKEN, *SMALL, *SHORT)
    assert result.returncode == 0, result.stderr
    assert len(server.stats()["upgrades"]) == 21
