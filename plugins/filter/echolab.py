"""echolab's experiment logic as Ansible filters, so that it lives in tested Python, not in Jinja.

    echolab_plan_params    the `echolab_*` variables and the profile -> the validated plan
    echolab_plan_targets   the target list -> one entry per enabled target and repetition
    echolab_client_share   the plan and a host -> that host's part (connections, rate, timings,
                           its capacity steps and when each begins)
    echolab_split          a total spread over n parts, as `wsswarm run` spreads it over workers
    echolab_target_status  what the hosts recorded -> status.json of one target (docs/formats.md)
    echolab_target_failures  what the hosts recorded -> the lines of the play's final verdict
    echolab_status_failures  the run's status.json records -> the lines of the report's verdict
    echolab_slo_failures   the report's summary.json -> one line per SLO gate that failed
    echolab_target_limits  the plan and the test host's open-file ceiling -> the targets' limits
                           (nofile, wsecho's --max-connections, memory)
    echolab_path_capacity  the plan, the targets, their limits and the client hosts' source
                           addresses -> what each path holds, and every plan it cannot hold
    echolab_ufw_rules      the targets and the remote client hosts' facts -> the ufw rules the test
                           host needs to let their load in (`ufw show added` form, without "ufw ")
    echolab_start_at       now, the time one launch took, the delay, the client hosts and forks
                           -> the common --start-at, late enough for the last batch of hosts
    echolab_cpu_list       a kernel CPU list ("0-3,6") -> the CPU numbers
    echolab_server_cpus_problems  the plan's server CPUs and the test host's online CPUs -> why
                           they cannot be used (empty: they can)
    echolab_client_cpus    the plan, a host and the test host's online CPUs -> the CPUs wsswarm
                           runs on there ("" : anywhere)

Loaded through ansible.cfg `filter_plugins` (and ANSIBLE_FILTER_PLUGINS in molecule). Bad input
raises AnsibleFilterError naming every problem found, so a play stops with a readable message.
"""

from __future__ import annotations

import ipaddress
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import (
    boolean,
)

# Plan keys, their type, and the value used when neither an echolab_* variable nor the profile
# gives one (None: the profile must give it).
PLAN_KEYS: dict[str, tuple[type, Any]] = {
    "connections": (int, None),
    "processes": (int, None),
    "connect_rate": (float, None),
    "warmup": (float, None),
    "duration": (float, None),
    "repetitions": (int, 1),
    "mode": (str, "closed"),
    "open_rate": (float, 1.0),
    "compat": (bool, False),
    "baseline": (bool, True),
    # Capacity steps (`wsswarm run --steps`): [] is one measured window of `connections`.
    "steps": (list, []),
    "step_duration": (int, 60),
    "stop_when": (list, []),
    "connect_timeout": (float, 10.0),
    "start_delay": (float, 8.0),
    "progress_interval": (float, 5.0),
    "clock_warn_s": (float, 0.25),
    "clock_fail_s": (float, 2.0),
    "server_cpus": (list, []),
}
# Keys that come only from echolab_* variables, never from a profile.
RUN_ONLY_KEYS = (
    "connect_timeout",
    "start_delay",
    "progress_interval",
    "clock_warn_s",
    "clock_fail_s",
    "server_cpus",
)
# The element type of each list key (a comma-separated string is read as a list too).
LIST_ELEMENTS: dict[str, type] = {"steps": int, "stop_when": str, "server_cpus": int}
TARGET_KINDS = ("vm", "container", "baseline")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# The 2017 client opens 3 connections per 200 ms per worker whatever the requested rate.
COMPAT_RATE_PER_PROCESS = 15
# Seconds after the measured window for the swarm to drain and write its summary.
DRAIN_S = 10
STATUS_FORMAT_VERSION = 1


def _convert(key: str, kind: type, value: Any) -> Any:
    """`value` as `kind`; ValueError with the key's name when it is not one."""
    if kind is list:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, Sequence):
            raise ValueError(f"{key} must be a list, got {value!r}")
        element = LIST_ELEMENTS[key]
        return [_convert(f"{key}[{i}]", element, item) for i, item in enumerate(value)]
    if kind is bool:
        try:
            return boolean(value, strict=True)
        except TypeError as exc:
            raise ValueError(f"{key} must be a boolean, got {value!r}") from exc
    if kind is str:
        return str(value).strip()
    if isinstance(value, bool):
        raise ValueError(f"{key} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{key} must be a number, got {value!r}") from exc
    if kind is int:
        if not number.is_integer():
            raise ValueError(f"{key} must be a whole number, got {value!r}")
        return int(number)
    return number


def cpu_list(text: Any) -> list[int]:
    """The CPU numbers of a kernel CPU list such as /sys/devices/system/cpu/online ("0-3,6")."""
    if not isinstance(text, str) or not re.fullmatch(r"\s*\d+(-\d+)?(,\d+(-\d+)?)*\s*", text):
        raise AnsibleFilterError(f"echolab_cpu_list: not a kernel CPU list: {text!r}")
    cpus: list[int] = []
    for part in text.strip().split(","):
        first, _, last = part.partition("-")
        cpus.extend(range(int(first), int(last or first) + 1))
    return sorted(set(cpus))


