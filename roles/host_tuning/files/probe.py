#!/usr/bin/env python3
"""Read-only probe of what host_tuning can change on this host; prints one JSON object.

Usage: probe.py [--global-prefixes fs,vm,kernel] [--remount] [--unit UNIT=NOFILE]...
                [--conntrack-hashsize N] KEY[=WANTED]...

For each sysctl key: its current value, the value planned from WANTED, and a status with the
reason in words. The plan only ever raises a limit (see raised()): a host whose value is already
above the kit's keeps it. Statuses:
  apply        writable here (after remounting /proc/sys rw when --remount is given)
  host_global  this host is a container and the key belongs to the machine's kernel as a whole
  read_only    visible but read-only here (e.g. a per-netns copy the kernel does not let a
               child namespace change, such as rmem_max or nf_conntrack_max)
  unavailable  not present (module not loaded, or not visible in this network namespace)
  observe      given without a planned value: only read (the preflight needs its value)
"after" is the value in force once the role has run: the planned one when it is applied, else the
current one.

For each --unit: the unit's LimitNOFILE in force, and whether a drop-in must raise it (status
apply), it is already at least NOFILE (kept), or the unit is not installed (absent).
--conntrack-hashsize: nf_conntrack's hash buckets, planned the same raise-only way; the parameter
is machine-wide, so a container reports it host_global.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
from pathlib import Path

PROC_SYS = Path("/proc/sys")
CONNTRACK_HASHSIZE = Path("/sys/module/nf_conntrack/parameters/hashsize")

# Keys that are a choice, not a limit: set to the wanted value whatever the host has.
SETTINGS = frozenset({"net.ipv4.tcp_tw_reuse"})
# Keys that are a range "low high": only ever widened.
RANGES = frozenset({"net.ipv4.ip_local_port_range"})


def raised(key: str, current: str | None, wanted: str) -> str:
    """The value to set for `key`: `wanted`, but never below what the host already has.

    Limits (one number, or several such as tcp_rmem's "min default max") take the larger of
    current and wanted, field by field; a range takes the lower low and the higher high; a key in
    SETTINGS takes `wanted`. Without a current value (key absent), `wanted`.
    """
    want = wanted.split()
    if current is None or key in SETTINGS:
        return " ".join(want)
    have = current.split()
    if len(have) != len(want) or not all(_is_int(f) for f in (*have, *want)):
        raise ValueError(f"{key}: cannot compare {current!r} with {wanted!r} field by field")
    if key in RANGES:
        low, high = (int(f) for f in have)
        wlow, whigh = (int(f) for f in want)
        return f"{min(low, wlow)} {max(high, whigh)}"
    return " ".join(str(max(int(h), int(w))) for h, w in zip(have, want, strict=True))


def _is_int(field: str) -> bool:
    return field.lstrip("-").isdigit()


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
    key, sep, wanted = spec.partition("=")
    result = probe_key(key, container, global_prefixes, ro_blocked)
    if not sep:
        result.update(status="observe", reason="read only, not planned", planned=None)
    else:
        current = result["current"]
        result["wanted"] = " ".join(wanted.split())
        result["planned"] = raised(key, current if isinstance(current, str) else None, wanted)
        if result["status"] == "apply" and result["planned"] != result["wanted"]:
            result["reason"] = "applied, kept the host's higher value"
    result["after"] = result["planned"] if result["status"] == "apply" else result["current"]
    return key, result


def unit_nofile(unit: str, want: int) -> dict[str, object]:
    """The unit's LimitNOFILE (hard) in force, and whether a drop-in must raise it to `want`."""
    proc = subprocess.run(
        ["systemctl", "show", "--property=LoadState,LimitNOFILE", unit],
        capture_output=True,
        text=True,
        check=False,
    )
    props = dict(line.partition("=")[::2] for line in proc.stdout.splitlines())
    if proc.returncode != 0 or props.get("LoadState") != "loaded":
        return {
            "status": "absent",
            "current": None,
            "planned": None,
            "reason": "not installed here: no drop-in",
        }
    current = props.get("LimitNOFILE", "")
    if current == "infinity" or int(current) >= want:
        return {
            "status": "kept",
            "current": current,
            "planned": None,
            "reason": f"its LimitNOFILE {current} is already at least {want}",
        }
    return {"status": "apply", "current": current, "planned": want, "reason": "raised"}


def nofile_ceiling(pid1_hard: int, cap_sys_resource: bool, nr_open: int) -> tuple[int, str]:
    """What a process can raise its open-file limit to, and why.

    With CAP_SYS_RESOURCE (systemd on a real host) fs.nr_open; without it (a container here), no
    service can go above the hard limit PID 1 already has.
    """
    if cap_sys_resource:
        return nr_open, "fs.nr_open"
    return min(pid1_hard, nr_open), "hard limit of PID 1, no CAP_SYS_RESOURCE to raise it"


def conntrack_hashsize(wanted: int, container: bool) -> dict[str, object]:
    """nf_conntrack's hash buckets: planned raise-only, writable only outside a container."""
    current = CONNTRACK_HASHSIZE.read_text().strip() if CONNTRACK_HASHSIZE.exists() else None
    planned = raised("hashsize", current, str(wanted))
    if container:
        return {
            "status": "host_global",
            "current": current,
            "planned": planned,
            "reason": (
                "host-global, left alone: this host is a container, the module is the machine's"
            ),
        }
    if current is None:
        return {
            "status": "unavailable",
            "current": None,
            "planned": planned,
            "reason": "not present: the nf_conntrack module is not loaded",
        }
    if not os.access(CONNTRACK_HASHSIZE, os.W_OK):
        return {
            "status": "read_only",
            "current": current,
            "planned": planned,
            "reason": "the module parameter is read-only here",
        }
    return {"status": "apply", "current": current, "planned": planned, "reason": "applied"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--global-prefixes", default="fs,vm,kernel")
    parser.add_argument("--remount", action="store_true", help="/proc/sys will be remounted rw")
    parser.add_argument("--nofile", type=int, help="wanted per-process open-file limit")
    parser.add_argument("--unit", action="append", default=[], help="a unit to give --nofile")
    parser.add_argument("--conntrack-hashsize", type=int, metavar="N")
    parser.add_argument("keys", nargs="*")
    args = parser.parse_args()
    container = in_container()
    ro = proc_sys_read_only()
    prefixes = {p for p in args.global_prefixes.split(",") if p}
    soft, hard = pid1_nofile()
    cap = pid1_has_cap_sys_resource()
    keys = dict(plan_key(k, container, prefixes, ro and not args.remount) for k in args.keys)
    nofile: dict[str, object] | None = None
    units: dict[str, dict[str, object]] = {}
    if args.nofile is not None:
        nr_open = (
            keys.get("fs.nr_open", {}).get("after")
            or Path(PROC_SYS / "fs/nr_open").read_text().strip()
        )
        ceiling, why = nofile_ceiling(hard, cap, int(str(nr_open)))
        planned = min(args.nofile, ceiling)
        nofile = {
            "wanted": args.nofile,
            "ceiling": ceiling,
            "ceiling_reason": why,
            "planned": planned,
        }
        units = {unit: unit_nofile(unit, planned) for unit in args.unit}
    print(
        json.dumps(
            {
                "container": container,
                "proc_sys_read_only": ro,
                "systemd": Path("/run/systemd/system").is_dir()
                and os.path.realpath("/proc/1/exe").endswith("systemd"),
                "pid1_nofile_soft": soft,
                "pid1_nofile_hard": hard,
                "pid1_cap_sys_resource": cap,
                "keys": keys,
                "nofile": nofile,
                "units": units,
                "conntrack_hashsize": None
                if args.conntrack_hashsize is None
                else conntrack_hashsize(args.conntrack_hashsize, container),
            },
            sort_keys=True,
        )
    )


if __name__ == "__main__":
    main()
