"""The picture: stacked bars of where each device's memory goes, per GPU or per plan."""

from __future__ import annotations

from typing import Any

from labkit.sizing.constants import GiB
from labkit.sizing.report import Budget, SizingReport

_COLOURS = {
    "weights": "#4c72b0",
    "activation": "#dd8452",
    "non-torch": "#8172b3",
    "KV cache": "#55a868",
    "headroom": "#d9d9d9",
}


def _bars(report: SizingReport, all_plans: bool) -> list[tuple[str, Budget | None, bool]]:
    """One bar per plan, or the RAM of a CPU pod, or each GPU (those beyond tp idle)."""
    bars: list[tuple[str, Budget | None, bool]] = []
    if all_plans:
        bars = [(p.name, p.budget, p.fits) for p in report.plans]
    elif report.device == "cpu":
        bars = [("RAM", report.budget, report.fits)]
    else:
        for i in range(min(report.gpus, 16)):
            used = i < report.tensor_parallel_size
            idle = Budget(
                report.budget.total_bytes,
                report.budget.total_bytes,
                0,
                0,
                0,
                0,
                0,
                report.budget.total_bytes,
            )
            bars.append((f"GPU {i}", report.budget if used else idle, report.fits))
    return bars


def plot_budget(report: SizingReport, ax: Any = None, *, all_plans: bool = False) -> Any:
    """Stacked bars of where each GPU's memory goes (or each plan's); returns the Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(
            figsize=(max(4.0, 1.0 + 0.8 * (len(report.plans) if all_plans else report.gpus)), 4.0)
        )
    bars = _bars(report, all_plans)
    labels = [name for name, _, _ in bars]
    for x, (_, b, fits) in enumerate(bars):
        if b is None:
            continue
        parts = [
            ("weights", b.weights_bytes),
            ("activation", b.activation_bytes),
            ("non-torch", b.non_torch_bytes),
            ("KV cache", b.kv_cache_bytes),
            ("headroom", max(0, b.headroom_bytes)),
        ]
        bottom = 0.0
        for label, nbytes in parts:
            height = nbytes / GiB
            ax.bar(
                x,
                height,
                bottom=bottom,
                color=_COLOURS[label],
                label=label if x == 0 else None,
                width=0.7,
            )
            bottom += height
        total = b.total_bytes / GiB
        ax.hlines(total, x - 0.4, x + 0.4, colors="black", linewidth=1)
        if bottom > total:  # hatch what does not fit into the device
            ax.bar(x, bottom - total, bottom=total, width=0.7, fill=False, hatch="//",
                   edgecolor="#c62828", linewidth=0)  # fmt: skip
        if not fits:
            ax.annotate(
                "x", (x, bottom), ha="center", va="bottom", color="#c62828", fontweight="bold"
            )
    ax.set_xticks(
        range(len(labels)),
        labels,
        rotation=45 if len(labels) > 4 else 0,
        ha="right" if len(labels) > 4 else "center",
    )
    ax.set_ylabel("GiB per device")
    title = (
        "every plan, per device"
        if all_plans
        else f"{report.model} on {report.plan or 'custom device'}"
    )
    ax.set_title(title)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in _COLOURS.values()]
    ax.legend(
        handles, list(_COLOURS), loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small"
    )
    return ax
