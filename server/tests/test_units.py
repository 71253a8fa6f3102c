"""Unit tests of the small pieces that need no server: metrics text, the log rate limit."""

from __future__ import annotations

import json
import logging

import pytest
from wsecho.common import EventLog, http_endpoint
from wsecho.logs import JsonFormatter
from wsecho.metrics import Metrics, resident_memory_bytes


def test_metrics_text_is_prometheus_exposition() -> None:
    """Each metric has HELP, TYPE and one sample line with the current value."""
    metrics = Metrics()
    metrics.messages_total = 7
    text = metrics.render().decode()
    assert text.endswith("\n")
    assert "# TYPE wsecho_messages_total counter\nwsecho_messages_total 7\n" in text
    assert "# TYPE wsecho_connections_current gauge\n" in text
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(samples) == 7
    assert all(len(line.split()) == 2 for line in samples)


def test_resident_memory_is_plausible() -> None:
    """RSS comes from /proc/self/statm: more than 5 MB, less than 10 GB for a test process."""
    assert 5e6 < resident_memory_bytes() < 1e10


def test_http_endpoints_ignore_the_query_string() -> None:
    """/healthz?probe=1 is /healthz; other paths are WebSocket paths."""
    metrics = Metrics()
    assert http_endpoint("/healthz?probe=1", metrics) == (200, "text/plain; charset=utf-8", b"ok")
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
