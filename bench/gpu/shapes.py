"""Model shapes for the GPU runs: each a real model's config.json, served with random weights
(vLLM's ``--load-format dummy``, HF's ``from_config``), so no weights travel to the GPU machine.

A model folder is the config plus a tokenizer (the lab's default model's, SmolLM2's: vLLM's
server needs one; token ids above its vocabulary are never sampled from a prompt but the
embedding table keeps the model's own size, which is what memory depends on).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json", "chat_template.jinja")  # fmt: skip

# fmt: off
# LLaMA-7B's shape (the launch post's model) with SmolLM2's vocabulary, as the GPU kit's reference.
LLAMA_7B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 11008, "num_attention_heads": 32, "num_key_value_heads": 32,
    "num_hidden_layers": 32, "vocab_size": 49152, "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu", "torch_dtype": "bfloat16",
    "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
}
# meta-llama/Llama-3.1-8B's config.json: grouped-query attention (8 KV heads of 32).
LLAMA31_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
    "num_hidden_layers": 32, "vocab_size": 128256, "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "hidden_act": "silu",
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "torch_dtype": "bfloat16", "tie_word_embeddings": False, "bos_token_id": 128000,
    "eos_token_id": 128001,
}
# tiiuae/falcon-7b's config.json: multi-query attention (one KV head), a plain MLP.
FALCON_7B = {
    "architectures": ["FalconForCausalLM"], "model_type": "falcon", "hidden_size": 4544,
    "num_attention_heads": 71, "num_hidden_layers": 32, "vocab_size": 65024,
    "multi_query": True, "new_decoder_architecture": False, "parallel_attn": True,
    "bias": False, "alibi": False, "layer_norm_epsilon": 1e-5, "max_position_embeddings": 2048,
    "torch_dtype": "bfloat16", "bos_token_id": 11, "eos_token_id": 11,
}
# Qwen/Qwen2.5-14B's config.json: a 14B-class model with grouped-query attention (8 of 40).
QWEN25_14B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 5120,
    "intermediate_size": 13824, "num_attention_heads": 40, "num_key_value_heads": 8,
    "num_hidden_layers": 48, "vocab_size": 152064, "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5, "rope_theta": 1000000.0, "hidden_act": "silu",
    "use_sliding_window": False, "sliding_window": 131072, "max_window_layers": 48,
    "torch_dtype": "bfloat16", "tie_word_embeddings": False, "bos_token_id": 151643,
    "eos_token_id": 151643,
}
# Qwen/Qwen2.5-1.5B's config.json: 2 KV heads, fewer than 4 GPUs (replicated at TP 4).
QWEN25_1_5B = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 1536,
    "intermediate_size": 8960, "num_attention_heads": 12, "num_key_value_heads": 2,
    "num_hidden_layers": 28, "vocab_size": 151936, "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "hidden_act": "silu",
    "use_sliding_window": False, "sliding_window": 131072, "max_window_layers": 28,
    "torch_dtype": "bfloat16", "tie_word_embeddings": True, "bos_token_id": 151643,
    "eos_token_id": 151643,
}
# HuggingFaceTB/SmolLM2-135M-Instruct's config.json: the lab's default model (the runtime check).
SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 576,
    "intermediate_size": 1536, "num_attention_heads": 9, "num_key_value_heads": 3,
    "num_hidden_layers": 30, "vocab_size": 49152, "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "hidden_act": "silu",
    "torch_dtype": "bfloat16", "tie_word_embeddings": True, "bos_token_id": 1,
    "eos_token_id": 2, "pad_token_id": 2,
}
# fmt: on
SHAPES = {
    "llama-7b": LLAMA_7B,
    "llama-3.1-8b": LLAMA31_8B,
    "falcon-7b": FALCON_7B,
    "qwen2.5-14b": QWEN25_14B,
    "smollm2-135m": SMOLLM2_135M,
}  # fmt: skip


def model_folder(shape: str, tokenizer_dir: Path, dest: Path) -> Path:
    """``dest`` as a model folder: the shape's config.json and the tokenizer's files."""
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.json").write_text(json.dumps(SHAPES[shape], indent=1))
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copy2(tokenizer_dir / name, dest / name)
    return dest
