"""What both backends share: the HTTP endpoints, the backend interface, rate-limited event logs."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Protocol

from wsecho.config import Settings
from wsecho.hotpath import choose
from wsecho.metrics import METRICS_CONTENT_TYPE, Metrics

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"
REJECT_BODY = b"503 Service Unavailable: too many connections\n"
# The /healthz header that carries the run token (--run-token), when there is one.
RUN_TOKEN_HEADER = "Echolab-Run-Token"
# How long a connection we are closing (protocol error, shutdown) may take to answer our close
# frame before we drop it.
CLOSE_TIMEOUT = 2.0


@dataclasses.dataclass(frozen=True)
class HttpResponse:
    """A plain-HTTP answer of the service, for either backend to send."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()  # beyond Content-Type


def http_endpoint(path: str, metrics: Metrics, run_token: str | None = None) -> HttpResponse | None:
    """The answer to a plain-HTTP path, or None for a WebSocket path. /healthz carries the run
    token, if there is one, in its RUN_TOKEN_HEADER; it is 503 when a worker stopped reporting."""
    path = path.split("?", 1)[0]
    if path == HEALTH_PATH:
        problem = metrics.health_problem()
        if problem is not None:
            return HttpResponse(503, "text/plain; charset=utf-8", problem.encode())
        headers = ((RUN_TOKEN_HEADER, run_token),) if run_token is not None else ()
        return HttpResponse(200, "text/plain; charset=utf-8", b"ok", headers)
    if path == METRICS_PATH:
        return HttpResponse(200, METRICS_CONTENT_TYPE, metrics.render())
    return None


class RunningServer(Protocol):
    """A started backend."""

    @property
    def ports(self) -> list[int]:
        """TCP ports the server listens on (one per bound address)."""

    async def shutdown(self) -> None:
        """Stop accepting, close open connections with 1001, return when they are gone."""


class EventLog:
    """Logs abnormal events (bad handshakes, protocol errors), at most `rate` lines per second.

    A flood of broken clients must not turn into a flood of log lines: beyond the rate, events are
    counted and the next line that gets through says how many were suppressed.
    """

    __slots__ = ("_allowance", "_last", "_logger", "_rate", "_suppressed")

    def __init__(self, logger: logging.Logger, rate: float = 10.0) -> None:
        self._logger = logger
        self._rate = rate
        self._allowance = rate
        self._last = time.monotonic()
        self._suppressed = 0

    def __call__(self, level: int, message: str, *args: object) -> None:
        if not self._logger.isEnabledFor(level):
            return
        now = time.monotonic()
        self._allowance = min(self._rate, self._allowance + (now - self._last) * self._rate)
        self._last = now
        if self._allowance < 1.0:
            self._suppressed += 1
            return
        self._allowance -= 1.0
        if self._suppressed:
            message += " (%d similar events suppressed)"
            args = (*args, self._suppressed)
            self._suppressed = 0
        self._logger.log(level, message, *args)


def describe(settings: Settings) -> str:
    """The settings as one log-friendly string, with the hot path that runs and why."""
    hot = choose(settings)
    return (
        f"backend={settings.backend} hot_path={hot.name} ({hot.why}) host={settings.host} "
        f"max_message_size="
        f"{settings.max_message_size} max_connections={settings.max_connections} "
        f"handshake_timeout={settings.handshake_timeout:g}s run_token={settings.run_token or '-'} "
        f"run_token_file={settings.run_token_file or '-'} "
        f"workers={settings.workers}"
    )
