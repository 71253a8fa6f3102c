"""`wsswarm sample`: CPU and memory of what serves the connections, once a second, to JSON lines.

What is sampled (one of):
- `--pid N`: one process (with `--children`, its descendants too);
- `--process-name NAME`: every process of that name, looked up again at each sample;
- `--docker-container NAME`: the container's cgroup (all its processes) plus the docker-proxy
  processes that forward its published ports (they burn CPU on the path of every byte);
- `--libvirt-domain NAME`: the domain's qemu process (plus its vhost-net kernel threads).

CPU is in percent of one core (200 = two cores busy) over the interval, from cumulative counters
(process CPU times, cgroup cpuacct), so nothing between two samples is lost. Memory is RSS for
processes and "usage minus inactive file cache" for a cgroup (what `docker stats` shows).
The file format is in docs/formats.md ("wsswarm sample").
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

FORMAT_VERSION = 1
# The pid files of the system libvirt daemon (qemu:///system).
LIBVIRT_RUN_DIR = "/run/libvirt/qemu"
# Re-run `docker inspect` at most this often while the container's cgroup is missing.
DOCKER_RETRY_S = 5.0
# A process start time is the kernel's boot time (whole seconds) plus clock ticks, so it can read
# up to a second early: a new process that started this close before the last sample counts as
# born in this interval.
BIRTH_SLACK_S = 1.0


class SampleError(Exception):
    """The thing to sample cannot be found or read; the message says what to check."""


@dataclass
class Reading:
    """Cumulative counters of one component at one instant."""

    cpu_s: float  # cumulative CPU seconds since the component came to life
    rss_bytes: int
    # When the component came to life (epoch s), if known: a component born after the previous
    # sample had all its CPU time inside this interval.
    born: float | None = None
    extra: dict[str, int] = field(default_factory=dict)


@dataclass
class Snapshot:
    """What a source saw at one instant: readings by component name, problems by subject."""

    readings: dict[str, Reading] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Processes


def _process_reading(proc: psutil.Process) -> Reading:
    with proc.oneshot():
        times = proc.cpu_times()
        return Reading(
            cpu_s=times.user + times.system,
            rss_bytes=proc.memory_info().rss,
            born=proc.create_time(),
        )


def _component_name(proc: psutil.Process) -> str:
    try:
        name = proc.name()
    except psutil.Error:
        name = "process"
    return f"{name}[{proc.pid}]"


def _read_processes(procs: list[psutil.Process], snap: Snapshot) -> None:
    for proc in procs:
        try:
            snap.readings[_component_name(proc)] = _process_reading(proc)
        except psutil.NoSuchProcess:
            continue  # ended between the lookup and the read: it is simply gone
        except psutil.AccessDenied as exc:
            snap.errors[f"pid {proc.pid}"] = f"access denied ({exc}); run as root or as its user"


def _with_children(procs: list[psutil.Process]) -> list[psutil.Process]:
    seen: dict[int, psutil.Process] = {}
    for proc in procs:
        seen.setdefault(proc.pid, proc)
        try:
            for child in proc.children(recursive=True):
                seen.setdefault(child.pid, child)
        except psutil.Error:
            continue
    return list(seen.values())


class PidSource:
    """One process by pid (optionally with its descendants)."""

    kind = "process"

    def __init__(self, pid: int, children: bool = False) -> None:
        self.pid = pid
        self.children = children
        self.what = f"pid {pid}" + (" and its children" if children else "")
        try:
            self.proc = psutil.Process(pid)
        except psutil.NoSuchProcess as exc:
            raise SampleError(f"no process with pid {pid}") from exc
        self.gone = False

    def read(self) -> Snapshot:
        snap = Snapshot()
        if not self.proc.is_running() or self.proc.status() == psutil.STATUS_ZOMBIE:
            self.gone = True
            snap.errors[f"pid {self.pid}"] = "the process has exited"
            return snap
        procs = _with_children([self.proc]) if self.children else [self.proc]
        _read_processes(procs, snap)
        return snap


def _process_matches(proc: psutil.Process, name: str) -> bool:
    try:
        if proc.name() == name:
            return True
        cmdline = proc.cmdline()
    except psutil.Error:
        return False
    # A script started through its shebang has the interpreter as argv[0] on some systems.
    return bool(cmdline) and os.path.basename(cmdline[0]) == name


def find_processes_by_name(name: str) -> list[psutil.Process]:
    """Every process named NAME (comm or argv[0] basename), except this sampler itself."""
    me = os.getpid()
    return [p for p in psutil.process_iter() if p.pid != me and _process_matches(p, name)]


class NameSource:
    """Every process of a name, looked up again at each sample (restarts and new workers count)."""

    kind = "process"

    def __init__(self, name: str, children: bool = False) -> None:
        self.name = name
        self.children = children
        self.what = name
        self.gone = False
        self._procs: dict[int, psutil.Process] = {}
        if not self._lookup():
            raise SampleError(f"no process named {name!r} is running")

    def _lookup(self) -> list[psutil.Process]:
        found = []
        for proc in find_processes_by_name(self.name):
            # Keep the Process objects we already have: psutil caches what identifies them.
            found.append(self._procs.setdefault(proc.pid, proc))
        self._procs = {p.pid: p for p in found}
        return found

    def read(self) -> Snapshot:
        snap = Snapshot()
        procs = self._lookup()
        if not procs:
            snap.errors[self.name] = f"no process named {self.name!r} is running"
        _read_processes(_with_children(procs) if self.children else procs, snap)
        return snap


# ---------------------------------------------------------------------------------------------
# cgroups (Docker containers)


@dataclass
class CgroupMount:
    root: str  # the cgroup path that is mounted (usually "/")
    mountpoint: str


def cgroup_mounts(mountinfo: str = "/proc/self/mountinfo") -> dict[str, CgroupMount]:
    """Controller name ("cpuacct", "memory", or "" for the v2 unified tree) -> its mount."""
    mounts: dict[str, CgroupMount] = {}
    for line in Path(mountinfo).read_text().splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        fstype, options = rfields[0], rfields[2].split(",")
        mount = CgroupMount(root=fields[3], mountpoint=fields[4])
        if fstype == "cgroup":
            for controller in ("cpuacct", "memory"):
                if controller in options:
                    mounts.setdefault(controller, mount)
        elif fstype == "cgroup2":
            mounts.setdefault("", mount)
    return mounts


def _join(mount: CgroupMount, path: str) -> Path:
    rel = os.path.relpath(path, mount.root) if mount.root != "/" else path.lstrip("/")
    return Path(mount.mountpoint) / ("" if rel == "." else rel)


def cgroup_dirs_of_pid(pid: int, mounts: dict[str, CgroupMount]) -> tuple[Path, Path, int]:
    """(cpu dir, memory dir, cgroup version) of the cgroups of a process, from /proc/PID/cgroup."""
    paths: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    # A hybrid host (v1 controllers plus an empty v2 tree) is read through its v1 controllers.
    if "cpuacct" in paths and "memory" in paths and "cpuacct" in mounts and "memory" in mounts:
        cpu = _join(mounts["cpuacct"], paths["cpuacct"])
        mem = _join(mounts["memory"], paths["memory"])
        return cpu, mem, 1
    if "" in paths and "" in mounts:
        unified = _join(mounts[""], paths[""])
        return unified, unified, 2
    raise SampleError(f"no cpuacct/memory cgroup found for pid {pid} in /proc/{pid}/cgroup")


def cgroup_dirs_by_id(container_id: str, base: str = "/sys/fs/cgroup") -> tuple[Path, Path, int]:
    """The usual cgroup places of a Docker container (cgroupfs or systemd driver, v1 or v2)."""
    root = Path(base)
    for sub in (f"docker/{container_id}", f"system.slice/docker-{container_id}.scope"):
        for cpu_ctrl in ("cpuacct", "cpu,cpuacct"):
            cpu, mem = root / cpu_ctrl / sub, root / "memory" / sub
            if (cpu / "cpuacct.usage").exists() and (mem / "memory.usage_in_bytes").exists():
                return cpu, mem, 1
        unified = root / sub
        if (unified / "cpu.stat").exists() and (unified / "memory.current").exists():
            return unified, unified, 2
    raise SampleError(f"no cgroup found for container {container_id[:12]} under {base}")


def _memory_stat(path: Path) -> dict[str, int]:
    stats = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            stats[key] = int(value)
    return stats


def read_cgroup(cpu_dir: Path, mem_dir: Path, version: int) -> Reading:
    """Cumulative CPU seconds and memory in use (without inactive file cache) of a cgroup."""
    if version == 1:
        cpu_s = int((cpu_dir / "cpuacct.usage").read_text()) / 1e9
        usage = int((mem_dir / "memory.usage_in_bytes").read_text())
        inactive = _memory_stat(mem_dir / "memory.stat").get("total_inactive_file", 0)
    else:
        cpu_stat = _memory_stat(cpu_dir / "cpu.stat")
        cpu_s = cpu_stat["usage_usec"] / 1e6
        usage = int((mem_dir / "memory.current").read_text())
        inactive = _memory_stat(mem_dir / "memory.stat").get("inactive_file", 0)
    # Inactive file cache is reclaimable: it is not memory the service needs (docker stats, too).
    in_use = max(usage - inactive, 0)
    return Reading(cpu_s=cpu_s, rss_bytes=in_use, extra={"usage_bytes": usage})


@dataclass
class ContainerInfo:
    id: str
    pid: int
    running: bool
    ips: list[str]


def docker_inspect(name: str, docker: str = "docker") -> ContainerInfo:
    """Id, main pid and IP addresses of a container, from `docker inspect`."""
    try:
        proc = subprocess.run(
            [docker, "inspect", "--type", "container", name],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except FileNotFoundError as exc:
        raise SampleError(f"the docker command ({docker}) is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise SampleError(f"`docker inspect {name}` did not answer within 30 s") from exc
    if proc.returncode != 0:
        raise SampleError(f"docker inspect {name}: {proc.stderr.strip() or 'failed'}")
    data = json.loads(proc.stdout)[0]
    networks = (data.get("NetworkSettings") or {}).get("Networks") or {}
    ips = [n["IPAddress"] for n in networks.values() if n.get("IPAddress")]
    ips += [n["GlobalIPv6Address"] for n in networks.values() if n.get("GlobalIPv6Address")]
    state = data.get("State") or {}
    return ContainerInfo(
        id=data["Id"], pid=int(state.get("Pid") or 0), running=bool(state.get("Running")), ips=ips
    )


def _arg_after(cmdline: list[str], flag: str) -> str | None:
    for i, arg in enumerate(cmdline[:-1]):
        if arg == flag:
            return cmdline[i + 1]
    return None


def find_docker_proxies(container_ips: list[str]) -> list[psutil.Process]:
    """docker-proxy processes forwarding a published port to one of these container addresses."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.name() != "docker-proxy":
                continue
            if _arg_after(proc.cmdline(), "-container-ip") in container_ips:
                found.append(proc)
        except psutil.Error:
            continue
    return found


