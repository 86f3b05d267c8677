"""The verdict: does the model fit a device, why not, with which vLLM flags; and the plan to use.

``_evaluate`` runs the phases of ``labkit.sizing.memory`` for one device and judges the
result; ``size`` evaluates every plan of the catalogue and answers for the plan asked for, a
custom GPU device, or else the smallest plan that fits.
"""

from __future__ import annotations

import os

from labkit.errors import SizingError
from labkit.sizing.constants import _DTYPE_FLAG, _QUANT_MIN_CC, GiB
from labkit.sizing.inputs import (
    _Device,
    _device_for_plan,
    _Options,
    _options,
    check_count,
    check_gib,
)
from labkit.sizing.loading import load_model_config
from labkit.sizing.memory import (
    _Batch,
    _batch,
    _Capacity,
    _capacity,
    _cc_text,
    _context_length,
    _Fixed,
    _fixed_parts,
    _kv_budget,
    _KvBudget,
    _Precision,
    _precision,
    _tensor_parallel,
)
from labkit.sizing.model import ModelSpec
from labkit.sizing.plans import Catalogue, Plan, load_catalogue
from labkit.sizing.report import Budget, PlanVerdict, SizingReport, _gib

# --- the verdict -----------------------------------------------------------------------


def _memory_reasons(
    device: _Device,
    tp: int,
    max_model_len: int,
    block_size: int,
    fixed: _Fixed,
    kv: _KvBudget,
    cap: _Capacity,
    reasons: list[str],
) -> None:
    """Why the memory does not suffice: weights, the fixed parts, the KV cache, one request."""
    if device.problem:
        return
    cpu = device.kind == "cpu"
    unit = "RAM" if cpu else "per GPU"
    fixed_parts, fixed_kv, limit = fixed.total, kv.fixed_kv, kv.limit
    memory_short = True
    if fixed.weights_per_device > limit:
        reasons.append(
            f"weights need {_gib(fixed.weights_per_device)} GiB {unit} but only {_gib(limit)} GiB "
            "is usable: use a bigger plan, "
            + ("" if cpu or tp >= device.count else "a higher --tensor-parallel-size, ")
            + "or a quantized checkpoint (AWQ/GPTQ)"
        )
    elif fixed_parts >= limit:
        reasons.append(
            f"weights, peak activation and non-torch memory need {_gib(fixed_parts)} GiB "
            f"{unit} but only {_gib(limit)} GiB is usable: use a bigger plan"
            + ("" if cpu else ", more tensor parallelism or a lower --max-num-batched-tokens")
        )
    elif fixed_kv is not None and fixed_parts + fixed_kv > limit:
        reasons.append(
            f"weights, activation and non-torch memory ({_gib(fixed_parts)} GiB) plus the "
            f"{_gib(fixed_kv)} GiB KV cache exceed the {_gib(limit)} GiB {unit}: lower "
            f"--kv-cache-gib to {_gib(limit - fixed_parts)} or less, or use a bigger plan"
        )
    elif kv.budget - kv.block_bytes <= 0:
        reasons.append(
            f"the KV cache ({_gib(max(0, kv.budget))} GiB {unit}) holds less than two blocks: "
            + (
                "raise --kv-cache-gib"
                if fixed_kv is not None
                else "raise --gpu-memory-utilization, or use a bigger plan, more tensor "
                "parallelism or a quantized checkpoint"
            )
        )
    else:
        memory_short = False
    needed = cap.blocks_per_request * kv.block_bytes
    if not memory_short and needed > kv.budget - kv.block_bytes:
        reasons.append(
            f"max_model_len {max_model_len:,} needs {_gib(needed)} GiB of KV cache {unit} "
            f"but only {_gib(kv.budget - kv.block_bytes)} GiB is available: "
            f"use --max-model-len {cap.fits_len} or less"
            + (", or a larger --kv-cache-gib" if fixed_kv is not None else ", or a bigger plan")
        )


def _quantization_reasons(q_method: str | None, device: _Device, reasons: list[str]) -> None:
    """vLLM's kernels for a quantized checkpoint need a recent enough GPU."""
    cc = device.compute_capability
    cpu = device.kind == "cpu"
    if q_method in _QUANT_MIN_CC and not cpu and cc is not None and cc < _QUANT_MIN_CC[q_method]:
        reasons.append(
            f"vLLM's {q_method} kernels need compute capability {_QUANT_MIN_CC[q_method]:g} and "
            f"{_cc_text(device)} is older: use a plan with a newer GPU or another checkpoint"
        )


