"""plugins/filter/echolab.py: the plan, the client shares and the status records, from Python."""

from __future__ import annotations

from argparse import Namespace
from typing import Any

import pytest
from ansible.errors import AnsibleFilterError
from module_loader import load_module
from wsswarm.run.plan import planned_steps
from wsswarm.run.plan import split as wsswarm_split

echolab = load_module("echolab_filters", "plugins/filter/echolab.py")

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
        ({"server_cpus": [1, 1]}, "names a CPU more than once"),
        ({"server_cpus": ["x"]}, r"server_cpus\[0\] must be a number"),
        ({"server_cpus": [-1]}, r"server_cpus must be CPU numbers \(0, 1, ...\)"),
        ({"server_cpus": 1}, "server_cpus must be a list"),
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


def test_server_cpus_default_to_none_and_take_lists_or_strings() -> None:
    """No pinning by default; a list, or "1,3" from -e, gives the CPU numbers."""
    assert plan()["server_cpus"] == []
    assert plan(server_cpus=[1, 3])["server_cpus"] == [1, 3]
    assert plan(server_cpus="1,3")["server_cpus"] == [1, 3]
    assert plan(server_cpus="")["server_cpus"] == []


def test_cpu_list_reads_the_kernel_format() -> None:
    """/sys/devices/system/cpu/online: ranges and single CPUs."""
    assert echolab.cpu_list("0-3,6\n") == [0, 1, 2, 3, 6]
    assert echolab.cpu_list("1") == [1]
    with pytest.raises(AnsibleFilterError, match="not a kernel CPU list"):
        echolab.cpu_list("0-")


def test_server_cpus_must_exist_and_leave_one_for_a_local_client() -> None:
    """A CPU the test host lacks is named; a test host that is also a client keeps one CPU."""
    assert echolab.server_cpus_problems(plan(), "0") == []
    assert echolab.server_cpus_problems(plan(server_cpus=[1]), "0-1") == []
    (missing,) = echolab.server_cpus_problems(plan(server_cpus=[1, 4]), "0-2,7")
    assert "CPU(s) [4] that test host th does not have online (it has 0-2,7)" in missing
    local = echolab.plan_params({"server_cpus": [0, 1]}, PROFILES, "lab", ["th"], ["th"])
    (crowded,) = echolab.server_cpus_problems(local, "0-1")
    assert "takes every CPU of test host th, which is also a client host" in crowded
    # A test host that is not a client may give every CPU to the server.
    assert echolab.server_cpus_problems(plan(server_cpus=[0, 1]), "0-1") == []


def test_client_cpus_keep_a_local_client_off_the_server_cpus() -> None:
    """Only the test host, and only with pinning, restricts the kit's own processes."""
    local = echolab.plan_params({"server_cpus": [1]}, PROFILES, "lab", ["th"], ["th", "c1"])
    assert echolab.client_cpus(local, "th", "0-3") == "0,2,3"
    assert echolab.client_cpus(local, "c1", "0-3") == ""
    assert echolab.client_cpus(plan(), "th", "0-3") == ""
    with pytest.raises(AnsibleFilterError, match="leave no CPU of th"):
        echolab.client_cpus(local, "th", "1")


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
        "steps": [],
        "step_starts": [],
        "windows": [[5.0, 35.0]],
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


def scale_plan(clients: list[str], connections: int = 100_000) -> dict[str, Any]:
    params: dict[str, Any] = echolab.plan_params(
        {"connections": connections}, PROFILES, "lab", ["th"], clients
    )
    return params


ALL_TARGETS = [
    {"name": "vm", "kind": "vm", "repetition": 1},
    {"name": "container", "kind": "container", "repetition": 1},
    {"name": "baseline", "kind": "baseline", "repetition": 1},
]
# A test host on real hardware: systemd's docker.service (LimitNOFILE=infinity: nr_open).
HARDWARE = {"docker_proxy": False, "dockerd_nofile": 1_048_576}


