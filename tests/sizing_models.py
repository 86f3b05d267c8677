"""Model configs the sizing tests share (real models' config.json), and helpers to build specs.

Not a test module: the test_sizing*.py files import it.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from labkit.sizing import ModelSpec

# fmt: off
LLAMA3_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
    "num_hidden_layers": 32, "vocab_size": 128256, "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16", "tie_word_embeddings": False,
}
LLAMA2_7B = {
    "model_type": "llama", "hidden_size": 4096, "intermediate_size": 11008,
    "num_attention_heads": 32, "num_key_value_heads": 32, "num_hidden_layers": 32,
    "vocab_size": 32000, "max_position_embeddings": 4096, "torch_dtype": "float16",
    "tie_word_embeddings": False,
}
SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
    "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3,
    "num_hidden_layers": 30, "vocab_size": 49152, "max_position_embeddings": 8192,
    "torch_dtype": "bfloat16", "tie_word_embeddings": True,
}
FALCON_7B = {
    "model_type": "falcon", "hidden_size": 4544, "num_attention_heads": 71, "num_hidden_layers": 32,
    "vocab_size": 65024, "multi_query": True, "new_decoder_architecture": False,
    "parallel_attn": True, "bias": False, "max_position_embeddings": 2048,
    "torch_dtype": "bfloat16",
}
FALCON_40B = {
    "model_type": "RefinedWeb", "hidden_size": 8192, "n_head": 128, "n_head_kv": 8, "n_layer": 60,
    "vocab_size": 65024, "new_decoder_architecture": True, "torch_dtype": "bfloat16",
}
MPT_GQA = {
    "model_type": "mpt", "d_model": 4096, "n_heads": 32, "n_layers": 32, "expansion_ratio": 4,
    "max_seq_len": 2048, "vocab_size": 50432, "attn_config": {"kv_n_heads": 8}, "no_bias": True,
}
GPT2 = {"model_type": "gpt2", "n_embd": 768, "n_head": 12, "n_layer": 12, "n_positions": 1024,
        "vocab_size": 50257, "n_inner": None}
OPT_125M = {"model_type": "opt", "hidden_size": 768, "ffn_dim": 3072, "num_attention_heads": 12,
            "num_hidden_layers": 12, "max_position_embeddings": 2048, "vocab_size": 50272,
            "word_embed_proj_dim": 768, "do_layer_norm_before": True, "torch_dtype": "float16"}
PYTHIA_160M = {"model_type": "gpt_neox", "hidden_size": 768, "intermediate_size": 3072,
               "num_attention_heads": 12, "num_hidden_layers": 12, "vocab_size": 50304,
               "max_position_embeddings": 2048, "tie_word_embeddings": False}
AWQ_4BIT = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True,
            "version": "gemm"}
CONTRACT = {"weights_bytes", "kv_bytes_per_token", "kv_cache_tokens", "kv_cache_blocks",
            "max_concurrency", "tensor_parallel_size", "fits", "reasons", "vllm_args"}
# fmt: on


def spec(config: dict, name: str = "model", **changes) -> ModelSpec:
    return ModelSpec.from_config({**config, **changes}, name=name)


def params(config: dict) -> int:
    """Parameter count of the config estimate (float32 is 4 bytes per parameter)."""
    return spec(config).estimated_weights_bytes("float32") // 4


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A valid safetensors file: 8-byte little-endian header length, JSON header, zero data."""
    bits = {"F32": 32, "F16": 16, "BF16": 16, "I32": 32, "I8": 8, "F8_E4M3": 8}
    header, offset = {}, 0
    for name, (dtype, shape) in tensors.items():
        size = math.prod(shape) * bits[dtype] // 8
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(offset))