def server_cpus_problems(params: Any, online: Any) -> list[str]:
    """Why the plan's server CPUs (echolab_server_cpus) cannot be used on the test host whose
    online CPUs are `online` (a kernel CPU list): a CPU it does not have, or no CPU left for a
    client that runs there too. Empty when they can be used (or when nothing is pinned)."""
    cpus, testhost, clients = _server_cpus_plan(params, "echolab_server_cpus_problems")
    if not cpus:
        return []
    have = cpu_list(online)
    missing = [c for c in cpus if c not in have]
    if missing:
        return [
            f"echolab_server_cpus names CPU(s) {missing} that test host {testhost} does not have "
            f"online (it has {_ranges(have)}); list CPUs of the test host, or [] for no pinning"
        ]
    if testhost in clients and not set(have) - set(cpus):
        return [
            f"echolab_server_cpus {cpus} takes every CPU of test host {testhost}, which is also a "
            "client host: leave at least one CPU for wsswarm and the sampler"
        ]
    return []


def client_cpus(params: Any, host: str, online: Any) -> str:
    """The CPUs (a taskset list) the kit's processes on `host` run on: the test host's CPUs
    that are not the server's, when `host` is the test host and the server is pinned; "" (no
    restriction) otherwise."""
    cpus, testhost, _ = _server_cpus_plan(params, "echolab_client_cpus")
    if not cpus or host != testhost:
        return ""
    rest = sorted(set(cpu_list(online)) - set(cpus))
    if not rest:
        raise AnsibleFilterError(
            f"echolab_client_cpus: the server CPUs {cpus} leave no CPU of {host} for the clients"
        )
    return ",".join(str(c) for c in rest)


def _server_cpus_plan(params: Any, who: str) -> tuple[list[int], str, list[str]]:
    try:
        return list(params["server_cpus"]), str(params["testhost"]), list(params["clients"])
    except (KeyError, TypeError) as exc:
        raise AnsibleFilterError(
            f"{who}: expected the plan (experiment_plan_params), got {params!r}: {exc}"
        ) from exc


def _ranges(cpus: list[int]) -> str:
    """CPU numbers as a kernel CPU list: [0, 1, 2, 5] -> "0-2,5"."""
    parts: list[str] = []
    for cpu in cpus:
        if parts and cpu == int(parts[-1].rsplit("-", 1)[-1]) + 1:
            parts[-1] = parts[-1].split("-")[0] + f"-{cpu}"
        else:
            parts.append(str(cpu))
    return ",".join(parts)


def plan_params(
    given: Any,
    profiles: Any,
    profile: str,
    testhosts: Sequence[str],
    clients: Sequence[str],
) -> dict[str, Any]:
    """The experiment plan: each key from `given` (the echolab_* variables, None when not set),
    else from the profile, else its default; validated as a whole."""
    if not isinstance(given, Mapping):
        raise AnsibleFilterError(
            f"echolab_plan_params: expected a dict of parameters, not {given!r}"
        )
    unknown = sorted(set(given) - set(PLAN_KEYS))
    if unknown:
        raise AnsibleFilterError(f"echolab_plan_params: unknown parameters {unknown}")
    problems: list[str] = []
    if not isinstance(profiles, Mapping) or profile not in profiles:
        known = sorted(profiles) if isinstance(profiles, Mapping) else []
        problems.append(
            f"profile {profile!r} is not known (known: {known}; "
            "is playbooks/vars/profiles.yml loaded?)"
        )
        chosen: Mapping[str, Any] = {}
    else:
        chosen = profiles[profile] if isinstance(profiles[profile], Mapping) else {}
    params: dict[str, Any] = {"profile": profile}
    for key, (kind, default) in PLAN_KEYS.items():
        value = given.get(key)
        if value is None and key not in RUN_ONLY_KEYS:
            value = chosen.get(key)
        if value is None:
            value = default
        if value is None:
            problems.append(f"{key} is not set (neither echolab_{key} nor profile {profile!r})")
            continue
        try:
            params[key] = _convert(key, kind, value)
        except ValueError as exc:
            problems.append(str(exc))
    params["testhost"] = testhosts[0] if testhosts else ""
    params["clients"] = list(clients)
    if not problems:
        problems = _check_params(params)
    if problems:
        raise AnsibleFilterError(
            "The experiment parameters are not valid: " + "; ".join(problems) + f". Got {params}."
        )
    return params


