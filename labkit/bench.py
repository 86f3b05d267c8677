"""Step 08: one seeded workload through vLLM and Hugging Face Transformers, side by side.

The workload comes from the lab's own prompt set (``bench_prompts.jsonl``), sampled the way
vLLM's benchmarks sample ShareGPT: shuffle with the seed, tokenize with the model's tokenizer,
drop pairs with a prompt over 1024 tokens or prompt + output over 2048 (or either under 4), and
oversample when too few remain. Each request asks for exactly its output length (``ignore_eos``),
so every engine produces the same number of tokens and throughput compares like with like.

Engines: vLLM offline (``vllm.LLM.generate``) and HF ``generate`` (one request at a time, and
static batches with left padding) run in worker subprocesses that load the model once; the vLLM
server is driven over HTTP with streaming, through the deployment URL or straight to the server,
at a given concurrency, which gives time to first token (TTFT) and inter-token latency (ITL).
``vllm bench serve`` (vLLM's own client) replays the same workload as a cross-check.

Run as ``python -m labkit.bench worker vllm|hf ARGS_JSON`` it is such a worker (internal).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import queue
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from html import escape
from importlib import metadata, resources
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from labkit.config import Config
from labkit.errors import ConfigError, ServiceError, StepError
from labkit.state import State

PROMPTS_FILE = "bench_prompts.jsonl"
# vLLM's ShareGPT filter (vllm/benchmarks/datasets/datasets.py, is_valid_sequence).
MIN_TOKENS = 4
MAX_PROMPT_TOKENS = 1024
MAX_TOTAL_TOKENS = 2048
RESULTS_FORMAT = 1
PROXY_BUDGET = 0.95  # the deployment URL may cost at most 5% of throughput
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
# Sampling every engine uses: plain temperature-1 sampling, as vLLM's throughput benchmark does.
TEMPERATURE = 1.0
WORKER_START_TIMEOUT = 600.0
SERVER_START_TIMEOUT = 600.0
REQUEST_TIMEOUT = 900.0

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

T = TypeVar("T")


# --- the workload --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """One entry of the prompt set: the user's message and the length of a typical answer."""

    id: str
    category: str
    prompt: str
    output_tokens: int


@dataclass(frozen=True)
class Request:
    """One request of a workload: the prompt as sent and how many tokens it asks for."""

    index: int
    id: str
    category: str
    prompt: str
    prompt_token_ids: tuple[int, ...]
    output_tokens: int

    @property
    def prompt_tokens(self) -> int:
        """Tokens in the prompt, by the model's tokenizer."""
        return len(self.prompt_token_ids)


def prompts_path() -> Path:
    """The prompt set the lab ships."""
    return Path(str(resources.files("labkit").joinpath(PROMPTS_FILE)))


