"""`wsswarm report`: exact merge, side by side, warnings and damaged input.

Most tests write results trees in the docs/formats.md format with a small generator (known
latencies, so the merged figures can be checked against the truth); `test_real_runs_*` uses the
files of real `wsswarm run` and `wsswarm sample` processes against a real wsecho.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from wsswarm import cli, latency
from wsswarm.report import build_summary, write_report
from wsswarm.report import hist as report_hist

WSSWARM = [sys.executable, "-m", "wsswarm"]
QUIET = ["--log-level", "error"]
# 2 processes, 20 connections in 0.2 s, 0.5 s warm-up, 2 s measured.
SMALL_RUN = ["--processes", "2", "--connections", "20", "--connect-rate", "100", "--warmup", "0.5"]
SMALL_RUN += ["--duration", "2", "--progress", "lines", "--label", "echo"]
T0 = 1_800_000_000.0  # a fixed epoch: generated files are reproducible


# ---- generator of metrics files ---------------------------------------------------------------


def tick(
    t: float,
    phase: str,
    values_us: list[int],
    *,
    open_: int,
    attempted: int,
    failed: int = 0,
    errors: dict[str, int] | None = None,
    cpu: float = 30.0,
) -> dict[str, Any]:
    hist = latency.new_histogram()
    latency.record_bulk(hist, values_us)
    mean = sum(values_us) / len(values_us) if values_us else None
    return {
        "type": "tick",
        "t": round(t, 4),
        "phase": phase,
        "roundtrips": len(values_us),
        "interval_s": 1.0,
        "latency_ms": latency.summarize_ms(hist, mean),
        "open": open_,
        "attempted": attempted,
        "failed": failed,
        "dropped": 0,
        "errors": errors or {},
        "cpu_percent": cpu,
        "rss_bytes": 30_000_000,
        "histogram": latency.encode(hist),
    }


def make_worker(
    seed: int,
    *,
    connections: int = 10,
    rate: int = 200,
    latency_ms: float = 5.0,
    measure_s: int = 4,
    t0: float = T0,
    failed: int = 0,
    cpu: float = 30.0,
) -> tuple[list[dict[str, Any]], list[int]]:
    """Ticks of one worker (2 s ramp, 1 s warm-up, `measure_s` measured, 1 drain) and the raw
    latencies of its measured ticks."""
    rng = random.Random(seed)
    ticks, measured = [], []
    attempted = connections + failed
    errors = {"refused": failed} if failed else {}
    phases = ["ramp", "ramp", "warmup"] + ["measure"] * measure_s + ["drain"]
    for k, phase in enumerate(phases, start=1):
        count = rate // 2 if phase in ("ramp", "drain") else rate
        values = [max(1, int(rng.expovariate(1 / (latency_ms * 1000)))) for _ in range(count)]
        if phase == "measure":
            measured += values
        ticks.append(
            tick(
                t0 + k + rng.uniform(0, 0.01),
                phase,
                values,
                open_=connections if k > 1 else connections // 2,
                attempted=attempted,
                failed=failed,
                errors=errors,
                cpu=cpu,
            )
        )
    return ticks, measured


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def write_host(
    host_dir: Path,
    workers: list[list[dict[str, Any]]],
    *,
    connections: int,
    end: bool = True,
    summary: bool = True,
    first_index: int = 0,
) -> None:
    """A `wsswarm run --out` directory: worker files and a summary as the real run writes it."""
    params = {"connections": connections, "processes": len(workers)}
    for offset, ticks in enumerate(workers):
        index = first_index + offset
        start = {
            "type": "start",
            "format_version": 1,
            "worker": index,
            "host": host_dir.name,
            "pid": 1000 + index,
            "label": host_dir.parent.name,
            "url": "ws://127.0.0.1:1/",
            "params": params,
            "t": T0,
        }
        records = [start, *ticks]
        if end:
            records.append({"type": "end", "t": ticks[-1]["t"], "reason": "completed"})
        write_jsonl(host_dir / f"worker-{index}.jsonl", records)
    if summary:
        measured = [t for ticks in workers for t in ticks if t["phase"] == "measure"]
        hist = latency.new_histogram()
        for t in measured:
            hist.add(latency.decode(t["histogram"]))
        doc = {
            "format_version": 1,
            "status": "completed",
            "host": host_dir.name,
            "params": params,
            "started": T0,
            "roundtrips": sum(t["roundtrips"] for t in measured),
            "client_bound": False,
            "histogram": latency.encode(hist),
        }
        (host_dir / "summary.json").write_text(json.dumps(doc))


def write_sampler(
    path: Path, *, rss: int, cpu: float = 50.0, seconds: int = 9, proxy: bool = False
) -> None:
    records: list[dict[str, Any]] = [
        {
            "type": "start",
            "format_version": 1,
            "host": "testhost",
            "target": path.parent.parent.name,
            "kind": "docker" if proxy else "process",
            "what": "x",
            "t": T0,
        }
    ]
    for k in range(1, seconds + 1):
        components = {"server[1]": {"cpu_percent": cpu, "rss_bytes": rss}}
        if proxy:
            components["docker-proxy[2]"] = {"cpu_percent": 40.0, "rss_bytes": 1_000_000}
        records.append(
            {
                "type": "sample",
                "t": T0 + k,
                "interval_s": 1.0,
                "cpu_percent": sum(c["cpu_percent"] for c in components.values()),
                "rss_bytes": sum(c["rss_bytes"] for c in components.values()),
                "components": components,
            }
        )
    records.append({"type": "end", "t": T0 + seconds, "reason": "signal"})
    write_jsonl(path, records)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def simple_run(
    root: Path, targets: dict[str, dict[str, Any]], manifest: dict[str, Any] | None = None
) -> Path:
    """A run directory with a manifest, and per target one client host of 2 workers; a
    target's "manifest" entries and `manifest` are added to what the manifest says."""
    manifest_targets = {}
    for name, spec in targets.items():
        workers = [
            make_worker(
                seed,
                rate=spec.get("rate", 200),
                latency_ms=spec.get("latency_ms", 5.0),
                failed=spec.get("failed", 0),
                cpu=spec.get("cpu", 30.0),
            )[0]
            for seed in (1, 2)
        ]
        write_host(root / name / "client1", workers, connections=20)
        write_sampler(
            root / name / "testhost" / "sample.jsonl",
            rss=spec.get("rss", 50_000_000),
            proxy=spec.get("proxy", False),
        )
        write_json(root / name / "status.json", {"target": name, "status": "ok", "reason": ""})
        manifest_targets[name] = {
            "kind": spec.get("kind", "container"),
            "url": "ws://127.0.0.1:1/",
            "accelerator": spec.get("accelerator"),
            "docker_proxy": spec.get("docker_proxy"),
            **spec.get("manifest", {}),
        }
    write_json(
        root / "manifest.json",
        {
            "format_version": 1,
            "run_id": root.name,
            "git": {"commit": "abc123"},  # as roles/run_manifest writes it
            "created": "2026-11-26T18:00:00Z",
            "targets": manifest_targets,
            **(manifest or {}),
        },
    )
    return root


