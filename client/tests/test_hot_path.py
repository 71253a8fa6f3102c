"""The closed loop's two hot paths: the compiled engine (wsswarm._engine) and Python.

The engine is driven over a real loopback TCP connection whose server side is played by the
test; the whole run goes against the fault server, once per hot path, with connections whose
echoes go wrong only after the engine owns them.
"""

from __future__ import annotations

import os
import random
import socket
import time
from array import array
from collections.abc import Callable, Iterator
from time import perf_counter_ns
from typing import Any

import pytest
from wsswarm import hotpath, latency
from wsswarm.wsclient import TEXT, masked_frame, server_frame

# Fixture types live in conftest.py, which importlib mode does not let us import: alias them.
FaultServer = Any
RunResult = Any

# A pure build (WSSWARM_PURE=1) has no engine by design: its tests are skipped there, and the
# Python path and the fallback are tested. Everywhere else a missing engine is a broken build
# and fails here, not skipped.
PURE = os.environ.get("WSSWARM_PURE", "") not in ("", "0")
try:
    from wsswarm import _engine
except ImportError:
    if not PURE:
        raise
    _engine = None  # type: ignore[assignment]
HAS_ENGINE = _engine is not None
needs_engine = pytest.mark.skipif(
    not HAS_ENGINE, reason="WSSWARM_PURE=1: built without wsswarm._engine"
)


class Payloads:
    """The worker's side of the engine: the message of each millisecond, built once."""

    def __init__(self) -> None:
        self.asked: list[int] = []
        self.frames: dict[int, tuple[bytes, bytes]] = {}

    def __call__(self, now_ms: int) -> tuple[bytes, bytes]:
        self.asked.append(now_ms)
        if now_ms not in self.frames:
            payload = b'{"timestamp":%d}' % now_ms
            self.frames[now_ms] = (masked_frame(TEXT, payload), server_frame(TEXT, payload))
        return self.frames[now_ms]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(client, server): one established TCP connection over 127.0.0.1."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    client.setblocking(False)
    server.settimeout(5)
    yield client, server
    client.close()
    server.close()


def poll_until(engine: Any, done: Callable[[Any], bool]) -> Any:
    """Call engine.poll() until `done(its result)`, for up to 5 s."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        result = engine.poll()
        if done(result):
            return result
        time.sleep(0.001)
    raise AssertionError("the engine did not get there within 5 s")


def adopted(
    pair: tuple[socket.socket, socket.socket],
) -> tuple[Any, Payloads, object, bytes, int]:
    """An engine holding the client side with one message in flight: (engine, payloads,
    conn, echo expected, sent_ns)."""
    client, _server = pair
    payloads = Payloads()
    engine = _engine.Engine(payloads, time.time_ns() - perf_counter_ns())
    conn = object()
    echo = server_frame(TEXT, b'{"timestamp":1}')
    sent_ns = perf_counter_ns()
    engine.adopt(conn, client.fileno(), sent_ns, echo)
    return engine, payloads, conn, echo, sent_ns


@needs_engine
def test_engine_times_an_exact_echo_and_sends_the_current_message(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """An exact echo: one latency (µs, from the send), the next message of this ms sent."""
    engine, payloads, _conn, echo, sent_ns = adopted(pair)
    _client, server = pair
    time.sleep(0.002)
    server.sendall(echo)
    before = perf_counter_ns()
    assert poll_until(engine, lambda _r: engine.take_sent() == 1) is None
    after = perf_counter_ns()
    latencies = array("q", engine.take_latencies())
    assert len(latencies) == 1
    assert 2000 <= latencies[0] <= (after - sent_ns) // 1000
    assert (before - sent_ns) // 1000 - 5000 <= latencies[0]
    (now_ms,) = payloads.asked
    frame, next_echo = payloads.frames[now_ms]
    assert server.recv(100) == frame
    assert engine.held == 1
    assert engine.take_latencies() == b""
    # The message in flight is now that one: its echo is timed too, the old one is not.
    server.sendall(next_echo)
    poll_until(engine, lambda _r: engine.take_sent() == 1)
    assert len(engine.take_latencies()) == 8
    assert engine.ejected == 0


@needs_engine
def test_engine_ejects_a_split_echo_with_the_bytes_it_read(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Half an echo: the connection leaves the engine with those bytes and its message."""
    engine, _payloads, conn, echo, sent_ns = adopted(pair)
    _client, server = pair
    server.sendall(echo[:5])
    ejected = poll_until(engine, lambda r: r is not None)
    assert ejected == [(conn, echo[:5], sent_ns, echo, None)]
    assert engine.held == 0
    assert engine.ejected == 1
    assert engine.take_latencies() == b""
    # Out of the engine: the rest is not read by it.
    server.sendall(echo[5:])
    time.sleep(0.01)
    assert engine.poll() is None


