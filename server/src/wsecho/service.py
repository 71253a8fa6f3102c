"""Running the service: event loop, backend, signals, start and stop log lines."""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import time

from wsecho import __version__
from wsecho.common import RunningServer, describe
from wsecho.config import Settings
from wsecho.metrics import Metrics

log = logging.getLogger("wsecho")


def make_server(settings: Settings, metrics: Metrics) -> RunningServer:
    """The chosen backend. Only that one is imported: the other one would cost memory."""
    if settings.backend == "websockets":
        from wsecho.backend_websockets import WebsocketsServer  # noqa: PLC0415

        return WebsocketsServer(settings, metrics)
    from wsecho.backend_picows import PicowsServer  # noqa: PLC0415

    return PicowsServer(settings, metrics)


async def serve(settings: Settings, open_files: int) -> None:
    """Serve until SIGTERM or SIGINT, then shut down cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics = Metrics()
    server = make_server(settings, metrics)
    await server.start()  # type: ignore[attr-defined]
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
    log.info(
        "wsecho stopped in %.2f s: closed %d open connections with 1001; "
        "served %d connections, %d messages, %d bytes",
        time.monotonic() - started,
        open_now,
        metrics.connections_total,
        metrics.messages_total,
        metrics.bytes_total,
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


def run(settings: Settings) -> None:
    """Run the service in this thread with uvloop when it is installed."""
    limit = raise_open_files_limit()
    try:
        import uvloop  # noqa: PLC0415
    except ImportError:  # uvloop is optional: plain asyncio works, only slower
        asyncio.run(serve(settings, limit))
    else:
        uvloop.run(serve(settings, limit))
