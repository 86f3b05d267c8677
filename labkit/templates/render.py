"""Rendering as AI Core does: each ``{{inputs.parameters.X}}`` becomes the configuration's
binding, else the declared default; each ``{{inputs.artifacts.Y}}`` the bound artifact's URL; the
substitution is textual and the inner strings are parsed only afterwards. The result,
``Rendered``, holds the KServe InferenceService parts AI Core would create.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import yaml

from labkit.templates.load import TemplateError, parse_yaml, yaml_problem
from labkit.templates.parts import (
    artifact_names,
    as_list,
    as_str,
    declared,
    env_map,
    get_path,
    inner_strings,
    kserve_container,
    placeholders,
    substitute,
    template_or_load,
)
from labkit.templates.spec import (
    INSTANCE_TYPE_LABEL,
    KSERVE_API_VERSION,
    PREDICTOR_CONTAINER,
    RESOURCE_PLAN_LABEL,
    SCENARIO_ID_LABEL,
)


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


def _parameter_values(tpl: Mapping[str, Any], parameters: Mapping[str, Any]) -> dict[str, str]:
    """Each used parameter's value: the binding, else the default; TemplateError when neither."""
    params = {
        p["name"]: p
        for p in declared(tpl, "parameters")
        if isinstance(p, dict) and isinstance(p.get("name"), str)
    }
    unknown = sorted(set(parameters) - set(params))
    if unknown:
        raise TemplateError(
            f"binding for undeclared parameter(s) {', '.join(unknown)}",
            f"bind only declared ones: {', '.join(params) or 'none'}",
        )
    used = {
        ph.name
        for text in inner_strings(tpl).values()
        if isinstance(text, str)
        for ph in placeholders(text)
        if ph.kind == "parameters"
    }
    values: dict[str, str] = {}
    missing = []
    for name, p in params.items():
        if name in parameters:
            values[name] = as_str(name, parameters[name])
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
    for where, text in inner_strings(tpl).items():
        optional = where != "spec.template.spec"
        if text is None and optional:
            parsed[where] = {}
            continue
        if not isinstance(text, str):
            raise TemplateError(f"{where} is not a string", "write it as a YAML block string (|)")
        try:
            data = parse_yaml(substitute(text, values, artifacts, undeclared))
        except yaml.YAMLError as exc:
            raise TemplateError(
                f"{where} is not valid YAML once rendered ({yaml_problem(exc)})",
                "quote the placeholder, or check the bound value",
            ) from None
        if data is None and optional:
            data = {}
        if not isinstance(data, dict):
            raise TemplateError(f"{where} is not a YAML mapping once rendered", "fix the template")
        parsed[where] = data
    return parsed


def _container_port(container: Mapping[str, Any]) -> int:
    """The first declared containerPort; TemplateError when it is not a number."""
    ports = container.get("ports")
    first = ports[0] if isinstance(ports, list) and ports else None
    port = first.get("containerPort") if isinstance(first, dict) else None
    if not isinstance(port, int) or isinstance(port, bool):
        raise TemplateError(
            f"the container port {port!r} is not a number", "bind port to a number such as 8080"
        )
    return port


def render(
    template: Mapping[str, Any] | str | Path,
    parameters: Mapping[str, Any],
    artifacts: Mapping[str, str],
) -> Rendered:
    """Render as AI Core does: bindings beat defaults, artifacts become their URLs, then parse."""
    tpl = template_or_load(template)
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
    container = kserve_container(predictor)
    if container is None:
        raise TemplateError(
            f"the predictor has no container named {PREDICTOR_CONTAINER}",
            f"name the serving container {PREDICTOR_CONTAINER}",
        )
    port = _container_port(container)
    labels = {str(k): str(v) for k, v in parsed["spec.template.metadata.labels"].items()}
    annotations = {str(k): str(v) for k, v in parsed["spec.template.metadata.annotations"].items()}
    label = next((k for k in (RESOURCE_PLAN_LABEL, INSTANCE_TYPE_LABEL) if k in labels), None)
    env = {str(k): "" if v is None else str(v) for k, v in env_map(container).items()}
    secrets = [
        str(s["name"])
        for s in as_list(predictor.get("imagePullSecrets"))
        if isinstance(s, dict) and isinstance(s.get("name"), str | int | float)
    ]
    return Rendered(
        executable_id=str(get_path(tpl, "metadata", "name") or ""),
        scenario_id=str(get_path(tpl, "metadata", "labels", SCENARIO_ID_LABEL) or ""),
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
