"""labkit.templates.values: configuration bindings and the values the lab state decides."""

from __future__ import annotations

import pytest
from templates_common import (
    IMAGE,
    MODEL,
    REQUIRED,
    REV,
    SHIPPED,
    URL,
    _lab_state,
)

from labkit import templates
from labkit.templates import LintContext, TemplateError

# --- bindings -------------------------------------------------------------------------------------


def test_bindings_cover_declared_names_only():
    out = templates.bindings(SHIPPED, {"revision": REV, "image": IMAGE, "minReplicas": 0},
                             {"model": "art-1"})  # fmt: skip
    assert out == {
        "parameterBindings": [
            {"key": "image", "value": IMAGE},
            {"key": "minReplicas", "value": "0"},
            {"key": "revision", "value": REV},
        ],
        "inputArtifactBindings": [{"key": "model", "artifactId": "art-1"}],
    }
    later = templates.bindings(SHIPPED, REQUIRED, {"model": None})
    assert later["inputArtifactBindings"] == [{"key": "model", "artifactId": None}]
    with pytest.raises(TemplateError, match="no parameter modelID"):
        templates.bindings(SHIPPED, {"modelID": MODEL}, {})
    with pytest.raises(TemplateError, match="no input artifact weights"):
        templates.bindings(SHIPPED, {}, {"weights": "x"})


# --- lab state ------------------------------------------------------------------------------------


def _as_published(cfg) -> str:
    """The shipped template with the lab's ids, as step 05 publishes it."""
    return templates.set_ids(SHIPPED.read_text(), executable=cfg.executable, scenario=cfg.scenario)


def test_the_configuration_binds_dev_shm_only_for_tensor_parallelism(lab_env, tmp_path):
    from labkit.config import load_config

    cfg = load_config(template_repo_dir=tmp_path / "git")
    state = _lab_state(cfg)
    one = templates.lab_values(cfg, state)
    keys = {b["key"] for b in templates.bindings(SHIPPED, one.values, {})["parameterBindings"]}
    assert one.values["numGpus"] == "1" and not {"volumes", "volumeMounts"} & keys
    size = state.require("size")
    state.record("size", {**size, "plan": "infer2.4xl", "tensor_parallel_size": 2})
    two = templates.lab_values(cfg, state)
    out = templates.bindings(SHIPPED, two.values, {})["parameterBindings"]
    bound = {b["key"]: b["value"] for b in out}
    assert bound["numGpus"] == "2"
    assert bound["volumes"] == "[{name: shm, emptyDir: {medium: Memory, sizeLimit: 8Gi}}]"
    assert bound["volumeMounts"] == "[{name: shm, mountPath: /dev/shm}]"
    rendered = templates.render(SHIPPED, two.values, two.artifacts)
    assert rendered.container["volumeMounts"] == [{"name": "shm", "mountPath": "/dev/shm"}]


def test_lab_values_and_context_from_state(lab_env, tmp_path):
    from labkit.config import load_config

    cfg = load_config(template_repo_dir=tmp_path / "git")
    state = _lab_state(cfg)
    values = templates.lab_values(cfg, state, max_model_len=2048)
    assert values.values["resourcePlan"] == "basic" and values.values["args"] == "--enforce-eager"
    assert values.values["image"] == IMAGE and values.artifacts == {"model": URL}
    assert values.values["maxModelLen"] == "2048" and not values.notes
    assert "volumes" not in values.values and "volumeMounts" not in values.values  # one GPU
    ctx = LintContext.from_state(cfg, state, values.values, check_hub=False)
    assert (ctx.attention_heads, ctx.model_max_len, ctx.revision) == (9, 8192, REV)
    assert ctx.scenario == cfg.scenario
    report = templates.lint(_as_published(cfg), context=ctx)
    assert not report.errors and not report.warnings, report.to_text()
    assert ctx.revision_exists is None
    hub_ctx = LintContext.from_state(cfg, state, values.values)
    assert hub_ctx.revision_exists(MODEL, REV) is True  # the verified download proves it


def test_without_an_image_the_placeholder_warns_but_lints(lab_env, tmp_path):
    from labkit.config import load_config

    cfg = load_config(template_repo_dir=tmp_path / "git")
    state = _lab_state(cfg, image=False)
    values = templates.lab_values(cfg, state)
    assert values.values["image"].endswith(f"/aicore-vllm:{templates.PLACEHOLDER_IMAGE_TAG}")
    assert any("no image" in n for n in values.notes)
    report = templates.lint(_as_published(cfg), context=LintContext.from_state(
        cfg, state, values.values, check_hub=False))  # fmt: skip
    assert report.ok and [f.rule for f in report.warnings] == ["image-missing"]
    rendered = templates.render(SHIPPED, values.values, values.artifacts)
    assert rendered.image == values.values["image"]


# --- the tenant's service plan ---------------------------------------------------------------------


def test_a_plan_the_service_plan_lacks_is_warned_about(lab_env, tmp_path, monkeypatch):
    """SAP Help, "Choose an Instance": the free service plan takes only starter."""
    from labkit.config import load_config
    from labkit.templates.values import plan_availability

    cfg = load_config(template_repo_dir=tmp_path / "git")
    state = _lab_state(cfg)
    free = templates.lab_values(cfg, state, service_plan="free")
    assert any("not available on the free service plan" in n for n in free.notes)
    assert not templates.lab_values(cfg, state, service_plan="standard").notes
    monkeypatch.setenv("LABKIT_AICORE_SERVICE_PLAN", "free")
    cfg = load_config(template_repo_dir=tmp_path / "git")  # the setting: Config.aicore_service_plan
    assert any("free service plan" in n for n in templates.lab_values(cfg, state).notes)
    ok = plan_availability("starter", public=True, service_plan="free", tenant=True)
    assert ok is None
    unknown = plan_availability("infer.s", public=True, service_plan=None, tenant=True)
    assert unknown and "only starter" in unknown
    assert plan_availability("infer.s", public=True, service_plan=None, tenant=False) is None
    internal = plan_availability("infer2.l", public=False, service_plan="standard", tenant=True)
    assert internal and "not a public plan" in internal
