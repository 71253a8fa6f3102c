"""No task that runs on the controller becomes root.

Walks every play of playbooks/ (and site.yml) the way Ansible inherits `become`: play, role entry,
import_role/import_tasks keywords, include_role/include_tasks `apply`, blocks, task. A task runs on
the controller when its play targets localhost or it is delegated to localhost (or is a
local_action). Each such task must end up with an explicit `become: false` somewhere on that chain:
the default (no `become` at all) is not enough, since an inventory or ansible.cfg may turn it on.
Every role's own tasks files are also walked on their own (with nothing inherited), so a role's
controller tasks are safe whichever play includes them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONTROLLER_NAMES = {"localhost", "127.0.0.1", "::1"}
BLOCK_KEYS = ("block", "rescue", "always")
PLAY_TASK_KEYS = ("pre_tasks", "tasks", "post_tasks", "handlers")


@dataclass(frozen=True)
class Context:
    """What a task inherits from the chain above it."""

    on_controller: bool
    become: bool | None  # None: nothing on the chain says


@dataclass
class Walk:
    """Controller tasks found and those of them that may become root."""

    controller_tasks: list[str] = field(default_factory=list)
    offenders: list[str] = field(default_factory=list)
    seen: set[tuple[Path, Context]] = field(default_factory=set)


def _module(task: dict[str, Any], *names: str) -> Any:
    for name in names:
        for key in (name, f"ansible.builtin.{name}", f"ansible.legacy.{name}"):
            if key in task:
                return task[key]
    return None


def _delegated_to_controller(task: dict[str, Any]) -> bool:
    return str(task.get("delegate_to", "")).strip() in CONTROLLER_NAMES or "local_action" in task


def _load(path: Path) -> list[dict[str, Any]]:
    data = yaml.safe_load(path.read_text())
    return data if isinstance(data, list) else []


def _role_file(role: str, tasks_from: str, kind: str = "tasks") -> Path | None:
    if "{{" in role:
        return None
    base = ROOT / "roles" / role / kind
    for candidate in (base / tasks_from, base / f"{tasks_from}.yml", base / f"{tasks_from}.yaml"):
        if candidate.is_file():
            return candidate
    return None


def walk_tasks(tasks: list[Any], ctx: Context, where: Path, walk: Walk) -> None:
    """Check each task of a list under the inherited context, descending into includes."""
    for task in tasks or []:
        become = task.get("become", ctx.become)
        on_controller = ctx.on_controller or _delegated_to_controller(task)
        if any(key in task for key in BLOCK_KEYS):
            inner = Context(on_controller, become)
            for key in BLOCK_KEYS:
                walk_tasks(task.get(key) or [], inner, where, walk)
            continue
        shown = where.relative_to(ROOT) if where.is_relative_to(ROOT) else where
        label = f"{shown}: {task.get('name', '<unnamed>')}"
        if on_controller:
            walk.controller_tasks.append(label)
            if become is not False:
                walk.offenders.append(label)
        _descend(task, ctx, Context(on_controller, become), where, walk)


def _descend(task: dict[str, Any], parent: Context, own: Context, where: Path, walk: Walk) -> None:
    """Follow import_*/include_* into the files they load."""
    imported = _module(task, "import_role", "import_tasks")
    included = _module(task, "include_role", "include_tasks")
    if imported is None and included is None:
        return
    if imported is not None:
        # Static imports: the import task's keywords (become, delegate_to) apply to every task.
        inner, spec = own, imported
    else:
        # Dynamic includes: only `apply` reaches the included tasks.
        spec = included
        apply = spec.get("apply", {}) if isinstance(spec, dict) else {}
        inner = Context(
            parent.on_controller or _delegated_to_controller(apply),
            apply.get("become", parent.become),
        )
    if isinstance(spec, dict) and "name" in spec:
        target = _role_file(spec["name"], spec.get("tasks_from", "main"))
    else:
        file = spec.get("file") if isinstance(spec, dict) else spec
        target = where.parent / str(file) if file and "{{" not in str(file) else None
    if target is not None and target.is_file():
        walk_file(target, inner, walk)


def walk_file(path: Path, ctx: Context, walk: Walk) -> None:
    if (path, ctx) in walk.seen:
        return
    walk.seen.add((path, ctx))
    walk_tasks(_load(path), ctx, path, walk)


def walk_playbook(path: Path, walk: Walk) -> None:
    for play in _load(path):
        imported = _module(play, "import_playbook")
        if imported is not None:
            walk_playbook(path.parent / imported, walk)
            continue
        hosts = {h.strip() for h in str(play.get("hosts", "")).replace(",", ":").split(":")}
        ctx = Context(
            on_controller=hosts <= CONTROLLER_NAMES or play.get("connection") == "local",
            become=play.get("become"),
        )
        for item in play.get("roles") or []:
            entry: dict[str, Any] = {"role": item} if isinstance(item, str) else item
            role = str(entry.get("role") or entry.get("name"))
            role_ctx = Context(ctx.on_controller, entry.get("become", ctx.become))
            for kind in ("tasks", "handlers"):
                target = _role_file(role, "main", kind)
                if target is not None:
                    walk_file(target, role_ctx, walk)
        for key in PLAY_TASK_KEYS:
            walk_tasks(play.get(key) or [], ctx, path, walk)


def walk_everything() -> Walk:
    walk = Walk()
    for playbook in [ROOT / "site.yml", *sorted((ROOT / "playbooks").glob("*.yml"))]:
        walk_playbook(playbook, walk)
    # Each role file on its own, inheriting nothing: a role is safe whoever includes it.
    for tasks_file in sorted((ROOT / "roles").glob("*/tasks/*.yml")):
        walk_file(tasks_file, Context(on_controller=False, become=None), walk)
    return walk


def test_no_controller_task_may_become_root() -> None:
    walk = walk_everything()
    offenders = sorted(set(walk.offenders))
    assert not offenders, (
        "tasks that run on the controller without an explicit `become: false` on their chain "
        "(task, block, include apply, role entry or play):\n  " + "\n  ".join(offenders)
    )


def test_the_walk_reaches_the_known_controller_tasks() -> None:
    """The check above cannot pass by finding nothing: these run on the controller today."""
    found = " | ".join(walk_everything().controller_tasks)
    for expected in (
        "roles/swarm_run/tasks/status.yml: Write the status of the target on the controller.",
        "roles/run_manifest/tasks/main.yml: Create the run directory on the controller.",
        "roles/wheelhouse/tasks/main.yml: Build the wheels of wsecho, wsswarm",
        "roles/run_report/tasks/main.yml:",
        "roles/experiment_plan/tasks/main.yml:",
    ):
        assert expected in found, expected


def _play(hosts: str, tasks: list[dict[str, Any]], **keywords: Any) -> list[dict[str, Any]]:
    return [{"hosts": hosts, **keywords, "tasks": tasks}]


CMD = {"name": "t", "ansible.builtin.command": "id"}
ON_CONTROLLER = {**CMD, "delegate_to": "localhost"}
INCLUDE = {"name": "i", "ansible.builtin.include_tasks": {"file": "inner.yml"}}


@pytest.mark.parametrize(
    ("playbook", "offends"),
    [
        (_play("testhosts", [ON_CONTROLLER], become=True), True),
        (_play("testhosts", [{**ON_CONTROLLER, "become": False}], become=True), False),
        # A block's become: false covers its tasks; a play's `become: true` does not.
        (_play("testhosts", [{"become": False, "block": [ON_CONTROLLER]}], become=True), False),
        # A localhost play: the default is not enough, it must say so.
        (_play("localhost", [CMD]), True),
        (_play("localhost", [CMD], become=False), False),
        # A task that turns become back on inside a localhost play.
        (_play("localhost", [{**CMD, "become": True}], become=False), True),
        # include_tasks: the include's apply reaches the tasks.
        (
            _play(
                "testhosts",
                [
                    {
                        **INCLUDE,
                        "ansible.builtin.include_tasks": {
                            "file": "inner.yml",
                            "apply": {"delegate_to": "localhost"},
                        },
                    }
                ],
                become=True,
            ),
            True,
        ),
        (
            _play(
                "testhosts",
                [
                    {
                        **INCLUDE,
                        "ansible.builtin.include_tasks": {
                            "file": "inner.yml",
                            "apply": {"delegate_to": "localhost", "become": False},
                        },
                    }
                ],
                become=True,
            ),
            False,
        ),
        # import_tasks: the import's own keywords reach the tasks.
        (
            _play(
                "testhosts",
                [
                    {
                        "name": "i",
                        "ansible.builtin.import_tasks": "inner.yml",
                        "delegate_to": "localhost",
                    }
                ],
                become=True,
            ),
            True,
        ),
    ],
)
def test_the_walk_resolves_inheritance(
    tmp_path: Path, playbook: list[dict[str, Any]], offends: bool
) -> None:
    (tmp_path / "inner.yml").write_text("- name: inner\n  ansible.builtin.command: id\n")
    play = tmp_path / "play.yml"
    play.write_text(yaml.safe_dump(playbook))
    walk = Walk()
    walk_playbook(play, walk)
    assert bool(walk.offenders) is offends, walk.offenders


def test_report_stage_runs_on_the_controller_without_become(
    tmp_path: Path, controller_become_trap: str
) -> None:
    """The report stage, for real, with `become` on by default and a become that always fails.

    ANSIBLE_BECOME=true turns become on wherever nothing says otherwise, and the
    controller_become_trap fixture makes any become on localhost fail loudly. Only a play or task
    that says `become: false` gets through.
    """
    inventory = tmp_path / "inventory"
    (inventory / "host_vars").mkdir(parents=True)
    (inventory / "host_vars" / "localhost.yml").write_text(controller_become_trap)
    # A stand-in managed host for the fetch play (a managed host may become; this one has no sudo).
    stand_in = {
        "ansible_connection": "local",
        "ansible_become": False,
        "ansible_python_interpreter": sys.executable,
    }
    group = {"hosts": {"stand-in": None}}
    (inventory / "hosts.yml").write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {"stand-in": stand_in},
                    "children": {"testhosts": group, "clients": group},
                }
            }
        )
    )
    run_id = "20261130T000000Z-abcdef"
    results = tmp_path / "results"
    # The least `wsswarm report` accepts: one target that ended ok (docs/formats.md).
    (results / run_id / "wsecho").mkdir(parents=True)
    (results / run_id / "wsecho" / "status.json").write_text(
        '{"target": "wsecho", "status": "ok", "reason": "", "hosts": {}}\n'
    )
    env = {**os.environ, "ANSIBLE_BECOME": "true"}
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inventory / "hosts.yml"),
            "playbooks/report.yml",
            "-e",
            f"echolab_results_dir={results} echolab_run_id={run_id}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    out = proc.stdout + proc.stderr
    assert "tried to become another user" not in out, out
    assert proc.returncode == 0, out
    assert f"Report of run {run_id}" in out, out
