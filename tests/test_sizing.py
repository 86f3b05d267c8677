"""Sizing follows vLLM's memory accounting: KV bytes per token, blocks, plans and their reasons."""

from __future__ import annotations

import math

import pytest
from sizing_models import (
    AWQ_4BIT,
    FALCON_7B,
    FALCON_40B,
    GPT2,
    LLAMA2_7B,
    LLAMA3_8B,
    MPT_GQA,
    OPT_125M,
    PYTHIA_160M,
    SMOLLM2_135M,
    params,
    spec,
)

from labkit import sizing
from labkit.errors import ModelError, SizingError
from labkit.sizing import GiB

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
    # vLLM 0.26 logs 0.88 GiB for Llama-3.1-8B at 8192 (tests/data/gpu_oracles/llama-3.1-8b-gqa.json)
    assert 0.83 < at_8k.budget.activation_bytes / GiB < 0.93
    at_16k = sizing.size(llama, gpus=1, gpu_memory_gib=39.39, max_num_batched_tokens=16384)
    assert at_16k.budget.activation_bytes > 1.6 * at_8k.budget.activation_bytes
    assert "--max-num-batched-tokens" in at_16k.vllm_args
    default = sizing.size(llama, gpus=1, gpu_memory_gib=39.39)
    assert default.max_num_batched_tokens == 2048  # the OpenAI server's default on such GPUs


def test_non_torch_memory_grows_with_tensor_parallelism():
    llama = spec(LLAMA3_8B)
    one = sizing.size(llama, plan="infer2.l", max_model_len=8192)
    four = sizing.size(llama, plan="infer2.4xl", max_model_len=8192)
    assert one.budget.non_torch_bytes == int(0.22 * GiB)  # vLLM 0.26's logs on an H100
    assert four.tensor_parallel_size == 4
    assert four.budget.non_torch_bytes > one.budget.non_torch_bytes


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