def problems_text(summary: dict[str, Any]) -> str:
    return "\n".join(f"{p['where']}: {p['message']}" for p in summary["problems"])


# ---- exact merge --------------------------------------------------------------------------


def test_merge_of_two_hosts_equals_one_run_over_both(tmp_path: Path) -> None:
    """Hosts A (workers 0, 1) + B (2, 3) give exactly what one host with all four gives, and the
    percentiles and mean are those of all the raw latencies together."""
    generated = [make_worker(seed, rate=100 + 50 * seed) for seed in range(4)]
    ticks = [g[0] for g in generated]
    raw = [v for g in generated for v in g[1]]
    split = tmp_path / "split"
    write_host(split / "t" / "hostA", ticks[:2], connections=20)
    write_host(split / "t" / "hostB", ticks[2:], connections=20, first_index=2)
    single = tmp_path / "single"
    write_host(single / "t" / "hostAB", ticks, connections=40, summary=False)
    merged = build_summary(split)[0]["targets"]["t"]
    alone = build_summary(single)[0]["targets"]["t"]
    for key in ("roundtrips", "roundtrips_per_s", "latency_ms", "connections", "errors", "window"):
        assert merged[key] == alone[key], key
    assert latency.decode(merged["histogram"]).get_total_count() == len(raw)

    truth = latency.new_histogram()
    latency.record_bulk(truth, raw)
    assert merged["roundtrips"] == len(raw)
    assert merged["latency_ms"] == {
        **latency.summarize_ms(truth, sum(raw) / len(raw)),  # type: ignore[dict-item]
    }
    window = merged["window"]["end"] - merged["window"]["start"]
    assert merged["roundtrips_per_s"] == pytest.approx(len(raw) / window, abs=0.001)
    # Every worker measured (close to) the same 4 s: the rate is the sum of the generated rates.
    assert merged["roundtrips_per_s"] == pytest.approx(
        sum(100 + 50 * s for s in range(4)), rel=0.02
    )
    assert merged["connections"] == {
        "planned": 40,
        "attempted": 40,
        "open": 40,
        "failed": 0,
        "dropped": 0,
    }
    assert set(merged["hosts"]) == {"hostA", "hostB"}
    assert merged["hosts"]["hostA"]["roundtrips"] + merged["hosts"]["hostB"]["roundtrips"] == len(
        raw
    )
    assert merged["warnings"] == ["no server-side sample: server CPU and memory unknown"]


def test_hosts_measuring_different_seconds_count_only_the_common_window(tmp_path: Path) -> None:
    """Host B starts its measured window one tick later: only the overlap counts, and it says so."""
    a = [make_worker(1)[0]]
    b = [make_worker(2, t0=T0 + 1)[0]]
    write_host(tmp_path / "t" / "hostA", a, connections=10)
    write_host(tmp_path / "t" / "hostB", b, connections=10)
    result = build_summary(tmp_path)[0]["targets"]["t"]
    assert result["window"]["seconds"] == pytest.approx(3.0, abs=0.02)
    # 3 common measured seconds of 200 round trips/s from each host.
    assert result["roundtrips"] == 2 * 3 * 200
    assert result["roundtrips_per_s"] == pytest.approx(400, rel=0.01)
    assert any(
        "400 round trips measured outside the common window" in w for w in result["warnings"]
    )


# ---- side by side, warnings ---------------------------------------------------------------


