"""Short forms of the soak and churn benches against a real wsecho, and their verdicts.

The short forms keep the benches' bounds (memory growth < 2%, fds back) over a smaller load:
they assert memory and descriptors, never a time or a rate. `-m "not soak"` leaves them out.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from churn import Batch, ChurnResult, Reading, churn
from churn import render as render_churn
from soak import Growth, SoakResult, soak
from soak import render as render_soak

BOUND = 2.0  # percent, the bound for both benches


@pytest.mark.soak
def test_soak_short_form_memory_stays_flat(tmp_path: Path) -> None:
    """500 connections in the 2017 closed loop for a minute: wsecho and every wsswarm worker
    grow by less than 2% between 15 s and the end."""
    result = soak(
        tmp_path, connections=500, minutes=1.0, from_minute=0.25, processes=2, connect_rate=500
    )
    print(render_soak(result, BOUND))
    assert result.open == 500, result.errors
    assert [g.process for g in result.growth] == ["wsecho", "wsswarm worker 0", "wsswarm worker 1"]
    assert all(g.percent < BOUND for g in result.growth), render_soak(result, BOUND)


@pytest.mark.soak
def test_churn_short_form_gives_back_fds_and_memory(tmp_path: Path) -> None:
    """5,000 connect / echo / close cycles after a 3,000-cycle warm-up: every cycle succeeds,
    and wsecho's fds and RSS are back within 2% once all are closed."""
    result = churn(tmp_path, cycles=5_000, warmup_cycles=3_000, concurrency=50, rate=500)
    print(render_churn(result, BOUND))
    assert not result.warmup.failed
    assert not result.measured.failed
    assert result.measured.cycles == 5_000
    assert result.after.connections == 0
    assert result.passed(BOUND), render_churn(result, BOUND)


def soak_result(percents: list[float], open_: int = 100) -> SoakResult:
    growth = [
        Growth(f"p{i}", i, 10_000_000, int(10_000_000 * (1 + p / 100)))
        for i, p in enumerate(percents)
    ]
    return SoakResult(100, open_, 100 - open_, 1.0, (15.0, 60.0), growth)


def test_soak_verdict_fails_on_any_process_growing_or_a_lost_connection() -> None:
    assert soak_result([0.0, 1.9, -3.0]).passed(BOUND)
    assert not soak_result([0.0, 2.1, 0.0]).passed(BOUND)
    assert not soak_result([0.0, 0.0], open_=99).passed(BOUND)
    assert not soak_result([]).passed(BOUND)


def churn_result(fds: tuple[int, int], rss: tuple[int, int], failed: int = 0) -> ChurnResult:
    batch = Batch(10, collections.Counter({"timeout": failed} if failed else {}), 1.0)
    return ChurnResult(Batch(10), batch, Reading(fds[0], rss[0], 0), Reading(fds[1], rss[1], 0))


def test_churn_verdict_fails_on_a_kept_fd_grown_memory_or_a_failed_cycle() -> None:
    assert churn_result((14, 14), (30_000_000, 30_500_000)).passed(BOUND)
    assert not churn_result((14, 15), (30_000_000, 30_000_000)).passed(BOUND)
    assert not churn_result((14, 14), (30_000_000, 30_700_000)).passed(BOUND)
    assert not churn_result((14, 14), (30_000_000, 30_000_000), failed=1).passed(BOUND)
