"""Shared by the labkit.templates tests: the shipped template, its bindings and a lab state."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from labkit import templates
from labkit.templates import LintContext

ROOT = Path(__file__).resolve().parents[1]


SHIPPED = ROOT / "templates" / "vllm-serving.yaml"


GOLDEN = Path(__file__).parent / "golden"


MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


REV = "6d86325e0e6acc56868542c32e1a1e1a4e92b541"


IMAGE = "localhost:5000/labkit/aicore-vllm:v150326-01"


URL = "ai://default/models/smollm2/6d86325/HuggingFaceTB--SmolLM2-135M-Instruct.tar"


REQUIRED = {"image": IMAGE, "modelId": MODEL, "revision": REV}


CPU_BINDINGS = {
    **REQUIRED,
    "resourcePlan": "basic",
    "servedModelName": MODEL,
    "dtype": "bfloat16",
    "maxModelLen": "2048",
    "args": "--enforce-eager",
}


SIZING = {"plan": "infer.s", "kv_cache_tokens": 200_000, "gpu_memory_utilization": 0.9}


def text() -> str:
    return SHIPPED.read_text()


def sub(source: str, old: str, new: str) -> str:
    """Replace the first ``old`` (which must be there) by ``new``."""
    assert old in source, old
    return source.replace(old, new, 1)


def data() -> dict[str, Any]:
    return templates.load(SHIPPED)


def param(tpl: dict[str, Any], name: str) -> dict[str, Any]:
    return next(p for p in tpl["spec"]["inputs"]["parameters"] if p["name"] == name)


def with_default(name: str, value: Any) -> dict[str, Any]:
    tpl = data()
    param(tpl, name)["default"] = value
    return tpl


def context(**changes: Any) -> LintContext:
    """A context in which the shipped template, bound to REQUIRED, has no finding."""
    base: dict[str, Any] = {
        "parameters": dict(REQUIRED),
        "scenario": "labkit-vllm",
        "image": IMAGE,
        "model_id": MODEL,
        "revision": REV,
        "revision_exists": lambda repo, rev: True,
        "attention_heads": 9,
        "model_type": "llama",
        "model_max_len": 8192,
        "sizing": dict(SIZING),
    }
    parameters = changes.pop("bind", {})
    base.update(changes)
    base["parameters"] = {**base["parameters"], **parameters}
    return LintContext(**base)


def _entrypoint() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "runtime_entrypoint_for_templates", ROOT / "runtime" / "entrypoint.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _lab_state(cfg, image: bool = True):
    from labkit.state import State

    state = State(cfg.state_file)
    snapshot = cfg.lab_dir / "snap"
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "config.json").write_text(json.dumps({
        "model_type": "llama", "num_attention_heads": 9, "num_key_value_heads": 3,
        "hidden_size": 576, "num_hidden_layers": 30, "max_position_embeddings": 8192,
    }))  # fmt: skip
    state.record("size", {"plan": "basic", "tensor_parallel_size": 1, "dtype": "bfloat16",
                          "max_model_len": 8192, "gpu_memory_utilization": 0.9,
                          "kv_cache_tokens": 186_368})  # fmt: skip
    state.record("download", {"repo_id": MODEL, "revision": REV, "snapshot_dir": str(snapshot)})
    state.record("upload", {"artifact_url": URL})
    if image:
        state.record("image", {"reference": IMAGE})
    return state
