"""What makes a container target's per-second round trips swing: one setting at a time.

    .venv/bin/python bench/stability.py [--conditions kit-before,no-healthcheck,...]
        [--rounds 2] [--connections 500] [--processes 2] [--duration 60] [--json FILE]

Runs wsecho in a container of this machine's Docker engine, published on 127.0.0.1 only, as
roles/container_target runs it (non-root, read-only root, `--cpus 1.0`, a HEALTHCHECK that
starts `python3 -I -S` every 5 s), and drives it with `wsswarm run` (closed loop) from this
machine. Each condition changes one thing; the conditions run interleaved (A, B, C, A, B, C
for `--rounds 2`), so that the load other work puts on a shared machine falls on all of them
alike. Per run: the mean round trips per second, the coefficient of variation of the
per-second round trips (stdev / mean, as `wsswarm report`'s stability column), their
autocorrelation at lag 5 s and the lag (2-10 s) where it peaks (a cause with a 5 s rhythm shows
a peak at 5 s, noise does not), the container's CFS throttling (cgroup cpu.stat, read before
and after the run) and the CPU seconds spent by the container, docker-proxy and the Docker
daemons (dockerd, containerd and its shims, with their reaped children: runc for each
health check) during the run. Not a test: it prints a table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
from _benchlib import (
    BENCH,
    REPO,
    SERVER_CPU,
    BenchError,
    Interrupted,
    begin,
    free_port,
    table,
    tail,
    venv_bin,
)

# The probe of roles/container_target's wsecho image before this bench (Dockerfile.wsecho.j2).
PYTHON_PROBE = (
    "import os, socket; s = socket.create_connection(('127.0.0.1', int(os.environ.get('PORT', "
    "'8080'))), 5); s.sendall(b'GET /healthz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: "
    "close\\r\\n\\r\\n'); s.settimeout(5); raise SystemExit(0 if s.recv(64).split(b' ')[1:2] == "
    "[b'200'] else 1)"
)
# The probe of its node.js baseline image (Dockerfile.nodejs_ws.j2).
NODE_PROBE = (
    "require('http').get('http://127.0.0.1:' + (process.env.PORT || 8080) + '/healthz', (r) => "
    "process.exit(r.statusCode === 200 ? 0 : 1)).on('error', () => process.exit(1))"
)
PROBES = {
    "python": ["python3", "-I", "-S", "-c", PYTHON_PROBE],
    "node": ["node", "-e", NODE_PROBE],
}
CONTAINER_PREFIX = "echolab-bench-stability"
DOCKER_DAEMONS = {"dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2"}
ACF_LAGS = range(2, 11)


@dataclass(frozen=True)
class Condition:
    """How the container runs: its CPU limit, its health check and its network path."""

    name: str
    cpu: str  # quota: --cpus 1.0; cpuset: --cpuset-cpus SERVER_CPU; none; bare: no container
    health: str  # python, node: that probe every --health-interval s; none
    network: str  # proxy: -p 127.0.0.1:P:P (docker-proxy); host: --network host
    about: str
    poll: bool = False  # an Ansible module run every --health-interval s, as progress lines were
    sampler: bool = False  # `wsswarm sample` on the container during the run, as swarm_run's


CONDITIONS = {
    c.name: c
    for c in [
        Condition("bare", "bare", "none", "host", "wsecho without a container (the machine)"),
        Condition("kit-before", "quota", "python", "proxy", "as container_target ran it"),
        Condition("node-healthcheck", "quota", "node", "proxy", "the baseline's node probe"),
        Condition("no-healthcheck", "quota", "none", "proxy", "without the HEALTHCHECK"),
        Condition("cpuset", "cpuset", "python", "proxy", "cpuset instead of the CFS quota"),
        Condition("no-cpu-limit", "none", "python", "proxy", "neither quota nor cpuset"),
        Condition("host-network", "quota", "python", "host", "no docker-proxy (host network)"),
        Condition("kit-after", "quota", "none", "proxy", "as container_target runs it now"),
        Condition(
            "progress-poll", "quota", "none", "proxy", "kit-after + a progress line's work", True
        ),
        Condition(
            "sampler", "quota", "none", "proxy", "kit-after + the server-side sampler", sampler=True
        ),
    ]
}


@dataclass
class Row:
    condition: str
    round: int
    roundtrips_per_s: float | None = None
    seconds: int = 0
    cv: float | None = None
    acf5: float | None = None
    peak_lag: int | None = None
    peak_acf: float | None = None
    throttled_periods: int | None = None
    periods: int | None = None
    throttled_ms: float | None = None
    service_cpu_s: float | None = None
    proxy_cpu_s: float | None = None
    daemons_cpu_s: float | None = None
    failed: int = 0
    error: str = ""
    series: list[float] = field(default_factory=list)


# ----------------------------------------------------------------------------- the service


def site_packages() -> Path:
    """wsecho and its dependencies for the image's Python 3.11, unpacked once from a wheelhouse
    built here (scripts/build-wheelhouse.sh) and mounted read-only into the container."""
    wheels = BENCH / ".cache" / "wheelhouse" / "py3.11"
    proc = subprocess.run(
        [str(REPO / "scripts" / "build-wheelhouse.sh"), "3.11", str(wheels)],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, PIP=venv_bin("pip")),
    )
    if proc.returncode != 0:
        raise BenchError(f"building the wheelhouse failed:\n{proc.stderr[-2000:]}")
    stamp = (wheels / ".stamp").read_text().strip()
    site = BENCH / ".cache" / f"stability-site-{stamp}"
    if not site.exists():
        partial = site.with_name(site.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        for wheel in sorted(wheels.glob("*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(partial)
        partial.chmod(0o755)
        partial.rename(site)
    return site


def check_image(image: str) -> None:
    proc = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    if proc.returncode != 0:
        raise BenchError(
            f"image {image} is not on this Docker engine: build it with scripts/bootstrap.sh "
            "(or pass --image with any Debian 12 image whose python3 is 3.11)"
        )


def docker_run_args(cond: Condition, name: str, port: int, site: Path, interval: int) -> list[str]:
    args = ["docker", "run", "-d", "--name", name, "--label", "echolab.bench=stability"]
    args += ["--user", "10001:10001", "--read-only", "--cap-drop", "ALL"]
    args += ["--security-opt", "no-new-privileges", "--ulimit", "nofile=16384:16384"]
    args += ["-v", f"{site}:/opt/site:ro", "-e", "PYTHONPATH=/opt/site", "-e", f"PORT={port}"]
    if cond.cpu == "quota":
        args += ["--cpus", "1.0"]
    elif cond.cpu == "cpuset":
        args += ["--cpuset-cpus", str(SERVER_CPU)]
    # docker run's --health-cmd is the shell form (/bin/sh -c before the probe, ~1 ms); node is
    # this machine's, mounted.
    args += ["-v", f"{node_binary()}:/usr/local/bin/node:ro"]
    if cond.health != "none":
        args += ["--health-cmd", shlex.join(PROBES[cond.health])]
        args += ["--health-interval", f"{interval}s", "--health-timeout", "10s"]
    if cond.network == "host":
        args += ["--network", "host"]
    else:
        args += ["-p", f"127.0.0.1:{port}:{port}"]
    return args


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        raise BenchError("node is needed for the baseline's probe (apt-get install nodejs)")
    return os.path.realpath(node)


def inspect(name: str, template: str) -> str:
    proc = subprocess.run(
        ["docker", "inspect", "-f", template, name], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip()


def docker_logs(name: str) -> str:
    logs = subprocess.run(
        ["docker", "logs", "--tail", "5", name], capture_output=True, text=True, check=False
    )
    return (logs.stdout + logs.stderr)[-500:]


def wait_healthz(port: int, why: Callable[[], str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        url = f"http://127.0.0.1:{port}/healthz"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
            if answer.status == 200:
                return
        time.sleep(0.2)
    raise BenchError(f"wsecho did not answer /healthz within {timeout:.0f} s: {why()}")


# ----------------------------------------------------------------------------- what it costs


def cgroup_dir(pid: int, controller: str) -> Path | None:
    """The cgroup directory of `pid` for a v1 controller (e.g. cpu), else its v2 directory."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controller in controllers.split(","):
                return Path("/sys/fs/cgroup") / controller / path.lstrip("/")
            if controllers == "":
                return Path("/sys/fs/cgroup") / path.lstrip("/")
    return None