def _vllm_args(
    opts: _Options,
    tp: int,
    dtype: str,
    max_model_len: int,
    fixed_kv: int | None,
    q_method: str | None,
) -> list[str]:
    """The vLLM flags that make it fit as sized."""
    args = [
        "--tensor-parallel-size",
        str(tp),
        "--dtype",
        _DTYPE_FLAG[dtype],
        "--max-model-len",
        str(max_model_len),
    ]
    if fixed_kv is not None:
        args += ["--kv-cache-memory-bytes", str(fixed_kv)]
    else:
        args += ["--gpu-memory-utilization", f"{opts.gpu_memory_utilization:g}"]
    if opts.kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", opts.kv_cache_dtype]
    if opts.max_num_batched_tokens is not None:
        args += ["--max-num-batched-tokens", str(opts.max_num_batched_tokens)]
    if opts.block_size is not None:
        args += ["--block-size", str(opts.block_size)]
    if q_method:
        args += ["--quantization", q_method]
    return args


# --- one device ------------------------------------------------------------------------


def _report(
    spec: ModelSpec,
    device: _Device,
    opts: _Options,
    tp: int,
    precision: _Precision,
    max_model_len: int,
    batch: _Batch,
    fixed: _Fixed,
    kv: _KvBudget,
    cap: _Capacity,
) -> SizingReport:
    """The phases' results as a SizingReport (reasons, notes and flags are filled in after)."""
    kv_used = cap.num_blocks * kv.block_bytes
    budget = Budget(
        total_bytes=kv.total,
        limit_bytes=kv.limit,
        weights_bytes=fixed.weights_per_device,
        activation_bytes=fixed.activation,
        non_torch_bytes=fixed.non_torch,
        kv_budget_bytes=max(0, kv.budget),
        kv_cache_bytes=kv_used,
        headroom_bytes=kv.total - fixed.total - kv_used,
    )
    return SizingReport(
        model=spec.name,
        plan=device.name,
        device=device.kind,
        gpu_type=device.gpu_type,
        gpus=0 if device.kind == "cpu" else device.count,
        tensor_parallel_size=tp,
        dtype=precision.dtype,
        kv_cache_dtype=precision.kv_dtype,
        quantization=spec.quant_method,
        max_model_len=max_model_len,
        max_num_batched_tokens=batch.max_num_batched_tokens,
        max_num_seqs=batch.max_num_seqs,
        block_size=batch.block_size,
        gpu_memory_utilization=opts.gpu_memory_utilization,
        weights_bytes=fixed.weights_bytes,
        weights_source=fixed.weights_source,
        kv_bytes_per_token=kv.bytes_per_token,
        kv_cache_blocks=cap.num_blocks,
        kv_cache_tokens=cap.kv_tokens,
        max_concurrency=cap.max_concurrency,
        max_model_len_that_fits=cap.fits_len,
        budget=budget,
        fits=False,
        reasons=[],
        notes=[],
        vllm_args=[],
    )


def _evaluate(
    spec: ModelSpec, device: _Device, opts: _Options, weights_cache: dict[str, tuple[int, str]]
) -> SizingReport:
    """Size ``spec`` on one device, phase by phase as vLLM accounts its memory."""
    reasons: list[str] = []
    notes: list[str] = list(spec.notes)
    cpu = device.kind == "cpu"
    if device.problem:
        reasons.append(device.problem)
    heads = spec.num_attention_heads
    kv_heads = spec.total_kv_heads

    precision = _precision(spec, device, opts, reasons, notes)
    tp = _tensor_parallel(spec, device, opts.tp, heads, kv_heads, reasons, notes)
    max_model_len, model_max = _context_length(spec, opts.max_model_len, reasons, notes)
    batch = _batch(device, opts, tp)
    fixed = _fixed_parts(spec, opts, precision.dtype, tp, batch, cpu, weights_cache)
    kv = _kv_budget(
        spec, device, opts, precision.kv_dtype_bytes, tp, batch.block_size, fixed, notes
    )
    cap = _capacity(kv, batch.block_size, max_model_len, model_max)

    _memory_reasons(device, tp, max_model_len, batch.block_size, fixed, kv, cap, reasons)
    q_method = spec.quant_method
    _quantization_reasons(q_method, device, reasons)
    report = _report(spec, device, opts, tp, precision, max_model_len, batch, fixed, kv, cap)
    report.fits = not reasons
    report.reasons = reasons
    report.notes = notes
    report.vllm_args = _vllm_args(opts, tp, precision.dtype, max_model_len, kv.fixed_kv, q_method)
    return report


# --- every plan, and the answer --------------------------------------------------------


