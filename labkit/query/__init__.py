"""Step 07: ask the served model (the OpenAI API, and the ways the vLLM launch post shows) and read its metrics.

- the OpenAI-compatible API through the deployment URL (chat, completions, streaming), with the
  bearer token refreshed as it expires and the ``AI-Resource-Group`` header; the same client
  works against a plain vLLM server (no token);
- the legacy demo server's ``POST /generate`` (``{"prompt", "use_beam_search", "n", ...}`` ->
  ``{"text": [...]}``), which the lab's runtime keeps as a route of the same server;
- offline batch inference with ``vllm.LLM`` on the downloaded snapshot, in a child process so
  the caller stays light and the engine's memory is freed when it ends.

- SAP's generative AI SDK (``sap-ai-sdk-gen``, the ``sapsdk`` extra): the deployment's
  scenario registered as a foundation-model scenario, asked through the SDK's OpenAI-like
  client and LangChain, as SAP applications ask models.

Plus the equivalent ``curl`` command (token never shown) and the server's ``/metrics`` read into
a short table.

The package: ``common`` (constants, QueryError), ``auth`` (the token cache), ``client`` (the
client and ``connect``), ``results`` and ``metrics`` (what the notebook shows), ``offline`` (the
offline batch and its child process), ``chat`` (the chat box), ``record`` (the step's record),
``ask`` (one question as ``labkit query`` asks it), ``sapsdk`` (SAP's generative AI SDK).
"""

from __future__ import annotations

from labkit.query.ask import KINDS, ask, check_request
from labkit.query.auth import REFRESH_MARGIN_S, TokenAuth, jwt_expiry
from labkit.query.chat import ChatBox, chat_box
from labkit.query.client import ChatStream, Client, connect
from labkit.query.common import (
    DEFAULT_TIMEOUT_S,
    MAX_TOKENS,
    OFFLINE_TIMEOUT_S,
    SAMPLE_PROMPTS,
    STATE_KEY,
    TOKEN_PLACEHOLDER,
    QueryError,
)
from labkit.query.metrics import Histogram, Metrics, Sample, parse_prometheus
from labkit.query.offline import main, offline_batch
from labkit.query.record import record
from labkit.query.results import Answer, Answers, CurlCommand, Generated, OfflineBatch
from labkit.query.sapsdk import SapSdk, compare, sap_sdk

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "KINDS",
    "MAX_TOKENS",
    "OFFLINE_TIMEOUT_S",
    "REFRESH_MARGIN_S",
    "SAMPLE_PROMPTS",
    "STATE_KEY",
    "TOKEN_PLACEHOLDER",
    "Answer",
    "Answers",
    "ChatBox",
    "ChatStream",
    "Client",
    "CurlCommand",
    "Generated",
    "Histogram",
    "Metrics",
    "OfflineBatch",
    "QueryError",
    "Sample",
    "SapSdk",
    "TokenAuth",
    "ask",
    "chat_box",
    "check_request",
    "compare",
    "connect",
    "jwt_expiry",
    "main",
    "offline_batch",
    "parse_prometheus",
    "record",
    "sap_sdk",
]
