"""The lab state file (.lab/state.json): each step's result, read by the steps after it."""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from labkit.config import Config, load_config
from labkit.errors import StepError
from labkit.util.fs import atomic_write_json

# Which notebook produces each step's result, so a missing result can say what to run.
STEP_NOTEBOOKS = {
    "setup": "00_setup.ipynb",
    "size": "01_size_model.ipynb",
    "download": "02_download_model.ipynb",
    "upload": "03_upload_to_s3.ipynb",
    "image": "04_build_image.ipynb",
    "template": "05_author_serving_template.ipynb",
    "deploy": "06_deploy.ipynb",
    "query": "07_query.ipynb",
    "benchmark": "08_benchmark.ipynb",
}


def to_data(result: Any) -> Any:
    """Turn a step result (dataclass, pydantic model, or plain data) into JSON-ready data."""
    if hasattr(result, "to_dict"):
        return result.to_dict()
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return json.loads(json.dumps(dataclasses.asdict(result), default=str))
    if hasattr(result, "model_dump"):
        return result.model_dump(mode="json")
    return json.loads(json.dumps(result, default=str))


class State:
    """Step results keyed by step name, written atomically so a crash never leaves half a file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._steps: dict[str, dict[str, Any]] = self._read()

    def _read(self) -> dict[str, dict[str, Any]]:
        if not self.path.exists():
            return {}
        try:
            return json.loads(self.path.read_text()).get("steps", {})
        except (json.JSONDecodeError, AttributeError):
            raise StepError(
                f"the lab state {self.path} is not valid JSON",
                "move it away; the next run of each step records its result again",
            ) from None

    def get(self, step: str) -> dict[str, Any] | None:
        """The recorded result of ``step``, or None."""
        entry = self._steps.get(step)
        return entry["result"] if entry else None

    def require(self, step: str) -> dict[str, Any]:
        """The recorded result of ``step``; a StepError naming the notebook to run if missing."""
        result = self.get(step)
        if result is None:
            notebook = STEP_NOTEBOOKS.get(step, f"the '{step}' step")
            raise StepError(
                f"no result of the '{step}' step yet", f"run notebooks/{notebook} first"
            )
        return result

    def record(self, step: str, result: Any) -> dict[str, Any]:
        """Store ``result`` as the step's outcome and write the file; returns the stored data."""
        data = to_data(result)
        # What other kernels recorded since this one opened the lab (a form in 01 records long
        # after 02 may have run elsewhere) is kept, not overwritten with this kernel's old copy.
        self._steps = self._read()
        self._steps[step] = {
            "result": data,
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self._write()
        return data

    def forget(self, step: str) -> None:
        """Drop a step's result (e.g. after cleanup deleted what it made)."""
        self._steps = self._read()
        if self._steps.pop(step, None) is not None:
            self._write()

    def _write(self) -> None:
        atomic_write_json(self.path, {"steps": self._steps}, indent=2, sort_keys=True, mode=0o600)

    def steps(self) -> dict[str, str]:
        """Each recorded step with the time it was recorded."""
        return {name: entry["updated"] for name, entry in self._steps.items()}


def open_lab(**params: Any) -> tuple[Config, State]:
    """The one call a notebook's Setup makes: configuration (``params`` win) and the lab state.

    The profile: the ``profile`` parameter where a notebook declares one (00_setup, which
    records its choice); else LABKIT_PROFILE set in this process's environment (`labkit run
    --profile`, CI); else the profile 00_setup recorded; else .env's LABKIT_PROFILE or local."""
    cfg = load_config(**params)
    state = State(cfg.state_file)
    chosen = (state.get("setup") or {}).get("profile")
    if "profile" in params or not chosen or chosen == cfg.profile:
        return cfg, state
    if os.environ.get("LABKIT_PROFILE"):
        warnings.warn(
            f"00_setup chose the {chosen} profile, but LABKIT_PROFILE={cfg.profile} in the "
            "environment wins here; unset it or run 00_setup again",
            stacklevel=2,
        )
        return cfg, state
    cfg = load_config(**{**params, "profile": chosen})
    return cfg, State(cfg.state_file)