def _check_device_choice(plan: str | None, gpus: int | None, gpu_memory_gib: float | None) -> None:
    if plan and (gpus is not None or gpu_memory_gib is not None):
        raise SizingError(
            "give either a plan or --gpus/--gpu-memory-gib, not both", "drop one of them"
        )
    if gpus is not None and gpus < 1:
        raise SizingError(f"gpus must be at least 1, not {gpus}", "give --gpus 1 or more")
    if gpus is not None and gpu_memory_gib is None:
        raise SizingError(
            "--gpus needs --gpu-memory-gib", "give the usable memory per GPU, e.g. 22.3 for an A10G"
        )
    if gpu_memory_gib is not None and gpu_memory_gib <= 0:
        raise SizingError(
            "gpu_memory_gib must be positive", "give the usable memory per GPU in GiB"
        )
    check_count("gpus", gpus)
    check_gib("gpu_memory_gib", gpu_memory_gib)


def _verdicts(per_plan: list[tuple[Plan, SizingReport]]) -> list[PlanVerdict]:
    return [
        PlanVerdict(
            name=p.name,
            kind=p.kind,
            gpus=p.gpus,
            gpu_type=p.gpu,
            hardware=p.hardware,
            fits=r.fits,
            reasons=list(r.reasons),
            tensor_parallel_size=r.tensor_parallel_size,
            kv_cache_tokens=r.kv_cache_tokens,
            max_concurrency=r.max_concurrency,
            budget=None if p.gpus and p.gpu is None else r.budget,
        )
        for p, r in per_plan
    ]


def _custom_device_report(
    spec: ModelSpec,
    opts: _Options,
    weights_cache: dict[str, tuple[int, str]],
    gpus: int | None,
    gpu_memory_gib: float,
) -> SizingReport:
    count = gpus or 1
    device = _Device(
        f"custom {count} x {gpu_memory_gib:g} GiB",
        "gpu",
        count,
        int(gpu_memory_gib * GiB),
        None,
        None,
    )
    report = _evaluate(spec, device, opts, weights_cache)
    report.plan = None
    report.notes.append("custom device: compute capability unknown, assumed to support bfloat16")
    return report


def _plan_report(
    per_plan: list[tuple[Plan, SizingReport]], chosen_plan: Plan | None, smallest: str | None
) -> SizingReport:
    """The report of the plan asked for, else of the smallest that fits, else of the largest."""
    if chosen_plan is not None:
        return next(r for p, r in per_plan if p.name == chosen_plan.name)
    if smallest is not None:
        report = next(r for p, r in per_plan if p.name == smallest)
        report.notes.insert(0, f"no plan given: {smallest} is the smallest plan that fits")
        return report
    if per_plan:
        report = per_plan[-1][1]
        report.reasons.insert(
            0,
            "no plan in the catalogue fits: change the settings below, or size for more "
            "GPUs with --gpus and --gpu-memory-gib",
        )
        report.fits = False
        return report
    raise SizingError(
        "the plan catalogue is empty", "check resource_plans.toml or the --plans-file"
    )


def size(
    model: str | os.PathLike | ModelSpec,
    *,
    plan: str | None = None,
    gpus: int | None = None,
    gpu_memory_gib: float | None = None,
    tp: int | None = None,
    dtype: str = "auto",
    kv_cache_dtype: str = "auto",
    max_model_len: int | None = None,
    max_num_batched_tokens: int | None = None,
    gpu_memory_utilization: float = 0.9,
    weights_gib: float | None = None,
    activation_gib: float | None = None,
    non_torch_gib: float | None = None,
    kv_cache_gib: float | None = None,
    block_size: int | None = None,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    catalogue: Catalogue | None = None,
) -> SizingReport:
    """Size ``model`` on a plan, a custom GPU device, or else the smallest plan that fits.

    A Hub repo id is read from ``endpoint`` (pass the lab's ``Config.hub_endpoint``)."""
    _check_device_choice(plan, gpus, gpu_memory_gib)
    opts = _options(
        tp,
        dtype,
        kv_cache_dtype,
        max_model_len,
        max_num_batched_tokens,
        gpu_memory_utilization,
        weights_gib,
        activation_gib,
        non_torch_gib,
        kv_cache_gib,
        block_size,
    )
    catalogue = catalogue or load_catalogue()
    chosen_plan = catalogue.get(plan) if plan else None
    spec = (
        model
        if isinstance(model, ModelSpec)
        else load_model_config(
            model, revision=revision, token=token, endpoint=endpoint, cache_dir=cache_dir
        )
    )
    spec.check()

    weights_cache: dict[str, tuple[int, str]] = {}
    per_plan = [
        (p, _evaluate(spec, _device_for_plan(catalogue, p), opts, weights_cache))
        for p in catalogue.plans
    ]
    verdicts = _verdicts(per_plan)  # before the chosen report gets its extra reason or note
    smallest = next((p.name for p, r in per_plan if r.fits), None)

    if gpu_memory_gib is not None:
        report = _custom_device_report(spec, opts, weights_cache, gpus, gpu_memory_gib)
    else:
        report = _plan_report(per_plan, chosen_plan, smallest)
    report.plans = verdicts
    report.smallest_fitting_plan = smallest
    return report