def load_prompts(path: str | Path | None = None) -> list[Prompt]:
    """The prompt set: one JSON object a line with id, category, prompt and output_tokens."""
    source = Path(path) if path else prompts_path()
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the prompt set {source} ({exc.strerror})",
            "pass a JSONL file with prompt and output_tokens on every line",
        ) from None
    out: list[Prompt] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append(
                Prompt(
                    id=str(row.get("id", f"line-{number}")),
                    category=str(row.get("category", "")),
                    prompt=str(row["prompt"]),
                    output_tokens=int(row["output_tokens"]),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise ConfigError(
                f"{source} line {number} is not a prompt",
                'write one {"prompt": "...", "output_tokens": N} object a line',
            ) from None
    if not out:
        raise ConfigError(f"the prompt set {source} is empty", "add prompts to it")
    return out


def is_valid_pair(
    prompt_tokens: int,
    output_tokens: int,
    *,
    max_prompt_tokens: int = MAX_PROMPT_TOKENS,
    max_total_tokens: int = MAX_TOTAL_TOKENS,
    min_tokens: int = MIN_TOKENS,
) -> bool:
    """vLLM's ShareGPT filter: both lengths at least ``min_tokens``, prompt and total bounded."""
    return (
        prompt_tokens >= min_tokens
        and output_tokens >= min_tokens
        and prompt_tokens <= max_prompt_tokens
        and prompt_tokens + output_tokens <= max_total_tokens
    )


@dataclass
class Workload:
    """A seeded list of requests, the same for every engine."""

    seed: int
    requests: list[Request]
    max_output_tokens: int | None = None
    max_prompt_tokens: int = MAX_PROMPT_TOKENS
    max_total_tokens: int = MAX_TOTAL_TOKENS
    chat_template: bool = True
    dropped: list[str] = field(default_factory=list)
    oversampled: int = 0
    source: str = PROMPTS_FILE

    def __len__(self) -> int:
        return len(self.requests)

    def head(self, count: int) -> Workload:
        """The first ``count`` requests, as a workload of their own (same seed and limits)."""
        out = Workload(**{f.name: getattr(self, f.name) for f in fields(self)})
        out.requests = self.requests[: max(0, count)]
        return out

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens over all requests."""
        return sum(r.prompt_tokens for r in self.requests)

    @property
    def output_tokens(self) -> int:
        """Output tokens the workload asks for (one completion per request)."""
        return sum(r.output_tokens for r in self.requests)

    def summary(self) -> dict[str, Any]:
        """Counts and length statistics, for the results file and the notebook."""
        p = [r.prompt_tokens for r in self.requests]
        o = [r.output_tokens for r in self.requests]
        return {
            "seed": self.seed,
            "requests": len(self.requests),
            "source": self.source,
            "chat_template": self.chat_template,
            "max_prompt_tokens": self.max_prompt_tokens,
            "max_total_tokens": self.max_total_tokens,
            "max_output_tokens": self.max_output_tokens,
            "prompt_tokens": _stats(p),
            "output_tokens": _stats(o),
            "dropped": list(self.dropped),
            "oversampled": self.oversampled,
            "items": [
                {"id": r.id, "prompt_tokens": r.prompt_tokens, "output_tokens": r.output_tokens}
                for r in self.requests
            ],
        }

    def to_sharegpt(self, path: Path, tokenizer: Any) -> Path:
        """The workload as a ShareGPT file for ``vllm bench serve --dataset-name sharegpt``.

        Each entry is a two-turn conversation: the prompt as sent, and an answer that the same
        tokenizer counts as exactly the request's output length (vLLM's ShareGPT sampler takes
        the output length from the answer's tokens), so their client replays our requests.
        """
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = [
            {
                "id": f"{r.index}-{r.id}",
                "conversations": [
                    {"from": "human", "value": r.prompt},
                    {"from": "gpt", "value": filler_text(tokenizer, r.output_tokens)},
                ],
            }
            for r in self.requests
        ]
        path.write_text(json.dumps(entries), encoding="utf-8")
        return path

    def _repr_html_(self) -> str:
        s = self.summary()
        p, o = s["prompt_tokens"], s["output_tokens"]
        cap = f", outputs capped at {self.max_output_tokens}" if self.max_output_tokens else ""
        rows = "".join(
            f"<tr><td>{escape(r.id)}</td><td>{escape(r.category)}</td>"
            f"<td style='text-align:right'>{r.prompt_tokens}</td>"
            f"<td style='text-align:right'>{r.output_tokens}</td></tr>"
            for r in self.requests[:12]
        )
        more = f"<tr><td colspan=4>... {len(self) - 12} more</td></tr>" if len(self) > 12 else ""
        return (
            f"<div><b>{len(self)} requests</b>, seed {self.seed}{cap}; prompt tokens "
            f"min/median/max {p['min']}/{p['median']:.0f}/{p['max']}, output tokens "
            f"{o['min']}/{o['median']:.0f}/{o['max']}; {len(self.dropped)} prompts over the "
            f"limits left out, {self.oversampled} repeated<table><tr><th>id</th><th>kind</th>"
            f"<th>prompt tokens</th><th>output tokens</th></tr>{rows}{more}</table></div>"
        )


def filler_text(tokenizer: Any, tokens: int) -> str:
    """A text the tokenizer turns into exactly ``tokens`` tokens (" ok" repeated, adjusted)."""
    count = tokens
    for _ in range(8):
        text = " ok" * count
        got = len(tokenizer(text).input_ids)
        if got == tokens:
            return text
        count += tokens - got  # special tokens the tokenizer adds, or merges
    raise ConfigError(
        f"cannot write a {tokens}-token answer with this tokenizer",
        "run the cross-check with a different model, or skip it",
    )


def _stats(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "median": 0.0, "mean": 0.0, "max": 0, "total": 0}
    return {
        "min": min(values),
        "median": float(statistics.median(values)),
        "mean": float(statistics.fmean(values)),
        "max": max(values),
        "total": sum(values),
    }


def sample_workload(
    tokenizer: Any,
    num_requests: int,
    *,
    seed: int = 0,
    max_output_tokens: int | None = None,
    prompts: Sequence[Prompt] | None = None,
    chat_template: bool = True,
    max_prompt_tokens: int = MAX_PROMPT_TOKENS,
    max_total_tokens: int = MAX_TOTAL_TOKENS,
) -> Workload:
    """Draw ``num_requests`` requests from the prompt set the way vLLM samples ShareGPT."""
    if num_requests < 1:
        raise ConfigError(f"num_requests={num_requests}", "ask for at least one request")
    if max_output_tokens is not None and max_output_tokens < MIN_TOKENS:
        raise ConfigError(
            f"max_output_tokens={max_output_tokens} is under {MIN_TOKENS}",
            f"use at least {MIN_TOKENS}, or None for the prompt set's lengths",
        )
    pool = list(prompts) if prompts is not None else load_prompts()
    rng = random.Random(seed)
    order = list(range(len(pool)))
    rng.shuffle(order)
    valid: list[Request] = []
    dropped: list[str] = []
    for i in order:
        if len(valid) >= num_requests:
            break
        entry = pool[i]
        text = entry.prompt
        if chat_template and getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": entry.prompt}],
                add_generation_prompt=True,
                tokenize=False,
            )
        ids = tuple(tokenizer(text).input_ids)
        out = entry.output_tokens
        if max_output_tokens is not None:
            out = min(out, max_output_tokens)
        if not is_valid_pair(
            len(ids), out, max_prompt_tokens=max_prompt_tokens, max_total_tokens=max_total_tokens
        ):
            dropped.append(entry.id)
            continue
        valid.append(Request(len(valid), entry.id, entry.category, text, ids, out))
    if not valid:
        raise ConfigError(
            "no prompt of the set fits the length limits",
            f"raise max_prompt_tokens ({max_prompt_tokens}) or max_total_tokens ({max_total_tokens})",
        )
    chosen = list(valid)
    # Too few valid prompts: repeat random ones, as vLLM's maybe_oversample_requests does.
    while len(chosen) < num_requests:
        pick = rng.choice(valid)
        chosen.append(Request(len(chosen), pick.id, pick.category, pick.prompt,
                              pick.prompt_token_ids, pick.output_tokens))  # fmt: skip
    return Workload(
        seed=seed,
        requests=chosen,
        max_output_tokens=max_output_tokens,
        max_prompt_tokens=max_prompt_tokens,
        max_total_tokens=max_total_tokens,
        chat_template=chat_template,
        dropped=dropped,
        oversampled=len(chosen) - len(valid),
    )


def load_tokenizer(model_path: str | Path) -> Any:
    """The model's tokenizer (transformers), from its local folder."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(model_path))
    except OSError as exc:
        raise ConfigError(
            f"no tokenizer in {model_path} ({exc})",
            "point the benchmark at the model folder (labkit local up builds the default one)",
        ) from None


def build_workload(model_path: str | Path, num_requests: int, **kwargs: Any) -> Workload:
    """Tokenize with the model's tokenizer and sample (see sample_workload)."""
    return sample_workload(load_tokenizer(model_path), num_requests, **kwargs)


# --- metrics -------------------------------------------------------------------------------------


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile with linear interpolation (numpy's default); None when empty."""
    xs = sorted(values)
    if not xs:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def gaps(stamps: Sequence[float]) -> list[float]:
    """Differences between consecutive timestamps: the inter-token latencies of one stream."""
    return [b - a for a, b in itertools.pairwise(stamps)]


@dataclass
class RequestRecord:
    """What one request did: tokens in and out, when the first token came, how long it took."""

    index: int
    prompt_tokens: int
    max_tokens: int
    n: int
    output_tokens: int = 0
    ttft_s: float | None = None
    latency_s: float | None = None
    itl_s: list[float] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Finished without an error."""
        return self.error is None

    @property
    def complete(self) -> bool:
        """Every completion ran to its token budget, or stopped on its own."""
        if not self.ok:
            return False
        if self.output_tokens == self.max_tokens * self.n:
            return True
        return "stop" in self.finish_reasons and self.output_tokens <= self.max_tokens * self.n


@dataclass
class RunResult:
    """One engine over one workload: the records and the figures they give."""

    engine: str
    label: str
    n: int
    duration_s: float
    records: list[RequestRecord]
    concurrency: int | None = None
    target: str | None = None
    batch_size: int | None = None
    started: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    notes: list[str] = field(default_factory=list)

    @property
    def num_requests(self) -> int:
        """Requests sent."""
        return len(self.records)

    @property
    def completed(self) -> int:
        """Requests that finished without an error."""
        return sum(r.ok for r in self.records)

    @property
    def request_set(self) -> frozenset[int]:
        """Which requests of the workload ran (their indices)."""
        return frozenset(r.index for r in self.records)

    @property
    def output_tokens(self) -> int:
        """Tokens generated over all completions of finished requests."""
        return sum(r.output_tokens for r in self.records if r.ok)

    @property
    def prompt_tokens(self) -> int:
        """Prompt tokens of finished requests."""
        return sum(r.prompt_tokens for r in self.records if r.ok)

    @property
    def requests_per_min(self) -> float:
        """Finished requests per minute of wall time."""
        return self.completed * 60 / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def output_tokens_per_s(self) -> float:
        """Generated tokens per second of wall time."""
        return self.output_tokens / self.duration_s if self.duration_s > 0 else 0.0

    def _values(self, name: str) -> list[float]:
        if name == "itl_s":
            return [x for r in self.records if r.ok for x in r.itl_s]
        return [v for r in self.records if r.ok and (v := getattr(r, name)) is not None]

    def metric(self, name: str, q: float) -> float | None:
        """A percentile of ttft_s, itl_s or latency_s over finished requests (None if unmeasured)."""
        return percentile(self._values(name), q)

    def summary(self) -> dict[str, Any]:
        """The figures, without the per-request records."""
        return {
            "engine": self.engine,
            "label": self.label,
            "n": self.n,
            "concurrency": self.concurrency,
            "batch_size": self.batch_size,
            "target": self.target,
            "requests": self.num_requests,
            "completed": self.completed,
            "duration_s": round(self.duration_s, 4),
            "output_tokens": self.output_tokens,
            "prompt_tokens": self.prompt_tokens,
            "requests_per_min": round(self.requests_per_min, 3),
            "output_tokens_per_s": round(self.output_tokens_per_s, 3),
            "ttft_p50_s": _round(self.metric("ttft_s", 50)),
            "ttft_p99_s": _round(self.metric("ttft_s", 99)),
            "itl_p50_s": _round(self.metric("itl_s", 50)),
            "itl_p99_s": _round(self.metric("itl_s", 99)),
            "latency_p50_s": _round(self.metric("latency_s", 50)),
            "latency_p99_s": _round(self.metric("latency_s", 99)),
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything, records included, as JSON-ready data."""
        return {**asdict(self), "summary": self.summary()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        """The inverse of to_dict."""
        names = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names and k != "records"}
        kwargs["records"] = [RequestRecord(**r) for r in data.get("records", [])]
        return cls(**kwargs)

    def _repr_html_(self) -> str:
        return _runs_table([self])


class RunTable(list):
    """Runs that show themselves as one table."""

    def _repr_html_(self) -> str:
        return _runs_table(self)


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value * 1000:,.1f}"


def _runs_table(runs: Sequence[RunResult]) -> str:
    head = (
        "<tr><th>engine</th><th>n</th><th>requests</th><th>req/min</th><th>output tok/s</th>"
        "<th>TTFT p50 ms</th><th>TTFT p99 ms</th><th>ITL p50 ms</th><th>ITL p99 ms</th></tr>"
    )
    rows = []
    for r in runs:
        s = r.summary()
        failed = f" ({r.num_requests - r.completed} failed)" if r.completed < r.num_requests else ""
        rows.append(
            f"<tr><td>{escape(r.label)}</td><td>{r.n}</td><td>{r.completed}{failed}</td>"
            f"<td>{s['requests_per_min']:,.1f}</td><td>{s['output_tokens_per_s']:,.1f}</td>"
            f"<td>{_ms(s['ttft_p50_s'])}</td><td>{_ms(s['ttft_p99_s'])}</td>"
            f"<td>{_ms(s['itl_p50_s'])}</td><td>{_ms(s['itl_p99_s'])}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


# --- running coroutines from notebooks and scripts alike -----------------------------------------


def _run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion, also when an event loop already runs (Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    thread = threading.Thread(target=target, name="labkit-bench-loop")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


# --- the server over HTTP ------------------------------------------------------------------------


@dataclass
class Target:
    """An OpenAI-compatible server: its base URL (without /v1), the model name, its headers."""

    name: str
    base_url: str
    model: str
    headers: Callable[[], dict[str, str]] = dict

    def public(self) -> dict[str, str]:
        """Name, URL and model; never the headers (they carry the token)."""
        return {"name": self.name, "base_url": self.base_url, "model": self.model}

    def __repr__(self) -> str:
        return f"Target(name={self.name!r}, base_url={self.base_url!r}, model={self.model!r})"


def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOCAL_HOSTS


def served_model(base_url: str, headers: Mapping[str, str] | None = None) -> str:
    """The first model a server lists at /v1/models."""
    import httpx

    try:
        resp = httpx.get(
            base_url.rstrip("/") + "/v1/models",
            headers=dict(headers or {}),
            timeout=30,
            trust_env=not _is_loopback(base_url),
        )
        resp.raise_for_status()
        return str(resp.json()["data"][0]["id"])
    except (httpx.HTTPError, KeyError, IndexError, ValueError) as exc:
        raise ServiceError(
            f"cannot list the models of {base_url} ({type(exc).__name__}: {exc})",
            "check that the server runs and the URL ends before /v1",
        ) from None


def server_target(base_url: str, model: str | None = None, name: str = "direct") -> Target:
    """A plain vLLM server (no auth); the model name is asked from the server if not given."""
    base = base_url.rstrip("/")
    return Target(name=name, base_url=base, model=model or served_model(base))


def deployment_target(
    cfg: Config, state: State | None = None, *, model: str | None = None
) -> Target:
    """The deployment of step 06 through its URL: labkit.query's client (token refreshed as it
    expires, ``AI-Resource-Group``) gives the base URL, the model and the headers."""
    from labkit import query

    client = query.connect(cfg, state, model=model)
    try:
        name = client.model
    finally:
        client.close()  # the token cache (client.auth) outlives the HTTP connections
    auth, fixed = client.auth, dict(client.headers)

    def headers() -> dict[str, str]:
        out = dict(fixed)
        if auth is not None:
            out["Authorization"] = f"Bearer {auth.token()}"
        return out

    return Target(name="deployment", base_url=client.base_url, model=name, headers=headers)


def local_predictor_url(cfg: Config, deployment_id: str) -> str | None:
    """The server behind a deployment of the local AI Core (loopback), or None elsewhere.

    Read from the local AI Core's state file (the predictor's port), because the AI API has no
    field for it: on a tenant the predictor sits inside the cluster and only the deployment URL
    reaches it, so there the proxy comparison is skipped.
    """
    if cfg.profile != "local" or not deployment_id:
        return None
    try:
        data = json.loads((cfg.local_dir / "aicore" / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for group in (data.get("deployments") or {}).values():
        dep = (group or {}).get(deployment_id)
        if dep and dep.get("status") == "RUNNING":
            port = (dep.get("_process") or {}).get("port")
            return f"http://127.0.0.1:{int(port)}" if port else None
    return None


def _parse_sse(line: str) -> dict[str, Any] | None:
    if not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return None
    return json.loads(data)


async def _one_request(
    client: Any,
    target: Target,
    headers: Mapping[str, str],
    req: Request,
    n: int,
    ignore_eos: bool,
    temperature: float,
) -> RequestRecord:
    """Send one streaming completion and time every chunk of every choice."""
    rec = RequestRecord(req.index, req.prompt_tokens, req.output_tokens, n)
    body = {
        "model": target.model,
        "prompt": req.prompt,
        "max_tokens": req.output_tokens,
        "n": n,
        "temperature": temperature,
        "top_p": 1.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": ignore_eos,
    }
    stamps: dict[int, list[float]] = {}
    finish: dict[int, str] = {}
    usage: dict[str, Any] | None = None
    start = time.perf_counter()
    try:
        async with client.stream(
            "POST", target.base_url + "/v1/completions", json=body, headers=dict(headers)
        ) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")[:300]
                rec.error = f"HTTP {resp.status_code}: {text}"
                return rec
            async for line in resp.aiter_lines():
                chunk = _parse_sse(line)
                if chunk is None:
                    continue
                now = time.perf_counter()
                for choice in chunk.get("choices") or []:
                    i = int(choice.get("index", 0))
                    # vLLM sends one chunk a token; an empty text is a token that has not
                    # finished a character yet, so it counts too.
                    stamps.setdefault(i, []).append(now)
                    if choice.get("finish_reason"):
                        finish[i] = str(choice["finish_reason"])
                if chunk.get("usage"):
                    usage = chunk["usage"]
    except Exception as exc:  # a failed request is a record, not the end of the run
        rec.error = f"{type(exc).__name__}: {exc}"[:300]
        return rec
    end = time.perf_counter()
    rec.latency_s = end - start
    firsts = [s[0] for s in stamps.values() if s]
    rec.ttft_s = (min(firsts) - start) if firsts else None
    rec.itl_s = [g for s in stamps.values() for g in gaps(s)]
    rec.finish_reasons = [finish.get(i, "") for i in sorted(stamps)]
    if usage is not None:
        rec.output_tokens = int(usage.get("completion_tokens", 0))
        rec.prompt_tokens = int(usage.get("prompt_tokens", rec.prompt_tokens))
    else:
        rec.output_tokens = sum(len(s) for s in stamps.values())
    if not stamps:
        rec.error = "the stream carried no tokens"
    return rec


async def _server_run(
    target: Target,
    requests: Sequence[Request],
    concurrency: int,
    n: int,
    ignore_eos: bool,
    temperature: float,
    timeout: float,
    progress: bool,
) -> tuple[list[RequestRecord], float]:
    import httpx
    from tqdm.auto import tqdm

    headers = target.headers()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    gate = asyncio.Semaphore(concurrency)
    bar = tqdm(total=len(requests), desc=f"{target.name} c={concurrency} n={n}",
               unit="req", disable=not progress, leave=False)  # fmt: skip

    async with httpx.AsyncClient(
        timeout=httpx.Timeout(timeout, connect=30),
        limits=limits,
        trust_env=not _is_loopback(target.base_url),
    ) as client:

        async def limited(req: Request) -> RequestRecord:
            async with gate:
                rec = await _one_request(client, target, headers, req, n, ignore_eos, temperature)
                bar.update(1)
                return rec

        start = time.perf_counter()
        records = await asyncio.gather(*(limited(r) for r in requests))
        duration = time.perf_counter() - start
    bar.close()
    return list(records), duration


def run_server(
    target: Target,
    workload: Workload,
    concurrency: int,
    *,
    n: int = 1,
    ignore_eos: bool = True,
    temperature: float = TEMPERATURE,
    timeout: float = REQUEST_TIMEOUT,
    warmup: bool = True,
    progress: bool = True,
) -> RunResult:
    """Stream the workload's requests to the server, at most ``concurrency`` at a time."""
    if concurrency < 1 or n < 1:
        raise ConfigError(
            f"concurrency={concurrency}, n={n}", "use a concurrency and an n of at least 1"
        )
    if warmup:
        # One short request first, so that connection set-up and lazy server work stay out.
        probe = Request(-1, "warmup", "warmup", "Hello", (0,), MIN_TOKENS)
        records, _ = _run_sync(
            _server_run(target, [probe], 1, 1, True, temperature, timeout, False)
        )
        if records[0].error:
            raise ServiceError(
                f"the server at {target.base_url} refused a completion ({records[0].error})",
                "check the URL, the model name and the credentials",
            )
    records, duration = _run_sync(
        _server_run(
            target, workload.requests, concurrency, n, ignore_eos, temperature, timeout, progress
        )
    )
    where = "through the deployment URL" if target.name == "deployment" else "straight to it"
    return RunResult(
        engine=f"vllm-server-{target.name}",
        label=f"vLLM server {where}, concurrency {concurrency}",
        n=n,
        duration_s=duration,
        records=records,
        concurrency=concurrency,
        target=target.base_url,
    )


# --- engines in worker subprocesses --------------------------------------------------------------


class Worker:
    """A subprocess that loads one engine once and runs workloads sent as JSON lines."""

    def __init__(
        self,
        kind: str,
        args: Mapping[str, Any],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        start_timeout: float = WORKER_START_TIMEOUT,
    ) -> None:
        self.kind = kind
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        child_env = {**os.environ, **worker_env(), **(env or {})}
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "labkit.bench", "worker", kind, json.dumps(dict(args))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=child_env,
            start_new_session=True,  # its own group: close() ends vLLM's engine processes too
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.info = self._read(start_timeout, "start")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _read(self, timeout: float, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._lines.get(timeout=max(0.0, left))
            except queue.Empty:
                self.close()
                raise StepError(
                    f"the {self.kind} worker did not {what} within {timeout:.0f} s",
                    f"see {self.log_path}; try a smaller workload",
                ) from None
            if line is None:
                self.close()
                raise StepError(
                    f"the {self.kind} worker exited ({self._tail()})", f"see {self.log_path}"
                )
            msg = json.loads(line)
            if "error" in msg:
                raise StepError(
                    f"the {self.kind} worker failed: {msg['error']}", f"see {self.log_path}"
                )
            return msg

    def _tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1][:200] if lines else "no log"

    def run(self, payload: Mapping[str, Any], timeout: float) -> dict[str, Any]:
        """Send one command and wait for its answer."""
        if self.proc.poll() is not None or self.proc.stdin is None:
            raise StepError(f"the {self.kind} worker is not running", f"see {self.log_path}")
        self.proc.stdin.write(json.dumps(dict(payload)) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout, "answer")

    def close(self) -> None:
        """Stop the worker and everything it started (its process group)."""
        if self.proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"cmd": "stop"}) + "\n")
                self.proc.stdin.flush()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=30)
        _end_group(self.proc)
        self._log.close()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _end_group(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM the process group, then SIGKILL what is left after a grace period."""
    pgid = proc.pid
    for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.2)
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def worker_env() -> dict[str, str]:
    """What the engines need on a CPU machine: a bounded KV cache, offline, no telemetry."""
    env = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    # Without it vLLM on CPU reserves most of the machine's memory for the KV cache.
    env["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")
    return env


def _payload(requests: Sequence[Request], n: int, **extra: Any) -> dict[str, Any]:
    return {
        "cmd": "run",
        "n": n,
        "requests": [
            {"index": r.index, "ids": list(r.prompt_token_ids), "max_tokens": r.output_tokens}
            for r in requests
        ],
        **extra,
    }


def _run_timeout(requests: Sequence[Request], n: int) -> float:
    # Generous: one token a second, as seen on a 2-core machine shared with other heavy jobs.
    return 120 + sum(r.output_tokens * n + r.prompt_tokens / 20 for r in requests)


def _records(answer: Mapping[str, Any]) -> list[RequestRecord]:
    return [RequestRecord(**r) for r in answer["records"]]


def run_offline(worker: Worker, workload: Workload, *, n: int = 1, seed: int = 0) -> RunResult:
    """vLLM's offline batch: every request handed to ``LLM.generate`` at once."""
    answer = worker.run(
        _payload(workload.requests, n, seed=seed, temperature=TEMPERATURE),
        _run_timeout(workload.requests, n),
    )
    return RunResult(
        engine="vllm-offline",
        label="vLLM offline batch (LLM.generate)",
        n=n,
        duration_s=float(answer["duration_s"]),
        records=_records(answer),
        batch_size=len(workload),
        notes=[f"dtype {worker.info.get('dtype')}"],
    )


def run_hf(
    worker: Worker,
    workload: Workload,
    *,
    mode: str = "single",
    n: int = 1,
    batch_size: int = 8,
    seed: int = 0,
) -> RunResult:
    """HF ``generate``: one request at a time (``single``) or static batches (``static``)."""
    if mode not in ("single", "static"):
        raise ConfigError(f"HF mode {mode!r}", "use 'single' or 'static'")
    size = 1 if mode == "single" else max(1, batch_size)
    answer = worker.run(
        _payload(workload.requests, n, batch_size=size, seed=seed, temperature=TEMPERATURE),
        _run_timeout(workload.requests, n) * (2 if mode == "static" else 1),
    )
    label = (
        "HF generate, one request at a time"
        if mode == "single"
        else f"HF generate, static batches of {size}"
    )
    return RunResult(
        engine=f"hf-{mode}",
        label=label,
        n=n,
        duration_s=float(answer["duration_s"]),
        records=_records(answer),
        batch_size=size,
        notes=[
            f"dtype {worker.info.get('dtype')}, "
            + (
                "on the GPU"
                if worker.info.get("device") == "cuda"
                else f"{worker.info.get('threads')} threads"
            )
        ],
    )


def _warmup_cmd() -> dict[str, Any]:
    ids = list(range(10, 42))
    return {"cmd": "run", "n": 1, "batch_size": 1, "seed": 0, "temperature": TEMPERATURE,
            "requests": [{"index": -1, "ids": ids, "max_tokens": MIN_TOKENS}]}  # fmt: skip


def engine_threads() -> int:
    """Compute threads vLLM's CPU engine takes here: all usable cores but one, which it keeps
    for its front end; HF gets the same, so both engines compute on the same cores."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (usable or 1) - 1)


class _VllmEngine:
    """vllm.LLM on the model folder, eager (CPU graphs give garbage in this vLLM version)."""

    def __init__(self, args: Mapping[str, Any]) -> None:
        from vllm import LLM

        self.llm = LLM(
            model=args["model"],
            enforce_eager=True,
            max_model_len=int(args.get("max_model_len", MAX_TOTAL_TOKENS)),
            seed=int(args.get("seed", 0)),
            dtype=args.get("dtype", "auto"),
        )
        self.info = {"engine": "vllm", "dtype": str(args.get("dtype", "auto"))}
        # A first call pays for lazy set-up; keep it out of the measured runs.
        self.run(_warmup_cmd())

    def run(self, cmd: Mapping[str, Any]) -> dict[str, Any]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        n = int(cmd["n"])
        reqs = cmd["requests"]
        prompts = [TokensPrompt(prompt_token_ids=r["ids"]) for r in reqs]
        params = [
            SamplingParams(
                n=n,
                max_tokens=r["max_tokens"],
                ignore_eos=True,
                temperature=float(cmd["temperature"]),
                top_p=1.0,
                seed=int(cmd["seed"]) + i,
            )
            for i, r in enumerate(reqs)
        ]
        start = time.perf_counter()
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        duration = time.perf_counter() - start
        records = []
        for r, out in zip(reqs, outs, strict=True):
            records.append(
                asdict(
                    RequestRecord(
                        index=r["index"],
                        prompt_tokens=len(r["ids"]),
                        max_tokens=r["max_tokens"],
                        n=n,
                        output_tokens=sum(len(o.token_ids) for o in out.outputs),
                        finish_reasons=[str(o.finish_reason) for o in out.outputs],
                    )
                )
            )
        return {"duration_s": duration, "records": records}


class _Clock:
    """A generate() streamer that only notes when each step's tokens came out."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        if hasattr(value, "cpu"):
            value.cpu()  # on a GPU, wait for the step's kernels before taking the time
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


class _HfEngine:
    """transformers' generate on the model folder, with left padding for static batches."""

    def __init__(self, args: Mapping[str, Any]) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        dtype = str(args.get("dtype", "float32"))
        if args.get("threads"):
            torch.set_num_threads(int(args["threads"]))
        tok = AutoTokenizer.from_pretrained(args["model"])
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        # On a GPU machine the baseline runs on the GPU too, as in the launch post.
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model = AutoModelForCausalLM.from_pretrained(
            args["model"], dtype=getattr(torch, dtype)
        ).to(self.device)
        self.model.eval()
        self.info = {
            "engine": "hf",
            "dtype": dtype,
            "device": self.device,
            "threads": torch.get_num_threads(),
        }
        self.run(_warmup_cmd())

    def run(self, cmd: Mapping[str, Any]) -> dict[str, Any]:
        torch = self.torch
        n, size = int(cmd["n"]), int(cmd["batch_size"])
        reqs = cmd["requests"]
        torch.manual_seed(int(cmd["seed"]))
        records: list[dict[str, Any]] = []
        start = time.perf_counter()
        for b in range(0, len(reqs), size):
            batch = reqs[b : b + size]
            width = max(len(r["ids"]) for r in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, r in enumerate(batch):
                ids[row, width - len(r["ids"]) :] = torch.tensor(r["ids"])
                mask[row, width - len(r["ids"]) :] = 1
            new = max(r["max_tokens"] for r in batch)
            clock = _Clock()
            t0 = time.perf_counter()
            with torch.inference_mode():
                self.model.generate(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    max_new_tokens=new,
                    min_new_tokens=new,
                    do_sample=True,
                    temperature=float(cmd["temperature"]),
                    top_p=1.0,
                    top_k=0,
                    num_return_sequences=n,
                    pad_token_id=self.pad_id,
                    streamer=clock,
                )
            # The streamer's first call carries the prompt; each later one is one step.
            steps = clock.times[1:]
            for r in batch:
                k = min(r["max_tokens"], len(steps))
                mine = steps[:k]
                records.append(
                    asdict(
                        RequestRecord(
                            index=r["index"],
                            prompt_tokens=len(r["ids"]),
                            max_tokens=r["max_tokens"],
                            n=n,
                            output_tokens=k * n,
                            ttft_s=(mine[0] - t0) if mine else None,
                            latency_s=(mine[-1] - t0) if mine else None,
                            itl_s=gaps(mine) * n,
                            finish_reasons=["length"] * n,
                        )
                    )
                )
        return {"duration_s": time.perf_counter() - start, "records": records}


def _worker_main(argv: Sequence[str]) -> int:
    """The worker's loop: load the engine, say ready, answer one JSON line per command."""
    if len(argv) != 2 or argv[0] not in ("vllm", "hf"):
        print("usage: python -m labkit.bench worker vllm|hf ARGS_JSON", file=sys.stderr)
        return 2
    # Answers go to the original stdout; everything else (vLLM logs to stdout) goes to stderr.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def say(msg: Mapping[str, Any]) -> None:
        answers.write(json.dumps(msg) + "\n")
        answers.flush()

    args = json.loads(argv[1])
    try:
        engine: Any = _VllmEngine(args) if argv[0] == "vllm" else _HfEngine(args)
    except Exception as exc:
        say({"error": f"{type(exc).__name__}: {exc}"[:500]})
        return 1
    say({"ready": True, **engine.info})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("cmd") == "stop":
            break
        try:
            say(engine.run(cmd))
        except Exception as exc:
            say({"error": f"{type(exc).__name__}: {exc}"[:500]})
    return 0


# --- a vLLM server of our own (tests, and the CLI benchmark without a deployment) ----------------


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VllmServer:
    """``python -m vllm.entrypoints.openai.api_server`` on a model folder, eager, on loopback."""

    def __init__(
        self,
        model_path: str | Path,
        *,
        served_name: str = "model",
        log_path: Path,
        port: int | None = None,
        max_model_len: int = MAX_TOTAL_TOKENS,
        extra_args: Sequence[str] = (),
        timeout: float = SERVER_START_TIMEOUT,
    ) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.served_name = served_name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_path), "--served-model-name", served_name,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--enforce-eager", "--max-model-len", str(max_model_len),
            "--disable-uvicorn-access-log", *extra_args,
        ]  # fmt: skip
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **worker_env()},
                start_new_session=True,
            )
        self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.close()
                raise ServiceError(
                    f"vLLM exited during start-up (code {self.proc.returncode})",
                    f"see {self.log_path}",
                )
            with contextlib.suppress(httpx.HTTPError):
                if (
                    httpx.get(self.base_url + "/health", timeout=2, trust_env=False).status_code
                    == 200
                ):
                    return
            time.sleep(1)
        self.close()
        raise ServiceError(
            f"vLLM did not answer /health within {timeout:.0f} s", f"see {self.log_path}"
        )

    def target(self, name: str = "direct") -> Target:
        """This server as a benchmark target."""
        return Target(name=name, base_url=self.base_url, model=self.served_name)

    def close(self) -> None:
        """SIGTERM the server's process group (API server, engine core, workers)."""
        _end_group(self.proc)

    def __enter__(self) -> VllmServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Skipped:
    """A part of the benchmark that did not run here, and why."""

    what: str
    reason: str

    def _repr_html_(self) -> str:
        return f"<div><b>{escape(self.what)}</b>: skipped, {escape(self.reason)}</div>"


