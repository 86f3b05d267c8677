"""Weight bytes: exact from safetensors headers (folder or Hub), else estimated from config.json."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest
from sizing_models import (
    AWQ_4BIT,
    FALCON_7B,
    FALCON_40B,
    GPT2,
    LLAMA2_7B,
    MPT_GQA,
    OPT_125M,
    PYTHIA_160M,
    SMOLLM2_135M,
    params,
    spec,
    write_safetensors,
)

from labkit import sizing
from labkit.errors import ModelError
from labkit.sizing import GiB

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

    def hf_hub_download(self, repo_id, filename, revision=None, cache_dir=None):
        self.calls.append(("download", repo_id, filename, revision))
        self.cache_dir = cache_dir
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


def test_hub_repo_reads_config_and_headers_from_the_labs_hub(tmp_path, monkeypatch):
    import huggingface_hub

    path = tmp_path / "config.json"
    path.write_text(json.dumps(SMOLLM2_135M))
    tensors = {"model.embed_tokens.weight": ("BF16", 49152 * 576)}
    # The lab's Hub (Config.hub_endpoint, passed in) and not HF_ENDPOINT: in the local profile
    # that is the local mirror, whatever the environment says.
    monkeypatch.setenv("HF_ENDPOINT", "https://huggingface.co")
    monkeypatch.setattr(
        huggingface_hub, "HfApi", lambda endpoint=None, token=None: FakeHub(
            endpoint, token, config_path=path, tensors=tensors)
    )  # fmt: skip
    loaded = sizing.load_model_config(
        "HuggingFaceTB/SmolLM2-135M-Instruct", revision="a" * 40, token="t",
        endpoint="http://127.0.0.1:9", cache_dir=tmp_path / "cache",
    )  # fmt: skip
    hub = FakeHub.instances[-1]
    assert hub.endpoint == "http://127.0.0.1:9" and hub.token == "t"
    assert hub.cache_dir == tmp_path / "cache"
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
    with pytest.raises(ModelError, match="LABKIT_HF_ENDPOINT"):
        sizing.load_model_config("org/none")