def _check_params(p: Mapping[str, Any]) -> list[str]:
    """Every rule the plan breaks, as readable sentences."""
    rules: list[tuple[bool, str]] = [
        (p["connections"] >= 1, f"connections must be >= 1, got {p['connections']}"),
        (p["processes"] >= 1, f"processes must be >= 1, got {p['processes']}"),
        (p["connect_rate"] > 0, f"connect_rate must be > 0, got {p['connect_rate']}"),
        (p["warmup"] >= 0, f"warmup must be >= 0, got {p['warmup']}"),
        (p["duration"] > 0, f"duration must be > 0, got {p['duration']}"),
        (p["repetitions"] >= 1, f"repetitions must be >= 1, got {p['repetitions']}"),
        (
            all(cpu >= 0 for cpu in p["server_cpus"]),
            f"server_cpus must be CPU numbers (0, 1, ...), got {p['server_cpus']}",
        ),
        (
            len(set(p["server_cpus"])) == len(p["server_cpus"]),
            f"server_cpus names a CPU more than once: {p['server_cpus']}",
        ),
        (p["mode"] in ("closed", "open"), f"mode must be closed or open, got {p['mode']!r}"),
        (p["open_rate"] > 0, f"open_rate must be > 0, got {p['open_rate']}"),
        (p["connect_timeout"] > 0, f"connect_timeout must be > 0, got {p['connect_timeout']}"),
        (p["start_delay"] >= 1, f"start_delay must be >= 1, got {p['start_delay']}"),
        (
            p["progress_interval"] >= 1,
            f"progress_interval must be >= 1, got {p['progress_interval']}",
        ),
        (
            p["clock_fail_s"] >= p["clock_warn_s"] >= 0,
            f"0 <= clock_warn_s <= clock_fail_s must hold, got {p['clock_warn_s']} and "
            f"{p['clock_fail_s']}",
        ),
        (
            bool(p["testhost"]),
            "the inventory needs a `testhosts` group (the host of the targets; the first is used)",
        ),
        (bool(p["clients"]), "the inventory needs a `clients` group (where wsswarm runs)"),
    ]
    problems = [message for ok, message in rules if not ok]
    if not problems and p["connections"] // len(p["clients"]) < p["processes"]:
        problems.append(
            "every client host needs at least one connection per process: "
            f"{p['connections']} connections over {len(p['clients'])} client host(s) with "
            f"{p['processes']} process(es) each"
        )
    return problems + _check_steps(p)


def _check_steps(p: Mapping[str, Any]) -> list[str]:
    """Every rule the plan's capacity steps break (none without steps, unless --stop-when is
    given alone). The rules of `wsswarm run --steps`, checked for every client host's share."""
    steps, stop_when = list(p.get("steps") or []), list(p.get("stop_when") or [])
    if not steps:
        return ["stop_when needs steps"] if stop_when else []
    hosts = len(p["clients"])
    rules: list[tuple[bool, str]] = [
        (all(count >= 1 for count in steps), f"every step must be >= 1, got {steps}"),
        (
            all(b > a for a, b in itertools.pairwise(steps)),
            f"the steps must increase, got {steps}",
        ),
        (
            p["connections"] == steps[-1],
            f"with steps, connections is the last step's count: connections is "
            f"{p['connections']}, the last step {steps[-1]} (set echolab_connections to it)",
        ),
        (not p["compat"], "steps are not a 2017 run: not with compat"),
        (
            p.get("step_duration", 60) >= 1,
            f"step_duration must be >= 1, got {p.get('step_duration')}",
        ),
        (
            hosts == 0 or all(count % hosts == 0 for count in steps),
            f"every step must be a multiple of the {hosts} client hosts, so that every host "
            f"plans the same step windows, got {steps}",
        ),
        (
            hosts == 0 or steps[0] // hosts >= p["processes"],
            f"the first step ({steps[0]} over {hosts} client host(s)) needs at least one "
            f"connection per process ({p['processes']} on each host)",
        ),
    ]
    problems = [message for ok, message in rules if not ok]
    from wsswarm import slo  # noqa: PLC0415 - the kit's own client, on the controller

    for expr in stop_when:
        try:
            slo.parse(expr)
        except slo.SloError as exc:
            problems.append(f"stop_when: {exc}")
    return problems


def step_windows(
    counts: Sequence[int], rate: float, warmup: float, step_duration: int
) -> list[tuple[float, float, float]]:
    """Per capacity step, in seconds after the run's start: its ramp's start and its measured
    window, as `wsswarm run --steps` plans them (wsswarm.run.plan.planned_steps; a test holds
    the two together)."""
    plan: list[tuple[float, float, float]] = []
    ramp_start, previous = 0.0, 0
    for count in counts:
        start = ramp_start + math.ceil((count - previous) / rate + warmup - 1e-9)
        plan.append((ramp_start, start, start + step_duration))
        ramp_start, previous = start + step_duration, count
    return plan


