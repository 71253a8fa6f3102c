"""Shared parts of the benchmarks: pinned processes, node.js `ws`, sampling, drivers, tables.

Nothing here is imported by the packages; the bench scripts put this folder on sys.path by being
run as ``python bench/<script>.py``.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import math
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import psutil

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
NODE_DIR = BENCH / ".node"
# ws 8 is the maintained line and runs on node 20; ws 3 (2017) predates node 20 by six years.
NODE_WS_VERSION = "8.23.0"
SERVER_CPU = 0
CLIENT_CPU = 1


class BenchError(RuntimeError):
    """A benchmark could not run (missing tool, server did not start, ...)."""


# ----------------------------------------------------------------------------- environment


# Niceness of the benchmark and everything it starts (inherited): on a machine shared with other
# work, -15 gives the measured processes most of their core without starving the rest.
DEFAULT_NICE = -15


def check_machine() -> None:
    """Pin this orchestrator to the client core and lift the soft fd limit for every child."""
    cpus = os.sched_getaffinity(0)
    if not {SERVER_CPU, CLIENT_CPU} <= cpus:
        raise BenchError(f"needs CPUs {SERVER_CPU} and {CLIENT_CPU}, this process may use {cpus}")
    os.sched_setaffinity(0, {CLIENT_CPU})
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def begin(nice: int) -> datetime.datetime:
    """Start a benchmark's run: SIGTERM unwinds like Ctrl-C, the niceness is set, the machine is
    printed; the start time (UTC)."""
    install_sigterm()
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"machine: {machine_line()}; {set_nice(nice)}", flush=True)
    return started


def set_nice(nice: int) -> str:
    """Set this process's niceness (children inherit it); say what was done."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except PermissionError:
        return f"niceness {os.getpriority(os.PRIO_PROCESS, 0)} (not root: --nice {nice} refused)"
    return f"niceness {nice}"


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def venv_bin(name: str) -> str:
    """The command `name` from the interpreter's own venv, else from PATH."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"`{name}` is not installed (run `make bootstrap`)")
    return found


def ensure_node_ws() -> dict[str, str]:
    """Install the pinned `ws` into bench/.node once; return the environment that finds it."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise BenchError(
            "node and npm are needed for the node.js peers (apt-get install nodejs npm)"
        )
    manifest = NODE_DIR / "node_modules" / "ws" / "package.json"
    installed = json.loads(manifest.read_text())["version"] if manifest.exists() else None
    if installed != NODE_WS_VERSION:
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        cmd = [npm, "install", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund", "--no-save"]
        proc = subprocess.run(
            [*cmd, f"ws@{NODE_WS_VERSION}"], capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            raise BenchError(f"npm install ws@{NODE_WS_VERSION} failed:\n{proc.stderr[-2000:]}")
    return dict(os.environ, NODE_PATH=str(NODE_DIR / "node_modules"))


CEILING_SOURCE = BENCH / "ceiling" / "ws_echo.c"
CEILING_CACHE = BENCH / ".cache" / "ceiling"


def ensure_ceiling() -> Path:
    """Build the C echo server (ceiling/ws_echo.c) with the system compiler, once per source.

    The binary is cached under bench/.cache/ceiling/, named by the source's hash and the compiler,
    so an edited source or another compiler builds anew.
    """
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise BenchError("no C compiler for the ceiling server (apt-get install gcc)")
    digest = hashlib.sha256(CEILING_SOURCE.read_bytes() + compiler.encode()).hexdigest()[:16]
    binary = CEILING_CACHE / f"ws_echo-{digest}"
    if binary.exists():
        return binary
    CEILING_CACHE.mkdir(parents=True, exist_ok=True)
    for stale in CEILING_CACHE.glob("ws_echo-*"):
        stale.unlink(missing_ok=True)  # of an older source or another compiler
    partial = binary.with_name(f"{binary.name}.{os.getpid()}.tmp")
    flags = ["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror"]
    proc = subprocess.run(
        [compiler, *flags, "-o", str(partial), str(CEILING_SOURCE)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BenchError(f"{compiler} could not build {CEILING_SOURCE.name}:\n{proc.stderr}")
    partial.replace(binary)
    return binary


def node_version() -> str:
    node = shutil.which("node")
    if node is None:
        return "absent"
    return subprocess.run(
        [node, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()


def machine_line() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return (
        f"{os.cpu_count()} x {model}, {psutil.virtual_memory().total / 2**30:.0f} GiB, "
        f"Linux {os.uname().release}, Python {sys.version.split()[0]}, node {node_version()}, "
        f"load average at start {load[0]:.2f}"
    )


# ----------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    cmd: Sequence[str], cpu: int, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `cmd` in its own process group, pinned (with all its children) to one core."""
    # taskset execs the command: the pid stays that of the command, and children inherit the mask.
    taskset = shutil.which("taskset")
    if taskset is None:
        raise BenchError("taskset is missing (apt-get install util-linux)")
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(
            [taskset, "-c", str(cpu), *cmd],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM the process group, SIGKILL what is left after `timeout`."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def server_command(name: str, port: int) -> tuple[list[str], dict[str, str] | None]:
    """The command (and environment) of an echo server on 127.0.0.1:`port`: `ceiling` (the C
    server), `node-ws` (the 2017 baseline), `wsecho-<backend>` or `wsecho-picows-<hot path>`
    (`--hot-path compiled` or `python`; plain `wsecho-picows` runs its default, auto)."""
    if name == "ceiling":
        return [str(ensure_ceiling()), str(port), "127.0.0.1"], None
    if name == "node-ws":
        env = ensure_node_ws()
        return ["node", str(BENCH / "node" / "echo_server.js"), str(port), "127.0.0.1"], env
    backend, _, hot_path = name.removeprefix("wsecho-").partition("-")
    cmd = [venv_bin("wsecho"), "--backend", backend, "--host", "127.0.0.1", "--port", str(port)]
    if hot_path:
        cmd += ["--hot-path", hot_path]
    return [*cmd, "--log-level", "warning"], None


@contextlib.contextmanager
def serving(name: str, out: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """Echo server `name` (see `server_command`) on CPU 0 and a free port, listening; (process,
    port). Its output goes to `out`/server.log; it is stopped at the end, and a server that died
    while the body ran is an error."""
    port = free_port()
    cmd, env = server_command(name, port)
    log = out / "server.log"
    server = start(cmd, SERVER_CPU, log, env)
    try:
        wait_listening(port, server, log)
        yield server, port
        if server.poll() is not None:
            raise BenchError(f"{name} died during the run (exit {server.returncode}): {tail(log)}")
    finally:
        stop(server)


def wait_listening(
    port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float = 15
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited with {proc.returncode}: {tail(log)}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise BenchError(f"server did not listen on port {port} within {timeout:.0f} s: {tail(log)}")


def tail(path: Path, lines: int = 5) -> str:
    with contextlib.suppress(OSError):
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    return ""


class Interrupted(Exception):
    """SIGTERM arrived: unwind like Ctrl-C so every `finally` stops its processes."""


def install_sigterm() -> None:
    def handler(_signum: int, _frame: object) -> None:
        raise Interrupted()

    signal.signal(signal.SIGTERM, handler)
    # Started in the background by a shell without job control, SIGINT arrives ignored: restore it.
    signal.signal(signal.SIGINT, signal.default_int_handler)


# ----------------------------------------------------------------------------- sampling


@dataclass
class Sample:
    t: float
    cpu_s: float
    rss: int
    rss_by_pid: dict[int, int]


class TreeSampler:
    """Samples CPU seconds and RSS of a process and its descendants from /proc (via psutil)."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def sample_now(self) -> Sample | None:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return None
        cpu, by_pid = 0.0, {}
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                cpu += times.user + times.system
                by_pid[proc.pid] = proc.memory_info().rss
        return Sample(time.time(), cpu, sum(by_pid.values()), by_pid)

    def _run(self) -> None:
        while not self._stop.is_set():
            sample = self.sample_now()
            if sample is not None:
                self.samples.append(sample)
            self._stop.wait(self.interval)

    def window(self, t0: float, t1: float) -> tuple[float, int, int]:
        """CPU fraction (1.0 = one core), max RSS and RSS at the end within [t0, t1]."""
        inside = [s for s in self.samples if t0 <= s.t <= t1]
        if len(inside) < 2:
            raise BenchError("too few resource samples in the measured window")
        cpu = (inside[-1].cpu_s - inside[0].cpu_s) / (inside[-1].t - inside[0].t)
        return cpu, max(s.rss for s in inside), inside[-1].rss

    def rss_of(self, pid: int, before: float) -> int | None:
        """RSS of one process in the last sample taken before `before` (else its first)."""
        known = [s for s in self.samples if pid in s.rss_by_pid]
        if not known:
            return None
        earlier = [s for s in known if s.t <= before]
        return (earlier[-1] if earlier else known[0]).rss_by_pid[pid]

    def max_rss_of(self, pid: int, t0: float, t1: float) -> int | None:
        inside = [
            s.rss_by_pid[pid] for s in self.samples if t0 <= s.t <= t1 and pid in s.rss_by_pid
        ]
        return max(inside) if inside else None


# ----------------------------------------------------------------------------- load drivers


@dataclass
class LoadResult:
    roundtrips_per_s: float
    mean_ms: float
    p99_ms: float
    attempted: int
    open: int
    failed: int
    measure_started: float
    measure_ended: float
    errors: dict[str, int] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class Load:
    url: str
    connections: int
    connect_rate: float
    warmup: float
    duration: float
    processes: int


class Driver(Protocol):
    """A closed-loop client that runs on CLIENT_CPU and reports one measured window."""

    name: str

    def command(self, load: Load, out: Path) -> list[str]: ...

    def result(self, out: Path, log: Path) -> LoadResult: ...


class LoadgenDriver:
    """bench/loadgen.py: the lean picows client of this folder."""

    name = "loadgen"

    def command(self, load: Load, out: Path) -> list[str]:
        return [
            sys.executable,
            str(BENCH / "loadgen.py"),
            *("--url", load.url, "--connections", str(load.connections)),
            *("--processes", str(load.processes), "--connect-rate", str(load.connect_rate)),
            *("--warmup", str(load.warmup), "--duration", str(load.duration)),
            *("--out", str(out)),
        ]

    def result(self, out: Path, log: Path) -> LoadResult:
        path = out / "loadgen-summary.json"
        if not path.exists():
            raise BenchError(f"loadgen wrote no summary: {tail(log)}")
        s = json.loads(path.read_text())
        c = s["connections"]
        return LoadResult(
            s["roundtrips_per_s"],
            s["latency_ms"]["mean"],
            s["latency_ms"]["p99"],
            c["attempted"],
            c["open"],
            c["failed"],
            s["measure_started"],
            s["measure_ended"],
            s["errors"],
            s,
        )


class WsswarmDriver:
    """`wsswarm run` of client/: the project's load generator (summary.json per docs/formats.md)."""

    name = "wsswarm"

    def __init__(self, hot_path: str | None = None) -> None:
        self.hot_path = hot_path  # wsswarm run --hot-path; None: its default (auto)

    def command(self, load: Load, out: Path) -> list[str]:
        return [
            venv_bin("wsswarm"),
            "run",
            *("--url", load.url, "--connections", str(load.connections)),
            *("--processes", str(load.processes), "--connect-rate", str(load.connect_rate)),
            *("--warmup", str(load.warmup), "--duration", str(load.duration)),
            *("--out", str(out), "--label", "bench"),
            *(("--hot-path", self.hot_path) if self.hot_path else ()),
        ]

    def result(self, out: Path, log: Path) -> LoadResult:
        path = out / "summary.json"
        if not path.exists():
            raise BenchError(f"wsswarm wrote no summary.json: {tail(log)}")
        s = json.loads(path.read_text())
        c = s["connections"]
        return LoadResult(
            float(s["roundtrips_per_s"]),
            float(s["latency_ms"]["mean"]),
            float(s["latency_ms"]["p99"]),
            int(c["attempted"]),
            int(c["open"]),
            int(c["failed"]),
            float(s["measure_started"]),
            float(s["measure_ended"]),
            {k: int(v) for k, v in s.get("errors", {}).items()},
            s,
        )


# The 2017 client's batch period.
BATCH_INTERVAL_MS = 200


class Node2017Driver:
    """bench/node/client2017.js with one worker, batches sized to give the requested rate."""

    name = "node-2017"

    def command(self, load: Load, out: Path) -> list[str]:
        del out  # the client prints its result on stdout (driver.log)
        batch = max(1, round(load.connect_rate * BATCH_INTERVAL_MS / 1000 / load.processes))
        return [
            "node",
            str(BENCH / "node" / "client2017.js"),
            *("--url", load.url, "--connections", str(load.connections)),
            *("--workers", str(load.processes), "--batch", str(batch)),
            *("--interval", str(BATCH_INTERVAL_MS), "--warmup", str(load.warmup)),
            *("--duration", str(load.duration), "--quiet"),
            # Bounded: a worker whose loop falls behind would otherwise ramp for minutes.
            *("--max-ramp", str(round(2 * load.connections / load.connect_rate + 20))),
        ]

    def result(self, out: Path, log: Path) -> LoadResult:
        del out
        lines = [ln for ln in log.read_text().splitlines() if ln.startswith("RESULT ")]
        if not lines:
            raise BenchError(f"client2017.js printed no RESULT line: {tail(log)}")
        s = json.loads(lines[-1].removeprefix("RESULT "))
        return LoadResult(
            s["roundtrips_per_s"],
            s["latency_mean_ms"] if s["latency_mean_ms"] is not None else float("nan"),
            float("nan"),  # the 2017 client keeps no distribution
            s["connections"],
            s["open"],
            s["failed"],
            s["measure_started"],
            s["measure_ended"],
            {},
            s,
        )


def wsswarm_available() -> bool:
    try:
        cmd = [venv_bin("wsswarm"), "run", "--help"]
    except BenchError:
        return False
    return subprocess.run(cmd, capture_output=True, check=False).returncode == 0


DRIVERS: dict[str, type[LoadgenDriver] | type[WsswarmDriver] | type[Node2017Driver]] = {
    "loadgen": LoadgenDriver,
    "wsswarm": WsswarmDriver,
    "node-2017": Node2017Driver,
}


def run_driver(
    driver: Driver,
    load: Load,
    out: Path,
    *,
    samplers_for: Sequence[int] = (),
    interval: float = 0.25,
    env: dict[str, str] | None = None,
) -> tuple[LoadResult, TreeSampler, list[TreeSampler]]:
    """Run the driver to completion on CLIENT_CPU, sampling it and the given pids meanwhile."""
    log = out / "driver.log"
    proc = start(driver.command(load, out), CLIENT_CPU, log, env)
    # Late opens may stretch the ramp (see loadgen.py); beyond this the driver is hung.
    limit = 2 * load.connections / load.connect_rate + load.warmup + load.duration + 90
    others = [TreeSampler(pid) for pid in samplers_for]
    try:
        with TreeSampler(proc.pid, interval) as client, contextlib.ExitStack() as stack:
            for sampler in others:
                stack.enter_context(sampler)
            try:
                code = proc.wait(limit)
            except subprocess.TimeoutExpired as exc:
                raise BenchError(f"{driver.name} did not finish within {limit:.0f} s") from exc
    finally:
        stop(proc)
    if code != 0:
        raise BenchError(f"{driver.name} exited with {code}: {tail(log)}")
    return driver.result(out, log), client, others


# ----------------------------------------------------------------------------- output


def ratio(value: float | None, reference: float | None) -> str:
    if value is None or reference is None or reference == 0 or math.isnan(value):
        return "-"
    return f"{value / reference:.2f}x"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table (readable as plain text too)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def paired_ratios(
    values: Mapping[int, float | None], references: Mapping[int, float | None]
) -> list[float]:
    """value / reference of every round (the keys) in which both were measured, in round order.

    A round whose window failed or measured nothing (None or 0) on either side gives no pair:
    a ratio is only ever taken between two windows of the same round.
    """
    return [
        value / ref for r, value in sorted(values.items()) if value and (ref := references.get(r))
    ]


def round_values(values: Mapping[int, float | None]) -> list[float]:
    """The figures of the rounds (the keys) whose window measured one, in round order."""
    return [value for _, value in sorted(values.items()) if value]


def window_notes(load: LoadResult, where: str, number: int) -> list[str]:
    """Footnotes `[number] ...` of one measured window (`where`: whose): a ramp that had not
    ended, a client whose reports covered less than 80% of the window."""
    notes = []
    if load.raw.get("ramp_incomplete"):
        notes.append(
            f"{where}: its ramp had not ended after --max-ramp; measured with the connections "
            "it had"
        )
    span = load.raw.get("measured_span_s")
    window = load.measure_ended - load.measure_started
    if span is not None and span < 0.8 * window:
        notes.append(
            f"{where}: the client's reports covered only {span:.1f} s of the {window:.1f} s "
            "window (its event loop stalled); the rate is over that span"
        )
    return [f"[{number + i}] {note}" for i, note in enumerate(notes)]


def median_range(values: Sequence[float], number: str = "{:.2f}", unit: str = "x") -> str:
    """`median (min-max)`, e.g. `1.02x (0.95-1.10)`; the median alone for one value, `-` for
    none. `number` formats each value, `unit` follows the median."""
    if not values:
        return "-"
    median = number.format(statistics.median(values)) + unit
    if len(values) == 1:
        return median
    return f"{median} ({number.format(min(values))}-{number.format(max(values))})"


def parse_int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from exc
    if not values or min(values) < 1:
        raise ValueError(f"expected positive integers, got {text!r}")
    return values


# ----------------------------------------------------------------------------- the run loop


class BenchRow(Protocol):
    """What the shared run loop needs of a script's row."""

    @property
    def error(self) -> str | None: ...


R = TypeVar("R", bound=BenchRow)


def round_order(names: Sequence[str], round_number: int) -> list[str]:
    """The order of `names` in round `round_number` (1, 2, ...): as given in odd rounds, reversed in
    even ones (ABC, CBA, ABC, ...). Over each pair of rounds every name then sits at the same mean
    time, so a drift of the machine that is linear in time falls on every name alike."""
    return list(names) if round_number % 2 else list(reversed(names))


def schedule(
    cells: Sequence[Sequence[str]], connections: Sequence[int], rounds: int
) -> list[tuple[int, int, str]]:
    """(connections, round, name) in the order measured: at each connection count, cell by cell,
    every name of the cell once per round, in `round_order`."""
    return [
        (n, r, name)
        for n in connections
        for cell in cells
        for r in range(1, rounds + 1)
        for name in round_order(cell, r)
    ]


@dataclass
class Matrix(Generic[R]):
    """One benchmark invocation: every name of every cell at every connection count, `rounds`
    times, interleaved within the cell (`schedule`); then one table.

    `measure(name, connections, round, work_dir)` runs one window; `status(row)` is its progress
    line; `render(rows)` the tables; `as_json(row)` the row in the `--json` file.
    """

    script: str  # e.g. "bench/client_bench.py", for the command line printed above the table
    cells: Sequence[Sequence[str]]  # names compared with each other, measured interleaved
    connections: Sequence[int]
    measure: Callable[[str, int, int, Path], R]
    status: Callable[[R], str]
    render: Callable[[list[R]], str]
    as_json: Callable[[R], dict[str, Any]]
    rounds: int = 1


def run_matrix(
    matrix: Matrix[R],
    argv: list[str] | None,
    started: datetime.datetime,
    *,
    keep: bool,
    json_path: Path | None,
) -> int:
    """Run the windows in `schedule` order, print progress, the tables and write --json; the
    exit code.

    0 when every window ran, 1 when one failed (the table says which and why), 130 when
    interrupted (Ctrl-C or SIGTERM: the table holds the windows completed so far). Each round
    works in its own directory, removed at the end unless `keep`.
    """
    prefix = Path(matrix.script).stem.replace("_", "-")
    work = Path(tempfile.mkdtemp(prefix=f"echolab-{prefix}-"))
    rows: list[R] = []
    interrupted = False
    began = time.monotonic()
    try:
        for connections, round_number, name in schedule(
            matrix.cells, matrix.connections, matrix.rounds
        ):
            t = time.monotonic()
            row = matrix.measure(name, connections, round_number, work / f"round-{round_number}")
            rows.append(row)
            status = row.error or matrix.status(row)
            where = f", round {round_number}/{matrix.rounds}" if matrix.rounds > 1 else ""
            print(
                f"  {name} at {connections:,}{where}: {status} ({time.monotonic() - t:.0f} s)",
                flush=True,
            )
    except (KeyboardInterrupt, Interrupted):
        print("interrupted: the table holds the runs completed so far", file=sys.stderr)
        interrupted = True
    finally:
        if keep:
            print(f"run files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print()
    cmd = " ".join([matrix.script, *(argv if argv is not None else sys.argv[1:])])
    print(f"{started:%Y-%m-%d %H:%M} UTC, `{cmd}`, {time.monotonic() - began:.0f} s")
    print(matrix.render(rows))
    if json_path is not None:
        json_path.write_text(json.dumps([matrix.as_json(r) for r in rows], indent=2))
    if interrupted:
        return 130
    return 1 if any(r.error for r in rows) else 0
