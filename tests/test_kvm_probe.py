"""vm/kvm-probe.sh with QEMU stand-ins: whatever QEMU and the guest do, one verdict and exit 0.

A stand-in `qemu-system-x86_64` first on PATH plays a guest that hangs silently, prints only
unprintable bytes, is killed, or boots; `--device /dev/null` plays a usable /dev/kvm, so the tests
do not depend on this machine's KVM. Every start of a stand-in is logged, to see the cache work.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = ROOT / "vm" / "kvm-probe.sh"

# The guest's part of each stand-in, run after it has found its console file (-serial file:PATH).
# `exec sleep` keeps one process, so the probe's SIGKILL ends all of the stand-in.
HANGS_SILENTLY = "exec sleep 600"
HANGS_UNPRINTABLE = (
    "printf '\\000\\001\\033\\177\\377\\376\\n\\r\\n\\t\\n' >\"$console\"; exec sleep 600"
)
KILLED = "kill -SEGV $$"
FAILS_UNPRINTABLE = "printf '\\377\\000\\n' >&2; exit 1"
BOOTS = (
    "printf 'Run /init as init process\\nKernel panic - not syncing: VFS: Unable to mount root fs"
    ' on unknown-block(0,0)\\n\' >"$console"; exit 0'
)


def stand_in(bin_dir: Path, guest: str) -> Path:
    """A qemu-system-x86_64 that answers --version and otherwise plays GUEST; returns its log."""
    log = bin_dir / "starts.log"
    script = bin_dir / "qemu-system-x86_64"
    script.write_text(
        "#!/bin/sh\n"
        '[ "$1" = --version ] && { echo "QEMU emulator version 7.2.0 (test stand-in)"; exit 0; }\n'
        f"echo started >>{log}\n"
        'for arg; do case "$arg" in file:*) console=${arg#file:} ;; esac; done\n'
        f"{guest}\n"
    )
    script.chmod(0o755)
    return log


def probe(bin_dir: Path, *args: str) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    """Run the probe with the stand-in first on PATH; its stdout must be one JSON line."""
    kernel = bin_dir / "vmlinuz"
    kernel.write_bytes(b"not really a kernel")
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(
        [str(PROBE), "--timeout", "1", "--device", "/dev/null", *args, str(kernel)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    verdict: dict[str, Any] = json.loads(lines[0])
    return verdict, proc


@pytest.mark.parametrize(
    ("guest", "reason"),
    [
        (
            HANGS_SILENTLY,
            "a guest kernel did not boot under KVM within 1 s (last console line: nothing printed)",
        ),
        (
            HANGS_UNPRINTABLE,
            "a guest kernel did not boot under KVM within 1 s (last console line: nothing printed)",
        ),
        (KILLED, "QEMU with KVM was killed by signal 11 after "),
        (
            FAILS_UNPRINTABLE,
            "QEMU with KVM ended (exit 1) before the guest kernel finished booting: nothing printed"
            " (last console line: nothing printed)",
        ),
    ],
    ids=["hangs-silently", "hangs-printing-unprintable-bytes", "killed", "fails-unprintable"],
)
def test_a_guest_that_does_not_boot_gives_false_with_its_reason(
    tmp_path: Path, guest: str, reason: str
) -> None:
    """A hung, killed or failing QEMU: kvm false, the reason says which, exit 0, not cached."""
    stand_in(tmp_path, guest)
    verdict, _ = probe(tmp_path)
    assert verdict["kvm"] is False
    assert verdict["reason"].startswith(reason), verdict["reason"]
    assert verdict["cached"] is False


def test_a_guest_that_boots_gives_true(tmp_path: Path) -> None:
    """A kernel that reaches "Unable to mount root fs" proves KVM."""
    stand_in(tmp_path, BOOTS)
    verdict, _ = probe(tmp_path)
    assert verdict["kvm"] is True
    assert verdict["cached"] is False
    assert verdict["reason"].startswith("a guest kernel booted under KVM in ")


def test_the_verdict_of_a_hang_is_cached(tmp_path: Path) -> None:
    """With --cache, the second run answers from the cache without starting QEMU again."""
    starts = stand_in(tmp_path, HANGS_SILENTLY)
    cache = tmp_path / "kvm-probe.cache"
    first, _ = probe(tmp_path, "--cache", str(cache))
    second, _ = probe(tmp_path, "--cache", str(cache))
    assert first["cached"] is False
    assert second == {"kvm": False, "reason": first["reason"], "cached": True}
    assert starts.read_text().splitlines() == ["started"]


def test_a_different_qemu_is_probed_again(tmp_path: Path) -> None:
    """The cache is keyed by QEMU's version (and kernel, host kernel, device): new QEMU, new try."""
    starts = stand_in(tmp_path, HANGS_SILENTLY)
    cache = tmp_path / "kvm-probe.cache"
    probe(tmp_path, "--cache", str(cache))
    script = tmp_path / "qemu-system-x86_64"
    script.write_text(script.read_text().replace("7.2.0", "8.0.0"))
    verdict, _ = probe(tmp_path, "--cache", str(cache))
    assert verdict["cached"] is False
    assert starts.read_text().splitlines() == ["started", "started"]


def test_an_unwritable_cache_still_gives_the_verdict(tmp_path: Path) -> None:
    """A cache that cannot be written costs the caching, not the verdict."""
    stand_in(tmp_path, HANGS_SILENTLY)
    verdict, proc = probe(tmp_path, "--cache", str(tmp_path / "missing-dir" / "cache"))
    assert verdict["kvm"] is False
    assert "cannot write the cache" in proc.stderr


def test_a_missing_device_gives_false_without_starting_qemu(tmp_path: Path) -> None:
    """No KVM device: false with the reason, and QEMU is never started."""
    starts = stand_in(tmp_path, BOOTS)
    verdict, _ = probe(tmp_path, "--device", str(tmp_path / "kvm"))
    assert verdict == {
        "kvm": False,
        "reason": f"{tmp_path / 'kvm'} does not exist (as a character device)",
        "cached": False,
    }
    assert not starts.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "0", "/dev/null"], "--timeout must be a positive integer"),
        (["--timeout"], "--timeout needs a value"),
        (["/nonexistent/vmlinuz"], "kernel /nonexistent/vmlinuz is not readable"),
        ([], "usage:"),
    ],
)
def test_bad_usage_exits_2_with_a_message(args: list[str], message: str) -> None:
    """Bad options are the caller's error: exit 2 and a message, no verdict."""
    proc = subprocess.run(
        [str(PROBE), *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stdout == ""
