"""vLLM's memory accounting, phase by phase, as lesson 01 explains it.

Precision (the serving dtype and the KV cache's), tensor parallelism (how the heads split over
the GPUs), the context length, the scheduler's batch, then each device's memory: its share of
the weights, the peak activation of the profiling batch and non-torch memory are fixed; what
``gpu_memory_utilization`` leaves of the device (or the fixed ``--kv-cache-memory-bytes``) is
the KV cache budget, cut into blocks; blocks per request give the concurrency. The formulas
and the vLLM sources they follow are in the ``labkit.sizing`` docstring. Each phase appends
what it finds to ``reasons`` (it does not fit) or ``notes`` (worth knowing), in that order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from labkit.sizing.constants import (
    _DTYPE_BYTES,
    _FP16_UNSUPPORTED,
    _KV_DTYPE_BYTES,
    _PLAIN_MLP,
    CPU_BLOCK_SIZE,
    CPU_DEFAULT_KV_CACHE_GIB,
    CPU_RUNTIME_GIB,
    GPU_ACTIVATION_BASE_GIB,
    GPU_BLOCK_SIZE,
    NON_TORCH_GIB_MULTI_GPU,
    NON_TORCH_GIB_TP1,
    SAMPLER_BYTES_PER_LOGIT,
    GiB,
)
from labkit.sizing.inputs import _Device, _Options
from labkit.sizing.model import ModelSpec
from labkit.sizing.weights import _estimate_weights, _tensor_bytes

# --- precision -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Precision:
    dtype: str  # the serving dtype (--dtype), canonical
    kv_dtype: str  # the KV cache's (--kv-cache-dtype), "auto" resolved
    kv_dtype_bytes: int


def _cc_text(device: _Device) -> str:
    cc = device.compute_capability
    known = "unknown" if cc is None else f"{cc:g}"
    return f"{device.gpu_type or 'this GPU'} (compute capability {known})"


def _supported_dtypes(device: _Device, model_type: str) -> list[str]:
    # vllm/platforms/cuda.py supported_dtypes: bfloat16 needs compute capability 8.0.
    cc = device.compute_capability
    if device.kind == "cpu" or cc is None or cc >= 8.0:
        base = ["bfloat16", "float16", "float32"]
    else:
        base = ["float16", "float32"]
    return [d for d in base if not (d == "float16" and model_type in _FP16_UNSUPPORTED)]


def _resolve_dtype(
    spec: ModelSpec, device: _Device, wanted: str, reasons: list[str], notes: list[str]
) -> str:
    supported = _supported_dtypes(device, spec.model_type)
    if wanted == "auto":
        # vllm/config/model.py _resolve_auto_dtype: float32 checkpoints are served in the
        # platform's preferred type; an unsupported type falls back to it.
        preferred = supported[0]
        config_dtype = spec.config_dtype or "float32"
        chosen = preferred if config_dtype == "float32" else config_dtype
        if chosen not in supported:
            if chosen == "float16" and spec.model_type in _FP16_UNSUPPORTED:
                why = f"model type {spec.model_type} is unstable in float16"
            else:
                why = f"{_cc_text(device)} has no {chosen}"
            notes.append(f"{why}: --dtype auto falls back to {preferred}")
            chosen = preferred
        return chosen
    if wanted not in supported:
        if wanted == "bfloat16":
            reasons.append(f"{_cc_text(device)} has no bfloat16: use --dtype half")
        else:
            other = "bfloat16" if "bfloat16" in supported else "float32"
            reasons.append(
                f"model type {spec.model_type} is unstable in float16: use --dtype {other}"
            )
    return wanted


def _precision(
    spec: ModelSpec, device: _Device, opts: _Options, reasons: list[str], notes: list[str]
) -> _Precision:
    """The serving dtype, and the KV cache's (auto: the same)."""
    dtype = _resolve_dtype(spec, device, opts.dtype, reasons, notes)
    if opts.kv_cache_dtype == "auto":
        return _Precision(dtype, dtype, _DTYPE_BYTES[dtype])
    kv_dtype = opts.kv_cache_dtype
    if kv_dtype == "bfloat16" and "bfloat16" not in _supported_dtypes(device, ""):
        reasons.append(f"{_cc_text(device)} has no bfloat16: use --kv-cache-dtype auto or fp8")
    return _Precision(dtype, kv_dtype, _KV_DTYPE_BYTES[kv_dtype])


