"""The plots: throughput by engine, and latency against concurrency (matplotlib, no pyplot)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.bench.metrics import RunResult


@dataclass
class Plot:
    """A matplotlib figure that a notebook shows as a PNG (no pyplot, no backend needed)."""

    figure: Any

    def png(self) -> bytes:
        """The figure as PNG bytes."""
        import io

        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=110)
        return buf.getvalue()

    def _repr_png_(self) -> bytes:
        return self.png()

    def save(self, path: str | Path) -> Path:
        """Write the PNG file."""
        Path(path).write_bytes(self.png())
        return Path(path)


def _figure() -> tuple[Any, Any]:
    # A bare Figure, not pyplot: nothing global to close, no display needed, and a notebook shows
    # the returned figure once (pyplot's inline backend would show it a second time).
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.2), layout="constrained")
    return fig, fig.subplots()


_SHORT = {
    "vllm-offline": "vLLM offline",
    "vllm-server-deployment": "vLLM via deployment",
    "vllm-server-direct": "vLLM server direct",
    "hf-single": "HF one at a time",
    "hf-static": "HF static batch",
}


def _short(run: RunResult) -> str:
    name = _SHORT.get(run.engine, run.engine)
    return f"{name} {run.batch_size}" if run.engine == "hf-static" else name


def _median_run(runs: Sequence[RunResult]) -> RunResult:
    """Of repeated rounds, the run with the median throughput (the lower middle one)."""
    ordered = sorted(runs, key=lambda r: r.output_tokens_per_s)
    return ordered[(len(ordered) - 1) // 2]


def plot_throughput(
    runs: Sequence[RunResult], path: str | Path | None = None, title: str = ""
) -> Plot:
    """Output tokens/s by engine (the server at its best concurrency), n=1 and n=3 bars."""
    fig, ax = _figure()
    largest: dict[tuple[str, int], int] = {}
    for r in runs:
        key = (_short(r), r.n)
        largest[key] = max(largest.get(key, 0), r.num_requests)
    repeats: dict[tuple[str, int, int | None], list[RunResult]] = {}
    for r in runs:
        if r.num_requests == largest[(_short(r), r.n)]:  # the whole workload, not a subset
            repeats.setdefault((_short(r), r.n, r.concurrency), []).append(r)
    groups: dict[str, dict[int, float]] = {}
    for (name, n, _c), rs in repeats.items():
        best = groups.setdefault(name, {})
        best[n] = max(best.get(n, 0.0), _median_run(rs).output_tokens_per_s)
    names = list(groups)
    ns = sorted({n for g in groups.values() for n in g})
    width = 0.8 / max(1, len(ns))
    for j, n in enumerate(ns):
        xs = [i + (j - (len(ns) - 1) / 2) * width for i in range(len(names))]
        ys = [groups[k].get(n, math.nan) for k in names]  # NaN: not measured, no bar
        bars = ax.bar(xs, ys, width, label=f"n={n}")
        ax.bar_label(bars, labels=["" if math.isnan(y) else f"{y:.0f}" for y in ys], fontsize=8)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("output tokens/s (server: best concurrency)")
    ax.set_title(title or "Throughput by engine", fontsize=9)
    ax.legend()
    plot = Plot(fig)
    if path:
        plot.save(path)
    return plot


def plot_latency(
    runs: Sequence[RunResult], path: str | Path | None = None, title: str = ""
) -> Plot:
    """TTFT and ITL p50/p99 (ms) against concurrency, for each server target measured at two
    or more concurrencies (n=1; the median round where rounds repeat)."""
    fig, ax = _figure()
    series: dict[str, dict[int, list[RunResult]]] = {}
    for r in runs:
        if r.concurrency and r.n == 1:
            series.setdefault(_short(r), {}).setdefault(r.concurrency, []).append(r)
    swept = {k: v for k, v in series.items() if len(v) > 1} or series
    colours = iter(f"C{i}" for i in range(10))
    for name, levels in swept.items():
        cs = sorted(levels)
        rs = [_median_run(levels[c]) for c in cs]
        for metric, marker, label in (("ttft_s", "o", "TTFT"), ("itl_s", "s", "ITL")):
            colour = next(colours)
            for q, style in ((50, "-"), (99, ":")):
                ys = [(r.metric(metric, q) or math.nan) * 1000 for r in rs]
                ax.plot(cs, ys, style, marker=marker, color=colour, label=f"{name}: {label} p{q}")
    ax.set_xscale("log", base=2)  # sweeps double the concurrency: equal steps on the axis
    levels_seen = sorted({c for levels in swept.values() for c in levels})
    ax.set_xticks(levels_seen, [str(c) for c in levels_seen])
    ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("ms (log scale)")
    ax.set_yscale("log")
    ax.set_title(title or "Latency against concurrency", fontsize=9)
    if swept:
        ax.legend(fontsize=7)
    plot = Plot(fig)
    if path:
        plot.save(path)
    return plot
