"""The workload: the lab's prompt set, sampled the way vLLM's benchmarks sample ShareGPT.

Shuffle with the seed, tokenize with the model's tokenizer, drop pairs with a prompt over 1024
tokens or prompt + output over 2048 (or either under 4), and oversample when too few remain. Each
request asks for exactly its output length, so every engine produces the same number of tokens.
"""

from __future__ import annotations

import json
import os
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from labkit.errors import ConfigError
from labkit.util.html import esc, table

PROMPTS_FILE = "bench_prompts.jsonl"
# vLLM's ShareGPT filter (vllm/benchmarks/datasets/datasets.py, is_valid_sequence).
MIN_TOKENS = 4
MAX_PROMPT_TOKENS = 1024
MAX_TOTAL_TOKENS = 2048
# Sampling every engine uses: plain temperature-1 sampling, as vLLM's throughput benchmark does.
TEMPERATURE = 1.0


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

    def line(self) -> str:
        """One line for a terminal: requests, seed, prompt and output lengths."""
        s = self.summary()
        p, o = s["prompt_tokens"], s["output_tokens"]
        return (
            f"{s['requests']} requests, seed {s['seed']}, prompt tokens {p['min']}-{p['max']} "
            f"(median {p['median']:.0f}), output tokens {o['min']}-{o['max']} "
            f"(median {o['median']:.0f})"
        )

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
        rows = [
            (esc(r.id), esc(r.category), r.prompt_tokens, r.output_tokens)
            for r in self.requests[:12]
        ]
        more = f"<tr><td colspan=4>... {len(self) - 12} more</td></tr>" if len(self) > 12 else ""
        listing = table(
            ["id", "kind", "prompt tokens", "output tokens"],
            rows,
            align=["", "", "right", "right"],
            after=more,
        )
        return (
            f"<div><b>{len(self)} requests</b>, seed {self.seed}{cap}; prompt tokens "
            f"min/median/max {p['min']}/{p['median']:.0f}/{p['max']}, output tokens "
            f"{o['min']}/{o['median']:.0f}/{o['max']}; {len(self.dropped)} prompts over the "
            f"limits left out, {self.oversampled} repeated{listing}</div>"
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
    """Draw ``num_requests`` requests from the prompt set the way vLLM samples ShareGPT.

    ``max_output_tokens`` None or 0 (a notebook parameter's "unset") keeps the set's lengths."""
    max_output_tokens = max_output_tokens or None
    if num_requests < 1:
        raise ConfigError(f"num_requests={num_requests}", "ask for at least one request")
    if max_output_tokens is not None and max_output_tokens < MIN_TOKENS:
        raise ConfigError(
            f"max_output_tokens={max_output_tokens} is under {MIN_TOKENS}",
            f"use at least {MIN_TOKENS}, or 0 for the prompt set's lengths",
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
