"""Fixtures shared by the tests of the playbooks."""

from __future__ import annotations

import pytest

FAKE_BECOME = """#!/bin/sh
echo "controller task tried to become another user: $*" >&2
exit 97
"""


@pytest.fixture(scope="session")
def controller_become_trap(tmp_path_factory: pytest.TempPathFactory) -> str:
    """host_vars for localhost under which any become on the controller fails loudly.

    The become goes to `nobody` (another user than the one running the play, so Ansible never
    skips it as a become to the same user) through a script that prints "controller task tried
    to become another user" and fails.
    """
    fake = tmp_path_factory.mktemp("become") / "fake-become"
    fake.write_text(FAKE_BECOME)
    fake.chmod(0o755)
    return f"ansible_become_exe: {fake}\nansible_become_user: nobody\n"
