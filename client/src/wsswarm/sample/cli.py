"""`wsswarm sample` options and entry point."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import IO

from wsswarm.sample.readings import SampleError
from wsswarm.sample.sampler import run_sampler, signal_wait
from wsswarm.sample.sources import (
    LIBVIRT_RUN_DIR,
    DockerSource,
    LibvirtSource,
    NameSource,
    PidSource,
    Source,
)


def make_source(args: argparse.Namespace) -> Source:
    if args.pid is not None:
        return PidSource(args.pid, children=args.children)
    if args.process_name is not None:
        return NameSource(args.process_name, children=args.children)
    if args.docker_container is not None:
        return DockerSource(args.docker_container, docker=args.docker)
    return LibvirtSource(args.libvirt_domain, run_dir=args.libvirt_run_dir)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    what = parser.add_argument_group("what to sample (exactly one)")
    group = what.add_mutually_exclusive_group(required=True)
    group.add_argument("--pid", type=int, help="one process by pid")
    group.add_argument(
        "--process-name", metavar="NAME", help="all processes named NAME (looked up each sample)"
    )
    group.add_argument(
        "--docker-container",
        metavar="NAME",
        help="a container's cgroup plus the docker-proxy processes forwarding its ports",
    )
    group.add_argument(
        "--libvirt-domain", metavar="NAME", help="the qemu process of a libvirt domain"
    )
    what.add_argument(
        "--children",
        action="store_true",
        help="with --pid/--process-name: include all descendant processes",
    )
    what.add_argument("--docker", default="docker", help="docker command (default: docker)")
    what.add_argument(
        "--libvirt-run-dir",
        default=LIBVIRT_RUN_DIR,
        help=f"where libvirt keeps <domain>.pid (default: {LIBVIRT_RUN_DIR})",
    )
    parser.add_argument("--target", default="", help="label of the target, copied into the file")
    parser.add_argument("--out", type=Path, help="JSON-lines file to write (default: stdout)")
    parser.add_argument(
        "--interval", type=float, default=1.0, help="seconds between samples (default: 1)"
    )
    parser.add_argument(
        "--duration", type=float, help="stop after this many seconds (default: until SIGTERM)"
    )


def main(args: argparse.Namespace) -> int:
    if args.interval <= 0:
        print("wsswarm sample: --interval must be > 0", file=sys.stderr)
        return 2
    if args.duration is not None and args.duration < args.interval:
        print("wsswarm sample: --duration must be at least one --interval", file=sys.stderr)
        return 2
    signals = (signal.SIGTERM, signal.SIGINT)
    # Blocked before anything else, so that a SIGTERM sent right after start is not lost either.
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        try:
            source = make_source(args)
        except SampleError as exc:
            print(f"wsswarm sample: {exc}", file=sys.stderr)
            return 2
        if args.out is None:
            out: IO[str] = sys.stdout
        else:
            try:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                out = args.out.open("w", encoding="utf-8")
            except OSError as exc:
                print(f"wsswarm sample: cannot write {args.out}: {exc.strerror}", file=sys.stderr)
                return 2
        print(
            f"wsswarm sample: {source.kind} {source.what} every {args.interval:g} s"
            f" -> {args.out or 'stdout'}",
            file=sys.stderr,
        )
        try:
            stop = run_sampler(
                source,
                out,
                target=args.target,
                interval=args.interval,
                duration=args.duration,
                wait=signal_wait(signals),
            )
        finally:
            if out is not sys.stdout:
                out.close()
    finally:
        # A second SIGTERM/SIGINT that came while finishing must not kill us after the end record.
        while signal.sigtimedwait(signals, 0) is not None:
            pass
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals)
    if stop.reason in ("completed", "signal"):
        return 0
    print(f"wsswarm sample: {stop.message}", file=sys.stderr)
    return 1
