"""labkit.templates.render: render with AI Core's semantics, the shipped template's rendering
and the runtime it starts."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from templates_common import (
    CPU_BINDINGS,
    GOLDEN,
    IMAGE,
    MODEL,
    REQUIRED,
    REV,
    SHIPPED,
    URL,
    _entrypoint,
    data,
    param,
    sub,
    text,
    with_default,
)

from labkit import templates
from labkit.templates import TemplateError

# --- the shipped template -------------------------------------------------------------------------


def test_shipped_template_declares_what_the_runtime_reads():
    tpl = data()
    assert tpl["metadata"]["name"] == "labkit-vllm"
    assert tpl["metadata"]["labels"]["scenarios.ai.sap.com/id"] == "labkit-vllm"
    names = templates.parameter_names(tpl)
    for name in ("image", "resourcePlan", "minReplicas", "maxReplicas", "port", "modelId",
                 "revision", "servedModelName", "numGpus", "dtype", "maxModelLen",
                 "gpuMemoryUtilization", "args", "imagePullSecret"):  # fmt: skip
        assert name in names
        assert param(tpl, name)["description"].strip()
    assert templates.artifact_names(tpl) == ["model"]
    rendered = templates.render(tpl, REQUIRED, {"model": URL})
    ep = _entrypoint()
    runtime_names = {f.env for f in ep.ENV_FLAGS} | {"MODEL_ID", "REVISION", "MODEL_SERVE_NAME",
                                                      "ARG", "STORAGE_URI"}  # fmt: skip
    assert set(rendered.env) <= runtime_names
    assert {"MODEL_ID", "REVISION", "MODEL_SERVE_NAME", "NUM_SHARD", "DTYPE", "MAX_MODEL_LEN",
            "GPU_MEMORY_UTILIZATION", "ARG", "STORAGE_URI"} <= set(rendered.env)  # fmt: skip
    assert "PORT" not in rendered.env  # Knative reserves it and sets it to the containerPort
    assert rendered.storage_uri == URL
    assert templates.lint(SHIPPED).ok


@pytest.mark.parametrize("bindings", [REQUIRED, CPU_BINDINGS], ids=["gpu", "cpu"])
def test_rendered_env_starts_the_runtime(bindings, tmp_path):
    """The entrypoint accepts every rendered setting and builds vLLM's command from them."""
    ep = _entrypoint()
    rendered = templates.render(SHIPPED, bindings, {"model": URL})
    model = ep.Model(tmp_path, MODEL, REV)
    env = {**rendered.env, "PORT": str(rendered.port)}
    command = ep.build_command(model, env, python="python")
    assert command[command.index("--port") + 1] == "8080"
    assert command[command.index("--served-model-name") + 1] == MODEL
    if bindings is CPU_BINDINGS:
        assert "--enforce-eager" in command
        assert command[command.index("--max-model-len") + 1] == "2048"


# Tensor parallelism on two GPUs, with the /dev/shm bindings step 05 adds for it.
TP2_BINDINGS = templates.with_shm({**REQUIRED, "resourcePlan": "infer2.4xl", "numGpus": "2"})
GOLDEN_BINDINGS = {"gpu": REQUIRED, "cpu": CPU_BINDINGS, "tp2": TP2_BINDINGS}


@pytest.mark.parametrize("name", sorted(GOLDEN_BINDINGS))
def test_golden_renders(name):
    got = templates.render(SHIPPED, GOLDEN_BINDINGS[name], {"model": URL}).to_yaml()
    golden = GOLDEN / f"vllm-serving.{name}.yaml"
    if os.environ.get("LABKIT_UPDATE_GOLDEN"):
        golden.write_text(got)
    assert got == golden.read_text(), f"re-create with LABKIT_UPDATE_GOLDEN=1 if {golden} is stale"


def _shm(rendered: templates.Rendered) -> tuple[list, list]:
    return rendered.predictor["volumes"], rendered.container["volumeMounts"]


