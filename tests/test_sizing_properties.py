"""Bad input never crashes sizing: any config.json and any options give a sane report or one line.

Generated configs start from real models' config.json and change fields sizing reads (wrong
types, zero, negative, huge, NaN, missing, nested in text_config, inconsistent heads); generated
options cover `labkit size`'s flags. The invariant: a SizingReport whose numbers are sane, or a
LabError whose CLI form is one line on stderr with exit 2.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
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
    spec,
)

from labkit import sizing
from labkit.cli import main
from labkit.errors import LabError, ModelError, SizingError
from labkit.sizing import SizingReport

# fmt: off
GEMMA2_2B = {
    "model_type": "gemma2", "hidden_size": 2304, "intermediate_size": 9216,
    "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256, "num_hidden_layers": 26,
    "vocab_size": 256000, "max_position_embeddings": 8192, "torch_dtype": "float16",
}
DEEPSEEK_V2_LITE = {
    "model_type": "deepseek_v2", "hidden_size": 2048, "num_attention_heads": 16,
    "num_key_value_heads": 16, "num_hidden_layers": 27, "kv_lora_rank": 512,
    "qk_rope_head_dim": 64, "vocab_size": 102400, "max_position_embeddings": 163840,
    "intermediate_size": 10944, "torch_dtype": "bfloat16",
}
QWEN2_0_5B = {
    "model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
    "num_attention_heads": 14, "num_key_value_heads": 2, "num_hidden_layers": 24,
    "vocab_size": 151936, "max_position_embeddings": 32768, "torch_dtype": "bfloat16",
    "tie_word_embeddings": True, "rope_scaling": None,
}
LLAVA_LIKE = {
    "model_type": "llava", "torch_dtype": "float16",
    "text_config": {**LLAMA2_7B, "rope_scaling": {"type": "linear", "factor": 2.0}},
    "vision_config": {"hidden_size": 1024, "num_attention_heads": 16},
}
BASES = [
    LLAMA3_8B, LLAMA2_7B, SMOLLM2_135M, FALCON_7B, FALCON_40B, MPT_GQA, GPT2, OPT_125M,
    PYTHIA_160M, GEMMA2_2B, DEEPSEEK_V2_LITE, QWEN2_0_5B, LLAVA_LIKE,
    {**LLAMA3_8B, "quantization_config": AWQ_4BIT, "torch_dtype": "float16"},
    {**LLAMA3_8B, "quantization_config": {"quant_method": "gptq", "bits": 4, "group_size": -1}},
    {**QWEN2_0_5B, "quantization_config": {"quant_method": "fp8"}},
]
# Every field of config.json that sizing reads (labkit/sizing/model.py and weights.py).
FIELDS = [
    "hidden_size", "n_embd", "d_model",
    "num_attention_heads", "n_head", "n_heads", "num_heads",
    "num_key_value_heads", "n_head_kv", "num_kv_heads", "multi_query_group_num",
    "head_dim", "hidden_size_per_head",
    "num_hidden_layers", "n_layer", "n_layers", "num_layers",
    "vocab_size", "intermediate_size", "n_inner", "ffn_dim", "ffn_hidden_size", "expansion_ratio",
    "max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "max_sequence_length",
    "max_seq_length", "seq_len", "model_max_length",
    "torch_dtype", "dtype", "model_type", "tie_word_embeddings", "rope_scaling",
    "quantization_config", "compression_config", "text_config", "attn_config",
    "new_decoder_architecture", "multi_query", "parallel_attn", "bias", "no_bias",
    "attention_bias", "mlp_bias", "do_layer_norm_before", "word_embed_proj_dim",
    "num_ln_in_parallel_attn", "kv_lora_rank", "qk_rope_head_dim",
]
# fmt: on
MISSING = object()

numbers = st.one_of(
    st.integers(-3, 3),
    st.integers(1, 2**17),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**31 - 1, 2**31, 2**63, 10**30, 10**400]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.5, 4.0, 4096.0, -1.0, 1e300]),
)
words = st.one_of(
    st.sampled_from(
        [
            *("", "32", "4096", "bfloat16", "float16", "half", "float32", "int8", "torch.float16"),
            *("llama", "gemma2", "glm4", "falcon", "mpt", "dbrx", "opt", "gpt2", "deepseek_v3"),
            *("awq", "gptq", "fp8", "compressed_tensors", "x" * 200),
        ]
    ),
    st.text(max_size=8),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, words)
objects = st.dictionaries(
    st.sampled_from(["quant_method", "bits", "w_bit", "group_size", "q_group_size"])
    | st.sampled_from(["kv_n_heads", "type", "factor", "rope_type", "hidden_size"]),
    scalars,
    max_size=4,
)
junk = st.one_of(
    scalars,
    st.lists(st.one_of(st.integers(-2, 64), st.none()), max_size=3),
    objects,
    st.lists(st.lists(st.integers(), max_size=2), max_size=2),
)


@st.composite
def configs(draw) -> dict[str, Any]:
    """A real model's config.json with up to four fields changed, removed or nested."""
    config = json.loads(json.dumps(draw(st.sampled_from(BASES))))
    changes = draw(
        st.lists(
            st.tuples(st.sampled_from(FIELDS), st.one_of(st.just(MISSING), junk), st.booleans()),
            max_size=4,
        )
    )
    for key, value, nested in changes:
        target = config
        if nested:
            if not isinstance(config.get("text_config"), dict):
                config["text_config"] = {}
            target = config["text_config"]
        if value is MISSING:
            target.pop(key, None)
            config.pop(key, None)
        else:
            target[key] = value
    return config


