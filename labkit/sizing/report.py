"""The answer of a sizing: where each GiB of a device goes, the verdict, and the vLLM flags.

``SizingReport`` is what ``labkit size --json`` prints (``to_dict``), what a terminal shows
(``to_text``) and what a notebook displays (``_repr_html_``).
"""

from __future__ import annotations

import dataclasses
import html
from dataclasses import dataclass, field
from typing import Any

from labkit.sizing.constants import GiB
from labkit.util.html import fields, mark, table


@dataclass
class Budget:
    """Memory of one device (a GPU, or the pod's RAM on CPU plans), in bytes."""

    total_bytes: int  # what the driver reports (GPU) or the pod's RAM (CPU)
    limit_bytes: int  # what vLLM may use: ceil(total x utilisation), or total with a fixed KV cache
    weights_bytes: int  # this device's share of the weights
    activation_bytes: int
    non_torch_bytes: int
    kv_budget_bytes: int  # memory vLLM hands to the KV cache
    kv_cache_bytes: int  # what whole blocks of it use
    headroom_bytes: int  # total minus the four above; negative: over by that much


@dataclass
class PlanVerdict:
    """One plan's answer in the every-plan table."""

    name: str
    kind: str
    gpus: int
    gpu_type: str | None
    hardware: str
    fits: bool
    reasons: list[str]
    tensor_parallel_size: int
    kv_cache_tokens: int
    max_concurrency: float
    budget: Budget | None


