"""The report: the --json contract, the HTML and text summaries, the memory picture."""

from __future__ import annotations

import json

import pytest
from sizing_models import CONTRACT, LLAMA3_8B, SMOLLM2_135M, spec

from labkit import sizing

# --- output ----------------------------------------------------------------------------


def test_to_dict_is_json_with_the_cli_contract():
    report = sizing.size(spec(LLAMA3_8B), plan="infer2.l", max_model_len=8192)
    data = json.loads(json.dumps(report.to_dict()))
    assert data.keys() >= CONTRACT
    assert data["weights_bytes"] == report.weights_bytes
    assert data["budget"]["weights_bytes"] == report.budget.weights_bytes
    assert {p["name"] for p in data["plans"]} >= {"starter", "infer2.l"}
    assert data["smallest_fitting_plan"] == "infer2.l"
    assert data["vllm_args"] == [
        "--tensor-parallel-size", "1", "--dtype", "bfloat16", "--max-model-len", "8192",
        "--gpu-memory-utilization", "0.9",
    ]  # fmt: skip


def test_html_and_text_summaries():
    fits = sizing.size(spec(LLAMA3_8B), plan="infer2.l", max_model_len=8192)
    page = fits._repr_html_()
    assert "FITS" in page and "infer2.4xl" in page and "--max-model-len 8192" in page
    no = sizing.size(spec(LLAMA3_8B), plan="infer.s", max_model_len=8192)
    assert "DOES NOT FIT" in no._repr_html_() and "quantized" in no._repr_html_()
    assert "DOES NOT FIT" in no.to_text()


def test_the_longest_context_row_never_claims_a_fit_that_is_not_there():
    fits = sizing.size(spec(LLAMA3_8B), plan="infer2.l", max_model_len=8192)
    assert "largest max_model_len that fits" in fits._repr_html_()
    no = sizing.size(spec(LLAMA3_8B), plan="infer.s", max_model_len=8192)  # weights too big
    assert no.max_model_len_that_fits == 0 and "max_model_len that" not in no._repr_html_()
    too_long = sizing.size(spec(LLAMA3_8B), plan="infer2.l", max_model_len=8192, kv_cache_gib=0.25)
    assert not too_long.fits and too_long.max_model_len_that_fits > 0
    page = too_long._repr_html_()
    assert "largest max_model_len that would fit" in page and "that fits<" not in page


def test_status_cells_have_words_beside_their_signs():
    page = sizing.size(spec(LLAMA3_8B), plan="infer2.l").plans_html()
    assert "&#10004; fits" in page and "&#10008; no" in page


def test_plot_budget_returns_axes():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = sizing.size(spec(LLAMA3_8B), plan="infer2.4xl", max_model_len=8192, tp=2)
    ax = sizing.plot_budget(report)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["GPU 0", "GPU 1", "GPU 2", "GPU 3"]
    every = sizing.plot_budget(report, all_plans=True)
    assert len(every.get_xticklabels()) == len(report.plans)
    cpu = sizing.plot_budget(sizing.size(spec(SMOLLM2_135M), plan="basic"))
    assert [t.get_text() for t in cpu.get_xticklabels()] == ["RAM"]
    _, given = plt.subplots()
    assert sizing.plot_budget(report, ax=given) is given
    plt.close("all")
