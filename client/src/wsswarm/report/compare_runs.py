"""`wsswarm report --compare RUN_DIR RUN_DIR [...]`: several runs side by side, in compare.md.

Each run is merged from its own files as `wsswarm report` does (so all runs are read by the
same code); the first run is the base of every ratio. What differs in the manifests comes
first, because a difference in the figures means little before one knows what else changed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsswarm.formats import KNOWN_VERSIONS
from wsswarm.report.load import MANIFEST_FILE
from wsswarm.report.merge import ROUNDTRIPS_CV_WARN
from wsswarm.report.render import md_table

# Manifest keys that differ in every run by construction: not worth listing.
SAME_BY_NATURE = {"run_id", "created", "started", "format_version"}
# Longer manifest values are cut in the table (the manifests themselves have them whole).
VALUE_WIDTH = 60
# (label, path in a target's merged figures, digits) of the compared figures.
FIGURES: list[tuple[str, tuple[str, ...], int]] = [
    ("round-trips/s", ("roundtrips_per_s",), 0),
    ("mean ms", ("latency_ms", "mean"), 2),
    ("p50 ms", ("latency_ms", "p50"), 2),
    ("p99 ms", ("latency_ms", "p99"), 2),
    ("p99.9 ms", ("latency_ms", "p999"), 2),
    ("open connections", ("connections", "open"), 0),
    ("failed connections", ("connections", "failed"), 0),
    ("server CPU %", ("server", "cpu_percent_mean"), 1),
    ("server memory MB", ("server", "rss_bytes_max"), -6),
    ("memory/connection KB", ("memory_per_connection", "total_bytes"), -3),
    ("rt/s CV", ("roundtrips_per_s_cv",), 3),
]


class CompareError(Exception):
    """A run cannot be compared; the message says which and why."""


@dataclass
class Run:
    name: str
    path: Path
    summary: dict[str, Any]
    manifest: dict[str, Any]


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CompareError(f"{path}: not readable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CompareError(f"{path}: not a JSON object")
    return data


def _check_version(path: Path, data: dict[str, Any]) -> None:
    version = data.get("format_version")
    if version is not None and version not in KNOWN_VERSIONS:
        raise CompareError(
            f"{path}: format_version {version!r}, this wsswarm reads {sorted(KNOWN_VERSIONS)}; "
            "compare it with the wsswarm version that wrote it"
        )


def load_run(path: Path) -> Run:
    """A run merged from its files, or its summary.json when the files are gone."""
    from wsswarm.report import ReportError, build_summary  # noqa: PLC0415 - the package imports us

    if not path.is_dir():
        raise CompareError(f"{path} is not a directory")
    manifest = _read_json(path / MANIFEST_FILE) or {}
    _check_version(path / MANIFEST_FILE, manifest)
    try:
        summary, _ = build_summary(path)
    except ReportError:
        stored = _read_json(path / "summary.json")
        if stored is None:
            raise CompareError(
                f"{path}: neither result files nor a summary.json (is it a run directory?)"
            ) from None
        _check_version(path / "summary.json", stored)
        summary = stored
    unreadable = [p for p in summary.get("problems") or [] if "format_version" in p["message"]]
    if unreadable:
        where = "; ".join(f"{p['where']}: {p['message']}" for p in unreadable[:3])
        raise CompareError(f"{path}: files in a format this wsswarm cannot read ({where})")
    return Run(str(summary.get("run_id") or path.name), path, summary, manifest)


def _flatten(value: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(value, dict):
        flat: dict[str, str] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: json.dumps(value, sort_keys=True)}


def manifest_differences(runs: list[Run]) -> list[tuple[str, list[str]]]:
    """(dotted key, value per run) of every manifest entry that is not the same in all runs."""
    flats = [
        _flatten({k: v for k, v in r.manifest.items() if k not in SAME_BY_NATURE}) for r in runs
    ]
    keys = sorted(set().union(*flats))
    rows = []
    for key in keys:
        values = [flat.get(key, "(absent)") for flat in flats]
        if len(set(values)) > 1:
            rows.append((key, values))
    return rows


def _figure(result: dict[str, Any] | None, path: tuple[str, ...]) -> float | None:
    value: Any = result
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    if digits < 0:
        return f"{value / 10**-digits:,.1f}"
    return f"{value:,.{digits}f}"


def _ratio(value: float | None, base: float | None) -> float | None:
    if value is None or base is None or base == 0:
        return None
    return value / base


def noise_warning(runs: list[Run], target: str) -> list[str]:
    """Round-trips/s differences no larger than the runs' own per-second variation."""
    base = runs[0].summary["targets"].get(target)
    warnings = []
    for run in runs[1:]:
        other = run.summary["targets"].get(target)
        ratio = _ratio(_figure(other, ("roundtrips_per_s",)), _figure(base, ("roundtrips_per_s",)))
        cvs = [_figure(r, ("roundtrips_per_s_cv",)) for r in (base, other)]
        if ratio is None or None in cvs:
            continue
        noise = max(c for c in cvs if c is not None)
        if abs(ratio - 1) <= noise:
            warnings.append(
                f"{run.name} vs {runs[0].name}: round-trips/s differ by {ratio - 1:+.1%}, within "
                f"the runs' own noise (per-second CV up to {noise:.1%}): not a difference"
            )
        elif noise > ROUNDTRIPS_CV_WARN:
            warnings.append(
                f"{run.name} vs {runs[0].name}: a run was not steady (per-second CV "
                f"{noise:.1%}); the ratio is uncertain by about that much"
            )
    return warnings


