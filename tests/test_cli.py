"""The CLI contract (docs/architecture.md): --json prints one object; user errors are one line, exit non-zero."""

import json
from pathlib import Path

import pytest
from labkit_cli import labkit

from labkit.cli import build_parser

LLAMA_8B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
    "num_hidden_layers": 32, "vocab_size": 128256, "max_position_embeddings": 131072,
    "torch_dtype": "bfloat16", "tie_word_embeddings": False, "rms_norm_eps": 1e-5,
}  # fmt: skip
CONTRACT = {"weights_bytes", "kv_bytes_per_token", "kv_cache_tokens", "kv_cache_blocks",
            "max_concurrency", "tensor_parallel_size", "fits", "reasons", "vllm_args"}  # fmt: skip
SECRET = "hf_never_printed_0123456789"


@pytest.fixture
def llama_config(tmp_path) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA_8B))
    return path


def test_size_config_json_on_a_plan(llama_config):
    out = labkit(
        "size", str(llama_config), "--plan", "infer2.l", "--max-model-len", "8192", "--json"
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data.keys() >= CONTRACT
    assert data["kv_bytes_per_token"] == 2 * 32 * 8 * 128 * 2
    assert data["tensor_parallel_size"] == 1
    assert data["fits"] is True
    assert "--max-model-len" in data["vllm_args"]


def test_size_too_long_context_does_not_fit_and_says_why(llama_config):
    data = json.loads(labkit("size", str(llama_config), "--plan", "infer2.l", "--json").stdout)
    assert data["fits"] is False
    assert any("max-model-len" in r or "max_model_len" in r for r in data["reasons"])


@pytest.mark.integration
def test_size_the_default_model_folder(default_model):
    out = labkit("size", str(default_model), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["kv_bytes_per_token"] == 23_040
    assert data["fits"] is True
    assert 0.2 * 2**30 < data["weights_bytes"] < 0.3 * 2**30


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["size", "{cfg}", "--plan", "no.such.plan"], "no.such.plan"),
        (["size", "/nonexistent/model/dir"], "/nonexistent/model/dir"),
    ],
)
def test_user_errors_are_one_line_without_traceback(llama_config, args, needle):
    out = labkit(*[a.format(cfg=llama_config) for a in args])
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labkit: error: ") and needle in lines[0]
    assert "Traceback" not in out.stderr


def test_debug_shows_the_traceback(llama_config):
    out = labkit("size", str(llama_config), "--plan", "no.such.plan", "--debug")
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_config_json_masks_secrets():
    out = labkit("config", "--json", env={"HF_TOKEN": SECRET})
    assert out.returncode == 0, out.stderr
    assert SECRET not in out.stdout + out.stderr
    assert json.loads(out.stdout)["hf_token"] == "********"


def test_local_status_lists_services_as_json():
    out = labkit("local", "status", "--json")
    data = json.loads(out.stdout)
    assert {s["name"] for s in data["services"]} >= {"model"}
    assert all({"name", "url", "healthy"} <= s.keys() for s in data["services"])


def test_help_documents_every_size_option():
    text = build_parser().parse_known_args(["size", "x"])[0]  # parses
    assert text.model == "x"
    out = labkit("size", "--help").stdout
    for flag in ("--plan", "--gpus", "--gpu-memory-gib", "--tp", "--dtype", "--kv-cache-dtype",
                 "--max-model-len", "--max-num-batched-tokens", "--gpu-memory-utilization",
                 "--weights-gib", "--activation-gib", "--non-torch-gib", "--json"):  # fmt: skip
        assert flag in out