def test_side_by_side_sentence_like_2017(tmp_path: Path) -> None:
    """3x the rate at 2.5x lower latency with 14% less memory reads like the 2017 write-up."""
    root = simple_run(
        tmp_path / "run-1",
        {
            "vm": {"kind": "vm", "rate": 600, "latency_ms": 2.0, "rss": 86_000_000},
            "container": {"kind": "container", "rate": 200, "latency_ms": 5.0, "rss": 100_000_000},
        },
    )
    summary, report = write_report(root)
    (pair,) = summary["comparisons"]
    assert pair["faster"] == "vm"
    assert pair["slower"] == "container"
    assert pair["roundtrips_ratio"] == pytest.approx(3.0, rel=0.02)
    assert pair["mean_latency_ratio"] == pytest.approx(2.5, rel=0.1)
    assert pair["memory_change"] == pytest.approx(-0.14)
    assert pair["sentence"].startswith("vm vs container: 3.0x the round-trips/s, 2.")
    assert pair["sentence"].endswith("x lower latency, 14% less memory")
    text = report.read_text()
    assert pair["sentence"] in text
    assert "3x the round-trips/s, 2.5x lower latency, 14% less memory" in text  # 2017 headline
    assert (
        "| 2017 IncludeOS in QEMU VM (published) | reference | 110,000-115,000 | 110,000-115,000 "
        "| 75-115 |" in text
    )
    assert (
        "| 2017 node.js + ws in Docker (published) | reference | 30,000-35,000 | 30,000-35,000 "
        "| 280-310 |" in text
    )
    assert "None: every file was read completely." in text
    rows = list(csv.DictReader((root / "summary.csv").open()))
    assert [r["target"] for r in rows] == [
        "container",
        "vm",
        "2017 IncludeOS in QEMU VM",
        "2017 node.js + ws in Docker",
    ]
    assert float(rows[1]["roundtrips_per_s"]) == summary["targets"]["vm"]["roundtrips_per_s"]
    assert rows[1]["server_rss_bytes_max"] == "86000000"
    assert rows[2]["source"] == "published 2017"
    for name in summary["plots"]:
        assert (root / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["plots"] == [
        "roundtrips.png",
        "latency.png",
        "connections.png",
        "server-cpu.png",
        "server-memory.png",
    ]


def test_warnings_client_bound_tcg_docker_proxy_failures(tmp_path: Path) -> None:
    """Each condition the reader must know about is a warning of its target."""
    root = simple_run(
        tmp_path / "run",
        {
            "vm": {"kind": "vm", "accelerator": "tcg", "cpu": 99.0},
            "ctr": {"kind": "container", "docker_proxy": True, "proxy": True, "failed": 3},
            "clean": {"kind": "vm", "accelerator": "kvm"},
            "direct": {"kind": "baseline", "docker_proxy": False},
        },
    )
    summary = build_summary(root)[0]
    vm, ctr, clean = (summary["targets"][n] for n in ("vm", "ctr", "clean"))
    assert vm["client_bound"] is True
    assert any(w.startswith("CLIENT-BOUND") for w in vm["warnings"])
    assert any("TCG" in w for w in vm["warnings"])
    assert any("docker-proxy" in w and "40% CPU" in w for w in ctr["warnings"])
    assert ctr["server"]["docker_proxy_cpu_percent"] == 40.0
    assert ctr["server"]["cpu_percent_mean"] == 90.0  # proxy included in the server's CPU
    assert any("6 of 26 connection attempts failed (refused: 6)" in w for w in ctr["warnings"])
    assert ctr["errors"] == {"refused": 6}
    assert clean["warnings"] == []
    assert summary["targets"]["direct"]["warnings"] == [
        "no docker-proxy in the path (userland proxy off, or host networking), unlike 2017, "
        "where docker-proxy carried every byte of the node.js container"
    ]
    assert clean["client_bound"] is False
    # The sampler covers the measured window only: 4 samples of 9.
    assert clean["server"]["samples"] == 4
    assert clean["server"]["scope"] == "measured window"


# ---- where the server ran and how the traffic reached it -----------------------------------

PINNED_VM: dict[str, Any] = {
    "kind": "vm",
    "rate": 400,
    "manifest": {
        "server_cpus": [2, 3],
        "client_hosts": {"client1": "local"},
        "vm": {"vcpus": 2, "cpus": [2, 3], "workers": 2, "vhost_net": True},
        "pinning": {"vcpupin": ["2", "3"], "emulatorpin": "2-3"},
    },
}
PINNED_CONTAINER: dict[str, Any] = {
    "kind": "container",
    "rate": 400,
    "docker_proxy": True,
    "manifest": {
        "server_cpus": [2, 3],
        "client_hosts": {"client1": "local", "client2": "remote"},
        "container": {"network_mode": "bridge", "cpus": None, "cpuset": "2,3", "workers": 2},
        "pinning": {"cpuset": "2-3"},
    },
}
PINNED_BASELINE: dict[str, Any] = {
    "kind": "baseline",
    "rate": 200,
    "manifest": {
        "server_cpus": [2, 3],
        "client_hosts": {"client1": "remote"},
        "container": {"network_mode": "bridge", "cpus": None, "cpuset": "2,3", "workers": 1},
        "pinning": {"cpuset": "2,3"},
    },
}


def test_roundtrips_per_core_and_network_path_as_it_was(tmp_path: Path) -> None:
    """Per core: the VM's vCPUs, the container's cpuset, one core for node.js. docker-proxy is
    named only for the test host's own connections; a remote client's go through DNAT."""
    root = simple_run(
        tmp_path / "run",
        {"vm": PINNED_VM, "ctr": PINNED_CONTAINER, "node": PINNED_BASELINE},
        manifest={
            "parameters": {"testhost": "th", "clients": ["client1", "client2"]},
            "hosts": {
                "th": {
                    "cpu_model": "Example CPU @ 3.0GHz",
                    "cpus_online": "0-3",
                    "cpu_governor": "performance",
                    "smt": {"control": "off", "active": "0"},
                    "irqbalance": False,
                    "vhost_net": True,
                }
            },
        },
    )
    summary, report = write_report(root)
    vm, ctr, node = (summary["targets"][n] for n in ("vm", "ctr", "node"))
    assert vm["roundtrips_per_s"] == pytest.approx(800, rel=0.02)
    assert (vm["server_cores"], vm["server_cores_basis"]) == (
        2.0,
        "2 vCPU(s) pinned to host CPU(s) 2,3",
    )
    assert vm["roundtrips_per_s_per_core"] == pytest.approx(400, rel=0.02)
    assert vm["network_path"] == "the test host's bridge to the VM's virtio-net (vhost)"
    assert (ctr["server_cores"], ctr["server_cores_basis"]) == (2.0, "cpuset 2,3")
    assert ctr["network_paths"] == {
        "client1": "docker-proxy (userland proxy) to the container's bridge",
        "client2": "DNAT (iptables PREROUTING) on the test host to the container's bridge",
    }
    assert ctr["docker_proxy"] is True
    assert any(
        "docker-proxy (userland proxy) was in the path of client1's bytes" in w
        for w in ctr["warnings"]
    )
    # One node.js process: one core, whatever cpuset it had; remote clients: DNAT, no proxy.
    assert (node["server_cores"], node["server_cores_basis"]) == (
        1.0,
        "one node.js process (cpuset 2,3)",
    )
    assert node["roundtrips_per_s_per_core"] == pytest.approx(400, rel=0.02)
    assert node["docker_proxy"] is False
    assert node["network_path"] == PINNED_DNAT
    assert vm["warnings"] == []
    assert node["warnings"] == [
        "no docker-proxy in the path, unlike 2017, where docker-proxy carried every byte of the "
        f"node.js container; here: {PINNED_DNAT}"
    ]
    text = report.read_text()
    assert "| rt/s per core |" in text
    assert "server cores: cpuset 2,3, network path: from client1: docker-proxy" in text
    assert (
        "Test host: CPU Example CPU @ 3.0GHz, CPUs online 0-3, governor performance, SMT off "
        "(active: 0), irqbalance not running, vhost-net present." in text
    )
    rows = {r["target"]: r for r in csv.DictReader((root / "summary.csv").open())}
    assert float(rows["vm"]["roundtrips_per_s_per_core"]) == pytest.approx(400, rel=0.02)
    assert rows["node"]["network_path"] == PINNED_DNAT


PINNED_DNAT = "DNAT (iptables PREROUTING) on the test host to the container's bridge"


def test_pinning_not_in_force_and_missing_vhost_are_warned(tmp_path: Path) -> None:
    """What was read back after deployment is compared with echolab_server_cpus."""
    vm = {**PINNED_VM, "manifest": {**PINNED_VM["manifest"]}}
    vm["manifest"]["vm"] = {"vcpus": 2, "cpus": [2, 3], "vhost_net": False}
    vm["manifest"]["pinning"] = {"vcpupin": ["2", "0-3"], "emulatorpin": "0-3"}
    ctr = {**PINNED_CONTAINER, "manifest": {**PINNED_CONTAINER["manifest"], "pinning": {}}}
    summary = build_summary(simple_run(tmp_path / "run", {"vm": vm, "ctr": ctr}))[0]
    warnings = summary["targets"]["vm"]["warnings"]
    assert (
        "CPU pinning not in force: asked for host CPUs 2,3, `virsh vcpupin` read back "
        "['2', '0-3'] and `virsh emulatorpin` 0-3"
    ) in warnings
    assert any(w.startswith("virtio-net without vhost (/dev/vhost-net missing") for w in warnings)
    assert summary["targets"]["vm"]["network_path"].endswith("(no vhost: QEMU userspace)")
    assert (
        "CPU pinning not in force: asked for host CPUs 2,3, `docker inspect` read back cpuset "
        "None" in summary["targets"]["ctr"]["warnings"]
    )


def test_path_and_cores_of_an_unpinned_host_network_target(tmp_path: Path) -> None:
    """Host networking has no NAT and no proxy; the quota gives the cores; nothing pinned,
    nothing checked. A manifest without these facts leaves the figures empty."""
    host_net = {
        "kind": "container",
        "manifest": {
            "server_cpus": [],
            "client_hosts": {"client1": "local"},
            "container": {"network_mode": "host", "cpus": 1.0, "cpuset": "", "workers": 1},
        },
    }
    summary = build_summary(simple_run(tmp_path / "run", {"ctr": host_net, "bare": {}}))[0]
    ctr, bare = summary["targets"]["ctr"], summary["targets"]["bare"]
    assert ctr["network_path"] == "the host's network stack (no NAT, no proxy)"
    assert (ctr["server_cores"], ctr["server_cores_basis"]) == (1.0, "CPU quota 1")
    assert ctr["warnings"] == [
        "no docker-proxy in the path, unlike 2017, where docker-proxy carried every byte of the "
        "node.js container; here: the host's network stack (no NAT, no proxy)"
    ]
    assert bare["server_cores"] is None
    assert bare["roundtrips_per_s_per_core"] is None
    assert bare["network_path"] is None


def test_failed_target_and_host_that_died(tmp_path: Path) -> None:
    """A failed target shows with its reason; a host that stopped mid-run is named with the time."""
    root = simple_run(tmp_path / "run", {"ok": {}})
    write_json(
        root / "vm" / "status.json",
        {"target": "vm", "status": "failed", "reason": "the VM did not answer on 10.0.0.42:8080"},
    )
    ticks, _ = make_worker(7)
    write_host(root / "ok" / "client2", [ticks[:5]], connections=10, end=False, summary=False)
    # How the playbook saw the client hosts end (roles/swarm_run writes this into status.json).
    status = json.loads((root / "ok" / "status.json").read_text())
    status["hosts"] = {
        "client1": {"status": "ok", "rc": 0},
        "client2": {"status": "failed", "ended": "2026-11-26T18:01:02Z", "rc": -9, "message": "x"},
    }
    write_json(root / "ok" / "status.json", status)
    summary, report = write_report(root, plots=False)
    vm = summary["targets"]["vm"]
    assert vm["status"] == "failed"
    assert vm["warnings"] == ["target FAILED: the VM did not answer on 10.0.0.42:8080"]
    ok = summary["targets"]["ok"]
    died = [w for w in ok["warnings"] if "client2/worker-0" in w]
    assert died
    assert "no end record" in died[0]
    assert time.strftime("%H:%M:%S", time.gmtime(ticks[4]["t"])) in died[0]
    # Its measured ticks end early: the common window is cut to what every worker measured.
    assert ok["window"]["seconds"] == pytest.approx(2.0, abs=0.02)
    assert "client2/summary.json: missing" in problems_text(summary)
    assert "client host client2: failed (ended 2026-11-26T18:01:02Z, rc -9): x" in ok["warnings"]
    assert not any("client host client1" in w for w in ok["warnings"])
    text = report.read_text()
    assert "| vm | failed |" in text
    assert "target FAILED: the VM did not answer" in text
    assert "commit `abc123`; started `2026-11-26T18:00:00Z`" in text


# ---- damaged input ------------------------------------------------------------------------


def test_damaged_files_are_named_and_the_rest_is_used(tmp_path: Path) -> None:
    """Garbage line, bad field, undecodable histogram, truncated last line: named, rest used."""
    ticks, _ = make_worker(3)
    host = tmp_path / "t" / "h"
    write_host(host, [ticks], connections=10)
    path = host / "worker-0.jsonl"
    lines = path.read_text().splitlines()
    # lines: 0 start, 1-2 ramp, 3 warmup, 4-7 measure, 8 drain, 9 end
    lines.insert(5, "this is not json")  # becomes line 6
    bad_field = json.loads(lines[7])  # the third measured tick, now line 8
    bad_field["roundtrips"] = "many"
    lines[7] = json.dumps(bad_field)
    bad_hist = json.loads(lines[8])  # the last measured tick, line 9
    bad_hist["histogram"] = "HISTFAAAAB!!"
    lines[8] = json.dumps(bad_hist)
    # Cut the file in the middle of its end record (no newline at the end).
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:15])
    summary = build_summary(tmp_path)[0]
    problems = problems_text(summary)
    assert "t/h/worker-0.jsonl:6: not JSON" in problems
    assert "t/h/worker-0.jsonl:8: tick record: roundtrips = 'many' is not a count" in problems
    assert "t/h/worker-0.jsonl:9: histogram does not decode" in problems
    assert "latency of 200 round trips not in the percentiles" in problems
    assert "t/h/worker-0.jsonl:11: truncated last line" in problems
    result = summary["targets"]["t"]
    # Three measured ticks remain usable for the count; two of them for the percentiles.
    assert result["roundtrips"] == 600
    assert latency.decode(result["histogram"]).get_total_count() == 400
    assert any("no end record" in w for w in result["warnings"])
    assert any("summary.json counts 800" in w and "files 600" in w for w in result["warnings"])