def target_rows(runs: list[Run], target: str) -> list[list[str]]:
    """One row per figure: the value in each run, then each run's ratio to the first."""
    results = [r.summary["targets"].get(target) for r in runs]
    rows = []
    for label, path, digits in FIGURES:
        values = [_figure(res, path) for res in results]
        ratios = [_ratio(v, values[0]) for v in values[1:]]
        rows.append(
            [label]
            + [_fmt(v, digits) for v in values]
            + ["-" if q is None else f"{q:.2f}x" for q in ratios]
        )
    return rows


def compare_data(runs: list[Run]) -> dict[str, Any]:
    """What compare.json holds: the runs, the manifest differences and per target the figures."""
    targets = sorted({t for r in runs for t in r.summary.get("targets") or {}})
    return {
        "runs": [{"name": r.name, "path": str(r.path)} for r in runs],
        "manifest_differences": dict(manifest_differences(runs)),
        "targets": {
            t: {
                "figures": {
                    label: [_figure(r.summary["targets"].get(t), path) for r in runs]
                    for label, path, _ in FIGURES
                },
                "warnings": noise_warning(runs, t),
            }
            for t in targets
        },
    }


def _cut(value: str) -> str:
    return value if len(value) <= VALUE_WIDTH else value[: VALUE_WIDTH - 1] + "…"


def markdown(runs: list[Run], data: dict[str, Any], plots: list[tuple[str, str]]) -> str:
    names = [r.name for r in runs]
    out = [f"# echolab comparison: {' vs '.join(names)}\n"]
    out.append(
        f"Ratios are each run's figure divided by the first run's ({names[0]}). "
        "A round-trips/s difference within the runs' own per-second variation (CV) is marked.\n"
    )
    out.append("## What differs in the manifests\n")
    diffs = data["manifest_differences"]
    if diffs:
        rows = [[f"`{key}`", *map(_cut, values)] for key, values in diffs.items()]
        out.append(md_table(["manifest key", *names], rows))
    else:
        out.append("Nothing: the manifests agree (apart from run id and time).\n")
    out.append("## Per target\n")
    for target, info in data["targets"].items():
        out.append(f"### {target}\n")
        missing = [r.name for r in runs if target not in r.summary["targets"]]
        if missing:
            out.append(f"Not in {', '.join(missing)}.\n")
        out.append(
            md_table(
                ["figure", *names, *(f"{n} / {names[0]}" for n in names[1:])],
                target_rows(runs, target),
            )
        )
        for warning in info["warnings"]:
            out.append(f"- **warning**: {warning}")
        if info["warnings"]:
            out.append("")
    if plots:
        out.append("## Plots\n")
        out += [f"![{title}]({name})\n" for title, name in plots]
    return "\n".join(out)


def write_plots(out_dir: Path, runs: list[Run], data: dict[str, Any]) -> list[tuple[str, str]]:
    """Grouped bars per target, one bar per run: round-trips/s and p99 latency."""
    import matplotlib  # noqa: PLC0415 - heavy, and only the controller has it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    targets = list(data["targets"])
    written = []
    for file_name, title, label in (
        ("compare-roundtrips.png", "Round-trips per second", "round-trips/s"),
        ("compare-p99.png", "p99 latency (ms)", "p99 ms"),
    ):
        fig, ax = plt.subplots(figsize=(max(6, 2 + 1.6 * len(targets)), 4.5), dpi=100)
        width = 0.8 / len(runs)
        for i, run in enumerate(runs):
            heights = [data["targets"][t]["figures"][label][i] or 0.0 for t in targets]
            xs = [k + (i - (len(runs) - 1) / 2) * width for k in range(len(targets))]
            ax.bar(xs, heights, width, label=run.name)
        ax.set_xticks(range(len(targets)), targets)
        ax.set_title(title)
        ax.legend(fontsize="small")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(out_dir / file_name)
        plt.close(fig)
        written.append((title, file_name))
    return written


def write_compare(paths: list[Path], out_dir: Path, plots: bool = True) -> Path:
    """Read every run, write compare.md, compare.json and the PNGs; return compare.md's path."""
    if len(paths) < 2:
        raise CompareError("--compare needs at least two run directories")
    runs = [load_run(p) for p in paths]
    names = [r.name for r in runs]
    if len(set(names)) < len(names):
        for run, path in zip(runs, paths, strict=True):
            run.name = str(path)  # two runs of one id (copies): tell them apart by path
    data = compare_data(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = write_plots(out_dir, runs, data) if plots else []
    (out_dir / "compare.json").write_text(json.dumps(data, indent=2) + "\n")
    report = out_dir / "compare.md"
    report.write_text(markdown(runs, data, written))
    return report
