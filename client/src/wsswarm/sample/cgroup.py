"""cgroup v1/v2 lookup and reading: CPU seconds and memory in use of a container's cgroup."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from wsswarm.sample.readings import Reading, SampleError


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
