"""Where a target's server ran and how the clients' traffic reached it, from its manifest entry
(roles/run_manifest): the cores it had, the CPU pinning read back, vhost, the network path."""

from __future__ import annotations

import re
from typing import Any

# How a client host's traffic reached each kind of server (docs/formats.md, manifest targets).
PATH_DOCKER_PROXY = "docker-proxy (userland proxy) to the container's bridge"
PATH_DNAT_LOCAL = "DNAT of the loopback (iptables OUTPUT) to the container's bridge"
PATH_DNAT_REMOTE = "DNAT (iptables PREROUTING) on the test host to the container's bridge"
PATH_HOST_NETWORK = "the host's network stack (no NAT, no proxy)"
PATH_VM_LOCAL = "the test host's bridge to the VM's virtio-net"
PATH_VM_REMOTE = "routed by the test host onto its bridge to the VM's virtio-net"


def cpu_numbers(text: Any) -> list[int] | None:
    """The CPUs of a kernel/libvirt/Docker CPU list ("0-2,5"); None when it is not one."""
    if not isinstance(text, str) or not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", text.strip()):
        return None
    cpus: set[int] = set()
    for part in text.strip().split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return sorted(cpus)


def server_cores(info: dict[str, Any]) -> tuple[float | None, str]:
    """The cores the target's server could use, and what that figure rests on.

    A VM has its vCPUs; a container its cpuset, else its CPU quota; the node.js baseline is one
    process (one event loop) whatever it was given, as in 2017."""
    kind = info.get("kind")
    if kind == "vm":
        vm = info.get("vm") or {}
        vcpus = vm.get("vcpus")
        if not isinstance(vcpus, int) or vcpus < 1:
            return None, "unknown (no vCPU count recorded)"
        pinned = vm.get("cpus") or []
        where = f" pinned to host CPU(s) {_join(pinned)}" if pinned else ", not pinned"
        return float(vcpus), f"{vcpus} vCPU(s){where}"
    container = info.get("container") or {}
    given: float | None = None
    basis = "unknown (no container record)"
    cpuset = cpu_numbers(container.get("cpuset") or "")
    if cpuset:
        given, basis = float(len(cpuset)), f"cpuset {_join(cpuset)}"
    elif isinstance(container.get("cpus"), (int, float)) and container["cpus"] > 0:
        given, basis = float(container["cpus"]), f"CPU quota {container['cpus']:g}"
    if kind == "baseline" and given is not None:
        return min(given, 1.0), f"one node.js process ({basis})"
    return given, basis


def network_paths(info: dict[str, Any]) -> dict[str, str]:
    """Client host -> the path its connections took to the server, as it really was: the
    container's network mode and the docker-proxy seen running decide, and whether the client
    is the test host itself (docker-proxy carries only the test host's own connections; a
    remote client's go through DNAT). Empty when the manifest does not say where the clients
    were."""
    clients = info.get("client_hosts")
    if not isinstance(clients, dict):
        return {}
    kind = info.get("kind")
    container = info.get("container") or {}
    paths: dict[str, str] = {}
    for host, where in sorted(clients.items()):
        local = where == "local"
        if kind == "vm":
            path = PATH_VM_LOCAL if local else PATH_VM_REMOTE
            vhost = (info.get("vm") or {}).get("vhost_net")
            if vhost is not None:
                path += " (vhost)" if vhost else " (no vhost: QEMU userspace)"
        elif container.get("network_mode") == "host":
            path = PATH_HOST_NETWORK
        elif container.get("network_mode") == "bridge" or kind in ("container", "baseline"):
            if not local:
                path = PATH_DNAT_REMOTE
            elif info.get("docker_proxy"):
                path = PATH_DOCKER_PROXY
            else:
                path = PATH_DNAT_LOCAL
        else:
            path = "unknown"
        paths[host] = path
    return paths


def path_text(paths: dict[str, str]) -> str | None:
    """One line for the report: the path, or each client host's when they differ."""
    if not paths:
        return None
    if len(set(paths.values())) == 1:
        return next(iter(paths.values()))
    return "; ".join(f"from {host}: {path}" for host, path in paths.items())


def pinning_problems(info: dict[str, Any]) -> list[str]:
    """Where the pinning read back after deployment differs from the CPUs asked for
    (echolab_server_cpus), or could not be read."""
    asked = info.get("server_cpus") or []
    if not asked:
        return []
    want = sorted(asked)
    read = info.get("pinning") or {}
    if info.get("kind") == "vm":
        vcpus = read.get("vcpupin")
        emulator = cpu_numbers(read.get("emulatorpin") or "")
        expected_vcpus = [str(cpu) for cpu in asked]
        if vcpus != expected_vcpus or emulator != want:
            return [
                f"CPU pinning not in force: asked for host CPUs {_join(want)}, `virsh vcpupin` "
                f"read back {vcpus if vcpus is not None else 'nothing'} and `virsh emulatorpin` "
                f"{read.get('emulatorpin') or 'nothing'}"
            ]
        return []
    cpuset = read.get("cpuset")
    if cpu_numbers(cpuset or "") != want:
        return [
            f"CPU pinning not in force: asked for host CPUs {_join(want)}, `docker inspect` read "
            f"back cpuset {cpuset!r}"
        ]
    return []


def placement_warnings(info: dict[str, Any]) -> list[str]:
    """What the reader must know about where the server ran: pinning not in force, a VM
    without vhost."""
    warnings = pinning_problems(info)
    if info.get("kind") == "vm" and (info.get("vm") or {}).get("vhost_net") is False:
        warnings.append(
            "virtio-net without vhost (/dev/vhost-net missing on the test host): QEMU carried "
            "every packet in userspace, unlike the usual KVM setup"
        )
    return warnings


def _join(cpus: list[Any]) -> str:
    return ",".join(str(c) for c in cpus)
