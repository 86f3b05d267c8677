"""`labkit run`: execute the lab's notebooks in order, headless, into a run folder."""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from labkit.config import Config
from labkit.errors import StepError

# NN_verb_object.ipynb; STYLE.md allows one word for the bookends (00_setup, 99_cleanup).
NOTEBOOK_NAME = re.compile(r"^(\d\d)_[a-z][a-z0-9]*(?:_[a-z0-9]+)*\.ipynb$")


def lab_notebooks(folder: Path) -> list[Path]:
    """The numbered notebooks of the lab, in order (``_template.ipynb`` and others excluded)."""
    return sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_NAME.match(p.name))


@dataclass
class NotebookRun:
    """How one notebook went."""

    notebook: str
    output: str
    status: str
    seconds: float
    error: str = ""


@dataclass
class RunReport:
    """The result of `labkit run`: where it went and each notebook's outcome."""

    out_dir: str
    profile: str
    notebooks: list[NotebookRun] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(n.status == "ok" for n in self.notebooks)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}

    def to_markdown(self) -> str:
        lines = [
            f"# Lab run ({self.profile} profile)",
            "",
            "| notebook | status | seconds | error |",
            "| --- | --- | ---: | --- |",
        ]
        lines += [
            f"| [{n.notebook}]({Path(n.output).name}) | {n.status} | {n.seconds:.1f} | {n.error} |"
            for n in self.notebooks
        ]
        return "\n".join(lines) + "\n"


def run_lab(
    cfg: Config,
    *,
    out_dir: Path | None = None,
    only: list[str] | None = None,
    parameters: dict[str, Any] | None = None,
    progress: bool = True,
) -> RunReport:
    """Execute the numbered notebooks with papermill; stop at the first failure with its name."""
    import papermill

    notebooks = lab_notebooks(cfg.root / "notebooks")
    if only:
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(p) for p in only)]
    if not notebooks:
        raise StepError(
            f"no notebooks to run in {cfg.root / 'notebooks'}",
            "run from the lab's checkout, or check --only",
        )
    out_dir = out_dir or cfg.runs_dir / datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = RunReport(str(out_dir), cfg.profile)
    # Kernels inherit the environment: this is how the run's profile and paths reach them.
    saved = dict(os.environ)
    os.environ.update(
        LABKIT_PROFILE=cfg.profile, LABKIT_ROOT=str(cfg.root), LABKIT_LAB_DIR=str(cfg.lab_dir)
    )
    try:
        for nb in notebooks:
            output = out_dir / nb.name
            start = time.monotonic()
            try:
                papermill.execute_notebook(
                    str(nb),
                    str(output),
                    parameters=parameters or {},
                    cwd=str(nb.parent),
                    progress_bar=progress,
                    kernel_name="python3",
                )
            except papermill.PapermillExecutionError as exc:
                report.notebooks.append(
                    NotebookRun(
                        nb.name,
                        str(output),
                        "failed",
                        time.monotonic() - start,
                        f"{exc.ename}: {exc.evalue}",
                    )
                )
                raise StepError(
                    f"{nb.name} failed: {exc.ename}: {' '.join(str(exc.evalue).split())}",
                    f"open {output} to see the failing cell, fix it and run again",
                ) from None
            report.notebooks.append(
                NotebookRun(nb.name, str(output), "ok", time.monotonic() - start)
            )
    finally:
        os.environ.clear()
        os.environ.update(saved)
        (out_dir / "report.md").write_text(report.to_markdown())
    return report
