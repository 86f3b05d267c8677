"""The vLLM server over HTTP: targets (deployment URL or the server itself), streamed runs at a
given concurrency that give TTFT and ITL, and a vLLM server of our own for tests and the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from labkit.bench.metrics import RequestRecord, RunResult, gaps
from labkit.bench.workload import MAX_TOTAL_TOKENS, MIN_TOKENS, TEMPERATURE, Request, Workload
from labkit.config import Config
from labkit.engine import start_engine, stop_engine, worker_env
from labkit.errors import ConfigError, ServiceError
from labkit.state import State
from labkit.util.net import free_port

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
SERVER_START_TIMEOUT = 600.0
REQUEST_TIMEOUT = 900.0

T = TypeVar("T")


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
                    # vLLM sends a chunk a token (an empty text is a token that has not
                    # finished a character yet), or several tokens in one chunk when this
                    # client reads later than they come (V1's output collector merges them):
                    # the gaps are between chunks, as `vllm bench serve` times them.
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


# --- a vLLM server of our own (tests, and the CLI benchmark without a deployment) ----------------


class VllmServer:
    """``python -m vllm.entrypoints.openai.api_server`` on a model folder, on loopback; eager
    unless ``eager=False`` (CUDA graphs on a GPU; on a CPU they give garbage in vLLM 0.32)."""

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
        eager: bool = True,
    ) -> None:
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.served_name = served_name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(model_path), "--served-model-name", served_name,
            "--host", "127.0.0.1", "--port", str(self.port),
            *(["--enforce-eager"] if eager else []), "--max-model-len", str(max_model_len),
            "--disable-uvicorn-access-log", *extra_args,
        ]  # fmt: skip
        self.proc = start_engine(cmd, log=log_path, env={**os.environ, **worker_env()})
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
        stop_engine(self.proc)

    def __enter__(self) -> VllmServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
