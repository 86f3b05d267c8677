"""labkit.templates: render with AI Core's semantics, one failing case per lint rule, bindings,
publishing to git, and `labkit template render|lint`."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from labkit_cli import labkit

from labkit import templates
from labkit.templates import LintContext, TemplateError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "templates" / "vllm-serving.yaml"
GOLDEN = Path(__file__).parent / "golden"
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
REV = "6d86325e0e6acc56868542c32e1a1e1a4e92b541"
IMAGE = "localhost:5000/labkit/aicore-vllm:v150326-01"
URL = "ai://default/models/smollm2/6d86325/HuggingFaceTB--SmolLM2-135M-Instruct.tar"
REQUIRED = {"image": IMAGE, "modelId": MODEL, "revision": REV}
# The local profile's configuration: a CPU plan, eager mode, a small context.
CPU_BINDINGS = {
    **REQUIRED,
    "resourcePlan": "basic",
    "servedModelName": MODEL,
    "dtype": "bfloat16",
    "maxModelLen": "2048",
    "args": "--enforce-eager",
}
SIZING = {"plan": "infer.s", "kv_cache_tokens": 200_000, "gpu_memory_utilization": 0.9}


def text() -> str:
    return SHIPPED.read_text()


def sub(source: str, old: str, new: str) -> str:
    """Replace the first ``old`` (which must be there) by ``new``."""
    assert old in source, old
    return source.replace(old, new, 1)


def data() -> dict[str, Any]:
    return templates.load(SHIPPED)


def param(tpl: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in tpl["spec"]["inputs"]["parameters"] if p["name"] == name)


def with_default(name: str, value: Any) -> dict[str, Any]:
    tpl = data()
    param(tpl, name)["default"] = value
    return tpl


def context(**changes: Any) -> LintContext:
    """A context in which the shipped template, bound to REQUIRED, has no finding."""
    base: dict[str, Any] = {
        "parameters": dict(REQUIRED),
        "scenario": "labkit-vllm",
        "image": IMAGE,
        "model_id": MODEL,
        "revision": REV,
        "revision_exists": lambda repo, rev: True,
        "attention_heads": 9,
        "model_type": "llama",
        "model_max_len": 8192,
        "sizing": dict(SIZING),
    }
    parameters = changes.pop("bind", {})
    base.update(changes)
    base["parameters"] = {**base["parameters"], **parameters}
    return LintContext(**base)


def _entrypoint() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "runtime_entrypoint_for_templates", ROOT / "runtime" / "entrypoint.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --- the shipped template ---------------------------------------------------------------------


def test_shipped_template_has_no_errors_and_no_warnings():
    report = templates.lint(SHIPPED)
    assert report.ok and not report.errors and not report.warnings, report.to_text()
    assert report.to_dict() == {"ok": True, "errors": [], "warnings": []}


def test_shipped_template_is_clean_against_a_matching_lab_state():
    report = templates.lint(SHIPPED, context=context())
    assert not report.errors and not report.warnings, report.to_text()
    cpu = context(bind=CPU_BINDINGS, sizing={**SIZING, "plan": "basic"})
    assert not templates.lint(SHIPPED, context=cpu).rules()


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


def test_lint_mirrors_the_entrypoints_settings():
    ep = _entrypoint()
    assert {f.env: f.kind for f in ep.ENV_FLAGS} == templates.RUNTIME_ENV_KINDS
    assert {f.env: f.flag for f in ep.ENV_FLAGS} == templates.RUNTIME_ENV_FLAGS
    assert tuple(ep.DTYPES) == templates.DTYPES


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


@pytest.mark.parametrize("name", ["gpu", "cpu"])
def test_golden_renders(name):
    bindings = REQUIRED if name == "gpu" else CPU_BINDINGS
    got = templates.render(SHIPPED, bindings, {"model": URL}).to_yaml()
    golden = GOLDEN / f"vllm-serving.{name}.yaml"
    if os.environ.get("LABKIT_UPDATE_GOLDEN"):
        golden.write_text(got)
    assert got == golden.read_text(), f"re-create with LABKIT_UPDATE_GOLDEN=1 if {golden} is stale"


# --- render semantics -----------------------------------------------------------------------


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


def test_load_errors_are_template_errors(tmp_path):
    with pytest.raises(TemplateError, match="cannot read the template"):
        templates.load(tmp_path / "nope.yaml")
    with pytest.raises(TemplateError, match="cannot read the template"):
        templates.load("nope.yaml")
    with pytest.raises(TemplateError, match="duplicate key 'kind'"):
        templates.load("apiVersion: x\nkind: a\nkind: b\n")
    with pytest.raises(TemplateError, match="no YAML mapping"):
        templates.load("- a\n- b\n")


# --- one failing case per rule -------------------------------------------------------------------


def _params_dropped() -> dict[str, Any]:
    tpl = data()
    tpl["spec"]["inputs"]["parameters"] = []
    return tpl


def _param_twice() -> dict[str, Any]:
    tpl = data()
    tpl["spec"]["inputs"]["parameters"].append(copy.deepcopy(param(tpl, "port")))
    return tpl


def _no_description() -> dict[str, Any]:
    tpl = data()
    del param(tpl, "dtype")["description"]
    return tpl


def _extra_param() -> dict[str, Any]:
    tpl = data()
    tpl["spec"]["inputs"]["parameters"].append(
        {"name": "unused", "type": "string", "default": "x", "description": "nothing"}
    )
    return tpl


def _spec_as_mapping() -> dict[str, Any]:
    tpl = data()
    rendered = templates.render(tpl, REQUIRED, {"model": URL})
    tpl["spec"]["template"]["spec"] = {"predictor": rendered.predictor}
    return tpl


def _no_shm() -> str:
    source = sub(text(), "            volumeMounts:\n              - name: shm\n"
                 "                mountPath: /dev/shm\n", "")  # fmt: skip
    return sub(source, 'default: "1"\n        description: "NUM_SHARD', 'default: "2"\n'
               '        description: "NUM_SHARD')  # fmt: skip


def _image_default(value: str) -> dict[str, Any]:
    return with_default("image", value)


CASES: list[tuple[str, str, Callable[[], Any], Callable[[], LintContext] | None]] = [
    ("yaml-parse", "error", lambda: "apiVersion: [unclosed\n", None),
    ("yaml-parse", "error", lambda: sub(text(), "kind: ServingTemplate\n",
                                        "kind: ServingTemplate\nkind: ServingTemplate\n"), None),
    ("api-version", "error", lambda: sub(text(), "ai.sap.com/v1alpha1", "ai.sap.com/v1"), None),
    ("kind", "error", lambda: sub(text(), "kind: ServingTemplate", "kind: WorkflowTemplate"), None),
    ("executable-id", "error", lambda: sub(text(), "  name: labkit-vllm", "  name: labkit_vllm"), None),
    ("executable-id", "error", lambda: sub(text(), "  name: labkit-vllm", "  name: Labkit-vLLM"), None),
    ("executable-id-unique", "error", lambda: text(),
     lambda: context(executables={"labkit-vllm": "labkit/other.yaml"})),
    ("executable-id-label", "warning", lambda: sub(text(), '    ai.sap.com/version: "1.0.0"',
     '    ai.sap.com/version: "1.0.0"\n    executables.ai.sap.com/id: "labkit-vllm"'), None),
    ("annotations-required", "error",
     lambda: sub(text(), '    executables.ai.sap.com/name: "labkit-vllm"\n', ""), None),
    ("labels-required", "error", lambda: sub(text(), '    ai.sap.com/version: "1.0.0"\n', ""), None),
    ("scenario-id", "error", lambda: sub(text(), 'scenarios.ai.sap.com/id: "labkit-vllm"',
                                         'scenarios.ai.sap.com/id: "labkit vllm!"'), None),
    ("metadata-strings", "error",
     lambda: sub(text(), 'ai.sap.com/version: "1.0.0"', "ai.sap.com/version: 1.0"), None),
    ("parameters", "error", _params_dropped, None),
    ("parameter-name", "error", _param_twice, None),
    ("parameter-name", "error", lambda: sub(text(), "- name: dtype", "- name: d type"), None),
    ("parameter-type", "error", lambda: sub(text(), 'default: "8080"', "default: 8080"), None),
    ("parameter-type", "error", lambda: sub(text(), "- name: port\n        type: string",
                                            "- name: port\n        type: integer"), None),
    ("parameter-description", "warning", _no_description, None),
    ("artifact-name", "error", lambda: text().replace("- name: model\n", "- name: model-tar\n")
     .replace("inputs.artifacts.model}}", "inputs.artifacts.model-tar}}"), None),
    ("placeholder-syntax", "error", lambda: sub(text(), "{{inputs.parameters.dtype}}",
                                                "{{inputs.parameter.dtype}}"), None),
    ("placeholder-undeclared", "error", lambda: sub(text(), "{{inputs.parameters.dtype}}",
                                                    "{{inputs.parameters.dtypo}}"), None),
    ("placeholder-unused", "warning", _extra_param, None),
    ("placeholder-location", "error", lambda: sub(text(), "for one Hugging Face model artifact",
                                                  "for {{inputs.parameters.modelId}}"), None),
    ("binding-unknown", "error", lambda: text(), lambda: context(bind={"imagePullSecrets": "x"})),
    ("template-api-version", "error", lambda: sub(text(), '"serving.kserve.io/v1beta1"',
                                                  '"serving.kserve.io/v1alpha2"'), None),
    ("inner-string", "error", _spec_as_mapping, None),
    ("inner-yaml", "error", lambda: sub(text(), "protocol: TCP", "protocol: TCP: udp"), None),
    ("inner-yaml", "error", lambda: sub(text(), '"{{inputs.parameters.resourcePlan}}"',
                                        '"{{inputs.parameters.resourcePlan}}'), None),
    ("inner-yaml", "error", lambda: text(), lambda: context(bind={"modelId": 'a"b'})),
    ("resource-label", "error", lambda: sub(text(), 'ai.sap.com/resourcePlan: "{{',
                                            'ai.sap.com/resourceplan: "{{'), None),
    ("resource-plan", "error", lambda: sub(text(), 'default: "infer.s"', 'default: "infer.xl"'), None),
    ("autoscaling", "error", lambda: sub(text(), 'metric: "concurrency"', 'metric: "latency"'), None),
    ("autoscaling", "error", lambda: sub(text(), 'default: "32"', 'default: "lots"'), None),
    ("autoscaling-llm", "warning", lambda: sub(text(), 'default: "32"', 'default: "2"'), None),
    ("autoscaling-llm", "warning", lambda: sub(text(), 'metric: "concurrency"', 'metric: "rps"'), None),
    ("predictor-schema", "error", lambda: sub(text(), "minReplicas: {{", "minReplica: {{"), None),
    ("predictor-schema", "error", lambda: sub(text(), 'value: "{{inputs.parameters.numGpus}}"',
                                              "value: {{inputs.parameters.numGpus}}"), None),
    ("kserve-container", "error", lambda: sub(text(), "- name: kserve-container", "- name: vllm"), None),
    ("container-port", "error", lambda: sub(text(), "                protocol: TCP\n",
     "                protocol: TCP\n              - containerPort: 9000\n"), None),
    ("container-port", "error", lambda: sub(text(), 'default: "8080"', 'default: "8012"'), None),
    ("replicas", "error", lambda: text(), lambda: context(bind={"minReplicas": "3"})),
    ("image-pinned", "warning", lambda: _image_default("docker.io/vllm/vllm-openai:latest"), None),
    ("image-pull-secret", "error", lambda: text(), lambda: context(bind={"imagePullSecret": "My_Secret"})),
    ("storage-uri", "error", lambda: sub(text(), 'value: "{{inputs.artifacts.model}}"',
                                         'value: "s3://bucket/model.tar"'), None),
    ("storage-uri", "error", lambda: sub(text(), "- name: STORAGE_URI", "- name: STORAGE_URL"), None),
    ("models-dir", "error", lambda: sub(text(), "mountPath: /dev/shm", "mountPath: /mnt/models"), None),
    ("models-dir", "error", lambda: sub(text(), "              - name: ARG\n",
     '              - name: MODELS_DIR\n                value: "/models"\n              - name: ARG\n'), None),
    ("reserved-env", "error", lambda: sub(text(), "              - name: ARG\n",
     '              - name: PORT\n                value: "8080"\n              - name: ARG\n'), None),
    ("reserved-env", "error", lambda: sub(text(), "              - name: ARG\n",
     '              - name: VLLM_PORT\n                value: "8000"\n              - name: ARG\n'), None),
    ("env-duplicate", "warning", lambda: sub(text(), "              - name: ARG\n",
     '              - name: DTYPE\n                value: "half"\n              - name: ARG\n'), None),
    ("env-value", "error", lambda: sub(text(), 'default: "auto"', 'default: "bf16"'), None),
    ("env-value", "error", lambda: text(), lambda: context(bind={"gpuMemoryUtilization": "90"})),
    ("revision-pinned", "warning", lambda: with_default("revision", "main"), None),
    ("vllm-args", "error", lambda: text(), lambda: context(bind={"args": "--quantization None"})),
    ("vllm-args", "error", lambda: text(), lambda: context(bind={"args": "--model /models/x"})),
    ("vllm-args", "error", lambda: text(), lambda: context(bind={"args": "--port=9000"})),
    ("vllm-args", "error", lambda: text(), lambda: context(bind={"args": "--seed 'unclosed"})),
    ("vllm-args-override", "warning", lambda: text(),
     lambda: context(bind={"maxModelLen": "2048", "args": "--max_model_len 4096"})),
    ("dev-shm", "warning", _no_shm, None),
    ("lab-state", "warning", lambda: text(), lambda: context(notes=["no sizing result: run 01"])),
    ("scenario", "error", lambda: text(), lambda: context(scenario="other-scenario")),
    ("model-id", "error", lambda: text(), lambda: context(bind={"modelId": "org/another"})),
    ("revision", "error", lambda: text(), lambda: context(bind={"revision": "main"})),
    ("revision", "error", lambda: text(), lambda: context(bind={"revision": "a" * 40})),
    ("revision", "error", lambda: text(), lambda: context(revision_exists=lambda r, v: False)),
    ("revision-unverified", "warning", lambda: text(),
     lambda: context(revision_exists=lambda r, v: None)),
    ("image-tag", "error", lambda: text(),
     lambda: context(bind={"image": "localhost:5000/labkit/vllm:latest"})),
    ("image-tag", "error", lambda: text(),
     lambda: context(bind={"image": "localhost:5000/labkit/aicore-vllm:v321326-01"})),
    ("image-missing", "warning", lambda: text(), lambda: context(
        image=None, bind={"image": f"localhost:5000/labkit/aicore-vllm:{templates.PLACEHOLDER_IMAGE_TAG}"})),
    ("image-state", "warning", lambda: text(),
     lambda: context(image="localhost:5000/labkit/aicore-vllm:v150326-02")),
    ("sizing-plan", "warning", lambda: text(), lambda: context(sizing={**SIZING, "plan": "infer.m"})),
    ("sizing-plan", "warning", lambda: text(), lambda: context(bind={"gpuMemoryUtilization": "0.8"})),
    ("tensor-parallel", "error", lambda: text(),
     lambda: context(bind={"resourcePlan": "infer2.4xl", "numGpus": "2"})),
    ("tensor-parallel", "error", lambda: text(),
     lambda: context(attention_heads=32, bind={"resourcePlan": "infer2.4xl", "numGpus": "8"})),
    ("tensor-parallel", "error", lambda: text(),
     lambda: context(bind={"resourcePlan": "basic", "numGpus": "3"}, attention_heads=9)),
    ("tensor-parallel-idle", "warning", lambda: text(),
     lambda: context(attention_heads=32, bind={"resourcePlan": "infer2.4xl", "numGpus": "2"})),
    ("dtype", "error", lambda: text(), lambda: context(bind={"dtype": "bfloat16"})),
    ("dtype", "error", lambda: text(), lambda: context(model_type="gemma2", bind={"dtype": "half"})),
    ("max-model-len", "error", lambda: text(), lambda: context(bind={"maxModelLen": "32k"})),
    ("max-model-len", "error", lambda: text(),
     lambda: context(sizing={**SIZING, "kv_cache_tokens": 4096})),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "level", "make", "ctx"),
    CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)],
)
def test_each_rule_fails_its_case(rule, level, make, ctx):
    report = templates.lint(make(), context=ctx() if ctx else None)
    found = report.errors if level == "error" else report.warnings
    assert rule in {f.rule for f in found}, report.to_text()
    finding = next(f for f in found if f.rule == rule)
    assert ":" in finding.message  # what is wrong, then what to do
    assert report.ok == (not report.errors)
    if level == "warning":
        assert report.ok, report.to_text()  # a warning alone never blocks


def test_every_rule_has_a_failing_case():
    assert {c[0] for c in CASES} == set(templates.RULES)


def test_inner_yaml_error_names_the_string_and_line():
    report = templates.lint(sub(text(), "protocol: TCP", "protocol: TCP: udp"))
    finding = next(f for f in report.errors if f.rule == "inner-yaml")
    assert finding.message.startswith("spec.template.spec is not valid YAML once rendered (line ")


def test_unreadable_labels_do_not_cascade():
    report = templates.lint(sub(text(), '"{{inputs.parameters.resourcePlan}}"',
                                '"{{inputs.parameters.resourcePlan}}'))  # fmt: skip
    assert report.rules() == {"inner-yaml"}, report.to_text()


def test_empty_default_says_how_to_write_it():
    report = templates.lint(with_default("args", None))
    assert any('default: ""' in f.message for f in report.errors if f.rule == "parameter-type")


def test_unbound_required_parameters_do_not_raise_false_schema_errors():
    """Without bindings the template-only lint cannot know image or revision: no finding for them."""
    report = templates.lint(SHIPPED)
    assert "predictor-schema" not in report.rules()
    bad = templates.lint(SHIPPED, context=context(bind={"port": "http"}))
    assert any("containerPort" in f.message for f in bad.errors if f.rule == "predictor-schema")


def test_lint_folder_finds_duplicate_executable_ids(tmp_path):
    (tmp_path / "a.yaml").write_text(text())
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yml").write_text(text())
    reports = templates.lint_folder(tmp_path)
    assert reports["a.yaml"].ok
    assert "executable-id-unique" in {f.rule for f in reports["sub/b.yml"].errors}


def test_report_shapes():
    report = templates.lint(sub(text(), 'default: "32"', 'default: "2"'), context=None)
    data_ = report.to_dict()
    assert set(data_) == {"ok", "errors", "warnings"} and data_["ok"] is True
    assert data_["warnings"][0] == {
        "rule": "autoscaling-llm",
        "message": report.warnings[0].message,
    }
    assert "autoscaling-llm" in report._repr_html_()
    assert report.raise_for_errors() is report
    bad = templates.lint("kind: nothing\n")
    with pytest.raises(TemplateError, match="lint error"):
        bad.raise_for_errors()


# --- bindings, scenario, publishing ---------------------------------------------------------------


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


def test_set_scenario_changes_only_the_label():
    out = templates.set_scenario(text(), "team-llms")
    assert templates.load(out)["metadata"]["labels"]["scenarios.ai.sap.com/id"] == "team-llms"
    assert out.replace('"team-llms"', '"labkit-vllm"') == text()
    assert templates.set_scenario(text(), "labkit-vllm") == text()
    with pytest.raises(TemplateError, match="scenario id"):
        templates.set_scenario(text(), "no spaces please")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip


def test_publish_commits_once_per_change(tmp_path):
    repo = tmp_path / "templates-git"
    first = templates.publish(text(), repo, "labkit/vllm-serving.yaml", "add the template")
    assert len(first) == 40 and git(repo, "rev-parse", "HEAD") == first
    assert git(repo, "branch", "--show-current") == "main"
    assert (repo / "labkit" / "vllm-serving.yaml").read_text() == text()
    again = templates.publish(text(), repo, "labkit/vllm-serving.yaml", "add the template")
    assert again == first and git(repo, "rev-list", "--count", "HEAD") == "1"
    changed = templates.set_scenario(text(), "team-llms")
    second = templates.publish(changed, repo, "labkit/vllm-serving.yaml", "scenario team-llms")
    assert second != first and git(repo, "rev-list", "--count", "HEAD") == "2"
    assert git(repo, "status", "--porcelain") == ""
    assert templates.published_executables(repo, "labkit") == {
        "labkit-vllm": "labkit/vllm-serving.yaml"
    }
    assert templates.published_executables(repo, "labkit", exclude="labkit/vllm-serving.yaml") == {}


def test_publish_never_uses_an_enclosing_repository(tmp_path):
    outer = tmp_path / "outer"
    outer.mkdir()
    git(outer, "init", "-q", "-b", "main")
    inner = outer / "nested" / "templates-git"
    templates.publish(text(), inner, "labkit/t.yaml", "nested")
    assert (inner / ".git").is_dir()
    assert git(outer, "rev-list", "--all") == ""  # nothing committed to the outer repo


@pytest.mark.parametrize("path", ["../escape.yaml", "/abs.yaml", "labkit/t.txt", ".git/x.yaml"])
def test_publish_refuses_bad_paths(tmp_path, path):
    with pytest.raises(TemplateError):
        templates.publish(text(), tmp_path / "repo", path, "x")


def test_publish_refuses_what_is_not_yaml(tmp_path):
    with pytest.raises(TemplateError, match="not valid YAML"):
        templates.publish("a: [b\n", tmp_path / "repo", "labkit/t.yaml", "x")


# --- lab state ------------------------------------------------------------------------------------


def _lab_state(cfg, image: bool = True):
    from labkit.state import State

    state = State(cfg.state_file)
    snapshot = cfg.lab_dir / "snap"
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "config.json").write_text(json.dumps({
        "model_type": "llama", "num_attention_heads": 9, "num_key_value_heads": 3,
        "hidden_size": 576, "num_hidden_layers": 30, "max_position_embeddings": 8192,
    }))  # fmt: skip
    state.record("size", {"plan": "basic", "tensor_parallel_size": 1, "dtype": "bfloat16",
                          "max_model_len": 8192, "gpu_memory_utilization": 0.9,
                          "kv_cache_tokens": 186_368})  # fmt: skip
    state.record("download", {"repo_id": MODEL, "revision": REV, "snapshot_dir": str(snapshot)})
    state.record("upload", {"artifact_url": URL})
    if image:
        state.record("image", {"reference": IMAGE})
    return state


def test_lab_values_and_context_from_state(lab_env, tmp_path):
    from labkit.config import load_config

    cfg = load_config(template_repo_dir=tmp_path / "git")
    state = _lab_state(cfg)
    values = templates.lab_values(cfg, state, max_model_len=2048)
    assert values.values["resourcePlan"] == "basic" and values.values["args"] == "--enforce-eager"
    assert values.values["image"] == IMAGE and values.artifacts == {"model": URL}
    assert values.values["maxModelLen"] == "2048" and not values.notes
    ctx = LintContext.from_state(cfg, state, values.values, check_hub=False)
    assert (ctx.attention_heads, ctx.model_max_len, ctx.revision) == (9, 8192, REV)
    report = templates.lint(SHIPPED, context=ctx)
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
    report = templates.lint(SHIPPED, context=LintContext.from_state(
        cfg, state, values.values, check_hub=False))  # fmt: skip
    assert report.ok and [f.rule for f in report.warnings] == ["image-missing"]
    rendered = templates.render(SHIPPED, values.values, values.artifacts)
    assert rendered.image == values.values["image"]


# --- CLI ------------------------------------------------------------------------------------------


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run `labkit ARGS` in this process: (exit code, stdout, stderr)."""
    from labkit.cli import main

    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_lint_json_contract(tmp_path):
    """The console script itself: one JSON object on stdout, exit 0 / 1 / 2."""
    ok = labkit("template", "lint", str(SHIPPED), "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"ok": True, "errors": [], "warnings": []}
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(sub(text(), "- name: kserve-container", "- name: vllm"))
    bad = labkit("template", "lint", str(bad_file), "--json")
    assert bad.returncode == 1
    out = json.loads(bad.stdout)
    assert out["ok"] is False and set(out) == {"ok", "errors", "warnings"}
    assert {"rule", "message"} == set(out["errors"][0])
    assert "kserve-container" in {e["rule"] for e in out["errors"]}


def test_cli_lint_text_and_user_errors(capsys, tmp_path):
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text(sub(text(), "- name: kserve-container", "- name: vllm"))
    code, out, _ = cli(capsys, "template", "lint", str(bad_file))
    assert code == 1 and "error   kserve-container:" in out and "not ok" in out
    code, out, err = cli(capsys, "template", "lint", str(tmp_path / "nope.yaml"), "--json")
    assert code == 2 and out == ""
    assert err.startswith("labkit: error: cannot read the template")
    assert len(err.strip().splitlines()) == 1
    broken = tmp_path / "broken.yaml"
    broken.write_text("apiVersion: [unclosed\n")
    code, out, err = cli(capsys, "template", "lint", str(broken), "--json")
    assert code == 1 and json.loads(out)["errors"][0]["rule"] == "yaml-parse"


def test_cli_lint_with_bindings(capsys):
    code, out, _ = cli(capsys, "template", "lint", str(SHIPPED), "--set", "numGpus=3",
                       "--set", "resourcePlan=infer2.4xl", "--json")  # fmt: skip
    assert code == 0  # warnings alone pass
    assert {w["rule"] for w in json.loads(out)["warnings"]} == {"tensor-parallel-idle"}
    code, out, _ = cli(capsys, "template", "lint", str(SHIPPED), "--set", "dtype=bf16", "--json")
    assert code == 1 and "env-value" in {e["rule"] for e in json.loads(out)["errors"]}
    code, _, err = cli(capsys, "template", "lint", str(SHIPPED), "--set", "novalue")
    assert code == 2 and "KEY=VALUE" in err


def test_cli_lint_with_the_lab_state(capsys, lab_env, tmp_path, monkeypatch):
    from labkit.config import load_config

    monkeypatch.setenv("LABKIT_TEMPLATE_REPO_DIR", str(tmp_path / "git"))
    _lab_state(load_config())
    # Already published under its own name: that copy is this template, not a clash.
    templates.publish(text(), tmp_path / "git", "labkit/vllm-serving.yaml", "publish")
    args = [a for k, v in CPU_BINDINGS.items() for a in ("--set", f"{k}={v}")]
    code, out, _ = cli(capsys, "template", "lint", str(SHIPPED), "--lab-state", *args, "--json")
    assert code == 0 and json.loads(out) == {"ok": True, "errors": [], "warnings": []}
    code, out, _ = cli(capsys, "template", "lint", str(SHIPPED), "--lab-state", *args,
                       "--set", "revision=" + "b" * 40, "--json")  # fmt: skip
    assert code == 1 and "revision" in {e["rule"] for e in json.loads(out)["errors"]}
    templates.publish(text(), tmp_path / "git", "labkit/copy.yaml", "a copy")
    code, out, _ = cli(capsys, "template", "lint", str(SHIPPED), "--lab-state", *args, "--json")
    assert code == 1 and "executable-id-unique" in {e["rule"] for e in json.loads(out)["errors"]}


def test_cli_render(capsys):
    args = ["template", "render", str(SHIPPED), "--artifact", f"model={URL}"]
    args += [a for k, v in CPU_BINDINGS.items() for a in ("--set", f"{k}={v}")]
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    assert out == (GOLDEN / "vllm-serving.cpu.yaml").read_text()
    code, out, _ = cli(capsys, *args, "--json")
    assert code == 0 and json.loads(out)["resource_plan"] == "basic"
    code, out, err = cli(capsys, "template", "render", str(SHIPPED), "--artifact", f"model={URL}")
    assert code == 2 and out == "" and "have no default and no binding" in err