def test_unknown_version_empty_file_missing_summary(tmp_path: Path) -> None:
    """A file of an unknown format version is skipped and named; empty files too."""
    host = tmp_path / "t" / "h"
    write_host(host, [make_worker(1)[0], make_worker(2)[0]], connections=10, summary=False)
    lines = (host / "worker-1.jsonl").read_text().splitlines()
    start = json.loads(lines[0])
    start["format_version"] = 99
    (host / "worker-1.jsonl").write_text("\n".join([json.dumps(start), *lines[1:]]) + "\n")
    (host / "worker-2.jsonl").write_text("")
    (tmp_path / "t" / "testhost").mkdir()
    (tmp_path / "t" / "testhost" / "sample.jsonl").write_text('{"type": "sample", "t": 1}\n')
    summary = build_summary(tmp_path)[0]
    problems = problems_text(summary)
    assert "t/h/worker-1.jsonl:1: format_version 99 is not one this report knows" in problems
    assert "t/h/worker-2.jsonl: empty file" in problems
    assert "t/h/summary.json: missing" in problems
    assert "t/testhost/sample.jsonl:1: sample record without 'cpu_percent'" in problems
    assert "t/testhost/sample.jsonl:1: no start record" in problems
    assert "manifest.json: missing" in problems
    assert "t/status.json: missing" in problems
    assert summary["targets"]["t"]["roundtrips"] == 4 * 200