# --- tensor parallel -------------------------------------------------------------------


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return small + [n // d for d in reversed(small) if d * d != n]


def _tensor_parallel(
    spec: ModelSpec,
    device: _Device,
    wanted: int | None,
    heads: int,
    kv_heads: int,
    reasons: list[str],
    notes: list[str],
) -> int:
    """The tensor-parallel size: as given, else the most GPUs the attention heads split over."""
    cpu = device.kind == "cpu"
    gpus = 0 if cpu else device.count
    if wanted is not None:
        tp = wanted
    elif cpu:
        tp = 1
    else:
        tp = max(d for d in _divisors(device.count) if heads % d == 0)
        if tp != device.count:
            notes.append(
                f"{heads} attention heads do not split over {device.count} GPUs: "
                f"tensor parallel {tp} uses {tp} of them"
            )
    if heads % tp:
        fitting = [d for d in _divisors(heads) if d <= max(gpus, 1)]
        reasons.append(
            f"{heads} attention heads are not divisible by tensor parallel {tp}: "
            f"use --tensor-parallel-size {' or '.join(map(str, fitting[-3:]))}"
        )
    if cpu and tp > 1:
        reasons.append(f"{device.name or 'this'} is a CPU plan: use --tensor-parallel-size 1")
    elif not cpu and tp > device.count:
        reasons.append(
            f"tensor parallel {tp} needs {tp} GPUs but {device.name or 'the device'} has "
            f"{device.count}: use --tensor-parallel-size {device.count} or less, "
            f"or a plan with {tp} GPUs"
        )
    if not spec.is_mla and kv_heads % tp and tp % kv_heads:
        reasons.append(
            f"{kv_heads} KV heads do not split evenly over tensor parallel {tp} (vLLM shards "
            f"or replicates whole heads): use a tensor-parallel size that divides {kv_heads} "
            "or is a multiple of it"
        )
    return tp


# --- context length and the scheduler's batch ------------------------------------------


def _context_length(
    spec: ModelSpec, wanted: int | None, reasons: list[str], notes: list[str]
) -> tuple[int, int | None]:
    """max_model_len (as given, else the model's own limit) and the model's limit."""
    model_max = spec.max_position_embeddings
    if wanted is not None:
        max_model_len = wanted
        if model_max is not None and max_model_len > model_max:
            reasons.append(
                f"max_model_len {max_model_len:,} is above the model's limit {model_max:,}: "
                f"use --max-model-len {model_max} or less"
            )
    elif model_max is not None:
        max_model_len = model_max
    else:
        max_model_len = 2048
        notes.append(
            "config.json gives no context length: sizing for vLLM's fallback of 2048 tokens"
        )
    return max_model_len, model_max


@dataclass(frozen=True)
class _Batch:
    block_size: int
    max_num_batched_tokens: int  # the profiling batch, and the most tokens of one step
    max_num_seqs: int


def _batch(device: _Device, opts: _Options, tp: int) -> _Batch:
    """The KV block size and the scheduler's limits: as given, else vLLM's defaults."""
    cpu = device.kind == "cpu"
    block_size = opts.block_size or (CPU_BLOCK_SIZE if cpu else GPU_BLOCK_SIZE)
    # vllm/engine/arg_utils.py get_batch_defaults, for the OpenAI server.
    if cpu:
        default_tokens, max_num_seqs = 2048 * tp, 128 * tp
    elif device.memory_bytes >= 70 * GiB and "a100" not in (device.gpu_type or "").lower():
        default_tokens, max_num_seqs = 8192, 1024
    else:
        default_tokens, max_num_seqs = 2048, 256
    return _Batch(block_size, opts.max_num_batched_tokens or default_tokens, max_num_seqs)


# --- the fixed parts: weights, peak activation, non-torch memory -----------------------


def _weights(
    spec: ModelSpec, opts: _Options, dtype: str, weights_cache: dict[str, tuple[int, str]]
) -> tuple[int, str]:
    """Whole-model weight bytes at the serving dtype, and where the figure comes from."""
    if opts.weights_bytes is not None:
        return opts.weights_bytes, "given"
    if dtype not in weights_cache:
        source = "safetensors headers" if spec.tensors else "estimated from config.json"
        nbytes = (
            _tensor_bytes(spec.tensors, _DTYPE_BYTES[dtype])
            if spec.tensors
            else _estimate_weights(spec, _DTYPE_BYTES[dtype])
        )
        weights_cache[dtype] = (nbytes, source)
    return weights_cache[dtype]


def _peak_activation(
    spec: ModelSpec, opts: _Options, dtype: str, tp: int, batch: _Batch, cpu: bool
) -> int:
    """Peak activation of the profiling batch (estimated; see the formula in labkit.sizing)."""
    act_bytes = _DTYPE_BYTES[dtype]
    gated = 2 if spec.model_type in _PLAIN_MLP else 3
    if opts.activation_bytes is not None:
        return opts.activation_bytes
    if not cpu:
        # Fitted to vLLM 0.26's logs on an H100 (tests/data/gpu_oracles): the MLP's intermediate
        # tensors and two hidden-size tensors per token, plus a fixed part; the sampler's logits
        # never raise the peak above the forward pass's.
        mlp = gated * spec.intermediate_size // tp
        activation = batch.max_num_batched_tokens * (mlp + 2 * spec.hidden_size) * act_bytes
        return activation + int(GPU_ACTIVATION_BASE_GIB * GiB)
    mlp = gated * spec.intermediate_size
    activation = batch.max_num_batched_tokens * (mlp + 4 * spec.hidden_size) * act_bytes
    activation += batch.max_num_seqs * spec.vocab_size * SAMPLER_BYTES_PER_LOGIT
    return activation


def _non_torch_memory(opts: _Options, tp: int, cpu: bool) -> int:
    """CUDA context, cuBLAS workspaces and NCCL buffers; on the CPU, the whole vLLM runtime."""
    if opts.non_torch_bytes is not None:
        return opts.non_torch_bytes
    if cpu:
        return int(CPU_RUNTIME_GIB * GiB)
    return int((NON_TORCH_GIB_TP1 if tp == 1 else NON_TORCH_GIB_MULTI_GPU) * GiB)


@dataclass(frozen=True)
class _Fixed:
    weights_bytes: int  # the whole model
    weights_source: str
    weights_per_device: int  # this device's share
    activation: int
    non_torch: int

    @property
    def total(self) -> int:
        """What the device holds before the KV cache."""
        return self.weights_per_device + self.activation + self.non_torch


def _fixed_parts(
    spec: ModelSpec,
    opts: _Options,
    dtype: str,
    tp: int,
    batch: _Batch,
    cpu: bool,
    weights_cache: dict[str, tuple[int, str]],
) -> _Fixed:
    """Weights (split over the tensor-parallel GPUs), peak activation and non-torch memory."""
    weights, weights_source = _weights(spec, opts, dtype, weights_cache)
    weights_per_device = weights if cpu else math.ceil(weights / tp)
    activation = _peak_activation(spec, opts, dtype, tp, batch, cpu)
    non_torch = _non_torch_memory(opts, tp, cpu)
    return _Fixed(weights, weights_source, weights_per_device, activation, non_torch)


# --- the KV cache and the concurrency it allows ----------------------------------------


@dataclass(frozen=True)
class _KvBudget:
    bytes_per_token: int
    block_bytes: int
    total: int  # the device's memory
    fixed_kv: int | None  # --kv-cache-memory-bytes (always set on the CPU)
    limit: int  # what vLLM may use
    budget: int  # what it hands to the KV cache (negative: over by that much)


def _kv_budget(
    spec: ModelSpec,
    device: _Device,
    opts: _Options,
    kv_dtype_bytes: int,
    tp: int,
    block_size: int,
    fixed: _Fixed,
    notes: list[str],
) -> _KvBudget:
    """The KV cache budget: what gpu_memory_utilization leaves after the fixed parts, or fixed."""
    cpu = device.kind == "cpu"
    kv_per_token = spec.kv_bytes_per_token(1 if cpu else tp, kv_dtype_bytes)
    block_bytes = block_size * kv_per_token
    total = device.memory_bytes
    fixed_kv = opts.kv_cache_bytes
    if cpu and fixed_kv is None:
        fixed_kv = int(CPU_DEFAULT_KV_CACHE_GIB * GiB)
        notes.append(
            f"vLLM on the CPU needs a fixed KV cache: sizing for {CPU_DEFAULT_KV_CACHE_GIB:g} GiB "
            "(set another with --kv-cache-gib)"
        )
    if fixed_kv is not None:
        # --kv-cache-memory-bytes (and the CPU backend) ignore gpu_memory_utilization.
        limit, kv_budget = total, fixed_kv
    else:
        limit = math.ceil(total * opts.gpu_memory_utilization)
        kv_budget = limit - fixed.total
    return _KvBudget(kv_per_token, block_bytes, total, fixed_kv, limit, kv_budget)


@dataclass(frozen=True)
class _Capacity:
    num_blocks: int
    blocks_per_request: int
    max_concurrency: float
    kv_tokens: int
    fits_len: int  # the largest max_model_len one request can have


def _capacity(
    kv: _KvBudget, block_size: int, max_model_len: int, model_max: int | None
) -> _Capacity:
    """Whole blocks in the budget, and how many requests of max_model_len they hold."""
    num_blocks = max(0, kv.budget // kv.block_bytes) if kv.block_bytes else 0
    blocks_per_request = -(-max_model_len // block_size)
    max_concurrency = num_blocks / blocks_per_request
    kv_tokens = int(max_concurrency * max_model_len)
    # vLLM keeps one block (the null block) out of the check that one full request fits.
    fits_len = max(0, num_blocks - 1) * block_size
    if model_max is not None:
        fits_len = min(fits_len, model_max)
    return _Capacity(num_blocks, blocks_per_request, max_concurrency, kv_tokens, fits_len)
