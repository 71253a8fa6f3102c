"""`wsswarm` command line: one subcommand per module (run, sample, report, progress)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Each subcommand module exposes `configure_parser(parser)` and `main(args) -> int`.
SUBCOMMANDS = {
    "run": ("wsswarm.run", "drive WebSocket connections against an echo server and measure"),
    "sample": ("wsswarm.sample", "sample the CPU and memory of what serves the connections"),
    "report": ("wsswarm.report", "merge a results directory into summary files, tables and plots"),
    "progress": ("wsswarm.progress", "print the progress of a running `wsswarm run` as JSON"),
}


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """Only the chosen subcommand's module is imported: `run` never pays for the report's
    plotting stack, and one broken module cannot take the other subcommands down."""
    args = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in args if not a.startswith("-")), None)
    parser = argparse.ArgumentParser(prog="wsswarm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(module_name)
            module.configure_parser(sub_parser)
            sub_parser.set_defaults(handler=module.main)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
