"""Sizing follows vLLM's memory accounting: KV bytes per token, blocks, plans and their reasons."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest

from labkit import sizing
from labkit.errors import ModelError, SizingError
from labkit.sizing import GiB, ModelSpec

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


# --- KV bytes per token ----------------------------------------------------------------


def test_gqa_kv_bytes_per_token_split_over_tp_and_replicated_beyond():
    llama = spec(LLAMA3_8B)
    assert llama.total_kv_heads == 8 and llama.head_size == 128
    assert llama.kv_bytes_per_token(tp=1) == 2 * 32 * 8 * 128 * 2 == 131_072
    assert llama.kv_bytes_per_token(tp=2) == 65_536
    assert llama.kv_bytes_per_token(tp=8) == 16_384
    # 16 GPUs for 8 KV heads: vLLM replicates, each GPU keeps max(1, 8 // 16) = 1 head.
    assert llama.kv_bytes_per_token(tp=16) == 2 * 32 * 1 * 128 * 2


def test_falcon_multi_query_has_one_kv_head():
    falcon = spec(FALCON_7B)
    assert falcon.total_kv_heads == 1
    assert falcon.head_size == 64
    assert falcon.kv_bytes_per_token() == 2 * 32 * 1 * 64 * 2


def test_falcon_new_decoder_architecture_ignores_multi_query():
    falcon = spec(FALCON_40B, multi_query=True)
    assert falcon.total_kv_heads == 8
    assert falcon.num_layers == 60 and falcon.num_attention_heads == 128
    assert spec(FALCON_7B, multi_query=False).total_kv_heads == 71


def test_mpt_reads_kv_n_heads_and_its_own_field_names():
    mpt = spec(MPT_GQA)
    assert (mpt.num_layers, mpt.num_attention_heads, mpt.hidden_size) == (32, 32, 4096)
    assert mpt.total_kv_heads == 8
    assert spec(MPT_GQA, attn_config={}).total_kv_heads == 32
    assert mpt.max_position_embeddings == 2048


def test_head_dim_from_config_wins_over_hidden_over_heads():
    gemma_like = spec(LLAMA3_8B, hidden_size=3072, num_attention_heads=16, head_dim=256)
    assert gemma_like.head_size == 256
    assert spec(LLAMA3_8B, head_dim=None).head_size == 4096 // 32
    assert spec(LLAMA3_8B, hidden_size=3072, num_attention_heads=16).head_size == 192


def test_gpt2_opt_neox_field_names():
    gpt2 = spec(GPT2)
    assert (gpt2.num_layers, gpt2.num_attention_heads, gpt2.hidden_size) == (12, 12, 768)
    assert gpt2.kv_bytes_per_token() == 2 * 12 * 12 * 64 * 2
    assert gpt2.max_position_embeddings == 1024
    assert spec(OPT_125M).kv_bytes_per_token() == 2 * 12 * 12 * 64 * 2
    assert spec(PYTHIA_160M).total_kv_heads == 12


def test_multi_query_group_num_and_seq_length():
    glm = spec({"model_type": "chatglm", "hidden_size": 4096, "num_attention_heads": 32,
                "num_layers": 28, "multi_query_group_num": 2, "seq_length": 32768})  # fmt: skip
    assert glm.total_kv_heads == 2 and glm.max_position_embeddings == 32768


def test_mla_caches_one_latent_per_layer():
    dsv2_lite = spec({"model_type": "deepseek_v2", "hidden_size": 2048, "num_attention_heads": 16,
                      "num_hidden_layers": 27, "kv_lora_rank": 512,
                      "qk_rope_head_dim": 64})  # fmt: skip
    assert dsv2_lite.kv_bytes_per_token(tp=1) == 27 * (512 + 64) * 2
    assert dsv2_lite.kv_bytes_per_token(tp=4) == 27 * (512 + 64) * 2


def test_fp8_kv_cache_is_one_byte():
    report = sizing.size(spec(LLAMA3_8B), plan="infer2.l", kv_cache_dtype="fp8", max_model_len=8192)
    assert report.kv_bytes_per_token == 2 * 32 * 8 * 128 * 1
    assert report.kv_cache_dtype == "fp8"
    assert report.vllm_args[-2:] == ["--kv-cache-dtype", "fp8"]
    half = sizing.size(spec(LLAMA3_8B), plan="infer2.l", kv_cache_dtype="half", max_model_len=8192)
    assert half.vllm_args[-2:] == ["--kv-cache-dtype", "float16"]  # vLLM has no "half" here


# --- the numbers vLLM logged ----------------------------------------------------------


def test_smollm2_on_a_cpu_plan_matches_the_vllm_log():
    # vLLM (CPU, VLLM_CPU_KVCACHE_SPACE=1) logged "CPU KV cache size: 46,592 tokens" here.
    report = sizing.size(spec(SMOLLM2_135M), plan="basic", kv_cache_gib=1, max_model_len=8192)
    assert report.kv_bytes_per_token == 30 * 3 * 64 * 2 * 2 == 23_040
    assert report.device == "cpu" and report.block_size == 128
    assert report.kv_cache_blocks == GiB // (128 * 23_040) == 364
    assert report.kv_cache_tokens == 46_592
    assert report.max_concurrency == 364 / 64
    assert report.fits
    assert "--kv-cache-memory-bytes" in report.vllm_args
    assert "--gpu-memory-utilization" not in report.vllm_args


def test_concurrency_rounds_max_model_len_up_to_whole_blocks():
    report = sizing.size(spec(SMOLLM2_135M), plan="basic", kv_cache_gib=1, max_model_len=2000)
    assert report.max_concurrency == 364 / 16  # cdiv(2000, 128) = 16 blocks per request
    assert report.kv_cache_tokens == int(364 / 16 * 2000) == 45_500


def test_overrides_reproduce_a_gpu_start_up_log_to_the_block():
    report = sizing.size(
        spec(LLAMA3_8B), gpus=1, gpu_memory_gib=22.0, max_model_len=8192,
        weights_gib=14.96, activation_gib=1.19, non_torch_gib=0.15,
    )  # fmt: skip
    b = report.budget
    assert (b.weights_bytes, b.activation_bytes, b.non_torch_bytes) == (
        int(14.96 * GiB), int(1.19 * GiB), int(0.15 * GiB),
    )  # fmt: skip
    available = (
        math.ceil(int(22.0 * GiB) * 0.9) - int(14.96 * GiB) - int(1.19 * GiB) - int(0.15 * GiB)
    )
    assert b.kv_budget_bytes == available
    assert report.kv_cache_blocks == available // (16 * 131_072)
    assert report.kv_cache_tokens == int(report.kv_cache_blocks / 512 * 8192)
    assert report.weights_source == "given"


def test_activation_estimate_scales_with_batched_tokens():
    llama = spec(LLAMA3_8B)
    at_8k = sizing.size(llama, gpus=1, gpu_memory_gib=39.39, max_num_batched_tokens=8192)
    assert 1.1 < at_8k.budget.activation_bytes / GiB < 1.3  # vLLM logs ~1.2 GiB
    at_16k = sizing.size(llama, gpus=1, gpu_memory_gib=39.39, max_num_batched_tokens=16384)
    assert at_16k.budget.activation_bytes > 1.6 * at_8k.budget.activation_bytes
    assert "--max-num-batched-tokens" in at_16k.vllm_args
    default = sizing.size(llama, gpus=1, gpu_memory_gib=39.39)
    assert default.max_num_batched_tokens == 2048  # the OpenAI server's default on such GPUs


def test_non_torch_memory_grows_with_tensor_parallelism():
    llama = spec(LLAMA3_8B)
    one = sizing.size(llama, plan="infer2.l", max_model_len=8192)
    four = sizing.size(llama, plan="infer2.4xl", max_model_len=8192)
    assert one.budget.non_torch_bytes == int(0.15 * GiB)
    assert four.tensor_parallel_size == 4
    assert four.budget.non_torch_bytes > one.budget.non_torch_bytes


# --- weights ---------------------------------------------------------------------------


def test_llama2_7b_weights_estimate():
    assert params(LLAMA2_7B) == 6_738_415_616
    weights = spec(LLAMA2_7B).estimated_weights_bytes("float16")
    assert weights / GiB == pytest.approx(12.55, abs=0.01)


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (GPT2, 124_439_808),
        (OPT_125M, 125_239_296),
        (PYTHIA_160M, 162_322_944),
        (FALCON_7B, 6_921_720_704),
        (SMOLLM2_135M, 134_515_008),
    ],
    ids=["gpt2", "opt-125m", "pythia-160m", "falcon-7b", "smollm2-135m"],
)
def test_parameter_counts_match_the_published_models(config, expected):
    assert params(config) == expected


def test_qwen2_biases_tied_embeddings_and_mpt():
    qwen = {**LLAMA2_7B, "model_type": "qwen2"}
    assert params(qwen) - params(LLAMA2_7B) == 32 * 3 * 4096  # q, k, v biases
    assert params({**LLAMA2_7B, "tie_word_embeddings": True}) == params(LLAMA2_7B) - 32000 * 4096
    mpt7b = {**MPT_GQA, "attn_config": {}}
    assert params(mpt7b) == pytest.approx(6.65e9, rel=0.01)
    assert params(FALCON_40B) == pytest.approx(41.8e9, rel=0.02)


def test_awq_4bit_estimate():
    awq = spec(LLAMA2_7B, quantization_config=AWQ_4BIT)
    weights = awq.estimated_weights_bytes("float16")
    # TheBloke/Llama-2-7B-AWQ's model.safetensors is 3.89 GB.
    assert weights == pytest.approx(3.889e9, rel=0.005)
    gptq = spec(LLAMA2_7B, quantization_config={**AWQ_4BIT, "quant_method": "gptq"})
    assert gptq.estimated_weights_bytes("float16") > weights  # plus g_idx
    report = sizing.size(awq, plan="infer.s", max_model_len=4096)
    assert report.fits, report.reasons
    assert report.vllm_args[-2:] == ["--quantization", "awq"]
    assert report.dtype == "float16"


def test_unknown_architecture_without_safetensors_asks_for_weights_gib():
    odd = spec({"model_type": "mamba2ish", "hidden_size": 1024, "num_attention_heads": 8,
                "num_hidden_layers": 4, "max_position_embeddings": 2048})  # fmt: skip
    with pytest.raises(ModelError, match="--weights-gib"):
        sizing.size(odd, plan="infer2.l")
    report = sizing.size(odd, plan="infer2.l", weights_gib=2.0)
    assert report.weights_bytes == 2 * GiB and report.fits


def test_safetensors_headers_give_exact_weights(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**SMOLLM2_135M, "torch_dtype": "bfloat16"}))
    write_safetensors(
        folder / "model.safetensors",
        {
            "model.embed_tokens.weight": ("BF16", [100, 8]),
            "lm_head.weight": ("F32", [100, 8]),  # cast to bfloat16 when served
            "model.layers.0.mlp.down_proj.qweight": ("I32", [8, 4]),  # stored size
            "model.layers.0.mlp.down_proj.scales": ("F16", [1, 32]),  # stored size
        },
    )
    loaded = sizing.load_model_config(folder)
    assert loaded.source == "folder" and loaded.name == "tiny"
    assert {t.name: t.numel for t in loaded.tensors}["lm_head.weight"] == 800
    assert loaded.weights_bytes("bfloat16") == 800 * 2 + 800 * 2 + 32 * 4 + 32 * 2
    assert loaded.weights_bytes("float32") == 800 * 4 + 800 * 4 + 32 * 4 + 32 * 2
    report = sizing.size(folder, plan="basic")
    assert report.weights_source == "safetensors headers"
    assert report.weights_bytes == 3392


def test_index_and_consolidated_files_are_not_counted_twice(tmp_path):
    folder = tmp_path / "sharded"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(SMOLLM2_135M))
    write_safetensors(folder / "model-00001-of-00002.safetensors", {"a": ("BF16", [10])})
    write_safetensors(folder / "model-00002-of-00002.safetensors", {"b": ("BF16", [20])})
    write_safetensors(
        folder / "consolidated.safetensors", {"a": ("BF16", [10]), "b": ("BF16", [20])}
    )
    assert sizing.load_model_config(folder).weights_bytes("bfloat16") == 60
    weight_map = {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert sizing.load_model_config(folder).weights_bytes("bfloat16") == 60


def test_config_dtype_falls_back_to_the_safetensors_dtype(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    config = {k: v for k, v in SMOLLM2_135M.items() if k != "torch_dtype"}
    (folder / "config.json").write_text(json.dumps(config))
    write_safetensors(folder / "model.safetensors", {"w": ("F16", [4, 4])})
    assert sizing.load_model_config(folder).config_dtype == "float16"
    assert spec(config).config_dtype is None


def test_broken_safetensors_header_is_a_model_error(tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(SMOLLM2_135M))
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", 50) + b"{not json")
    with pytest.raises(ModelError, match="not a valid safetensors file"):
        sizing.load_model_config(folder)


def test_config_json_path_and_missing_paths(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA2_7B))
    loaded = sizing.load_model_config(path)
    assert loaded.source == "config" and loaded.tensors is None
    assert sizing.size(path, plan="train2.8xl").weights_source == "estimated from config.json"
    with pytest.raises(ModelError, match="/nonexistent/model/dir"):
        sizing.load_model_config("/nonexistent/model/dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=r"no config\.json"):
        sizing.load_model_config(tmp_path / "empty")
    with pytest.raises(ModelError, match="neither"):
        sizing.load_model_config("not a repo id!")


class FakeHub:
    """Stands in for huggingface_hub.HfApi: records the endpoint, serves config and headers."""

    instances: ClassVar[list[FakeHub]] = []

    def __init__(self, endpoint=None, token=None, *, config_path: Path, tensors=None, error=None):
        self.endpoint, self.token = endpoint or "https://huggingface.co", token
        self.config_path, self.tensors, self.error = config_path, tensors, error
        self.calls: list[tuple] = []
        FakeHub.instances.append(self)

    def hf_hub_download(self, repo_id, filename, revision=None):
        self.calls.append(("download", repo_id, filename, revision))
        if self.error:
            raise self.error
        return str(self.config_path)

    def get_safetensors_metadata(self, repo_id, revision=None):
        from huggingface_hub.errors import NotASafetensorsRepoError

        self.calls.append(("metadata", repo_id, revision))
        if self.tensors is None:
            raise NotASafetensorsRepoError("no safetensors")
        info = {
            n: SimpleNamespace(dtype=d, parameter_count=c) for n, (d, c) in self.tensors.items()
        }
        return SimpleNamespace(files_metadata={"model.safetensors": SimpleNamespace(tensors=info)})


def test_hub_repo_reads_config_and_headers_through_hf_endpoint(tmp_path, monkeypatch):
    import huggingface_hub

    path = tmp_path / "config.json"
    path.write_text(json.dumps(SMOLLM2_135M))
    tensors = {"model.embed_tokens.weight": ("BF16", 49152 * 576)}
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(
        huggingface_hub, "HfApi", lambda endpoint=None, token=None: FakeHub(
            endpoint, token, config_path=path, tensors=tensors)
    )  # fmt: skip
    loaded = sizing.load_model_config(
        "HuggingFaceTB/SmolLM2-135M-Instruct", revision="a" * 40, token="t"
    )
    hub = FakeHub.instances[-1]
    assert hub.endpoint == "http://127.0.0.1:9" and hub.token == "t"
    assert ("download", "HuggingFaceTB/SmolLM2-135M-Instruct", "config.json", "a" * 40) in hub.calls
    assert loaded.source == "hub" and loaded.revision == "a" * 40
    assert loaded.weights_bytes("bfloat16") == 49152 * 576 * 2

    monkeypatch.setattr(
        huggingface_hub, "HfApi", lambda endpoint=None, token=None: FakeHub(
            endpoint, token, config_path=path, tensors=None)
    )  # fmt: skip
    estimated = sizing.load_model_config("org/model")
    assert estimated.tensors is None and "estimated" in estimated.notes[0]


def test_hub_errors_become_model_errors(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    missing = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
    Exception.__init__(missing, "404")
    monkeypatch.setattr(
        huggingface_hub, "HfApi", lambda endpoint=None, token=None: FakeHub(
            endpoint, token, config_path=tmp_path, error=missing)
    )  # fmt: skip
    with pytest.raises(ModelError, match="no Hub repo org/none"):
        sizing.load_model_config("org/none")
    monkeypatch.setattr(
        huggingface_hub, "HfApi", lambda endpoint=None, token=None: FakeHub(
            endpoint, token, config_path=tmp_path, error=ConnectionError("refused"))
    )  # fmt: skip
    with pytest.raises(ModelError, match="HF_ENDPOINT"):
        sizing.load_model_config("org/none")


# --- dtype -----------------------------------------------------------------------------


def test_auto_dtype_falls_back_to_half_on_a_t4():
    report = sizing.size(
        spec(LLAMA2_7B, torch_dtype="bfloat16"), plan="infer.s", max_model_len=1024
    )
    assert report.dtype == "float16"
    assert report.vllm_args[2:4] == ["--dtype", "half"]
    assert any("falls back to float16" in n for n in report.notes)


def test_explicit_bfloat16_on_a_t4_or_v100_does_not_fit():
    for plan in ("infer.s", "train.l"):
        report = sizing.size(spec(SMOLLM2_135M), plan=plan, dtype="bfloat16")
        assert not report.fits
        assert any("no bfloat16: use --dtype half" in r for r in report.reasons)
    report = sizing.size(
        spec(SMOLLM2_135M), plan="infer.s", kv_cache_dtype="bfloat16", dtype="half"
    )
    assert any("--kv-cache-dtype" in r for r in report.reasons)


def test_float32_checkpoints_are_served_in_16_bit():
    fp32 = spec(SMOLLM2_135M, torch_dtype="float32")
    assert sizing.size(fp32, plan="infer2.l").dtype == "bfloat16"
    assert sizing.size(fp32, plan="infer.s").dtype == "float16"
    assert sizing.size(fp32, plan="basic").dtype == "bfloat16"
    assert (
        sizing.size(fp32, plan="infer2.l", dtype="float32").weights_bytes == params(fp32.config) * 4
    )


def test_models_unstable_in_float16_get_float32_on_a_t4():
    gemma2 = spec(SMOLLM2_135M, model_type="gemma2", architectures=["Gemma2ForCausalLM"])
    with pytest.raises(ModelError):  # no weights formula for gemma2 ...
        sizing.size(gemma2, plan="infer.s")
    report = sizing.size(gemma2, plan="infer.s", weights_gib=0.5)  # ... so give them
    assert report.dtype == "float32"
    explicit = sizing.size(gemma2, plan="infer.s", weights_gib=0.5, dtype="half")
    assert any("unstable in float16" in r for r in explicit.reasons)


def test_awq_needs_turing_or_newer():
    report = sizing.size(spec(LLAMA2_7B, quantization_config=AWQ_4BIT), plan="train.l")
    assert any("awq kernels need compute capability 7.5" in r for r in report.reasons)


# --- validity checks -------------------------------------------------------------------


def test_heads_not_divisible_by_tp():
    report = sizing.size(spec(FALCON_7B), plan="infer2.4xl", tp=2)
    assert not report.fits
    assert any(
        "71 attention heads are not divisible by tensor parallel 2" in r for r in report.reasons
    )


def test_default_tp_picks_a_divisor_of_the_heads_and_says_so():
    report = sizing.size(spec(FALCON_7B), plan="infer2.4xl")
    assert report.tensor_parallel_size == 1
    assert any("do not split over 4 GPUs" in n for n in report.notes)
    assert (
        sizing.size(
            spec(LLAMA3_8B, max_position_embeddings=8192), plan="train2.8xl"
        ).tensor_parallel_size
        == 8
    )


def test_tp_above_the_gpu_count():
    report = sizing.size(spec(LLAMA3_8B), plan="infer2.l", tp=2, max_model_len=8192)
    assert not report.fits
    assert any("needs 2 GPUs but infer2.l has 1" in r for r in report.reasons)


def test_kv_heads_must_split_or_replicate_evenly():
    report = sizing.size(
        spec(LLAMA3_8B, num_attention_heads=24), gpus=3, gpu_memory_gib=40, max_model_len=4096
    )
    assert report.tensor_parallel_size == 3
    assert any("8 KV heads" in r for r in report.reasons)


def test_max_model_len_too_long_suggests_what_fits():
    llama = spec(LLAMA3_8B)
    report = sizing.size(llama, plan="infer2.l")
    assert not report.fits and report.max_model_len == 131072
    suggestion = report.max_model_len_that_fits
    assert suggestion == (report.kv_cache_blocks - 1) * 16  # vLLM keeps the null block back
    assert any(f"--max-model-len {suggestion} or less" in r for r in report.reasons)
    assert sizing.size(llama, plan="infer2.l", max_model_len=suggestion).fits
    assert not sizing.size(llama, plan="infer2.l", max_model_len=suggestion + 1).fits


def test_max_model_len_above_the_models_limit():
    report = sizing.size(spec(SMOLLM2_135M), plan="infer2.l", max_model_len=16384)
    assert any("above the model's limit 8,192" in r for r in report.reasons)


def test_weights_larger_than_the_gpu():
    report = sizing.size(spec(LLAMA3_8B), plan="infer.s", max_model_len=1024)
    assert not report.fits
    assert report.kv_cache_blocks == 0 and report.kv_cache_tokens == 0
    reason = report.reasons[0]
    assert "bigger plan" in reason and "quantized" in reason
    assert "--tensor-parallel-size" not in reason  # infer.s has one GPU
    seventy = spec(LLAMA3_8B, num_hidden_layers=80, hidden_size=8192, intermediate_size=28672,
                   num_attention_heads=64)  # fmt: skip
    on_four = sizing.size(seventy, plan="infer2.4xl", tp=2, max_model_len=1024)
    assert any("a higher --tensor-parallel-size" in r for r in on_four.reasons)


def test_cpu_plans_need_ram_for_weights_runtime_and_kv_cache():
    llama2 = sizing.size(spec(LLAMA2_7B), plan="basic")
    assert llama2.device == "cpu" and llama2.block_size == 128 and llama2.gpus == 0
    assert llama2.budget.kv_budget_bytes == 4 * GiB  # the default fixed KV cache on CPU
    assert any("weights need" in r and "RAM" in r for r in llama2.reasons)
    starter = sizing.size(spec(SMOLLM2_135M), plan="starter", kv_cache_gib=1)
    assert not starter.fits and any("bigger plan" in r for r in starter.reasons)
    too_much_kv = sizing.size(spec(SMOLLM2_135M), plan="basic", kv_cache_gib=9)
    assert any("lower --kv-cache-gib" in r for r in too_much_kv.reasons)
    assert any("CPU plan" in r for r in sizing.size(spec(SMOLLM2_135M), plan="basic", tp=2).reasons)


def test_fixed_kv_cache_on_gpu_replaces_utilisation():
    report = sizing.size(spec(LLAMA3_8B), plan="infer2.l", kv_cache_gib=2, max_model_len=8192)
    assert report.budget.kv_budget_bytes == 2 * GiB
    assert report.kv_cache_blocks == 2 * GiB // (16 * 131_072)
    assert "--gpu-memory-utilization" not in report.vllm_args
    assert report.vllm_args[report.vllm_args.index("--kv-cache-memory-bytes") + 1] == str(2 * GiB)
    too_big = sizing.size(spec(LLAMA3_8B), plan="infer2.l", kv_cache_gib=8, max_model_len=8192)
    assert any("lower --kv-cache-gib" in r for r in too_big.reasons)


def test_block_size_override():
    report = sizing.size(spec(SMOLLM2_135M), plan="infer2.l", block_size=32, max_model_len=8192)
    assert report.block_size == 32
    assert report.kv_cache_blocks == report.budget.kv_budget_bytes // (32 * 23_040)
    assert report.vllm_args[-2:] == ["--block-size", "32"]
    assert sizing.size(spec(SMOLLM2_135M), plan="infer2.l").block_size == 16


def test_user_errors_are_sizing_errors():
    llama = spec(LLAMA3_8B)
    with pytest.raises(SizingError, match=r"unknown plan 'no\.such\.plan'.*infer2\.l"):
        sizing.size(llama, plan="no.such.plan")
    with pytest.raises(SizingError, match="not both"):
        sizing.size(llama, plan="infer2.l", gpus=2, gpu_memory_gib=20)
    with pytest.raises(SizingError, match="--gpu-memory-gib"):
        sizing.size(llama, gpus=2)
    with pytest.raises(SizingError, match="unknown dtype"):
        sizing.size(llama, plan="infer2.l", dtype="int3")
    with pytest.raises(SizingError, match="kv_cache_dtype"):
        sizing.size(llama, plan="infer2.l", kv_cache_dtype="float64")
    with pytest.raises(SizingError, match="gpu_memory_utilization"):
        sizing.size(llama, plan="infer2.l", gpu_memory_utilization=1.5)
    assert "\n" not in str(SizingError("a", "b"))


# --- plans -----------------------------------------------------------------------------


def test_shipped_catalogue():
    catalogue = sizing.load_catalogue()
    assert catalogue.names()[:2] == ["starter", "basic"]
    assert {"infer.s", "infer.m", "infer.l", "train.l", "infer2.l", "infer2.4xl", "basic.8x",
            "train2.8xl", "train2.8xxl"} <= set(catalogue.names())  # fmt: skip
    assert [p.order for p in catalogue.plans] == sorted(p.order for p in catalogue.plans)
    assert all(catalogue.get(n).gpus == 0 for n in ("starter", "basic", "basic.8x"))
    t4 = catalogue.gpu_type(catalogue.get("infer.s").gpu)
    assert (t4.usable_gib, t4.compute_capability) == (14.58, 7.5)
    assert catalogue.get("infer2.4xl").gpus == 4 and catalogue.get("train2.8xxl").gpu == "A100-40GB"
    assert catalogue.get("basic").memory_bytes == 11 * 10**9
    assert "<table>" in catalogue._repr_html_()


def test_smallest_fitting_plan_is_chosen_without_a_plan():
    report = sizing.size(spec(LLAMA3_8B), max_model_len=8192)
    assert report.plan == report.smallest_fitting_plan == "infer2.l"
    assert report.fits
    verdicts = {p.name: p for p in report.plans}
    assert not verdicts["infer.s"].fits and verdicts["infer2.4xl"].fits
    assert verdicts["infer2.l"].kv_cache_tokens == report.kv_cache_tokens
    assert sizing.size(spec(SMOLLM2_135M)).plan == "basic"


def test_no_plan_fits_says_so():
    huge = spec(LLAMA3_8B, hidden_size=16384, num_hidden_layers=126, intermediate_size=53248,
                num_attention_heads=128)  # fmt: skip
    report = sizing.size(huge, max_model_len=4096)
    assert not report.fits and report.smallest_fitting_plan is None
    assert report.reasons[0].startswith("no plan in the catalogue fits")


def test_extra_plans_file(tmp_path):
    extra = tmp_path / "plans.toml"
    extra.write_text(
        '[gpus.L40S]\nusable_gib = 44.4\ncompute_capability = 8.9\n\n'
        '[[plans]]\nname = "team.l40s"\norder = 75\ngpus = 1\ngpu = "L40S"\n\n'
        '[[plans]]\nname = "basic"\norder = 20\ngpus = 0\nmemory_gb = 12\n'
    )  # fmt: skip
    catalogue = sizing.load_catalogue(extra)
    assert catalogue.get("team.l40s").gpu == "L40S"
    assert catalogue.get("basic").memory_bytes == 12 * 10**9
    assert catalogue.names().index("team.l40s") == catalogue.names().index("infer2.l") + 1
    report = sizing.size(spec(LLAMA3_8B), plan="team.l40s", catalogue=catalogue, max_model_len=8192)
    assert report.fits and report.gpu_type == "L40S"
    bad = tmp_path / "bad.toml"
    bad.write_text('[[plans]]\nname = "x"\norder = 1\ngpus = 1\ngpu = "Z80"\n')
    with pytest.raises(SizingError, match="unknown GPU type 'Z80'"):
        sizing.load_catalogue(bad)
    bad.write_text('[[plans]]\nname = "x"\norder = 1\nmemroy_gb = 3\n')
    with pytest.raises(SizingError, match="memroy_gb"):
        sizing.load_catalogue(bad)


INSTANCE_TYPES = {
    "instanceTypes": {
        "gpu_nvidia_a10g_1x": {"memory": "30Gi", "cpu": 7, "gpu": 1, "billableUnitsPerHour": 5},
        "cpu_2x8": {"memory": "8Gi", "cpu": 2, "gpu": 0, "billableUnitsPerHour": 0.5},
        "gpu_mystery_4x": {"memory": "120Gi", "cpu": 30, "gpu": 4, "billableUnitsPerHour": 20},
    }
}


def test_instance_types_from_the_ai_core_api():
    catalogue = sizing.load_catalogue().with_instance_types(INSTANCE_TYPES)
    a10g = catalogue.get("gpu_nvidia_a10g_1x")
    assert (a10g.kind, a10g.gpus, a10g.gpu, a10g.memory_bytes) == (
        "instanceType",
        1,
        "A10G",
        30 * GiB,
    )
    assert a10g.billable_units_per_hour == 5.0
    cpu = catalogue.get("cpu_2x8")
    assert cpu.gpus == 0 and catalogue.names().index("cpu_2x8") == 1  # between starter and basic
    mystery = catalogue.get("gpu_mystery_4x")
    assert mystery.gpu is None

    report = sizing.size(spec(SMOLLM2_135M), catalogue=catalogue)
    assert report.smallest_fitting_plan == "cpu_2x8"
    verdict = next(p for p in report.plans if p.name == "gpu_mystery_4x")
    assert not verdict.fits and "gpu_types" in verdict.reasons[0] and verdict.budget is None

    named = sizing.load_catalogue().with_instance_types(
        INSTANCE_TYPES, gpu_types={"gpu_mystery_4x": "L4"}
    )
    assert named.get("gpu_mystery_4x").gpu == "L4"
    assert sizing.size(spec(LLAMA3_8B), plan="gpu_mystery_4x", catalogue=named).fits


def test_instance_types_payload_must_have_the_api_shape():
    catalogue = sizing.load_catalogue()
    with pytest.raises(SizingError, match="instanceTypes"):
        catalogue.with_instance_types({"resources": {}})
    with pytest.raises(SizingError, match="billableUnitsPerHour"):
        catalogue.with_instance_types(
            {"instanceTypes": {"x": {"memory": "1Gi", "cpu": 1, "gpu": 0}}}
        )
    with pytest.raises(SizingError, match="memory"):
        catalogue.with_instance_types(
            {
                "instanceTypes": {
                    "x": {"memory": "lots", "cpu": 1, "gpu": 0, "billableUnitsPerHour": 1}
                }
            }
        )
    with pytest.raises(SizingError, match="unknown GPU type"):
        catalogue.with_instance_types(INSTANCE_TYPES, gpu_types={"gpu_mystery_4x": "Z80"})


# --- output ----------------------------------------------------------------------------


def test_to_dict_is_json_with_the_cli_contract():
    report = sizing.size(spec(LLAMA3_8B), plan="infer2.l", max_model_len=8192)
    data = json.loads(json.dumps(report.to_dict()))
    assert data.keys() >= CONTRACT
    assert data["weights_bytes"] == report.weights_bytes
    assert data["budget"]["weights_bytes"] == report.budget.weights_bytes
    assert {p["name"] for p in data["plans"]} >= {"starter", "infer2.l"}
    assert data["smallest_fitting_plan"] == "infer2.l"
    assert data["vllm_args"] == [
        "--tensor-parallel-size", "1", "--dtype", "bfloat16", "--max-model-len", "8192",
        "--gpu-memory-utilization", "0.9",
    ]  # fmt: skip


def test_html_and_text_summaries():
    fits = sizing.size(spec(LLAMA3_8B), plan="infer2.l", max_model_len=8192)
    page = fits._repr_html_()
    assert "FITS" in page and "infer2.4xl" in page and "--max-model-len 8192" in page
    no = sizing.size(spec(LLAMA3_8B), plan="infer.s", max_model_len=8192)
    assert "DOES NOT FIT" in no._repr_html_() and "quantized" in no._repr_html_()
    assert "DOES NOT FIT" in no.to_text()


def test_plot_budget_returns_axes():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = sizing.size(spec(LLAMA3_8B), plan="infer2.4xl", max_model_len=8192, tp=2)
    ax = sizing.plot_budget(report)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["GPU 0", "GPU 1", "GPU 2", "GPU 3"]
    every = sizing.plot_budget(report, all_plans=True)
    assert len(every.get_xticklabels()) == len(report.plans)
    cpu = sizing.plot_budget(sizing.size(spec(SMOLLM2_135M), plan="basic"))
    assert [t.get_text() for t in cpu.get_xticklabels()] == ["RAM"]
    _, given = plt.subplots()
    assert sizing.plot_budget(report, ax=given) is given
    plt.close("all")