@needs_engine
def test_engine_ejects_a_wrong_echo_and_end_of_stream(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """Another text, or the server closing: ejected, nothing timed, nothing sent."""
    engine, _payloads, conn, echo, sent_ns = adopted(pair)
    client, server = pair
    wrong = server_frame(TEXT, b'{"timestamp":2}')
    server.sendall(wrong)
    assert poll_until(engine, lambda r: r is not None) == [(conn, wrong, sent_ns, echo, None)]
    engine.adopt(conn, client.fileno(), sent_ns, echo)
    server.close()
    assert poll_until(engine, lambda r: r is not None) == [(conn, b"", sent_ns, echo, None)]
    assert engine.take_latencies() == b""
    assert engine.take_sent() == 0


@needs_engine
def test_engine_gives_every_connection_back(pair: tuple[socket.socket, socket.socket]) -> None:
    """release_all: each connection with its message in flight; adopting twice is refused."""
    engine, _payloads, conn, echo, sent_ns = adopted(pair)
    client, _server = pair
    with pytest.raises(ValueError, match="already in the engine"):
        engine.adopt(conn, client.fileno(), sent_ns, echo)
    assert engine.release_all() == [(conn, sent_ns, echo)]
    assert engine.held == 0
    assert engine.release_all() == []


def test_compiled_is_refused_where_it_cannot_run() -> None:
    """--hot-path compiled with --compat, the open loop or no engine is a usage error; auto
    falls back to Python and says why."""
    if not HAS_ENGINE:
        path, line = hotpath.resolve("auto", mode="closed", compat=False)
        assert (path, line.split(":")[:2]) == (
            "python",
            ["hot path", " python (wsswarm._engine not importable"],
        )
        with pytest.raises(ValueError, match="not importable"):
            hotpath.resolve("compiled", mode="closed", compat=False)
    else:
        assert hotpath.resolve("auto", mode="closed", compat=False)[0] == "compiled"
    assert hotpath.resolve("python", mode="closed", compat=False)[0] == "python"
    with pytest.raises(ValueError, match="--compat"):
        hotpath.resolve("compiled", mode="closed", compat=True)
    with pytest.raises(ValueError, match="--mode open"):
        hotpath.resolve("compiled", mode="open", compat=False)
    assert hotpath.resolve("auto", mode="open", compat=False) == (
        "python",
        "hot path: python (--mode open runs in Python)",
    )


@pytest.mark.parametrize("path", [pytest.param("compiled", marks=needs_engine), "python"])
def test_echoes_that_go_wrong_late_are_counted_on_both_paths(
    path: str, fault_server: Callable[..., FaultServer], wsswarm: Callable[..., RunResult]
) -> None:
    """Connections that echo, split their echoes, echo one wrong text, or close, each after a
    few correct echoes: the same counts on either path; split echoes are still round trips."""
    server = fault_server()
    result = wsswarm(
        "--url", server.url("/fault/latermix"), "--processes", "1", "--connections", "8",
        "--connect-rate", "100", "--warmup", "0", "--duration", "1", "--no-probe",
        "--hot-path", path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"hot path: {path}" in result.stdout
    summary = result.summary
    assert summary["errors"] == {"echo_mismatch": 2, "close_1001": 2}
    assert summary["connections"] == {"attempted": 8, "open": 6, "failed": 0, "dropped": 2}
    records = result.worker_records(0)
    assert records[0]["hot_path"] == path
    end = records[-1]
    # Every message sent was echoed back (timed) or wrong, or met the close.
    assert end["sent_total"] - end["roundtrips_total"] == 2 + 2
    if path == "compiled":
        # Left the engine: at the first split echo (those connections stay in Python: their
        # echoes never arrive whole again), at the wrong echo (back in after the next exact
        # one), at the close frame.
        assert end["engine_ejected"] == 2 + 2 + 2
    else:
        assert "engine_ejected" not in end


@needs_engine
def test_compiled_fold_equals_the_python_fold() -> None:
    """hdr_counts in the fold: the same histogram as latency.py's loop and hdrh's record_value,
    values out of range (0, negative, above an hour) clamped alike."""
    rng = random.Random(11)
    values = array("q", [rng.choice([-5, 0, 1, 2047, 2048, 3_600_000_001]) for _ in range(60)])
    values.extend(int(rng.lognormvariate(8, 2)) for _ in range(5000))
    values.extend([900] * 300)  # a run of one index
    compiled, python, reference = (latency.new_histogram() for _ in range(3))
    touched = latency.record_bulk(compiled, values, _engine.hdr_counts)
    assert sorted(touched) == sorted(latency.record_bulk(python, values))
    for value in values:
        reference.record_value(min(max(value, 1), 3_600_000_000))
    assert list(compiled.counts) == list(python.counts) == list(reference.counts)
    assert compiled.get_total_count() == reference.get_total_count() == len(values)
    assert compiled.get_min_value() == reference.get_min_value() == 1
    assert compiled.get_max_value() == reference.get_max_value()
    assert latency.encode(compiled) == latency.encode(python)
    assert latency.record_bulk(latency.new_histogram(), array("q"), _engine.hdr_counts) == []
