"""The teardown entry points are called so that their argument specs apply.

ansible-core validates an entry point's spec only when `tasks_from` names the entry point
(`teardown`), not its file (`teardown.yml`). Each role's teardown is called here the way
playbooks/teardown.yml calls it, with one wrong parameter, and must be refused by the spec before
any task runs. The play's only host is a Docker container that does not exist, so a spec that
does not apply cannot touch this machine either: the first task then fails as unreachable.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TEARDOWN = ROOT / "playbooks" / "teardown.yml"

# role -> one parameter its teardown spec refuses, and what the refusal names. swarm_client's
# teardown takes two paths only, source_addresses' and bridge_route's one, which any value
# converts to, so they have no wrong parameter.
WRONG: dict[str, tuple[dict[str, Any], str]] = {
    "vm_target": ({"vm_target_prefix": "many"}, "argument 'vm_target_prefix'"),
    "container_target": (
        {"container_target_app": "apache"},
        "value of container_target_app must be one of: wsecho, nodejs_ws, got: apache",
    ),
    "bridge": ({"bridge_prefix": "many"}, "argument 'bridge_prefix'"),
    "host_tuning": (
        {"host_tuning_unload_conntrack": "perhaps"},
        "argument 'host_tuning_unload_conntrack'",
    ),
    "docker_host": (
        {"docker_host_teardown_remove_packages": "perhaps"},
        "argument 'docker_host_teardown_remove_packages'",
    ),
    "libvirt_host": (
        {"libvirt_host_teardown_remove_packages": "perhaps"},
        "argument 'libvirt_host_teardown_remove_packages'",
    ),
}
TEARDOWN_ROLES = [*WRONG, "swarm_client", "source_addresses", "bridge_route"]


def entry_point_calls() -> list[dict[str, Any]]:
    """Every include_role of playbooks/teardown.yml that names an entry point."""
    calls = []
    for play in yaml.safe_load(TEARDOWN.read_text()):
        for task in play.get("tasks", []):
            include = task.get("ansible.builtin.include_role")
            if include and "tasks_from" in include:
                calls.append(include)
    return calls


def teardown_calls() -> list[dict[str, Any]]:
    """The include_roles of playbooks/teardown.yml that call a `teardown` entry point."""
    return [c for c in entry_point_calls() if c["tasks_from"].startswith("teardown")]


def test_teardown_playbook_names_the_entry_points() -> None:
    """playbooks/teardown.yml calls each role's `teardown` entry point (and any other) by its
    spec's name."""
    assert sorted(c["name"] for c in teardown_calls()) == sorted(TEARDOWN_ROLES)
    for call in entry_point_calls():
        specs = yaml.safe_load(
            (ROOT / "roles" / call["name"] / "meta" / "argument_specs.yml").read_text()
        )
        assert call["tasks_from"] in specs["argument_specs"], call


def run_teardown(role: str, variables: dict[str, Any], tmp_path: Path) -> str:
    """Call the role's teardown as playbooks/teardown.yml does, on a host that does not exist;
    return the output of the spec's validation task."""
    (call,) = [c for c in teardown_calls() if c["name"] == role]
    playbook = [
        {
            "name": "Call the teardown as playbooks/teardown.yml does.",
            "hosts": "nowhere",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Tear down.",
                    "ansible.builtin.include_role": {
                        "name": role,
                        "tasks_from": call["tasks_from"],
                    },
                    "vars": variables,
                }
            ],
        }
    ]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(playbook))
    (tmp_path / "hosts.yml").write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        "nowhere": {
                            "ansible_connection": "community.docker.docker",
                            "ansible_host": "echolab-no-such-container",
                        }
                    }
                }
            }
        )
    )
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(
        ["ansible-playbook", "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output  # the host does not exist: something must fail
    marker = "Validating arguments against arg spec 'teardown'"
    assert marker in output, output
    # The validation task's output, up to the next task or the recap.
    return re.split(r"\n(?:TASK|PLAY RECAP) ", output.split(marker, 1)[1], maxsplit=1)[0]


@pytest.mark.parametrize("role", sorted(WRONG))
def test_wrong_teardown_parameter_is_refused(role: str, tmp_path: Path) -> None:
    """A wrong parameter to a role's teardown stops the play with the spec's message."""
    validation = run_teardown(role, WRONG[role][0], tmp_path)
    assert "fatal: [nowhere]" in validation, validation
    assert WRONG[role][1] in validation, validation


@pytest.mark.parametrize("role", TEARDOWN_ROLES)
def test_teardown_defaults_pass_the_spec(role: str, tmp_path: Path) -> None:
    """The call of playbooks/teardown.yml, with the role's defaults, passes its spec: the play
    gets past the validation and fails only on reaching the host."""
    validation = run_teardown(role, {}, tmp_path)
    assert "ok: [nowhere]" in validation, validation
