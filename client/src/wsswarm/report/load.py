"""Reading a results tree (docs/formats.md) without losing anything silently.

Every file is read record by record. Whatever cannot be used (not JSON, a truncated last line, a
record without its fields, an unknown format version, a histogram that does not decode) becomes
a `Problem` naming the file, the line and what is wrong; the rest of the file is used.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsswarm.formats import KNOWN_VERSIONS

WORKER_GLOB = "worker-*.jsonl"
SAMPLE_FILE = "sample.jsonl"
SUMMARY_FILE = "summary.json"
STATUS_FILE = "status.json"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class Problem:
    """Something in an input file that could not be used as it is."""

    path: str  # relative to the results directory
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


@dataclass
class Series:
    """One JSON-lines file: its start record, its data records, its end record."""

    path: str
    start: dict[str, Any] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    end: dict[str, Any] | None = None


@dataclass
class HostDir:
    """`<target>/<host>/`: one `wsswarm run --out` directory and/or a sampler file."""

    name: str
    workers: list[Series] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    sampler: Series | None = None


@dataclass
class TargetDir:
    name: str
    hosts: list[HostDir] = field(default_factory=list)
    status: dict[str, Any] | None = None
    manifest: dict[str, Any] = field(default_factory=dict)  # manifest.json targets.<name>


@dataclass
class ResultsTree:
    root: Path
    manifest: dict[str, Any] | None
    targets: list[TargetDir]
    problems: list[Problem]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# Required fields of each record type, with their check and what the check means.
_TICK_FIELDS = {
    "t": (_number, "a number"),
    "phase": (lambda v: v in ("ramp", "warmup", "measure", "drain"), "ramp|warmup|measure|drain"),
    "roundtrips": (_count, "a count"),
    "interval_s": (lambda v: _number(v) and v > 0, "a positive number"),
}
_TICK_OPTIONAL = {
    "open": (_count, "a count"),
    "attempted": (_count, "a count"),
    "failed": (_count, "a count"),
    "dropped": (_count, "a count"),
    "cpu_percent": (_number, "a number"),
    "rss_bytes": (_count, "a count"),
    "errors": (
        lambda v: isinstance(v, dict) and all(_count(c) for c in v.values()),
        "an object of counts",
    ),
    "latency_ms": (lambda v: v is None or isinstance(v, dict), "an object or null"),
    "histogram": (lambda v: isinstance(v, str), "a string"),
    "connect_histogram": (lambda v: isinstance(v, str), "a string"),
    "upgrade_histogram": (lambda v: isinstance(v, str), "a string"),
}
_SAMPLE_FIELDS = {
    "t": (_number, "a number"),
    "cpu_percent": (_number, "a number"),
    "rss_bytes": (_count, "a count"),
}
_SAMPLE_OPTIONAL = {
    "interval_s": (lambda v: _number(v) and v > 0, "a positive number"),
    "components": (lambda v: isinstance(v, dict), "an object"),
    "kernel": (
        lambda v: (
            isinstance(v, dict)
            and all(_count(v.get(k)) for k in ("tcp_inuse", "tcp_alloc", "tcp_mem_bytes"))
        ),
        "an object with the counts tcp_inuse, tcp_alloc, tcp_mem_bytes",
    ),
}


def _check_fields(
    record: dict[str, Any], required: dict[str, Any], optional: dict[str, Any]
) -> str | None:
    for key, (check, meaning) in required.items():
        if key not in record:
            return f"{record['type']} record without {key!r}"
        if not check(record[key]):
            return f"{record['type']} record: {key} = {record[key]!r} is not {meaning}"
    for key, (check, meaning) in optional.items():
        if key in record and not check(record[key]):
            return f"{record['type']} record: {key} = {record[key]!r} is not {meaning}"
    return None


def read_jsonl(path: Path, rel: str, data_type: str, problems: list[Problem]) -> Series:
    """Read a worker or sampler file: start, `data_type` records, end; problems noted."""
    series = Series(rel)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        problems.append(Problem(rel, None, f"cannot read: {exc.strerror}"))
        return series
    if not raw.strip():
        problems.append(Problem(rel, None, "empty file (the process wrote nothing)"))
        return series
    lines = raw.split(b"\n")
    complete = raw.endswith(b"\n")
    required, optional = (
        (_TICK_FIELDS, _TICK_OPTIONAL)
        if data_type == "tick"
        else (_SAMPLE_FIELDS, _SAMPLE_OPTIONAL)
    )
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        last = number == len(lines) or (number == len(lines) - 1 and complete)
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            problems.append(Problem(rel, number, "not UTF-8 text; line skipped"))
            continue
        except json.JSONDecodeError as exc:
            if last and not complete:
                problems.append(
                    Problem(rel, number, "truncated last line (the writer stopped mid-line)")
                )
            else:
                problems.append(Problem(rel, number, f"not JSON ({exc.msg}); line skipped"))
            continue
        if not isinstance(record, dict) or not isinstance(record.get("type"), str):
            problems.append(Problem(rel, number, "not a record with a 'type'; line skipped"))
            continue
        kind = record["type"]
        if kind == "start":
            version = record.get("format_version")
            if version not in KNOWN_VERSIONS:
                problems.append(
                    Problem(
                        rel,
                        number,
                        f"format_version {version!r} is not one this report knows "
                        f"({sorted(KNOWN_VERSIONS)}); file skipped",
                    )
                )
                return Series(rel)
            if series.start is not None or series.records:
                problems.append(Problem(rel, number, "a second start record; ignored"))
                continue
            series.start = record
        elif kind == data_type:
            message = _check_fields(record, required, optional)
            if message:
                problems.append(Problem(rel, number, f"{message}; record skipped"))
                continue
            if series.end is not None:
                problems.append(Problem(rel, number, f"{kind} record after the end record; used"))
            record["_line"] = number
            series.records.append(record)
        elif kind == "end":
            series.end = record
        else:
            problems.append(Problem(rel, number, f"unknown record type {kind!r}; skipped"))
    if series.start is None:
        problems.append(Problem(rel, 1, "no start record (file cut at its beginning?)"))
    return series


def read_json(path: Path, rel: str, problems: list[Problem]) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        problems.append(Problem(rel, None, f"cannot read: {exc.strerror}"))
        return None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        problems.append(Problem(rel, line, f"not valid JSON ({exc}); file not used"))
        return None
    if not isinstance(data, dict):
        problems.append(Problem(rel, None, "not a JSON object; file not used"))
        return None
    version = data.get("format_version")
    if version is not None and version not in KNOWN_VERSIONS:
        problems.append(Problem(rel, None, f"format_version {version!r} unknown; file not used"))
        return None
    return data


def _is_host_dir(path: Path) -> bool:
    return any((path / name).exists() for name in (SUMMARY_FILE, SAMPLE_FILE)) or any(
        path.glob(WORKER_GLOB)
    )


def looks_like_results_root(root: Path) -> list[Path]:
    """Run directories below `root` when `root` is `results/` rather than one run."""
    return sorted(p for p in root.iterdir() if p.is_dir() and (p / MANIFEST_FILE).exists())


def load_tree(root: Path) -> ResultsTree:
    """Read everything below one run directory `results/<run-id>/`."""
    problems: list[Problem] = []
    manifest = None
    if (root / MANIFEST_FILE).exists():
        manifest = read_json(root / MANIFEST_FILE, MANIFEST_FILE, problems)
    else:
        problems.append(
            Problem(MANIFEST_FILE, None, "missing: no parameters, accelerator or versions known")
        )
    manifest_targets: dict[str, Any] = {}
    if manifest is not None:
        value = manifest.get("targets", {})
        if isinstance(value, dict):
            manifest_targets = value
        else:
            problems.append(Problem(MANIFEST_FILE, None, "'targets' is not an object; ignored"))
    targets = []
    for tdir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        target = TargetDir(tdir.name)
        info = manifest_targets.get(tdir.name)
        target.manifest = info if isinstance(info, dict) else {}
        if (tdir / STATUS_FILE).exists():
            target.status = read_json(tdir / STATUS_FILE, f"{tdir.name}/{STATUS_FILE}", problems)
        for hdir in sorted(p for p in tdir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            rel = f"{tdir.name}/{hdir.name}"
            if not _is_host_dir(hdir):
                problems.append(Problem(rel, None, "directory without any metrics file; ignored"))
                continue
            host = HostDir(hdir.name)
            for wfile in sorted(hdir.glob(WORKER_GLOB), key=_worker_sort_key):
                host.workers.append(read_jsonl(wfile, f"{rel}/{wfile.name}", "tick", problems))
            if (hdir / SUMMARY_FILE).exists():
                host.summary = read_json(hdir / SUMMARY_FILE, f"{rel}/{SUMMARY_FILE}", problems)
            elif host.workers:
                problems.append(
                    Problem(
                        f"{rel}/{SUMMARY_FILE}",
                        None,
                        "missing (the run did not finish?); figures taken from the worker files",
                    )
                )
            if (hdir / SAMPLE_FILE).exists():
                host.sampler = read_jsonl(
                    hdir / SAMPLE_FILE, f"{rel}/{SAMPLE_FILE}", "sample", problems
                )
            target.hosts.append(host)
        if not target.hosts and target.status is None:
            problems.append(Problem(tdir.name, None, "no host directories and no status.json"))
        if target.status is None and target.hosts:
            problems.append(
                Problem(f"{tdir.name}/{STATUS_FILE}", None, "missing: target status unknown")
            )
        targets.append(target)
    for name in sorted(set(manifest_targets) - {t.name for t in targets}):
        # Listed in the manifest but never run (or its files never fetched): a target of its own.
        target = TargetDir(
            name,
            manifest=manifest_targets[name] if isinstance(manifest_targets[name], dict) else {},
        )
        problems.append(Problem(name, None, "in manifest.json but no results directory"))
        targets.append(target)
    return ResultsTree(root, manifest, targets, problems)


def _worker_sort_key(path: Path) -> tuple[int, str]:
    index = path.stem.removeprefix("worker-")
    return (int(index), "") if index.isdigit() else (1 << 30, index)
