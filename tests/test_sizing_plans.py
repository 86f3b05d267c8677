"""The plan catalogue: shipped plans, a user TOML, AI Core instance types, the smallest that fits."""

from __future__ import annotations

import pytest
from sizing_models import LLAMA3_8B, SMOLLM2_135M, spec

from labkit import sizing
from labkit.errors import SizingError
from labkit.sizing import GiB

# --- plans -----------------------------------------------------------------------------


def test_shipped_catalogue():
    catalogue = sizing.load_catalogue()
    assert catalogue.names()[:2] == ["starter", "basic"]
    assert {"infer.s", "infer.m", "infer.l", "train.l", "infer2.l", "infer2.4xl", "basic.8x",
            "train2.8xl", "train2.8xxl"} <= set(catalogue.names())  # fmt: skip
    assert [p.order for p in catalogue.plans] == sorted(p.order for p in catalogue.plans)
    assert all(catalogue.get(n).gpus == 0 for n in ("starter", "basic", "basic.8x"))
    t4 = catalogue.gpu_type(catalogue.get("infer.s").gpu)
    assert (t4.usable_gib, t4.compute_capability) == (14.58, 7.5)
    assert catalogue.get("infer2.4xl").gpus == 4 and catalogue.get("train2.8xxl").gpu == "A100-40GB"
    assert catalogue.get("basic").memory_bytes == 11 * 10**9
    assert "<table>" in catalogue._repr_html_()


def test_smallest_fitting_plan_is_chosen_without_a_plan():
    report = sizing.size(spec(LLAMA3_8B), max_model_len=8192)
    assert report.plan == report.smallest_fitting_plan == "infer2.l"
    assert report.fits
    verdicts = {p.name: p for p in report.plans}
    assert not verdicts["infer.s"].fits and verdicts["infer2.4xl"].fits
    assert verdicts["infer2.l"].kv_cache_tokens == report.kv_cache_tokens
    assert sizing.size(spec(SMOLLM2_135M)).plan == "basic"


def test_no_plan_fits_says_so():
    huge = spec(LLAMA3_8B, hidden_size=16384, num_hidden_layers=126, intermediate_size=53248,
                num_attention_heads=128)  # fmt: skip
    report = sizing.size(huge, max_model_len=4096)
    assert not report.fits and report.smallest_fitting_plan is None
    assert report.reasons[0].startswith("no plan in the catalogue fits")


def test_extra_plans_file(tmp_path):
    extra = tmp_path / "plans.toml"
    extra.write_text(
        '[gpus.L40S]\nusable_gib = 44.4\ncompute_capability = 8.9\n\n'
        '[[plans]]\nname = "team.l40s"\norder = 75\ngpus = 1\ngpu = "L40S"\n\n'
        '[[plans]]\nname = "basic"\norder = 20\ngpus = 0\nmemory_gb = 12\n'
    )  # fmt: skip
    catalogue = sizing.load_catalogue(extra)
    assert catalogue.get("team.l40s").gpu == "L40S"
    assert catalogue.get("basic").memory_bytes == 12 * 10**9
    assert catalogue.names().index("team.l40s") == catalogue.names().index("infer2.l") + 1
    report = sizing.size(spec(LLAMA3_8B), plan="team.l40s", catalogue=catalogue, max_model_len=8192)
    assert report.fits and report.gpu_type == "L40S"
    bad = tmp_path / "bad.toml"
    bad.write_text('[[plans]]\nname = "x"\norder = 1\ngpus = 1\ngpu = "Z80"\n')
    with pytest.raises(SizingError, match="unknown GPU type 'Z80'"):
        sizing.load_catalogue(bad)
    bad.write_text('[[plans]]\nname = "x"\norder = 1\nmemroy_gb = 3\n')
    with pytest.raises(SizingError, match="memroy_gb"):
        sizing.load_catalogue(bad)


INSTANCE_TYPES = {
    "instanceTypes": {
        "gpu_nvidia_a10g_1x": {"memory": "30Gi", "cpu": 7, "gpu": 1, "billableUnitsPerHour": 5},
        "cpu_2x8": {"memory": "8Gi", "cpu": 2, "gpu": 0, "billableUnitsPerHour": 0.5},
        "gpu_mystery_4x": {"memory": "120Gi", "cpu": 30, "gpu": 4, "billableUnitsPerHour": 20},
    }
}


def test_instance_types_from_the_ai_core_api():
    catalogue = sizing.load_catalogue().with_instance_types(INSTANCE_TYPES)
    a10g = catalogue.get("gpu_nvidia_a10g_1x")
    assert (a10g.kind, a10g.gpus, a10g.gpu, a10g.memory_bytes) == (
        "instanceType",
        1,
        "A10G",
        30 * GiB,
    )
    assert a10g.billable_units_per_hour == 5.0
    cpu = catalogue.get("cpu_2x8")
    assert cpu.gpus == 0 and catalogue.names().index("cpu_2x8") == 1  # between starter and basic
    mystery = catalogue.get("gpu_mystery_4x")
    assert mystery.gpu is None

    report = sizing.size(spec(SMOLLM2_135M), catalogue=catalogue)
    assert report.smallest_fitting_plan == "cpu_2x8"
    verdict = next(p for p in report.plans if p.name == "gpu_mystery_4x")
    assert not verdict.fits and "gpu_types" in verdict.reasons[0] and verdict.budget is None

    named = sizing.load_catalogue().with_instance_types(
        INSTANCE_TYPES, gpu_types={"gpu_mystery_4x": "L4"}
    )
    assert named.get("gpu_mystery_4x").gpu == "L4"
    assert sizing.size(spec(LLAMA3_8B), plan="gpu_mystery_4x", catalogue=named).fits


def test_instance_types_payload_must_have_the_api_shape():
    catalogue = sizing.load_catalogue()
    with pytest.raises(SizingError, match="instanceTypes"):
        catalogue.with_instance_types({"resources": {}})
    with pytest.raises(SizingError, match="billableUnitsPerHour"):
        catalogue.with_instance_types(
            {"instanceTypes": {"x": {"memory": "1Gi", "cpu": 1, "gpu": 0}}}
        )
    with pytest.raises(SizingError, match="memory"):
        catalogue.with_instance_types(
            {
                "instanceTypes": {
                    "x": {"memory": "lots", "cpu": 1, "gpu": 0, "billableUnitsPerHour": 1}
                }
            }
        )
    with pytest.raises(SizingError, match="unknown GPU type"):
        catalogue.with_instance_types(INSTANCE_TYPES, gpu_types={"gpu_mystery_4x": "Z80"})
