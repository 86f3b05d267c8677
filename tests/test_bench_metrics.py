"""labkit.bench.metrics: percentiles, run figures and complete records; SSE lines and the
notebook's number lists."""

from __future__ import annotations

import math
import statistics

import pytest

from labkit import bench
from labkit.errors import ConfigError

# --- metrics ------------------------------------------------------------------------------------


def test_percentile_matches_numpys_linear_interpolation() -> None:
    np = pytest.importorskip("numpy")
    values = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 1.5]
    for q in (0, 1, 25, 50, 90, 99, 100):
        assert math.isclose(bench.percentile(values, q), float(np.percentile(values, q)))
    assert bench.percentile([], 50) is None
    assert bench.percentile([2.0], 99) == 2.0
    with pytest.raises(ValueError):
        bench.percentile([1.0], 101)


def test_run_metrics_from_synthetic_timestamps() -> None:
    # Two requests: token stamps at known times after each request's start.
    stamps = {0: [0.2, 0.3, 0.4, 0.5], 1: [1.0, 1.5, 2.0]}
    records = [
        bench.RequestRecord(
            index=i,
            prompt_tokens=10,
            max_tokens=len(s),
            n=1,
            output_tokens=len(s),
            ttft_s=s[0],
            latency_s=s[-1],
            itl_s=bench.gaps(s),
            finish_reasons=["length"],
        )
        for i, s in stamps.items()
    ]
    failed = bench.RequestRecord(index=2, prompt_tokens=10, max_tokens=4, n=1, error="HTTP 500")
    run = bench.RunResult(
        "vllm-server-direct", "test", 1, duration_s=2.0, records=[*records, failed]
    )
    assert run.completed == 2 and run.output_tokens == 7 and run.prompt_tokens == 20
    assert run.output_tokens_per_s == 3.5
    assert run.requests_per_min == 60.0
    assert math.isclose(run.metric("ttft_s", 50), 0.6)
    assert math.isclose(run.metric("ttft_s", 99), 0.2 + 0.8 * 0.99)
    itl = [0.1, 0.1, 0.1, 0.5, 0.5]
    assert math.isclose(run.metric("itl_s", 50), statistics.median(itl))
    assert math.isclose(run.metric("latency_s", 50), 1.25)
    s = run.summary()
    assert s["requests"] == 3 and s["completed"] == 2 and s["output_tokens_per_s"] == 3.5
    offline = bench.RunResult("vllm-offline", "o", 1, 1.0, records[:1])
    offline.records[0].ttft_s = None
    offline.records[0].itl_s = []
    assert offline.metric("itl_s", 50) is None
    assert "3.5" in run._repr_html_() and "1 failed" in run._repr_html_()


def test_a_record_is_complete_when_it_ran_to_its_budget_or_stopped() -> None:
    def rec(out: int, reasons: list[str], n: int = 1, error: str | None = None):
        return bench.RequestRecord(0, 5, 8, n, out, finish_reasons=reasons, error=error)

    assert rec(8, ["length"]).complete
    assert rec(24, ["length"] * 3, n=3).complete
    assert rec(5, ["stop"]).complete
    assert not rec(5, ["length"]).complete
    assert not rec(8, ["length"], error="boom").complete


def test_sse_lines() -> None:
    assert bench._parse_sse('data: {"a": 1}') == {"a": 1}
    assert bench._parse_sse("data: [DONE]") is None
    assert bench._parse_sse(": keep-alive") is None
    assert bench._parse_sse("") is None


def test_parse_ints() -> None:
    assert bench.parse_ints("1, 4,8") == [1, 4, 8]
    for bad in ("", "0,2", "a,b"):
        with pytest.raises(ConfigError):
            bench.parse_ints(bad)
