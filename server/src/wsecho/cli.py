"""The `wsecho` command."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from wsecho import hotpath, logs
from wsecho.config import ConfigError, load

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the service until SIGTERM/SIGINT: 0 after a clean stop, 2 on invalid settings."""
    try:
        settings = load(argv)
        hotpath.choose(settings)  # --hot-path compiled without the engine is a usage error
    except ConfigError as exc:
        print(f"wsecho: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logs.setup(settings.logging_level, settings.log_format)
    from wsecho.service import run  # noqa: PLC0415 (keeps `wsecho --help` light)

    try:
        return run(settings)
    except OSError as exc:  # typically the port is taken or the address is not ours
        logging.getLogger("wsecho").error(
            "cannot listen on %s:%s: %s", settings.host, settings.port, exc
        )
        return 1