def plan_targets(targets: Any, repetitions: Any) -> list[dict[str, Any]]:
    """One entry per enabled target and repetition: <name>, <name>-rep2, ...; validated."""
    if not isinstance(targets, Sequence) or isinstance(targets, str):
        raise AnsibleFilterError(f"echolab_targets must be a list of targets, got {targets!r}")
    if isinstance(repetitions, bool) or not isinstance(repetitions, int) or repetitions < 1:
        raise AnsibleFilterError(f"repetitions must be a whole number >= 1, got {repetitions!r}")
    out: list[dict[str, Any]] = []
    problems: list[str] = []
    for index, target in enumerate(targets):
        if not isinstance(target, Mapping):
            problems.append(f"entry {index} is not a dict: {target!r}")
            continue
        try:
            if not boolean(target.get("enabled", True), strict=True):
                continue
        except TypeError:
            problems.append(f"entry {index}: enabled must be a boolean, got {target['enabled']!r}")
            continue
        name = str(target.get("name", ""))
        for rep in range(1, repetitions + 1):
            out.append(
                {
                    "name": name if rep == 1 else f"{name}-rep{rep}",
                    "target": name,
                    "kind": target.get("kind", ""),
                    "address": target.get("address", "local"),
                    "port": int(target.get("port", 8080)),
                    "path": target.get("path", "/"),
                    "instance": target.get("instance", ""),
                    "app": target.get("app", "wsecho"),
                    "repetition": rep,
                }
            )
    names = [t["name"] for t in out]
    if not out and not problems:
        problems.append("no target is enabled")
    for t in out:
        if t["kind"] not in TARGET_KINDS:
            problems.append(
                f"{t['name']!r}: kind must be one of {list(TARGET_KINDS)}, got {t['kind']!r}"
            )
        if not SAFE_NAME.match(t["name"]):
            problems.append(f"{t['name']!r}: the name is not a plain file name")
        if not t["instance"]:
            problems.append(f"{t['name']!r}: an instance (domain or container name) is needed")
    twice = sorted({n for n in names if names.count(n) > 1})
    problems += [f"{n!r}: the name is used twice" for n in twice]
    if problems:
        raise AnsibleFilterError(
            "echolab_targets must list at least one enabled target, each with a unique "
            "file-name-safe `name`, a `kind` of vm, container or baseline, and an `instance`: "
            + "; ".join(problems)
            + "."
        )
    return out


def split(total: Any, parts: Any) -> list[int]:
    """`total` spread over `parts` as evenly as possible (the first ones get one more): the rule
    of `wsswarm run` for its workers (wsswarm.run.plan.split; a test holds the two together)."""
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        raise AnsibleFilterError(f"echolab_split: total must be a whole number >= 0, got {total!r}")
    if isinstance(parts, bool) or not isinstance(parts, int) or parts < 1:
        raise AnsibleFilterError(f"echolab_split: parts must be a whole number >= 1, got {parts!r}")
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def client_share(params: Any, host: str) -> dict[str, Any]:
    """This host's part of the plan: whether it is a client and/or the test host, the
    connections it opens (client) and serves (test host), its connect rate, and when its
    measured window and its run end at the latest (seconds after the start instant). With
    capacity steps: its count per step, and when each step's ramp begins; its first window is
    measure_after, and its run ends after the last step's window. `windows`: its measured
    windows as [start, end] pairs, one per step (or one)."""
    try:
        clients = list(params["clients"])
        connections = params["connections"]
        processes = params["processes"]
        compat = bool(params["compat"])
        rate_total = float(params["connect_rate"])
        warmup = float(params["warmup"])
        duration = float(params["duration"])
        testhost = params["testhost"]
        steps = list(params.get("steps") or [])
        step_duration = int(params.get("step_duration", 60))
    except (KeyError, TypeError, ValueError) as exc:
        raise AnsibleFilterError(
            "echolab_client_share: expected the plan (experiment_plan_params), "
            f"got {params!r}: {exc}"
        ) from exc
    if not clients:
        raise AnsibleFilterError("echolab_client_share: the plan has no client hosts")
    is_client = host in clients
    mine = split(connections, len(clients))[clients.index(host)] if is_client else 0
    rate = COMPAT_RATE_PER_PROCESS * processes if compat else rate_total / len(clients)
    ramp = mine / rate if mine > 0 else 0.0
    measure_after = ramp + warmup + (1 if compat else 0)
    seconds = ramp + warmup + duration + DRAIN_S
    host_steps: list[int] = []
    step_starts: list[float] = []
    measured = [[measure_after, measure_after + duration]]
    if steps:
        problems = _check_steps(params)
        if problems:
            raise AnsibleFilterError(
                "echolab_client_share: the capacity steps are not valid: " + "; ".join(problems)
            )
        index = clients.index(host) if is_client else 0
        host_steps = [split(count, len(clients))[index] for count in steps]
        windows = step_windows(host_steps, rate, warmup, step_duration)
        step_starts = [ramp_start for ramp_start, _, _ in windows]
        measured = [[start, end] for _, start, end in windows]
        measure_after = windows[0][1]
        seconds = windows[-1][2] + DRAIN_S
        if not is_client:
            host_steps = [0] * len(steps)
    return {
        "is_client": is_client,
        "is_testhost": host == testhost,
        "connections": mine,
        "processes": processes,
        # The test host serves every connection of a target (one target at a time).
        "server_connections": connections if host == testhost else 0,
        "rate": round(rate, 3),
        "measure_after": measure_after,
        "seconds": seconds,
        "steps": host_steps,
        "step_starts": step_starts,
        "windows": measured,
    }


