"""Units, vLLM's defaults and the tables sizing reads: dtype sizes, safetensors types, model families.

Every number here is vLLM's (or transformers') own, with the file it comes from; the modules of
``labkit.sizing`` share them.
"""

from __future__ import annotations

GiB = 1 << 30
GB = 10**9

GPU_BLOCK_SIZE = 16
CPU_BLOCK_SIZE = 128  # vllm/platforms/cpu.py: the CPU attention backend's default
CPU_DEFAULT_KV_CACHE_GIB = 4.0
# vLLM 0.26 on an H100 logs 0.22 GiB of non-torch memory for every model (tests/data/gpu_oracles).
NON_TORCH_GIB_TP1 = 0.22
GPU_ACTIVATION_BASE_GIB = 0.1
NON_TORCH_GIB_MULTI_GPU = 0.4
CPU_RUNTIME_GIB = 2.5
SAMPLER_BYTES_PER_LOGIT = 10

# fmt: off
_DTYPE_ALIASES = {
    "half": "float16", "float16": "float16", "fp16": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float": "float32", "float32": "float32", "fp32": "float32",
}
_DTYPE_BYTES = {"float16": 2, "bfloat16": 2, "float32": 4}
_DTYPE_FLAG = {"float16": "half", "bfloat16": "bfloat16", "float32": "float32"}
# vllm/config/cache.py CacheDType, restricted to the plain (non-MLA, non-turboquant) ones.
_KV_DTYPE_BYTES = {
    "float16": 2, "half": 2, "bfloat16": 2,
    "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "fp8_inc": 1,
}
# vllm/config/model.py _FLOAT16_NOT_SUPPORTED_MODELS: numerically unstable in float16.
_FP16_UNSUPPORTED = {"gemma2", "gemma3", "gemma3_text", "glm4"}
# Minimum compute capability of vLLM's kernels for checkpoint quantization methods.
_QUANT_MIN_CC = {"awq": 7.5, "gptq": 6.0, "fp8": 7.5}

_ST_BITS = {
    "F64": 64, "F32": 32, "F16": 16, "BF16": 16,
    "I64": 64, "I32": 32, "I16": 16, "I8": 8, "U64": 64, "U32": 32, "U16": 16, "U8": 8, "BOOL": 8,
    "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8, "E8M0": 8, "F6_E2M3": 6, "F6_E3M2": 6, "F4": 4,
}
# Floating tensors vLLM casts to the serving dtype when it loads them.
_ST_CAST = {"F64", "F32", "F16", "BF16"}
_ST_TO_DTYPE = {"F16": "float16", "BF16": "bfloat16", "F32": "float32"}
# Quantization side tensors keep their stored type (scales, zero points, permutations).
_QUANT_TENSOR_SUFFIXES = (
    "qweight", "qzeros", "scales", "g_idx", "weight_scale", "weight_scale_inv", "input_scale",
    "weight_zero_point", "weight_packed", "weight_shape",
    "absmax", "quant_map", "nested_absmax", "nested_quant_map",
)

_LLAMA_LIKE = {"llama", "mistral", "qwen2", "qwen3"}
_FALCON = {"falcon", "RefinedWeb", "RefinedWebModel"}
_PLAIN_MLP = _FALCON | {"gpt2", "opt", "gpt_neox", "mpt", "gptj", "gpt_bigcode", "bloom", "phi"}
_MLA_TYPES = {"deepseek_v2", "deepseek_v3", "deepseek_v32", "kimi_k2"}
# transformers' defaults for tie_word_embeddings when a config leaves it out.
_TIED_BY_DEFAULT = {
    "llama": False, "mistral": False, "qwen2": False, "qwen3": False, "gpt_neox": False,
}
# The keys vLLM reads the context length from (derive_max_model_len_and_key).
_MAX_LEN_KEYS = (
    "max_position_embeddings", "n_positions", "max_seq_len", "seq_length",
    "max_sequence_length", "max_seq_length", "seq_len",
)
# fmt: on
_MAX_HEADER_BYTES = 100 * 1024 * 1024
# The largest count (layers, heads, sizes, tokens, GPUs) sizing takes: vLLM keeps them in int32.
_MAX_COUNT = 2**31 - 1
# The most GiB a memory figure (--gpu-memory-gib, --weights-gib, ...) may give: 1 PiB.
_MAX_GIB = float(2**20)
