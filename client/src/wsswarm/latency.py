"""Latency recording: raw microsecond values per tick, folded into HdrHistograms in bulk.

`hdrh.HdrHistogram.record_value` is pure Python and costs ~5 µs per call here, which would eat
a third of a core at 70k round-trips/s. The hot path therefore only appends the raw value to an
`array('q')` (tens of ns); every 0.1 s (the worker's fold) `record_bulk` computes the HDR counts
index of each value with the same formula as hdrh (for `HdrHistogram(1, 3_600_000_000, 3)`) and
adds the counts directly, which is ~10x cheaper and gives an identical histogram (tested).
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from hdrh.histogram import HdrHistogram

from wsswarm.formats import LatencyMs

# The one histogram shape of echolab (docs/formats.md): 1 µs .. 1 h, 3 significant digits.
LOWEST_US = 1
HIGHEST_US = 3_600_000_000
SIGNIFICANT_DIGITS = 3
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}

# Derived constants of that shape (unit magnitude 0, 2048 sub-buckets): see hdrh's
# `_counts_index_for`. Checked against a fresh histogram at import time below.
_SUB_BUCKET_MASK = 2047
_SUB_BUCKET_BITS = 11
_HALF_COUNT_MAGNITUDE = 10
_HALF_COUNT = 1024


def new_histogram() -> Any:
    """Return an empty histogram of the shape every echolab file uses."""
    return HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)


def _check_shape() -> None:
    hist = new_histogram()
    if (
        hist.unit_magnitude != 0
        or hist.sub_bucket_mask != _SUB_BUCKET_MASK
        or hist.sub_bucket_half_count_magnitude != _HALF_COUNT_MAGNITUDE
        or hist.sub_bucket_half_count != _HALF_COUNT
    ):  # pragma: no cover - only if hdrh changes its internals
        raise RuntimeError("hdrh internals changed: wsswarm.latency must be updated")


_check_shape()


# wsswarm._engine.hdr_counts: the loop of `record_bulk` in C (the compiled hot path's fold).
CountsOf = Callable[..., tuple[dict[int, int], int, int]]


def record_bulk(
    hist: Any, values_us: Iterable[int], counts_of: CountsOf | None = None
) -> list[int]:
    """Add raw latencies (µs) to `hist`, exactly as `record_value` one by one would.

    `counts_of` is `wsswarm._engine.hdr_counts` (values then an array('q')): the same counts,
    computed in C. Returns the counts indexes it touched (for `clear`).
    """
    if counts_of is not None:
        counts, lo, hi = counts_of(
            values_us,
            LOWEST_US,
            HIGHEST_US,
            _SUB_BUCKET_MASK,
            _SUB_BUCKET_BITS,
            _HALF_COUNT_MAGNITUDE,
            _HALF_COUNT,
        )
    else:
        counts, lo, hi = _counts(values_us)
    if not counts:
        return []
    hist_counts = hist.counts
    total = 0
    for index, count in counts.items():
        hist_counts[index] += count
        total += count
    hist.total_count += total
    hist.min_value = min(hist.min_value, lo)
    hist.max_value = max(hist.max_value, hi)
    return list(counts)


def _counts(values_us: Iterable[int]) -> tuple[dict[int, int], int, int]:
    """{counts index: count}, smallest and largest value (clamped) of raw latencies."""
    counts: Counter[int] = Counter()
    lo = HIGHEST_US
    hi = 0
    for raw in values_us:
        # A 0 µs round trip cannot happen, nor one above an hour: clamp rather than drop.
        value = LOWEST_US if raw < LOWEST_US else min(raw, HIGHEST_US)
        bucket = (value | _SUB_BUCKET_MASK).bit_length() - _SUB_BUCKET_BITS
        counts[((bucket + 1) << _HALF_COUNT_MAGNITUDE) + (value >> bucket) - _HALF_COUNT] += 1
        lo = min(lo, value)
        hi = max(hi, value)
    return counts, lo, hi


def clear(hist: Any, touched: Iterable[int]) -> None:
    """Empty `hist` again, zeroing only the counts `record_bulk` touched.

    hdrh's own `reset()` walks all ~47,000 counts in Python; a worker reuses one histogram
    for all its ticks (no 0.4 MB allocation per second), so this runs every tick.
    """
    hist_counts = hist.counts
    for index in touched:
        hist_counts[index] = 0
    hist.total_count = 0
    hist.min_value = sys.maxsize
    hist.max_value = 0
    hist.start_time_stamp_msec = sys.maxsize
    hist.end_time_stamp_msec = 0


def summarize_ms(hist: Any, mean_us: float | None = None) -> LatencyMs | None:
    """Mean, percentiles and max of `hist` in milliseconds (None when it is empty).

    `mean_us` is the exact mean when the caller has it (sum of raw values / count); the
    histogram's own mean is only exact to its 3 significant digits.
    """
    if hist.get_total_count() == 0:
        return None
    mean = hist.get_mean_value() if mean_us is None else mean_us
    at = {key: round(hist.get_value_at_percentile(p) / 1000.0, 4) for key, p in PERCENTILES.items()}
    return LatencyMs(
        mean=round(mean / 1000.0, 4),
        p50=at["p50"],
        p90=at["p90"],
        p99=at["p99"],
        p999=at["p999"],
        max=round(hist.get_max_value() / 1000.0, 4),
    )


def encode(hist: Any) -> str:
    """HdrHistogram standard base64 encoding (what every echolab file carries)."""
    encoded = hist.encode()
    return encoded.decode("ascii") if isinstance(encoded, bytes) else str(encoded)


def decode(text: str) -> Any:
    """Inverse of `encode`."""
    return HdrHistogram.decode(text.encode("ascii"))


def js_number(value: float) -> str:
    """Format a number the way JavaScript's `${x}` does (2017 compat output: NaN, 12, 12.5)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    return repr(float(value))
