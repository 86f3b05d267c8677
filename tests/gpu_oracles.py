"""vLLM's start-up logs on a GPU (tests/data/gpu_oracles/*.json, written by bench/gpu/oracles.py
on the lent GPU; CI has none): the figures each log carries, parsed from vLLM's own lines.

Not a test module: test_sizing_gpu.py imports it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "gpu_oracles"
_NUM = r"([\d.,]+)"
# vllm/v1/core/kv_cache_utils.py and vllm/v1/worker/gpu_worker.py (0.26); figures in GiB are
# vLLM's format_gib: rounded to 2 decimals.
_PATTERNS = {
    "kv_tokens": rf"GPU KV cache size: {_NUM} tokens",
    "max_concurrency": rf"Maximum concurrency for [\d,]+ tokens per request: {_NUM}x",
    "available_kv_gib": rf"Available KV cache memory: {_NUM} GiB",
    "torch_peak_gib": rf"torch peak memory increase: {_NUM}GiB",
    "non_torch_gib": rf"non-torch forward increase memory: {_NUM}GiB",
    "weights_gib": rf"weights memory: {_NUM}GiB",
    "requested_gib": rf"Requested memory: [\d.]+ \(util\), {_NUM} GiB",
    "util": rf"Requested memory: {_NUM} \(util\)",
    "total_gib": rf"total_memory={_NUM}GiB",
    "max_num_batched_tokens": rf"max_num_batched_tokens={_NUM}",
    "cudagraph_equivalent_util": rf"is equivalent to --gpu-memory-utilization={_NUM} without",
    "cudagraph_estimate_gib": rf"Estimated CUDA graph memory: {_NUM} GiB total",
}


def _number(text: str) -> float:
    return float(text.replace(",", ""))


@dataclass(frozen=True)
class Oracle:
    """One start-up: the case, the model's config, vLLM's flags and the figures it logged."""

    case: str
    config: dict
    flags: dict[str, str]
    vllm: str
    gpu: str
    gpu_total_bytes: int
    figures: dict[str, float]

    def flag(self, name: str, default: str | None = None) -> str | None:
        return self.flags.get(name, default)


def _flags(command: list[str]) -> dict[str, str]:
    """--name value pairs of the logged command (flags without a value map to "")."""
    flags: dict[str, str] = {}
    for i, token in enumerate(command):
        if token.startswith("--"):
            nxt = command[i + 1] if i + 1 < len(command) else ""
            flags[token] = "" if nxt.startswith("--") else nxt
    return flags


def load(path: Path) -> Oracle:
    raw = json.loads(path.read_text())
    text = "\n".join(raw["log"])
    figures: dict[str, float] = {}
    for name, pattern in _PATTERNS.items():
        hits = re.findall(pattern, text)
        if hits:
            figures[name] = _number(hits[-1])
    return Oracle(raw["case"], raw["config"], _flags(raw["command"]), raw["vllm"], raw["gpu"],
                  int(raw["gpu_total_bytes"]), figures)  # fmt: skip


def all_oracles() -> list[Oracle]:
    return [load(p) for p in sorted(DATA.glob("*.json"))]