class DockerSource:
    """A container's cgroup plus the docker-proxy processes on the path to it."""

    kind = "docker"

    def __init__(self, container: str, docker: str = "docker") -> None:
        self.container = container
        self.docker = docker
        self.what = container
        self.gone = False
        self._last_inspect = 0.0
        self._proxies: dict[int, psutil.Process] = {}
        self._resolve()

    def _resolve(self) -> None:
        self._last_inspect = time.monotonic()
        info = docker_inspect(self.container, self.docker)
        if not info.running:
            raise SampleError(f"container {self.container} is not running")
        self.info = info
        try:
            self.dirs = cgroup_dirs_of_pid(info.pid, cgroup_mounts())
            read_cgroup(*self.dirs)
        except (OSError, SampleError, KeyError, ValueError):
            # /proc/PID/cgroup not readable or relative to another namespace: try the usual places.
            self.dirs = cgroup_dirs_by_id(info.id)
            read_cgroup(*self.dirs)

    def read(self) -> Snapshot:
        snap = Snapshot()
        cgroup_name = f"container:{self.container}"
        try:
            snap.readings[cgroup_name] = read_cgroup(*self.dirs)
        except (OSError, KeyError, ValueError) as exc:
            snap.errors[cgroup_name] = f"cgroup not readable ({exc}); stopped or restarted?"
            if time.monotonic() - self._last_inspect >= DOCKER_RETRY_S:
                try:
                    self._resolve()  # a restarted container has a new cgroup (and maybe address)
                except SampleError as err:
                    snap.errors[cgroup_name] = str(err)
        found = []
        for proc in find_docker_proxies(self.info.ips):
            found.append(self._proxies.setdefault(proc.pid, proc))
        self._proxies = {p.pid: p for p in found}
        _read_processes(found, snap)
        return snap


