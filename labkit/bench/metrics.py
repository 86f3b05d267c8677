"""Metrics: what each request did (tokens, TTFT, ITL, latency), a run's figures, their tables."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from labkit.util.html import esc, table

# --- metrics -------------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile with linear interpolation (numpy's default); None when empty."""
    xs = sorted(values)
    if not xs:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def gaps(stamps: Sequence[float]) -> list[float]:
    """Differences between consecutive timestamps: the inter-token latencies of one stream."""
    return [b - a for a, b in itertools.pairwise(stamps)]


@dataclass
class RequestRecord:
    """What one request did: tokens in and out, when the first token came, how long it took."""

    index: int
    prompt_tokens: int
    max_tokens: int
    n: int
    output_tokens: int = 0
    ttft_s: float | None = None
    latency_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Finished without an error."""
        return self.error is None

    @property
    def complete(self) -> bool:
        """Every completion ran to its token budget, or stopped on its own."""
        if not self.ok:
            return False
        if self.output_tokens == self.max_tokens * self.n:
            return True
        return "stop" in self.finish_reasons and self.output_tokens <= self.max_tokens * self.n


@dataclass
class RunResult:
    """One engine over one workload: the records and the figures they give."""

    engine: str
    label: str
    n: int
    duration_s: float
    records: list[RequestRecord]
    concurrency: int | None = None
    target: str | None = None
    batch_size: int | None = None
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    notes: list[str] = field(default_factory=list)

    @property
    def num_requests(self) -> int:
        """Requests sent."""
        return len(self.records)

    @property
    def completed(self) -> int:
        """Requests that finished without an error."""
        return sum(r.ok for r in self.records)

    @property
    def request_set(self) -> frozenset[int]:
        """Which requests of the workload ran (their indices)."""
        return frozenset(r.index for r in self.records)

    @property
    def output_tokens(self) -> int:
        """Tokens generated over all completions of finished requests."""
        return sum(r.output_tokens for r in self.records if r.ok)

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens of finished requests."""
        return sum(r.prompt_tokens for r in self.records if r.ok)

    @property
    def requests_per_min(self) -> float:
        """Finished requests per minute of wall time."""
        return self.completed * 60 / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def output_tokens_per_s(self) -> float:
        """Generated tokens per second of wall time."""
        return self.output_tokens / self.duration_s if self.duration_s > 0 else 0.0

    def _values(self, name: str) -> list[float]:
        if name == "itl_s":
            return [x for r in self.records if r.ok for x in r.itl_s]
        return [v for r in self.records if r.ok and (v := getattr(r, name)) is not None]

    def metric(self, name: str, q: float) -> float | None:
        """A percentile of ttft_s, itl_s or latency_s over finished requests (None if unmeasured)."""
        return percentile(self._values(name), q)

    def summary(self) -> dict[str, Any]:
        """The figures, without the per-request records."""
        return {
            "engine": self.engine,
            "label": self.label,
            "n": self.n,
            "concurrency": self.concurrency,
            "batch_size": self.batch_size,
            "target": self.target,
            "requests": self.num_requests,
            "completed": self.completed,
            "duration_s": round(self.duration_s, 4),
            "output_tokens": self.output_tokens,
            "prompt_tokens": self.prompt_tokens,
            "requests_per_min": round(self.requests_per_min, 3),
            "output_tokens_per_s": round(self.output_tokens_per_s, 3),
            "ttft_p50_s": _round(self.metric("ttft_s", 50)),
            "ttft_p99_s": _round(self.metric("ttft_s", 99)),
            "itl_p50_s": _round(self.metric("itl_s", 50)),
            "itl_p99_s": _round(self.metric("itl_s", 99)),
            "latency_p50_s": _round(self.metric("latency_s", 50)),
            "latency_p99_s": _round(self.metric("latency_s", 99)),
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, records included, as JSON-ready data."""
        return {**asdict(self), "summary": self.summary()}

    def line(self) -> str:
        """One line for a terminal: requests, time, throughput and the median latencies."""
        s = self.summary()
        ttft = "" if s["ttft_p50_s"] is None else f", TTFT p50 {s['ttft_p50_s'] * 1000:.0f} ms"
        itl = "" if s["itl_p50_s"] is None else f", ITL p50 {s['itl_p50_s'] * 1000:.0f} ms"
        return (
            f"{self.label}, n={self.n}: {s['completed']}/{s['requests']} requests in "
            f"{s['duration_s']:.1f} s, {s['output_tokens_per_s']:.1f} tok/s, "
            f"{s['requests_per_min']:.1f} req/min{ttft}{itl}"
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        """The inverse of to_dict."""
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names and k != "records"}
        kwargs["records"] = [RequestRecord(**r) for r in data.get("records", [])]
        return cls(**kwargs)

    def _repr_html_(self) -> str:
        return _runs_table([self])


class RunTable(list):
    """Runs that show themselves as one table."""

    def _repr_html_(self) -> str:
        return _runs_table(self)


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value * 1000:,.1f}"


def _runs_table(runs: Sequence[RunResult]) -> str:
    head = ["engine", "n", "requests", "req/min", "output tok/s",
            "TTFT p50 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms"]  # fmt: skip
    rows = []
    for r in runs:
        s = r.summary()
        failed = f" ({r.num_requests - r.completed} failed)" if r.completed < r.num_requests else ""
        rows.append(
            (esc(r.label), r.n, f"{r.completed}{failed}",
             f"{s['requests_per_min']:,.1f}", f"{s['output_tokens_per_s']:,.1f}",
             _ms(s["ttft_p50_s"]), _ms(s["ttft_p99_s"]),
             _ms(s["itl_p50_s"]), _ms(s["itl_p99_s"]))
        )  # fmt: skip
    return table(head, rows)
