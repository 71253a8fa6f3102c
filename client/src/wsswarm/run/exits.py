"""Exit statuses of `wsswarm run` (client/README.md has the table) and the bad-input error."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SLO = 3
# --run-token given, and the target's /healthz does not carry it: no load sent.
EXIT_WRONG_TARGET = 4
# The test connection was answered by something other than a WebSocket upgrade: no worker started.
EXIT_NOT_WEBSOCKET = 5
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad input: one line for the user, exit code 2."""
