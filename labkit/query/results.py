"""The answers as the notebook shows them: chat and completion answers, batches, /generate,
the curl command, and offline batch results, each a small HTML table.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from labkit.util.html import esc, row

# --- results -------------------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table with escaped cells."""
    left = ["left"] * max([len(header), *(len(r) for r in rows)])
    head = row([esc(str(h)) for h in header], tag="th", align=left)
    body = "".join(row([esc(str(c)) for c in r], align=left) for r in rows)
    return f"<table>{head}{body}</table>"


def _fmt_s(seconds: float | None) -> str:
    """Seconds for a table: '' when unknown, ms below one second."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return ""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 4)


@dataclass
class Answer:
    """One answer of the model: its text(s), timing and token counts."""

    kind: str  # chat | completion | generate
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

    def document(self, url: str) -> dict[str, Any]:
        """What `labkit query --json` prints: the answer, its usage and timings (docs/architecture.md)."""
        return {
            "kind": self.kind,
            "url": url,
            "model": self.model,
            "prompt": self.prompt,
            "answer": self.text,
            "choices": list(self.choices or [self.text]),
            "finish_reason": self.finish_reason,
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
            },
            "timings": {"seconds": round(self.seconds, 4), "ttft_s": _round(self.ttft_s)},
        }

    def timing_line(self) -> str:
        """One line on the model, the tokens and the time taken."""
        parts = [f"{self.kind} by {self.model or 'the server'}"]
        if self.completion_tokens is not None:
            parts.append(f"{self.completion_tokens} tokens")
        parts.append(f"in {_fmt_s(self.seconds)}")
        if self.ttft_s is not None:
            parts.append(f"(first token after {_fmt_s(self.ttft_s)})")
        return " ".join(parts)

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
    key_file: str = ""  # the service key the token comes from (path only, never its content)

    def __str__(self) -> str:
        return self.text

    def token_recipe(self) -> str:
        """Shell lines that set $TOKEN from the service key file (clientid, clientsecret, url)."""
        key = shlex.quote(self.key_file) if self.key_file else "service-key.json"
        return (
            f"KEY={key}\n"
            'export TOKEN=$(curl -s -u "$(jq -r .clientid $KEY):$(jq -r .clientsecret $KEY)" '
            '-d grant_type=client_credentials "$(jq -r .url $KEY)/oauth/token" | jq -r .access_token)'
        )

    def _repr_html_(self) -> str:
        if not self.needs_token:
            return f"<pre>{esc(self.text)}</pre>"
        where = (
            f"the service key in <code>{esc(self.key_file)}</code>"
            if self.key_file
            else "your service key (the JSON of AICORE_SERVICE_KEY saved as a file)"
        )
        return (
            f"<pre>{esc(self.text)}</pre><p>Set <code>TOKEN</code> first (it is never shown "
            f"here), from {where}:</p><pre>{esc(self.token_recipe())}</pre>"
        )


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
            f"<p>vllm.LLM on {esc(self.model)}: loaded in {_fmt_s(self.load_s)}, "
            f"{len(self.prompts)} prompts in {_fmt_s(self.seconds)}, "
            f"{self.output_tokens} output tokens, {self.tokens_per_s:.1f} tokens/s</p>"
        )
        return head + _table(["prompt", "answer"], list(zip(self.prompts, self.texts, strict=True)))
