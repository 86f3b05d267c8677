"""A server's ``/metrics`` (Prometheus text) read into a short table."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from html import escape
from typing import Any

from labkit.query.results import _fmt_s, _table

_SAMPLE = re.compile(
    r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$"
)
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


@dataclass
class Sample:
    """One line of Prometheus text: a metric name, its labels and the value."""

    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Histogram:
    """A Prometheus histogram summed over its label sets: count, sum and cumulative buckets."""

    name: str
    count: float
    total: float
    buckets: list[tuple[float, float]]  # (upper bound, cumulative count), ascending

    @property
    def mean(self) -> float:
        """Average observation, or NaN with none."""
        return self.total / self.count if self.count else float("nan")

    def quantile(self, q: float) -> float:
        """Estimate a quantile the way Prometheus' histogram_quantile does (linear in a bucket)."""
        if not self.count or not self.buckets:
            return float("nan")
        rank = q * self.count
        lower, below = 0.0, 0.0
        for upper, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(upper):
                    return lower  # the highest finite bound is the best estimate
                inside = cumulative - below
                return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = upper, cumulative
        return lower


def _unescape(value: str) -> str:
    return value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def parse_prometheus(text: str) -> list[Sample]:
    """Samples of a Prometheus text exposition (comments and malformed lines skipped)."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        labels = {k: _unescape(v) for k, v in _LABEL.findall(match["labels"] or "")}
        samples.append(Sample(match["name"], labels, value))
    return samples


# The summary rows: label, kind, metric (vLLM 0.32's names).
_COUNTERS = (
    ("requests finished", "vllm:request_success_total"),
    ("requests running", "vllm:num_requests_running"),
    ("requests waiting", "vllm:num_requests_waiting"),
    ("prompt tokens", "vllm:prompt_tokens_total"),
    ("generated tokens", "vllm:generation_tokens_total"),
    ("preemptions", "vllm:num_preemptions_total"),
)
_HISTOGRAMS = (
    ("time to first token", "vllm:time_to_first_token_seconds"),
    ("inter-token latency", "vllm:inter_token_latency_seconds"),
    ("end-to-end latency", "vllm:e2e_request_latency_seconds"),
)


@dataclass
class Metrics:
    """A server's ``/metrics``, with the few figures worth a look summarised."""

    samples: list[Sample]
    url: str = ""

    @classmethod
    def parse(cls, text: str, url: str = "") -> Metrics:
        """Read Prometheus text."""
        return cls(parse_prometheus(text), url)

    def total(self, name: str, **labels: str) -> float | None:
        """The sum of a metric over its label sets (those matching ``labels``), or None if absent."""
        values = [
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        return sum(values) if values else None

    def histogram(self, name: str) -> Histogram | None:
        """A histogram summed over its label sets (engines, models), or None if absent."""
        count = self.total(f"{name}_count")
        if count is None:
            return None
        by_bound: dict[float, float] = {}
        for s in self.samples:
            if s.name == f"{name}_bucket" and "le" in s.labels:
                bound = float(s.labels["le"])
                by_bound[bound] = by_bound.get(bound, 0.0) + s.value
        return Histogram(name, count, self.total(f"{name}_sum") or 0.0, sorted(by_bound.items()))

    def summary(self) -> dict[str, Any]:
        """Requests, tokens and latency figures (NaN-free: missing ones are None)."""
        out: dict[str, Any] = {}
        for label, name in _COUNTERS:
            value = self.total(name)
            out[label] = None if value is None else int(value)
        usage = self.total("vllm:kv_cache_usage_perc")
        out["KV cache usage"] = None if usage is None else round(usage * 100, 1)
        for label, name in _HISTOGRAMS:
            hist = self.histogram(name)
            if hist is None or not hist.count:
                out[label] = None
                continue
            out[label] = {
                "count": int(hist.count),
                "mean_s": hist.mean,
                "p50_s": hist.quantile(0.5),
                "p90_s": hist.quantile(0.9),
                "p99_s": hist.quantile(0.99),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        """The summary, for the lab state."""
        return {"url": self.url, **self.summary()}

    def _repr_html_(self) -> str:
        summary = self.summary()
        rows: list[tuple[str, str]] = []
        for label, _ in _COUNTERS:
            rows.append((label, "" if summary[label] is None else f"{summary[label]:,}"))
        usage = summary["KV cache usage"]
        rows.append(("KV cache usage", "" if usage is None else f"{usage} %"))
        for label, _ in _HISTOGRAMS:
            h = summary[label]
            text = (
                "no observations yet"
                if h is None
                else f"{h['count']} observations; mean {_fmt_s(h['mean_s'])}, "
                f"p50 {_fmt_s(h['p50_s'])}, p90 {_fmt_s(h['p90_s'])}, p99 {_fmt_s(h['p99_s'])}"
            )
            rows.append((label, text))
        head = f"<p>{escape(self.url)}</p>" if self.url else ""
        return head + _table(["metric", "value"], rows)
