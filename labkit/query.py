"""Step 07: ask the served model, the three ways the source document names, and read its metrics.

- the OpenAI-compatible API through the deployment URL (chat, completions, streaming), with the
  bearer token refreshed as it expires and the ``AI-Resource-Group`` header; the same client
  works against a plain vLLM server (no token);
- the legacy demo server's ``POST /generate`` (``{"prompt", "use_beam_search", "n", ...}`` ->
  ``{"text": [...]}``), which the lab's runtime keeps as a route of the same server;
- offline batch inference with ``vllm.LLM`` on the downloaded snapshot, in a child process so
  the caller stays light and the engine's memory is freed when it ends.

Plus the equivalent ``curl`` command (token never shown) and the server's ``/metrics`` read into
a short table.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from labkit.config import Config
from labkit.errors import ServiceError
from labkit.state import State

STATE_KEY = "query"
SAMPLE_PROMPTS = (
    "What is the capital of France?",
    "Name three primary colours.",
    "Write a haiku about a GPU.",
    "Explain in one sentence what a KV cache is.",
)
TOKEN_PLACEHOLDER = "$TOKEN"
DEFAULT_TIMEOUT_S = 120.0
OFFLINE_TIMEOUT_S = 900.0
# Ask the token provider again this long before the token's own expiry.
REFRESH_MARGIN_S = 60.0
_LOOPBACK = ("localhost", "127.0.0.1", "::1")
_BEARER = re.compile(r"^\s*bearer\s+", re.I)
_SAMPLE = re.compile(
    r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?$"
)
_LABEL = re.compile(r'([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"')


class QueryError(ServiceError):
    """The server cannot be reached, refused the request, or answered something unusable."""


# --- auth ----------------------------------------------------------------------------------------


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (epoch seconds) of a JWT, or None for an opaque token."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        return float(payload["exp"])
    except (ValueError, KeyError, TypeError):
        return None


class TokenAuth(httpx.Auth):
    """Bearer auth that asks a token provider per request and keeps a JWT until near its expiry.

    The provider returns a token, with or without the ``Bearer `` prefix (SAP's SDK and
    ``labkit.aicore`` return it with). A JWT is reused until ``margin`` seconds before its
    ``exp``; an opaque token is asked for on every request (such providers cache it
    themselves). A 401 answer makes one retry with a freshly asked token.
    """

    def __init__(
        self,
        provider: Callable[[], str],
        *,
        margin: float = REFRESH_MARGIN_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._provider = provider
        self._margin = margin
        self._clock = clock
        self._token: str | None = None
        self._expires: float | None = None
        self._lock = threading.Lock()
        self.calls = 0  # how often the provider was asked

    def __repr__(self) -> str:
        return f"TokenAuth(calls={self.calls}, token='********')"

    def token(self, *, refresh: bool = False) -> str:
        """The current token (no prefix), asking the provider when it is missing or near expiry."""
        with self._lock:
            stale = (
                self._token is None
                or self._expires is None
                or self._clock() >= self._expires - self._margin
            )
            if refresh or stale:
                raw = self._provider()
                self.calls += 1
                token = _BEARER.sub("", str(raw)).strip()
                if not token:
                    raise QueryError(
                        "the token provider returned an empty token", "check the service key"
                    )
                self._token, self._expires = token, jwt_expiry(token)
            assert self._token is not None
            return self._token

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        """Set the bearer header; on a 401, ask for a new token once and resend."""
        request.headers["Authorization"] = f"Bearer {self.token()}"
        response = yield request
        if response.status_code == 401:
            request.headers["Authorization"] = f"Bearer {self.token(refresh=True)}"
            yield request


# --- results -------------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table with escaped cells."""
    head = "".join(f"<th style='text-align:left'>{escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(f"<td style='text-align:left'>{escape(str(c))}</td>" for c in row)
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt_s(seconds: float | None) -> str:
    """Seconds for a table: '' when unknown, ms below one second."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return ""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


@dataclass
class Answer:
    """One answer of the model: its text(s), timing and token counts."""

    kind: str  # chat | completion
    prompt: str
    text: str
    model: str
    seconds: float
    ttft_s: float | None = None  # time to the first token, when streamed
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None
    choices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the lab state."""
        return asdict(self)

    def _repr_html_(self) -> str:
        rows = [
            ("prompt", self.prompt),
            *(
                (f"answer {i + 1}" if len(self.choices) > 1 else "answer", text)
                for i, text in enumerate(self.choices or [self.text])
            ),
            ("model", self.model),
            ("latency", _fmt_s(self.seconds)),
            ("time to first token", _fmt_s(self.ttft_s)),
            ("tokens (prompt / completion)", f"{self.prompt_tokens} / {self.completion_tokens}"),
            ("finish reason", self.finish_reason or ""),
        ]
        return _table(["", self.kind], [r for r in rows if r[1] not in ("", None)])


@dataclass
class Answers:
    """Several answers asked together, with the wall time of the whole batch."""

    answers: list[Answer]
    seconds: float
    concurrency: int

    @property
    def completion_tokens(self) -> int:
        """Tokens generated over all answers."""
        return sum(a.completion_tokens or 0 for a in self.answers)

    @property
    def tokens_per_s(self) -> float:
        """Output tokens per second of wall time."""
        return self.completion_tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the lab state."""
        return {
            "answers": [a.to_dict() for a in self.answers],
            "seconds": self.seconds,
            "concurrency": self.concurrency,
            "completion_tokens": self.completion_tokens,
            "tokens_per_s": self.tokens_per_s,
        }

    def _repr_html_(self) -> str:
        rows = [(a.prompt, a.text, _fmt_s(a.seconds), a.completion_tokens) for a in self.answers]
        summary = (
            f"<p>{len(self.answers)} prompts, {self.concurrency} at a time: "
            f"{_fmt_s(self.seconds)} in all, {self.tokens_per_s:.1f} output tokens/s</p>"
        )
        return summary + _table(["prompt", "answer", "latency", "tokens"], rows)


@dataclass
class Generated:
    """The answer of the legacy ``/generate`` route: the prompt followed by each completion."""

    prompt: str
    texts: list[str]
    seconds: float
    use_beam_search: bool
    n: int

    @property
    def completions(self) -> list[str]:
        """The texts without the prompt in front."""
        return [t.removeprefix(self.prompt) for t in self.texts]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the lab state."""
        return asdict(self)

    def _repr_html_(self) -> str:
        mode = "beam search" if self.use_beam_search else "sampling"
        head = f"<p>/generate, {mode}, n={self.n}: {_fmt_s(self.seconds)}</p>"
        rows = [(i + 1, self.prompt, c) for i, c in enumerate(self.completions)]
        return head + _table(["#", "prompt", "completion"], rows)


@dataclass
class CurlCommand:
    """A ``curl`` command equivalent to a request; the token shows only as ``$TOKEN``."""

    text: str
    needs_token: bool

    def __str__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        fetch = (
            'export TOKEN=$(curl -s -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials '
            '"$AUTH_URL/oauth/token" | jq -r .access_token)'
        )
        note = (
            "<p>Set <code>TOKEN</code> first (it is never shown here), e.g. from the service "
            f"key's clientid, clientsecret and url: <code>{escape(fetch)}</code></p>"
            if self.needs_token
            else ""
        )
        return f"<pre>{escape(self.text)}</pre>{note}"


@dataclass
class Sample:
    """One line of Prometheus text: a metric name, its labels and the value."""

    name: str
    labels: dict[str, str]
    value: float


@dataclass
class Histogram:
    """A Prometheus histogram summed over its label sets: count, sum and cumulative buckets."""

    name: str
    count: float
    total: float
    buckets: list[tuple[float, float]]  # (upper bound, cumulative count), ascending

    @property
    def mean(self) -> float:
        """Average observation, or NaN with none."""
        return self.total / self.count if self.count else float("nan")

    def quantile(self, q: float) -> float:
        """Estimate a quantile the way Prometheus' histogram_quantile does (linear in a bucket)."""
        if not self.count or not self.buckets:
            return float("nan")
        rank = q * self.count
        lower, below = 0.0, 0.0
        for upper, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(upper):
                    return lower  # the highest finite bound is the best estimate
                inside = cumulative - below
                return lower + (upper - lower) * ((rank - below) / inside if inside else 1.0)
            lower, below = upper, cumulative
        return lower


def _unescape(value: str) -> str:
    return value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def parse_prometheus(text: str) -> list[Sample]:
    """Samples of a Prometheus text exposition (comments and malformed lines skipped)."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            continue
        labels = {k: _unescape(v) for k, v in _LABEL.findall(match["labels"] or "")}
        samples.append(Sample(match["name"], labels, value))
    return samples


# The summary rows: label, kind, metric (vLLM 0.32's names).
_COUNTERS = (
    ("requests finished", "vllm:request_success_total"),
    ("requests running", "vllm:num_requests_running"),
    ("requests waiting", "vllm:num_requests_waiting"),
    ("prompt tokens", "vllm:prompt_tokens_total"),
    ("generated tokens", "vllm:generation_tokens_total"),
    ("preemptions", "vllm:num_preemptions_total"),
)
_HISTOGRAMS = (
    ("time to first token", "vllm:time_to_first_token_seconds"),
    ("inter-token latency", "vllm:inter_token_latency_seconds"),
    ("end-to-end latency", "vllm:e2e_request_latency_seconds"),
)


@dataclass
class Metrics:
    """A server's ``/metrics``, with the few figures worth a look summarised."""

    samples: list[Sample]
    url: str = ""

    @classmethod
    def parse(cls, text: str, url: str = "") -> Metrics:
        """Read Prometheus text."""
        return cls(parse_prometheus(text), url)

    def total(self, name: str, **labels: str) -> float | None:
        """The sum of a metric over its label sets (those matching ``labels``), or None if absent."""
        values = [
            s.value
            for s in self.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        ]
        return sum(values) if values else None

    def histogram(self, name: str) -> Histogram | None:
        """A histogram summed over its label sets (engines, models), or None if absent."""
        count = self.total(f"{name}_count")
        if count is None:
            return None
        by_bound: dict[float, float] = {}
        for s in self.samples:
            if s.name == f"{name}_bucket" and "le" in s.labels:
                bound = float(s.labels["le"])
                by_bound[bound] = by_bound.get(bound, 0.0) + s.value
        return Histogram(name, count, self.total(f"{name}_sum") or 0.0, sorted(by_bound.items()))

    def summary(self) -> dict[str, Any]:
        """Requests, tokens and latency figures (NaN-free: missing ones are None)."""
        out: dict[str, Any] = {}
        for label, name in _COUNTERS:
            value = self.total(name)
            out[label] = None if value is None else int(value)
        usage = self.total("vllm:kv_cache_usage_perc")
        out["KV cache usage"] = None if usage is None else round(usage * 100, 1)
        for label, name in _HISTOGRAMS:
            hist = self.histogram(name)
            if hist is None or not hist.count:
                out[label] = None
                continue
            out[label] = {
                "count": int(hist.count),
                "mean_s": hist.mean,
                "p50_s": hist.quantile(0.5),
                "p90_s": hist.quantile(0.9),
                "p99_s": hist.quantile(0.99),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        """The summary, for the lab state."""
        return {"url": self.url, **self.summary()}

    def _repr_html_(self) -> str:
        summary = self.summary()
        rows: list[tuple[str, str]] = []
        for label, _ in _COUNTERS:
            rows.append((label, "" if summary[label] is None else f"{summary[label]:,}"))
        usage = summary["KV cache usage"]
        rows.append(("KV cache usage", "" if usage is None else f"{usage} %"))
        for label, _ in _HISTOGRAMS:
            h = summary[label]
            text = (
                "no observations yet"
                if h is None
                else f"{h['count']} observations; mean {_fmt_s(h['mean_s'])}, "
                f"p50 {_fmt_s(h['p50_s'])}, p90 {_fmt_s(h['p90_s'])}, p99 {_fmt_s(h['p99_s'])}"
            )
            rows.append((label, text))
        head = f"<p>{escape(self.url)}</p>" if self.url else ""
        return head + _table(["metric", "value"], rows)


@dataclass
class OfflineBatch:
    """Offline batch inference with ``vllm.LLM``: answers and throughput."""

    model: str
    prompts: list[str]
    texts: list[str]
    load_s: float
    seconds: float
    prompt_tokens: int
    output_tokens: int
    log: str = ""

    @property
    def tokens_per_s(self) -> float:
        """Output tokens per second of generation (model loading excluded)."""
        return self.output_tokens / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the lab state."""
        return {**asdict(self), "tokens_per_s": self.tokens_per_s}

    def _repr_html_(self) -> str:
        head = (
            f"<p>vllm.LLM on {escape(self.model)}: loaded in {_fmt_s(self.load_s)}, "
            f"{len(self.prompts)} prompts in {_fmt_s(self.seconds)}, "
            f"{self.output_tokens} output tokens, {self.tokens_per_s:.1f} tokens/s</p>"
        )
        return head + _table(["prompt", "answer"], list(zip(self.prompts, self.texts, strict=True)))


# --- the client ----------------------------------------------------------------------------------


def _answer(kind: str, prompt: str, reply: Any, started: float) -> Answer:
    """An Answer from an OpenAI chat or text completion (``started``: perf_counter at the ask)."""
    seconds = time.perf_counter() - started
    choices = sorted(reply.choices, key=lambda c: c.index)
    texts = [(c.message.content or "") if kind == "chat" else c.text for c in choices]
    return Answer(
        kind=kind,
        prompt=prompt,
        text=texts[0] if texts else "",
        model=reply.model,
        seconds=seconds,
        prompt_tokens=getattr(reply.usage, "prompt_tokens", None),
        completion_tokens=getattr(reply.usage, "completion_tokens", None),
        finish_reason=choices[0].finish_reason if choices else None,
        choices=texts,
    )


def _check_url(url: str) -> str:
    """The URL without a trailing slash; a QueryError unless it is http(s) with a host."""
    # A base URL copied from OpenAI examples ends in /v1, which the client adds itself.
    url = (url or "").strip().rstrip("/").removesuffix("/v1")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise QueryError(
            f"{url or 'an empty string'!r} is not an http(s) URL",
            "pass the deployment URL (step 06 records it) or a server's base URL",
        )
    return url


class ChatStream:
    """A streamed chat answer: iterate for the text as it comes; ``.answer`` once it is done."""

    def __init__(self, client: Client, prompt: str, chunks: Any, started: float) -> None:
        self._client = client
        self._prompt = prompt
        self._chunks = chunks
        self._started = started
        self.answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        parts: list[str] = []
        ttft = None
        usage = None
        finish = None
        model = self._client.model
        with self._client._errors("chat (streamed)"):
            for chunk in self._chunks:
                model = chunk.model or model
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    finish = choice.finish_reason or finish
                    delta = choice.delta.content or ""
                    if delta:
                        if ttft is None:
                            ttft = time.perf_counter() - self._started
                        parts.append(delta)
                        yield delta
        text = "".join(parts)
        self.answer = Answer(
            kind="chat",
            prompt=self._prompt,
            text=text,
            model=model,
            seconds=time.perf_counter() - self._started,
            ttft_s=ttft,
            prompt_tokens=getattr(usage, "prompt_tokens", None),
            completion_tokens=getattr(usage, "completion_tokens", None),
            finish_reason=finish,
            choices=[text],
        )

    def text(self) -> str:
        """Read the whole stream and return the text."""
        return "".join(self)


class Client:
    """The OpenAI API, ``/generate`` and ``/metrics`` of one server or deployment URL.

    ``base_url`` is the deployment URL (AI Core's ``.../v2/inference/deployments/<id>``) or a
    server's root (``http://127.0.0.1:8000``); the OpenAI API is under ``base_url + "/v1"``.
    ``token`` returns a bearer token per request (None: no auth); ``headers`` go on every
    request (``AI-Resource-Group``).
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: Callable[[], str] | None = None,
        headers: Mapping[str, str] | None = None,
        model: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = 2,
        clock: Callable[[], float] = time.time,
    ) -> None:
        import openai

        self.base_url = _check_url(base_url)
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.auth = TokenAuth(token, clock=clock) if token is not None else None
        self._model = model
        # Loopback (a local server, the local AI Core) never goes through an HTTP(S)_PROXY;
        # a tenant's URL does, as a corporate network may need.
        trust_env = urlsplit(self.base_url).hostname not in _LOOPBACK
        self.http = httpx.Client(
            base_url=self.base_url,
            headers=self.headers,
            auth=self.auth,
            timeout=timeout,
            trust_env=trust_env,
        )
        # openai asks this callable for the key on every request, so both clients share the
        # token cache; "EMPTY" is what vLLM's docs use when the server checks no key.
        self.openai = openai.OpenAI(
            base_url=f"{self.base_url}/v1",
            api_key=self.auth.token if self.auth is not None else "EMPTY",
            default_headers=self.headers,
            timeout=timeout,
            max_retries=max_retries,
            http_client=openai.DefaultHttpxClient(trust_env=trust_env),
        )

    def __repr__(self) -> str:
        auth = "bearer token" if self.auth is not None else "none"
        return f"Client(base_url={self.base_url!r}, headers={self.headers!r}, auth={auth!r})"

    def _repr_html_(self) -> str:
        rows = [
            ("base URL", self.base_url),
            ("OpenAI API", f"{self.base_url}/v1"),
            ("headers", ", ".join(f"{k}: {v}" for k, v in self.headers.items()) or "none"),
            ("auth", "bearer token, refreshed as it expires" if self.auth else "none"),
            ("model", self._model or "(first of /v1/models)"),
        ]
        return _table(["", "client"], rows)

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()
        self.openai.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # errors ---------------------------------------------------------------------------------

    def _errors(self, what: str) -> _Translate:
        """A context manager turning client exceptions into one-line QueryErrors."""
        return _Translate(self, what)

    def _http(self, method: str, path: str, what: str, **kwargs: Any) -> httpx.Response:
        """One raw HTTP request with errors translated; 4xx/5xx raise a QueryError."""
        with self._errors(what):
            response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise _status_error(self, what, response.status_code, _error_message(response))
        return response

    def _api(self, what: str, call: Callable[[], Any]) -> Any:
        """One OpenAI-client call with errors translated; a 401 retries once with a new token."""
        import openai

        with self._errors(what):
            try:
                return call()
            except openai.AuthenticationError:
                if self.auth is None:
                    raise
                self.auth.token(refresh=True)  # the cached one may have been revoked early
                return call()

    # the OpenAI API -------------------------------------------------------------------------

    def models(self) -> list[str]:
        """The model names the server serves (``/v1/models``)."""
        return [m.id for m in self._api("list models", lambda: self.openai.models.list().data)]

    @property
    def model(self) -> str:
        """The model to ask: the one given, else the first the server lists."""
        if self._model is None:
            names = self.models()
            if not names:
                raise QueryError(f"{self.base_url} serves no model", "check the server's log")
            self._model = names[0]
        return self._model

    def _messages(self, prompt: str | Sequence[Mapping[str, str]], system: str | None) -> list:
        if isinstance(prompt, str):
            messages = [{"role": "user", "content": prompt}]
        else:
            messages = [dict(m) for m in prompt]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        return messages

    def chat(
        self,
        prompt: str | Sequence[Mapping[str, str]],
        *,
        max_tokens: int = 128,
        temperature: float = 0.0,
        n: int = 1,
        system: str | None = None,
        **extra: Any,
    ) -> Answer:
        """One chat completion (``/v1/chat/completions``)."""
        messages = self._messages(prompt, system)
        started = time.perf_counter()
        model = self.model
        reply = self._api(
            "chat",
            lambda: self.openai.chat.completions.create(
                model=model,
                messages=messages,
                max_tokens=max_tokens,
                temperature=temperature,
                n=n,
                **extra,
            ),
        )
        return _answer("chat", messages[-1]["content"], reply, started)

    def stream_chat(
        self,
        prompt: str | Sequence[Mapping[str, str]],
        *,
        max_tokens: int = 128,
        temperature: float = 0.0,
        system: str | None = None,
        **extra: Any,
    ) -> ChatStream:
        """A streamed chat completion: iterate it for the text as it arrives."""
        messages = self._messages(prompt, system)
        started = time.perf_counter()
        model = self.model
        chunks = self._api(
            "chat (streamed)",
            lambda: self.openai.chat.completions.create(
                model=model,
                messages=messages,
                max_tokens=max_tokens,
                temperature=temperature,
                stream=True,
                stream_options={"include_usage": True},
                **extra,
            ),
        )
        return ChatStream(self, messages[-1]["content"], chunks, started)

    def complete(
        self,
        prompt: str,
        *,
        max_tokens: int = 64,
        temperature: float = 0.0,
        n: int = 1,
        **extra: Any,
    ) -> Answer:
        """One text completion (``/v1/completions``): the model continues ``prompt``."""
        started = time.perf_counter()
        model = self.model
        reply = self._api(
            "completion",
            lambda: self.openai.completions.create(
                model=model,
                prompt=prompt,
                max_tokens=max_tokens,
                temperature=temperature,
                n=n,
                **extra,
            ),
        )
        return _answer("completion", prompt, reply, started)

    def stream_complete(
        self, prompt: str, *, max_tokens: int = 64, temperature: float = 0.0, **extra: Any
    ) -> Iterator[str]:
        """A streamed text completion: the continuation of ``prompt`` piece by piece."""
        model = self.model
        chunks = self._api(
            "completion (streamed)",
            lambda: self.openai.completions.create(
                model=model,
                prompt=prompt,
                max_tokens=max_tokens,
                temperature=temperature,
                stream=True,
                **extra,
            ),
        )
        with self._errors("completion (streamed)"):
            for chunk in chunks:
                for choice in chunk.choices:
                    if choice.text:
                        yield choice.text

    def batch(
        self,
        prompts: Sequence[str] = SAMPLE_PROMPTS,
        *,
        max_tokens: int = 64,
        temperature: float = 0.0,
        concurrency: int = 4,
    ) -> Answers:
        """Chat answers to several prompts, ``concurrency`` requests in flight at a time."""
        if not prompts:
            return Answers([], 0.0, concurrency)
        self.model  # noqa: B018 - resolve once, before the threads
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            answers = list(
                pool.map(
                    lambda p: self.chat(p, max_tokens=max_tokens, temperature=temperature), prompts
                )
            )
        return Answers(answers, time.perf_counter() - started, concurrency)

    # the legacy demo server's route ---------------------------------------------------------

    def generate_body(
        self,
        prompt: str,
        *,
        n: int = 1,
        use_beam_search: bool = False,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """The JSON body of a ``/generate`` request, as the source document writes it."""
        body: dict[str, Any] = {"prompt": prompt}
        if use_beam_search:
            body["use_beam_search"] = True
        body.update(n=n, temperature=temperature)
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        body.update(fields)
        return body

    def generate(
        self,
        prompt: str,
        *,
        n: int = 1,
        use_beam_search: bool = False,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        **fields: Any,
    ) -> Generated:
        """POST /generate: ``{"prompt", "n", "use_beam_search", ...}`` -> each completion."""
        body = self.generate_body(
            prompt,
            n=n,
            use_beam_search=use_beam_search,
            temperature=temperature,
            max_tokens=max_tokens,
            **fields,
        )
        started = time.perf_counter()
        response = self._http("POST", "/generate", "/generate", json=body)
        texts = _texts(response, "/generate")
        return Generated(prompt, texts, time.perf_counter() - started, use_beam_search, n)

    def stream_generate(self, prompt: str, **kwargs: Any) -> Iterator[list[str]]:
        """POST /generate with ``"stream": true``: each step's texts (prompt + completion so far)."""
        body = {**self.generate_body(prompt, **kwargs), "stream": True}
        with (
            self._errors("/generate (streamed)"),
            self.http.stream("POST", "/generate", json=body) as response,
        ):
            if response.status_code >= 400:
                response.read()
                raise _status_error(
                    self, "/generate", response.status_code, _error_message(response)
                )
            for line in response.iter_lines():
                if not line.strip():
                    continue
                data = json.loads(line)
                if "error" in data:
                    raise QueryError(
                        f"/generate failed: {_message_of(data)}", "see the server's log"
                    )
                yield list(data["text"])

    # around the API -------------------------------------------------------------------------

    def health(self) -> bool:
        """Whether ``/health`` answers 200."""
        try:
            return self.http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def metrics(self) -> Metrics:
        """The server's ``/metrics`` (Prometheus text), parsed."""
        response = self._http("GET", "/metrics", "/metrics")
        return Metrics.parse(response.text, f"{self.base_url}/metrics")

    def curl(
        self, path: str = "/v1/chat/completions", body: Mapping[str, Any] | None = None
    ) -> CurlCommand:
        """The equivalent ``curl`` command of a POST (GET without ``body``); token as ``$TOKEN``."""
        lines = [f"curl -sS {shlex.quote(self.base_url + '/' + path.lstrip('/'))}"]
        if self.auth is not None:
            lines.append(f'-H "Authorization: Bearer {TOKEN_PLACEHOLDER}"')
        lines += [f"-H {shlex.quote(f'{k}: {v}')}" for k, v in self.headers.items()]
        if body is not None:
            lines.append("-H 'Content-Type: application/json'")
            lines.append(f"-d {shlex.quote(json.dumps(body))}")
        return CurlCommand(" \\\n  ".join(lines), self.auth is not None)

    def chat_body(self, prompt: str, *, max_tokens: int = 128, temperature: float = 0.0) -> dict:
        """The JSON body ``chat`` sends for ``prompt``."""
        return {
            "model": self.model,
            "messages": self._messages(prompt, None),
            "max_tokens": max_tokens,
            "temperature": temperature,
        }


class _Translate:
    """Turns openai / httpx exceptions raised inside it into one-line QueryErrors."""

    def __init__(self, client: Client, what: str) -> None:
        self.client = client
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, exc: BaseException | None, tb: Any) -> bool:
        import openai

        if exc is None or isinstance(exc, QueryError | GeneratorExit):
            return False
        url = self.client.base_url
        if isinstance(exc, openai.APITimeoutError | httpx.TimeoutException):
            raise QueryError(
                f"{self.what}: {url} did not answer within {self.client.timeout:.0f} s",
                "the server may be busy or still starting; try again, or raise the timeout",
            ) from None
        if isinstance(exc, openai.APIConnectionError | httpx.TransportError):
            cause = exc.__cause__ or exc
            raise QueryError(
                f"{self.what}: cannot reach {url} ({_reason(cause)})",
                "check the URL (state key 'deploy' or BASE_URL) and that the server is running",
            ) from None
        if isinstance(exc, openai.APIStatusError):
            raise _status_error(
                self.client, self.what, exc.status_code, _message_of(exc.body) or exc.message
            ) from None
        if isinstance(exc, httpx.HTTPError | ValueError) and not isinstance(exc, LookupError):
            raise QueryError(
                f"{self.what}: unusable answer from {url} ({type(exc).__name__}: {exc})",
                "check that the URL points at a vLLM server or deployment",
            ) from None
        return False


def _reason(exc: BaseException) -> str:
    """A short cause of a connection failure."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


def _message_of(body: Any) -> str:
    """The message inside an error body: vLLM's {"error": {"message"}}, or a detail."""
    if isinstance(body, Mapping):
        error = body.get("error", body)
        if isinstance(error, Mapping):
            return str(error.get("message") or error.get("detail") or json.dumps(error))
        return str(error)
    return "" if body is None else str(body)


def _error_message(response: httpx.Response) -> str:
    """The error message of an HTTP answer, from JSON when it is JSON."""
    try:
        return _message_of(response.json())
    except ValueError:
        return response.text.strip()[:300]


def _status_error(client: Client, what: str, status: int, message: str) -> QueryError:
    """The QueryError for an HTTP error status."""
    message = " ".join(str(message).split())[:300]
    url = client.base_url
    if status in (401, 403):
        return QueryError(
            f"{what}: {url} refused the credentials ({status} {message})",
            "check the service key and the AI-Resource-Group header (the deployment's resource group)"
            if client.auth is not None
            else "this server needs a token: pass token=... (or use the deployment from step 06)",
        )
    if status == 404:
        return QueryError(
            f"{what}: {url} answered 404 ({message})",
            "check the URL and the model name; /generate needs the lab's runtime image",
        )
    if 400 <= status < 500:
        return QueryError(f"{what}: the server refused the request ({status}: {message})",
                          "change the request's parameters")  # fmt: skip
    return QueryError(
        f"{what}: {url} answered {status} ({message})",
        "the deployment may be starting or failing; see its logs (`labkit deploy logs`)",
    )


def _texts(response: httpx.Response, what: str) -> list[str]:
    """The ``text`` list of a /generate answer."""
    try:
        texts = response.json()["text"]
    except (ValueError, KeyError, TypeError):
        raise QueryError(
            f"{what}: the answer has no 'text' list ({response.text[:120]!r})",
            "the server is not the lab's runtime; use /v1/completions instead",
        ) from None
    return [str(t) for t in texts]


# --- connecting to the lab's deployment -----------------------------------------------------------


def connect(
    cfg: Config,
    state: State | None = None,
    *,
    base_url: str = "",
    model: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Client:
    """A client for the lab's deployment (state key "deploy", AI Core token and resource group),
    or, with ``base_url``, for a plain server that checks no token."""
    if base_url:
        return Client(base_url, model=model, timeout=timeout)
    deploy = (state or State(cfg.state_file)).require("deploy")
    url = deploy.get("deployment_url") or ""
    if not url:
        raise QueryError(
            f"deployment {deploy.get('deployment_id', '')} has no URL yet",
            "wait until it is RUNNING (notebooks/06_deploy.ipynb), or set BASE_URL",
        )
    from labkit import aicore

    ai = aicore.connect(cfg)
    served = model or deploy.get("served_model_name") or deploy.get("model") or None
    return Client(
        url,
        token=ai.token,
        headers={"AI-Resource-Group": ai.resource_group},
        model=served,
        timeout=timeout,
    )


# --- offline batch inference ---------------------------------------------------------------------


def offline_batch(
    model_dir: str | Path,
    prompts: Sequence[str] = SAMPLE_PROMPTS,
    *,
    max_tokens: int = 64,
    temperature: float = 0.0,
    chat: bool = True,
    max_model_len: int = 2048,
    enforce_eager: bool = True,
    kv_cache_gib: float = 1.0,
    timeout: float = OFFLINE_TIMEOUT_S,
    log: Path | None = None,
) -> OfflineBatch:
    """Answer ``prompts`` with ``vllm.LLM`` on a local model folder, in a child process.

    The child loads the engine, generates, writes the result and exits, so its memory is freed
    and the notebook kernel never imports vLLM. On CPU the KV cache is ``kv_cache_gib`` GiB
    (VLLM_CPU_KVCACHE_SPACE) and the model runs eager (compiled CPU runs give wrong answers here).
    """
    folder = Path(model_dir)
    if not (folder / "config.json").is_file():
        raise QueryError(
            f"{folder} is not a model folder (no config.json)",
            "pass the snapshot_dir the download step recorded (state key 'download')",
        )
    job = {
        "model": str(folder),
        "prompts": list(prompts),
        "max_tokens": max_tokens,
        "temperature": temperature,
        "chat": chat,
        "max_model_len": max_model_len,
        "enforce_eager": enforce_eager,
    }
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
    }
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{kv_cache_gib:g}")
    with tempfile.TemporaryDirectory(prefix="labkit-offline-") as scratch:
        job_file, out_file = Path(scratch) / "job.json", Path(scratch) / "result.json"
        job_file.write_text(json.dumps(job))
        log_path = log or Path(scratch) / "offline.log"
        # A short TMPDIR keeps vLLM's IPC socket paths under the 107-byte limit.
        env["TMPDIR"] = scratch
        with open(log_path, "wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "labkit.query", "offline", str(job_file), str(out_file)],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _stop_group(proc)
                raise QueryError(
                    f"offline batch did not finish within {timeout:.0f} s",
                    f"fewer prompts or tokens, or a larger timeout (log: {log_path})",
                ) from None
            except BaseException:
                _stop_group(proc)
                raise
        text = log_path.read_text(errors="replace")
        if code != 0 or not out_file.is_file():
            last = [line for line in text.splitlines() if line.strip()][-1:] or ["no output"]
            raise QueryError(
                f"offline batch with vllm.LLM failed (exit {code}: {last[0][:200]})",
                "see the log" + (f" {log_path}" if log else "; pass log=PATH to keep it"),
            )
        result = json.loads(out_file.read_text())
    return OfflineBatch(log=str(log or ""), **result)


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the child's process group (the engine's workers too), then SIGKILL."""
    import signal

    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _offline_main(job_file: str, out_file: str) -> int:
    """The child process of ``offline_batch``: load vllm.LLM, generate, write the result."""
    job = json.loads(Path(job_file).read_text())
    from vllm import LLM, SamplingParams

    started = time.perf_counter()
    llm = LLM(
        model=job["model"],
        enforce_eager=job["enforce_eager"],
        max_model_len=job["max_model_len"],
    )
    load_s = time.perf_counter() - started
    params = SamplingParams(temperature=job["temperature"], max_tokens=job["max_tokens"])
    started = time.perf_counter()
    if job["chat"]:
        conversations = [[{"role": "user", "content": p}] for p in job["prompts"]]
        outputs = llm.chat(conversations, params, use_tqdm=False)
    else:
        outputs = llm.generate(job["prompts"], params, use_tqdm=False)
    seconds = time.perf_counter() - started
    result = {
        "model": job["model"],
        "prompts": job["prompts"],
        "texts": [o.outputs[0].text for o in outputs],
        "load_s": load_s,
        "seconds": seconds,
        "prompt_tokens": sum(len(o.prompt_token_ids or []) for o in outputs),
        "output_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
    }
    Path(out_file).write_text(json.dumps(result))
    return 0


# --- the chat box --------------------------------------------------------------------------------


class ChatBox:
    """A text box and a streamed answer under it; ``ask(question)`` does what pressing Enter does."""

    def __init__(self, client: Client, *, max_tokens: int = 256, system: str | None = None) -> None:
        import ipywidgets as w

        self.client = client
        self.max_tokens = max_tokens
        self.system = system
        self.answers: list[Answer] = []
        self.question = w.Text(
            placeholder="Ask the model and press Enter", layout=w.Layout(width="70%")
        )
        self.button = w.Button(description="Ask", button_style="primary")
        self.reply = w.Textarea(
            value="", disabled=True, layout=w.Layout(width="95%", height="10em")
        )
        self.status = w.HTML(value=f"<small>{escape(client.base_url)}</small>")
        self.widget = w.VBox([w.HBox([self.question, self.button]), self.reply, self.status])
        self._asking = False
        # Enter (or leaving the box) sets the value; code setting it in ask() must not re-ask.
        self.question.continuous_update = False
        self.question.observe(self._on_submit, names="value")
        self.button.on_click(lambda _b: self._ask_box())

    def _on_submit(self, change: Mapping[str, Any]) -> None:
        if change.get("new") and not self._asking:
            self._ask_box()

    def _ask_box(self) -> None:
        if self.question.value.strip():
            try:
                self.ask(self.question.value)
            except QueryError as exc:  # shown in the box; the notebook's own cells raise for real
                self.status.value = f"<small style='color:#c62828'>{escape(str(exc))}</small>"

    def ask(self, question: str) -> Answer:
        """Stream the answer to ``question`` into the box; return it with its timing."""
        self._asking = True
        try:
            self.question.value = question
            self.reply.value = ""
            self.status.value = "<small>…</small>"
            stream = self.client.stream_chat(
                question, max_tokens=self.max_tokens, system=self.system
            )
            for delta in stream:
                self.reply.value += delta
        finally:
            self._asking = False
        answer = stream.answer
        assert answer is not None
        self.answers.append(answer)
        self.status.value = (
            f"<small>{escape(answer.model)}: first token after {_fmt_s(answer.ttft_s)}, "
            f"{answer.completion_tokens} tokens in {_fmt_s(answer.seconds)}</small>"
        )
        return answer

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def chat_box(client: Client, *, max_tokens: int = 256, system: str | None = None) -> ChatBox:
    """A small chat box over ``client`` (ipywidgets): type, press Enter, watch the answer stream."""
    return ChatBox(client, max_tokens=max_tokens, system=system)


# --- the step's record ---------------------------------------------------------------------------


def record(
    state: State,
    client: Client,
    *,
    samples: Answers,
    chat: Answer | None = None,
    generated: Sequence[Generated] = (),
    offline: OfflineBatch | None = None,
    metrics: Metrics | None = None,
) -> dict[str, Any]:
    """Record the step's result (state key "query"): model, sample answers and latency."""
    latencies = sorted(a.seconds for a in samples.answers)
    result = {
        "base_url": client.base_url,
        "model": client.model,
        "samples": [
            {"prompt": a.prompt, "answer": a.text, "seconds": round(a.seconds, 3)}
            for a in samples.answers
        ],
        "latency": {
            "requests": len(latencies),
            "concurrency": samples.concurrency,
            "mean_s": sum(latencies) / len(latencies) if latencies else None,
            "max_s": latencies[-1] if latencies else None,
            "batch_s": samples.seconds,
            "tokens_per_s": samples.tokens_per_s,
            "chat_ttft_s": chat.ttft_s if chat else None,
        },
        "generate": [g.to_dict() for g in generated],
        "offline": (
            {k: v for k, v in offline.to_dict().items() if k != "log"} if offline else None
        ),
        "metrics": metrics.summary() if metrics else None,
    }
    return state.record(STATE_KEY, result)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m labkit.query offline JOB OUT``: the offline batch's child process."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 3 and args[0] == "offline":
        return _offline_main(args[1], args[2])
    print("usage: python -m labkit.query offline JOB.json OUT.json", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