# --- the deployment URL against the server behind it ---------------------------------------------


@dataclass
class ProxyComparison:
    """Throughput through the deployment URL over straight to the server, rounds interleaved."""

    concurrency: int
    n: int
    deployment_tok_s: list[float]
    direct_tok_s: list[float]
    budget: float = PROXY_BUDGET

    @property
    def ratio(self) -> float:
        """Median throughput through the deployment URL / median straight to the server."""
        direct = statistics.median(self.direct_tok_s)
        return statistics.median(self.deployment_tok_s) / direct if direct else 0.0

    @property
    def within_budget(self) -> bool:
        """The proxy costs at most 1 - budget (5%) of throughput."""
        return self.ratio >= self.budget

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data, ratio included."""
        return {**asdict(self), "ratio": round(self.ratio, 4), "within_budget": self.within_budget}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProxyComparison:
        """The inverse of to_dict."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def _repr_html_(self) -> str:
        colour = "#1a7f37" if self.within_budget else "#cf222e"
        verdict = "within" if self.within_budget else "over"
        return (
            f"<div><span style='background:{colour};color:white;padding:1px 6px;"
            f"border-radius:3px'>{self.ratio:.3f}x</span> throughput through the deployment URL "
            f"vs straight to the server ({verdict} the {1 - self.budget:.0%} budget); "
            f"concurrency {self.concurrency}, {len(self.direct_tok_s)} interleaved rounds; "
            f"tok/s direct {', '.join(f'{x:.1f}' for x in self.direct_tok_s)}, via deployment "
            f"{', '.join(f'{x:.1f}' for x in self.deployment_tok_s)}</div>"
        )


