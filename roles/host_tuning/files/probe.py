#!/usr/bin/env python3
"""Read-only probe of what host_tuning can change on this host; prints one JSON object.

Usage: probe.py [--global-prefixes fs,vm,kernel] [--remount] KEY[=PLANNED]...

For each sysctl key: its current value and a status, with the reason in words:
  apply        writable here (after remounting /proc/sys rw when --remount is given)
  host_global  this host is a container and the key belongs to the machine's kernel as a whole
  read_only    visible but read-only here (e.g. a per-netns copy the kernel does not let a
               child namespace change, such as rmem_max or nf_conntrack_max)
  unavailable  not present (module not loaded, or not visible in this network namespace)
  observe      given without a planned value: only read (the preflight needs its value)
"after" is the value in force once the role has run: the planned one when it is applied, else the
current one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

PROC_SYS = Path("/proc/sys")


def in_container() -> bool:
    """True inside Docker, Podman, LXC, systemd-nspawn (anything systemd calls a container)."""
    if Path("/.dockerenv").exists() or Path("/run/.containerenv").exists():
        return True
    try:
        proc = subprocess.run(
            ["systemd-detect-virt", "--container"], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        return Path("/proc/1/environ").exists() and b"container=" in _read_bytes("/proc/1/environ")
    return proc.returncode == 0


def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError:
        return b""


def proc_sys_read_only() -> bool:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/proc/sys":
            return "ro" in fields[5].split(",")
    return False


def pid1_nofile() -> tuple[int, int]:
    for line in Path("/proc/1/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise RuntimeError("no 'Max open files' in /proc/1/limits")


def pid1_has_cap_sys_resource() -> bool:
    for line in Path("/proc/1/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << 24))  # CAP_SYS_RESOURCE = 24
    return False


def probe_key(
    key: str, container: bool, global_prefixes: set[str], ro_blocked: bool
) -> dict[str, object]:
    path = PROC_SYS / key.replace(".", "/")
    value = None
    if path.exists():
        try:
            value = " ".join(path.read_text().split())
        except OSError:
            value = None
    if container and key.split(".", maxsplit=1)[0] in global_prefixes:
        return {
            "status": "host_global",
            "current": value,
            "reason": "host-global, left alone: this host is a container, the key is the machine's",
        }
    if not path.exists():
        if key.startswith("net.netfilter.nf_conntrack"):
            reason = "not present: the nf_conntrack module is not loaded (nothing to size)"
        elif container:
            reason = (
                "cannot be set from inside this container: a machine-wide key, "
                "not in its network namespace"
            )
        else:
            reason = "not present on this kernel"
        return {"status": "unavailable", "current": None, "reason": reason}
    if not path.stat().st_mode & 0o200:
        return {
            "status": "read_only",
            "current": value,
            "reason": "cannot be set from inside this container: read-only in its network namespace"
            if container
            else "read-only on this kernel",
        }
    if ro_blocked:
        return {
            "status": "read_only",
            "current": value,
            "reason": "/proc/sys is mounted read-only and host_tuning_remount_proc_sys is false",
        }
    return {"status": "apply", "current": value, "reason": "applied"}


def plan_key(
    spec: str, container: bool, global_prefixes: set[str], ro_blocked: bool
) -> tuple[str, dict[str, object]]:
    key, sep, planned = spec.partition("=")
    result = probe_key(key, container, global_prefixes, ro_blocked)
    if not sep:
        result.update(status="observe", reason="read only, not planned", planned=None)
    else:
        result["planned"] = " ".join(planned.split())
    result["after"] = result["planned"] if result["status"] == "apply" else result["current"]
    return key, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--global-prefixes", default="fs,vm,kernel")
    parser.add_argument("--remount", action="store_true", help="/proc/sys will be remounted rw")
    parser.add_argument("keys", nargs="*")
    args = parser.parse_args()
    container = in_container()
    ro = proc_sys_read_only()
    prefixes = {p for p in args.global_prefixes.split(",") if p}
    soft, hard = pid1_nofile()
    print(
        json.dumps(
            {
                "container": container,
                "proc_sys_read_only": ro,
                "systemd": Path("/run/systemd/system").is_dir()
                and os.path.realpath("/proc/1/exe").endswith("systemd"),
                "pid1_nofile_soft": soft,
                "pid1_nofile_hard": hard,
                "pid1_cap_sys_resource": pid1_has_cap_sys_resource(),
                "keys": dict(
                    plan_key(k, container, prefixes, ro and not args.remount) for k in args.keys
                ),
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
