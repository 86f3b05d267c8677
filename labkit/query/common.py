"""Step 07's constants and its one error: what every part of the querying shares."""

from __future__ import annotations

from labkit.errors import ServiceError

STATE_KEY = "query"
SAMPLE_PROMPTS = (
    "What is the capital of France?",
    "Name three primary colours.",
    "Write a haiku about a GPU.",
    "Explain in one sentence what a KV cache is.",
)
TOKEN_PLACEHOLDER = "$TOKEN"
MAX_TOKENS = 64  # longest answer asked for by default (notebook 07's MAX_TOKENS)
DEFAULT_TIMEOUT_S = 120.0
OFFLINE_TIMEOUT_S = 900.0


class QueryError(ServiceError):
    """The server cannot be reached, refused the request, or answered something unusable."""
