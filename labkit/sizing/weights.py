"""Weight bytes: exact from safetensors headers, or estimated from config.json per architecture.

Floating tensors are cast to the serving dtype as vLLM loads them; quantization side tensors
keep their stored type. Without headers, a parameter count per known architecture stands in
(AWQ, GPTQ and FP8 checkpoints included).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from labkit.errors import ModelError
from labkit.sizing import fields
from labkit.sizing.constants import (
    _FALCON,
    _LLAMA_LIKE,
    _QUANT_TENSOR_SUFFIXES,
    _ST_BITS,
    _ST_CAST,
    _TIED_BY_DEFAULT,
)

if TYPE_CHECKING:
    from labkit.sizing.model import ModelSpec, TensorSpec


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

    def flag(key: str, default: bool | None = None) -> bool:
        return fields.flag(spec.name, cfg, key, default)

    def count(key: str, default: int) -> int:
        return fields.count_or(spec.name, cfg, key, default)

    tied = flag("tie_word_embeddings", _TIED_BY_DEFAULT.get(mt, True))
    lm_head = 0 if tied else V * H
    if mt in _LLAMA_LIKE:
        nkv, hd = spec.total_kv_heads, spec.head_size
        q, kv = nh * hd, nkv * hd
        linear = [(H, q, L), (H, kv, 2 * L), (q, H, L), (H, I, 2 * L), (I, H, L)]
        per_layer = 2 * H
        if mt == "qwen2" or flag("attention_bias"):
            per_layer += q + 2 * kv  # Qwen2 always has q/k/v biases
        if flag("attention_bias"):
            per_layer += H  # Llama's attention_bias covers o_proj too
        if flag("mlp_bias"):
            per_layer += 2 * I + H
        if mt == "qwen3":
            per_layer += 2 * hd  # q_norm, k_norm
        return _Params(linear, V * H + L * per_layer + H + lm_head)
    if mt in _FALCON:
        hd = H // nh
        if flag("new_decoder_architecture"):
            nkv = count("num_kv_heads", 0) or count("n_head_kv", nh)
        elif flag("multi_query"):
            nkv = 1
        else:
            nkv = nh
        qkv = (nh + 2 * nkv) * hd
        ffn = count("ffn_hidden_size", 4 * H)
        linear = [(H, qkv, L), (H, H, L), (H, ffn, L), (ffn, H, L)]
        if flag("new_decoder_architecture"):
            norms = 2 * H * count("num_ln_in_parallel_attn", 2)
        else:
            norms = 2 * H * (1 if flag("parallel_attn", True) else 2)
        bias = qkv + H + ffn + H if flag("bias") else 0
        return _Params(linear, V * H + L * (norms + bias) + 2 * H + lm_head)
    if mt == "gpt2":
        P = count("n_positions", 1024)
        linear = [(H, 3 * H, L), (H, H, L), (H, I, L), (I, H, L)]
        per_layer = 4 * H + 3 * H + H + I + H
        return _Params(linear, V * H + P * H + L * per_layer + 2 * H)
    if mt == "opt":
        E = count("word_embed_proj_dim", H)
        P = count("max_position_embeddings", 2048) + 2  # OPT offsets positions by 2
        linear = [(H, H, 4 * L), (H, I, L), (I, H, L)]
        if E != H:
            linear += [(E, H, 1), (H, E, 1)]
        per_layer = 4 * H + I + H + 4 * H
        final_norm = 2 * H if flag("do_layer_norm_before", True) else 0
        lm = 0 if flag("tie_word_embeddings", True) else V * E
        return _Params(linear, V * E + P * H + L * per_layer + final_norm + lm)
    if mt == "gpt_neox":
        linear = [(H, 3 * H, L), (H, H, L), (H, I, L), (I, H, L)]
        bias = 3 * H + H if flag("attention_bias", True) else 0
        per_layer = 4 * H + bias + I + H
        return _Params(linear, V * H + L * per_layer + 2 * H + lm_head)
    if mt == "mpt":
        hd = H // nh
        qkv = H + 2 * spec.total_kv_heads * hd
        linear = [(H, qkv, L), (H, H, L), (H, I, L), (I, H, L)]
        no_bias = flag("no_bias", True)
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
        bits = fields.count_or(spec.name, q, "bits", 0) or fields.count_or(spec.name, q, "w_bit", 4)
        group = q.get("group_size", q.get("q_group_size", 128))
        if group is not None and not fields.is_whole(group):
            raise ModelError(
                f"quantization_config of {spec.name} has group_size = {fields.show(group)}, "
                "not a whole number",
                "fix config.json (-1 or a positive group size, e.g. 128)",
            )
        if bits > 32:
            raise ModelError(
                f"quantization_config of {spec.name} has bits = {bits}, more than a weight has",
                "fix config.json (AWQ and GPTQ use 2, 3, 4 or 8 bits)",
            )
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