def cpu_stat(pid: int) -> dict[str, float]:
    """nr_periods, nr_throttled, throttled seconds and CPU seconds of `pid`'s cgroup (v1 or v2)."""
    stat: dict[str, float] = {}
    cpu = cgroup_dir(pid, "cpu")
    if cpu is None:
        return stat
    with contextlib.suppress(OSError):
        for line in (cpu / "cpu.stat").read_text().splitlines():
            key, value = line.split()
            stat[key] = float(value)
    if "throttled_time" in stat:  # v1: nanoseconds
        stat["throttled_s"] = stat["throttled_time"] / 1e9
    elif "throttled_usec" in stat:  # v2
        stat["throttled_s"] = stat["throttled_usec"] / 1e6
    if "usage_usec" in stat:
        stat["usage_s"] = stat["usage_usec"] / 1e6
    else:
        acct = cgroup_dir(pid, "cpuacct")
        with contextlib.suppress(OSError, TypeError):
            stat["usage_s"] = int((acct / "cpuacct.usage").read_text()) / 1e9  # type: ignore[operator]
    return stat


def service_cpu(pid: int) -> float | None:
    with contextlib.suppress(psutil.Error):
        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    return None


def process_cpu(container_id: str, port: int) -> tuple[float, float]:
    """CPU seconds (with reaped children) of docker-proxy for `port`, and of the Docker daemons:
    dockerd, containerd and the shim of this container."""
    proxy = daemons = 0.0
    for proc in psutil.process_iter(["name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            name, cmdline = proc.info["name"], " ".join(proc.info["cmdline"] or [])
            times = proc.cpu_times()
            spent = times.user + times.system + times.children_user + times.children_system
            if name == "docker-proxy" and f"-host-port {port} " in cmdline + " ":
                proxy += spent
            elif name in {"dockerd", "containerd"} or (
                name in DOCKER_DAEMONS and container_id and container_id in cmdline
            ):
                daemons += spent
    return proxy, daemons


# ----------------------------------------------------------------------------- the series


def per_second(out: Path) -> list[float]:
    """Round trips per second of all workers together over the seconds every worker measured
    (the `wsswarm report` rule: seconds from the latest start of a worker's measured ticks)."""
    workers: list[list[dict[str, Any]]] = []
    for path in sorted(out.glob("worker-*.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        workers.append([r for r in records if r.get("type") == "tick" and r["phase"] == "measure"])
    workers = [w for w in workers if w]
    if not workers:
        return []
    origin = max(w[0]["t"] - w[0]["interval_s"] for w in workers)
    buckets: dict[int, list[float]] = {}
    for ticks in workers:
        for tick in ticks:
            second = math.floor(tick["t"] - tick["interval_s"] / 2 - origin)
            if second >= 0:
                buckets.setdefault(second, []).append(tick["roundtrips"] / tick["interval_s"])
    return [sum(v) for _, v in sorted(buckets.items()) if len(v) == len(workers)]


def cv(series: list[float]) -> float | None:
    if len(series) < 2 or sum(series) <= 0:
        return None
    mean = math.fsum(series) / len(series)
    var = math.fsum((x - mean) ** 2 for x in series) / (len(series) - 1)
    return math.sqrt(var) / mean


def acf(series: list[float], lag: int) -> float | None:
    """Autocorrelation of the series at `lag` seconds (the biased estimator, as in a
    correlogram); None when the series is flat or too short."""
    n = len(series)
    if n <= lag + 2:
        return None
    mean = math.fsum(series) / n
    dev = [x - mean for x in series]
    denom = math.fsum(d * d for d in dev)
    if denom == 0:
        return None
    return math.fsum(dev[i] * dev[i + lag] for i in range(n - lag)) / denom


# ----------------------------------------------------------------------------- one run


@contextlib.contextmanager
def serving(
    cond: Condition, args: argparse.Namespace, site: Path, out: Path
) -> Iterator[tuple[int, int, str]]:
    """wsecho under `cond`, answering /healthz; (port, pid of the service, container id: empty
    for `bare`). Removed at the end."""
    port = free_port()
    host = "127.0.0.1" if cond.network == "host" else "0.0.0.0"
    command = ["--host", host, "--port", str(port), "--log-level", "warning"]
    if cond.cpu == "bare":
        log = out / "wsecho.log"
        with log.open("wb") as console:
            server = subprocess.Popen(
                [sys.executable, "-m", "wsecho", *command], stdout=console, stderr=subprocess.STDOUT
            )
        try:
            wait_healthz(port, lambda: tail(log))
            yield port, server.pid, ""
        finally:
            server.terminate()
            server.wait(10)
        return
    name = f"{CONTAINER_PREFIX}-{os.getpid()}"
    subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
    run_args = docker_run_args(cond, name, port, site, args.health_interval)
    started = subprocess.run(
        [*run_args, args.image, "python3", "-m", "wsecho", *command],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        if started.returncode != 0:
            raise BenchError(f"docker run failed: {started.stderr.strip()[-300:]}")
        wait_healthz(port, lambda: docker_logs(name))
        yield port, int(inspect(name, "{{.State.Pid}}")), inspect(name, "{{.Id}}")
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


@contextlib.contextmanager
def polling(enabled: bool, interval: int, out: Path) -> Iterator[None]:
    """While the body runs, every `interval` s on the wall clock: what one progress line of
    swarm_run did on a client host before it left the measured window alone: an Ansible module
    (here `ansible localhost -m command`, controller and host being this machine) running
    `wsswarm progress` on the run's files."""
    if not enabled:
        yield
        return
    stop = threading.Event()
    command = [
        venv_bin("ansible"),
        *("localhost", "-i", "localhost,", "-c", "local", "-m", "ansible.builtin.command"),
        *("-a", f"{sys.executable} -m wsswarm progress --dir {out}"),
    ]

    def loop() -> None:
        while not stop.wait(interval - time.time() % interval):
            subprocess.run(command, capture_output=True, check=False)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def sampling(enabled: bool, container_id: str, out: Path) -> Iterator[None]:
    """While the body runs: `wsswarm sample` on the container, once a second, as swarm_run
    runs it on the test host during every target's run."""
    if not enabled or not container_id:
        yield
        return
    with (out / "sampler.log").open("wb") as console:
        sampler = subprocess.Popen(
            [
                *(sys.executable, "-m", "wsswarm", "sample"),
                *("--docker-container", container_id, "--out", str(out / "sample.jsonl")),
            ],
            stdout=console,
            stderr=subprocess.STDOUT,
        )
    try:
        yield
    finally:
        sampler.terminate()
        sampler.wait(10)


def run_one(cond: Condition, rnd: int, args: argparse.Namespace, site: Path, work: Path) -> Row:
    row = Row(cond.name, rnd)
    out = work / f"{cond.name}-{rnd}"
    out.mkdir(parents=True)
    log = out / "wsswarm.log"
    try:
        with serving(cond, args, site, out) as (port, pid, container_id):
            before = cpu_stat(pid) if container_id else {}
            service0 = service_cpu(pid)
            proxy0, daemons0 = process_cpu(container_id, port)
            with (
                log.open("wb") as console,
                polling(cond.poll, args.health_interval, out),
                sampling(cond.sampler, container_id, out),
            ):
                swarm = subprocess.run(
                    [
                        *(sys.executable, "-m", "wsswarm", "run"),
                        *("--url", f"ws://127.0.0.1:{port}/", "--label", cond.name),
                        *("--connections", str(args.connections)),
                        *("--processes", str(args.processes)),
                        *("--connect-rate", str(args.connect_rate)),
                        *("--warmup", str(args.warmup), "--duration", str(args.duration)),
                        *("--out", str(out), "--progress", "lines"),
                    ],
                    stdout=console,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            after = cpu_stat(pid) if container_id else {}
            service1 = service_cpu(pid)
            proxy1, daemons1 = process_cpu(container_id, port)
    except BenchError as exc:
        row.error = str(exc)
        return row
    if swarm.returncode != 0:
        row.error = f"wsswarm exit {swarm.returncode}: {tail(log, 3)}"
        return row
    summary = json.loads((out / "summary.json").read_text())
    row.failed = int(summary["connections"]["failed"])
    row.roundtrips_per_s = float(summary["roundtrips_per_s"])
    row.series = per_second(out)
    row.seconds = len(row.series)
    row.cv = cv(row.series)
    row.acf5 = acf(row.series, 5)
    known = [(v, lag) for lag in ACF_LAGS if (v := acf(row.series, lag)) is not None]
    if known:
        row.peak_acf, row.peak_lag = max(known)
    if "nr_throttled" in before and "nr_throttled" in after:
        row.throttled_periods = int(after["nr_throttled"] - before["nr_throttled"])
        row.periods = int(after["nr_periods"] - before["nr_periods"])
        row.throttled_ms = (after["throttled_s"] - before["throttled_s"]) * 1000
    if "usage_s" in before and "usage_s" in after:
        row.service_cpu_s = after["usage_s"] - before["usage_s"]
    elif service0 is not None and service1 is not None:
        row.service_cpu_s = service1 - service0
    row.proxy_cpu_s = proxy1 - proxy0 if cond.network == "proxy" else None
    row.daemons_cpu_s = daemons1 - daemons0
    return row


@dataclass
class ProbeCost:
    probe: str
    runs: int
    wall_ms: float
    container_cpu_ms: float | None
    daemons_cpu_ms: float


def probe_cost(
    probe: str, runs: int, args: argparse.Namespace, site: Path, work: Path
) -> ProbeCost:
    """What one health check costs: `docker exec` of the probe (the path Docker's health
    monitor takes: dockerd, containerd, the shim, runc exec) `runs` times, one after the other,
    into an idle container; CPU seconds of the container's cgroup and of the daemons per run."""
    cond = CONDITIONS["no-healthcheck"]
    with serving(cond, args, site, work) as (_, pid, container_id):
        before, (_, daemons0) = cpu_stat(pid), process_cpu(container_id, 0)
        walls = []
        for _ in range(runs):
            t = time.monotonic()
            subprocess.run(
                ["docker", "exec", container_id, *PROBES[probe]], capture_output=True, check=True
            )
            walls.append(time.monotonic() - t)
        after, (_, daemons1) = cpu_stat(pid), process_cpu(container_id, 0)
    container = (
        (after["usage_s"] - before["usage_s"]) * 1000 / runs
        if "usage_s" in before and "usage_s" in after
        else None
    )
    walls.sort()
    return ProbeCost(
        probe, runs, walls[runs // 2] * 1000, container, (daemons1 - daemons0) * 1000 / runs
    )


# ----------------------------------------------------------------------------- output


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render(rows: list[Row]) -> str:
    headers = [
        "condition",
        "round",
        "rt/s",
        "s",
        "CV",
        "ACF lag 5",
        "peak lag (ACF)",
        "throttled/periods",
        "throttled ms",
        "service CPU s",
        "docker-proxy CPU s",
        "daemons CPU s",
    ]
    body = []
    for r in rows:
        peak = "-" if r.peak_lag is None else f"{r.peak_lag} s ({r.peak_acf:+.2f})"
        throttled = "-" if r.periods is None else f"{r.throttled_periods}/{r.periods}"
        body.append(
            [
                r.condition,
                str(r.round),
                fmt(r.roundtrips_per_s, ",.0f") if not r.error else r.error[:60],
                str(r.seconds),
                fmt(r.cv, ".3f"),
                fmt(r.acf5, "+.2f"),
                peak,
                throttled,
                fmt(r.throttled_ms, ",.0f"),
                fmt(r.service_cpu_s, ".1f"),
                fmt(r.proxy_cpu_s, ".1f"),
                fmt(r.daemons_cpu_s, ".1f"),
            ]
        )
    return table(headers, body)


def render_summary(rows: list[Row], names: list[str]) -> str:
    """Per condition: the mean over its rounds."""
    body = []
    for name in names:
        mine = [r for r in rows if r.condition == name and not r.error]

        def mean(values: list[float | None]) -> float | None:
            known = [v for v in values if v is not None]
            return math.fsum(known) / len(known) if known else None

        body.append(
            [
                name,
                CONDITIONS[name].about,
                str(len(mine)),
                fmt(mean([r.roundtrips_per_s for r in mine]), ",.0f"),
                fmt(mean([r.cv for r in mine]), ".3f"),
                fmt(mean([r.acf5 for r in mine]), "+.2f"),
                fmt(mean([r.throttled_ms for r in mine]), ",.0f"),
            ]
        )
    headers = ["condition", "what differs", "runs", "rt/s", "CV", "ACF lag 5", "throttled ms"]
    return table(headers, body)


def render_costs(costs: list[ProbeCost]) -> str:
    headers = ["probe", "runs", "wall ms (median)", "container CPU ms", "daemons CPU ms"]
    body = [
        [
            c.probe,
            str(c.runs),
            f"{c.wall_ms:.0f}",
            fmt(c.container_cpu_ms, ".0f"),
            f"{c.daemons_cpu_ms:.0f}",
        ]
        for c in costs
    ]
    return table(headers, body)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--conditions",
        default="kit-before,no-healthcheck,cpuset,host-network",
        help="comma-separated, from: "
        + ", ".join(f"{c.name} ({c.about})" for c in CONDITIONS.values()),
    )
    p.add_argument("--rounds", type=int, default=2, help="runs of every condition, interleaved (2)")
    p.add_argument("--connections", type=int, default=500, help="as the lab profile (500)")
    p.add_argument(
        "--processes", type=int, default=2, help="wsswarm workers (2, as the lab profile)"
    )
    p.add_argument("--connect-rate", type=float, default=500, help="connections per second (500)")
    p.add_argument("--warmup", type=float, default=3, help="seconds after the ramp (3)")
    p.add_argument("--duration", type=float, default=60, help="measured seconds (60)")
    p.add_argument(
        "--health-interval", type=int, default=5, help="seconds between health checks (5)"
    )
    p.add_argument(
        "--image", default="echolab/base:bookworm", help="a Debian 12 image with python3"
    )
    p.add_argument(
        "--nice", type=int, default=0, help="niceness of the script and its children (0)"
    )
    p.add_argument(
        "--probe-cost", type=int, default=10, help="execs of each probe to cost it (10; 0: none)"
    )
    p.add_argument(
        "--site", type=Path, help="wsecho and its dependencies unpacked (default: built here)"
    )
    p.add_argument("--json", type=Path, help="also write every row (with its series) as JSON")
    p.add_argument("--keep", action="store_true", help="keep the wsswarm files and print where")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.conditions.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown or not names:
        p.error(f"unknown condition(s) {', '.join(unknown) or '(none given)'}; see --help")
    if args.rounds < 1 or args.duration < 12:
        p.error("--rounds must be >= 1 and --duration >= 12 (the ACF needs lags up to 10 s)")
    args.names = names
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("docker") is None:
        raise BenchError("docker is not installed")
    started = begin(args.nice)
    check_image(args.image)
    site = args.site.resolve() if args.site else site_packages()
    work = Path(tempfile.mkdtemp(prefix="echolab-stability-"))
    rows: list[Row] = []
    costs: list[ProbeCost] = []
    code = 0
    try:
        for probe in PROBES if args.probe_cost > 0 else []:
            costs.append(probe_cost(probe, args.probe_cost, args, site, work))
            print(f"  {probe} probe: {render_costs(costs[-1:]).splitlines()[-1]}", flush=True)
        for rnd in range(1, args.rounds + 1):
            for name in args.names:
                t = time.monotonic()
                row = run_one(CONDITIONS[name], rnd, args, site, work)
                rows.append(row)
                status = row.error or (
                    f"{fmt(row.roundtrips_per_s, ',.0f')} rt/s, CV {fmt(row.cv, '.3f')}, "
                    f"ACF(5) {fmt(row.acf5, '+.2f')}"
                )
                print(f"  {name} round {rnd}: {status} ({time.monotonic() - t:.0f} s)", flush=True)
    except (KeyboardInterrupt, Interrupted):
        print("interrupted: the tables hold the runs completed so far", file=sys.stderr)
        code = 130
    finally:
        if args.keep:
            print(f"run files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    cmd = " ".join(["bench/stability.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"\n{started:%Y-%m-%d %H:%M} UTC, `{cmd}`, load average at end {load[0]:.2f}")
    print(render(rows))
    print()
    print(render_summary(rows, args.names))
    if costs:
        print()
        print(render_costs(costs))
    if args.json is not None:
        dump = {"runs": [asdict(r) for r in rows], "probe_costs": [asdict(c) for c in costs]}
        args.json.write_text(json.dumps(dump, indent=2))
    if code == 0 and any(r.error for r in rows):
        code = 1
    return code


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"stability: error: {exc}", file=sys.stderr)
        sys.exit(2)
