"""labkit.templates.rules: the shipped template is clean, one failing case per lint rule, the
report's shapes."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from templates_common import (
    CPU_BINDINGS,
    REQUIRED,
    SHIPPED,
    SIZING,
    URL,
    _entrypoint,
    context,
    data,
    param,
    sub,
    text,
    with_default,
)

from labkit import templates
from labkit.templates import LintContext, TemplateError

# --- the shipped template -------------------------------------------------------------------------


def test_shipped_template_has_no_errors_and_no_warnings():
    report = templates.lint(SHIPPED)
    assert report.ok and not report.errors and not report.warnings, report.to_text()
    assert report.to_dict() == {"ok": True, "errors": [], "warnings": []}


def test_shipped_template_is_clean_against_a_matching_lab_state():
    report = templates.lint(SHIPPED, context=context())
    assert not report.errors and not report.warnings, report.to_text()
    cpu = context(bind=CPU_BINDINGS, sizing={**SIZING, "plan": "basic"})
    assert not templates.lint(SHIPPED, context=cpu).rules()


def test_lint_mirrors_the_entrypoints_settings():
    ep = _entrypoint()
    assert {f.env: f.kind for f in ep.ENV_FLAGS} == templates.RUNTIME_ENV_KINDS
    assert {f.env: f.flag for f in ep.ENV_FLAGS} == templates.RUNTIME_ENV_FLAGS
    assert tuple(ep.DTYPES) == templates.DTYPES


# --- one failing case per rule --------------------------------------------------------------------


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


# Two GPUs on a plan that has them: tensor parallelism without its /dev/shm bindings.
TP2 = {"resourcePlan": "infer2.4xl", "numGpus": "2"}


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
    ("models-dir", "error", lambda: text(), lambda: context(bind={
        "volumes": "[{name: m, emptyDir: {}}]", "volumeMounts": "[{name: m, mountPath: /mnt/models}]"})),
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
    ("dev-shm", "warning", lambda: text(), lambda: context(attention_heads=32, bind=TP2)),
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


def test_tensor_parallelism_with_the_shm_bindings_has_no_dev_shm_warning():
    """The shipped template has /dev/shm only as bindings: step 05 binds it for numGpus > 1."""
    bound = templates.with_shm({**REQUIRED, **TP2})
    report = templates.lint(SHIPPED, context=context(attention_heads=32, bind=bound))
    assert "dev-shm" not in report.rules() and report.ok, report.to_text()
    cpu = templates.lint(
        SHIPPED, context=context(bind=CPU_BINDINGS, sizing={**SIZING, "plan": "basic"})
    )
    assert "dev-shm" not in cpu.rules()  # one GPU (or none) needs no /dev/shm


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