def test_target_limits_keep_the_old_values_for_small_plans() -> None:
    """The lab and quick profiles get exactly the fixed limits of before; the lab's 20,000 caps
    nothing under them."""
    for connections in (50, 500, 10_000):
        limits = echolab.target_limits(plan(connections=connections), 20_000)
        assert limits.pop("target_memory_mib") == (725 if connections == 10_000 else 512)
        assert limits == {
            "container_nofile": 16_384,
            "baseline_nofile": 16_384,
            "vm_nofile": 100_000,
            "wsecho_max_connections": 50_000,
        }


def test_target_limits_grow_with_the_plan_and_stop_at_the_ceiling() -> None:
    """Connections + headroom, the containers capped by the host, the VM not (its own kernel)."""
    big = echolab.target_limits(plan(connections=100_000), 1_048_576)
    assert big["container_nofile"] == big["baseline_nofile"] == 101_024
    assert big["vm_nofile"] == 101_024
    assert big["wsecho_max_connections"] == 100_000
    lab = echolab.target_limits(plan(connections=18_000), 20_000)
    assert lab["container_nofile"] == lab["baseline_nofile"] == 19_024
    assert echolab.target_limits(plan(connections=30_000), 20_000)["container_nofile"] == 20_000
    assert echolab.target_limits(plan(connections=30_000))["container_nofile"] == 31_024


def test_target_memory_is_a_budget_per_planned_connection() -> None:
    """256 MiB + 48 KiB per connection, never under 2017's 512 MiB; one figure for the VM and the
    containers; a value given by hand wins, and the budget can be set."""
    assert echolab.target_limits(plan(connections=10_000))["target_memory_mib"] == 256 + 469
    assert echolab.target_limits(plan(connections=100_000))["target_memory_mib"] == 256 + 4_688
    assert echolab.target_limits(plan(connections=5_000))["target_memory_mib"] == 512
    assert echolab.target_limits(plan(connections=100_000), None, 2048)["target_memory_mib"] == 2048
    assert (
        echolab.target_limits(plan(connections=1_000), None, None, 1000, 64)["target_memory_mib"]
        == 1000 + 63
    )


