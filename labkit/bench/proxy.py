"""The deployment URL against the server behind it: throughput both ways, rounds interleaved."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from labkit.bench.metrics import RunResult
from labkit.bench.server import Target, run_server
from labkit.bench.workload import Workload

PROXY_BUDGET = 0.95  # the deployment URL may cost at most 5% of throughput


# --- the deployment URL against the server behind it ---------------------------------------------


@dataclass
class ProxyComparison:
    """Throughput through the deployment URL over straight to the server, rounds interleaved."""

    concurrency: int
    n: int
    deployment_tok_s: list[float]
    direct_tok_s: list[float]
    budget: float = PROXY_BUDGET

    @property
    def ratio(self) -> float:
        """Median throughput through the deployment URL / median straight to the server."""
        direct = statistics.median(self.direct_tok_s)
        return statistics.median(self.deployment_tok_s) / direct if direct else 0.0

    @property
    def within_budget(self) -> bool:
        """The proxy costs at most 1 - budget (5%) of throughput."""
        return self.ratio >= self.budget

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data, ratio included."""
        return {**asdict(self), "ratio": round(self.ratio, 4), "within_budget": self.within_budget}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProxyComparison:
        """The inverse of to_dict."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def line(self) -> str:
        """One line for a terminal."""
        return (
            f"deployment URL vs straight to the server: {self.ratio:.3f}x throughput "
            f"(budget >= {self.budget}); direct tok/s {self.direct_tok_s}, "
            f"via deployment {self.deployment_tok_s}"
        )

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.within_budget else "#cf222e"
        verdict = "within" if self.within_budget else "over"
        return (
            f"<div><span style='background:{colour};color:white;padding:1px 6px;"
            f"border-radius:3px'>{self.ratio:.3f}x</span> throughput through the deployment URL "
            f"vs straight to the server ({verdict} the {1 - self.budget:.0%} budget); "
            f"concurrency {self.concurrency}, {len(self.direct_tok_s)} interleaved rounds; "
            f"tok/s direct {', '.join(f'{x:.1f}' for x in self.direct_tok_s)}, via deployment "
            f"{', '.join(f'{x:.1f}' for x in self.deployment_tok_s)}</div>"
        )


def compare_proxy(
    deployment: Target,
    direct: Target,
    workload: Workload,
    *,
    concurrency: int,
    rounds: int = 2,
    n: int = 1,
    progress: bool = True,
) -> tuple[ProxyComparison, list[RunResult]]:
    """Run the workload straight to the server and through the deployment URL, alternating."""
    dep, dirs, runs = [], [], []
    for r in range(max(1, rounds)):
        # Alternate who goes first, so that drift on a shared machine favours neither.
        order = (direct, deployment) if r % 2 == 0 else (deployment, direct)
        for t in order:
            run = run_server(t, workload, concurrency, n=n, warmup=r == 0, progress=progress)
            (dep if t is deployment else dirs).append(run.output_tokens_per_s)
            runs.append(run)
    return ProxyComparison(concurrency, n, dep, dirs), runs
