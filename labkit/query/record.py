"""The step's record in the lab state (key "query"): model, sample answers and latency."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from labkit.query.client import Client
from labkit.query.common import STATE_KEY
from labkit.query.metrics import Metrics
from labkit.query.results import Answer, Answers, Generated, OfflineBatch
from labkit.state import State

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
        # Milliseconds and tenths of a token per second: what a reader compares, and no
        # 15-digit floats in the notebook.
        "latency": {
            "requests": len(latencies),
            "concurrency": samples.concurrency,
            "mean_s": _round(sum(latencies) / len(latencies) if latencies else None, 3),
            "max_s": _round(latencies[-1] if latencies else None, 3),
            "batch_s": _round(samples.seconds, 3),
            "tokens_per_s": _round(samples.tokens_per_s, 1),
            "chat_ttft_s": _round(chat.ttft_s if chat else None, 3),
        },
        "generate": [g.to_dict() for g in generated],
        "offline": (
            {k: v for k, v in offline.to_dict().items() if k != "log"} if offline else None
        ),
        "metrics": metrics.summary() if metrics else None,
    }
    return state.record(STATE_KEY, result)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
