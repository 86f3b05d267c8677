"""What sizing knows of a model: its config.json (layers, heads, context) and, when read, its tensors.

``ModelSpec`` answers in vLLM's terms: KV heads and head size as vLLM derives them, the KV
bytes one token takes, the weight bytes at a serving dtype.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from labkit.errors import ModelError, SizingError
from labkit.sizing import fields
from labkit.sizing.constants import (
    _DTYPE_ALIASES,
    _DTYPE_BYTES,
    _FALCON,
    _MAX_COUNT,
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
        value = self._text.get("model_type") or self.config.get("model_type") or ""
        return fields.text(self.name, "model_type", value) or ""

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
        for key in ("head_dim", "hidden_size_per_head"):
            value = fields.whole(self.name, key, cfg.get(key))
            if value is not None:
                return value
        hidden, heads = self.hidden_size, self.num_attention_heads
        if hidden < heads:  # vLLM floors hidden/heads (a what-if may not divide), never to 0
            raise ModelError(
                f"config.json of {self.name} has a hidden size of {hidden}, less than its "
                f"{heads} attention heads",
                "fix config.json, or give head_dim",
            )
        return hidden // heads

    @property
    def total_kv_heads(self) -> int:
        """Total KV heads as vLLM's get_total_num_kv_heads (Falcon MQA, MPT kv_n_heads, GQA)."""
        cfg = self._text
        heads = self.num_attention_heads
        if self.model_type in _FALCON:
            new_arch = fields.flag(self.name, cfg, "new_decoder_architecture")
            if not new_arch and fields.flag(self.name, cfg, "multi_query"):
                return 1
        if self.model_type == "mpt" or self.model_type == "dbrx":
            attn = fields.section(self.name, "attn_config", cfg.get("attn_config")) or {}
            kv = fields.whole(self.name, "attn_config.kv_n_heads", attn.get("kv_n_heads"))
            return heads if kv is None else _check_kv_heads(self, "kv_n_heads", kv, heads)
        for key in ("n_head_kv", "num_kv_heads", "num_key_value_heads", "multi_query_group_num"):
            kv = fields.whole(self.name, key, cfg.get(key))
            if kv is not None:
                return _check_kv_heads(self, key, kv, heads)
        return heads

    @property
    def intermediate_size(self) -> int:
        """MLP width: intermediate_size and its aliases, MPT's expansion_ratio, else 4 x hidden."""
        cfg = self._text
        for key in ("intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size"):
            value = fields.whole(self.name, key, cfg.get(key))
            if value is not None:
                return value
        if self.model_type == "mpt":
            ratio = fields.positive_number(
                self.name, "expansion_ratio", cfg.get("expansion_ratio", 4)
            )
            width = fields.whole(
                self.name, "expansion_ratio x d_model", int(ratio * self.hidden_size)
            )
            return width or 0
        return 4 * self.hidden_size

    @property
    def vocab_size(self) -> int:
        """Vocabulary size (0 when the config does not say)."""
        value = self._text.get("vocab_size") or self.config.get("vocab_size") or 0
        return fields.whole(self.name, "vocab_size", value, minimum=0, lists_missing=False) or 0

    @property
    def max_position_embeddings(self) -> int | None:
        """The model's own context limit: the smallest of the length keys vLLM looks at."""
        cfg = self._text
        lengths = [
            _length(self, k, cfg[k])
            for k in _MAX_LEN_KEYS
            if isinstance(cfg.get(k), int | float) and not cfg[k] <= 0  # NaN is checked
        ]
        if isinstance(cfg.get("model_max_length"), int):  # Cohere: vLLM lets it win
            return fields.whole(self.name, "model_max_length", cfg["model_max_length"])
        return int(min(lengths)) if lengths else None

    @property
    def quantization(self) -> dict[str, Any] | None:
        """The checkpoint's quantization_config (compression_config for compressed-tensors)."""
        for cfg in (self.config, self._text):
            for key in ("quantization_config", "compression_config"):
                q = fields.section(self.name, key, cfg.get(key))
                if q:
                    return q
        return None

    @property
    def quant_method(self) -> str | None:
        """quantization_config.quant_method, lower-case ("awq", "gptq", "fp8", ...), or None."""
        q = self.quantization
        if not q:
            return None
        method = (
            (fields.text(self.name, "quant_method", q.get("quant_method") or "") or "")
            .lower()
            .replace("compressed_tensors", "compressed-tensors")
        )
        return method or None

    @property
    def config_dtype(self) -> str | None:
        """Checkpoint dtype: config (torch_)dtype, else the safetensors' float dtype, else None."""
        for cfg in (self.config, self._text):
            for key in ("dtype", "torch_dtype"):
                value = fields.text(self.name, key, cfg.get(key))
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

    def check(self) -> None:
        """Raise ModelError unless every field sizing reads is usable (types, ranges, heads)."""
        _ = (self.model_type, self.num_layers, self.hidden_size, self.total_kv_heads)
        _ = (self.intermediate_size, self.vocab_size, self.max_position_embeddings)
        _ = (self.quant_method, self.config_dtype, self.kv_bytes_per_token())

    def kv_bytes_per_token(self, tp: int = 1, kv_dtype_bytes: int = 2) -> int:
        """KV cache bytes one token takes on one GPU at tensor-parallel size ``tp``."""
        if self.is_mla:
            cfg = self._text
            rank = fields.whole(self.name, "kv_lora_rank", cfg["kv_lora_rank"], lists_missing=False)
            rope = fields.whole(
                self.name, "qk_rope_head_dim", cfg.get("qk_rope_head_dim"), minimum=0
            )
            return self.num_layers * ((rank or 0) + (rope or 0)) * kv_dtype_bytes
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
        value = fields.whole(spec.name, key, cfg.get(key))
        if value is not None:
            return value
    raise ModelError(
        f"config.json of {spec.name} has none of {', '.join(keys)}",
        "point at the model's own config.json (sizing needs layers, heads and hidden size)",
    )


def _check_kv_heads(spec: ModelSpec, key: str, kv_heads: int, heads: int) -> int:
    """KV heads vLLM can use: at most the attention heads, and dividing them (GQA groups)."""
    if kv_heads > heads or heads % kv_heads:
        raise ModelError(
            f"config.json of {spec.name} has {key} = {kv_heads}, which does not divide its "
            f"{heads} attention heads",
            "fix config.json: each KV head serves the same number of query heads",
        )
    return kv_heads


def _length(spec: ModelSpec, key: str, value: int | float) -> int | float:
    """A context length key's value: a number vLLM can take (not NaN, inf, true or absurd)."""
    if isinstance(value, bool) or not (1 <= value <= _MAX_COUNT and math.isfinite(value)):
        raise ModelError(
            f"config.json of {spec.name} has {key} = {fields.show(value)}, which no model has",
            f"fix config.json ({key} is a number of tokens up to {_MAX_COUNT})",
        )
    return value


def _canonical_dtype(dtype: str) -> str:
    canon = _DTYPE_ALIASES.get(str(dtype).lower())
    if canon is None:
        raise SizingError(f"unknown dtype {dtype!r}", "use auto, half, bfloat16 or float32")
    return canon
