"""What can be sampled: a pid, processes by name, a Docker container, a libvirt domain.

Each source finds its processes or cgroup and returns a `Snapshot` of cumulative readings.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from wsswarm.sample.cgroup import cgroup_dirs_by_id, cgroup_dirs_of_pid, cgroup_mounts, read_cgroup
from wsswarm.sample.readings import Reading, SampleError, Snapshot
from wsswarm.sockstat import read_sockstat

# The pid files of the system libvirt daemon (qemu:///system).
LIBVIRT_RUN_DIR = "/run/libvirt/qemu"
# Re-run `docker inspect` at most this often while the container's cgroup is missing.
DOCKER_RETRY_S = 5.0


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


def _read_kernel(pid: int, snap: Snapshot) -> None:
    """sockstat of PID's network namespace into the snapshot (a problem if unreadable)."""
    try:
        snap.kernel = read_sockstat(pid)
    except (OSError, ValueError) as exc:
        snap.errors["sockstat"] = f"/proc/{pid}/net/sockstat not readable ({exc})"


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
        _read_kernel(self.pid, snap)
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
        if procs:
            _read_kernel(procs[0].pid, snap)
        return snap


# ---------------------------------------------------------------------------------------------
# Docker containers


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
        _read_kernel(self.info.pid, snap)
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
