"""Exit statuses of `wsswarm run` (client/README.md has the table) and the bad-input error."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_SLO = 3
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """Bad input: one line for the user, exit code 2."""