@pytest.mark.parametrize(
    ("params", "ceiling", "message"),
    [
        ({"processes": 1}, None, "expected the plan"),
        ("plan", None, "expected the plan"),
        ({"connections": 0}, None, "connections must be a whole number >= 1"),
        ({"connections": 10}, "lots", "ceiling must be a whole number >= 1"),
        ({"connections": 10}, 0, "ceiling must be a whole number >= 1"),
    ],
)
def test_target_limits_refuse_bad_input(params: Any, ceiling: Any, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        echolab.target_limits(params, ceiling)


@pytest.mark.parametrize(
    ("memory", "message"),
    [
        ((255, 256, 48), "memory_mib must be a whole number >= 256"),
        (("1G", 256, 48), "memory_mib must be a whole number >= 256"),
        ((None, -1, 48), "memory_base_mib must be a whole number >= 0"),
        ((None, 256, 4.5), "memory_kib_per_connection must be a whole number >= 0"),
    ],
)
def test_target_memory_refuses_bad_input(memory: tuple[Any, Any, Any], message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        echolab.target_limits(plan(connections=10), None, *memory)


def test_capacity_scale_plan_over_two_hosts_with_two_addresses_each_fits() -> None:
    """100,000 connections over 2 client hosts x 2 source addresses, no docker-proxy, the
    target limits derived from the plan: nothing refused, every path says what it holds."""
    params = scale_plan(["c1", "c2"])
    limits = {**HARDWARE, **echolab.target_limits(params, HARDWARE["dockerd_nofile"])}
    result = echolab.path_capacity(params, ALL_TARGETS, limits, {"c1": 2, "c2": 2})
    assert result["problems"] == []
    assert [r["process"] for r in result["paths"]["vm"]] == ["qemu", "wsecho"]
    assert [r["process"] for r in result["paths"]["container"]] == ["wsecho"]
    assert [r["process"] for r in result["paths"]["baseline"]] == ["node"]
    assert result["paths"]["container"][0]["holds"] == 101_024 - 14
    assert result["paths"]["baseline"][0]["holds"] == 101_024 - 21


def test_capacity_one_host_one_address_is_refused_with_the_arithmetic() -> None:
    params = scale_plan(["c1"])
    limits = {**HARDWARE, **echolab.target_limits(params, HARDWARE["dockerd_nofile"])}
    problems = echolab.path_capacity(params, ALL_TARGETS, limits, {"c1": 1})["problems"]
    assert problems == [
        "client host c1: 100,000 connections from 1 source address(es) are 100,000 per address "
        "to one target, but one address has 64,512 ports (1024-65535) per destination: add "
        "source addresses (echolab_source_addresses) or client hosts, so that each address "
        "holds at most 64,512"
    ]
    assert echolab.path_capacity(params, ALL_TARGETS, limits, {"c1": []})["problems"] == problems
    # Two addresses on the one host fit the ports (50,000 each), as a count or as the list.
    assert echolab.path_capacity(params, ALL_TARGETS, limits, {"c1": 2})["problems"] == []
    two = ["192.0.2.101", "192.0.2.102"]
    assert echolab.path_capacity(params, ALL_TARGETS, limits, {"c1": two})["problems"] == []


def test_capacity_docker_proxy_in_the_lab_is_refused_with_the_fix() -> None:
    """The seed profile through docker-proxy under the lab's 20,000: 6 x 10,000 + 7 > 20,000
    (it died at ~3,100-3,300 in the measured run); both container paths are refused."""
    params = scale_plan(["c1"], connections=10_000)
    limits = {"docker_proxy": True, "dockerd_nofile": 20_000}
    limits |= echolab.target_limits(params, 20_000)
    result = echolab.path_capacity(params, ALL_TARGETS, limits, {})
    assert len(result["problems"]) == 2
    container, baseline = result["problems"]
    assert container.startswith(
        "target container: docker-proxy holds 6 open file(s) per connection + 7: "
        "6 x 10,000 + 7 = 60,007, but its limit (dockerd's nofile) is 20,000, which holds "
        "3,332 connections: raise dockerd's LimitNOFILE"
    )
    assert "docker_host_userland_proxy: false" in container
    assert "container_target_network_mode: host" in container
    assert baseline.startswith("target baseline: docker-proxy holds 6")
    assert [r["process"] for r in result["paths"]["container"]] == ["docker-proxy", "wsecho"]
    assert result["summary"][1] == (
        "container: docker-proxy 6 fd(s)/connection + 7, limit 20,000: holds 3,332; "
        "wsecho 1 fd(s)/connection + 14, limit 16,384: holds 16,370 (plan: 10,000)"
    )
    # Without the proxy the same plan fits the lab.
    limits["docker_proxy"] = False
    assert echolab.path_capacity(params, ALL_TARGETS, limits, {})["problems"] == []


def test_capacity_docker_proxy_ports_beyond_60k_are_refused() -> None:
    """Even with unlimited fds, one proxy address has ~60,000 ports to the container."""
    params = scale_plan(["c1", "c2"], connections=61_000)
    limits = {"docker_proxy": True, "dockerd_nofile": 10_000_000}
    limits |= echolab.target_limits(params)
    targets = [{"name": "container", "kind": "container"}]
    problems = echolab.path_capacity(params, targets, limits, {})["problems"]
    assert problems == [
        "target container: docker-proxy reaches the container from one address, one port per "
        "connection: 61,000 connections need 61,000 ports, over the ~60,000 one address has "
        "to one destination: docker_host_userland_proxy: false (container_target_userland_proxy) "
        "or container_target_network_mode: host"
    ]


def test_capacity_target_limits_set_by_hand_are_checked() -> None:
    """A nofile or --max-connections below the plan is named with its arithmetic."""
    params = scale_plan(["c1", "c2"], connections=20_000)
    limits = {**HARDWARE, **echolab.target_limits(params)}
    limits |= {"vm_nofile": 16_384, "wsecho_max_connections": 10_000}
    problems = echolab.path_capacity(params, ALL_TARGETS, limits, {})["problems"]
    assert problems == [
        "target vm: wsecho holds 1 open file(s) per connection + 14: 1 x 20,000 + 14 = 20,014, "
        "but its limit (vm_nofile) is 16,384, which holds 16,370 connections: raise vm_nofile "
        "(the plan derives it unless it is set by hand)",
        "target vm: wsecho answers 503 beyond --max-connections 10,000, under the plan's "
        "20,000: raise it (the plan derives it unless it is set by hand)",
        "target container: wsecho answers 503 beyond --max-connections 10,000, under the "
        "plan's 20,000: raise it (the plan derives it unless it is set by hand)",
    ]


def test_capacity_notes_an_unknown_proxy_limit() -> None:
    """Before Docker runs, dockerd's limit is unknown: noted, not refused, not guessed."""
    params = scale_plan(["c1", "c2"], connections=10_000)
    limits = {"docker_proxy": True, "dockerd_nofile": None, **echolab.target_limits(params)}
    result = echolab.path_capacity(params, ALL_TARGETS, limits, {})
    assert result["problems"] == []
    assert result["notes"][0].startswith(
        "target container: docker-proxy's limit (dockerd's nofile) is not known yet"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (({"clients": ["c"]}, [], {}, {}), "expected the plan"),
        (("plan", [], {}, {}), "expected the plan"),
        ((None, "vm", {}, {}), "targets must be a list"),
        ((None, [], [], {}), "limits must be a dict"),
        ((None, [], None, []), "source addresses must be a dict by host"),
        ((None, [], {"vm_nofile": 0}, {}), "limits.vm_nofile must be a whole number >= 1"),
        ((None, [], {"dockerd_nofile": "x"}, {}), "limits.dockerd_nofile must be a whole"),
        ((None, [], {"docker_proxy": "maybe"}, {}), "docker_proxy must be a boolean"),
        ((None, [{"name": "x"}], None, {}), "not a plan target"),
        ((None, [{"name": "x", "kind": "lxc"}], None, {}), "unknown kind 'lxc'"),
        ((None, [], None, {"c1": 0}), "source addresses of c1 must be a whole number >= 1"),
    ],
)
def test_capacity_refuses_bad_input(args: tuple[Any, ...], message: str) -> None:
    params = scale_plan(["c1"], connections=100)
    good_limits = {"docker_proxy": False, "dockerd_nofile": 20_000}
    good_limits |= echolab.target_limits(params)
    plan_arg, targets, limits, sources = args
    plan_arg = params if plan_arg is None else plan_arg
    if limits is None:
        limits = good_limits
    elif isinstance(limits, dict):
        limits = {**good_limits, **limits}
    with pytest.raises(AnsibleFilterError, match=message):
        echolab.path_capacity(plan_arg, targets, limits, sources)


def test_capacity_a_container_capped_by_dockerd_names_dockerds_limit() -> None:
    """The derived nofile stops at dockerd's 20,000: the fix is dockerd's limit, not the
    container's."""
    params = scale_plan(["c1", "c2"], connections=30_000)
    limits = {"docker_proxy": False, "dockerd_nofile": 20_000}
    limits |= echolab.target_limits(params, 20_000)
    targets = [{"name": "container", "kind": "container"}]
    assert echolab.path_capacity(params, targets, limits, {})["problems"] == [
        "target container: wsecho holds 1 open file(s) per connection + 14: 1 x 30,000 + 14 = "
        "30,014, but its limit (container_nofile) is 20,000, which holds 19,986 connections: "
        "a container's limit stops at dockerd's (20,000): raise dockerd's LimitNOFILE (a "
        "systemd drop-in for docker.service, as host_tuning writes)"
    ]


CAPACITY = {"steps": [100, 250, 500, 1000], "connections": 1000, "step_duration": 15}


def test_plan_takes_capacity_steps_from_variables_or_strings() -> None:
    """Steps come as a list or as the comma-separated string of `-e echolab_steps=...`; without
    them the plan has no steps (one measured window)."""
    params = plan(**CAPACITY, stop_when=["failed>0", " p99>500ms"])
    assert params["steps"] == [100, 250, 500, 1000]
    assert params["step_duration"] == 15
    assert params["stop_when"] == ["failed>0", "p99>500ms"]
    assert plan(steps="100, 250,500,1000", connections=1000)["steps"] == [100, 250, 500, 1000]
    single = plan()
    assert (single["steps"], single["stop_when"], single["step_duration"]) == ([], [], 60)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"steps": [100, 100, 1000]}, r"the steps must increase, got \[100, 100, 1000\]"),
        ({"steps": [100, 500]}, "connections is the last step's count: connections is 1000"),
        ({"steps": [100, 1000], "compat": True}, "not with compat"),
        ({"steps": [100, 1000], "step_duration": 0}, "step_duration must be >= 1"),
        ({"steps": [100, 1000], "step_duration": 2.5}, "step_duration must be a whole number"),
        ({"steps": [101, 1000]}, "multiple of the 2 client hosts"),
        ({"steps": [2, 1000]}, r"first step \(2 over 2 client host\(s\)\) needs at least one"),
        ({"steps": [100, "many", 1000]}, r"steps\[1\] must be a number"),
        ({"steps": [100, 1000], "stop_when": ["p99>>5"]}, "stop_when: SLO 'p99>>5': expected"),
        ({"steps": [100, 1000], "stop_when": ["lag>5"]}, "unknown metric 'lag'"),
        ({"stop_when": ["failed>0"]}, "stop_when needs steps"),
    ],
)
def test_plan_refuses_bad_steps(given: dict[str, Any], message: str) -> None:
    """Each rule of `wsswarm run --steps` is checked on the plan, before any host is touched."""
    with pytest.raises(AnsibleFilterError, match=message):
        plan(**{"connections": 1000, **given})


