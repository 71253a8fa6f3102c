#!/usr/bin/env python3
"""Read-only: is this host's clock synchronised, by what, and how far off its time source.

Prints one JSON object: {"source": "chrony" | "timesyncd" | "unknown", "synchronised": true |
false | null, "offset_s": float | null, "detail": str}. chrony is asked first (`chronyc -n
tracking`); otherwise systemd's `timedatectl` (its NTPSynchronized is the kernel's flag, set by
systemd-timesyncd or ntpd alike), only where systemd runs. Anything else is "unknown": nothing to
ask, which is not a failure. Python 3.9+, standard library only (runs on Debian 12, Ubuntu 22.04+).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import Any

UNITS_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0}


def run(argv: list[str]) -> str | None:
    """The command's stdout, or None when it is missing, fails or hangs."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def from_chrony(tracking: str) -> dict[str, Any]:
    """`chronyc -n tracking`: the leap status says whether it is synchronised; "System time" is
    the offset of the system clock from NTP time ("slow" means behind: negative)."""
    fields = {
        key.strip(): value.strip()
        for key, _, value in (line.partition(":") for line in tracking.splitlines())
        if value
    }
    leap = fields.get("Leap status", "")
    synchronised = bool(leap) and leap != "Not synchronised"
    offset = None
    match = re.match(r"([0-9.]+) seconds (slow|fast)", fields.get("System time", ""))
    if match:
        offset = float(match.group(1)) * (-1 if match.group(2) == "slow" else 1)
    detail = f"chrony: leap status {leap or '?'}, reference {fields.get('Reference ID', '?')}"
    return {"source": "chrony", "synchronised": synchronised, "offset_s": offset, "detail": detail}


def from_timedatectl(show: str, timesync_status: str | None) -> dict[str, Any]:
    """`timedatectl show` (NTP=, NTPSynchronized=) and, when timesyncd answers, the "Offset:" line
    of `timedatectl timesync-status` (e.g. "+1.234ms", "-15us")."""
    props = dict(line.partition("=")[::2] for line in show.splitlines() if "=" in line)
    synchronised = props.get("NTPSynchronized") == "yes"
    offset = None
    offset_line = r"^\s*Offset:\s*([+-]?[0-9.]+)\s*(ns|us|µs|ms|s|min)\s*$"
    match = re.search(offset_line, timesync_status or "", re.M)
    if match:
        offset = float(match.group(1)) * UNITS_S[match.group(2)]
    detail = (
        f"timedatectl: NTP service {props.get('NTP', '?')}, "
        f"synchronised {props.get('NTPSynchronized', '?')}"
    )
    return {
        "source": "timesyncd",
        "synchronised": synchronised,
        "offset_s": offset,
        "detail": detail,
    }


def read() -> dict[str, Any]:
    if shutil.which("chronyc"):
        tracking = run(["chronyc", "-n", "tracking"])
        if tracking is not None:
            return from_chrony(tracking)
    if shutil.which("timedatectl") and os.path.isdir("/run/systemd/system"):
        show = run(["timedatectl", "show"])
        if show is not None:
            return from_timedatectl(show, run(["timedatectl", "timesync-status"]))
    return {
        "source": "unknown",
        "synchronised": None,
        "offset_s": None,
        "detail": "neither chronyc nor a running systemd's timedatectl answers",
    }


if __name__ == "__main__":
    print(json.dumps(read(), sort_keys=True))
