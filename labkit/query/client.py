"""The client: the OpenAI API, ``/generate`` and ``/metrics`` of one server or deployment URL,
with errors turned into one-line QueryErrors, and ``connect`` for the lab's deployment.
"""

from __future__ import annotations

import json
import math
import shlex
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

import httpx

from labkit.config import Config
from labkit.errors import StepError
from labkit.query.auth import TokenAuth
from labkit.query.common import DEFAULT_TIMEOUT_S, SAMPLE_PROMPTS, TOKEN_PLACEHOLDER, QueryError
from labkit.query.metrics import Metrics
from labkit.query.results import Answer, Answers, CurlCommand, Generated, _table
from labkit.state import State

_LOOPBACK = ("localhost", "127.0.0.1", "::1")


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
    """A streamed chat (or, with ``kind="completion"``, text) completion: iterate for the text as
    it comes; ``.answer`` once it is done."""

    def __init__(
        self, client: Client, prompt: str, chunks: Any, started: float, kind: str = "chat"
    ) -> None:
        self._client = client
        self._prompt = prompt
        self._chunks = chunks
        self._started = started
        self.kind = kind
        self.answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        parts: list[str] = []
        ttft = None
        usage = None
        finish = None
        model = self._client.model
        with self._client._errors(f"{self.kind} (streamed)"):
            for chunk in self._chunks:
                model = chunk.model or model
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    finish = choice.finish_reason or finish
                    piece = choice.delta.content if self.kind == "chat" else choice.text
                    delta = piece or ""
                    if delta:
                        if ttft is None:
                            ttft = time.perf_counter() - self._started
                        parts.append(delta)
                        yield delta
        text = "".join(parts)
        self.answer = Answer(
            kind=self.kind,
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
        if not (isinstance(timeout, int | float) and 0 < timeout < math.inf):  # NaN fails too
            raise QueryError(f"timeout {timeout}", "give a number of seconds above 0")
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.auth = TokenAuth(token, clock=clock) if token is not None else None
        # Where the curl recipe tells a reader to find the credentials for $TOKEN (connect sets it).
        self.service_key_file = ""
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

    def _create(
        self, what: str, create: Callable[..., Any], extra: Mapping[str, Any], **params: Any
    ) -> Any:
        """One OpenAI ``create`` call on the model to ask, ``extra`` passed through as given."""
        model = self.model
        return self._api(what, lambda: create(model=model, **params, **extra))

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
        reply = self._create(
            "chat",
            self.openai.chat.completions.create,
            extra,
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            n=n,
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
        chunks = self._create(
            "chat (streamed)",
            self.openai.chat.completions.create,
            extra,
            messages=messages,
            max_tokens=max_tokens,
            temperature=temperature,
            stream=True,
            stream_options={"include_usage": True},
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
        reply = self._create(
            "completion",
            self.openai.completions.create,
            extra,
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            n=n,
        )
        return _answer("completion", prompt, reply, started)

    def stream_complete(
        self, prompt: str, *, max_tokens: int = 64, temperature: float = 0.0, **extra: Any
    ) -> ChatStream:
        """A streamed text completion: iterate it for the continuation of ``prompt`` piece by
        piece; ``.answer`` (with the time to the first token) once it is done."""
        started = time.perf_counter()
        chunks = self._create(
            "completion (streamed)",
            self.openai.completions.create,
            extra,
            prompt=prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            stream=True,
            stream_options={"include_usage": True},
        )
        return ChatStream(self, prompt, chunks, started, kind="completion")

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
        return CurlCommand(" \\\n  ".join(lines), self.auth is not None, self.service_key_file)

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
                "check the URL (state key 'deploy', BASE_URL or --url) and that the server is running",
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
    deploy = (state or State(cfg.state_file)).get("deploy")
    if not deploy:  # the notebooks' BASE_URL and the CLI's --url both give a server instead
        raise StepError(
            "no deployment recorded (the 'deploy' step has not run)",
            "run step 06 (notebooks/06_deploy.ipynb or `labkit deploy`), or give a server's "
            "URL (BASE_URL in the notebooks, --url in the CLI)",
        )
    url = deploy.get("deployment_url") or ""
    if not url:
        raise QueryError(
            f"deployment {deploy.get('deployment_id', '')} has no URL yet",
            "wait until it is RUNNING (notebooks/06_deploy.ipynb, `labkit deploy status`), "
            "or give a server's URL (BASE_URL, --url)",
        )
    from labkit import aicore

    ai = aicore.connect(cfg)
    served = model or deploy.get("served_model_name") or deploy.get("model") or None
    client = Client(
        url,
        token=ai.token,
        headers={"AI-Resource-Group": ai.resource_group},
        model=served,
        timeout=timeout,
    )
    key_file = cfg.aicore_service_key_file
    if key_file is None and cfg.profile == "local":
        key_file = aicore.local_service_key_file(cfg)
    client.service_key_file = str(key_file or "")
    return client