def target_status(
    target: Any,
    reasons: Any,
    host_statuses: Any,
    sampler: Any,
    *,
    testhost: str,
    started: str,
    ended: str,
) -> dict[str, Any]:
    """status.json of one target. `host_statuses` maps each client host to what it recorded:
    None when it never reached the target (unreachable), {} when the target was not run."""
    for key in ("name", "target", "repetition", "kind"):
        if not isinstance(target, Mapping) or key not in target:
            raise AnsibleFilterError(f"echolab_target_status: the target lacks {key!r}: {target!r}")
    if not isinstance(host_statuses, Mapping):
        raise AnsibleFilterError(
            f"echolab_target_status: host statuses must be a dict by host, got {host_statuses!r}"
        )
    reasons = _reasons(reasons)
    return {
        "format_version": STATUS_FORMAT_VERSION,
        "target": target["name"],
        "base_target": target["target"],
        "repetition": target["repetition"],
        "kind": target["kind"],
        "status": "failed" if reasons else "ok",
        "reason": "; ".join(reasons) if reasons else None,
        "started": started,
        "ended": ended,
        "testhost": testhost,
        "hosts": {
            host: {"status": "unreachable"} if status is None else dict(status)
            for host, status in host_statuses.items()
        },
        "sampler": dict(sampler or {}),
    }


def target_failures(target_name: str, reasons: Any, host_statuses: Any) -> list[str]:
    """The lines for the play's final verdict: the target's reasons, then each client host
    whose swarm failed."""
    if not isinstance(host_statuses, Mapping):
        raise AnsibleFilterError(
            f"echolab_target_failures: host statuses must be a dict by host, got {host_statuses!r}"
        )
    reasons = _reasons(reasons)
    lines = [f"target {target_name} failed: " + "; ".join(reasons)] if reasons else []
    for host, status in host_statuses.items():
        if isinstance(status, Mapping) and status.get("status") == "failed":
            lines.append(
                f"target {target_name}: client host {host} failed (ended {status.get('ended')}, "
                f"rc {status.get('rc')}): {status.get('message')}"
            )
    return lines


def status_failures(statuses: Any) -> list[str]:
    """The lines of the report's verdict from the run's status.json records: each target that is
    not ok, and each of its client hosts that did not end ok."""
    if isinstance(statuses, str) or not isinstance(statuses, Sequence):
        raise AnsibleFilterError(f"echolab_status_failures: expected a list, got {statuses!r}")
    lines: list[str] = []
    for status in statuses:
        if not isinstance(status, Mapping) or "target" not in status:
            raise AnsibleFilterError(f"echolab_status_failures: not a status record: {status!r}")
        if status.get("status", "failed") != "ok":
            lines.append(f"target {status['target']} failed: {status.get('reason')}")
        for host, ended in (status.get("hosts") or {}).items():
            if ended.get("status", "") != "ok":
                lines.append(
                    f"target {status['target']}: client host {host} {ended.get('status', '?')}"
                    f" (ended {ended.get('ended', '?')}, rc {ended.get('rc', '?')}): "
                    f"{ended.get('message', '')}"
                )
    return lines


def slo_failures(summary: Any) -> list[str]:
    """One line per SLO gate that failed, from the summary.json of `wsswarm report --slo`
    (docs/formats.md: targets.<target>.slo[])."""
    targets = summary.get("targets") if isinstance(summary, Mapping) else None
    if not isinstance(targets, Mapping):
        raise AnsibleFilterError(
            f"echolab_slo_failures: expected the report's summary.json, got {summary!r:.200}"
        )
    from wsswarm import slo  # noqa: PLC0415 - the kit's own client, on the controller

    return [
        f"target {name}: {slo.line(gate)}"
        for name, result in targets.items()
        for gate in (result or {}).get("slo") or []
        if not gate["passed"]
    ]


class FdCost(NamedTuple):
    """Open files of one process on a target's path: per connection, and with no connection."""

    per_connection: int
    fixed: int
    source: str


