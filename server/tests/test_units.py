"""Unit tests of the small pieces that need no server: metrics text, the log rate limit,
unmasking."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest
from wsecho.common import EventLog, HttpResponse, http_endpoint
from wsecho.logs import JsonFormatter
from wsecho.mask import apply_mask, load_c_apply_mask, python_apply_mask
from wsecho.metrics import Counters, Metrics, resident_memory_bytes
from wsecho.workers import Board, WorkerView


def test_metrics_text_is_prometheus_exposition() -> None:
    """Each metric has HELP, TYPE and one sample line with the current value."""
    metrics = Metrics()
    metrics.messages_total = 7
    text = metrics.render().decode()
    assert text.endswith("\n")
    assert "# TYPE wsecho_messages_total counter\nwsecho_messages_total 7\n" in text
    assert "# TYPE wsecho_connections_current gauge\n" in text
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(samples) == 12  # 10 metrics, the hot path, one worker's connections
    assert 'wsecho_worker_connections_current{worker="0"} 0' in samples
    assert all(len(line.split()) == 2 for line in samples)


def test_resident_memory_is_plausible() -> None:
    """RSS comes from /proc/self/statm: more than 5 MB, less than 10 GB for a test process."""
    assert 5e6 < resident_memory_bytes() < 1e10


def test_http_endpoints_ignore_the_query_string() -> None:
    """/healthz?probe=1 is /healthz; other paths are WebSocket paths."""
    metrics = Metrics()
    assert http_endpoint("/healthz?probe=1", metrics) == HttpResponse(
        200, "text/plain; charset=utf-8", b"ok"
    )
    assert http_endpoint("/metrics", metrics) is not None
    assert http_endpoint("/", metrics) is None
    assert http_endpoint("/healthzz", metrics) is None


def test_event_log_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    """A burst of 100 events gives `rate` lines; the next line reports how many were dropped."""
    event = EventLog(logging.getLogger("wsecho.test"), rate=5)
    with caplog.at_level(logging.INFO, logger="wsecho.test"):
        for i in range(100):
            event(logging.WARNING, "bad client %d", i)
        assert len(caplog.records) == 5
        event._allowance = 5.0  # as if a second had passed
        event(logging.WARNING, "bad client %d", 100)
    assert caplog.records[-1].getMessage() == "bad client 100 (95 similar events suppressed)"


def test_json_formatter_one_object_per_line() -> None:
    """JSON lines carry the standard fields and any `extra=` field."""
    record = logging.makeLogRecord(
        {"name": "wsecho", "levelno": 30, "levelname": "WARNING", "msg": "x %s", "args": ("y",)}
    )
    record.peer = "127.0.0.1:1"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "x y"
    assert entry["level"] == "warning"
    assert entry["peer"] == "127.0.0.1:1"
    assert entry["time"].endswith("Z")


@pytest.mark.parametrize("size", [0, 1, 3, 4, 5, 125, 126, 65535, 65536, 1_000_003])
def test_unmask_c_and_python_agree(size: int) -> None:
    """websockets' C apply_mask (loaded without the websockets package) and the pure-Python
    fallback both XOR the payload with the repeated 4-byte mask (RFC 6455 5.3)."""
    c_apply_mask = load_c_apply_mask()
    assert c_apply_mask is not None, "websockets' C extension did not load"
    data, mask = os.urandom(size), os.urandom(4)
    expected = bytes(byte ^ mask[i % 4] for i, byte in enumerate(data[:4096]))
    for unmask in (c_apply_mask, python_apply_mask):
        result = unmask(data, mask)
        assert len(result) == size
        assert result[:4096] == expected
        assert unmask(result, mask) == data
        assert unmask(bytearray(data), bytearray(mask)) == result
    assert apply_mask is not python_apply_mask  # the service uses the C one


def test_unmask_does_not_import_the_websockets_package() -> None:
    """Loading the C extension must not run websockets/__init__.py (it costs ~3 MB of RSS)."""
    code = "import sys, wsecho.mask; print(sorted(m for m in sys.modules if 'websockets' in m))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['websockets.speedups']"


def test_picows_core_is_imported_without_picows_client_modules() -> None:
    """The server loads picows' core only (its client API, SOCKS and aiofastnet cost ~3 MB);
    a later `import picows` still gets the whole package, sharing the core module."""
    code = (
        "import sys\n"
        "import wsecho.backend_picows\n"
        "import wsecho.picows_fallback as b\n"
        "from wsecho.picows_fallback import block_aiofastnet\n"
        "heavy = ('picows.api', 'picows.proxy', 'aiofastnet', 'python_socks')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "with block_aiofastnet():\n"
        "    try:\n"
        "        import aiofastnet\n"
        "    except ImportError:\n"
        "        print('blocked')\n"
        "import picows\n"
        "print(picows.WSMsgType is b.WSMsgType, callable(picows.ws_connect))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines() == ["[]", "blocked", "True True"]


def test_board_sums_what_each_process_published() -> None:
    """A worker's counters, written in a forked child, are read whole by another process."""
    board = Board(2)
    pid = os.fork()
    if pid == 0:
        board.write(1, Counters(connections_current=7, messages_total=9, resident_memory_bytes=5))
        os._exit(0)
    os.waitpid(pid, 0)
    view = WorkerView(board, 0)
    own = Counters(connections_current=3, messages_total=1)
    workers = view.workers(own)
    assert workers == [
        own,
        Counters(connections_current=7, messages_total=9, resident_memory_bytes=5),
    ]
    assert sum(workers, Counters()).connections_current == 10
    assert board.read(1).pid == pid
    assert view.health_problem() is None


def test_service_metrics_render_every_worker() -> None:
    """/metrics of a worker: totals over the workers plus the parent's memory, one line each."""
    board = Board(2)
    board.write(1, Counters(connections_current=4, resident_memory_bytes=1000))
    board.write(2, Counters(resident_memory_bytes=100))  # the parent
    metrics = Metrics()
    metrics.service = WorkerView(board, 0)
    metrics.connections_current = 6
    text = metrics.render().decode()
    assert "wsecho_connections_current 10\n" in text
    assert 'wsecho_worker_connections_current{worker="0"} 6\n' in text
    assert 'wsecho_worker_connections_current{worker="1"} 4\n' in text
    assert "wsecho_workers 2\n" in text
    rss = int(text.split("\nwsecho_process_resident_memory_bytes ")[1].split()[0])
    assert abs(rss - 1100 - resident_memory_bytes()) < 1_000_000  # own + worker 1 + parent
