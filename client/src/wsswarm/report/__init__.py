"""`wsswarm report RESULTS_DIR`: merge one run's files into summary.json/csv, report.md and plots.

RESULTS_DIR is one run, `results/<run-id>/` (layout in docs/formats.md). Every target is
merged from all worker files of all client hosts plus its sampler file; nothing is dropped
silently: unusable input is listed, with file and line, in the report and on stderr.
See client/docs/sample-and-report.md for what each figure means.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from wsswarm import __version__, slo
from wsswarm.formats import FORMAT_VERSION
from wsswarm.report.load import Problem, load_tree, looks_like_results_root
from wsswarm.report.merge import analyse_target
from wsswarm.report.render import console_table, csv_text, markdown
from wsswarm.report.series import TimeSeries
from wsswarm.report.side_by_side import REFERENCE_2017, compare

EXIT_OK = 0
EXIT_NO_DATA = 1
EXIT_USAGE = 2
EXIT_SLO = 3


class ReportError(Exception):
    """Nothing to report on; the message says what was expected."""

    def __init__(self, message: str, exit_code: int = EXIT_NO_DATA) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def build_summary(
    root: Path, p99_limit_ms: float | None = None
) -> tuple[dict[str, Any], dict[str, TimeSeries]]:
    """Read and merge one run directory: the content of summary.json, and the plot series.

    `p99_limit_ms`: the limit of the capacity figure of targets run with --steps."""
    if not root.is_dir():
        raise ReportError(f"{root} is not a directory", EXIT_USAGE)
    runs = looks_like_results_root(root)
    if runs and not (root / "manifest.json").exists():
        raise ReportError(
            f"{root} holds runs, not targets: pass one run directory, e.g. {runs[-1]}",
            EXIT_USAGE,
        )
    tree = load_tree(root)
    if not tree.targets:
        raise ReportError(
            f"no results in {root}: expected <target>/<host>/worker-*.jsonl, sample.jsonl or "
            "<target>/status.json (docs/formats.md)"
        )
    problems: list[Problem] = list(tree.problems)
    results: dict[str, dict[str, Any]] = {}
    series: dict[str, TimeSeries] = {}
    for target in tree.targets:
        results[target.name], series[target.name] = analyse_target(target, problems, p99_limit_ms)
    manifest = tree.manifest or {}
    summary = {
        "format_version": FORMAT_VERSION,
        "tool": f"wsswarm {__version__}",
        "run_id": manifest.get("run_id") or root.resolve().name,
        "generated": round(time.time(), 3),
        "manifest": _manifest_facts(manifest),
        "targets": results,
        "comparisons": compare(list(results.values())),
        "reference_2017": REFERENCE_2017,
        "warnings": [],
        "problems": [
            {"file": p.path, "line": p.line, "message": p.message, "where": _where(p)}
            for p in problems
        ],
    }
    return summary, series


def _manifest_facts(manifest: dict[str, Any]) -> dict[str, Any]:
    """What report.md shows of the manifest (site.yml writes `git.commit` and `created`)."""
    facts: dict[str, Any] = {
        key: manifest[key] for key in ("run_id", "profile", "parameters") if key in manifest
    }
    git = manifest.get("git")
    commit = manifest.get("commit") or (git.get("commit") if isinstance(git, dict) else None)
    if commit:
        facts["commit"] = commit
    started = manifest.get("started") or manifest.get("created")
    if started:
        facts["started"] = started
    parameters = manifest.get("parameters")
    hosts = manifest.get("hosts")
    if isinstance(parameters, dict) and isinstance(hosts, dict):
        testhost = hosts.get(parameters.get("testhost"))
        if isinstance(testhost, dict):
            facts["testhost"] = testhost
    return facts


def _where(problem: Problem) -> str:
    return problem.path if problem.line is None else f"{problem.path}:{problem.line}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def parse_gates(texts: list[str]) -> list[tuple[str | None, slo.Slo]]:
    """`[TARGET:]EXPR` of --slo: the gate for one target, or for every target without a name."""
    gates = []
    for text in texts:
        target, sep, expr = text.rpartition(":")
        try:
            gates.append((target if sep else None, slo.parse(expr)))
        except slo.SloError as exc:
            raise ReportError(str(exc), EXIT_USAGE) from None
    return gates


def check_gates(summary: dict[str, Any], gates: list[tuple[str | None, slo.Slo]]) -> None:
    """Each target's `slo` list: the gates for all targets, then its own; unknown names fail."""
    targets = summary["targets"]
    unknown = sorted({t for t, _ in gates if t is not None and t not in targets})
    if unknown:
        raise ReportError(
            f"--slo names targets not in this run: {', '.join(unknown)} (targets: "
            f"{', '.join(sorted(targets)) or 'none'})",
            EXIT_USAGE,
        )
    for name, result in targets.items():
        mine = [gate for target, gate in gates if target in (None, name)]
        result["slo"] = slo.check_all(mine, result)