def maybe(valid: st.SearchStrategy, broken: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly unset or valid, sometimes broken: so that some reports come out of many options."""
    return st.one_of(st.none(), valid, st.one_of(st.none(), valid, broken))


counts = maybe(
    st.integers(1, 8) | st.integers(1, 2**20),
    st.integers(-2, 0) | st.sampled_from([2**31 - 1, 2**31, 2**64]),
)
gibs = maybe(
    st.floats(0.01, 200),
    st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -1.0, 2.0**21, 1e300]),
)


@st.composite
def options(draw) -> dict[str, Any]:
    """Keyword arguments of sizing.size, as `labkit size`'s flags give them."""
    where = draw(st.sampled_from(["plans", "plan", "custom"]))
    opts: dict[str, Any] = {}
    if where == "plan":
        opts["plan"] = draw(
            st.sampled_from(["starter", "infer.s", "infer2.l", "train2.8xl", "nope"])
        )
    elif where == "custom":
        opts["gpus"] = draw(counts)
        opts["gpu_memory_gib"] = draw(gibs)
    opts["tp"] = draw(counts)
    opts["max_model_len"] = draw(maybe(st.sampled_from([512, 4096, 32768]), counts))
    opts["max_num_batched_tokens"] = draw(counts)
    opts["block_size"] = draw(maybe(st.sampled_from([1, 16, 128]), counts))
    opts["dtype"] = (
        draw(
            maybe(
                st.sampled_from(["auto", "half", "bfloat16", "float32"]),
                st.sampled_from(["fp16", "int8", ""]),
            )
        )
        or "auto"
    )
    opts["kv_cache_dtype"] = (
        draw(
            maybe(
                st.sampled_from(["auto", "fp8", "half", "bfloat16"]),
                st.sampled_from(["int4", "auto "]),
            )
        )
        or "auto"
    )
    opts["gpu_memory_utilization"] = draw(
        maybe(st.floats(0.05, 1.0), st.floats(allow_nan=True, allow_infinity=True))
    )
    if opts["gpu_memory_utilization"] is None:
        opts["gpu_memory_utilization"] = 0.9
    for key in ("weights_gib", "activation_gib", "non_torch_gib", "kv_cache_gib"):
        opts[key] = draw(maybe(st.none(), gibs))
    return opts


def assert_one_line(exc: LabError) -> None:
    text = str(exc)
    assert text and "\n" not in text and text == text.strip(), text


def assert_sane(report: SizingReport) -> None:
    """The numbers of a report are whole, finite, non-negative and agree with the verdict."""
    whole = {
        "weights_bytes": report.weights_bytes,
        "kv_cache_blocks": report.kv_cache_blocks,
        "kv_cache_tokens": report.kv_cache_tokens,
        "max_model_len_that_fits": report.max_model_len_that_fits,
    }
    positive = {
        "kv_bytes_per_token": report.kv_bytes_per_token,
        "max_model_len": report.max_model_len,
        "max_num_batched_tokens": report.max_num_batched_tokens,
        "max_num_seqs": report.max_num_seqs,
        "block_size": report.block_size,
        "tensor_parallel_size": report.tensor_parallel_size,
    }
    for name, value in whole.items():
        assert isinstance(value, int) and value >= 0, (name, value)
    for name, value in positive.items():
        assert isinstance(value, int) and value >= 1, (name, value)
    assert math.isfinite(report.max_concurrency) and report.max_concurrency >= 0
    assert 0 < report.gpu_memory_utilization <= 1
    assert report.dtype in ("float16", "bfloat16", "float32")
    b = report.budget
    for name in ("total_bytes", "limit_bytes", "weights_bytes", "activation_bytes"):
        assert getattr(b, name) >= 0, name
    assert b.non_torch_bytes >= 0 and 0 <= b.kv_cache_bytes <= b.kv_budget_bytes
    assert b.kv_cache_bytes == report.kv_cache_blocks * report.block_size * (
        report.kv_bytes_per_token
    )
    if report.fits:
        assert not report.reasons
        assert report.kv_cache_tokens >= report.max_model_len
        assert report.max_model_len_that_fits >= report.max_model_len
        assert report.max_concurrency >= 1
        assert b.weights_bytes + b.activation_bytes + b.non_torch_bytes < b.limit_bytes
    else:
        assert report.reasons and all(r and "\n" not in r for r in report.reasons)
    for plan in report.plans:
        assert plan.kv_cache_tokens >= 0 and math.isfinite(plan.max_concurrency)
        assert plan.fits == (not plan.reasons)
    if report.smallest_fitting_plan is not None:
        assert any(p.fits and p.name == report.smallest_fitting_plan for p in report.plans)
    json.dumps(report.to_dict(), allow_nan=False)
    assert report.to_text()


def size_or_error(model: Any, **opts: Any) -> SizingReport | None:
    try:
        report = sizing.size(model, **opts)
    except LabError as exc:
        assert_one_line(exc)
        return None
    assert_sane(report)
    return report


# --- config.json, through the library -------------------------------------------------


@given(config=configs())
@example(config={**SMOLLM2_135M, "num_hidden_layers": -32})
@example(config={**SMOLLM2_135M, "num_attention_heads": 0})
@example(config={**LLAMA3_8B, "num_key_value_heads": 0})
@example(config={**LLAMA3_8B, "num_key_value_heads": 64})
@example(config={**LLAMA3_8B, "num_key_value_heads": 5})
@example(config={**LLAMA3_8B, "hidden_size": 8})
@example(config={**LLAMA3_8B, "max_position_embeddings": math.inf})
@example(config={**LLAMA3_8B, "model_max_length": 0})
@example(config={**LLAMA3_8B, "max_position_embeddings": 0.5})
@example(config={**LLAMA3_8B, "max_position_embeddings": 10**400})
@example(config={**MPT_GQA, "expansion_ratio": 10**400})
@example(config={**MPT_GQA, "attn_config": ["kv_n_heads", 8]})
@example(config={**MPT_GQA, "expansion_ratio": "4"})
@example(config={**FALCON_40B, "ffn_hidden_size": "x"})
@example(config={**LLAMA3_8B, "vocab_size": "x"})
@example(config={**DEEPSEEK_V2_LITE, "kv_lora_rank": "512"})
@example(config={**LLAMA3_8B, "quantization_config": {**AWQ_4BIT, "group_size": "128"}})
def test_any_config_gives_a_sane_report_or_one_line(config):
    size_or_error(spec(config), weights_gib=None if "gemma" not in str(config) else 5.0)


@given(config=configs())
def test_any_config_with_measured_weights(config):
    # Measured weights skip the estimate, so the fields sizing reads for the KV cache matter.
    size_or_error(spec(config), weights_gib=1.0, gpus=2, gpu_memory_gib=24.0)


@given(config=configs(), opts=options())
@example(config=GEMMA2_2B, opts={"gpus": 1, "gpu_memory_gib": 20.0, "weights_gib": 5.0})
@example(config=LLAMA3_8B, opts={"gpus": 2**31 - 1, "gpu_memory_gib": 80.0})
@example(config=LLAMA3_8B, opts={"gpus": 1, "gpu_memory_gib": math.nan})
@example(config=LLAMA3_8B, opts={"gpus": 1, "gpu_memory_gib": math.inf})
@example(config=LLAMA3_8B, opts={"weights_gib": math.inf})
@example(config=LLAMA3_8B, opts={"weights_gib": math.nan})
@example(config=LLAMA3_8B, opts={"kv_cache_gib": 1e300})
@example(config=LLAMA3_8B, opts={"block_size": 2**64})
def test_any_config_and_options(config, opts):
    size_or_error(spec(config), **opts)


@given(config=st.sampled_from(BASES), opts=options())
def test_real_models_and_any_options(config, opts):
    size_or_error(spec(config), **opts)


# --- the regressions, each as its own example -------------------------------------------


@pytest.mark.parametrize("model_type", ["gemma2", "gemma3", "glm4"])
def test_float16_unstable_model_on_a_gpu_of_unknown_compute_capability(model_type):
    model = spec(GEMMA2_2B, model_type=model_type)
    report = sizing.size(model, gpus=1, gpu_memory_gib=20.0, weights_gib=5.0)
    assert report.dtype == "bfloat16"
    assert f"model type {model_type} is unstable in float16" in " ".join(report.notes)
    mystery_type = {
        "gpu_mystery_4x": {"memory": "120Gi", "cpu": 30, "gpu": 4, "billableUnitsPerHour": 20}
    }
    catalogue = sizing.load_catalogue().with_instance_types({"instanceTypes": mystery_type})
    mystery = sizing.size(model, plan="gpu_mystery_4x", weights_gib=5.0, catalogue=catalogue)
    assert not mystery.fits and any("GPU model" in r for r in mystery.reasons)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"num_hidden_layers": -32}, "num_hidden_layers = -32"),
        ({"num_attention_heads": 0}, "num_attention_heads = 0"),
        ({"num_hidden_layers": 32.0}, "num_hidden_layers = 32.0"),
        ({"num_hidden_layers": True}, "num_hidden_layers = True"),
        ({"hidden_size": 4}, "less than its 9 attention heads"),
        ({"num_key_value_heads": 0}, "num_key_value_heads = 0"),
        ({"num_key_value_heads": 2}, "does not divide its 9 attention heads"),
        ({"num_key_value_heads": 18}, "does not divide its 9 attention heads"),
        ({"head_dim": -64}, "head_dim = -64"),
        ({"vocab_size": -1}, "vocab_size = -1"),
        ({"intermediate_size": 0}, "intermediate_size = 0"),
        ({"max_position_embeddings": math.nan}, "max_position_embeddings = nan"),
        ({"max_position_embeddings": 2**40}, "max_position_embeddings"),
        ({"max_position_embeddings": 0.5}, "max_position_embeddings = 0.5"),
        ({"model_max_length": -5}, "model_max_length = -5"),
        ({"torch_dtype": 16}, "torch_dtype = 16"),
        ({"model_type": ["llama"]}, "model_type"),
        ({"quantization_config": "awq"}, "quantization_config = 'awq', not an object"),
        ({"quantization_config": {"quant_method": 4}}, "quant_method = 4"),
        ({"tie_word_embeddings": "false"}, "tie_word_embeddings = 'false'"),
        ({"num_hidden_layers": 2**31}, "not a whole number from 1 to 2,147,483,647"),
    ],
)
def test_impossible_config_values_are_model_errors(changes, words):
    with pytest.raises(ModelError, match=r"config\.json|quantization_config") as info:
        sizing.size(spec(SMOLLM2_135M, **changes))
    assert words in str(info.value)
    assert_one_line(info.value)