# ---------------------------------------------------------------------------------------------
# libvirt domains


def qemu_guest_name(cmdline: list[str]) -> str | None:
    """The guest name of a qemu command line: `-name guest=NAME,...` or `-name NAME`."""
    value = _arg_after(cmdline, "-name")
    if value is None:
        return None
    # qemu option syntax: a doubled comma is a literal comma inside a value.
    first = value.replace(",,", "\0").split(",")[0].replace("\0", ",")
    if first.startswith("guest="):
        return first[len("guest=") :]
    for part in value.split(","):
        if part.startswith("guest="):
            return part[len("guest=") :]
    return first


def find_qemu_process(domain: str, run_dir: str = LIBVIRT_RUN_DIR) -> psutil.Process:
    """The qemu process of a domain: libvirt's pid file if present, else a command-line match."""
    pid_file = Path(run_dir) / f"{domain}.pid"
    try:
        proc = psutil.Process(int(pid_file.read_text().strip()))
        if qemu_guest_name(proc.cmdline()) == domain:
            return proc
    except (OSError, ValueError, psutil.Error):
        pass  # no pid file, or a stale one: look at the command lines
    for proc in psutil.process_iter():
        try:
            if proc.name().startswith("qemu") and qemu_guest_name(proc.cmdline()) == domain:
                return proc
        except psutil.Error:
            continue
    raise SampleError(
        f"no qemu process for libvirt domain {domain!r} (no valid {pid_file}, and no qemu "
        f"process with `-name guest={domain}`); is the domain running (`virsh list`)?"
    )


