"""plugins/filter/echolab.py: the plan, the client shares and the status records, from Python."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from wsswarm.run.plan import split as wsswarm_split

ROOT = Path(__file__).resolve().parents[1]


def load_plugin() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "echolab_filters", ROOT / "plugins" / "filter" / "echolab.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


echolab = load_plugin()

PROFILES = {
    "lab": {
        "connections": 500,
        "processes": 2,
        "connect_rate": 50,
        "warmup": 5,
        "duration": 30,
        "repetitions": 1,
        "mode": "closed",
        "open_rate": 1,
        "compat": False,
        "baseline": True,
    }
}
TARGETS = [
    {"name": "vm", "kind": "vm", "address": "10.0.0.42", "instance": "echolab-vm"},
    {"name": "container", "kind": "container", "instance": "echolab-wsecho"},
    {"name": "baseline", "kind": "baseline", "port": 8081, "instance": "n", "enabled": "False"},
]


def plan(**given: Any) -> dict[str, Any]:
    params: dict[str, Any] = echolab.plan_params(given, PROFILES, "lab", ["th"], ["c1", "c2"])
    return params


def test_plan_takes_the_profile_then_the_variables() -> None:
    """A variable wins over the profile; strings from -e are converted; defaults fill the rest."""
    params = plan(connections="7", compat="yes", start_delay=None)
    assert params["connections"] == 7
    assert params["processes"] == 2
    assert params["connect_rate"] == 50.0
    assert params["compat"] is True
    assert params["start_delay"] == 8.0
    assert params["testhost"] == "th"
    assert params["clients"] == ["c1", "c2"]


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"connections": 0}, "connections must be >= 1"),
        ({"connections": "many"}, "connections must be a number"),
        ({"processes": 2.5}, "processes must be a whole number"),
        ({"mode": "burst"}, "mode must be closed or open"),
        ({"compat": "perhaps"}, "compat must be a boolean"),
        ({"clock_warn_s": 3}, "clock_warn_s <= clock_fail_s"),
        ({"connections": 3}, "at least one connection per process"),
    ],
)
def test_plan_refuses_bad_values(given: dict[str, Any], message: str) -> None:
    """Each bad value is named in the error."""
    with pytest.raises(AnsibleFilterError, match=message):
        plan(**given)


def test_plan_names_an_unknown_profile_and_missing_groups() -> None:
    """An unknown profile lists the known ones; an empty inventory names the groups."""
    with pytest.raises(AnsibleFilterError, match=r"profile 'nope' is not known \(known: \['lab'\]"):
        echolab.plan_params({}, PROFILES, "nope", ["th"], ["c1"])
    with pytest.raises(AnsibleFilterError, match=r"`testhosts` group.*`clients` group"):
        echolab.plan_params({}, PROFILES, "lab", [], [])
    with pytest.raises(AnsibleFilterError, match=r"unknown parameters \['conections'\]"):
        echolab.plan_params({"conections": 1}, PROFILES, "lab", ["th"], ["c1"])


def test_targets_expand_per_repetition_and_skip_disabled() -> None:
    """Enabled targets only, <name>-repN from the second repetition, defaults filled in."""
    targets = echolab.plan_targets(TARGETS, 2)
    assert [t["name"] for t in targets] == ["vm", "vm-rep2", "container", "container-rep2"]
    assert targets[1] == {
        "name": "vm-rep2",
        "target": "vm",
        "kind": "vm",
        "address": "10.0.0.42",
        "port": 8080,
        "path": "/",
        "instance": "echolab-vm",
        "app": "wsecho",
        "repetition": 2,
    }
    assert targets[2]["address"] == "local"


@pytest.mark.parametrize(
    ("targets", "message"),
    [
        ([], "no target is enabled"),
        ("vm", "must be a list"),
        ([{"name": "a", "kind": "lxc", "instance": "x"}], "kind must be one of"),
        ([{"name": "a b", "kind": "vm", "instance": "x"}], "not a plain file name"),
        ([{"name": "a", "kind": "vm", "instance": "x"}] * 2, "'a': the name is used twice"),
        ([{"name": "a", "kind": "vm"}], "an instance"),
        ([{"name": "a", "kind": "vm", "instance": "x", "enabled": "maybe"}], "enabled must be"),
    ],
)
def test_targets_refuse_bad_lists(targets: Any, message: str) -> None:
    """Each broken target list is refused with what is wrong."""
    with pytest.raises(AnsibleFilterError, match=message):
        echolab.plan_targets(targets, 1)


@pytest.mark.parametrize("parts", [1, 2, 3, 7])
@pytest.mark.parametrize("total", [0, 1, 5, 50, 500, 10001])
def test_split_agrees_with_wsswarm(total: int, parts: int) -> None:
    """The kit spreads connections over client hosts as wsswarm spreads them over workers."""
    assert echolab.split(total, parts) == wsswarm_split(total, parts)
    assert sum(echolab.split(total, parts)) == total


def test_split_refuses_bad_input() -> None:
    """No parts, negative or fractional totals are refused."""
    for total, parts in [(5, 0), (-1, 2), (2.5, 2), (True, 2)]:
        with pytest.raises(AnsibleFilterError):
            echolab.split(total, parts)


def test_client_share_per_host() -> None:
    """The first clients get the remainder; the test host alone gets no connections."""
    params = plan(connections=501)
    first = echolab.client_share(params, "c1")
    second = echolab.client_share(params, "c2")
    testhost = echolab.client_share(params, "th")
    assert (first["connections"], second["connections"], testhost["connections"]) == (251, 250, 0)
    assert (first["server_connections"], testhost["server_connections"]) == (0, 501)
    assert first["rate"] == 25.0
    assert first["measure_after"] == pytest.approx(251 / 25 + 5)
    assert first["seconds"] == pytest.approx(251 / 25 + 5 + 30 + 10)
    assert testhost == {
        "is_client": False,
        "is_testhost": True,
        "connections": 0,
        "processes": 2,
        "server_connections": 501,
        "rate": 25.0,
        "measure_after": 5.0,
        "seconds": 45.0,
    }


def test_client_share_compat_ramp() -> None:
    """The 2017 client ramps at 15 connections/s per process whatever the rate."""
    share = echolab.client_share(plan(compat=True), "c1")
    assert share["rate"] == 30
    assert share["measure_after"] == pytest.approx(250 / 30 + 5 + 1)


def test_client_share_refuses_a_non_plan() -> None:
    """Something other than the plan is refused with what was given."""
    with pytest.raises(AnsibleFilterError, match="expected the plan"):
        echolab.client_share({"clients": ["c1"]}, "c1")
    with pytest.raises(AnsibleFilterError, match="no client hosts"):
        echolab.client_share(dict(plan(), clients=[]), "c1")


TARGET = {"name": "vm-rep2", "target": "vm", "repetition": 2, "kind": "vm"}


def test_target_status_ok_and_failed() -> None:
    """ok without a reason; failed with the reasons once each; an unreachable host named."""
    ok = echolab.target_status(
        TARGET, ["", ""], {"c1": {"status": "ok"}}, {}, testhost="th", started="s", ended="e"
    )
    assert ok["status"] == "ok"
    assert ok["reason"] is None
    assert ok["format_version"] == 1
    assert (ok["target"], ok["base_target"], ok["repetition"]) == ("vm-rep2", "vm", 2)
    failed = echolab.target_status(
        TARGET, ["died", "", "died", "late"], {"c1": None, "c2": {}}, None, testhost="th",
        started="s", ended="e",
    )  # fmt: skip
    assert failed["status"] == "failed"
    assert failed["reason"] == "died; late"
    assert failed["hosts"] == {"c1": {"status": "unreachable"}, "c2": {}}
    assert failed["sampler"] == {}


def test_target_status_refuses_bad_records() -> None:
    """A target without its keys, or statuses not by host, are refused."""
    with pytest.raises(AnsibleFilterError, match="lacks 'kind'"):
        echolab.target_status({"name": "a", "target": "a", "repetition": 1}, [], {}, {},
                              testhost="t", started="s", ended="e")  # fmt: skip
    with pytest.raises(AnsibleFilterError, match="dict by host"):
        echolab.target_status(TARGET, [], ["c1"], {}, testhost="t", started="s", ended="e")
    with pytest.raises(AnsibleFilterError, match="list of strings"):
        echolab.target_failures("vm", "died", {})


def test_target_failures_lines() -> None:
    """The target's reasons first, then each failed client host with its end and message."""
    lines = echolab.target_failures(
        "vm",
        ["not up", ""],
        {
            "c1": {"status": "failed", "ended": "T", "rc": 3, "message": "boom"},
            "c2": {"status": "ok"},
            "c3": None,
        },
    )
    assert lines == [
        "target vm failed: not up",
        "target vm: client host c1 failed (ended T, rc 3): boom",
    ]
    assert echolab.target_failures("vm", [], {"c2": {"status": "ok"}}) == []


def test_status_failures_from_records() -> None:
    """Every target not ok and every client host not ok is a line of the verdict."""
    records = [
        {"target": "vm", "status": "ok", "hosts": {"c1": {"status": "ok"}}},
        {"target": "container", "status": "failed", "reason": "died", "hosts": {"c1": {}}},
    ]
    assert echolab.status_failures(records) == [
        "target container failed: died",
        "target container: client host c1 ? (ended ?, rc ?): ",
    ]
    with pytest.raises(AnsibleFilterError, match="not a status record"):
        echolab.status_failures([{"status": "ok"}])
