"""Autobahn|Testsuite fuzzingclient against each backend: zero FAILED cases in sections 1-11."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
# Sections 12 and 13 test permessage-deflate, which wsecho leaves off (as the 2017 servers did).
CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*", "11.*"]
ACCEPTED = {"OK", "NON-STRICT", "INFORMATIONAL"}


@pytest.fixture(scope="session")
def wstest() -> Path:
    """Install Autobahn|Testsuite (scripts/autobahn.sh is idempotent); a failure fails the test."""
    done = subprocess.run(
        [str(REPO / "scripts" / "autobahn.sh")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"scripts/autobahn.sh failed:\n{done.stderr}"
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.mark.conformance
@pytest.mark.parametrize(
    ("backend", "workers"),
    # --workers 2 once, with the default backend: the workers share the port, the protocol
    # code is the same. "picows" runs the compiled hot path; "picows-python" is the pure-Python
    # fallback that a wheel built without a compiler runs.
    [("picows", 1), ("picows-python", 1), ("websockets", 1), ("picows", 2)],
    ids=["picows", "picows-python", "websockets", "picows-2-workers"],
)
def test_autobahn_fuzzingclient(
    wstest: Path, start_service: Callable[..., Any], backend: str, workers: int, tmp_path: Path
) -> None:
    """Sections 1-11 of the fuzzingclient: no FAILED case (16 MiB limit, section 9 needs it)."""
    service = start_service(backend, "--max-message-size", "16MiB", "--workers", str(workers))
    outdir = tmp_path / "reports"
    spec = {
        "outdir": str(outdir),
        "servers": [{"agent": backend, "url": service.url}],
        "cases": CASES,
        "exclude-cases": ["12.*", "13.*"],
        "exclude-agent-cases": {},
    }
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    # wstest exits 0 even when cases fail: the verdicts are in index.json.
    run = subprocess.run(
        [str(wstest), "-m", "fuzzingclient", "-s", "spec.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, f"wstest failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    results = json.loads((outdir / "index.json").read_text())[backend]
    assert len(results) > 290, f"only {len(results)} cases ran"
    failed = []
    for case_id, verdict in sorted(results.items()):
        if verdict["behavior"] not in ACCEPTED or verdict["behaviorClose"] not in ACCEPTED:
            report = json.loads((outdir / verdict["reportfile"]).read_text())
            failed.append(
                f"{case_id} {verdict['behavior']}/{verdict['behaviorClose']}: "
                f"{report['description']} -- expected: {report['expectation']} "
                f"-- got: {report['result']} {report.get('resultClose', '')}"
            )
    assert not failed, f"{len(failed)} Autobahn cases failed:\n" + "\n".join(failed)
    assert service.proc.poll() is None, "wsecho died during the run"
    if workers > 1:  # both workers took part: each one's stop line says what it served
        assert service.stop() == 0
        log = service.log()
        served = [
            int(line.split("served ")[1].split()[0])
            for line in log.splitlines()
            if "wsecho worker" in line and "stopped" in line
        ]
        assert len(served) == workers, log
        assert min(served) > 0, f"a worker served no case: {served}"
