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
Each sample also carries the kernel's TCP socket figures as the server's network namespace sees
them (not for a libvirt domain: the guest kernel's socket memory is inside the qemu RSS).
The file format is in docs/formats.md ("wsswarm sample").

Modules: `readings` (the records a source returns), `cgroup` (cgroup lookup and reading),

`sources` (pid, name, Docker and libvirt lookups), `sampler` (the loop and its JSON lines),
`cli` (options and entry point).
"""

from wsswarm.formats import FORMAT_VERSION
from wsswarm.sample.cgroup import (
    CgroupMount,
    cgroup_dirs_by_id,
    cgroup_dirs_of_pid,
    cgroup_mounts,
    read_cgroup,
)
from wsswarm.sample.cli import configure_parser, main, make_source
from wsswarm.sample.readings import Reading, SampleError, Snapshot
from wsswarm.sample.sampler import Sampler, run_sampler
from wsswarm.sample.sources import (
    LIBVIRT_RUN_DIR,
    ContainerInfo,
    DockerSource,
    LibvirtSource,
    NameSource,
    PidSource,
    Source,
    docker_inspect,
    find_docker_proxies,
    find_processes_by_name,
    find_qemu_process,
    find_vhost_threads,
    qemu_guest_name,
)
from wsswarm.sockstat import SockStat, parse_sockstat, read_sockstat

__all__ = [
    "FORMAT_VERSION",
    "LIBVIRT_RUN_DIR",
    "CgroupMount",
    "ContainerInfo",
    "DockerSource",
    "LibvirtSource",
    "NameSource",
    "PidSource",
    "Reading",
    "SampleError",
    "Sampler",
    "Snapshot",
    "SockStat",
    "Source",
    "cgroup_dirs_by_id",
    "cgroup_dirs_of_pid",
    "cgroup_mounts",
    "configure_parser",
    "docker_inspect",
    "find_docker_proxies",
    "find_processes_by_name",
    "find_qemu_process",
    "find_vhost_threads",
    "main",
    "make_source",
    "parse_sockstat",
    "qemu_guest_name",
    "read_cgroup",
    "read_sockstat",
    "run_sampler",
]
