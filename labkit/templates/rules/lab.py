"""The lab's cross-checks (given a ``LintContext``): the template against the lab state, that is
the scenario, the model and revision step 02 downloaded (and the Hub has), the image step 04
pushed, and the plan, tensor parallelism, dtype and context length step 01 sized.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from labkit.templates.parts import get_path, is_known
from labkit.templates.rules.kserve import split_image
from labkit.templates.rules.registry import ERROR, WARNING, check, rule
from labkit.templates.rules.runtime import size_value, whole_number
from labkit.templates.spec import (
    FP16_UNSUPPORTED_MODEL_TYPES,
    INSTANCE_TYPE_LABEL,
    PLACEHOLDER_IMAGE_TAG,
    RESOURCE_PLAN_LABEL,
    SCENARIO_ID_LABEL,
)
from labkit.util.names import COMMIT

if TYPE_CHECKING:
    from labkit.sizing import Plan
    from labkit.templates.rules.linter import Linter

VLLM_FP16 = "vllm/config/model.py _FLOAT16_NOT_SUPPORTED_MODELS"


@check("lab", rule("lab-state", WARNING, "the lab state holds what the cross-checks need"))
def lab_state(lt: Linter) -> None:
    for note in lt.ctx.notes:
        lt.emit("lab-state", note)


@check("lab", rule("scenario", ERROR, "the scenario id is the lab's (LABKIT_SCENARIO)"))
def scenario(lt: Linter) -> None:
    ctx = lt.ctx
    scenario_id = get_path(lt.t, "metadata", "labels", SCENARIO_ID_LABEL)
    if ctx.scenario and isinstance(scenario_id, str) and scenario_id != ctx.scenario:
        lt.emit(
            "scenario",
            f"the template's scenario id is {scenario_id}, the lab's is {ctx.scenario}: "
            "set LABKIT_SCENARIO or the label to the same id",
        )


# --- the model (step 02) -----------------------------------------------------------------------


@check("lab", rule("model-id", ERROR, "MODEL_ID is the downloaded and uploaded model"))
def model_id(lt: Linter) -> None:
    model = lt.value("MODEL_ID")
    if model and lt.ctx.model_id and model != lt.ctx.model_id:
        lt.emit(
            "model-id",
            f"MODEL_ID is {model} but the lab downloaded and uploaded {lt.ctx.model_id}: "
            "bind modelId to it",
        )


@check(
    "lab",
    rule(
        "revision",
        ERROR,
        "REVISION is the full commit that was downloaded and exists on the Hub",
    ),
    rule("revision-unverified", WARNING, "the revision could be checked against the Hub"),
)
def revision(lt: Linter) -> None:
    ctx = lt.ctx
    model, rev = lt.value("MODEL_ID"), lt.value("REVISION")
    if not rev:
        return
    if not COMMIT.fullmatch(rev):
        lt.emit(
            "revision",
            f"REVISION={rev!r} is not a full 40-hex commit: bind revision to "
            f"{ctx.revision or 'the commit you downloaded'}",
        )
        return
    if ctx.revision and rev != ctx.revision:
        lt.emit(
            "revision",
            f"REVISION {rev} is not the downloaded {ctx.revision}: the artifact holds "
            "only that snapshot; bind revision to it",
        )
        return
    if ctx.revision_exists is not None:
        exists = ctx.revision_exists(model or ctx.model_id or "", rev)
        if exists is False:
            lt.emit(
                "revision",
                f"{model or ctx.model_id} has no commit {rev} on the Hub: pick an existing commit",
            )
        elif exists is None:
            lt.emit(
                "revision-unverified",
                f"could not ask the Hub whether commit {rev} exists: check HF_ENDPOINT",
            )


# --- the image (step 04) -----------------------------------------------------------------------


@check(
    "lab",
    rule("image-tag", ERROR, "the image follows <registry>/<repo>/aicore-vllm:v<ddmmyy>-<NN>"),
    rule("image-missing", WARNING, "an image was built and pushed (step 04)"),
    rule("image-state", WARNING, "the image is the one step 04 recorded"),
)
def image(lt: Linter) -> None:
    ref = lt.container.get("image") if lt.container else None
    if not ref or not is_known(ref):
        return
    from labkit import image as image_mod

    name, tag, _ = split_image(str(ref))
    if tag == PLACEHOLDER_IMAGE_TAG:
        lt.emit(
            "image-missing",
            f"the image {ref} is a placeholder: no image was recorded by step 04; build "
            "and push one (04_build_image.ipynb) and bind image to it",
        )
        return
    try:
        if tag is None:
            raise image_mod.ImageError(f"{ref} has no tag", "")
        image_mod.ImageRef.parse(f"{name}:{tag}")
    except image_mod.ImageError as exc:
        lt.emit(
            "image-tag",
            f"image {ref} does not follow <registry>/<repo>/{image_mod.IMAGE_NAME}:"
            f"v<ddmmyy>-<NN> ({exc.message})",
        )
        return
    if lt.ctx.image and lt.ctx.image not in (ref, f"{name}:{tag}"):
        lt.emit(
            "image-state",
            f"image {ref} is not the one step 04 pushed ({lt.ctx.image}): bind image to it "
            "unless you mean another build",
        )


# --- the plan and vLLM settings (step 01) ---------------------------------------------------------


def _plan(lt: Linter) -> Plan | None:
    """The catalogue's plan (or instance type) the pod labels name; None when unknown."""
    plan_name = lt.pod_labels.get(RESOURCE_PLAN_LABEL) or lt.pod_labels.get(INSTANCE_TYPE_LABEL)
    if not is_known(plan_name):
        return None
    return next((p for p in lt.catalogue if p.name == str(plan_name)), None)