def write_report(
    root: Path,
    out_dir: Path | None = None,
    plots: bool = True,
    gates: list[str] | None = None,
    p99_limit_ms: float | None = None,
) -> tuple[dict[str, Any], Path]:
    """Write summary.json, summary.csv, the PNGs and report.md; return the summary and its path."""
    parsed = parse_gates(gates or [])
    summary, series = build_summary(root, p99_limit_ms)
    check_gates(summary, parsed)
    out = out_dir or root
    out.mkdir(parents=True, exist_ok=True)
    written: list[tuple[str, str]] = []
    if plots:
        from wsswarm.report.plots import write_plots  # noqa: PLC0415 - matplotlib is heavy
        from wsswarm.report.steps import write_capacity_plot  # noqa: PLC0415 - matplotlib

        written = write_plots(out, series)
        written += write_capacity_plot(out, list(summary["targets"].values()))
    summary["plots"] = [name for _, name in written]
    _write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    _write_atomic(out / "summary.csv", csv_text(list(summary["targets"].values())))
    report = out / "report.md"
    _write_atomic(report, markdown(summary, written))
    return summary, report


def _limit_ms(text: str) -> float:
    """A p99 limit: a number of ms, or with a unit as in an SLO (500ms, 0.5s)."""
    try:
        return slo.parse(f"p99<{text}").threshold
    except slo.SloError:
        raise argparse.ArgumentTypeError(
            f"not a latency: {text!r} (e.g. 500, 500ms, 0.5s)"
        ) from None


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "results_dir",
        type=Path,
        nargs="?",
        metavar="RESULTS_DIR",
        help="one run: results/<run-id>/",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        metavar="RUN_DIR",
        help="compare two or more runs instead (compare.md, compare.json and PNGs; the first run "
        "is the base of the ratios; default --out-dir: compare-<run>-vs-<run> beside the first)",
    )
    parser.add_argument(
        "--out-dir", type=Path, default=None, help="write the report here (default: RESULTS_DIR)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--p99-limit",
        type=_limit_ms,
        default=None,
        metavar="MS",
        help="targets run with --steps: the largest count whose p99 stayed within MS (default: "
        "the run's --stop-when p99>X)",
    )
    parser.add_argument(
        "--slo",
        action="append",
        default=[],
        metavar="[TARGET:]EXPR",
        help="a gate on each target's merged result (or on TARGET's), repeatable: p99<100ms, "
        "failed==0, roundtrips_per_s>=20000; an SLO table in report.md, exit 3 when one fails",
    )


def main(args: argparse.Namespace) -> int:
    if args.compare is not None or args.results_dir is None:
        return _main_compare(args)
    try:
        summary, report = write_report(
            args.results_dir,
            args.out_dir,
            plots=not args.no_plots,
            gates=args.slo,
            p99_limit_ms=args.p99_limit,
        )
    except ReportError as exc:
        print(f"wsswarm report: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"wsswarm report: cannot write the report: {exc}", file=sys.stderr)
        return EXIT_NO_DATA
    for problem in summary["problems"]:
        print(f"wsswarm report: input: {problem['where']}: {problem['message']}", file=sys.stderr)
    results = list(summary["targets"].values())
    print(console_table(results), end="")
    for result in results:
        for warning in result["warnings"]:
            print(f"WARNING {result['target']}: {warning}")
    for pair in summary["comparisons"]:
        print(pair["sentence"])
    if summary["problems"]:
        count = len(summary["problems"])
        print(f"{count} problem{'s' if count > 1 else ''} in the input files: listed in the report")
    failed = []
    for result in results:
        for outcome in result["slo"]:
            print(f"{result['target']}: {slo.line(outcome)}")
            if not outcome["passed"]:
                failed.append(f"{result['target']}: {outcome['expr']}")
    print(f"report: {report}")
    if failed:
        print(f"wsswarm report: SLO failed: {'; '.join(failed)}", file=sys.stderr)
        return EXIT_SLO
    return EXIT_OK


def _main_compare(args: argparse.Namespace) -> int:
    from wsswarm.report.compare_runs import CompareError, write_compare  # noqa: PLC0415

    if args.results_dir is not None or not args.compare or len(args.compare) < 2:
        print(
            "wsswarm report: give either RESULTS_DIR or --compare RUN_DIR RUN_DIR [...]",
            file=sys.stderr,
        )
        return EXIT_USAGE
    first = args.compare[0].resolve()
    default = first.parent / ("compare-" + "-vs-".join(p.resolve().name for p in args.compare))
    try:
        report = write_compare(args.compare, args.out_dir or default, plots=not args.no_plots)
    except CompareError as exc:
        print(f"wsswarm report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"wsswarm report: cannot write the comparison: {exc}", file=sys.stderr)
        return EXIT_NO_DATA
    print(f"comparison: {report}")
    return EXIT_OK
