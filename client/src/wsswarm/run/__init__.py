"""`wsswarm run`: open many WebSocket connections to an echo server and measure round trips.

The master process validates the input, checks the limits, probes the target once (so that an
unreachable target fails at once, not after the ramp), spawns the worker processes, tells them
when to start (a common wall-clock epoch, `--start-at` for several hosts), decides when the
measured window starts (ramp complete + warm-up, on a tick boundary), prints the console and
writes `summary.json`. The workers write their own JSON-lines files as they go.

Modules: `cli` (options, validation, the steps before the master), `target` (URL and probe),
`plan` (shares and the planned window), `master` (the master process), `summary`
(`summary.json`).
"""

from __future__ import annotations

from wsswarm.run.cli import configure_parser, main

__all__ = ["configure_parser", "main"]
