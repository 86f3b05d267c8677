"""What step 08 runs: the workload's knobs, the engines and the comparisons, with notebook 08's
defaults (a test keeps the two equal), checked before anything starts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from labkit.bench.workload import MIN_TOKENS
from labkit.errors import ConfigError

# vLLM offline, the server (through the deployment URL, or the URL given), HF Transformers.
ENGINES = ("offline", "server", "hf")


@dataclass(frozen=True)
class Plan:
    """Step 08's knobs: the workload, the engines and the comparisons after them."""

    requests: int = 8  # requests in the workload
    max_output_tokens: int = 32  # cap on each request's output length; 0: the prompt set's own
    max_prompt_tokens: int = 512  # longest prompt in tokens
    seed: int = 0  # the same seed gives the same requests
    concurrencies: tuple[int, ...] = (1, 4, 8)  # requests in flight at the server
    parallel_n: int = 3  # completions per request of the parallel-sampling runs; 1: none
    hf_requests: int = 4  # first requests of the workload that HF runs (it is slow)
    hf_batch: int = 4  # static batch size of the HF baseline
    dtype: str = "float32"  # dtype of the offline engines
    engines: tuple[str, ...] = ENGINES
    proxy_rounds: int = 1  # deployment URL vs straight to the server; 0: skip
    cross_check: bool = True  # replay the workload with `vllm bench serve`

    def __post_init__(self) -> None:
        at_least = {
            "requests": (self.requests, 1),
            "max output tokens": (self.max_output_tokens, 0),
            "max prompt tokens": (self.max_prompt_tokens, MIN_TOKENS),
            "parallel n": (self.parallel_n, 1),
            "HF requests": (self.hf_requests, 1),
            "HF batch": (self.hf_batch, 1),
            "proxy rounds": (self.proxy_rounds, 0),
        }
        for what, (value, low) in at_least.items():
            if value < low:
                raise ConfigError(f"{what} {value}", f"use {low} or more")
        if 0 < self.max_output_tokens < MIN_TOKENS:
            raise ConfigError(
                f"max output tokens {self.max_output_tokens}",
                f"use {MIN_TOKENS} or more (0: the prompt set's own lengths)",
            )
        if not self.concurrencies or min(self.concurrencies) < 1:
            raise ConfigError(f"concurrencies {list(self.concurrencies)}", "use 1 or more each")
        unknown = [e for e in self.engines if e not in ENGINES]
        if unknown or not self.engines:
            raise ConfigError(
                f"engines {','.join(self.engines) or '(none)'}",
                f"choose one or more of {','.join(ENGINES)}",
            )

    @property
    def ns(self) -> list[int]:
        """Completions per request: 1, and ``parallel_n`` when it is more."""
        return [1, self.parallel_n] if self.parallel_n > 1 else [1]

    @property
    def top(self) -> int:
        """The highest concurrency: where the comparisons run."""
        return max(self.concurrencies)

    @property
    def offline_requests(self) -> list[int]:
        """How many requests vLLM offline runs: HF's subset (to compare) and the whole workload."""
        return sorted({self.hf_requests, self.requests})


def parse_engines(text: str | Sequence[str]) -> tuple[str, ...]:
    """ "offline,server" -> ("offline", "server"), in step 08's order, each once."""
    names = text.replace(" ", "").split(",") if isinstance(text, str) else list(text)
    chosen = {n for n in names if n}
    unknown = sorted(chosen - set(ENGINES))
    if unknown or not chosen:
        raise ConfigError(
            f"engines {','.join(unknown) or repr(text)}",
            f"choose one or more of {','.join(ENGINES)}, comma-separated",
        )
    return tuple(e for e in ENGINES if e in chosen)
