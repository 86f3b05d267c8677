"""ipywidgets skins over the notebooks' parameters: seeded from them, re-running the step on change.

Under papermill the widgets just render with the parameter values, so a headless run records
exactly what the parameters give; used by hand, the form's last good sizing is the step's result.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from html import escape
from typing import Any

from labkit import sizing
from labkit.config import Config
from labkit.sizing.report import SizingReport
from labkit.state import State

DTYPES = ["auto", "half", "bfloat16", "float32"]
# The state key the deployment step reads the plan and the vLLM arguments from.
SIZE_KEY = "size"


@contextlib.contextmanager
def _quiet_hub() -> Iterator[None]:
    """huggingface_hub's retry warnings belong in a log, not in red inside the form."""
    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def verdict_html(report: SizingReport) -> str:
    """One line: fits or not, on which plan, how many requests of max_model_len at a time."""
    colour, word = ("#2e7d32", "FITS") if report.fits else ("#c62828", "DOES NOT FIT")
    why = f": {escape(report.reasons[0])}" if report.reasons else ""
    return (
        f"<span class='labkit-verdict' style='color:{colour};font-weight:bold'>{word}</span> "
        f"on <b class='labkit-plan'>{escape(report.plan or 'a custom device')}</b>, "
        f"{report.max_concurrency:.2f}x concurrency at {report.max_model_len:,} tokens{why}"
    )


class SizingForm:
    """Model, plan, dtype, max_model_len, KV cache and GPU utilisation; re-sizes on each change.

    The model is re-read on Enter only (a Hub repo id costs requests); every other field on
    change. With ``state`` each good sizing after the first is recorded as the step's result, so
    what the form shows is what step 05 and 06 deploy, and the form says so. ``report`` is the
    last good sizing, ``error`` the last error (or None), ``fields`` name -> widget.
    """

    def __init__(
        self,
        model: str,
        *,
        cfg: Config | None = None,
        state: State | None = None,
        plan: str | None = None,
        dtype: str = "auto",
        max_model_len: int = 0,
        gpu_memory_utilization: float = 0.9,
        kv_cache_gib: float = 0.0,
    ) -> None:
        import ipywidgets as w

        self.cfg, self.state = cfg, state
        self.report: SizingReport | None = None
        self.error: str | None = None
        self._exception: Exception | None = None
        names = [p.name for p in sizing.load_catalogue().plans]
        wide = {"description_width": "12em"}
        # Labels are the vLLM flags the verdict's advice and the vLLM arguments name.
        self.fields = {
            "model": w.Text(value=model, description="model (Enter)", style=wide,
                            layout=w.Layout(width="70%")),
            "plan": w.Dropdown(options=[("smallest that fits", "")] + [(n, n) for n in names],
                               value=plan or "", description="plan", style=wide),
            "dtype": w.Dropdown(options=DTYPES, value=dtype, description="--dtype", style=wide),
            "max_model_len": w.IntText(value=max_model_len, description="--max-model-len",
                                       tooltip="0: the model's own limit", style=wide),
            "kv_cache_gib": w.FloatText(value=kv_cache_gib, description="--kv-cache-gib",
                                        tooltip="0: derive from memory", style=wide),
            "gpu_memory_utilization": w.FloatSlider(
                value=gpu_memory_utilization, min=0.5, max=0.98, step=0.01,
                description="--gpu-memory-utilization", style=wide),
        }  # fmt: skip
        self.verdict = w.HTML()
        self.note = w.HTML()
        with warnings.catch_warnings():  # see labkit.query.chat: Enter is the "submit" message
            warnings.simplefilter("ignore", DeprecationWarning)
            self.fields["model"].on_submit(lambda _box: self.refresh())
        for name, box in self.fields.items():
            if name != "model":
                box.observe(self.refresh, names="value")
        f = self.fields
        self.widget = w.VBox(
            [
                f["model"],
                w.HBox([f["plan"], f["dtype"]]),
                w.HBox([f["max_model_len"], f["kv_cache_gib"]]),
                f["gpu_memory_utilization"],
                self.verdict,
                self.note,
            ]
        )
        self._first = True
        self.refresh()
        self._first = False

    def size(self) -> SizingReport:
        """Size what the fields say, from the lab's Hub."""
        f = self.fields
        cfg = self.cfg
        return sizing.size(
            f["model"].value.strip(),
            plan=f["plan"].value or None,
            dtype=f["dtype"].value,
            max_model_len=f["max_model_len"].value or None,
            gpu_memory_utilization=f["gpu_memory_utilization"].value,
            kv_cache_gib=f["kv_cache_gib"].value or None,
            token=cfg.hub_token() if cfg else None,
            endpoint=cfg.hub_endpoint if cfg else None,
            cache_dir=cfg.hub_cache_dir if cfg else None,
        )

    def refresh(self, _change: Any = None) -> None:
        """Size again and show the verdict; record it unless this is the form's first sizing."""
        try:
            with _quiet_hub():
                report = self.size()
        # Anything sizing raises is shown in the form (a typed LabError nearly always; the
        # Hub's client can raise others) and result() raises it for the notebook's own cell.
        except Exception as exc:
            self.error, self._exception = str(exc), exc
            self.verdict.value = f"<span style='color:#c62828'>error: {escape(str(exc))}</span>"
            self.note.value = "<small>the last good sizing stays the result</small>"
            return
        self.report, self.error, self._exception = report, None, None
        recorded = self.state is not None and not self._first
        if recorded:  # before the verdict shows it: what the form shows is what is recorded
            self.state.record(SIZE_KEY, report)
        self.verdict.value = verdict_html(report)
        # vLLM's CPU backend has a fixed KV cache and no GPU memory to take a share of.
        cpu = report.device == "cpu"
        self.fields["gpu_memory_utilization"].layout.display = "none" if cpu else None
        if recorded:
            self.note.value = (
                f"<small class='labkit-recorded'>recorded as step 01's result: steps 05 and 06 "
                f"use plan <b>{escape(report.plan or 'custom')}</b> and these vLLM arguments; run "
                "the cells below again to see the details</small>"
            )
        else:
            self.note.value = (
                "<small>change a field to size again"
                + (" and record the result" if self.state is not None else "")
                + "; the cells below show this sizing</small>"
            )

    def result(self) -> SizingReport:
        """The form's current sizing; the error if the fields as they stand do not size."""
        if self._exception is not None:
            raise self._exception
        assert self.report is not None
        return self.report

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def sizing_form(model: str, **options: Any) -> SizingForm:
    """The step 01 form, seeded from the parameters (SizingForm's keyword options)."""
    return SizingForm(model, **options)
