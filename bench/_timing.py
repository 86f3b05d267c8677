"""Interleaved rounds and a ratio table, shared by the benchmark scripts."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleave(contenders: dict[str, Callable[[int], None]], rounds: int) -> dict[str, list[float]]:
    """Run each contender once per round, in turn, so drift on a shared machine hits all alike."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(rounds):
        for name, run in contenders.items():
            start = time.perf_counter()
            run(r)
            times[name].append(time.perf_counter() - start)
    return times


def table(times: dict[str, list[float]], nbytes: int, baseline: str) -> str:
    """Median seconds, MB/s and the ratio of each contender's throughput to the baseline's."""
    base = statistics.median(times[baseline])
    lines = [f"{'contender':32} {'median s':>9} {'MB/s':>8} {'throughput vs ' + baseline:>24}"]
    for name, ts in times.items():
        med = statistics.median(ts)
        lines.append(f"{name:32} {med:9.3f} {nbytes / med / 1e6:8.1f} {base / med:23.2f}x")
    return "\n".join(lines)