def test_client_share_of_capacity_steps() -> None:
    """Each host opens its half of every step; its run lasts the planned windows of all steps
    plus the drain: (ceil(50/25 + 5) + 15) + (ceil(75/25 + 5) + 15) + ... + 10 s."""
    params = plan(**CAPACITY)
    share = echolab.client_share(params, "c2")
    assert share["steps"] == [50, 125, 250, 500]
    assert share["step_starts"] == [0, 22, 45, 70]
    assert share["windows"] == [[7, 22], [30, 45], [55, 70], [85, 100]]
    assert share["measure_after"] == 7
    assert share["seconds"] == 70 + 15 + 15 + 10
    testhost = echolab.client_share(params, "th")
    assert (testhost["steps"], testhost["seconds"]) == ([0, 0, 0, 0], share["seconds"])
    single = echolab.client_share(plan(), "c1")
    assert (single["steps"], single["step_starts"]) == ([], [])
    assert single["windows"] == [[single["measure_after"], single["measure_after"] + 30]]


def test_client_share_checks_steps_given_to_the_role() -> None:
    """Steps given to swarm_run directly (swarm_run_steps) are checked as the plan's are."""
    with pytest.raises(AnsibleFilterError, match="the steps must increase"):
        echolab.client_share(dict(plan(**CAPACITY), steps=[500, 250, 1000]), "c1")


