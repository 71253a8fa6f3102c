"""PNG plots of a run, one line per target (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wsswarm.report.series import TimeSeries

# (file name, title) of every plot, in the order report.md shows them.
PLOTS = [
    ("roundtrips.png", "Round-trips per second"),
    ("latency.png", "Latency"),
    ("connections.png", "Open connections"),
    ("connect-latency.png", "Connect and upgrade latency"),
    ("server-cpu.png", "Server CPU"),
    ("server-memory.png", "Server memory"),
]


def _line(ax: Any, data: dict[int, float], label: str, **style: Any) -> bool:
    if not data:
        return False
    xs = sorted(data)
    ax.plot(xs, [data[x] for x in xs], label=label, linewidth=1.4, **style)
    return True


def _mark_window(ax: Any, series: TimeSeries, color: Any) -> None:
    if series.window is not None:
        for x in series.window:
            ax.axvline(x, color=color, linestyle=":", linewidth=0.9, alpha=0.8)


def write_plots(out_dir: Path, series: dict[str, TimeSeries]) -> list[tuple[str, str]]:
    """Write the PNGs; return (title, file name) of each plot that has data."""
    import matplotlib  # noqa: PLC0415 - only the controller has it; `wsswarm run` must not need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color_of = {name: colors[i % len(colors)] for i, name in enumerate(series)}
    written = []

    def time_plot(
        name: str,
        title: str,
        ylabel: str,
        pick: Callable[[TimeSeries], dict[int, float]],
    ) -> None:
        fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
        # Fixed margins: tight_layout measures every tick label (seconds per plot here).
        fig.subplots_adjust(left=0.09, right=0.82, top=0.91, bottom=0.12)
        drawn = False
        for target, ts in series.items():
            if _line(ax, pick(ts), target, color=color_of[target]):
                _mark_window(ax, ts, color_of[target])
                drawn = True
        if drawn:
            ax.set_title(f"{title} (dotted: measured window)")
            ax.set_xlabel("seconds since the start of the target's ramp")
            ax.set_ylabel(ylabel)
            ax.set_ylim(bottom=0)
            ax.grid(True, alpha=0.3)
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
            fig.savefig(out_dir / name)
            written.append((title, name))
        plt.close(fig)

    time_plot(
        "roundtrips.png",
        "Round-trips per second",
        "round-trips/s (all clients)",
        lambda ts: ts.roundtrips_per_s,
    )
    _latency_plot(plt, out_dir, series, color_of, written)
    time_plot("connections.png", "Open connections", "open connections", lambda ts: ts.open)
    _dial_plot(plt, out_dir, series, color_of, written)
    time_plot("server-cpu.png", "Server CPU", "% of one core", lambda ts: ts.server_cpu)
    time_plot("server-memory.png", "Server memory", "MB", lambda ts: ts.server_rss_mb)
    order = [name for name, _ in PLOTS]
    return sorted(written, key=lambda item: order.index(item[1]))


def _log_ms_axis(ax: Any) -> None:
    """A log axis labelled 1, 2, 5, 10, 20, 50 ms ...: readable at any latency range."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: PLC0415

    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _pos: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_ylabel("ms")
    ax.grid(True, alpha=0.3)


def _latency_plot(
    plt: Any,
    out_dir: Path,
    series: dict[str, TimeSeries],
    color_of: dict[str, Any],
    written: list[tuple[str, str]],
) -> None:
    """Top: p50 and p99 per second. Bottom: the distribution over the measured window."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 8), dpi=100)
    fig.subplots_adjust(left=0.09, right=0.8, top=0.95, bottom=0.07, hspace=0.3)
    drawn = False
    for target, ts in series.items():
        color = color_of[target]
        if _line(top, ts.p50_ms, f"{target} p50", color=color):
            _line(top, ts.p99_ms, f"{target} p99", color=color, linestyle="--")
            _mark_window(top, ts, color)
            drawn = True
        if ts.distribution:
            bottom.plot(
                _nines(ts.distribution),
                [v for _, v in ts.distribution],
                marker="o",
                markersize=3,
                color=color,
                label=target,
            )
    if drawn:
        top.set_title("Latency per second (solid p50, dashed p99; dotted: measured window)")
        top.set_xlabel("seconds since the start of the target's ramp")
        _log_ms_axis(top)
        top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
        _nines_axis(bottom, "Latency distribution over the measured window")
        fig.savefig(out_dir / "latency.png")
        written.append(("Latency", "latency.png"))
    plt.close(fig)


def _nines(distribution: list[tuple[float, float]]) -> list[float]:
    """x in "nines": 0 for p0, 1 for p90, 2 for p99, 3 for p99.9 ... and max at 5."""
    return [-math.log10(1 - p / 100) if p < 100 else 5.0 for p, _ in distribution]


def _nines_axis(ax: Any, title: str) -> None:
    """A percentile axis in nines (p0 ... max) against log ms, its legend beside it."""
    ax.set_title(title)
    ax.set_xticks([0, 1, 2, 3, 4, 5], ["p0", "p90", "p99", "p99.9", "p99.99", "max"])
    _log_ms_axis(ax)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")


def _dial_plot(
    plt: Any,
    out_dir: Path,
    series: dict[str, TimeSeries],
    color_of: dict[str, Any],
    written: list[tuple[str, str]],
) -> None:
    """Distribution of the TCP connect (solid) and upgrade (dashed) times of the whole run."""
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    fig.subplots_adjust(left=0.09, right=0.8, top=0.91, bottom=0.12)
    drawn = False
    for target, ts in series.items():
        for points, style, what in (
            (ts.connect_distribution, "-", "connect"),
            (ts.upgrade_distribution, "--", "upgrade"),
        ):
            if points:
                ax.plot(
                    _nines(points),
                    [v for _, v in points],
                    linestyle=style,
                    marker="o",
                    markersize=3,
                    color=color_of[target],
                    label=f"{target} {what}",
                )
                drawn = True
    if drawn:
        _nines_axis(ax, "Connect (solid) and upgrade (dashed) latency, all connections of the run")
        fig.savefig(out_dir / "connect-latency.png")
        written.append(("Connect and upgrade latency", "connect-latency.png"))
    plt.close(fig)
