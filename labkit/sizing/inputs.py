"""What one evaluation sizes for besides the model: the device and the vLLM settings, checked.

A device is a plan's GPUs (of a known GPU type), a custom GPU device, or a CPU pod's RAM;
the settings are vLLM's flags plus measured figures that replace the estimates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from labkit.errors import SizingError
from labkit.sizing.constants import _KV_DTYPE_BYTES, _MAX_COUNT, _MAX_GIB, GiB
from labkit.sizing.fields import show
from labkit.sizing.model import _canonical_dtype
from labkit.sizing.plans import Catalogue, Plan


@dataclass(frozen=True)
class _Device:
    name: str | None
    kind: str  # "gpu" or "cpu"
    count: int  # GPUs; 1 for a CPU pod
    memory_bytes: int  # per GPU, or RAM
    compute_capability: float | None
    gpu_type: str | None
    problem: str | None = None


@dataclass(frozen=True)
class _Options:
    tp: int | None
    dtype: str
    kv_cache_dtype: str
    max_model_len: int | None
    max_num_batched_tokens: int | None
    gpu_memory_utilization: float
    weights_bytes: int | None
    activation_bytes: int | None
    non_torch_bytes: int | None
    kv_cache_bytes: int | None
    block_size: int | None


def _options(
    tp: int | None,
    dtype: str,
    kv_cache_dtype: str,
    max_model_len: int | None,
    max_num_batched_tokens: int | None,
    gpu_memory_utilization: float,
    weights_gib: float | None,
    activation_gib: float | None,
    non_torch_gib: float | None,
    kv_cache_gib: float | None,
    block_size: int | None,
) -> _Options:
    dtype = "auto" if str(dtype).lower() == "auto" else _canonical_dtype(dtype)
    kv = str(kv_cache_dtype).lower()
    kv = "float16" if kv == "half" else kv  # vLLM's --kv-cache-dtype has no "half"
    if kv != "auto" and kv not in _KV_DTYPE_BYTES:
        raise SizingError(
            f"kv_cache_dtype {kv_cache_dtype!r} is not one sizing handles",
            f"use auto or one of: {', '.join(_KV_DTYPE_BYTES)}",
        )
    for label, value in (("tp", tp), ("max_model_len", max_model_len), ("block_size", block_size)):
        if value is not None and value < 1:
            raise SizingError(
                f"{label} must be at least 1, not {value}",
                f"give a positive --{label.replace('_', '-')}",
            )
    if max_num_batched_tokens is not None and max_num_batched_tokens < 1:
        raise SizingError(
            "max_num_batched_tokens must be at least 1", "give a positive --max-num-batched-tokens"
        )
    counts = {
        "tp": tp,
        "max_model_len": max_model_len,
        "block_size": block_size,
        "max_num_batched_tokens": max_num_batched_tokens,
    }
    for label, value in counts.items():
        check_count(label, value)
    if not 0 < gpu_memory_utilization <= 1:
        raise SizingError(
            f"gpu_memory_utilization must be in (0, 1], not {gpu_memory_utilization}",
            "use e.g. 0.9",
        )
    sizes = {
        "weights_gib": weights_gib,
        "activation_gib": activation_gib,
        "non_torch_gib": non_torch_gib,
    }
    for label, value in sizes.items():
        if value is not None and value < 0:
            raise SizingError(
                f"{label} must not be negative", f"give --{label.replace('_', '-')} >= 0"
            )
        check_gib(label, value)
    if kv_cache_gib is not None and kv_cache_gib <= 0:
        raise SizingError(
            "kv_cache_gib must be positive", "give --kv-cache-gib > 0, or leave it out"
        )
    check_gib("kv_cache_gib", kv_cache_gib)

    def to_bytes(gib: float | None) -> int | None:
        return None if gib is None else int(gib * GiB)

    return _Options(
        tp=tp,
        dtype=dtype,
        kv_cache_dtype=kv,
        max_model_len=max_model_len,
        max_num_batched_tokens=max_num_batched_tokens,
        gpu_memory_utilization=float(gpu_memory_utilization),
        weights_bytes=to_bytes(weights_gib),
        activation_bytes=to_bytes(activation_gib),
        non_torch_bytes=to_bytes(non_torch_gib),
        kv_cache_bytes=to_bytes(kv_cache_gib),
        block_size=block_size,
    )


def check_count(label: str, value: int | None) -> None:
    """A count option (tp, tokens, GPUs) is at most what vLLM holds in an int32."""
    if value is not None and value > _MAX_COUNT:
        raise SizingError(
            f"{label} {show(value)} is more than vLLM takes",
            f"give --{_flag(label)} {_MAX_COUNT:,} or less",
        )


def check_gib(label: str, value: float | None) -> None:
    """A memory option is a finite number of GiB, at most 1 PiB (NaN and inf are not sizes)."""
    if value is not None and not (value <= _MAX_GIB and math.isfinite(value)):
        raise SizingError(
            f"{label} {show(value)} is not a memory size",
            f"give --{_flag(label)} as GiB, {_MAX_GIB:g} or less",
        )


def _flag(label: str) -> str:
    return label.replace("_", "-")


def _device_for_plan(catalogue: Catalogue, plan: Plan) -> _Device:
    if not plan.gpus:
        return _Device(plan.name, "cpu", 1, plan.memory_bytes or 0, None, None)
    gpu = catalogue.gpu_type(plan.gpu)
    if gpu is None:
        return _Device(
            plan.name,
            "gpu",
            plan.gpus,
            0,
            None,
            None,
            problem=f"the GPU model of {plan.name} is unknown: import it with "
            f"with_instance_types(payload, gpu_types={{{plan.name!r}: 'A10G'}}), "
            "or size with --gpus and --gpu-memory-gib",
        )
    return _Device(
        plan.name,
        "gpu",
        plan.gpus,
        int(gpu.usable_gib * GiB),
        gpu.compute_capability,
        gpu.name,
    )