def find_vhost_threads(qemu_pid: int) -> list[psutil.Process]:
    """vhost-net kernel threads of a qemu process: virtio-net packets are moved there."""
    name = f"vhost-{qemu_pid}"
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.name() == name:
                found.append(proc)
        except psutil.Error:
            continue
    return found


class LibvirtSource:
    """The qemu process of a libvirt domain (found again if the domain restarts)."""

    kind = "libvirt"

    def __init__(self, domain: str, run_dir: str = LIBVIRT_RUN_DIR) -> None:
        self.domain = domain
        self.run_dir = run_dir
        self.what = domain
        self.gone = False
        self.qemu: psutil.Process | None = find_qemu_process(domain, run_dir)

    def read(self) -> Snapshot:
        snap = Snapshot()
        if self.qemu is None or not self.qemu.is_running():
            try:
                self.qemu = find_qemu_process(self.domain, self.run_dir)
            except SampleError as exc:
                self.qemu = None
                snap.errors[self.domain] = str(exc)
                return snap
        _read_processes([self.qemu, *find_vhost_threads(self.qemu.pid)], snap)
        return snap


Source = PidSource | NameSource | DockerSource | LibvirtSource


# ---------------------------------------------------------------------------------------------
# The sampler


class Sampler:
    """Turns cumulative readings into per-interval CPU% and current memory, one record per call."""

    def __init__(self, source: Source) -> None:
        self.source = source
        first = source.read()
        self._prev = first.readings
        self._prev_mono = time.monotonic()
        self._prev_t = time.time()

    def sample(self) -> dict[str, Any]:
        snap = self.source.read()
        mono, now = time.monotonic(), time.time()
        elapsed = max(mono - self._prev_mono, 1e-9)
        components: dict[str, dict[str, Any]] = {}
        errors = dict(snap.errors)
        cpu_total, rss_total = 0.0, 0
        for name, reading in sorted(snap.readings.items()):
            prev = self._prev.get(name)
            cpu: float | None
            if prev is not None and reading.cpu_s >= prev.cpu_s:
                cpu = (reading.cpu_s - prev.cpu_s) / elapsed * 100.0
            elif (
                prev is None
                and reading.born is not None
                and reading.born >= self._prev_t - BIRTH_SLACK_S
            ):
                cpu = reading.cpu_s / elapsed * 100.0  # born in this interval: all of it is new
            else:
                # Seen for the first time (or its counter restarted): no baseline yet.
                cpu = None
                errors[name] = "no CPU baseline yet (new or restarted); counted from next sample"
            comp: dict[str, Any] = {
                "cpu_percent": None if cpu is None else round(cpu, 2),
                "rss_bytes": reading.rss_bytes,
            }
            comp.update(reading.extra)
            components[name] = comp
            cpu_total += cpu or 0.0
            rss_total += reading.rss_bytes
        self._prev, self._prev_mono, self._prev_t = snap.readings, mono, now
        record: dict[str, Any] = {
            "type": "sample",
            "t": round(now, 3),
            "interval_s": round(elapsed, 4),
            "cpu_percent": round(cpu_total, 2),
            "rss_bytes": rss_total,
            "components": components,
        }
        if errors:
            record["errors"] = errors
        return record