def test_valid_configs_still_size_as_before():
    # The readers accept what real configs hold: null fields, per-layer lists, NaN-free floats.
    assert spec(LLAMA2_7B, num_key_value_heads=None).total_kv_heads == 32
    assert spec(LLAMA3_8B, head_dim=None).head_size == 128
    assert spec(LLAMA3_8B, intermediate_size=[14336] * 32).intermediate_size == 4 * 4096
    assert spec(GPT2).intermediate_size == 4 * 768  # n_inner: null
    assert spec(LLAMA3_8B, max_position_embeddings=8192.0).max_position_embeddings == 8192
    assert spec(LLAMA3_8B, seq_length=-1).max_position_embeddings == 131072
    # A what-if whose heads do not divide the hidden size: vLLM floors hidden / heads.
    assert spec(LLAMA3_8B, num_attention_heads=24).head_size == 4096 // 24
    assert spec(DEEPSEEK_V2_LITE).kv_bytes_per_token() == 27 * (512 + 64) * 2
    for base in BASES:
        assert size_or_error(spec(base), weights_gib=5.0) is not None, base


@pytest.mark.parametrize(
    ("opts", "words"),
    [
        ({"gpus": 1, "gpu_memory_gib": math.nan}, "gpu_memory_gib nan is not a memory size"),
        ({"gpus": 1, "gpu_memory_gib": math.inf}, "gpu_memory_gib inf is not a memory size"),
        ({"weights_gib": math.inf}, "weights_gib inf"),
        ({"weights_gib": math.nan}, "weights_gib nan"),
        ({"kv_cache_gib": 1e300}, "kv_cache_gib 1e+300"),
        ({"weights_gib": 10**400}, "weights_gib"),
        ({"gpus": 2**31, "gpu_memory_gib": 80.0}, "gpus 2147483648 is more than vLLM takes"),
        ({"block_size": 2**64}, "block_size"),
        ({"max_model_len": 2**40}, "max_model_len"),
    ],
)
def test_impossible_options_are_sizing_errors(opts, words):
    with pytest.raises(SizingError) as info:
        sizing.size(spec(LLAMA3_8B), **opts)
    assert words in str(info.value)
    assert_one_line(info.value)


