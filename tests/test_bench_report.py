"""labkit.bench.report, proxy and plots: the results file's round trip, the ratios beside the
launch post, the proxy verdict and the plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from labkit import bench
from labkit.errors import StepError

# --- the report: JSON round trip, ratios, table, plots ------------------------------------------


def synthetic_run(engine: str, tok_s: float, n: int = 1, count: int = 4, **kw) -> bench.RunResult:
    recs = [
        bench.RequestRecord(
            i, 20, 10, n, 10 * n, 0.1 * (i + 1), 1.0 + i, [0.05] * 9, ["length"] * n
        )
        for i in range(count)
    ]
    return bench.RunResult(engine, engine, n, duration_s=10 * count * n / tok_s, records=recs, **kw)


def synthetic_report() -> bench.BenchReport:
    runs = [
        synthetic_run("vllm-offline", 400.0, batch_size=4),
        synthetic_run("vllm-offline", 900.0, n=3, batch_size=4),
        synthetic_run("vllm-server-deployment", 100.0, concurrency=1),
        synthetic_run("vllm-server-deployment", 300.0, concurrency=4),
        synthetic_run("vllm-server-deployment", 280.0, concurrency=8),
        synthetic_run("vllm-server-deployment", 700.0, n=3, concurrency=8),
        synthetic_run("hf-single", 20.0, batch_size=1),
        synthetic_run("hf-static", 100.0, batch_size=4),
        synthetic_run("hf-single", 45.0, n=3, batch_size=1),
    ]
    proxy = bench.ProxyComparison(
        8, 1, deployment_tok_s=[290.0, 300.0], direct_tok_s=[300.0, 305.0]
    )
    cross = bench.CrossCheck(
        4,
        True,
        theirs={
            "output_throughput": 330.0,
            "request_throughput": 0.5,
            "median_ttft_ms": 200.0,
            "median_itl_ms": 50.0,
        },
        ours=runs[3].summary(),
    )
    return bench.BenchReport(
        model="m",
        machine={"cpu": "x", "cores": 2, "memory_gib": 8, "gpu": "none"},
        workload={"seed": 0, "requests": 4},
        runs=runs,
        proxy=proxy,
        crosscheck=cross,
        notes=["a note"],
    )


def test_results_json_round_trip(tmp_path: Path) -> None:
    report = synthetic_report()
    path = report.save(tmp_path / "out" / "results.json")
    back = bench.BenchReport.load(path)
    assert back.to_dict() == report.to_dict()
    assert back.runs[2].records[1].itl_s == [0.05] * 9
    data = json.loads(path.read_text())
    assert data["format"] == bench.RESULTS_FORMAT and data["launch_post"]["rows"]
    data["format"] = 99
    with pytest.raises(StepError):
        bench.BenchReport.from_dict(data)


def test_ratios_beside_the_launch_post() -> None:
    report = synthetic_report()
    ratios = {(r.n, r.vllm, r.baseline): r for r in report.ratios()}
    assert math.isclose(ratios[(1, "vLLM offline", "HF one at a time")].ratio, 20.0)
    assert math.isclose(ratios[(1, "vLLM server (c=4)", "HF static batching (4)")].ratio, 3.0)
    assert math.isclose(ratios[(3, "vLLM offline", "HF one at a time")].ratio, 20.0)
    one = ratios[(1, "vLLM offline", "HF one at a time")]
    assert (one.post_low, one.post_high) == (14.0, 24.0)
    tgi = [r for r in report.ratios() if r.baseline == "TGI"]
    assert [r.n for r in tgi] == [1, 3] and all(r.ratio is None for r in tgi)
    assert (tgi[1].post_low, tgi[1].post_high) == (3.3, 3.5)
    table = report.launch_post_table()
    md = table.to_markdown()
    assert "20.0x" in md and "14x - 24x" in md and "not measured" in md
    assert "TGI is not measured here" in table._repr_html_()
    full = report.to_markdown()
    assert full.count("\n| ") >= len(report.runs) + 5 and "0.975x throughput" in full
    assert math.isclose(report.proxy.ratio, 295 / 302.5) and report.proxy.within_budget
    assert math.isclose(report.crosscheck.ratios()["output_tokens_per_s"], 1.1)
    per_min = report.crosscheck.ratios()["requests_per_min"]
    assert math.isclose(per_min, 0.5 * 60 / report.runs[3].requests_per_min, abs_tol=1e-4)


def test_ratios_compare_the_same_requests_when_vllm_ran_them() -> None:
    runs = [
        synthetic_run("vllm-offline", 400.0, count=4),
        synthetic_run("hf-single", 20.0, count=2, batch_size=1),
    ]
    report = bench.BenchReport("m", {}, {}, runs=runs)
    (only,) = [r for r in report.ratios() if r.baseline != "TGI"]
    assert math.isclose(only.ratio, 20.0) and "not the same requests" in only.note
    report.runs.append(synthetic_run("vllm-offline", 300.0, count=2))
    (only,) = [r for r in report.ratios() if r.baseline != "TGI"]
    assert math.isclose(only.ratio, 15.0) and "the same 2 requests" in only.note
    assert report.find("vllm-offline").num_requests == 4  # default: the whole workload
    bars = report.plot_throughput().figure.axes[0].patches
    assert [round(b.get_height()) for b in bars] == [400, 20]  # the plot shows the whole workload


def test_find_takes_the_median_of_repeated_rounds() -> None:
    runs = [synthetic_run("hf-single", t, batch_size=1) for t in (30.0, 10.0, 20.0)]
    report = bench.BenchReport("m", {}, {}, runs=runs)
    assert math.isclose(report.find("hf-single").output_tokens_per_s, 20.0)


def test_the_proxy_verdict() -> None:
    slow = bench.ProxyComparison(4, 1, deployment_tok_s=[90.0], direct_tok_s=[100.0])
    assert math.isclose(slow.ratio, 0.9) and not slow.within_budget
    assert "over" in slow._repr_html_()
    back = bench.ProxyComparison.from_dict(slow.to_dict())
    assert back == slow


def test_plots_are_drawn_and_saved(tmp_path: Path) -> None:
    report = synthetic_report()
    fig = report.plot_throughput(tmp_path / "t.png").figure
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * 4  # n=1 and n=3 bars for 4 engines
    assert ax.get_xticklabels()[0].get_text() == "vLLM offline"
    fig = report.plot_latency(tmp_path / "l.png").figure
    lines = fig.axes[0].get_lines()
    assert len(lines) == 4 and list(lines[0].get_xdata()) == [1, 4, 8]
    for name in ("t.png", "l.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.plot_latency()._repr_png_()[:4] == b"\x89PNG"  # a notebook shows it as is