@pytest.mark.parametrize(
    ("steps", "rate", "warmup", "step_duration"),
    [([100, 250, 500, 1000], 50.0, 5.0, 15), ([7], 3.0, 0.0, 1), ([1, 2, 3000], 75.0, 2.5, 60)],
)
def test_step_windows_agree_with_wsswarm(
    steps: list[int], rate: float, warmup: float, step_duration: int
) -> None:
    """The kit plans the step windows exactly as `wsswarm run --steps` does, so its planned time
    (progress lines, the overrun stop) ends when the swarm's last window ends."""
    args = Namespace(
        steps=steps, processes=1, connect_rate=rate, warmup=warmup, step_duration=step_duration
    )
    assert echolab.step_windows(steps, rate, warmup, step_duration) == planned_steps(args, 0.0)


def test_slo_failures_names_each_failed_gate() -> None:
    """Only the gates that failed, each with its target and value; none without gates."""
    gate = {"expr": "p99<100ms", "metric": "p99", "op": "<", "threshold": 100.0}
    summary = {
        "targets": {
            "vm": {"slo": [dict(gate, value=250.5, passed=False)]},
            "container": {"slo": [dict(gate, value=3.0, passed=True)]},
            "baseline": {
                "slo": [dict(gate, value=None, passed=False)],
            },
        }
    }
    assert echolab.slo_failures(summary) == [
        "target vm: SLO p99<100ms: 250.5 ms -> FAIL",
        "target baseline: SLO p99<100ms: no value -> FAIL",
    ]
    assert echolab.slo_failures({"targets": {"vm": {"slo": []}}}) == []
    with pytest.raises(AnsibleFilterError, match=r"expected the report's summary\.json"):
        echolab.slo_failures(["not", "a", "summary"])


