"""Options of `wsswarm run`, their validation, and the steps before the master starts."""

from __future__ import annotations

import argparse
import ipaddress
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

from wsswarm import limits, slo
from wsswarm.run.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, UsageError
from wsswarm.run.master import Master
from wsswarm.run.target import probe, resolve


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number: {text}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be zero or more: {text}")
    return value


def _slo_expr(text: str) -> str:
    try:
        return slo.parse(text).expr
    except slo.SloError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of `wsswarm run` (see client/README.md for the why of each default)."""
    target = parser.add_argument_group("target")
    target.add_argument("--url", required=True, help="ws://HOST:PORT/PATH of the echo server")
    target.add_argument("--label", default="", help="free text stored in every file (target name)")
    load = parser.add_argument_group("load")
    load.add_argument("--processes", type=_positive_int, default=5, help="worker processes (5)")
    load.add_argument(
        "--connections", type=_positive_int, default=10_000, help="total connections (10000)"
    )
    load.add_argument(
        "--connect-rate",
        type=_positive_float,
        default=75.0,
        help="new connections per second in total, paced evenly (75, as in 2017)",
    )
    load.add_argument(
        "--mode",
        choices=("closed", "open"),
        default="closed",
        help="closed: next message when the echo arrives (2017); open: fixed --rate",
    )
    load.add_argument(
        "--rate",
        type=_positive_float,
        default=None,
        help="open mode: messages per second per connection",
    )
    load.add_argument("--reconnect", action="store_true", help="reopen dropped connections")
    load.add_argument(
        "--compat",
        action="store_true",
        help="reproduce the 2017 client: batches of 3 per 200 ms per worker, its console line",
    )
    timing = parser.add_argument_group("timing")
    timing.add_argument(
        "--warmup", type=_non_negative_float, default=10.0, help="seconds after the ramp (10)"
    )
    timing.add_argument(
        "--duration", type=_positive_float, default=60.0, help="measured seconds (60)"
    )
    timing.add_argument(
        "--start-at",
        type=float,
        default=None,
        metavar="EPOCH",
        help="start the ramp at this wall-clock time (several client hosts start together)",
    )
    timing.add_argument(
        "--measure-at",
        type=float,
        default=None,
        metavar="EPOCH",
        help="with --start-at: start the measured window here (a whole number of seconds after "
        "--start-at) instead of the planned ramp + warm-up",
    )
    timing.add_argument(
        "--connect-timeout",
        type=_positive_float,
        default=10.0,
        help="seconds for the TCP connect, and again for the WebSocket upgrade (10)",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, default=None, help="directory for the metrics files")
    output.add_argument(
        "--progress",
        choices=("auto", "bar", "lines"),
        default="auto",
        help="console: a live bar during the ramp (auto: when stdout is a terminal)",
    )
    output.add_argument(
        "--slo",
        type=_slo_expr,
        action="append",
        default=[],
        metavar="EXPR",
        help="a gate on the result, repeatable: p99<100ms, p999<=250ms, failed==0, "
        "roundtrips_per_s>=20000; printed, in summary.json slo[], exit 3 when one fails",
    )
    expert = parser.add_argument_group("expert")
    expert.add_argument(
        "--source-address", default=None, help="bind the client sockets to this local address"
    )
    expert.add_argument(
        "--rlimit-nofile",
        type=_positive_int,
        default=None,
        help="set each worker's open-file soft limit to N (to test EMFILE; preflight only warns)",
    )
    expert.add_argument(
        "--no-probe",
        action="store_true",
        help="skip the single test connection made before the workers start",
    )


def validate(args: argparse.Namespace) -> None:
    if args.mode == "open" and args.rate is None:
        raise UsageError("--mode open needs --rate N (messages per second per connection)")
    if args.mode == "closed" and args.rate is not None:
        raise UsageError("--rate only applies to --mode open")
    if args.compat and args.mode != "closed":
        raise UsageError("--compat reproduces the 2017 closed loop: not with --mode open")
    if args.processes > args.connections:
        raise UsageError(
            f"--processes {args.processes} is more than --connections {args.connections}"
        )
    if args.start_at is not None and args.start_at < time.time() - 1:
        raise UsageError(f"--start-at {args.start_at} is in the past (now {time.time():.0f})")
    if args.measure_at is not None:
        if args.start_at is None:
            raise UsageError("--measure-at needs --start-at (the window is aligned to its ticks)")
        offset = args.measure_at - args.start_at
        if offset < 0 or not math.isfinite(offset) or abs(offset - round(offset)) > 1e-3:
            raise UsageError(
                f"--measure-at {args.measure_at}: must be a whole number of seconds at or after "
                f"--start-at {args.start_at} (ticks are on whole seconds from it)"
            )
    if args.source_address is not None:
        try:
            ipaddress.ip_address(args.source_address)
        except ValueError:
            raise UsageError(f"--source-address {args.source_address}: not an IP address") from None


def main(args: argparse.Namespace) -> int:
    try:
        validate(args)
        target = resolve(args.url)
        problems: list[str] = []
        nofile_problems, notes = limits.check_open_files(args.connections, args.processes)
        if args.rlimit_nofile is not None:
            notes.extend(nofile_problems)  # deliberate low limit: the user asked for EMFILE
        else:
            problems.extend(nofile_problems)
        problems.extend(limits.check_port_range(args.connections))
        if problems:
            for problem in problems:
                print(f"wsswarm run: limits: {problem}", file=sys.stderr)
            return EXIT_USAGE
        for note in notes:
            print(f"wsswarm run: {note}", file=sys.stderr)
    except UsageError as exc:
        print(f"wsswarm run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not args.no_probe:
        fatal = probe(target, args.connect_timeout, args.source_address)
        if fatal:
            print(f"wsswarm run: {fatal}", file=sys.stderr)
            return EXIT_FAILED
    master = Master(args, target)

    def on_signal(signum: int, _frame: Any) -> None:
        master.stop("interrupted", f"stopped by {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = master.run()
    except RuntimeError as exc:
        master.stop("error", str(exc))
        for worker in master.workers:
            worker.process.join(timeout=5)
            if worker.process.is_alive():
                worker.process.kill()
        print(f"wsswarm run: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code != EXIT_OK:
        print(f"wsswarm run: {master.status}: {master.message}", file=sys.stderr)
    return code
