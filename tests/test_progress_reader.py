"""`wsswarm progress` (the swarm_run role's progress reader) on the files of a real `wsswarm run`.

A real wsecho on 127.0.0.1 and a real swarm; the reader must sum the workers' latest ticks while
they run and, once they have ended, still report the measured rate (the quick profile ends between
two of Ansible's polls: a progress line of 0 round-trips/s was the bug).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def read_progress(out: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "wsswarm", "progress", "--dir", str(out)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.fixture
def wsecho_port(tmp_path: Path) -> Iterator[int]:
    log = tmp_path / "wsecho.log"
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wsecho", "--host", "127.0.0.1", "--port", "0"],
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            match = re.search(r"serving on port (\d+)", log.read_text(errors="replace"))
            if match:
                yield int(match.group(1))
                break
            assert proc.poll() is None, log.read_text(errors="replace")
            time.sleep(0.05)
        else:
            pytest.fail(f"wsecho did not start:\n{log.read_text(errors='replace')}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_reader_reports_live_and_ended_runs(tmp_path: Path, wsecho_port: int) -> None:
    out = tmp_path / "run"
    assert read_progress(tmp_path)["workers"] == 0  # nothing started yet: zeros, no crash

    swarm = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wsswarm",
            "run",
            "--url",
            f"ws://127.0.0.1:{wsecho_port}/",
            "--processes",
            "2",
            "--connections",
            "20",
            "--connect-rate",
            "200",
            "--warmup",
            "1",
            "--duration",
            "4",
            "--out",
            str(out),
            "--progress",
            "lines",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    live: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 60
        while swarm.poll() is None and time.monotonic() < deadline:
            if out.is_dir():
                live.append(read_progress(out))
            time.sleep(0.5)
        assert swarm.wait(timeout=30) == 0
    finally:
        if swarm.poll() is None:
            swarm.kill()
            swarm.wait()

    running = [p for p in live if p["phase"] == "measure" and p["roundtrips_per_s"] > 0]
    assert running, f"no live progress with round trips while the swarm ran: {live}"
    assert max(p["open"] for p in running) == 20

    ended = read_progress(out)
    summary = json.loads((out / "summary.json").read_text())
    assert ended["workers"] == ended["ended"] == 2
    assert ended["phase"] == "ended"
    assert ended["roundtrips_per_s"] > 0, "an ended run must show its last measured rate"
    assert ended["measured_roundtrips_per_s"] == round(summary["roundtrips_per_s"], 1)
    # Attempts and failures are cumulative: an ended run still shows them (0 open now).
    assert (ended["attempted"], ended["failed"], ended["open"]) == (20, 0, 0)


def test_reader_skips_damaged_lines(tmp_path: Path) -> None:
    """A cut last line (a worker killed mid-write) falls back to the last complete record."""
    tick = {"type": "tick", "t": time.time(), "phase": "measure", "roundtrips": 300}
    tick.update(interval_s=1.0, open=7, attempted=7, failed=1)
    lines = [json.dumps({"type": "start", "format_version": 1}), json.dumps(tick), '{"type": "ti']
    (tmp_path / "worker-0.jsonl").write_text("\n".join(lines))
    (tmp_path / "summary.json").write_text("{not json")
    result = read_progress(tmp_path)
    assert result["roundtrips_per_s"] == 300.0
    assert (result["open"], result["attempted"], result["failed"]) == (7, 7, 1)
    assert result["measured_roundtrips_per_s"] is None
