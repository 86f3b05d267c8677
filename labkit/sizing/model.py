"""What sizing knows of a model: its config.json (layers, heads, context) and, when read, its tensors.

``ModelSpec`` answers in vLLM's terms: KV heads and head size as vLLM derives them, the KV
bytes one token takes, the weight bytes at a serving dtype.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from labkit.errors import ModelError, SizingError
from labkit.sizing.constants import (
    _DTYPE_ALIASES,
    _DTYPE_BYTES,
    _FALCON,
    _MAX_LEN_KEYS,
    _MLA_TYPES,
    _ST_TO_DTYPE,
)
from labkit.sizing.weights import _estimate_weights, _tensor_bytes


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