# What each process on a path holds, and where the figure comes from.
FD_COSTS: dict[str, FdCost] = {
    "docker-proxy": FdCost(
        6,
        7,
        "two sockets and two splice pipes per direction; 3,007 fds at 500 connections "
        "(shared/reference/lab-environment.md, docker.io on Debian 12, 2026-11-30)",
    ),
    "wsecho": FdCost(
        1,
        14,
        "one socket per connection; 14 fds with no client (bench/churn.py, bench/README.md)",
    ),
    "node": FdCost(
        1,
        21,
        "one socket per connection; 21 fds with no client (node v20.20.2 + ws 8.23.0, "
        "roles/container_target/files/nodejs_ws/server.js, /proc/<pid>/fd, 2026-11-30)",
    ),
    # QEMU carries the guest's traffic through one tap device: its fds do not grow with the
    # connections, which the guest's wsecho holds (bounded by the guest's own limit).
    "qemu": FdCost(0, 0, "one tap fd for all traffic; the connections are the guest's"),
}
# Ephemeral ports one source address has towards one destination ip:port with the range that
# host_tuning sets on client hosts (1024-65535).
CLIENT_PORTS_PER_ADDRESS = 64_512
# docker-proxy connects to the container from one address (the bridge's) to one ip:port, one
# ephemeral port per connection: the widest range gives 64,512, less what other sockets hold.
DOCKER_PROXY_MAX_CONNECTIONS = 60_000
# Floors of the derived target limits: the roles' fixed values before the limits were derived,
# so a plan that fits under them (the lab and quick profiles) keeps exactly those.
NOFILE_FLOOR = {"container": 16_384, "baseline": 16_384, "vm": 100_000}
MAX_CONNECTIONS_FLOOR = 50_000
# Open files a target process gets beyond its connections (health checks, logs, the loop).
TARGET_FD_HEADROOM = 1_024
# Memory of a target (the VM's, and each container's limit): the 2017 VM's 512 MiB at least; the
# defaults of experiment_plan_target_memory_* (roles/experiment_plan/defaults/main.yml) say why.
MEMORY_FLOOR_MIB = 512
MEMORY_BASE_MIB = 256
MEMORY_KIB_PER_CONNECTION = 48
# The least memory a target may be given by hand (vm_target refuses less).
VM_MEMORY_MIN_MIB = 256
PROXY_FIX = (
    "raise dockerd's LimitNOFILE (a systemd drop-in for docker.service, as host_tuning writes), "
    "or take docker-proxy out of the path: docker_host_userland_proxy: false "
    "(container_target_userland_proxy) or container_target_network_mode: host"
)


