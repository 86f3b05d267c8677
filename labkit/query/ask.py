"""One question, the way a terminal or a pipeline asks it (``labkit query``): a chat, a text
completion or the legacy ``/generate`` request, streamed or not, answered as one Answer with its
timings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from labkit.errors import ConfigError
from labkit.query.client import Client
from labkit.query.common import MAX_TOKENS
from labkit.query.results import Answer, Generated

KINDS = ("chat", "completion", "generate")


def check_request(
    kind: str,
    *,
    stream: bool = False,
    max_tokens: int = MAX_TOKENS,
    temperature: float = 0.0,
    n: int = 1,
    use_beam_search: bool = False,
) -> None:
    """A ConfigError (one line, what to change) unless the request can be sent."""
    if kind not in KINDS:
        raise ConfigError(f"unknown kind of request {kind!r}", f"use one of {', '.join(KINDS)}")
    if max_tokens < 1:
        raise ConfigError(f"max tokens {max_tokens}", "ask for at least 1 token")
    if not 0.0 <= temperature <= 2.0:  # the OpenAI API's range; NaN fails both sides
        raise ConfigError(f"temperature {temperature}", "use a temperature from 0 to 2")
    if n < 1:
        raise ConfigError(f"n={n}", "ask for at least one completion")
    if stream and n > 1:
        raise ConfigError(f"streaming with n={n}", "stream one completion (n=1), or do not stream")
    if use_beam_search and kind != "generate":
        raise ConfigError("beam search outside /generate", "use kind 'generate' for beam search")


def ask(
    client: Client,
    kind: str,
    prompt: str,
    *,
    stream: bool = False,
    on_text: Callable[[str], None] | None = None,
    max_tokens: int = MAX_TOKENS,
    temperature: float = 0.0,
    n: int = 1,
    system: str | None = None,
    use_beam_search: bool = False,
) -> Answer:
    """Ask ``prompt`` as a chat, a text completion or ``/generate``; when streamed, each new piece
    of text goes to ``on_text`` as it arrives. ``/generate``'s answer is its completions (the
    texts without the prompt in front); the route reports no token counts."""
    check_request(kind, stream=stream, max_tokens=max_tokens, temperature=temperature, n=n,
                  use_beam_search=use_beam_search)  # fmt: skip
    show = on_text or (lambda _text: None)
    if kind == "generate":
        return _generate(client, prompt, stream, show, max_tokens=max_tokens,
                         temperature=temperature, n=n, use_beam_search=use_beam_search)  # fmt: skip
    params: dict[str, Any] = {"max_tokens": max_tokens, "temperature": temperature}
    if kind == "chat":
        params["system"] = system
    if not stream:
        call = client.chat if kind == "chat" else client.complete
        return call(prompt, n=n, **params)
    pieces = (
        client.stream_chat(prompt, **params)
        if kind == "chat"
        else client.stream_complete(prompt, **params)
    )
    for piece in pieces:
        show(piece)
    assert pieces.answer is not None  # set once the stream is read to its end
    return pieces.answer


def _generate(
    client: Client, prompt: str, stream: bool, show: Callable[[str], None], **params: Any
) -> Answer:
    """POST /generate, streamed (each line holds the prompt and the completion so far) or not."""
    started = time.perf_counter()
    ttft = None
    if stream:
        texts, shown = [prompt], prompt
        for texts in client.stream_generate(prompt, **params):
            grown = texts[0] if texts else shown
            if len(grown) > len(shown) and grown.startswith(shown):
                ttft = ttft if ttft is not None else time.perf_counter() - started
                show(grown[len(shown) :])
                shown = grown
        generated = Generated(prompt, list(texts), time.perf_counter() - started,
                              params["use_beam_search"], params["n"])  # fmt: skip
    else:
        generated = client.generate(prompt, **params)
    completions = generated.completions
    return Answer(
        kind="generate",
        prompt=prompt,
        text=completions[0] if completions else "",
        model=client.model,
        seconds=generated.seconds,
        ttft_s=ttft,
        choices=completions,
    )
