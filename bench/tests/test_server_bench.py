"""server_bench's method: interleaved rounds, ratios paired within a round, medians; its options.

No load runs here: the rows are built by hand (round trips per server-core-second = rt/s at one
full core), and `run_matrix` is driven with a stand-in for the measurement.
"""

from __future__ import annotations

import datetime
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import pytest
import server_bench
from _benchlib import (
    LoadResult,
    Matrix,
    median_range,
    paired_ratios,
    round_order,
    run_matrix,
    schedule,
    window_notes,
)
from server_bench import CEILING, NODE, Row, render_summary, summarize

WSECHO = "wsecho-picows-compiled"
SERVERS = [CEILING, NODE, WSECHO, "wsecho-websockets"]


def window(server: str, round_number: int, per_core: float, client: str = "wsswarm") -> Row:
    """A measured window whose server ran `per_core` round trips per second on one full core."""
    load = LoadResult(per_core, 1.0, 2.0, 1000, 1000, 0, 100.0, 105.0)
    return Row(server, client, 1000, round_number, load=load, server_cpu=1.0, server_rss=10**7)


def test_round_order_reverses_every_other_round() -> None:
    assert [round_order("ABCD", r) for r in (1, 2, 3)] == [
        list("ABCD"),
        list("DCBA"),
        list("ABCD"),
    ]


def test_schedule_measures_every_name_once_per_round_within_its_cell() -> None:
    cells = [["w:c", "w:n"], ["x:c", "x:n"]]
    assert schedule(cells, [1000, 10000], 2) == [
        (1000, 1, "w:c"),
        (1000, 1, "w:n"),
        (1000, 2, "w:n"),
        (1000, 2, "w:c"),
        (1000, 1, "x:c"),
        (1000, 1, "x:n"),
        (1000, 2, "x:n"),
        (1000, 2, "x:c"),
        (10000, 1, "w:c"),
        (10000, 1, "w:n"),
        (10000, 2, "w:n"),
        (10000, 2, "w:c"),
        (10000, 1, "x:c"),
        (10000, 1, "x:n"),
        (10000, 2, "x:n"),
        (10000, 2, "x:c"),
    ]


def drifting_rows(order: list[tuple[int, int, str]], drift: float) -> list[Row]:
    """Windows measured in `order` on a machine whose speed grows by `drift` per window; wsecho's
    true cost is 0.9x the ceiling's figure, node.js ws's 0.5x."""
    base = {CEILING: 100_000.0, NODE: 50_000.0, WSECHO: 90_000.0, "wsecho-websockets": 25_000.0}
    return [window(name, r, base[name] * (1 + drift * i)) for i, (_, r, name) in enumerate(order)]


def test_alternating_order_cancels_a_linear_drift_that_the_same_order_keeps() -> None:
    interleaved = drifting_rows(schedule([SERVERS], [1000], 2), drift=0.01)
    same_order = drifting_rows([(1000, r, name) for r in (1, 2) for name in SERVERS], drift=0.01)
    (wsecho,) = [s for s in summarize(interleaved) if s.server == WSECHO]
    (biased,) = [s for s in summarize(same_order) if s.server == WSECHO]
    assert statistics.median(wsecho.vs_ceiling) == pytest.approx(0.9, rel=0.002)
    # Always measured after the ceiling on a machine that speeds up: flattered.
    assert statistics.median(biased.vs_ceiling) > 0.9 * 1.015


def test_ratios_pair_windows_of_the_same_round_only() -> None:
    rows = [
        window(CEILING, 1, 100_000),
        window(NODE, 1, 60_000),
        window(WSECHO, 1, 95_000),
        Row(CEILING, "wsswarm", 1000, 2, error="ceiling died"),
        window(NODE, 2, 40_000),
        window(WSECHO, 2, 50_000),
        window(CEILING, 3, 200_000),
        window(NODE, 3, 100_000),
        window(WSECHO, 3, 180_000),
    ]
    by_server = {s.server: s for s in summarize(rows)}
    wsecho = by_server[WSECHO]
    assert (wsecho.windows, wsecho.rounds) == (3, 3)
    assert wsecho.per_core == [95_000, 50_000, 180_000]
    assert wsecho.vs_ceiling == pytest.approx([0.95, 0.9])  # round 2 has no ceiling
    assert wsecho.vs_node == pytest.approx([95 / 60, 1.25, 1.8])
    assert wsecho.ceiling_vs_node == pytest.approx([100 / 60, 2.0])
    assert (by_server[CEILING].windows, by_server[CEILING].rounds) == (2, 3)


