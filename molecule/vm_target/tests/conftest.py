"""On a failing test, print the guest's serial console and the lab host's libvirt journal."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import pytest

CONSOLE = "/var/log/libvirt/qemu/echolab-vm-console.log"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[Any]:
    outcome = yield
    report = outcome.get_result()
    host = getattr(item, "funcargs", {}).get("host")
    if report.when == "call" and report.failed and host is not None:
        console = host.run(f"tail -n 120 {CONSOLE}")
        report.sections.append(("guest serial console (last 120 lines)", console.stdout))
        journal = host.run("journalctl -b --no-pager -n 60 -u libvirtd -u virtqemud")
        report.sections.append(("libvirt journal of the lab host", journal.stdout))
