"""File selection for downloads: globs and format presets (no network)."""

import pytest

from labkit.errors import ModelError
from labkit.hub import select_files

REPO = [
    "config.json",
    "README.md",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "consolidated.pt",
    "original/consolidated.00.pth",
    "text_encoder/pytorch_model.bin",
    "unet/diffusion_pytorch_model.safetensors",
    "unet/diffusion_pytorch_model.bin",
    "tokenizer.json",
]


def test_safetensors_preset_drops_other_weights_but_keeps_the_rest():
    got = select_files(REPO, fmt="safetensors")
    assert "model-00001-of-00002.safetensors" in got and "pytorch_model.bin" not in got
    assert "consolidated.pt" not in got and "original/consolidated.00.pth" not in got
    assert {"config.json", "tokenizer.json", "model.safetensors.index.json", "README.md"} <= set(
        got
    )


def test_safetensors_preset_falls_back_to_bin_per_folder():
    got = select_files(REPO, fmt="safetensors")
    assert "text_encoder/pytorch_model.bin" in got  # that folder has no safetensors
    assert "unet/diffusion_pytorch_model.bin" not in got


def test_bin_and_pt_presets():
    assert "pytorch_model.bin" in select_files(REPO, fmt="bin")
    assert not any(p.endswith(".safetensors") for p in select_files(REPO, fmt="bin"))
    assert {"consolidated.pt", "original/consolidated.00.pth"} <= set(select_files(REPO, fmt="pt"))
    assert select_files(REPO, fmt="all") == sorted(REPO)


def test_include_and_exclude_globs():
    assert select_files(REPO, include=["*.json"], fmt="all") == sorted(
        p for p in REPO if p.endswith(".json")
    )
    got = select_files(REPO, exclude=["unet/*", "original/*"], fmt="all")
    assert not any(p.startswith(("unet/", "original/")) for p in got)


def test_patterns_matching_nothing_give_an_empty_list_and_bad_format_is_refused():
    assert select_files(REPO, include=["*.gguf"]) == []
    with pytest.raises(ModelError, match="unknown format"):
        select_files(REPO, fmt="onnx")
