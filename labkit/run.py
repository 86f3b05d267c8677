"""`labkit run`: execute the lab's notebooks in order, headless, into a run folder."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from labkit.config import Config
from labkit.errors import StepError

# NN_verb_object.ipynb; CONTRIBUTING.md allows one word for the bookends (00_setup, 99_cleanup).
NOTEBOOK_NAME = re.compile(r"^(\d\d)_[a-z][a-z0-9]*(?:_[a-z0-9]+)*\.ipynb$")


def lab_notebooks(folder: Path) -> list[Path]:
    """The numbered notebooks of the lab, in order (``_template.ipynb`` and others excluded)."""
    return sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_NAME.match(p.name))


def notebook_parameters(path: Path) -> dict[str, str]:
    """The names a notebook's ``parameters`` cell declares, with their types (as papermill
    infers them: ``int``, ``float``, ``bool``, ``str``, or what a comment annotates)."""
    import papermill

    return {
        name: str(info.get("inferred_type_name") or "")
        for name, info in papermill.inspect_notebook(str(path)).items()
    }


_BOOLS = {"true": True, "false": False}
_EXPECTED = {"int": "an integer", "float": "a finite number", "bool": "True or False"}
_EXAMPLES = {"int": "4", "float": "2.5", "bool": "True", "str": "text"}


def parameter_value(value: Any, kind: str, name: str, notebook: str) -> Any:
    """``value`` as the notebook's parameter ``name`` of type ``kind`` takes it: text (from the
    command line) is converted, a Python value must already have the type; a StepError says
    what the notebook expects. Types papermill cannot name pass unchecked."""
    if kind not in ("str", "int", "float", "bool"):
        return _untyped(value) if isinstance(value, str) else value
    try:
        typed = _convert(value.strip(), kind) if isinstance(value, str) and kind != "str" else value
    except (ValueError, OverflowError):
        typed = None
    wanted = {"str": str, "int": int, "float": int | float, "bool": bool}[kind]
    if (
        isinstance(typed, wanted)
        and (kind == "bool" or not isinstance(typed, bool))
        and (kind != "float" or math.isfinite(typed))
    ):
        return typed
    shown = " ".join(str(value).split())
    shown = shown if len(shown) <= 40 else shown[:39] + "…"
    raise StepError(
        f"{notebook} takes {name} as {_EXPECTED.get(kind, 'text')} ({kind}), not {shown!r}",
        f"e.g. -p {name} {_EXAMPLES[kind]}; `papermill --help-notebook notebooks/{notebook}` "
        "lists its parameters",
    )


def _convert(text: str, kind: str) -> Any:
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    return _BOOLS.get(text.lower())


def _untyped(text: str) -> Any:
    """Text typed as papermill's -p types it: numbers, True/False and None become Python values."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"True": True, "False": False, "None": None}.get(text, text)


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

    def to_markdown(self, state: dict[str, Any] | None = None) -> str:
        """The report a person reads: each notebook's outcome and time, then what the steps
        recorded in the lab state (``state``: step name -> result)."""
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
        total = sum(n.seconds for n in self.notebooks)
        lines += ["", f"Total: {total:.0f} s."]
        if state:
            lines += ["", *results_markdown(state, Path(self.out_dir))]
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, path: Path) -> RunReport:
        """A report written by an earlier run (its report.json)."""
        data = json.loads(Path(path).read_text())
        runs = [NotebookRun(**n) for n in data.get("notebooks", [])]
        return cls(data["out_dir"], data["profile"], runs)


