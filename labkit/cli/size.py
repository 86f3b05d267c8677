"""The `labkit size` command: will a model fit a resource plan, with which vLLM flags (step 01)."""

from __future__ import annotations

import argparse
from pathlib import Path

from labkit.cli.common import emit
from labkit.config import Config


def _cmd_size(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import sizing

    catalogue = sizing.load_catalogue(args.plans_file) if args.plans_file else None
    report = sizing.size(
        args.model,
        plan=args.plan,
        gpus=args.gpus,
        gpu_memory_gib=args.gpu_memory_gib,
        tp=args.tp,
        dtype=args.dtype,
        kv_cache_dtype=args.kv_cache_dtype,
        max_model_len=args.max_model_len,
        max_num_batched_tokens=args.max_num_batched_tokens,
        gpu_memory_utilization=args.gpu_memory_utilization,
        weights_gib=args.weights_gib,
        activation_gib=args.activation_gib,
        non_torch_gib=args.non_torch_gib,
        kv_cache_gib=args.kv_cache_gib,
        block_size=args.block_size,
        revision=args.revision,
        token=cfg.hub_token(),
        endpoint=cfg.hub_endpoint,
        cache_dir=cfg.hub_cache_dir,
        catalogue=catalogue,
    )
    emit(args, report.to_dict(), report.to_text())
    return 0


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `size`."""
    size = sub.add_parser(
        "size",
        parents=[common],
        help="will a model fit a resource plan, and with which vLLM settings (step 01)",
        description="Size a model against AI Core resource plans the way vLLM accounts memory.",
    )
    size.add_argument("model", help="Hub repo id, model folder, or path to a config.json")
    size.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    where = size.add_mutually_exclusive_group()
    where.add_argument(
        "--plan", help="resource plan name (default: every plan, smallest that fits)"
    )
    where.add_argument(
        "--gpus", type=int, help="size for N GPUs of --gpu-memory-gib instead of a plan"
    )
    size.add_argument("--gpu-memory-gib", type=float, help="usable memory per GPU, with --gpus")
    size.add_argument("--tp", type=int, help="tensor-parallel size (default: the plan's GPU count)")
    size.add_argument("--dtype", default="auto", help="vLLM --dtype: auto, half, bfloat16, float32")
    size.add_argument(
        "--kv-cache-dtype", default="auto", help="vLLM --kv-cache-dtype: auto, fp8, ..."
    )
    size.add_argument(
        "--max-model-len", type=int, help="vLLM --max-model-len (default: the model's)"
    )
    size.add_argument("--max-num-batched-tokens", type=int, help="vLLM --max-num-batched-tokens")
    size.add_argument(
        "--gpu-memory-utilization", type=float, default=0.9, help="vLLM --gpu-memory-utilization"
    )
    size.add_argument("--weights-gib", type=float, help="measured weights per model (override)")
    size.add_argument("--activation-gib", type=float, help="measured peak activation (override)")
    size.add_argument("--non-torch-gib", type=float, help="measured non-torch memory (override)")
    size.add_argument(
        "--kv-cache-gib",
        type=float,
        help="fixed KV cache per GPU (vLLM --kv-cache-memory-bytes; VLLM_CPU_KVCACHE_SPACE on CPU)",
    )
    size.add_argument(
        "--block-size", type=int, help="KV block size (default 16 on GPU, 128 on CPU)"
    )
    size.add_argument(
        "--plans-file", type=Path, help="TOML file with extra plans or instance types"
    )
    size.set_defaults(func=_cmd_size)
