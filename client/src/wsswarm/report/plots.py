"""PNG plots of a run, one line per target (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from wsswarm.report.merge import TimeSeries

# (file name, title) of every plot, in the order report.md shows them.
PLOTS = [
    ("roundtrips.png", "Round-trips per second"),
    ("latency.png", "Latency"),
    ("connections.png", "Open connections"),
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
            ax.legend(loc="best")
            fig.tight_layout()
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
    time_plot("server-cpu.png", "Server CPU", "% of one core", lambda ts: ts.server_cpu)
    time_plot("server-memory.png", "Server memory", "MB", lambda ts: ts.server_rss_mb)
    order = [name for name, _ in PLOTS]
    return sorted(written, key=lambda item: order.index(item[1]))


def _latency_plot(
    plt: Any,
    out_dir: Path,
    series: dict[str, TimeSeries],
    color_of: dict[str, Any],
    written: list[tuple[str, str]],
) -> None:
    """Left: p50 and p99 per second. Right: the distribution over the measured window."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100)
    drawn = False
    for target, ts in series.items():
        color = color_of[target]
        if _line(left, ts.p50_ms, f"{target} p50", color=color):
            _line(left, ts.p99_ms, f"{target} p99", color=color, linestyle="--")
            _mark_window(left, ts, color)
            drawn = True
        if ts.distribution:
            # x = "nines": 0 for p0, 1 for p90, 2 for p99, 3 for p99.9 ...
            import math  # noqa: PLC0415

            xs = [-math.log10(1 - p / 100) if p < 100 else 5.0 for p, _ in ts.distribution]
            right.plot(
                xs,
                [v for _, v in ts.distribution],
                marker="o",
                markersize=3,
                color=color,
                label=target,
            )
    if drawn:
        left.set_title("Latency per second (solid p50, dashed p99)")
        left.set_xlabel("seconds since the start of the target's ramp")
        left.set_ylabel("ms")
        left.set_yscale("log")
        left.grid(True, alpha=0.3, which="both")
        left.legend(loc="best", fontsize="small")
        right.set_title("Latency distribution, measured window")
        ticks = [0, 1, 2, 3, 4, 5]
        right.set_xticks(ticks, ["p0", "p90", "p99", "p99.9", "p99.99", "max"])
        right.set_ylabel("ms")
        right.set_yscale("log")
        right.grid(True, alpha=0.3, which="both")
        right.legend(loc="best", fontsize="small")
        fig.tight_layout()
        fig.savefig(out_dir / "latency.png")
        written.append(("Latency", "latency.png"))
    plt.close(fig)