def make_source(args: argparse.Namespace) -> Source:
    if args.pid is not None:
        return PidSource(args.pid, children=args.children)
    if args.process_name is not None:
        return NameSource(args.process_name, children=args.children)
    if args.docker_container is not None:
        return DockerSource(args.docker_container, docker=args.docker)
    return LibvirtSource(args.libvirt_domain, run_dir=args.libvirt_run_dir)


@dataclass
class _Stop:
    reason: str = ""
    message: str = ""


def _ticks(interval: float, duration: float | None) -> Iterator[float]:
    """Monotonic deadlines on a fixed grid, so that the samples do not drift."""
    start = time.monotonic()
    k = 1
    while duration is None or k * interval <= duration + 1e-9:
        yield start + k * interval
        k += 1


def run_sampler(
    source: Source,
    out: IO[str],
    *,
    target: str,
    interval: float,
    duration: float | None,
    wait: Callable[[float], int | None],
) -> _Stop:
    """Write start, samples and end records; `wait(s)` sleeps, returns a signal number or None."""

    def write(record: dict[str, Any]) -> None:
        out.write(json.dumps(record, separators=(",", ":")) + "\n")
        out.flush()  # each line is complete on disk as soon as it is written

    write(
        {
            "type": "start",
            "format_version": FORMAT_VERSION,
            "host": socket.gethostname(),
            "target": target,
            "kind": source.kind,
            "what": source.what,
            "interval_s": interval,
            "pid": os.getpid(),
            "t": round(time.time(), 3),
        }
    )
    stop = _Stop("completed", f"duration of {duration} s reached")
    samples = 0
    try:
        sampler = Sampler(source)
        for deadline in _ticks(interval, duration):
            signum = wait(max(deadline - time.monotonic(), 0.0))
            if signum is not None:
                stop = _Stop("signal", f"stopped by {signal.Signals(signum).name}")
                break
            write(sampler.sample())
            samples += 1
            if source.gone:
                stop = _Stop("target_gone", f"{source.what}: the sampled process has exited")
                break
    except (SampleError, OSError, psutil.Error) as exc:
        stop = _Stop("error", str(exc))
    write(
        {
            "type": "end",
            "t": round(time.time(), 3),
            "reason": stop.reason,
            "message": stop.message,
            "samples": samples,
        }
    )
    return stop


def _signal_wait(signals: tuple[signal.Signals, ...]) -> Callable[[float], int | None]:
    """A sleep that a SIGTERM/SIGINT ends at once: the signals are blocked and waited for."""

    def wait(timeout: float) -> int | None:
        info = signal.sigtimedwait(signals, timeout)
        return None if info is None else info.si_signo

    return wait


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
                wait=_signal_wait(signals),
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
