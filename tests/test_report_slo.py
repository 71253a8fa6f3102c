"""The report stage's SLO gates (echolab_slo), for real: `ansible-playbook playbooks/report.yml`
on a run directory made by a real `wsswarm run` against a real wsecho on 127.0.0.1. The report
stage runs on the controller; the fetch play's hosts are one stand-in with a local connection,
so no lab host is needed. A passing gate ends the play ok; a failing one fails the play naming
that gate only, after report.md (with its SLO table) is written; a malformed gate fails it with
wsswarm's own message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RUN_ID = "20261130T200000Z-5105a7"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, wsecho_port: int) -> Path:
    """results/<run-id>/echo/c1/: 4 connections, 2 s measured, against wsecho; status ok."""
    root = tmp_path_factory.mktemp("results")
    target = root / RUN_ID / "echo"
    run = subprocess.run(
        [
            sys.executable, "-m", "wsswarm", "run", "--url", f"ws://127.0.0.1:{wsecho_port}/",
            "--processes", "1", "--connections", "4", "--connect-rate", "100",
            "--warmup", "0", "--duration", "2", "--progress", "lines", "--label", "echo",
            "--out", str(target / "c1"),
        ],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    (target / "status.json").write_text(
        json.dumps({"target": "echo", "status": "ok", "reason": None, "hosts": {}}) + "\n"
    )
    return root


def report_stage(tmp_path: Path, results: Path, gates: list[str]) -> tuple[int, str]:
    """playbooks/report.yml on the run with `-e echolab_slo=<gates>`: (exit status, output)."""
    stand_in = {
        "ansible_connection": "local",
        "ansible_become": False,
        "ansible_python_interpreter": sys.executable,
    }
    group = {"hosts": {"stand-in": None}}
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {"stand-in": stand_in},
                    "children": {"testhosts": group, "clients": group},
                }
            }
        )
    )
    extra = {"echolab_results_dir": str(results), "echolab_run_id": RUN_ID, "echolab_slo": gates}
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i", str(inventory), "playbooks/report.yml", "-e", json.dumps(extra),
        ],
        cwd=ROOT, env={**os.environ, "ANSIBLE_NOCOLOR": "1"},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    return proc.returncode, " ".join((proc.stdout + proc.stderr).split())


def gates_in_summary(results: Path) -> dict[str, bool]:
    summary = json.loads((results / RUN_ID / "summary.json").read_text())
    return {gate["expr"]: gate["passed"] for gate in summary["targets"]["echo"]["slo"]}


def test_passing_gates_end_the_play_ok(tmp_path: Path, results: Path) -> None:
    rc, out = report_stage(tmp_path, results, ["failed==0", "echo:p99<60s"])
    assert rc == 0, out
    assert "0 of 2 SLO gate(s) failed" in out, out
    assert gates_in_summary(results) == {"failed==0": True, "p99<60s": True}


def test_a_failing_gate_fails_the_play_by_name_after_the_report(
    tmp_path: Path, results: Path
) -> None:
    (results / RUN_ID / "report.md").unlink(missing_ok=True)
    rc, out = report_stage(tmp_path, results, ["failed==0", "echo:p99<0.001ms"])
    assert rc == 2, out
    assert "1 of 2 SLO gate(s) failed" in out, out
    verdict = out[out.index("Fail when a target, a client host or an SLO gate failed") :]
    assert "target echo: SLO p99<0.001ms: " in verdict, out
    assert "-> FAIL" in verdict, out
    assert "failed==0" not in verdict, out
    assert gates_in_summary(results) == {"failed==0": True, "p99<0.001ms": False}
    report = (results / RUN_ID / "report.md").read_text()
    assert "p99<0.001ms" in report, report


def test_a_malformed_gate_fails_the_play_with_wsswarms_message(
    tmp_path: Path, results: Path
) -> None:
    rc, out = report_stage(tmp_path, results, ["p99<<1"])
    assert rc == 2, out
    assert "failed (rc 2)" in out, out
    assert "SLO 'p99<<1': expected METRIC OP NUMBER[UNIT]" in out, out