def _same_plan(lt: Linter, plan: Plan | None) -> bool:
    """Whether step 01 sized for the plan the template runs on."""
    sizing = lt.ctx.sizing
    return bool(sizing) and plan is not None and sizing.get("plan") == plan.name


@check(
    "lab",
    rule("sizing-plan", WARNING, "the template runs on the plan and settings step 01 sized"),
)
def sizing_plan(lt: Linter) -> None:
    sizing, plan = lt.ctx.sizing, _plan(lt)
    same_plan = _same_plan(lt, plan)
    if sizing and plan is not None and not same_plan:
        lt.emit(
            "sizing-plan",
            f"step 01 sized for {sizing.get('plan') or 'a custom device'}, the template runs "
            f"on {plan.name}: size again for {plan.name} (01_size_model.ipynb, PLAN)",
        )
    utilization = lt.value("GPU_MEMORY_UTILIZATION")
    if same_plan and plan.gpus and utilization and sizing.get("gpu_memory_utilization"):
        try:
            differs = abs(float(utilization) - float(sizing["gpu_memory_utilization"])) > 1e-9
        except ValueError:
            differs = False
        if differs:
            lt.emit(
                "sizing-plan",
                f"GPU_MEMORY_UTILIZATION {utilization} is not the sized "
                f"{sizing['gpu_memory_utilization']}: bind the sized value or size again "
                "with this one (the KV cache checks assume the sized value)",
            )


def _divisors(n: int) -> list[int]:
    """The divisors of ``n`` in order (in O(sqrt n): a head count can be any number)."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted({*small, *(n // d for d in small)})


@check(
    "lab",
    rule(
        "tensor-parallel",
        ERROR,
        "tensor parallelism divides the attention heads and fits the plan's GPUs",
    ),
    rule("tensor-parallel-idle", WARNING, "tensor parallelism uses every GPU of the plan"),
)
def tensor_parallel(lt: Linter) -> None:
    heads = lt.ctx.attention_heads
    shards = lt.value("NUM_SHARD")
    tp = whole_number(shards) if shards else None
    if tp is None or tp < 1:
        return  # env-value reports a NUM_SHARD that is no whole number of at least 1
    if isinstance(heads, int) and heads >= 1 and heads % tp:
        fits = _divisors(heads)
        lt.emit(
            "tensor-parallel",
            f"NUM_SHARD {tp} does not divide the model's {heads} attention "
            f"heads: use one of {', '.join(map(str, fits[:8]))}",
        )
    plan = _plan(lt)
    if plan is None:
        return
    if plan.gpus == 0 and tp > 1:
        lt.emit("tensor-parallel", f"NUM_SHARD {tp} on the CPU plan {plan.name}: use 1")
    elif plan.gpus and tp > plan.gpus:
        lt.emit(
            "tensor-parallel",
            f"NUM_SHARD {tp} but {plan.name} has {plan.gpus} GPU(s): use at most "
            f"{plan.gpus}, or a plan with more GPUs",
        )
    elif plan.gpus and tp < plan.gpus:
        lt.emit(
            "tensor-parallel-idle",
            f"NUM_SHARD {tp} leaves {plan.gpus - tp} of {plan.name}'s {plan.gpus} "
            f"GPUs idle: use {plan.gpus} (if it divides the heads) or a smaller plan",
        )


@check(
    "lab",
    rule(
        "dtype",
        ERROR,
        "the dtype runs on the plan's GPU for this model type",
        cite=VLLM_FP16,
    ),
)
def dtype(lt: Linter) -> None:
    plan = _plan(lt)
    value = (lt.value("DTYPE") or "").lower()
    if plan is not None and plan.gpus and value == "bfloat16":
        gpu = lt.catalogue.gpu_type(plan.gpu)
        if gpu is not None and gpu.compute_capability < 8.0:
            lt.emit(
                "dtype",
                f"DTYPE bfloat16 on {plan.name}: {gpu.name} (compute capability "
                f"{gpu.compute_capability:g}) has no bfloat16; use half",
            )
    if value in ("float16", "half") and lt.ctx.model_type in FP16_UNSUPPORTED_MODEL_TYPES:
        lt.emit(
            "dtype",
            f"DTYPE {value}: vLLM refuses float16 for {lt.ctx.model_type} models; use bfloat16 "
            "(or float32 on GPUs without bfloat16)",
        )


@check(
    "lab",
    rule("max-model-len", ERROR, "the max model length fits the model and the KV cache"),
)
def max_model_len(lt: Linter) -> None:
    ctx, plan = lt.ctx, _plan(lt)
    length_text = lt.value("MAX_MODEL_LEN")
    length = size_value(length_text) if length_text else None
    if length is not None and ctx.model_max_len and length > ctx.model_max_len:
        lt.emit(
            "max-model-len",
            f"MAX_MODEL_LEN {length} exceeds the model's {ctx.model_max_len} tokens: use at "
            f"most {ctx.model_max_len}",
        )
    effective = length or ctx.model_max_len
    kv_tokens = ctx.sizing.get("kv_cache_tokens") if _same_plan(lt, plan) else None
    if effective and kv_tokens and effective > kv_tokens:
        lt.emit(
            "max-model-len",
            f"max model length {effective} exceeds the {kv_tokens} tokens of KV cache step 01 "
            f"sized on {plan.name}: bind maxModelLen to at most {kv_tokens}",
        )