def test_empty_or_wrong_directory_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No results: exit 1 and say what was expected; a results root: exit 2, name a run."""
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["report", str(empty)]) == 1
    err = capsys.readouterr().err
    assert "no results in" in err
    assert "worker-*.jsonl" in err
    assert not (empty / "report.md").exists()
    simple_run(tmp_path / "results" / "run-7", {"a": {}})
    assert cli.main(["report", str(tmp_path / "results")]) == 2
    assert "pass one run directory, e.g." in capsys.readouterr().err
    assert cli.main(["report", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_console_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """stdout: the summary table, the warnings, the comparisons and the path of report.md."""
    root = simple_run(tmp_path / "run", {"vm": {"rate": 400, "accelerator": "tcg"}, "ctr": {}})
    assert cli.main(["report", "--no-plots", str(root)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["target", "status", "round-trips/s"]
    rows = {line.split()[0]: line.split() for line in lines[2:4]}
    assert rows["ctr"][1] == "ok"
    assert float(rows["ctr"][2].replace(",", "")) == pytest.approx(400, rel=0.01)
    assert float(rows["vm"][2].replace(",", "")) == pytest.approx(800, rel=0.01)
    assert any(line.startswith("2017 IncludeOS in QEMU VM (published)") for line in lines)
    assert any(line.startswith("WARNING vm: VM without hardware acceleration") for line in lines)
    assert "vm vs ctr: 2.0x the round-trips/s" in out
    assert lines[-1] == f"report: {root / 'report.md'}"
    assert err == ""
    assert not list(root.glob("*.png"))


# ---- real runs ----------------------------------------------------------------------------


@pytest.fixture
def wsecho() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsecho", "--host", "127.0.0.1", "--port", str(port), *QUIET]
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "wsecho did not start"
            time.sleep(0.1)
    yield port, proc
    proc.terminate()
    proc.wait(timeout=10)


def test_real_runs_of_two_hosts_merge_exactly(
    tmp_path: Path, wsecho: tuple[int, subprocess.Popen[bytes]]
) -> None:
    """Two real `wsswarm run`s started together plus a real sampler: the report's merge equals
    the sum of the hosts' own summaries and a one-directory run over all four workers."""
    port, server = wsecho
    run_dir = tmp_path / "results" / "r1"
    target = run_dir / "echo"
    sample = target / "testhost" / "sample.jsonl"
    sampler = subprocess.Popen(
        [*WSSWARM, "sample", "--pid", str(server.pid), "--interval", "0.5", "--out", str(sample)]
    )
    # Both runs start their ramp at the same wall-clock second (start-up takes seconds here).
    # Generous: under load the workers of two concurrent runs take seconds to start, and a host
    # whose workers are ready only after the planned window fails.
    at = str(time.time() + 10)
    url = f"ws://127.0.0.1:{port}/"
    runs = [
        subprocess.Popen(
            [*WSSWARM, "run", "--url", url, *SMALL_RUN, "--start-at", at, "--out", str(target / h)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for h in ("hostA", "hostB")
    ]
    for run in runs:
        _, err = run.communicate(timeout=90)
        assert run.returncode == 0, err
    sampler.terminate()
    assert sampler.wait(timeout=10) == 0
    write_json(target / "status.json", {"target": "echo", "status": "ok", "reason": ""})
    write_json(
        run_dir / "manifest.json",
        {"format_version": 1, "run_id": "r1", "targets": {"echo": {"kind": "baseline"}}},
    )

    proc = subprocess.run(
        [*WSSWARM, "report", "--no-plots", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"report: {run_dir / 'report.md'}" in proc.stdout
    assert "round-trips/s" in proc.stdout.splitlines()[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["problems"] == []
    echo = summary["targets"]["echo"]
    hosts = {h: json.loads((target / h / "summary.json").read_text()) for h in ("hostA", "hostB")}
    # Each host's figures from its worker files equal what its own run wrote.
    for name, host_summary in hosts.items():
        assert echo["hosts"][name]["roundtrips"] == host_summary["roundtrips"]
        assert echo["hosts"][name]["latency_ms"] == host_summary["latency_ms"]
    assert not any("summary.json counts" in w for w in echo["warnings"])
    # The merged histogram holds every round trip counted in the common window.
    assert latency.decode(echo["histogram"]).get_total_count() == echo["roundtrips"]
    # Both hosts measured the same planned window, so the merge loses nothing.
    assert 0 < echo["roundtrips"] == sum(h["roundtrips"] for h in hosts.values())
    assert echo["connections"]["attempted"] == 40
    assert echo["connections"]["failed"] == 0
    assert echo["server"]["samples"] >= 1
    assert echo["server"]["rss_bytes_max"] > 1_000_000
    # The sampler read wsecho's namespace: at least the 40 server-side sockets were in it.
    assert echo["server"]["kernel"]["tcp_inuse_max"] >= 40
    per_conn = echo["memory_per_connection"]
    assert per_conn["process_bytes"] == round(echo["server"]["rss_bytes_max"] / 40)
    kernel = echo["server"]["kernel"]
    assert per_conn["kernel_bytes"] == round(
        kernel["tcp_mem_bytes_max"] / kernel["tcp_alloc_at_max"]
    )
    assert per_conn["total_bytes"] == per_conn["process_bytes"] + per_conn["kernel_bytes"]
    assert echo["roundtrips_per_s_cv"] is not None
    for key in ("connect_ms", "upgrade_ms"):
        assert 0 < echo[key]["p50"] <= echo[key]["p99"] <= echo[key]["max"]
    for name, host_summary in hosts.items():
        # Each client host's sockstat, from its run: its 20 connections, both ends on loopback.
        assert echo["hosts"][name]["kernel"] == host_summary["kernel"]
        assert host_summary["kernel"]["tcp_inuse_max"] >= 40
    assert (
        list(echo["server"]["components"]) == [f"wsecho[{server.pid}]"]
        or list(echo["server"]["components"]) == [f"python3[{server.pid}]"]
        or len(echo["server"]["components"]) == 1
    )

    # The same worker files in one directory (no summaries) give the same merged figures.
    single = tmp_path / "single" / "echo" / "all"
    single.mkdir(parents=True)
    for index, path in enumerate(sorted(target.glob("host*/worker-*.jsonl"))):
        shutil.copy(path, single / f"worker-{index}.jsonl")
    alone = build_summary(tmp_path / "single")[0]["targets"]["echo"]
    for key in ("roundtrips", "roundtrips_per_s", "latency_ms", "window", "histogram"):
        assert alone[key] == echo[key], key


def test_fast_histogram_readout_equals_hdrh() -> None:
    """The report's percentile and mean read-out gives exactly hdrh's own numbers."""
    rng = random.Random(5)
    for values in ([1], [7, 7, 7], [rng.randint(1, 50_000_000) for _ in range(2000)]):
        hist = latency.new_histogram()
        latency.record_bulk(hist, values)
        decoded = latency.decode(latency.encode(hist))
        for h in (hist, decoded):
            points = [0.0, 1.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0]
            assert report_hist.values_at_percentiles(h, points) == [
                h.get_value_at_percentile(p) for p in points
            ]
            assert report_hist.mean_value(h) == h.get_mean_value()
            assert report_hist.summary_ms(h) == latency.summarize_ms(h)
    assert report_hist.summary_ms(latency.new_histogram()) is None


def test_client_bound_flag_of_a_run_is_kept(tmp_path: Path) -> None:
    """A host whose own run said client-bound makes the target client-bound, named as such."""
    root = simple_run(tmp_path / "run", {"t": {}})
    summary_path = root / "t" / "client1" / "summary.json"
    doc = json.loads(summary_path.read_text())
    doc["client_bound"] = True
    summary_path.write_text(json.dumps(doc))
    result = build_summary(root)[0]["targets"]["t"]
    assert result["client_bound"] is True
    assert result["warnings"] == [
        "CLIENT-BOUND according to the run on client1 (its summary.json): the figures may "
        "measure the client, not the server"
    ]


def test_roundtrip_noise_is_measured_and_warned_about(tmp_path: Path) -> None:
    """Per-second round trips of 200/400/200/400 (two workers) give a CV of 0.385 and a warning;
    the steady generated runs give 0 and none."""
    workers = []
    for seed in (1, 2):
        ticks, _ = make_worker(seed)
        for k, t in enumerate(tk for tk in ticks if tk["phase"] == "measure"):
            count = 100 if k % 2 == 0 else 200
            t.update(tick(t["t"], "measure", [5000] * count, open_=10, attempted=10))
        workers.append(ticks)
    write_host(tmp_path / "noisy" / "client1", workers, connections=20)
    simple_run(tmp_path, {"steady": {}})
    targets = build_summary(tmp_path)[0]["targets"]
    noisy = targets["noisy"]
    assert noisy["roundtrips_per_s_cv"] == pytest.approx(0.3849, abs=1e-4)
    assert any(w.startswith("round trips per second varied by 38%") for w in noisy["warnings"])
    assert targets["steady"]["roundtrips_per_s_cv"] == 0.0
    assert not any("varied" in w for w in targets["steady"]["warnings"])


def test_kernel_memory_per_connection_from_sampler_records(tmp_path: Path) -> None:
    """The kernel's TCP memory per socket at its peak is added to the process memory per
    open connection; a malformed kernel field is named and its record skipped."""
    root = simple_run(tmp_path / "r", {"ctr": {"rss": 40_000_000}})
    path = root / "ctr" / "testhost" / "sample.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    for k, record in enumerate(records):
        if record["type"] == "sample":
            record["kernel"] = {"tcp_inuse": 41, "tcp_alloc": 100, "tcp_mem_bytes": 4096 * k}
    records[3]["kernel"] = {"tcp_inuse": -1}
    write_jsonl(path, records)
    summary = build_summary(root)[0]
    ctr = summary["targets"]["ctr"]
    # Samples 4..7 are in the measured window; the peak is sample 7: 7 pages over 100 sockets.
    assert ctr["server"]["kernel"] == {
        "tcp_inuse_max": 41,
        "tcp_mem_bytes_max": 7 * 4096,
        "tcp_alloc_at_max": 100,
        "tcp_mem_bytes_per_socket": 287,
    }
    assert ctr["memory_per_connection"] == {
        "process_bytes": 2_000_000,
        "kernel_bytes": 287,
        "total_bytes": 2_000_287,
    }
    assert "sample.jsonl:4: sample record: kernel = {'tcp_inuse': -1}" in problems_text(summary)
    write_report(root, plots=False)
    assert "| 2000.0+0.3 |" in (root / "report.md").read_text()
    assert (
        next(csv.DictReader((root / "summary.csv").open()))["memory_per_connection_kernel_bytes"]
        == "287"
    )


# ---- comparison of runs -------------------------------------------------------------------


def real_run(
    root: Path,
    port: int,
    server: subprocess.Popen[bytes],
    connections: int,
    run_args: tuple[str, ...] = (),
) -> Path:
    """One run directory as site.yml lays it out: a real `wsswarm run`, a real sampler
    (`run_args`: instead of the short run of `connections`)."""
    target = root / "echo"
    sample = target / "testhost" / "sample.jsonl"
    sampler = subprocess.Popen(
        [*WSSWARM, "sample", "--pid", str(server.pid), "--interval", "0.5", "--out", str(sample)]
    )
    args = list(run_args) or [*SMALL_RUN, "--processes", "1", "--connections", str(connections)]
    run = subprocess.run(
        [*WSSWARM, "run", "--url", f"ws://127.0.0.1:{port}/", *args, "--out", str(target / "c1")],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    sampler.terminate()
    assert sampler.wait(timeout=10) == 0
    assert run.returncode == 0, run.stderr
    write_json(target / "status.json", {"target": "echo", "status": "ok", "reason": ""})
    write_json(
        root / "manifest.json",
        {
            "format_version": 1,
            "run_id": root.name,
            "created": f"{time.time()}",
            "kernel": "6.1.0",
            "parameters": {"connections": connections, "duration": 2},
            "targets": {"echo": {"kind": "baseline"}},
        },
    )
    return root


def test_compare_lists_the_differing_parameter_and_the_ratio(
    tmp_path: Path, wsecho: tuple[int, subprocess.Popen[bytes]]
) -> None:
    """Two real runs with 10 and 20 connections: compare.md names `parameters.connections` as
    the difference, gives both rates and their ratio, and draws the PNGs."""
    port, server = wsecho
    small = real_run(tmp_path / "results" / "small", port, server, 10)
    large = real_run(tmp_path / "results" / "large", port, server, 20)
    proc = subprocess.run(
        [*WSSWARM, "report", "--compare", str(small), str(large)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "results" / "compare-small-vs-large"
    assert proc.stdout == f"comparison: {out / 'compare.md'}\n"
    text = (out / "compare.md").read_text()
    differences = text.split("## What differs in the manifests")[1].split("## Per target")[0]
    assert "| `parameters.connections` | 10 | 20 |" in differences
    assert "`parameters.duration`" not in differences
    assert "`kernel`" not in differences
    assert "`created`" not in differences
    rates = [build_summary(r)[0]["targets"]["echo"]["roundtrips_per_s"] for r in (small, large)]
    row = next(line for line in text.splitlines() if line.startswith("| round-trips/s |"))
    assert row == (
        f"| round-trips/s | {rates[0]:,.0f} | {rates[1]:,.0f} | {rates[1] / rates[0]:.2f}x |"
    )
    assert "| open connections | 10 | 20 | 2.00x |" in text
    data = json.loads((out / "compare.json").read_text())
    assert data["manifest_differences"] == {"parameters.connections": ["10", "20"]}
    for name in ("compare-roundtrips.png", "compare-p99.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG")
        assert f"]({name})" in text


def test_compare_refuses_unknown_format_versions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run written in a format this wsswarm does not know is refused with the file named;
    nothing is written."""
    old = simple_run(tmp_path / "old", {"ctr": {}})
    new = simple_run(tmp_path / "new", {"ctr": {}})
    manifest = json.loads((new / "manifest.json").read_text())
    write_json(new / "manifest.json", {**manifest, "format_version": 7})
    out = tmp_path / "cmp"
    assert cli.main(["report", "--compare", str(old), str(new), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"{new / 'manifest.json'}: format_version 7, this wsswarm reads [1]" in err
    assert not out.exists()
    # A worker file of an unknown version makes the run unreadable too, not silently smaller.
    write_json(new / "manifest.json", manifest)
    worker = new / "ctr" / "client1" / "worker-0.jsonl"
    lines = worker.read_text().splitlines()
    lines[0] = lines[0].replace('"format_version": 1', '"format_version": 9')
    worker.write_text("\n".join(lines) + "\n")
    assert cli.main(["report", "--compare", str(old), str(new), "--out-dir", str(out)]) == 2
    assert "files in a format this wsswarm cannot read" in capsys.readouterr().err
    assert cli.main(["report", "--compare", str(old)]) == 2
    assert "--compare RUN_DIR RUN_DIR" in capsys.readouterr().err


def test_compare_warns_when_a_difference_is_within_the_noise(tmp_path: Path) -> None:
    """Rates 2% apart with a per-second CV of 38% are marked as noise; the same runs without
    noise are not."""
    runs = []
    for name, rate in (("a", 200), ("b", 204)):
        root = tmp_path / name
        workers = []
        for seed in (1, 2):
            ticks, _ = make_worker(seed, rate=rate)
            for k, t in enumerate(tk for tk in ticks if tk["phase"] == "measure"):
                count = rate // 2 if k % 2 == 0 else rate
                t.update(tick(t["t"], "measure", [5000] * count, open_=10, attempted=10))
            workers.append(ticks)
        write_host(root / "ctr" / "client1", workers, connections=20)
        runs.append(root)
    out = tmp_path / "cmp"
    assert (
        cli.main(["report", "--no-plots", "--compare", *map(str, runs), "--out-dir", str(out)]) == 0
    )
    text = (out / "compare.md").read_text()
    warning = next(line for line in text.splitlines() if "b vs a: round-trips/s differ" in line)
    assert "differ by +2." in warning
    assert "within the runs' own noise (per-second CV up to 38.5%)" in warning
    steady = [simple_run(tmp_path / n, {"ctr": {"rate": r}}) for n, r in (("c", 200), ("d", 204))]
    assert (
        cli.main(["report", "--no-plots", "--compare", *map(str, steady), "--out-dir", str(out)])
        == 0
    )
    assert "noise" not in (out / "compare.md").read_text().split("## Per target")[1]


def test_report_slo_gates_per_target_and_for_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Gates for all targets and for one: the table in report.md, slo[] per target, the lines,
    exit 3 after the report is written; bad gates exit 2 and write nothing."""
    root = simple_run(tmp_path / "r", {"vm": {"rate": 400}, "ctr": {"rate": 200}})
    args = ["report", "--no-plots", str(root), "--slo", "failed==0"]
    assert cli.main([*args, "--slo", "vm:roundtrips_per_s>=900"]) == 3
    out, err = capsys.readouterr()
    summary = json.loads((root / "summary.json").read_text())
    vm, ctr = summary["targets"]["vm"], summary["targets"]["ctr"]
    assert [(o["expr"], o["passed"]) for o in ctr["slo"]] == [("failed==0", True)]
    assert [(o["expr"], o["passed"]) for o in vm["slo"]] == [
        ("failed==0", True),
        ("roundtrips_per_s>=900", False),
    ]
    assert vm["roundtrips_per_s"] < 900  # two workers at 400/s
    assert f"vm: SLO roundtrips_per_s>=900: {vm['roundtrips_per_s']:g} -> FAIL" in out
    assert err.strip().endswith("SLO failed: vm: roundtrips_per_s>=900")
    report = (root / "report.md").read_text()
    assert "| vm | `roundtrips_per_s>=900` |" in report
    assert "**FAIL**" in report
    assert cli.main([*args, "--slo", "vm:roundtrips_per_s>=700"]) == 0
    capsys.readouterr()
    (root / "report.md").unlink()
    assert cli.main([*args, "--slo", "db:failed==0"]) == 2
    assert "--slo names targets not in this run: db (targets: ctr, vm)" in capsys.readouterr().err
    assert cli.main([*args, "--slo", "p99<soon"]) == 2
    assert not (root / "report.md").exists()


def test_connect_and_upgrade_latency_merge_exactly_across_hosts(tmp_path: Path) -> None:
    """connect_ms/upgrade_ms of the report are the percentiles of one histogram of all the
    ramp's connects of both hosts, whatever tick or host they were in."""
    rng = random.Random(7)
    every: dict[str, list[int]] = {"connect": [], "upgrade": []}
    for host in ("client1", "client2"):
        workers = []
        for seed in (1, 2):
            ticks, _ = make_worker(seed)
            for t in ticks[:2]:  # the ramp's ticks
                for phase in every:
                    values = [rng.randint(100, 50_000) for _ in range(5)]
                    every[phase] += values
                    hist = latency.new_histogram()
                    latency.record_bulk(hist, values)
                    t[f"{phase}_histogram"] = latency.encode(hist)
            workers.append(ticks)
        write_host(tmp_path / "ctr" / host, workers, connections=20)
    ctr = build_summary(tmp_path)[0]["targets"]["ctr"]
    for phase, values in every.items():
        truth = latency.new_histogram()
        latency.record_bulk(truth, values)
        expected = report_hist.summary_ms(truth, None)
        assert ctr[f"{phase}_ms"] == expected
        assert len(values) == 40
    summary, report = write_report(tmp_path)
    assert "connect-latency.png" in summary["plots"]
    assert (tmp_path / "connect-latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"| {report_hist_p99(ctr)} |" in report.read_text()


def report_hist_p99(result: dict[str, Any]) -> str:
    """The connect p99 cell as the report's table shows it."""
    p99 = result["connect_ms"]["p99"]
    return f"{p99:.1f}" if p99 >= 10 else f"{p99:.2f}"


def test_capacity_steps_merged_per_step_with_the_largest_count_within_p99(
    tmp_path: Path, wsecho: tuple[int, subprocess.Popen[bytes]]
) -> None:
    """A real `--steps 10,20,40` run with a real sampler: the report merges each step like a
    window (the run's own round trips per step, the server's CPU and memory in it), states the
    largest count within the run's --stop-when p99 limit or --p99-limit, and draws the
    capacity plot; the target's window figures are the last step's."""
    port, server = wsecho
    steps_run = (
        "--processes", "1", "--steps", "10,20,40", "--step-duration", "2", "--warmup", "0.5",
        "--connect-rate", "100", "--stop-when", "p99>60s",
    )  # fmt: skip
    root = real_run(tmp_path / "results" / "steps", port, server, 0, steps_run)
    summary, report = write_report(root)
    result = summary["targets"]["echo"]
    run = json.loads((root / "echo" / "c1" / "summary.json").read_text())
    steps = result["steps"]
    assert [s["step"] for s in steps] == [1, 2, 3]
    assert [s["connections_planned"] for s in steps] == [10, 20, 40]
    assert [s["connections"]["open"] for s in steps] == [10, 20, 40]
    assert [s["roundtrips"] for s in steps] == [s["roundtrips"] for s in run["steps"]]
    for step in steps:
        assert step["server"]["cpu_percent_mean"] > 0
        assert step["server"]["rss_bytes_max"] > 0
        # The window is the step's 2 s, cut to what the host and the sampler both cover: on a
        # loaded machine the sampler's last reading can fall a few tens of ms short of it.
        assert step["window"]["seconds"] == pytest.approx(2, abs=0.1)
    assert result["roundtrips"] == run["roundtrips"] == steps[-1]["roundtrips"]
    assert result["capacity"] == {"p99_limit_ms": 60000.0, "largest_open_within_limit": 40}
    text = report.read_text()
    assert "largest count with p99 within 60000 ms: **40** open connections" in text
    assert "](capacity.png)" in text
    assert (root / "capacity.png").read_bytes().startswith(b"\x89PNG")
    # A limit below the first step's p99: no count stayed within it.
    tight = build_summary(root, p99_limit_ms=0.001)[0]["targets"]["echo"]["capacity"]
    assert tight == {"p99_limit_ms": 0.001, "largest_open_within_limit": None}
    # A limit between two steps' p99: the count before the first step over it.
    p99s = [s["latency_ms"]["p99"] for s in steps]
    limit = p99s[0]
    within = build_summary(root, p99_limit_ms=limit)[0]["targets"]["echo"]["capacity"]
    expected = None
    for step, p99 in zip(steps, p99s, strict=True):
        if p99 > limit:
            break
        expected = step["connections"]["open"]
    assert expected is not None
    assert within["largest_open_within_limit"] == expected


def test_a_run_stopped_early_is_judged_against_its_last_steps_count(
    tmp_path: Path, wsecho: tuple[int, subprocess.Popen[bytes]]
) -> None:
    """`--stop-when` that holds at step 1 of 10,20,40: the target's planned connections are
    step 1's 10 (all open), not the last step's 40, so no "only 10 of 40 were open" warning."""
    port, server = wsecho
    stopped = (
        "--processes", "1", "--steps", "10,20,40", "--step-duration", "2", "--warmup", "0.5",
        "--connect-rate", "100", "--stop-when", "p99>0.001ms",
    )  # fmt: skip
    root = real_run(tmp_path / "results" / "stopped", port, server, 0, stopped)
    run = json.loads((root / "echo" / "c1" / "summary.json").read_text())
    assert run["message"] == "--stop-when p99>0.001ms at step 1"
    result = build_summary(root)[0]["targets"]["echo"]
    assert [s["step"] for s in result["steps"]] == [1]
    assert result["connections"]["planned"] == 10
    assert result["connections"]["open"] == 10
    assert not [w for w in result["warnings"] if "connections were open" in w], result["warnings"]
