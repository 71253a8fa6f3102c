"""Pure functions behind `wsswarm run`: histogram folding, 2017 number format, limits, CPU rule."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from hdrh.histogram import HdrHistogram
from wsswarm import cli, errors, latency, limits, worker
from wsswarm.console import Console
from wsswarm.formats import FORMAT_VERSION, RunSummary, sustained_cpu
from wsswarm.run import cli as run_cli
from wsswarm.run.exits import UsageError
from wsswarm.run.plan import planned_ramp_s, planned_window, split, window_missed
from wsswarm.run.target import parse_url


def test_record_bulk_equals_record_value_one_by_one() -> None:
    """The bulk fold gives byte-identical encodings to hdrh's own record_value."""
    rng = random.Random(7)
    values = [rng.choice([0, 1, 2047, 2048, 3_600_000_001]) for _ in range(50)]
    values += [int(rng.lognormvariate(8, 2)) for _ in range(5000)]
    reference = HdrHistogram(1, 3_600_000_000, 3)
    for value in values:
        reference.record_value(min(max(value, 1), 3_600_000_000))
    bulk = latency.new_histogram()
    latency.record_bulk(bulk, values)
    assert bulk.get_total_count() == reference.get_total_count() == len(values)
    assert bulk.get_min_value() == reference.get_min_value()
    assert bulk.get_max_value() == reference.get_max_value()
    for percentile in (50, 90, 99, 99.9, 100):
        assert bulk.get_value_at_percentile(percentile) == reference.get_value_at_percentile(
            percentile
        )
    assert latency.decode(latency.encode(bulk)).get_total_count() == len(values)


def test_a_cleared_histogram_is_as_good_as_a_new_one() -> None:
    """A worker reuses one histogram per tick: after clear() it encodes like a fresh one."""
    rng = random.Random(3)
    reused = latency.new_histogram()
    touched = latency.record_bulk(reused, [rng.randint(1, 10**7) for _ in range(3000)])
    latency.clear(reused, touched)
    assert latency.encode(reused) == latency.encode(latency.new_histogram())
    second = [rng.randint(1, 10**5) for _ in range(500)]
    fresh = latency.new_histogram()
    latency.record_bulk(fresh, second)
    latency.record_bulk(reused, second)
    assert latency.encode(reused) == latency.encode(fresh)
    assert latency.summarize_ms(reused) == latency.summarize_ms(fresh)


def test_folds_during_a_tick_add_up_to_one_fold_of_the_tick() -> None:
    """Raw latencies folded every 0.1 s give the tick record one fold of them all would give."""
    rng = random.Random(5)
    ticks = [[rng.randint(1, 10**6) for _ in range(700)] for _ in range(2)]

    async def records(ticks: list[list[int]], folds: int) -> list[dict[str, Any]]:
        w = worker.Worker(_worker_config(), None)
        result = []
        for values in ticks:
            for part in range(folds):
                for value in values[part::folds]:
                    w.lat_append(value)
                w.fold()
            result.append(w.make_tick("measure"))
        os.close(w.statm_fd)
        return result

    for values, folded in zip(ticks, asyncio.run(records(ticks, 3)), strict=True):
        (whole,) = asyncio.run(records([values], 1))
        assert folded["roundtrips"] == whole["roundtrips"] == len(values)
        assert folded["latency_ms"] == whole["latency_ms"]
        assert folded["latency_ms"]["mean"] == round(sum(values) / len(values) / 1000, 4)
        # The second tick holds only its own values: the folds of the first were cleared.
        assert folded["histogram"] == whole["histogram"]


def _worker_config() -> worker.WorkerConfig:
    return worker.WorkerConfig(
        index=0, url="ws://127.0.0.1:9/", address=("127.0.0.1", 9), family=socket.AF_INET,
        connections=1, connect_rate=1.0, offset_s=0.0, t0=time.time(), tick_s=1.0,
        mode="closed", rate=0.0, compat=False, connect_timeout=1.0, reconnect=False,
        out_dir=None, label="", host="",
    )  # fmt: skip


def test_summarize_ms_of_an_empty_histogram_is_none() -> None:
    """No round trip: null latency, as formats.md says."""
    assert latency.summarize_ms(latency.new_histogram()) is None


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (float("nan"), "NaN"),
        (12.0, "12"),
        (0.0, "0"),
        (12.5, "12.5"),
        (1 / 3, "0.3333333333333333"),
    ],
)
def test_js_number_formats_like_javascript(value: float, text: str) -> None:
    """`${x}` in JavaScript: NaN, integers without .0, shortest round-trip decimals."""
    assert latency.js_number(value) == text