# What the report shows of each step's recorded result: (label, path into the result).
REPORT_FIELDS: dict[str, list[tuple[str, str]]] = {
    "size": [
        ("model", "model"),
        ("plan", "plan"),
        ("fits", "fits"),
        ("smallest fitting plan", "smallest_fitting_plan"),
        ("KV cache tokens", "kv_cache_tokens"),
        ("max concurrency", "max_concurrency"),
        ("vLLM args", "vllm_args"),
    ],
    "download": [
        ("repo", "repo_id"),
        ("revision", "revision"),
        ("tarball", "tar"),
        ("tarball sha256", "tar_sha256"),
    ],
    "upload": [("S3 URI", "s3_uri"), ("artifact URL", "artifact_url")],
    "image": [
        ("image", "reference"),
        ("digest", "digest"),
        ("skipped", "note"),
        ("smoke test answer", "smoke.answer"),
    ],
    "template": [
        ("executable", "executable_id"),
        ("scenario", "scenario_id"),
        ("template", "path_in_repo"),
        ("resource plan", "resource_plan"),
        ("commit", "commit"),
        ("lint ok", "lint.ok"),
        ("lint errors", "lint.errors"),
        ("lint warnings", "lint.warnings"),
    ],
    "deploy": [
        ("deployment", "deployment_id"),
        ("status", "status"),
        ("URL", "deployment_url"),
        ("artifact", "artifact_id"),
        ("configuration", "configuration_id"),
    ],
    "query": [
        ("model", "model"),
        ("through", "base_url"),
        ("sample answers", "samples"),
        ("/generate", "generate"),
        ("latency", "latency"),
    ],
    "benchmark": [
        ("model", "model"),
        ("measured", "created"),
        ("requests in the workload", "workload.requests"),
        ("seed", "workload.seed"),
        ("results", "results_file"),
        ("notes", "notes"),
    ],
}


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _cell(value: Any) -> str:
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, dict) for v in value):
            return "<br>".join(_cell(v) for v in value)
        return " ".join(f"`{v}`" for v in value) or "none"
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    text = " ".join(str(value).split()).replace("|", "\\|")
    return text[:300] + ("…" if len(text) > 300 else "")


def results_markdown(state: dict[str, Any], out_dir: Path) -> list[str]:
    """The steps' recorded results as Markdown sections, with the benchmark's table and plots."""
    lines: list[str] = ["## Results"]
    for step, fields in REPORT_FIELDS.items():
        result = state.get(step)
        if not result:
            continue
        rows = [(label, _dig(result, path)) for label, path in fields]
        rows = [(label, value) for label, value in rows if value not in (None, "", [])]
        if not rows:
            continue
        lines += ["", f"### {step}", "", "| | |", "| --- | --- |"]
        lines += [f"| {label} | {_cell(value)} |" for label, value in rows]
    bench = state.get("benchmark") or {}
    if bench.get("table_markdown"):
        lines += ["", "### benchmark table", "", bench["table_markdown"]]
    for plot in bench.get("plots") or []:
        path = Path(plot)
        if (out_dir / path.name).is_file():  # the copy write_report puts beside the report
            lines += ["", f"![{path.stem}]({path.name})"]
        elif path.is_file():
            lines += ["", f"![{path.stem}]({path.resolve().as_uri()})"]
    return lines


def last_failed_run(cfg: Config) -> RunReport | None:
    """The last run (wherever it went) if it stopped at a failing notebook, else None."""
    pointer = cfg.runs_dir / "last-run"
    try:
        report = RunReport.load(Path(pointer.read_text().strip()) / "report.json")
    # A report that is not the JSON object `labkit run` writes is no run to resume.
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return None
    return None if report.ok else report


def run_lab(
    cfg: Config,
    *,
    out_dir: Path | None = None,
    only: list[str] | None = None,
    parameters: dict[str, Any] | None = None,
    progress: bool = True,
    resume: bool = False,
) -> RunReport:
    """Execute the numbered notebooks with papermill; stop at the first failure with its name.

    ``parameters`` go to each notebook that declares them in its parameters cell (and only
    there); a name no notebook declares is refused. ``resume`` continues the last failed run in
    its folder from the notebook that failed; the notebooks after it read what the earlier ones
    recorded from the lab state."""
    notebooks, earlier, out_dir = _notebooks_to_run(cfg, only, resume, out_dir)
    typed = _typed_parameters(notebooks, parameters or {})
    out_dir = out_dir or cfg.runs_dir / datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir.mkdir(parents=True, exist_ok=True)
    report = RunReport(str(out_dir), cfg.profile, list(earlier))
    # Kernels inherit the environment: this is how the run's profile and paths reach them.
    saved = dict(os.environ)
    os.environ.update(
        LABKIT_PROFILE=cfg.profile, LABKIT_ROOT=str(cfg.root), LABKIT_LAB_DIR=str(cfg.lab_dir)
    )
    try:
        for nb in notebooks:
            run = _execute(nb, out_dir / nb.name, typed[nb.name], progress)
            report.notebooks.append(run)
            if run.status != "ok":
                raise StepError(
                    f"{nb.name} failed: {' '.join(run.error.split())}",
                    f"open {run.output} to see the failing cell, fix it and continue with "
                    "`labkit run --resume`",
                )
    finally:
        os.environ.clear()
        os.environ.update(saved)
        write_report(cfg, report, out_dir)
    return report