def test_dev_shm_only_with_tensor_parallelism():
    """AI Core has no conditionals: /dev/shm is the value of the volumes and volumeMounts
    parameters (default none), which ``with_shm`` binds only for more than one GPU."""
    one = templates.render(
        SHIPPED, templates.with_shm({**REQUIRED, "numGpus": "1"}), {"model": URL}
    )
    assert _shm(one) == ([], [])
    assert _shm(templates.render(SHIPPED, REQUIRED, {"model": URL})) == ([], [])  # the defaults
    two = templates.render(SHIPPED, TP2_BINDINGS, {"model": URL})
    assert _shm(two) == (
        [{"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}}],
        [{"name": "shm", "mountPath": "/dev/shm"}],
    )
    assert two.env["NUM_SHARD"] == "2"
    # Back to one GPU: the shm bindings go, whatever the values held before.
    assert set(templates.with_shm({**TP2_BINDINGS, "numGpus": "1"})) == set(REQUIRED) | {
        "resourcePlan", "numGpus"}  # fmt: skip


# --- render semantics -----------------------------------------------------------------------------


def test_binding_beats_default_and_default_fills_in():
    plain = templates.render(SHIPPED, REQUIRED, {"model": URL})
    assert plain.env["DTYPE"] == "auto" and plain.resource_plan == "infer.s"
    assert plain.parameters["dtype"] == "auto"
    bound = templates.render(
        SHIPPED,
        {**REQUIRED, "dtype": "half", "resourcePlan": "infer.m", "port": 9000},
        {"model": URL},
    )
    assert bound.env["DTYPE"] == "half"
    assert bound.resource_plan == "infer.m" and bound.resource_label == "ai.sap.com/resourcePlan"
    assert bound.port == 9000 and bound.container["ports"][0]["containerPort"] == 9000


def test_rendered_fields():
    r = templates.render(
        SHIPPED, {**REQUIRED, "minReplicas": "0", "maxReplicas": 3}, {"model": URL}
    )
    assert (r.executable_id, r.scenario_id) == ("labkit-vllm", "labkit-vllm")
    assert (r.min_replicas, r.max_replicas) == (0, 3)
    assert r.image == IMAGE and r.container["name"] == "kserve-container"
    assert r.image_pull_secrets == ["labkit-registry"]
    assert r.annotations["autoscaling.knative.dev/metric"] == "concurrency"
    assert r.labels == {"ai.sap.com/resourcePlan": "infer.s"}
    assert r.predictor["containers"][0] is r.container
    doc = yaml.safe_load(r.to_yaml())
    assert doc["kind"] == "InferenceService" and doc["spec"]["predictor"] == r.predictor
    assert json.loads(json.dumps(r.to_dict()))["storage_uri"] == URL


@pytest.mark.parametrize("missing", ["image", "modelId", "revision"])
def test_missing_required_parameter_is_an_error(missing):
    bound = {k: v for k, v in REQUIRED.items() if k != missing}
    with pytest.raises(TemplateError, match=f"{missing} have no default") as exc:
        templates.render(SHIPPED, bound, {"model": URL})
    assert "parameterBindings" in str(exc.value)


def test_artifact_placeholder_needs_a_url_and_a_declared_name():
    with pytest.raises(TemplateError, match="no URL for input artifact model"):
        templates.render(SHIPPED, REQUIRED, {})
    with pytest.raises(TemplateError, match="undeclared input artifact"):
        templates.render(SHIPPED, REQUIRED, {"model": URL, "weights": URL})
    with pytest.raises(TemplateError, match="undeclared parameter"):
        templates.render(SHIPPED, {**REQUIRED, "modelID": MODEL}, {"model": URL})


def test_render_is_textual_like_ai_core():
    """Placeholders may carry spaces; values land as text, so a quote in a value breaks YAML."""
    source = sub(text(), "{{inputs.parameters.dtype}}", "{{ inputs.parameters.dtype }}")
    assert templates.render(source, REQUIRED, {"model": URL}).env["DTYPE"] == "auto"
    args = '--chat-template "{% for m in messages %}{{m}}{% endfor %}" --seed 1'
    assert templates.render(SHIPPED, {**REQUIRED, "args": args}, {"model": URL}).env["ARG"] == args
    with pytest.raises(TemplateError, match=r"spec.template.spec is not valid YAML once rendered"):
        templates.render(SHIPPED, {**REQUIRED, "modelId": 'org/"quoted"'}, {"model": URL})


def test_render_refuses_non_string_defaults_and_values():
    with pytest.raises(TemplateError, match="int default"):
        templates.render(with_default("port", 8080), REQUIRED, {"model": URL})
    with pytest.raises(TemplateError, match="binding of dtype is a list"):
        templates.render(SHIPPED, {**REQUIRED, "dtype": ["half"]}, {"model": URL})