def test_compat_line_is_the_2017_template() -> None:
    """`Roundtrips per second: N, at average latency: Xms` with JS formatting, nothing else."""
    stream = io.StringIO()
    console = Console("lines", compat=True, connections=10, stream=stream)
    console.compat_line(31234, 283.5)
    console.compat_line(0, float("nan"))
    assert stream.getvalue().splitlines() == [
        "Roundtrips per second: 31234, at average latency: 283.5ms",
        "Roundtrips per second: 0, at average latency: NaNms",
    ]


def test_client_bound_rule_needs_most_of_the_window() -> None:
    """Sustained CPU = the level held in at least 80% of the measured ticks."""
    assert sustained_cpu([]) == 0.0
    assert sustained_cpu([95, 96, 97, 98, 20]) == 95  # one slow tick: still bound
    assert sustained_cpu([95, 96, 20, 30, 97]) == 30  # 60% of the time: not bound
    assert sustained_cpu([99.0] * 10) == 99.0


def test_client_bound_is_said_in_plain_words() -> None:
    """The console names the busy worker and what to do."""
    stream = io.StringIO()
    summary: RunSummary = {
        "format_version": FORMAT_VERSION,
        "tool": "wsswarm",
        "status": "completed",
        "message": "",
        "host": "client1",
        "label": "",
        "url": "ws://127.0.0.1:8080/",
        "params": {},
        "started": 1000.0,
        "measure_started": 1001.0,
        "measure_ended": 1003.0,
        "roundtrips": 10,
        "roundtrips_per_s": 5.0,
        "latency_ms": None,
        "connections": {"attempted": 10, "open": 10, "failed": 0, "dropped": 0},
        "errors": {},
        "client_bound": True,
        "client_cpu_percent": {"0": 97.0, "1": 40.0},
        "ramp": {
            "requested_rate": 100.0,
            "achieved_rate": 100.0,
            "first_attempt": 1000.0,
            "last_attempt": 1000.1,
            "completed": 1000.1,
            "completed_before_window": True,
            "window": "planned",
        },
        "roundtrips_total": 10,
        "messages_sent": 10,
        "histogram": "",
    }
    Console("lines", compat=False, connections=10, stream=stream).final(summary)
    text = stream.getvalue()
    assert "client was the bottleneck" in text
    assert "worker 0 at 97%" in text
    assert "worker 1" not in text


def test_port_range_check_says_what_to_change(tmp_path: Path) -> None:
    """More connections than local ports: the message names the sysctl."""
    path = tmp_path / "range"
    path.write_text("32768\t60999\n")
    assert limits.check_port_range(28_232, path=path) == []
    problems = limits.check_port_range(30_000, path=path)
    assert len(problems) == 1
    assert "net.ipv4.ip_local_port_range" in problems[0]
    assert limits.check_port_range(30_000, path=tmp_path / "missing") == []


def test_connections_are_split_evenly() -> None:
    """10,000 over 3 processes: 3334, 3333, 3333."""
    assert split(10_000, 3) == [3334, 3333, 3333]
    assert sum(split(7, 5)) == 7


@pytest.mark.parametrize(
    ("url", "expected"),
    [("ws://10.0.0.42/", ("10.0.0.42", 80)), ("ws://localhost:8080/x", ("localhost", 8080))],
)
def test_parse_url(url: str, expected: tuple[str, int]) -> None:
    """Host and port, port 80 by default."""
    assert parse_url(url) == expected


def test_parse_url_rejects_a_bad_port() -> None:
    """A port that is not a number is a usage error."""
    with pytest.raises(UsageError, match="invalid port"):
        parse_url("ws://host:http/")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (ConnectionRefusedError(), "refused"),
        (TimeoutError(), "timeout"),
        (ConnectionResetError(), "reset"),
        (OSError(99, "Cannot assign requested address"), "addr_not_available"),
        (OSError(24, "Too many open files"), "too_many_open_files"),
        (OSError(113, "No route to host"), "unreachable"),
        (ValueError("?"), "other"),
    ],
)
def test_errors_are_classified(exc: BaseException, kind: str) -> None:
    """Each OS error lands under its documented kind."""
    assert errors.classify(exc) == kind


def test_cli_imports_only_the_chosen_subcommand() -> None:
    """`wsswarm run --help` works even if another subcommand's module is broken or heavy."""
    parser = cli.build_parser(["run", "--url", "ws://127.0.0.1:1/"])
    args = parser.parse_args(["run", "--url", "ws://127.0.0.1:1/"])
    assert args.processes == 5
    assert args.connections == 10_000
    assert args.connect_rate == 75.0