def compare_proxy(
    deployment: Target,
    direct: Target,
    workload: Workload,
    *,
    concurrency: int,
    rounds: int = 2,
    n: int = 1,
    progress: bool = True,
) -> tuple[ProxyComparison, list[RunResult]]:
    """Run the workload straight to the server and through the deployment URL, alternating."""
    dep, dirs, runs = [], [], []
    for r in range(max(1, rounds)):
        # Alternate who goes first, so that drift on a shared machine favours neither.
        order = (direct, deployment) if r % 2 == 0 else (deployment, direct)
        for t in order:
            run = run_server(t, workload, concurrency, n=n, warmup=r == 0, progress=progress)
            (dep if t is deployment else dirs).append(run.output_tokens_per_s)
            runs.append(run)
    return ProxyComparison(concurrency, n, dep, dirs), runs


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

    def _repr_html_(self) -> str:
        if not self.ok:
            return f"<div><b>vllm bench serve did not run</b>: {escape(self.reason)}</div>"
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
        body = "".join(
            f"<tr><td>{a}</td><td>{b}</td><td>{c}</td><td>{'' if d is None else f'{d:.2f}x'}</td></tr>"
            for a, b, c, d in rows
        )
        return (
            f"<div>vllm bench serve vs labkit.bench, concurrency {self.concurrency}, same "
            f"requests<table><tr><th></th><th>vllm bench serve</th><th>labkit.bench</th>"
            f"<th>theirs / ours</th></tr>{body}</table></div>"
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
    headers = target.headers()
    env = {**os.environ, **worker_env()}
    env.pop("OPENAI_API_KEY", None)
    args = [
        "--backend", "openai", "--base-url", target.base_url, "--endpoint", "/v1/completions",
        "--model", str(tokenizer), "--served-model-name", target.model,
        "--tokenizer", str(tokenizer),
        "--dataset-name", "sharegpt", "--dataset-path", str(data), "--disable-shuffle",
        "--num-prompts", str(len(workload)), "--max-concurrency", str(concurrency),
        "--ignore-eos", "--temperature", str(TEMPERATURE), "--top-p", "1.0",
        "--seed", str(workload.seed), "--disable-tqdm",
        "--percentile-metrics", "ttft,tpot,itl,e2el", "--metric-percentiles", "50,99",
        "--save-result", "--result-dir", str(out_dir), "--result-filename", result_file.name,
    ]  # fmt: skip
    extra = []
    for key, value in headers.items():
        if key.lower() == "authorization" and value.lower().startswith("bearer "):
            # vLLM's client sends OPENAI_API_KEY as the bearer token: the token stays out of argv.
            env["OPENAI_API_KEY"] = value.split(" ", 1)[1]
        else:
            extra.append(f"{key}={value}")
    if extra:
        args += ["--header", *extra]
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
    keep = (
        "completed", "failed", "duration", "total_input_tokens", "total_output_tokens",
        "request_throughput", "output_throughput", "total_token_throughput",
        "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_itl_ms", "median_itl_ms",
        "p99_itl_ms", "mean_tpot_ms", "median_tpot_ms", "median_e2el_ms", "p99_e2el_ms",
    )  # fmt: skip
    theirs = {k: raw[k] for k in keep if k in raw}
    return CrossCheck(
        concurrency, True, theirs=theirs, ours=ours.summary() if ours else {}, command=shown
    )


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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> BenchReport:
        """Read a results file written by save."""
        return cls.from_dict(json.loads(Path(path).read_text()))

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
            f"<div><b>{escape(self.model)}</b> on {escape(machine_line(self.machine))}, "
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
        rows = "".join(
            f"<tr><td>{r.n}</td><td>{escape(r.vllm)}</td><td>{escape(r.baseline)}</td>"
            f"<td><b>{'not measured' if r.ratio is None else f'{r.ratio:.1f}x'}</b></td>"
            f"<td>{r.post_low:g}x - {r.post_high:g}x</td><td>{escape(r.note)}</td></tr>"
            for r in self.ratios
        )
        return (
            f"<table><tr><th>completions per request</th><th>vLLM</th><th>baseline</th>"
            f"<th>here: {escape(self.model)}, {escape(machine_line(self.machine))}</th>"
            f"<th>launch post: LLaMA-7B on A10G, LLaMA-13B on A100</th><th></th></tr>{rows}"
            f"</table><small>Launch post: <a href='{LAUNCH_POST_URL}'>{LAUNCH_POST_URL}</a>; "
            "TGI is not measured here.</small>"
        )


@dataclass
class Plot:
    """A matplotlib figure that a notebook shows as a PNG (no pyplot, no backend needed)."""

    figure: Any

    def png(self) -> bytes:
        """The figure as PNG bytes."""
        import io

        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=110)
        return buf.getvalue()

    def _repr_png_(self) -> bytes:
        return self.png()

    def save(self, path: str | Path) -> Path:
        """Write the PNG file."""
        Path(path).write_bytes(self.png())
        return Path(path)