@pytest.mark.parametrize(
    ("clients", "forks", "expected"),
    [
        (1, 10, 1000 + 5 + 2),  # one launch of 1 s, twice over
        (2, 10, 1000 + 5 + 2),  # two hosts launch together
        (20, 10, 1000 + 5 + 4),  # two batches
        (20, 5, 1000 + 5 + 8),  # four batches
        (21, 5, 1000 + 5 + 10),  # a fifth, partial batch
    ],
)
def test_start_at_leaves_one_launch_per_batch_of_forks(
    clients: int, forks: int, expected: int
) -> None:
    """The last batch of client hosts is launched before the common instant, whatever forks is."""
    assert echolab.start_at(1000.0, 1.0, 5, clients, forks) == expected


def test_start_at_rounds_up_to_a_whole_second() -> None:
    """--measure-at is a whole number of seconds after --start-at: the instant is whole too."""
    assert echolab.start_at(1000.2, 0.1, 3, 1, 10) == 1004


@pytest.mark.parametrize(
    "args",
    [
        (1000.0, 1.0, 5, 0, 10),
        (1000.0, 1.0, 5, 2, 0),
        (1000.0, -1.0, 5, 2, 10),
        (1000.0, float("nan"), 5, 2, 10),
        ("soon", 1.0, 5, 2, 10),
    ],
)
def test_start_at_refuses_bad_input(args: tuple[Any, ...]) -> None:
    """Nonsense input stops the play with the filter's name, not a start in the past."""
    with pytest.raises(AnsibleFilterError, match="echolab_start_at"):
        echolab.start_at(*args)


UFW_TARGETS = [
    {"name": "vm", "kind": "vm", "address": "10.0.0.42", "port": 8080},
    {"name": "container", "kind": "container", "address": "local", "port": 8080},
    {"name": "baseline", "kind": "baseline", "address": "local", "port": 8081},
    {"name": "container-rep2", "kind": "container", "address": "local", "port": 8080},
]


def test_ufw_rules_name_each_target_for_each_remote_source_address() -> None:
    """Forwarding to the VM, the container ports open: from every address a client loads from."""
    clients = [
        {"ansible_default_ipv4": {"address": "192.0.2.10"}},
        {
            "ansible_default_ipv4": {"address": "192.0.2.11"},
            "echolab_source_addresses": ["192.0.2.21/24"],
        },
    ]
    assert echolab.ufw_rules(UFW_TARGETS, clients) == [
        "route allow from 192.0.2.10 to 10.0.0.42 port 8080 proto tcp",
        "route allow from 192.0.2.11 to 10.0.0.42 port 8080 proto tcp",
        "route allow from 192.0.2.21 to 10.0.0.42 port 8080 proto tcp",
        "allow from 192.0.2.10 to any port 8080 proto tcp",
        "allow from 192.0.2.11 to any port 8080 proto tcp",
        "allow from 192.0.2.21 to any port 8080 proto tcp",
        "allow from 192.0.2.10 to any port 8081 proto tcp",
        "allow from 192.0.2.11 to any port 8081 proto tcp",
        "allow from 192.0.2.21 to any port 8081 proto tcp",
    ]


def test_ufw_rules_none_without_remote_clients() -> None:
    """The test host as its only client: its load never crosses its own firewall."""
    assert echolab.ufw_rules(UFW_TARGETS, []) == []


@pytest.mark.parametrize(
    ("targets", "clients", "message"),
    [
        (UFW_TARGETS, [{"echolab_source_addresses": ["nope"]}], "'nope' is not an IP address"),
        (
            [{"name": "vm", "kind": "vm", "address": "local", "port": 8080}],
            [{"ansible_default_ipv4": {"address": "192.0.2.10"}}],
            "a VM needs its bridge address",
        ),
        ("vm", [], "targets must be a list"),
    ],
)
def test_ufw_rules_refuse_bad_input(targets: Any, clients: Any, message: str) -> None:
    with pytest.raises(AnsibleFilterError, match=message):
        echolab.ufw_rules(targets, clients)
