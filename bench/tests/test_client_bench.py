"""client_bench's rounds: ratios to the 2017 client paired within a round, medians; --rounds."""

from __future__ import annotations

import client_bench
import pytest
from _benchlib import LoadResult
from client_bench import REFERENCE, Row, render_summary, render_windows


def window(client: str, round_number: int, per_core: float, connections: int = 1000) -> Row:
    """A window whose client drove `per_core` round trips per second on one full core."""
    load = LoadResult(per_core, 1.0, 2.0, connections, connections, 0, 100.0, 110.0)
    return Row(client, connections, round_number, load, client_cpu=1.0, per_conn=2048.0)


def cells(table: str) -> dict[tuple[str, ...], dict[str, str]]:
    """The rows of a Markdown table by their first cells (client, conns[, round])."""
    lines = [line for line in table.splitlines() if line.startswith("|")]  # not the notes
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    width = 3 if "round" in header else 2
    return {tuple(r[:width]): dict(zip(header, r, strict=True)) for r in rows}


ROWS = [
    window(REFERENCE, 1, 50_000),
    window("wsswarm", 1, 110_000),
    window("wsswarm", 2, 90_000),
    window(REFERENCE, 2, 30_000),
    Row("wsswarm", 1000, 3, error="refused"),
    window(REFERENCE, 3, 40_000),
]


def test_windows_are_compared_with_the_2017_client_of_their_own_round() -> None:
    table = cells(render_windows(ROWS))
    assert table[("wsswarm", "1,000", "1")]["rt/core vs 2017"] == "2.20x"
    assert table[("wsswarm", "1,000", "2")]["rt/core vs 2017"] == "3.00x"
    assert table[("wsswarm", "1,000", "3")]["open"] == "error [1]"


def test_summary_pairs_within_rounds_and_takes_medians() -> None:
    table = cells(render_summary(ROWS))
    wsswarm = table[("wsswarm", "1,000")]
    assert wsswarm["windows"] == "2/3"
    assert wsswarm["rt/cli-core-s"] == "100,000 (90,000-110,000)"
    assert wsswarm["rt/core vs 2017"] == "2.60x (2.20-3.00)"
    assert wsswarm["KB/conn"] == "2.00 (2.00-2.00)"
    assert table[(REFERENCE, "1,000")]["rt/core vs 2017"] == "1.00x (1.00-1.00)"


@pytest.mark.parametrize("value", ["0", "-1"])
def test_rounds_below_one_are_refused(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        client_bench.parse_args(["--rounds", value])
    assert exc.value.code == 2
    assert f"--rounds must be at least 1, got {value}" in capsys.readouterr().err