@pytest.mark.parametrize(("late_s", "refused"), [(0.5, False), (-30.0, False), (1.5, True)])
def test_start_at_more_than_a_second_past_is_refused(late_s: float, refused: bool) -> None:
    """A --start-at up to a second old is a start now; an older one is a usage error (exit 2)."""
    start_at = str(time.time() - late_s)
    argv = ["run", "--url", "ws://127.0.0.1:1/", "--start-at", start_at]
    args = cli.build_parser(argv).parse_args(argv)
    if refused:
        with pytest.raises(UsageError, match=r"--start-at .* is in the past"):
            run_cli.validate(args)
    else:
        run_cli.validate(args)


def _tick(phase: str, open_now: int) -> dict[str, object]:
    return {
        "phase": phase,
        "open": open_now,
        "failed": 1,
        "roundtrips": 50,
        "interval_s": 1.0,
        "cpu_percent": 12.0,
        "errors": {"refused": 1},
        "latency_ms": {"mean": 2.0, "p99": 5.0},
    }


def test_ramp_shows_a_live_bar_on_a_terminal_and_lines_elsewhere() -> None:
    """Bar mode redraws one line during the ramp; lines mode prints a plain line per second."""
    bar = io.StringIO()
    console = Console("bar", compat=False, connections=100, stream=bar)
    console.tick(1, [_tick("ramp", 25), _tick("ramp", 25)], 100)
    console.tick(2, [_tick("measure", 50), _tick("measure", 50)], 100)
    text = bar.getvalue()
    assert text.startswith("\rramp [" + "#" * 15 + "." * 15 + "] 50/100 open, 2 failed")
    assert "refused 2" in text
    assert text.splitlines()[-1].startswith("   2s measure open 100/100  100 round-trips/s")
    plain = io.StringIO()
    Console("lines", compat=False, connections=100, stream=plain).tick(1, [_tick("ramp", 25)], 100)
    assert "\r" not in plain.getvalue()
    assert plain.getvalue().startswith("   1s ramp    open 25/100")


def _window_args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {
        "start_at": 1000.0, "measure_at": None, "connections": 10_000, "processes": 5,
        "connect_rate": 75.0, "compat": False, "warmup": 10.0, "duration": 60.0,
    }  # fmt: skip
    base.update(kw)
    return argparse.Namespace(**base)


def test_planned_window_is_the_same_for_every_host() -> None:
    """From the shared parameters only: start + ceil(C/R + warm-up), whole seconds from start."""
    # 10,000 at 75/s: 133.3 s of ramp + 10 s warm-up -> 144 s after the start.
    assert planned_window(_window_args()) == (1144.0, 1204.0)
    # On a whole second already: not pushed to the next one.
    assert planned_window(_window_args(connections=750, warmup=0.0)) == (1010.0, 1070.0)
    # The split over processes does not change the plan (attempts interleave).
    assert planned_window(_window_args(processes=3)) == planned_window(_window_args())
    # No --start-at: one host alone, the window follows its actual ramp (None here).
    assert planned_window(_window_args(start_at=None)) is None
    # --measure-at wins over the plan.
    assert planned_window(_window_args(measure_at=1030.0)) == (1030.0, 1090.0)


def test_planned_ramp_of_the_2017_batches() -> None:
    """Compat: the biggest worker's batches of 3, 200 ms apart (2000 per worker: 667 batches)."""
    assert planned_ramp_s(10_000, 5, 75.0, compat=True) == pytest.approx(667 * 0.2)
    assert planned_ramp_s(10_000, 5, 75.0, compat=False) == pytest.approx(10_000 / 75)


@pytest.mark.parametrize(
    ("code", "sendable"),
    [(0, False), (999, False), (1000, True), (1001, True), (1003, True), (1004, False),
     (1005, False), (1006, False), (1007, True), (1011, True), (1015, False), (2999, False),
     (3000, True), (4999, True), (5000, False)],
)  # fmt: skip
def test_close_codes_that_may_be_sent(code: int, sendable: bool) -> None:
    """RFC 6455 7.4: 1005, 1006, 1015 are never on the wire (picows' NO_INFO is 0)."""
    assert errors.sendable_close_code(code) is sendable


def test_a_host_ready_after_the_planned_window_is_told_why() -> None:
    """Workers ready after the common window ended: a clear error, not an empty measurement."""
    assert window_missed(None, 1000.0, 5000.0) is None  # no --start-at: the window follows
    assert window_missed((1004.0, 1006.0), 1000.0, 1005.9) is None  # part of it is left
    message = window_missed((1004.0, 1006.0), 1000.0, 1011.0)
    assert message is not None
    assert message.startswith("the workers were ready only 11.0 s after --start-at")
    assert "(4..6 s after it) had already ended" in message