def _notebooks_to_run(
    cfg: Config, only: list[str] | None, resume: bool, out_dir: Path | None
) -> tuple[list[Path], list[NotebookRun], Path | None]:
    """The notebooks of this run, those a resumed run already has, and the run's folder."""
    notebooks = lab_notebooks(cfg.root / "notebooks")
    if only:
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(p) for p in only)]
    earlier: list[NotebookRun] = []
    if resume:
        previous = last_failed_run(cfg)
        if previous is None:
            raise StepError(
                "no failed run to resume", "run `labkit run` without --resume to start one"
            )
        earlier = [n for n in previous.notebooks if n.status == "ok"]
        done = {n.notebook for n in earlier}
        notebooks = [nb for nb in notebooks if nb.name not in done]
        out_dir = Path(previous.out_dir)
    if not notebooks:
        raise StepError(
            f"no notebooks to run in {cfg.root / 'notebooks'}",
            "run from the lab's checkout, or check --only",
        )
    return notebooks, earlier, out_dir


def _typed_parameters(notebooks: list[Path], parameters: dict[str, Any]) -> dict[str, dict]:
    """Each notebook's share of ``parameters``, typed as it declares them (see check_parameters)."""
    return check_parameters({nb.name: notebook_parameters(nb) for nb in notebooks}, parameters)


def check_parameters(
    declared: dict[str, dict[str, str]], parameters: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """For each notebook (name -> its parameters' types), the given parameters it declares,
    typed; a StepError for a name no notebook takes or a value of the wrong type."""
    unknown = sorted(set(parameters) - set().union(*map(set, declared.values())))
    if unknown:
        shown = ", ".join(" ".join(str(name).split())[:60] for name in unknown[:5])
        raise StepError(
            f"no notebook to run takes the parameter {shown}",
            "`papermill --help-notebook notebooks/NN_....ipynb` lists a notebook's parameters",
        )
    return {
        nb: {
            name: parameter_value(value, types[name], name, nb)
            for name, value in parameters.items()
            if name in types
        }
        for nb, types in declared.items()
    }


def _execute(nb: Path, output: Path, parameters: dict[str, Any], progress: bool) -> NotebookRun:
    """One notebook through papermill, recorded as ok or failed (with the cell's error)."""
    import papermill

    start = time.monotonic()
    try:
        papermill.execute_notebook(
            str(nb),
            str(output),
            parameters=parameters,
            cwd=str(nb.parent),
            progress_bar=progress,
            kernel_name="python3",
        )
    except papermill.PapermillExecutionError as exc:
        error = f"{exc.ename}: {exc.evalue}"
        return NotebookRun(nb.name, str(output), "failed", time.monotonic() - start, error)
    return NotebookRun(nb.name, str(output), "ok", time.monotonic() - start)


def write_report(cfg: Config, report: RunReport, out_dir: Path) -> None:
    """report.json and report.md (with the steps' results) in ``out_dir``; the last-run pointer."""
    from labkit.state import State

    try:
        state = State(cfg.state_file)
        results = {step: state.get(step) for step in state.steps()}
    except StepError:
        results = {}
    # The run folder stands alone: the benchmark's plots are copied beside the report.
    for plot in (results.get("benchmark") or {}).get("plots") or []:
        with contextlib.suppress(OSError):
            shutil.copy2(plot, out_dir / Path(plot).name)
    (out_dir / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
    (out_dir / "report.md").write_text(report.to_markdown(results))
    # Runs may go anywhere (--out): this is how --resume finds the last one.
    cfg.runs_dir.mkdir(parents=True, exist_ok=True)
    (cfg.runs_dir / "last-run").write_text(f"{out_dir.resolve()}\n")