@dataclass
class SizingReport:
    """Will the model run on the plan, with which vLLM flags, and where each GiB goes."""

    model: str
    plan: str | None
    device: str  # "gpu" or "cpu"
    gpu_type: str | None
    gpus: int
    tensor_parallel_size: int
    dtype: str
    kv_cache_dtype: str
    quantization: str | None
    max_model_len: int
    max_num_batched_tokens: int
    max_num_seqs: int
    block_size: int
    gpu_memory_utilization: float
    weights_bytes: int
    weights_source: str
    kv_bytes_per_token: int
    kv_cache_blocks: int
    kv_cache_tokens: int
    max_concurrency: float
    max_model_len_that_fits: int
    budget: Budget
    fits: bool
    reasons: list[str]
    notes: list[str]
    vllm_args: list[str]
    plans: list[PlanVerdict] = field(default_factory=list)
    smallest_fitting_plan: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (the `labkit size --json` object)."""
        return dataclasses.asdict(self)

    def to_text(self) -> str:
        """A plain-text summary for terminals."""
        b = self.budget
        where = self.plan or "custom device"
        verdict = "FITS" if self.fits else "DOES NOT FIT"
        lines = [
            f"{self.model} on {where} ({self._hardware()}): {verdict}",
            f"  tp {self.tensor_parallel_size}, dtype {self.dtype}, "
            f"kv cache {self.kv_cache_dtype}, max_model_len {self.max_model_len:,}, "
            f"block size {self.block_size}",
            f"  weights {_gib(self.weights_bytes)} GiB ({self.weights_source}), "
            f"per device {_gib(b.weights_bytes)} GiB; activation {_gib(b.activation_bytes)}; "
            f"non-torch {_gib(b.non_torch_bytes)}",
            f"  KV cache {_gib(b.kv_budget_bytes)} GiB = {self.kv_cache_blocks:,} blocks = "
            f"{self.kv_cache_tokens:,} tokens ({self.kv_bytes_per_token:,} B/token); "
            f"max concurrency {self.max_concurrency:.2f}x at {self.max_model_len:,} tokens",
        ]
        lines += [f"  ! {r}" for r in self.reasons] + [f"  note: {n}" for n in self.notes]
        lines.append("  vllm " + " ".join(self.vllm_args))
        if self.plans:
            lines.append(
                "  plans: " + ", ".join(f"{p.name} {'ok' if p.fits else 'no'}" for p in self.plans)
            )
        return "\n".join(lines)

    def _hardware(self) -> str:
        if self.device == "cpu":
            return f"CPU, {_gib(self.budget.total_bytes)} GiB RAM"
        return f"{self.gpus} x {self.gpu_type or 'GPU'} {_gib(self.budget.total_bytes)} GiB"

    def plans_html(self) -> str:
        """The every-plan table as HTML."""
        rows = []
        for p in self.plans:
            fits = mark(p.fits, "fits", "no")
            why = _h(p.reasons[0]) if p.reasons else ""
            best = " <b>(smallest that fits)</b>" if p.name == self.smallest_fitting_plan else ""
            rows.append(
                (
                    f"{_h(p.name)}{best}",
                    _h(p.hardware),
                    fits,
                    p.tensor_parallel_size,
                    f"{p.kv_cache_tokens:,}",
                    f"{p.max_concurrency:.2f}x",
                    why,
                )
            )
        head = ("plan", "hardware", "fits", "tp", "KV tokens", "concurrency", "first reason")
        align = ("", "", "", "right", "right", "right", "")
        return table(head, rows, align=align, sections=True)

    def _fits_len_row(self) -> list[tuple[str, str]]:
        """The longest context: as it stands when the plan fits, as a target when only the
        length is too long, nothing when no length would do."""
        if self.fits:
            return [("largest max_model_len that fits", f"{self.max_model_len_that_fits:,}")]
        if self.max_model_len_that_fits > 0:
            label = "largest max_model_len that would fit"
            return [(label, f"{self.max_model_len_that_fits:,}")]
        return []

    def _repr_html_(self) -> str:
        b = self.budget
        colour = "#2e7d32" if self.fits else "#c62828"
        badge = (
            f"<span style='background:{colour};color:white;padding:2px 8px;border-radius:4px;"
            f"font-weight:bold'>{'FITS' if self.fits else 'DOES NOT FIT'}</span>"
        )
        unit = "GPU" if self.device == "gpu" else "pod (RAM)"
        rows = [
            ("weights, whole model", f"{_gib(self.weights_bytes)} GiB ({_h(self.weights_source)})"),
            (f"weights per {unit}", f"{_gib(b.weights_bytes)} GiB"),
            ("peak activation", f"{_gib(b.activation_bytes)} GiB"),
            ("non-torch memory", f"{_gib(b.non_torch_bytes)} GiB"),
            ("KV cache budget", f"{_gib(b.kv_budget_bytes)} GiB"),
            ("headroom", f"{_gib(b.headroom_bytes)} GiB of {_gib(b.total_bytes)} GiB"),
            ("KV bytes per token", f"{self.kv_bytes_per_token:,} B"),
            (
                "KV cache",
                f"{self.kv_cache_blocks:,} blocks x {self.block_size} "
                f"= {self.kv_cache_tokens:,} tokens",
            ),
            ("max concurrency", f"{self.max_concurrency:.2f}x at {self.max_model_len:,} tokens"),
            *self._fits_len_row(),
            ("dtype / KV cache dtype", f"{self.dtype} / {self.kv_cache_dtype}"),
            ("tensor parallel", str(self.tensor_parallel_size)),
        ]
        table = fields(rows)
        reasons = "".join(f"<li>{_h(r)}</li>" for r in self.reasons)
        notes = "".join(f"<li>{_h(n)}</li>" for n in self.notes)
        parts = [
            f"<div><p>{badge} <b>{_h(self.model)}</b> on <b>{_h(self.plan or 'custom device')}</b> "
            f"({_h(self._hardware())})</p>{table}",
            f"<p><b>What to change</b></p><ul>{reasons}</ul>" if reasons else "",
            f"<p><b>Notes</b></p><ul>{notes}</ul>" if notes else "",
            f"<p><b>vLLM arguments</b>: <code>{_h(' '.join(self.vllm_args))}</code></p>",
            f"<p><b>Every plan</b></p>{self.plans_html()}" if self.plans else "",
            "</div>",
        ]
        return "".join(parts)


def _gib(nbytes: int | float) -> str:
    value = nbytes / GiB
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _h(text: Any) -> str:
    return html.escape(str(text))