def test_many_gpus_size_quickly():
    # The tensor-parallel choice looks at the divisors of the GPU count (was a loop to N).
    report = sizing.size(spec(LLAMA3_8B), gpus=2**31 - 1, gpu_memory_gib=80.0)
    assert report.tensor_parallel_size == 1


# --- files: config.json and safetensors headers ------------------------------------------


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["size", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_cli_error(code: int, out: str, err: str) -> None:
    assert code == 2, (code, out, err)
    assert out == ""
    assert err.startswith("labkit: error: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "text",
    [
        json.dumps({**SMOLLM2_135M, "num_hidden_layers": -32}),
        json.dumps({**SMOLLM2_135M, "num_attention_heads": 0}),
        '{"num_hidden_layers": ' + "1" * 5000 + "}",  # more digits than Python reads
        "[" * 100_000 + "]" * 100_000,  # nested deeper than the JSON reader goes
        "[1, 2]",
        "",
    ],
    ids=["negative-layers", "zero-heads", "5000-digits", "deep-nesting", "a-list", "empty"],
)
def test_cli_bad_config_file_is_one_line(tmp_path, capsys, text):
    path = tmp_path / "config.json"
    path.write_text(text)
    assert_cli_error(*run_cli(capsys, str(path)))


def test_cli_float16_gemma_on_a_custom_gpu(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(GEMMA2_2B))
    code, out, err = run_cli(
        capsys, str(path), "--gpus", "1", "--gpu-memory-gib", "20", "--weights-gib", "5", "--json"
    )
    assert code == 0 and err == ""
    assert json.loads(out)["dtype"] == "bfloat16"


@pytest.mark.parametrize("shape", [[-1, 4], [2**64, 1], [2**40, 2**40], ["inf"], [1e400]], ids=str)
def test_safetensors_header_with_impossible_shapes(tmp_path, shape):
    path = tmp_path / "model.safetensors"
    raw = json.dumps({"w": {"dtype": "F16", "shape": shape, "data_offsets": [0, 2]}}).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw)
    with pytest.raises(ModelError, match="not a valid safetensors file") as info:
        sizing.read_safetensors_header(path)
    assert_one_line(info.value)