def _figure() -> tuple[Any, Any]:
    # A bare Figure, not pyplot: nothing global to close, no display needed, and a notebook shows
    # the returned figure once (pyplot's inline backend would show it a second time).
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.2), layout="constrained")
    return fig, fig.subplots()


_SHORT = {
    "vllm-offline": "vLLM offline",
    "vllm-server-deployment": "vLLM via deployment",
    "vllm-server-direct": "vLLM server direct",
    "hf-single": "HF one at a time",
    "hf-static": "HF static batch",
}


def _short(run: RunResult) -> str:
    name = _SHORT.get(run.engine, run.engine)
    return f"{name} {run.batch_size}" if run.engine == "hf-static" else name


def _median_run(runs: Sequence[RunResult]) -> RunResult:
    """Of repeated rounds, the run with the median throughput (the lower middle one)."""
    ordered = sorted(runs, key=lambda r: r.output_tokens_per_s)
    return ordered[(len(ordered) - 1) // 2]


def plot_throughput(
    runs: Sequence[RunResult], path: str | Path | None = None, title: str = ""
) -> Plot:
    """Output tokens/s by engine (the server at its best concurrency), n=1 and n=3 bars."""
    fig, ax = _figure()
    largest: dict[tuple[str, int], int] = {}
    for r in runs:
        key = (_short(r), r.n)
        largest[key] = max(largest.get(key, 0), r.num_requests)
    repeats: dict[tuple[str, int, int | None], list[RunResult]] = {}
    for r in runs:
        if r.num_requests == largest[(_short(r), r.n)]:  # the whole workload, not a subset
            repeats.setdefault((_short(r), r.n, r.concurrency), []).append(r)
    groups: dict[str, dict[int, float]] = {}
    for (name, n, _c), rs in repeats.items():
        best = groups.setdefault(name, {})
        best[n] = max(best.get(n, 0.0), _median_run(rs).output_tokens_per_s)
    names = list(groups)
    ns = sorted({n for g in groups.values() for n in g})
    width = 0.8 / max(1, len(ns))
    for j, n in enumerate(ns):
        xs = [i + (j - (len(ns) - 1) / 2) * width for i in range(len(names))]
        ys = [groups[k].get(n, math.nan) for k in names]  # NaN: not measured, no bar
        bars = ax.bar(xs, ys, width, label=f"n={n}")
        ax.bar_label(bars, labels=["" if math.isnan(y) else f"{y:.0f}" for y in ys], fontsize=8)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel("output tokens/s (server: best concurrency)")
    ax.set_title(title or "Throughput by engine", fontsize=9)
    ax.legend()
    plot = Plot(fig)
    if path:
        plot.save(path)
    return plot


def plot_latency(
    runs: Sequence[RunResult], path: str | Path | None = None, title: str = ""
) -> Plot:
    """TTFT and ITL p50/p99 (ms) against concurrency, for each server target measured at two
    or more concurrencies (n=1; the median round where rounds repeat)."""
    fig, ax = _figure()
    series: dict[str, dict[int, list[RunResult]]] = {}
    for r in runs:
        if r.concurrency and r.n == 1:
            series.setdefault(_short(r), {}).setdefault(r.concurrency, []).append(r)
    swept = {k: v for k, v in series.items() if len(v) > 1} or series
    colours = iter(f"C{i}" for i in range(10))
    for name, levels in swept.items():
        cs = sorted(levels)
        rs = [_median_run(levels[c]) for c in cs]
        for metric, marker, label in (("ttft_s", "o", "TTFT"), ("itl_s", "s", "ITL")):
            colour = next(colours)
            for q, style in ((50, "-"), (99, ":")):
                ys = [(r.metric(metric, q) or math.nan) * 1000 for r in rs]
                ax.plot(cs, ys, style, marker=marker, color=colour, label=f"{name}: {label} p{q}")
    ax.set_xscale("log", base=2)  # sweeps double the concurrency: equal steps on the axis
    levels_seen = sorted({c for levels in swept.values() for c in levels})
    ax.set_xticks(levels_seen, [str(c) for c in levels_seen])
    ax.tick_params(axis="x", which="minor", bottom=False, labelbottom=False)
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel("ms (log scale)")
    ax.set_yscale("log")
    ax.set_title(title or "Latency against concurrency", fontsize=9)
    if swept:
        ax.legend(fontsize=7)
    plot = Plot(fig)
    if path:
        plot.save(path)
    return plot


# --- the whole benchmark, as the notebook and the script run it ----------------------------------


class Bench:
    """One benchmark session: the workload, the engines (started on first use), the results."""

    def __init__(
        self,
        model_path: str | Path,
        workload: Workload,
        out_dir: str | Path,
        *,
        model_name: str | None = None,
        deployment: Target | None = None,
        direct: Target | None = None,
        dtype: str = "float32",
        hf_threads: int | None = None,
        progress: bool = True,
    ) -> None:
        self.model_path = Path(model_path)
        self.workload = workload
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.model_name = model_name or self.model_path.name
        self.deployment = deployment
        self.direct = direct
        self.dtype = dtype
        self.hf_threads = hf_threads or engine_threads()
        self.progress = progress
        self.runs: list[RunResult] = []
        self.proxy: ProxyComparison | None = None
        self.crosscheck: CrossCheck | None = None
        self.notes: list[str] = []
        self._workers: dict[str, Worker] = {}

    @classmethod
    def open(
        cls,
        model_path: str | Path,
        out_dir: str | Path,
        *,
        num_requests: int,
        seed: int = 0,
        max_output_tokens: int | None = None,
        max_prompt_tokens: int = MAX_PROMPT_TOKENS,
        **kwargs: Any,
    ) -> Bench:
        """Sample the workload with the model's tokenizer and set up a session."""
        workload = build_workload(
            model_path,
            num_requests,
            seed=seed,
            max_output_tokens=max_output_tokens,
            max_prompt_tokens=max_prompt_tokens,
        )
        return cls(model_path, workload, out_dir, **kwargs)

    def _keep(self, run: RunResult) -> RunResult:
        self.runs.append(run)
        return run

    def _worker(self, kind: str) -> Worker:
        if kind not in self._workers:
            args: dict[str, Any] = {"model": str(self.model_path), "seed": self.workload.seed}
            args["dtype"] = self.dtype
            if kind == "hf":
                args["threads"] = self.hf_threads
            self._workers[kind] = Worker(kind, args, log_path=self.out_dir / f"worker-{kind}.log")
        return self._workers[kind]

    def offline(self, n: int = 1, requests: int | None = None) -> RunResult:
        """vLLM offline batch over the workload (or its first ``requests``)."""
        wl = self.workload if requests is None else self.workload.head(requests)
        return self._keep(run_offline(self._worker("vllm"), wl, n=n, seed=self.workload.seed))

    def hf(self, mode: str = "single", n: int = 1, requests: int | None = None,
           batch_size: int = 8) -> RunResult:  # fmt: skip
        """HF generate over the first ``requests`` of the workload (all if None)."""
        wl = self.workload if requests is None else self.workload.head(requests)
        run = run_hf(self._worker("hf"), wl, mode=mode, n=n, batch_size=batch_size,
                     seed=self.workload.seed)  # fmt: skip
        return self._keep(run)

    def stop(self, kind: str | None = None) -> None:
        """Stop one worker ("vllm", "hf") or all, freeing their memory and cores."""
        for name in [kind] if kind else list(self._workers):
            worker = self._workers.pop(name, None)
            if worker:
                worker.close()

    def _target(self, via: str | None) -> Target:
        if via is None:  # the deployment URL when there is one, else the plain server
            via = "deployment" if self.deployment is not None else "direct"
        target = self.deployment if via == "deployment" else self.direct
        if target is None:
            raise StepError(
                f"no {via} target for the server runs",
                "give Bench a deployment (step 06's URL) or a direct server URL",
            )
        return target

    def server(self, concurrency: int, n: int = 1, via: str | None = None) -> RunResult:
        """The vLLM server over HTTP at one concurrency (via: deployment or direct)."""
        return self._keep(
            run_server(self._target(via), self.workload, concurrency, n=n, progress=self.progress)
        )

    def sweep(self, concurrencies: Iterable[int], n: int = 1, via: str | None = None) -> RunTable:
        """The server at each concurrency in turn."""
        return RunTable(self.server(c, n=n, via=via) for c in concurrencies)

    def compare_proxy(self, concurrency: int, rounds: int = 2) -> ProxyComparison | Skipped:
        """Deployment URL vs straight to the server, rounds interleaved (skipped, saying why,
        when one of the two cannot be reached from here)."""
        if self.deployment is None or self.direct is None or rounds < 1:
            why = (
                "no rounds asked for"
                if rounds < 1
                else "needs both the deployment URL and the server behind it"
            )
            self.notes.append(f"proxy comparison skipped: {why}")
            return Skipped("deployment URL vs straight to the server", why)
        self.proxy, runs = compare_proxy(
            self._target("deployment"), self._target("direct"), self.workload,
            concurrency=concurrency, rounds=rounds, progress=self.progress,
        )  # fmt: skip
        self.runs.extend(runs)
        return self.proxy

    def cross_check(self, concurrency: int, via: str | None = None) -> CrossCheck:
        """``vllm bench serve`` on the same workload, next to our run at that concurrency."""
        target = self._target(via)
        ours = [r for r in self.runs
                if r.engine == f"vllm-server-{target.name}" and r.concurrency == concurrency and r.n == 1]  # fmt: skip
        self.crosscheck = vllm_bench_serve(
            target, self.workload, concurrency=concurrency, tokenizer=self.model_path,
            out_dir=self.out_dir, ours=ours[-1] if ours else None,
        )  # fmt: skip
        return self.crosscheck

    def report(self) -> BenchReport:
        """Everything measured so far."""
        return BenchReport(
            model=self.model_name,
            machine=machine(),
            workload=self.workload.summary(),
            runs=list(self.runs),
            proxy=self.proxy,
            crosscheck=self.crosscheck,
            notes=list(self.notes),
        )

    def save(self) -> BenchReport:
        """Write results.json and the two plots into the output folder; return the report."""
        report = self.report()
        report.save(self.out_dir / "results.json")
        report.plot_throughput(self.out_dir / "throughput.png")
        report.plot_latency(self.out_dir / "latency.png")
        return report

    def record(self, state: State) -> dict[str, Any]:
        """Save results and plots, and record the summary in the lab state (key "benchmark")."""
        report = self.save()
        files = {
            "results_file": str(self.out_dir / "results.json"),
            "plots": [str(self.out_dir / "throughput.png"), str(self.out_dir / "latency.png")],
            "table_markdown": report.to_markdown(),
        }
        return state.record("benchmark", {**report.summary(), **files})

    def close(self) -> None:
        """Stop every worker."""
        self.stop()

    def __enter__(self) -> Bench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_ints(text: str, what: str = "concurrencies") -> list[int]:
    """ "1,4,8" -> [1, 4, 8]; each at least 1."""
    try:
        values = [int(part) for part in str(text).replace(" ", "").split(",") if part]
    except ValueError:
        raise ConfigError(f"{what} {text!r}", "write whole numbers separated by commas") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{what} {text!r}", "give at least one number, each 1 or more")
    return values


def open_bench(
    cfg: Config,
    state: State,
    *,
    num_requests: int,
    seed: int = 0,
    max_output_tokens: int | None = None,
    max_prompt_tokens: int = MAX_PROMPT_TOKENS,
    base_url: str = "",
    direct_url: str = "",
    model_dir: str = "",
    dtype: str = "float32",
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> Bench:
    """The notebook's session: the deployment of step 06 (or ``base_url``), the server behind it
    (``direct_url``, or the local AI Core's predictor), the model folder of step 02 (or
    ``model_dir``, or the local default model), and the seeded workload."""
    notes: list[str] = []
    if base_url:
        deployment = None
        direct: Target | None = server_target(base_url)
        notes.append(f"server at {base_url}, no deployment URL: the proxy comparison is skipped")
    else:
        deployment = deployment_target(cfg, state)
        deploy = state.require("deploy")
        url = direct_url or local_predictor_url(cfg, str(deploy.get("deployment_id", "")))
        direct = server_target(url, deployment.model) if url else None
        if direct is None:
            notes.append(
                "the server behind the deployment URL is not reachable from here (a tenant's "
                "cluster): the proxy comparison is skipped"
            )
    folder = model_dir
    if not folder:
        download = state.get("download") or {}
        folder = download.get("snapshot_dir") or str(cfg.model_source)
    if not (Path(folder) / "config.json").is_file():
        raise StepError(
            f"no model folder at {folder}",
            "run notebooks/02_download_model.ipynb, or set MODEL_DIR to a model folder",
        )
    model_name = deployment.model if deployment else (direct.model if direct else Path(folder).name)
    bench = Bench.open(
        folder,
        out_dir or cfg.lab_dir / "benchmark",
        num_requests=num_requests,
        seed=seed,
        max_output_tokens=max_output_tokens,
        max_prompt_tokens=max_prompt_tokens,
        model_name=model_name,
        deployment=deployment,
        direct=direct,
        dtype=dtype,
        progress=progress,
    )
    bench.notes.extend(notes)
    return bench


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "worker":
        sys.exit(_worker_main(sys.argv[2:]))
    print("internal: python -m labkit.bench worker vllm|hf ARGS_JSON", file=sys.stderr)
    sys.exit(2)
