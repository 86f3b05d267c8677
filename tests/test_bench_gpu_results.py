"""Step 08's benchmark on the lent H100 (bench/gpu/bench.py, recorded into bench/gpu/results/; CI
has no GPU, so these tests read the committed results): bench/README.md quotes what the lab's own
report code makes of them, figure for figure."""

from __future__ import annotations

from pathlib import Path

import pytest

from labkit.bench import BenchReport

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "gpu" / "results"
README = (ROOT / "bench" / "README.md").read_text()
ENGINES = ("vllm-offline", "vllm-server-direct", "hf-single", "hf-static")
LOANS = {"bench": RESULTS / "bench", "first loan": RESULTS / "bench-first-loan"}


def _report(loan: str) -> BenchReport:
    return BenchReport.load(LOANS[loan] / "results.json.gz")


@pytest.mark.parametrize("loan", sorted(LOANS))
def test_each_loan_ran_every_engine_on_the_h100_and_finished_every_request(loan: str) -> None:
    report = _report(loan)
    assert report.machine["gpu"] == "NVIDIA H100 80GB HBM3"
    assert report.machine["versions"]["vllm"] == "0.26.0"
    kinds = {(r.engine, r.n) for r in report.runs}
    assert kinds == {(e, n) for e in ENGINES for n in (1, 3)}
    for run in report.runs:
        assert run.completed == run.num_requests, run.line()
        assert run.output_tokens_per_s > 0


def test_the_readme_quotes_the_kept_runs_table_row_for_row() -> None:
    runs = [line for line in _report("bench").to_markdown().splitlines() if line.startswith("| ")]
    assert len(runs) > 12  # the header and 12 runs, then the ratio table
    for line in runs[: 1 + 12]:
        assert line in README, line


def test_the_readme_quotes_the_ratios_the_report_computes() -> None:
    ratios = {(r.n, r.vllm, r.baseline): r.ratio for r in _report("bench").ratios()}
    for (n, vllm, baseline), ratio in ratios.items():
        if ratio is None:  # TGI: not measured
            continue
        row = f"| {n} | {vllm} | {baseline} | {ratio:.1f}x |"
        assert row in README, row


def test_the_readme_quotes_the_first_loans_vllm_and_hf_figures() -> None:
    report = _report("first loan")
    for run in report.runs:
        if run.engine == "vllm-offline" or run.engine.startswith("hf"):
            figure = f"{run.output_tokens_per_s:,.1f}"
            assert figure in README, (run.line(), figure)
