"""pytest plugin of every molecule scenario's testinfra run (loaded with `-p`, see
.config/molecule/config.yml): on a failing test, print the lab host's journal, where the reason
usually is, and the guest's serial console when the host runs the kit's VM."""

from __future__ import annotations

from collections.abc import Generator

import pytest
from pluggy import Result

VM_CONSOLE = "/var/log/libvirt/qemu/echolab-vm-console.log"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, Result[pytest.TestReport], None]:
    outcome = yield
    report = outcome.get_result()
    host = getattr(item, "funcargs", {}).get("host")
    if report.when != "call" or not report.failed or host is None:
        return
    journal = host.run("journalctl -b --no-pager -n 150")
    report.sections.append(("journal of the lab host (last 150 lines)", journal.stdout))
    if host.file(VM_CONSOLE).exists:
        console = host.run(f"tail -n 120 {VM_CONSOLE}")
        report.sections.append(("guest serial console (last 120 lines)", console.stdout))
