"""swarm_run with capacity steps, for real and without a lab host: the role runs on the
controller (test host and client host at once) against a wsecho this test starts on
127.0.0.1, with `wsswarm run --steps` from the plan. The plan line's "about N s in all", the
progress lines' steps and the swarm's own planned windows agree, and no progress line is read
inside a measured window; a `--stop-when` that holds at
step 1 ends the run there and its remaining progress lines are skipped. The sampler has no
container to watch here (its failure is recorded, not checked)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
PLAYBOOK = ROOT / "tests" / "playbooks" / "swarm_run_local.yml"
# Per step: 1 s of ramp at 10/s + 4 s warm-up, 3 s measured: windows at 5, 13 and 21 s, with
# room for progress lines between them.
STEPS = {
    "echolab_steps": [10, 20, 30],
    "echolab_connections": 30,
    "echolab_step_duration": 3,
    "echolab_warmup": 4,
    "echolab_processes": 1,
    "echolab_connect_rate": 10,
    "echolab_progress_interval": 2,
    "echolab_start_delay": 2,
}


def run_role(tmp_path: Path, port: int, **extra: Any) -> tuple[str, dict[str, Any]]:
    """The playbook with STEPS and `extra`: (its output on one line, the swarm's summary)."""
    inventory = tmp_path / "hosts.yml"
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    group = {"hosts": {"localhost": None}}
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {"localhost": local},
                    "children": {"testhosts": group, "clients": group},
                }
            }
        )
    )
    given = {
        **STEPS,
        "echolab_results_dir": str(tmp_path / "results"),
        "echolab_run_id": "steps",
        "swarm_run_local_port": port,
        "swarm_run_local_remote_dir": str(tmp_path / "remote"),
        **extra,
    }
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i", str(inventory), str(PLAYBOOK), "-e", json.dumps(given),
        ],
        cwd=ROOT, env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode == 0, out
    summary = tmp_path / "results" / "steps" / "echo" / "localhost" / "summary.json"
    return out, json.loads(summary.read_text())


def test_steps_planned_like_the_swarm(tmp_path: Path, wsecho_port: int) -> None:
    out, summary = run_role(tmp_path, wsecho_port)
    # Windows end at 8, 16 and 24 s; 10 s of drain.
    assert "30 connections in steps of 10/20/30" in out, out
    assert "3 s per step, stopping at the first step where" not in out, out
    assert "about 34 s in all" in out, out
    assert re.search(r"step 1/3, \w+: [\d,]+ round-trips/s", out), out
    assert re.search(r"step 3/3, .*open \d+/30", out), out
    # The hosts are left alone while round trips are measured: no line shows a measuring swarm.
    assert "measured window: the next progress line comes" in out, out
    assert not re.search(r"step \d/3, [\w/]*measure", out), out
    starts = [step["measure_started"] - summary["params"]["start_at"] for step in summary["steps"]]
    assert starts == [5, 13, 21]
    assert [step["connections"]["open"] for step in summary["steps"]] == [10, 20, 30]
    assert summary["stopped_by"] is None
    status = json.loads((tmp_path / "results" / "steps" / "echo" / "status.json").read_text())
    assert status["status"] == "ok", status


def test_stop_when_ends_the_run_at_its_step(tmp_path: Path, wsecho_port: int) -> None:
    out, summary = run_role(tmp_path, wsecho_port, echolab_stop_when=["p99>0.001ms"])
    assert "stopping at the first step where p99>0.001ms" in out, out
    assert summary["message"] == "--stop-when p99>0.001ms at step 1"
    assert len(summary["steps"]) == 1
    assert "step 3/3" not in out, out