def test_summary_table_gives_medians_ranges_and_the_ceilings_ratio_to_node_in_each_row() -> None:
    rows = [
        window(server, r, figure, client)
        for client, scale in (("wsswarm", 1.0), ("node-2017", 0.5))
        for r, (c, n, w) in enumerate([(100, 50, 90), (120, 80, 110), (110, 55, 100)], start=1)
        for server, figure in ((CEILING, c * 1000 * scale), (NODE, n * 1000), (WSECHO, w * 1000))
    ]
    lines = render_summary(summarize(rows)).splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    rows_of = {(c[0], c[2]): dict(zip(header, c, strict=True)) for c in cells}
    wsecho = rows_of[("wsswarm", WSECHO)]
    assert wsecho["windows"] == "3/3"
    assert wsecho["rt/srv-core-s"] == "100,000 (90,000-110,000)"
    assert wsecho["vs ceiling"] == "0.91x (0.90-0.92)"
    assert wsecho["vs node"] == "1.80x (1.38-1.82)"
    # The ceiling's own ratio to node.js ws, the same on every row of its cell.
    assert {rows_of[("wsswarm", s)]["ceiling vs node"] for s in (CEILING, NODE, WSECHO)} == {
        "2.00x (1.50-2.00)"
    }
    assert rows_of[("node-2017", WSECHO)]["ceiling vs node"] == "1.00x (0.75-1.00)"


def test_paired_ratios_skip_a_round_missing_on_either_side() -> None:
    values = {1: 90.0, 2: None, 3: 0.0, 4: 80.0, 5: 70.0}
    references = {1: 100.0, 2: 100.0, 3: 100.0, 4: None}
    assert paired_ratios(values, references) == [0.9]


def test_median_range() -> None:
    assert median_range([]) == "-"
    assert median_range([1.234]) == "1.23x"
    assert median_range([1.1, 0.9]) == "1.00x (0.90-1.10)"
    assert median_range([3.0, 1.0, 2.5]) == "2.50x (1.00-3.00)"
    assert median_range([120_000.0, 100_000.0], "{:,.0f}", "") == "110,000 (100,000-120,000)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rounds", "0"], "--rounds must be at least 1, got 0"),
        (["--rounds", "-2"], "--rounds must be at least 1, got -2"),
        (["--rounds", "two"], "argument --rounds: invalid int value: 'two'"),
        (["--servers", "ceiling,node-ws,ceiling"], "--servers: ceiling given more than once"),
        (["--servers", "ceiling,nginx"], "--servers: unknown ['nginx']"),
        (["--duration", "0"], "--duration, --connect-rate and --node-connect-rate must be"),
        (["--node-connect-rate", "-1"], "--node-connect-rate must be positive"),
        (["--connections", "1000,x"], "--connections: expected comma-separated integers"),
    ],
)
def test_bad_options_are_refused_with_a_clear_message(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        server_bench.parse_args(["--clients", "node-2017", "--connections", "100", *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_defaults_are_the_issues_servers_in_two_rounds() -> None:
    args = server_bench.parse_args(["--clients", "node-2017", "--connections", "100"])
    assert args.servers == [CEILING, NODE, WSECHO, "wsecho-websockets"]
    assert (args.rounds, args.duration, args.warmup) == (2, 5.0, 1.0)
    assert (args.connect_rate, args.node_connect_rate) == (1000.0, 4000.0)


@dataclass
class Done:
    name: str
    round: int
    error: str | None = None


def test_run_matrix_measures_in_schedule_order_each_round_in_its_own_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str, int, int, Path]] = []

    def measure(name: str, connections: int, round_number: int, work: Path) -> Done:
        calls.append((name, connections, round_number, work))
        return Done(name, round_number, "refused" if (name, round_number) == ("b", 2) else None)

    matrix = Matrix(
        script="bench/x.py",
        cells=[["a", "b"]],
        connections=[100],
        rounds=3,
        measure=measure,
        status=lambda row: f"{row.name} ok",
        render=lambda rows: f"{len(rows)} rows",
        as_json=lambda row: {"name": row.name, "round": row.round, "error": row.error},
    )
    out = tmp_path / "rows.json"
    started = datetime.datetime.now(datetime.timezone.utc)
    code = run_matrix(matrix, [], started, keep=False, json_path=out)
    assert code == 1  # one window failed
    assert [(c, r, n) for n, c, r, _ in calls] == schedule([["a", "b"]], [100], 3)
    assert {w.name for *_, w in calls} == {"round-1", "round-2", "round-3"}
    assert len({w.parent for *_, w in calls}) == 1
    assert json.loads(out.read_text())[2] == {"name": "b", "round": 2, "error": "refused"}
    printed = capsys.readouterr().out
    assert "  b at 100, round 2/3: refused" in printed
    assert "6 rows" in printed


def test_window_notes_name_an_unfinished_ramp_and_a_short_report_span() -> None:
    load = LoadResult(1.0, 1.0, 1.0, 10, 9, 0, 100.0, 105.0)
    load.raw = {"ramp_incomplete": True, "measured_span_s": 3.9}
    assert window_notes(load, "node-2017 against x", 4) == [
        "[4] node-2017 against x: its ramp had not ended after --max-ramp; measured with the "
        "connections it had",
        "[5] node-2017 against x: the client's reports covered only 3.9 s of the 5.0 s window "
        "(its event loop stalled); the rate is over that span",
    ]
    load.raw = {"measured_span_s": 4.0}
    assert window_notes(load, "w", 1) == []