# --- the command line: generated config.json and flags -----------------------------------


def _flag_value(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


@st.composite
def cli_args(draw) -> list[str]:
    """`labkit size` flags with values argparse accepts (ints and floats, any of them)."""
    opts = draw(options())
    names = {
        "plan": "--plan",
        "gpus": "--gpus",
        "gpu_memory_gib": "--gpu-memory-gib",
        "tp": "--tp",
        "max_model_len": "--max-model-len",
        "max_num_batched_tokens": "--max-num-batched-tokens",
        "block_size": "--block-size",
        "dtype": "--dtype",
        "kv_cache_dtype": "--kv-cache-dtype",
        "gpu_memory_utilization": "--gpu-memory-utilization",
        "weights_gib": "--weights-gib",
        "activation_gib": "--activation-gib",
        "non_torch_gib": "--non-torch-gib",
        "kv_cache_gib": "--kv-cache-gib",
    }
    argv: list[str] = []
    for key, value in opts.items():
        if value is not None:
            argv.append(f"{names[key]}={_flag_value(value)}")  # = keeps "-inf" a value
    return argv


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("configs")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=configs(), argv=cli_args())
@example(config={**SMOLLM2_135M, "num_hidden_layers": -32}, argv=[])
@example(config={**SMOLLM2_135M, "num_attention_heads": 0}, argv=[])
@example(config=GEMMA2_2B, argv=["--gpus", "1", "--gpu-memory-gib", "20", "--weights-gib", "5"])
@example(config=LLAMA3_8B, argv=["--gpus", "1", "--gpu-memory-gib", "nan"])
def test_cli_any_config_and_flags(config_dir, capsys, config, argv):
    path = config_dir / "config.json"
    path.write_text(json.dumps(config))
    code, out, err = run_cli(capsys, str(path), "--json", *argv)
    if code != 0:
        assert_cli_error(code, out, err)
        return
    assert err == ""
    data = json.loads(out)
    assert data["kv_bytes_per_token"] >= 1 and data["max_model_len"] >= 1
    if data["fits"]:
        assert data["kv_cache_tokens"] >= data["max_model_len"] and not data["reasons"]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    flag=st.sampled_from(["--tp", "--gpus", "--max-model-len", "--gpu-memory-gib", "--block-size"]),
    value=st.sampled_from(["x", "", "1.5e", "0x10", "--", "four"]),
)
def test_cli_values_argparse_refuses_exit_2(capsys, tmp_path_factory, flag, value):
    # argparse's own errors: exit 2, nothing on stdout, no traceback (it prints its usage too).
    path = tmp_path_factory.getbasetemp() / "argparse-config.json"
    path.write_text(json.dumps(SMOLLM2_135M))
    with pytest.raises(SystemExit) as info:
        main(["size", str(path), flag, value])
    out, err = capsys.readouterr()
    assert info.value.code == 2 and out == "" and "Traceback" not in err
    assert err.rstrip("\n").splitlines()[-1].startswith("labkit size: error: ")