def _count(name: str, value: Any, minimum: int = 0) -> int:
    """`value` as a whole number >= minimum; AnsibleFilterError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise AnsibleFilterError(f"{name} must be a whole number >= {minimum}, got {value!r}")
    return value


def target_limits(
    params: Any,
    ceiling: Any = None,
    memory_mib: Any = None,
    memory_base_mib: Any = MEMORY_BASE_MIB,
    memory_kib_per_connection: Any = MEMORY_KIB_PER_CONNECTION,
) -> dict[str, int]:
    """The targets' limits from the plan: each target's nofile is the plan's connections plus
    TARGET_FD_HEADROOM (never under its floor), capped by `ceiling` (the hard open-file limit a
    process may have on the test host, e.g. dockerd's; None: no cap) for the containers; the VM
    has its own kernel. wsecho's --max-connections is the plan's connections (floor 50,000).
    `target_memory_mib`, the VM's memory and every container's memory limit alike: `memory_mib`
    when given, else `memory_base_mib` + `memory_kib_per_connection` per planned connection
    (never under MEMORY_FLOOR_MIB)."""
    if not isinstance(params, Mapping) or "connections" not in params:
        raise AnsibleFilterError(f"echolab_target_limits: expected the plan, got {params!r}")
    connections = _count("the plan's connections", params["connections"], 1)
    cap = None if ceiling is None else _count("echolab_target_limits: ceiling", ceiling, 1)
    if memory_mib is None:
        base = _count("echolab_target_limits: memory_base_mib", memory_base_mib, 0)
        per = _count("echolab_target_limits: memory_kib_per_connection", memory_kib_per_connection)
        memory = max(MEMORY_FLOOR_MIB, base + -(-connections * per // 1024))
    else:
        memory = _count("echolab_target_limits: memory_mib", memory_mib, VM_MEMORY_MIN_MIB)
    wanted = {
        kind: max(floor, connections + TARGET_FD_HEADROOM) for kind, floor in NOFILE_FLOOR.items()
    }
    for kind in ("container", "baseline"):
        if cap is not None:
            wanted[kind] = min(wanted[kind], cap)
    return {
        "container_nofile": wanted["container"],
        "baseline_nofile": wanted["baseline"],
        "vm_nofile": wanted["vm"],
        "wsecho_max_connections": max(MAX_CONNECTIONS_FLOOR, connections),
        "target_memory_mib": memory,
    }


def _holds(cost: FdCost, limit: int) -> int:
    """Connections a process with this cost holds under `limit` open files."""
    return max(0, (limit - cost.fixed) // cost.per_connection)


def path_capacity(params: Any, targets: Any, limits: Any, source_addresses: Any) -> dict[str, Any]:
    """What each target's path holds against the plan, and every part that cannot hold it.

    `limits`: `docker_proxy` (bool: published ports go through docker-proxy), `dockerd_nofile`
    (dockerd's hard limit, which docker-proxy inherits; None when unknown), `container_nofile`,
    `baseline_nofile`, `vm_nofile`, `wsecho_max_connections`. `source_addresses`: {client host:
    number of source addresses, or their list (echolab_source_addresses)}, 1 for a host not
    listed or an empty list. Returns {"paths": {target: [one record
    per process: process, per_connection, fixed, limit, holds, source]}, "summary": [one line per
    target], "problems": [sentences with the arithmetic and the fix], "notes": [what could not
    be checked]}."""
    try:
        connections = _count("the plan's connections", params["connections"], 1)
        clients = list(params["clients"])
    except (KeyError, TypeError) as exc:
        raise AnsibleFilterError(
            f"echolab_path_capacity: expected the plan, got {params!r}"
        ) from exc
    if isinstance(targets, str) or not isinstance(targets, Sequence):
        raise AnsibleFilterError(f"echolab_path_capacity: targets must be a list, got {targets!r}")
    if not isinstance(limits, Mapping):
        raise AnsibleFilterError(f"echolab_path_capacity: limits must be a dict, got {limits!r}")
    if not isinstance(source_addresses, Mapping):
        raise AnsibleFilterError(
            "echolab_path_capacity: source addresses must be a dict by host, "
            f"got {source_addresses!r}"
        )
    for key in ("container_nofile", "baseline_nofile", "vm_nofile", "wsecho_max_connections"):
        _count(f"echolab_path_capacity: limits.{key}", limits.get(key), 1)
    dockerd = limits.get("dockerd_nofile")
    if dockerd is not None:
        _count("echolab_path_capacity: limits.dockerd_nofile", dockerd, 1)
    try:
        docker_proxy = boolean(limits.get("docker_proxy"), strict=True)
    except TypeError as exc:
        raise AnsibleFilterError(
            "echolab_path_capacity: limits.docker_proxy must be a boolean, "
            f"got {limits.get('docker_proxy')!r}"
        ) from exc

    problems: list[str] = []
    notes: list[str] = []
    shares = split(connections, len(clients)) if clients else []
    for host, share in zip(clients, shares, strict=True):
        given = source_addresses.get(host, 1)
        if isinstance(given, Sequence) and not isinstance(given, str):
            given = max(1, len(given))  # the inventory's list; empty: the host's own address
        count = _count(f"source addresses of {host}", given, 1)
        per_address = -(-share // count)
        if per_address > CLIENT_PORTS_PER_ADDRESS:
            problems.append(
                f"client host {host}: {share:,} connections from {count} source address(es) "
                f"are {per_address:,} per address to one target, but one address has "
                f"{CLIENT_PORTS_PER_ADDRESS:,} ports (1024-65535) per destination: add source "
                f"addresses (echolab_source_addresses) or client hosts, so that each address "
                f"holds at most {CLIENT_PORTS_PER_ADDRESS:,}"
            )

    paths: dict[str, list[dict[str, Any]]] = {}
    for target in targets:
        if not isinstance(target, Mapping) or "name" not in target or "kind" not in target:
            raise AnsibleFilterError(f"echolab_path_capacity: not a plan target: {target!r}")
        if target.get("repetition", 1) != 1 or target["name"] in paths:
            continue
        name, kind = str(target["name"]), target["kind"]
        if kind not in TARGET_KINDS:
            raise AnsibleFilterError(f"echolab_path_capacity: {name}: unknown kind {kind!r}")
        chain: list[tuple[str, str, int | None]] = []
        if kind in ("container", "baseline") and docker_proxy:
            chain.append(("docker-proxy", "dockerd's nofile", dockerd))
        if kind == "vm":
            chain.append(("qemu", "", None))
        app = "node" if kind == "baseline" else "wsecho"
        limit_key = f"{kind}_nofile"
        chain.append((app, f"{kind}_nofile", int(limits[limit_key])))
        records = paths[name] = []
        for process, limit_name, limit in chain:
            cost = FD_COSTS[process]
            holds = None if limit is None or cost.per_connection == 0 else _holds(cost, limit)
            records.append(
                {
                    "process": process,
                    "per_connection": cost.per_connection,
                    "fixed": cost.fixed,
                    "limit": limit,
                    "holds": holds,
                    "source": cost.source,
                }
            )
            if limit is None and cost.per_connection > 0:
                notes.append(
                    f"target {name}: {process}'s limit ({limit_name}) is not known yet, so "
                    f"{cost.per_connection} x {connections:,} + {cost.fixed} open files are "
                    "not checked"
                )
            if holds is None or holds >= connections:
                continue
            need = cost.per_connection * connections + cost.fixed
            if process == "docker-proxy":
                fix = PROXY_FIX
            elif kind != "vm" and dockerd is not None and limit >= dockerd:
                fix = (
                    f"a container's limit stops at dockerd's ({dockerd:,}): raise dockerd's "
                    "LimitNOFILE (a systemd drop-in for docker.service, as host_tuning writes)"
                )
            else:
                fix = f"raise {limit_name} (the plan derives it unless it is set by hand)"
            problems.append(
                f"target {name}: {process} holds {cost.per_connection} open file(s) per "
                f"connection + {cost.fixed}: {cost.per_connection} x {connections:,} + "
                f"{cost.fixed} = {need:,}, but its limit ({limit_name}) is {limit:,}, which "
                f"holds {holds:,} connections: {fix}"
            )
        if (
            kind in ("container", "baseline")
            and docker_proxy
            and connections > DOCKER_PROXY_MAX_CONNECTIONS
        ):
            problems.append(
                f"target {name}: docker-proxy reaches the container from one address, one port "
                f"per connection: {connections:,} connections need {connections:,} ports, over "
                f"the ~{DOCKER_PROXY_MAX_CONNECTIONS:,} one address has to one destination: "
                "docker_host_userland_proxy: false (container_target_userland_proxy) or "
                "container_target_network_mode: host"
            )
        if app == "wsecho" and connections > int(limits["wsecho_max_connections"]):
            problems.append(
                f"target {name}: wsecho answers 503 beyond --max-connections "
                f"{int(limits['wsecho_max_connections']):,}, under the plan's {connections:,}: "
                "raise it (the plan derives it unless it is set by hand)"
            )
    summary = [
        f"{name}: "
        + "; ".join(
            f"{r['process']} {r['per_connection']} fd(s)/connection + {r['fixed']}"
            + ("" if r["holds"] is None else f", limit {r['limit']:,}: holds {r['holds']:,}")
            for r in records
        )
        + f" (plan: {connections:,})"
        for name, records in paths.items()
    ]
    return {"paths": paths, "summary": summary, "problems": problems, "notes": notes}


def start_at(now: Any, launch_s: Any, start_delay: Any, clients: Any, forks: Any) -> int:
    """The swarm's common start instant (whole epoch seconds).

    Ansible launches the swarm on at most `forks` client hosts at a time, so the last host starts
    ceil(clients / forks) launches after the first. Each launch is taken to last `launch_s` (the
    sampler's launch, measured just before), twice over for a loaded machine, so that 20 client
    hosts under forks=5 start at the instant as 2 do.
    """
    try:
        values = [float(now), float(launch_s), float(start_delay)]
        hosts, parallel = int(clients), int(forks)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"echolab_start_at: not a number: {exc}") from None
    if not all(math.isfinite(v) and v >= 0 for v in values) or hosts < 1 or parallel < 1:
        raise AnsibleFilterError(
            f"echolab_start_at: needs now, launch_s, start_delay >= 0 and clients, forks >= 1; "
            f"got {now!r}, {launch_s!r}, {start_delay!r}, {clients!r}, {forks!r}"
        )
    batches = math.ceil(hosts / parallel)
    return math.ceil(values[0] + values[2] + 2 * values[1] * batches)


def ufw_rules(targets: Any, clients: Any) -> list[str]:
    """The ufw rules a test host needs for the load of the client hosts on other machines.

    `clients` are those hosts' variables: each one's load comes from its default IPv4 address and
    its `echolab_source_addresses`. A container or baseline target needs its port open to them (a
    published port passes Docker's own chains first; a host-network one needs the rule); a VM
    target on the bridge needs forwarding from them to its address and port (`ufw route`). The
    rules are written as `ufw show added` prints them, so they can be compared with it.
    """
    if not isinstance(targets, Sequence) or isinstance(targets, str):
        raise AnsibleFilterError(f"echolab_ufw_rules: targets must be a list, got {targets!r}")
    if not isinstance(clients, Sequence) or isinstance(clients, str):
        raise AnsibleFilterError(f"echolab_ufw_rules: clients must be a list, got {clients!r}")
    sources: list[str] = []
    problems: list[str] = []
    for client in clients:
        if not isinstance(client, Mapping):
            problems.append(f"a client host's variables are not a dict: {client!r}")
            continue
        default = (client.get("ansible_default_ipv4") or {}).get("address")
        for raw in [default, *list(client.get("echolab_source_addresses") or [])]:
            if raw:
                try:
                    sources.append(str(ipaddress.ip_interface(str(raw)).ip))
                except ValueError:
                    problems.append(f"{raw!r} is not an IP address")
    rules: list[str] = []
    for target in targets:
        kind, address, port = (
            target.get("kind"),
            str(target.get("address", "local")),
            target.get("port"),
        )
        for source in dict.fromkeys(sources):
            if kind == "vm":
                if address == "local":
                    problems.append(f"target {target.get('name')!r}: a VM needs its bridge address")
                    break
                rules.append(f"route allow from {source} to {address} port {int(port)} proto tcp")
            else:
                rules.append(f"allow from {source} to any port {int(port)} proto tcp")
    if problems:
        raise AnsibleFilterError("echolab_ufw_rules: " + "; ".join(dict.fromkeys(problems)))
    return list(dict.fromkeys(rules))


def _reasons(reasons: Any) -> list[str]:
    """The non-empty reasons, each once, in order."""
    if isinstance(reasons, str) or not isinstance(reasons, Sequence):
        raise AnsibleFilterError(f"reasons must be a list of strings, got {reasons!r}")
    return list(dict.fromkeys(str(r) for r in reasons if r))


class FilterModule:
    """echolab's filters."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        return {
            "echolab_plan_params": plan_params,
            "echolab_plan_targets": plan_targets,
            "echolab_split": split,
            "echolab_client_share": client_share,
            "echolab_target_status": target_status,
            "echolab_target_failures": target_failures,
            "echolab_status_failures": status_failures,
            "echolab_slo_failures": slo_failures,
            "echolab_target_limits": target_limits,
            "echolab_path_capacity": path_capacity,
            "echolab_start_at": start_at,
            "echolab_ufw_rules": ufw_rules,
            "echolab_cpu_list": cpu_list,
            "echolab_server_cpus_problems": server_cpus_problems,
            "echolab_client_cpus": client_cpus,
        }
