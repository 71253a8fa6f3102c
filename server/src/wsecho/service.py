"""Running the service: event loop, backend, signals, start and stop log lines."""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import resource
import signal
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from wsecho import __version__
from wsecho.common import RunningServer, describe
from wsecho.config import Settings
from wsecho.metrics import Metrics

if TYPE_CHECKING:
    from wsecho.workers import Worker

log = logging.getLogger("wsecho")


def make_server(settings: Settings, metrics: Metrics) -> RunningServer:
    """The chosen backend. Only that one is imported: the other one would cost memory."""
    if settings.backend == "websockets":
        from wsecho.backend_websockets import WebsocketsServer  # noqa: PLC0415

        return WebsocketsServer(settings, metrics)
    from wsecho.backend_picows import PicowsServer  # noqa: PLC0415

    return PicowsServer(settings, metrics)


async def serve(settings: Settings, open_files: int, worker: Worker | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly (as one of `--workers` if
    `worker` is given: its parent logs the service's start and stop lines)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics = Metrics()
    if worker is not None:
        worker.attach(metrics)
    server = make_server(settings, metrics)
    await server.start()  # type: ignore[attr-defined]
    name = "wsecho" if worker is None else f"wsecho worker {worker.index}"
    if worker is not None:
        worker.ready()
        log.info("%s listening (loop=%s)", name, loop_name(loop))
    else:
        log.info(
            "wsecho %s serving on port %s (%s, loop=%s, open_files_limit=%d%s)",
            __version__,
            ",".join(str(p) for p in sorted(set(server.ports))),
            describe(settings),
            loop_name(loop),
            open_files,
            " < max_connections!" if open_files < settings.max_connections else "",
        )
    await stop.wait()
    started = time.monotonic()
    open_now = metrics.connections_current
    await server.shutdown()
    if worker is not None:
        worker.detach()
    log.info(
        "%s stopped in %.2f s: closed %d open connections with 1001; "
        "served %d connections, %d messages, %d bytes",
        name,
        time.monotonic() - started,
        open_now,
        metrics.connections_total,
        metrics.messages_echoed,
        metrics.bytes_echoed,
    )


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """ "uvloop" or "asyncio"."""
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def raise_open_files_limit() -> int:
    """Raise the soft limit of open files to the hard one (each connection is a file descriptor;
    the usual soft default of 1,024 would refuse connections long before --max-connections)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # e.g. an infinite hard limit the kernel caps lower
            pass
    return soft


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` in this thread with uvloop when it is installed."""
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # uvloop is optional: plain asyncio works, only slower
        asyncio.run(main)
    else:
        uvloop.run(main)


def run(settings: Settings) -> int:
    """Run the service until SIGTERM/SIGINT; the exit code. Raises OSError when the port cannot
    be bound."""
    limit = raise_open_files_limit()
    if settings.workers > 1:
        from wsecho.workers import supervise  # noqa: PLC0415

        chosen = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
        return supervise(settings, limit, chosen)
    run_loop(serve(settings, limit))
    return 0
