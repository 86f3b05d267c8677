"""SAP's rules for AI Core serving templates: the header and metadata (names, labels,
annotations), the declared inputs (string parameters, artifact names), placeholders and
bindings, the inner strings AI Core renders, and the pod's autoscaling annotations and resource
plan label (SAP Help: "Serving Templates", "API Schema Spec ai.sap.com/v1alpha1", "KServe Spec
serving.kserve.io/v1beta1", "KServe Metadata Annotations").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import yaml

from labkit.templates.load import yaml_problem
from labkit.templates.parts import declared, get_path, inner_strings, is_known, placeholders
from labkit.templates.rules.registry import ERROR, WARNING, check, rule
from labkit.templates.rules.runtime import whole_number
from labkit.templates.spec import (
    ARTIFACT_NAME,
    AUTOSCALING_METRICS,
    EXECUTABLE_ID,
    EXECUTABLE_ID_LABEL,
    INSTANCE_TYPE_LABEL,
    KSERVE_API_VERSION,
    MIN_LLM_CONCURRENCY_TARGET,
    PARAM_NAME,
    REQUIRED_ANNOTATIONS,
    REQUIRED_LABELS,
    RESOURCE_PLAN_LABEL,
    SCENARIO_ID,
    SCENARIO_ID_LABEL,
    TEMPLATE_API_VERSION,
    TEMPLATE_KIND,
)

if TYPE_CHECKING:
    from labkit.templates.rules.linter import Linter

SERVING_TEMPLATES = 'SAP Help: "Serving Templates"'
API_SCHEMA = 'SAP Help: "API Schema Spec ai.sap.com/v1alpha1"'
KSERVE_SPEC = 'SAP Help: "KServe Spec serving.kserve.io/v1beta1"'
KSERVE_ANNOTATIONS = 'SAP Help: "KServe Metadata Annotations"'


def _metadata(lt: Linter) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """metadata, its labels and its annotations ({} where missing or not a mapping)."""
    meta = lt.t.get("metadata") if isinstance(lt.t.get("metadata"), dict) else {}
    labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
    annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
    return meta, labels, annotations


# --- the header and metadata -------------------------------------------------------------------


@check(
    "template", rule("api-version", ERROR, f"apiVersion is {TEMPLATE_API_VERSION}", cite=API_SCHEMA)
)
def api_version(lt: Linter) -> None:
    if lt.t.get("apiVersion") != TEMPLATE_API_VERSION:
        lt.emit(
            "api-version",
            f"apiVersion is {lt.t.get('apiVersion')!r}: set it to {TEMPLATE_API_VERSION}",
        )


@check("template", rule("kind", ERROR, f"kind is {TEMPLATE_KIND}", cite=API_SCHEMA))
def kind(lt: Linter) -> None:
    if lt.t.get("kind") != TEMPLATE_KIND:
        lt.emit("kind", f"kind is {lt.t.get('kind')!r}: set it to {TEMPLATE_KIND}")


@check(
    "template",
    rule(
        "executable-id",
        ERROR,
        "metadata.name (the executable id) is 4-64 lowercase letters and digits, hyphens the only separator",
        cite=SERVING_TEMPLATES,
    ),
)
def executable_id(lt: Linter) -> None:
    name = _metadata(lt)[0].get("name")
    if not isinstance(name, str) or not name:
        lt.emit("executable-id", "metadata.name is missing: it is the executable id")
    elif not (4 <= len(name) <= 64 and EXECUTABLE_ID.fullmatch(name)):
        lt.emit(
            "executable-id",
            f"metadata.name {name!r} is not an executable id: use 4-64 lowercase letters "
            "and digits with hyphens as the only separator, e.g. my-llm-serving",
        )


@check(
    "template",
    rule(
        "annotations-required",
        ERROR,
        "annotations scenarios.ai.sap.com/name and executables.ai.sap.com/name are set",
        cite=SERVING_TEMPLATES,
    ),
)
def annotations_required(lt: Linter) -> None:
    annotations = _metadata(lt)[2]
    for key in REQUIRED_ANNOTATIONS:
        if not annotations.get(key):
            lt.emit("annotations-required", f"annotation {key} is missing: AI Core needs it")


@check(
    "template",
    rule(
        "labels-required",
        ERROR,
        "labels scenarios.ai.sap.com/id and ai.sap.com/version are set",
        cite=SERVING_TEMPLATES,
    ),
)
def labels_required(lt: Linter) -> None:
    labels = _metadata(lt)[1]
    for key in REQUIRED_LABELS:
        if key not in labels or labels[key] in (None, ""):
            lt.emit("labels-required", f"label {key} is missing: AI Core needs it")


@check(
    "template",
    rule(
        "executable-id-label",
        WARNING,
        f"no {EXECUTABLE_ID_LABEL} label (metadata.name is the executable id)",
    ),
)
def executable_id_label(lt: Linter) -> None:
    if EXECUTABLE_ID_LABEL in _metadata(lt)[1]:
        lt.emit(
            "executable-id-label",
            f"label {EXECUTABLE_ID_LABEL} is set: drop it; metadata.name is the executable "
            "id, and AI Core may not list a template that has it",
        )


@check(
    "template",
    rule(
        "metadata-strings",
        ERROR,
        "metadata labels and annotations are strings",
        cite=SERVING_TEMPLATES,
    ),
)
def metadata_strings(lt: Linter) -> None:
    _, labels, annotations = _metadata(lt)
    for where, mapping in (("label", labels), ("annotation", annotations)):
        for key, value in mapping.items():
            if not isinstance(value, str):
                lt.emit(
                    "metadata-strings",
                    f"{where} {key} is the {type(value).__name__} {value!r}: quote it, "
                    f'e.g. {key}: "{value}"',
                )


@check(
    "template",
    rule(
        "scenario-id",
        ERROR,
        "the scenario id is 4-63 letters, digits, '-', '_' or '.', starting and ending alphanumeric",
        cite=SERVING_TEMPLATES,
    ),
)
def scenario_id(lt: Linter) -> None:
    scenario = _metadata(lt)[1].get(SCENARIO_ID_LABEL)
    if isinstance(scenario, str) and scenario and not SCENARIO_ID.fullmatch(scenario):
        lt.emit(
            "scenario-id",
            f"scenario id {scenario!r} is invalid: use 4-63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit",
        )


@check(
    "template",
    rule(
        "executable-id-unique",
        ERROR,
        "no other template in the synced folder uses the same metadata.name",
        cite=SERVING_TEMPLATES,
    ),
)
def executable_id_unique(lt: Linter) -> None:
    name = _metadata(lt)[0].get("name")
    if lt.ctx is not None and isinstance(name, str) and name in lt.ctx.executables:
        lt.emit(
            "executable-id-unique",
            f"executable id {name} is already used by {lt.ctx.executables[name]}: "
            "give this template another metadata.name",
        )


# --- the declared inputs -----------------------------------------------------------------------


@check(
    "template",
    rule(
        "parameters",
        ERROR,
        "spec.inputs.parameters lists at least one parameter",
        cite=SERVING_TEMPLATES,
    ),
)
def parameters(lt: Linter) -> None:
    raw = get_path(lt.t, "spec", "inputs", "parameters")
    if not isinstance(raw, list) or not raw:
        lt.emit(
            "parameters",
            "spec.inputs.parameters is missing or empty: AI Core needs at least one parameter",
        )


@check(
    "template",
    rule(
        "parameter-name",
        ERROR,
        "parameter names are unique words ([A-Za-z0-9_-])",
        cite=SERVING_TEMPLATES,
    ),
    rule(
        "parameter-type",
        ERROR,
        "parameters are strings: type string (or none), quoted defaults",
        cite=SERVING_TEMPLATES,
    ),
)
def parameter_declarations(lt: Linter) -> None:
    seen: set[str] = set()
    for i, p in enumerate(declared(lt.t, "parameters")):
        name = p.get("name") if isinstance(p, dict) else None
        if not isinstance(name, str) or not PARAM_NAME.fullmatch(name):
            lt.emit(
                "parameter-name",
                f"parameter #{i + 1} has the name {name!r}: use letters, digits, '_' or '-'",
            )
            continue
        if name in seen:
            lt.emit("parameter-name", f"parameter {name} is declared twice: keep one")
            continue
        seen.add(name)
        _parameter_type(lt, name, p)


def _parameter_type(lt: Linter, name: str, p: dict[str, Any]) -> None:
    if "type" in p and p["type"] != "string":
        lt.emit(
            "parameter-type",
            f"parameter {name} has type {p['type']!r}: AI Core supports only string",
        )
    if "default" in p and p["default"] is None:
        lt.emit(
            "parameter-type",
            f'parameter {name} has an empty default: write default: "" (or drop it to '
            "make the parameter required)",
        )
    elif "default" in p and not isinstance(p["default"], str):
        lt.emit(
            "parameter-type",
            f"parameter {name} has the {type(p['default']).__name__} default "
            f'{p["default"]!r}: quote it (default: "{p["default"]}")',
        )


@check(
    "template",
    rule("parameter-description", WARNING, "every parameter has a description"),
)
def parameter_description(lt: Linter) -> None:
    for name, p in lt.params.items():
        if not str(p.get("description") or "").strip():
            lt.emit(
                "parameter-description",
                f"parameter {name} has no description: say which vLLM flag or setting it feeds",
            )


@check(
    "template",
    rule(
        "artifact-name",
        ERROR,
        "input artifact names are unique and have no separators (letters, digits, '_')",
        cite=SERVING_TEMPLATES,
    ),
)
def artifact_name(lt: Linter) -> None:
    seen: set[str] = set()
    for i, a in enumerate(declared(lt.t, "artifacts")):
        name = a.get("name") if isinstance(a, dict) else None
        if not isinstance(name, str) or not ARTIFACT_NAME.fullmatch(name):
            lt.emit(
                "artifact-name",
                f"input artifact #{i + 1} has the name {name!r}: use letters, digits and '_' "
                "only (a hyphen or dot breaks AI Core's rendering)",
            )
        elif name in seen:
            lt.emit("artifact-name", f"input artifact {name} is declared twice: keep one")
        else:
            seen.add(name)


# --- placeholders and bindings ------------------------------------------------------------------


def _used(lt: Linter) -> set[tuple[str | None, str]]:
    """The (kind, name) of every parameter or artifact reference in the inner strings."""
    return {
        (ph.kind, ph.name)
        for text in inner_strings(lt.t).values()
        if isinstance(text, str)
        for ph in placeholders(text)
        if ph.kind is not None
    }


@check(
    "template",
    rule(
        "placeholder-syntax",
        ERROR,
        "every {{...}} is {{inputs.parameters.X}} or {{inputs.artifacts.Y}}",
        cite=SERVING_TEMPLATES,
    ),
)
def placeholder_syntax(lt: Linter) -> None:
    for where, text in inner_strings(lt.t).items():
        if not isinstance(text, str):
            continue
        for ph in placeholders(text):
            if ph.kind is None:
                lt.emit(
                    "placeholder-syntax",
                    f"{ph.text} in {where} is not a placeholder AI Core renders: use "
                    "{{inputs.parameters.NAME}} or {{inputs.artifacts.NAME}}",
                )


@check(
    "template",
    rule(
        "placeholder-undeclared",
        ERROR,
        "every referenced parameter or artifact is declared",
        cite=SERVING_TEMPLATES,
    ),
)
def placeholder_undeclared(lt: Linter) -> None:
    for kind, name in sorted(_used(lt), key=str):
        known = lt.params if kind == "parameters" else lt.artifacts
        if name not in known:
            lt.emit(
                "placeholder-undeclared",
                f"{{{{inputs.{kind}.{name}}}}} is used but not declared: add it to "
                f"spec.inputs.{kind}",
            )


@check(
    "template",
    rule("placeholder-unused", WARNING, "every declared parameter or artifact is used"),
)
def placeholder_unused(lt: Linter) -> None:
    used = _used(lt)
    for name in lt.params:
        if ("parameters", name) not in used:
            lt.emit(
                "placeholder-unused",
                f"parameter {name} is declared but never used: use or remove it",
            )
    for name in lt.artifacts:
        if ("artifacts", name) not in used:
            lt.emit(
                "placeholder-unused",
                f"input artifact {name} is declared but never used: bind it to STORAGE_URI",
            )


def _strings(value: Any) -> Iterator[str]:
    """Every string key and value in ``value``, in the order YAML would dump them (keys sorted)."""
    seen: set[int] = set()  # a mapping given by a program may contain itself
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict | list) and id(item) not in seen:
            seen.add(id(item))
            if isinstance(item, list):
                stack.extend(reversed(item))
                continue
            try:
                keys = sorted(item)
            except TypeError:  # keys of mixed types: in their order, as yaml.safe_dump does
                keys = list(item)
            stack.extend(x for k in reversed(keys) for x in (item[k], k))


@check(
    "template",
    rule(
        "placeholder-location",
        ERROR,
        "placeholders appear only in spec.template, the part AI Core renders",
        cite=SERVING_TEMPLATES,
    ),
)
def placeholder_location(lt: Linter) -> None:
    t = lt.t
    outside = {k: v for k, v in t.items() if k != "spec"}
    spec = t.get("spec")
    # A spec that is no mapping (a list, a scalar) is outside spec.template as a whole.
    outside["spec"] = (
        {k: v for k, v in spec.items() if k != "template"} if isinstance(spec, dict) else spec
    )
    if isinstance(get_path(t, "spec", "template"), dict):
        outside["template"] = {
            k: v for k, v in t["spec"]["template"].items() if k not in ("spec", "metadata")
        }
    for ph in (ph for s in _strings(outside) for ph in placeholders(s)):
        lt.emit(
            "placeholder-location",
            f"{ph.text} is outside spec.template: AI Core renders placeholders only in "
            "spec.template's labels, annotations and spec",
        )


@check(
    "template",
    rule(
        "binding-unknown",
        ERROR,
        "bindings name only declared parameters",
        cite=SERVING_TEMPLATES,
    ),
)
def binding_unknown(lt: Linter) -> None:
    bound = dict(lt.ctx.parameters) if lt.ctx else {}
    for key in bound:
        if key not in lt.params:
            lt.emit(
                "binding-unknown",
                f"the configuration binds {key}, which the template does not declare: "
                f"bind only {', '.join(lt.params) or 'declared parameters'}",
            )


# --- the inner strings ----------------------------------------------------------------------------


@check(
    "template",
    rule(
        "template-api-version",
        ERROR,
        f"spec.template.apiVersion is {KSERVE_API_VERSION}",
        cite=KSERVE_SPEC,
    ),
)
def template_api_version(lt: Linter) -> None:
    tpl = get_path(lt.t, "spec", "template")
    if isinstance(tpl, dict) and tpl.get("apiVersion") != KSERVE_API_VERSION:
        lt.emit(
            "template-api-version",
            f"spec.template.apiVersion is {tpl.get('apiVersion')!r}: set it to "
            f"{KSERVE_API_VERSION}",
        )


@check(
    "template",
    rule(
        "inner-string",
        ERROR,
        "spec.template.metadata.labels/annotations and spec.template.spec are YAML strings",
        cite=KSERVE_SPEC,
    ),
    rule(
        "inner-yaml",
        ERROR,
        "those strings parse as YAML mappings once rendered",
        cite=KSERVE_SPEC,
    ),
)
def inner_strings_readable(lt: Linter) -> None:
    if not isinstance(get_path(lt.t, "spec", "template"), dict):
        lt.emit("inner-string", "spec.template is missing: it holds the KServe template")
        return
    for item in lt.inner:
        where = item.where
        if item.problem == "type":
            kind = "missing" if item.text is None else f"a YAML {type(item.text).__name__}"
            lt.emit(
                "inner-string",
                f"{where} is {kind}: AI Core reads it as a string; write it as a block "
                f"string ({where.rsplit('.', 1)[-1]}: |) holding the YAML",
            )
        elif isinstance(item.problem, yaml.YAMLError):
            lt.emit(
                "inner-yaml",
                f"{where} is not valid YAML once rendered ({yaml_problem(item.problem)}): fix the "
                "indentation or quoting there",
            )
        elif item.problem == "mapping":
            lt.emit(
                "inner-yaml",
                f"{where} is not a YAML mapping once rendered: write key: value lines",
            )


# --- the pod: autoscaling and resource plan -------------------------------------------------------


def _concurrency_target(lt: Linter) -> int | None:
    """The autoscaling target as a whole number >= 1; None when unset, unbound or invalid."""
    target = lt.pod_annotations.get("autoscaling.knative.dev/target")
    if target is None or not is_known(target):
        return None
    text = str(target).strip()
    number = whole_number(text)
    return number if number is not None and number >= 1 else None


@check(
    "pod",
    rule(
        "autoscaling",
        ERROR,
        "autoscaling annotations use a metric AI Core accepts and a whole-number target",
        cite=KSERVE_ANNOTATIONS,
    ),
)
def autoscaling(lt: Linter) -> None:
    metric = lt.pod_annotations.get("autoscaling.knative.dev/metric")
    target = lt.pod_annotations.get("autoscaling.knative.dev/target")
    if metric is not None and is_known(metric) and metric not in AUTOSCALING_METRICS:
        lt.emit(
            "autoscaling",
            f"autoscaling.knative.dev/metric is {metric!r}: AI Core accepts "
            f"{' or '.join(AUTOSCALING_METRICS)}",
        )
    if target is not None and is_known(target) and _concurrency_target(lt) is None:
        lt.emit(
            "autoscaling",
            f"autoscaling.knative.dev/target is {target!r}: use a whole number of at least 1",
        )


@check(
    "pod",
    rule(
        "autoscaling-llm",
        WARNING,
        "autoscaling suits an LLM server: concurrency metric, a target that batches",
    ),
)
def autoscaling_llm(lt: Linter) -> None:
    number = _concurrency_target(lt)
    if lt.pod_annotations.get("autoscaling.knative.dev/metric") == "rps":
        lt.emit(
            "autoscaling-llm",
            "autoscaling on rps: an LLM request takes seconds, so requests per second says "
            "little about load; use the concurrency metric",
        )
    elif number is not None and number < MIN_LLM_CONCURRENCY_TARGET:
        lt.emit(
            "autoscaling-llm",
            f"concurrency target {number}: a new replica (minutes of model loading) starts "
            f"for every {number} concurrent requests although vLLM batches dozens; use at "
            f"least {MIN_LLM_CONCURRENCY_TARGET}",
        )


def _resource_labels(lt: Linter) -> list[str]:
    return [k for k in (RESOURCE_PLAN_LABEL, INSTANCE_TYPE_LABEL) if k in lt.pod_labels]


@check(
    "pod",
    rule(
        "resource-label",
        ERROR,
        "the pod labels set exactly one of ai.sap.com/resourcePlan and ai.sap.com/instanceType",
        cite=SERVING_TEMPLATES,
    ),
)
def resource_label(lt: Linter) -> None:
    present = _resource_labels(lt)
    if not lt.labels_unreadable and len(present) != 1:
        lt.emit(
            "resource-label",
            f"the pod labels (spec.template.metadata.labels) set {len(present)} of "
            f"{RESOURCE_PLAN_LABEL} and {INSTANCE_TYPE_LABEL}: set exactly one",
        )


@check(
    "pod",
    rule(
        "resource-plan",
        ERROR,
        "the resource plan (or instance type) is a known one",
        cite=SERVING_TEMPLATES,
    ),
)
def resource_plan(lt: Linter) -> None:
    present = _resource_labels(lt)
    if lt.labels_unreadable or len(present) != 1:
        return
    value = lt.pod_labels[present[0]]
    if not is_known(value):
        return
    kind = "resourcePlan" if present[0] == RESOURCE_PLAN_LABEL else "instanceType"
    known = [p.name for p in lt.catalogue if p.kind == kind]
    if (kind == "resourcePlan" or known) and str(value) not in known:
        lt.emit(
            "resource-plan",
            f"{present[0]} {value!r} is not a known {kind}: use one of {', '.join(known)}",
        )