# --- --plans-file: generated TOML -------------------------------------------------------


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


toml_junk = st.one_of(
    st.integers(-3, 10),
    st.sampled_from([2**31, 2**63 - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.booleans(),
    st.lists(st.integers(0, 3), max_size=2),
)


@st.composite
def plans_files(draw) -> str:
    """A plans TOML with a GPU type and two plans, some values replaced by junk."""
    gpu = {"usable_gib": 44.4, "compute_capability": 8.9}
    gpu_plan = {"name": "team.l40s", "order": 75, "gpus": 1, "gpu": "L40S", "cpus": 8}
    cpu_plan = {"name": "team.cpu", "order": 5, "gpus": 0, "memory_gb": 16}
    for table in (gpu, gpu_plan, cpu_plan):
        for key in draw(st.lists(st.sampled_from([*table, "memory_gb", "memory_gib"]), max_size=2)):
            table[key] = draw(toml_junk)
    lines = ["[gpus.L40S]", *(f"{k} = {_toml(v)}" for k, v in gpu.items())]
    for plan in (gpu_plan, cpu_plan):
        lines += ["", "[[plans]]", *(f"{k} = {_toml(v)}" for k, v in plan.items())]
    return "\n".join(lines) + "\n"


@given(text=plans_files())
@example(text="[gpus.L40S]\nusable_gib = nan\ncompute_capability = 8.9\n")
@example(text='[gpus.L40S]\nusable_gib = "x"\ncompute_capability = 8.9\n')
@example(text='[[plans]]\nname = "x"\norder = 1\ngpus = -2\nmemory_gb = 4\n')
@example(text='[[plans]]\nname = "x"\norder = 1\nmemory_gb = inf\n')
@example(text='[[plans]]\nname = "x"\norder = 1\nmemory_gb = 4\ncpus = "many"\n')
@example(text="gpus = 5\n")
@example(text="plans = 5\n")
@example(text='[plans]\nname = "x"\n')
def test_any_plans_file_gives_a_catalogue_or_one_line(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "plans.toml"
    path.write_text(text)
    try:
        catalogue = sizing.load_catalogue(path)
    except LabError as exc:
        assert isinstance(exc, SizingError)
        assert_one_line(exc)
        return
    assert catalogue._repr_html_()
    size_or_error(spec(SMOLLM2_135M), catalogue=catalogue)


@pytest.mark.parametrize(
    "text",
    [
        "[gpus.L40S]\nusable_gib = nan\ncompute_capability = 8.9\n",
        '[[plans]]\nname = "x"\norder = 1\ngpus = "two"\n',
        "plans = 5\n",
    ],
)
def test_cli_bad_plans_file_is_one_line(tmp_path, capsys, text):
    config, plans = tmp_path / "config.json", tmp_path / "plans.toml"
    config.write_text(json.dumps(SMOLLM2_135M))
    plans.write_text(text)
    assert_cli_error(*run_cli(capsys, str(config), "--plans-file", str(plans)))
