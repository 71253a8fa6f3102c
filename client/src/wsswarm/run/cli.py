"""Options of `wsswarm run`, their validation, and the steps before the master starts."""

from __future__ import annotations

import argparse
import ipaddress
import itertools
import math
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from wsswarm import dialer, hotpath, limits, slo
from wsswarm.run.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, EXIT_WRONG_TARGET, UsageError
from wsswarm.run.master import Master
from wsswarm.run.target import RUN_TOKEN_HEADER, check_run_token, probe, resolve

DEFAULT_CONNECTIONS = 10_000
RUN_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9._~+/=-]{1,128}")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _number(text: str, *, zero_ok: bool) -> float:
    """A finite number above zero (or at least zero, when `zero_ok`), for argparse."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        wanted = "zero or more" if zero_ok else "a positive number"
        raise argparse.ArgumentTypeError(f"must be {wanted}: {text}")
    return value


def _positive_float(text: str) -> float:
    return _number(text, zero_ok=False)


def _non_negative_float(text: str) -> float:
    return _number(text, zero_ok=True)


def _address_list(text: str) -> list[str]:
    """One address or a comma-separated list of them."""
    addresses = [part.strip() for part in text.split(",")]
    for address in addresses:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an IP address: {address!r}") from None
    return addresses


def _run_token(text: str) -> str:
    """As wsecho --run-token accepts it: it travels in an HTTP header as it is."""
    if not RUN_TOKEN_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r}: 1-128 characters of A-Z a-z 0-9 . _ ~ + / = -")
    return text


def _slo_expr(text: str) -> str:
    try:
        return slo.parse(text).expr
    except slo.SloError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _step_counts(text: str) -> list[int]:
    """Comma-separated connection counts, each above the one before."""
    counts = [_positive_int(part.strip()) for part in text.split(",")]
    if any(b <= a for a, b in itertools.pairwise(counts)):
        raise argparse.ArgumentTypeError(f"{text!r}: the counts must increase")
    return counts


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of `wsswarm run` (see client/README.md for the why of each default)."""
    target = parser.add_argument_group("target")
    target.add_argument("--url", required=True, help="ws://HOST:PORT/PATH of the echo server")
    target.add_argument("--label", default="", help="free text stored in every file (target name)")
    target.add_argument(
        "--run-token",
        type=_run_token,
        default=None,
        metavar="TOKEN",
        help="send load only if the target's /healthz carries this run token in its "
        f"{RUN_TOKEN_HEADER} header (wsecho --run-token); else exit {EXIT_WRONG_TARGET}",
    )
    load = parser.add_argument_group("load")
    load.add_argument("--processes", type=_positive_int, default=5, help="worker processes (5)")
    load.add_argument(
        "--connections",
        type=_positive_int,
        default=DEFAULT_CONNECTIONS,
        help=f"total connections ({DEFAULT_CONNECTIONS}; with --steps: the last step's count)",
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
        "--steps",
        type=_step_counts,
        default=None,
        metavar="N,N,...",
        help="capacity steps: ramp to each count in turn (increasing), wait --warmup, measure "
        "--step-duration s; summary.json steps[]",
    )
    timing.add_argument(
        "--step-duration",
        type=_positive_int,
        default=None,
        metavar="S",
        help="with --steps: measured whole seconds per step (60)",
    )
    timing.add_argument(
        "--stop-when",
        type=_slo_expr,
        action="append",
        default=[],
        metavar="EXPR",
        help="with --steps, repeatable: end the run after the step where EXPR holds on that "
        "step's figures (p99>500ms, failed>0; the --slo syntax)",
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
        "--source-address",
        type=_address_list,
        action="extend",
        default=[],
        metavar="IP[,IP...]",
        help="bind the client sockets to these local addresses, taken in turn (repeatable); "
        "each gives a full local port range per destination",
    )
    expert.add_argument(
        "--limits",
        choices=("enforce", "warn"),
        default="enforce",
        help="enforce: refuse a run that the open-file limit or the local ports cannot hold "
        "(exit 2); warn: say so and run anyway (to provoke EMFILE or EADDRNOTAVAIL on purpose)",
    )
    expert.add_argument(
        "--hot-path",
        choices=hotpath.CHOICES,
        default="auto",
        help="closed loop: compiled (wsswarm._engine, C), python, or auto: compiled when "
        "importable (said at start); --compat and --mode open run in Python",
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
        help="skip the test connection made before the workers start (not the --run-token check)",
    )


def validate(args: argparse.Namespace) -> None:
    validate_steps(args)
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
    if len(set(args.source_address)) != len(args.source_address):
        raise UsageError(f"--source-address {','.join(args.source_address)}: an address twice")


def validate_steps(args: argparse.Namespace) -> None:
    """--steps and its options; fills in --connections (the last step) and --step-duration."""
    if args.steps is None:
        if args.step_duration is not None or args.stop_when:
            raise UsageError("--step-duration and --stop-when need --steps")
        return
    if args.connections not in (DEFAULT_CONNECTIONS, args.steps[-1]):
        raise UsageError(
            f"--connections {args.connections} differs from the last step {args.steps[-1]}: "
            "leave --connections out with --steps"
        )
    if args.compat:
        raise UsageError("--steps is not a 2017 run: not with --compat")
    if args.measure_at is not None:
        raise UsageError("--steps plans every window itself: not with --measure-at")
    if args.processes > args.steps[0]:
        raise UsageError(
            f"--processes {args.processes} is more than the first step {args.steps[0]}"
        )
    args.connections = args.steps[-1]
    if args.step_duration is None:
        args.step_duration = 60


def check_source_addresses(addresses: list[str], family: int) -> None:
    """Each source address must be one of this host's, of the target's family (bound, not
    connected: nothing is sent)."""
    for address in addresses:
        try:
            dialer.client_socket(family, address).close()
        except OSError as exc:
            raise UsageError(
                f"--source-address {address}: cannot bind to it for the target's address family "
                f"({exc.strerror or exc}): not an address of this host?"
            ) from None


def main(args: argparse.Namespace) -> int:
    try:
        validate(args)
        try:
            hot_path = hotpath.resolve(args.hot_path, mode=args.mode, compat=args.compat)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        target = resolve(args.url)
        check_source_addresses(args.source_address, target.family)
        problems: list[str] = []
        nofile_problems, notes = limits.check_open_files(args.connections, args.processes)
        if args.rlimit_nofile is not None:
            notes.extend(nofile_problems)  # deliberate low limit: the user asked for EMFILE
        else:
            problems.extend(nofile_problems)
        problems.extend(limits.check_port_range(args.connections, max(len(args.source_address), 1)))
        if args.limits == "warn":
            notes.extend(f"limits (warn only): {problem}" for problem in problems)
            problems = []
        if problems:
            for problem in problems:
                print(f"wsswarm run: limits: {problem}", file=sys.stderr)
            return EXIT_USAGE
        for note in notes:
            print(f"wsswarm run: {note}", file=sys.stderr)
    except UsageError as exc:
        print(f"wsswarm run: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Before any load: the target must be this run's (token), and speak WebSocket (probe).
    first_source = args.source_address[0] if args.source_address else None
    refusal = None
    if args.run_token is not None:
        refusal = check_run_token(target, args.run_token, args.connect_timeout, first_source)
    if refusal is None and not args.no_probe:
        refusal = probe(target, args.connect_timeout, first_source)
    if refusal is not None:
        print(f"wsswarm run: {refusal.message}", file=sys.stderr)
        return refusal.exit_code
    master = Master(args, target, hot_path)

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
