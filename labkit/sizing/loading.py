"""Loading a model's facts: config.json and safetensors headers from a folder, a file or the Hub.

Sizing never reads the weights: a safetensors header (8-byte length + JSON) gives each
tensor's dtype and shape, and the Hub serves the headers of a repo without a download.
"""

from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any

from labkit.errors import ModelError
from labkit.sizing.constants import _MAX_HEADER_BYTES
from labkit.sizing.model import ModelSpec, TensorSpec


def load_model_config(
    model: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> ModelSpec:
    """A ModelSpec from a Hub repo id, a model folder or a config.json path (reads no weights).

    ``endpoint`` is the Hub to ask (the lab's ``Config.hub_endpoint``; None: huggingface_hub's
    own default), ``cache_dir`` where config.json is kept (None: the Hugging Face cache)."""
    path = Path(model).expanduser()
    if path.is_file():
        return ModelSpec(
            name=path.parent.name or str(path), config=_read_json(path), source="config"
        )
    if path.is_dir():
        return _load_folder(path)
    text = str(model)
    looks_like_path = (
        isinstance(model, os.PathLike) or text.startswith(("/", ".", "~")) or text.count("/") > 1
    )
    if looks_like_path or not _valid_repo_id(text):
        raise ModelError(
            f"{text} is neither an existing model folder or config.json nor a Hub repo id",
            "check the path, or give a repo id like HuggingFaceTB/SmolLM2-135M-Instruct",
        )
    return _load_hub(text, revision=revision, token=token, endpoint=endpoint, cache_dir=cache_dir)


def _valid_repo_id(text: str) -> bool:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    # ValueError: a number of over 4300 digits; RecursionError: arrays nested too deep.
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ModelError(
            f"cannot read {path} as JSON ({exc})", "point at the model's config.json"
        ) from exc
    if not isinstance(data, dict):
        raise ModelError(f"{path} is not a JSON object", "point at the model's config.json")
    return data


def read_safetensors_header(path: str | os.PathLike) -> list[TensorSpec]:
    """The tensors a .safetensors file holds, from its header only (8-byte length + JSON)."""
    path = Path(path)
    bad = f"{path} is not a valid safetensors file"
    try:
        with path.open("rb") as fh:
            prefix = fh.read(8)
            if len(prefix) < 8:
                raise ModelError(bad, "re-download it, or remove it from the folder")
            (length,) = struct.unpack("<Q", prefix)
            if length > _MAX_HEADER_BYTES:
                raise ModelError(f"{bad} (header of {length} bytes)", "re-download it")
            raw = fh.read(length)
    except OSError as exc:
        raise ModelError(f"cannot read {path} ({exc})", "check the file's permissions") from exc
    if len(raw) < length:
        raise ModelError(f"{bad} (header cut short)", "re-download it")
    try:
        header = json.loads(raw)
        tensors = [
            TensorSpec(name, str(info["dtype"]), math.prod(_dim(d) for d in info["shape"]))
            for name, info in header.items()
            if name != "__metadata__"
        ]
    except (
        json.JSONDecodeError,
        UnicodeDecodeError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
        OverflowError,
        RecursionError,
    ) as exc:
        raise ModelError(f"{bad} (header: {exc})", "re-download it") from exc
    if any(t.numel >= 1 << 64 for t in tensors):  # more than the file's u64 offsets address
        raise ModelError(f"{bad} (a tensor larger than a file can hold)", "re-download it")
    return tensors


def _dim(value: object) -> int:
    dim = int(value)  # type: ignore[call-overload]
    if dim < 0 or dim >= 1 << 64:
        raise ValueError("a shape has a dimension below 0 or above 2**64")
    return dim


def _load_folder(folder: Path) -> ModelSpec:
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelError(f"{folder} has no config.json", "point at a Hugging Face model folder")
    config = _read_json(config_path)
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map") or {}
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelError(
                f"{folder} lacks shards its index names: {', '.join(missing[:3])}",
                "download the whole snapshot",
            )
    else:
        files = sorted(folder.glob("*.safetensors"))
        # Mistral repos ship consolidated.safetensors next to the HF shards; vLLM loads one set.
        hf_files = [f for f in files if not f.name.startswith("consolidated")]
        files = hf_files or files
    notes: tuple[str, ...] = ()
    tensors: tuple[TensorSpec, ...] | None = None
    if files:
        tensors = tuple(t for f in files for t in read_safetensors_header(f))
    else:
        notes = ("no *.safetensors in the folder: weights estimated from config.json",)
    return ModelSpec(name=folder.name, config=config, tensors=tensors, source="folder", notes=notes)


def _load_hub(
    repo_id: str,
    *,
    revision: str | None,
    token: str | None,
    endpoint: str | None,
    cache_dir: str | os.PathLike | None,
) -> ModelSpec:
    from huggingface_hub import HfApi
    from huggingface_hub import errors as hf

    api = HfApi(endpoint=endpoint, token=token)
    where = f"{repo_id}@{revision}" if revision else repo_id
    try:
        config_path = api.hf_hub_download(
            repo_id, "config.json", revision=revision, cache_dir=cache_dir
        )
    except hf.GatedRepoError as exc:
        raise ModelError(
            f"{repo_id} is gated", "accept its licence on the Hub and set HF_TOKEN"
        ) from exc
    except hf.RepositoryNotFoundError as exc:
        raise ModelError(
            f"no Hub repo {repo_id} at {api.endpoint}",
            "check the repo id (private repos need HF_TOKEN)",
        ) from exc
    except hf.RevisionNotFoundError as exc:
        raise ModelError(
            f"{repo_id} has no revision {revision}", "check the branch, tag or commit"
        ) from exc
    except hf.RemoteEntryNotFoundError as exc:
        raise ModelError(f"{where} has no config.json", "size a transformers model repo") from exc
    except (OSError, hf.EntryNotFoundError, hf.HfHubHTTPError) as exc:
        raise ModelError(
            f"cannot fetch config.json of {where} from {api.endpoint} ({type(exc).__name__})",
            "check the network and the Hub setting (LABKIT_HF_ENDPOINT), or size a model folder",
        ) from exc
    config = _read_json(Path(str(config_path)))
    tensors: tuple[TensorSpec, ...] | None = None
    notes: tuple[str, ...] = ()
    try:
        meta = api.get_safetensors_metadata(repo_id, revision=revision)
    except hf.NotASafetensorsRepoError:
        notes = ("the repo has no safetensors weights: weights estimated from config.json",)
    except Exception as exc:  # headers only refine the answer; the estimate still gives one
        notes = (
            f"could not read the safetensors headers ({type(exc).__name__}): weights estimated",
        )
    else:
        tensors = tuple(
            TensorSpec(name, info.dtype, int(info.parameter_count))
            for file_meta in meta.files_metadata.values()
            for name, info in file_meta.tensors.items()
        )
    return ModelSpec(
        name=repo_id, config=config, tensors=tensors, source="hub", revision=revision, notes=notes
    )
