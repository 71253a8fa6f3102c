"""On a failing test, print the lab host's journal: the reason is usually there."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any]:
    outcome = yield
    report = outcome.get_result()
    host = getattr(item, "funcargs", {}).get("host")
    if report.when == "call" and report.failed and host is not None:
        journal = host.run("journalctl -b --no-pager -n 150")
        report.sections.append(("journal of the lab host (last 150 lines)", journal.stdout))
