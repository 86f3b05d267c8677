"""The `labkit query` command of step 07: ask the deployment (or any vLLM server) one question.

``chat``, ``complete`` and ``generate`` (the legacy ``/generate`` request), streamed or not;
without --json the answer goes to stdout (as it arrives with --stream) and a line on the model,
tokens and time to stderr, so ``answer=$(labkit query chat "...")`` holds the answer alone.
"""

from __future__ import annotations

import argparse
import sys

from labkit.cli.common import emit
from labkit.config import Config

# The subcommand (a verb, as the other commands) and the kind of request it sends.
KINDS = {"chat": "chat", "complete": "completion", "generate": "generate"}


def _prompt(text: str) -> str:
    """The prompt as given, or stdin's text for '-'; a ConfigError when it is empty."""
    from labkit.errors import ConfigError

    prompt = sys.stdin.read() if text == "-" else text
    if not prompt.strip():
        raise ConfigError(
            "the prompt is empty", 'give a prompt, e.g. "What is the capital of France?"'
        )
    return prompt.rstrip("\n") if text == "-" else prompt


def _cmd_query(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import query
    from labkit.state import State

    kind = KINDS[args.kind]
    options = {
        "stream": args.stream,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "n": getattr(args, "n", 1),
        "use_beam_search": getattr(args, "beam_search", False),
    }
    query.check_request(kind, **options)  # bad input is refused before any connection
    prompt = _prompt(args.prompt)
    streaming = args.stream and not args.json
    if getattr(args, "via", "openai") == "sap-sdk":
        return _via_sap_sdk(args, cfg, prompt, streaming)

    def show(piece: str) -> None:
        print(piece, end="", flush=True)

    with query.connect(
        cfg, State(cfg.state_file), base_url=args.url, model=args.model, timeout=args.timeout
    ) as client:
        answer = query.ask(client, kind, prompt, on_text=show if streaming else None,
                           system=getattr(args, "system", None), **options)  # fmt: skip
        url = client.base_url
    if args.json:
        emit(args, answer.document(url), "")
        return 0
    if streaming:
        print()
    else:
        choices = answer.choices or [answer.text]
        print(choices[0] if len(choices) == 1 else _numbered(choices))
    print(answer.timing_line(), file=sys.stderr)
    return 0


def _via_sap_sdk(args: argparse.Namespace, cfg: Config, prompt: str, streaming: bool) -> int:
    """The chat through SAP's generative AI SDK (labkit.query.sapsdk), as SAP applications ask."""
    from labkit.errors import ConfigError
    from labkit.query import sapsdk

    if args.url or args.model:
        raise ConfigError(
            "--via sap-sdk asks the deployment step 06 recorded, by its id and scenario",
            "drop --url and --model, or drop --via sap-sdk",
        )
    sdk = sapsdk.sap_sdk(cfg, max_tokens=args.max_tokens)
    options = {"system": args.system, "temperature": args.temperature}
    if streaming:
        answer = sdk.stream(prompt, on_text=lambda p: print(p, end="", flush=True), **options)
        print()
    else:
        answer = sdk.chat(prompt, **options)
    if args.json:
        emit(args, {**answer.to_dict(), "deployment_id": sdk.deployment_id}, "")
        return 0
    if not streaming:
        print(answer.text)
    print(f"SAP's SDK ({answer.via}), deployment {sdk.deployment_id}: {answer.seconds:.2f} s",
          file=sys.stderr)  # fmt: skip
    return 0


def _numbered(choices: list[str]) -> str:
    return "\n".join(f"[{i}] {text}" for i, text in enumerate(choices, 1))


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `query` with its `chat`, `complete` and `generate` subcommands."""
    from labkit import query

    q = sub.add_parser(
        "query",
        help="ask the deployment (or a vLLM server) one question (step 07)",
        description="Ask the deployment step 06 recorded (AI Core token and resource group) or, "
        "with --url, any vLLM server (no token): a chat, a text completion, or the legacy "
        "/generate request. The answer goes to stdout (as it arrives with --stream), a line on "
        "the model, tokens and time to stderr; with --json one object with the answer, usage and "
        "timings.",
    )
    kinds = q.add_subparsers(dest="kind", required=True, metavar="KIND")
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("prompt", metavar="PROMPT", help="the question or text; '-' reads stdin")
    shared.add_argument("--stream", action="store_true", help="print the answer as it arrives")
    shared.add_argument(
        "--max-tokens",
        type=int,
        default=query.MAX_TOKENS,
        help=f"longest answer in tokens (default {query.MAX_TOKENS})",
    )
    shared.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="sampling temperature, 0 to 2 (default 0: greedy, the same answer every time)",
    )
    shared.add_argument(
        "--url",
        default="",
        help="a vLLM server's base URL, e.g. http://127.0.0.1:8000 (default: the deployment of "
        "step 06, from the lab state)",
    )
    shared.add_argument(
        "--model", help="served model name (default: the deployment's, or the server's first)"
    )
    shared.add_argument(
        "--timeout",
        type=float,
        default=query.DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for an answer (default {query.DEFAULT_TIMEOUT_S:.0f})",
    )
    chat = kinds.add_parser(
        "chat",
        parents=[shared, common],
        help="a chat completion (/v1/chat/completions)",
        description="Ask PROMPT as the user's message of a chat (/v1/chat/completions).",
    )
    chat.add_argument("--system", help="a system message before the prompt")
    chat.add_argument(
        "--via",
        choices=("openai", "sap-sdk"),
        default="openai",
        help="openai: the OpenAI client on the deployment URL (default); sap-sdk: SAP's "
        "generative AI SDK (sap-ai-sdk-gen, the sapsdk extra), the deployment's scenario "
        "registered as a foundation-model scenario",
    )
    complete = kinds.add_parser(
        "complete",
        parents=[shared, common],
        help="a text completion (/v1/completions): the model continues PROMPT",
        description="Let the model continue PROMPT (/v1/completions).",
    )
    generate = kinds.add_parser(
        "generate",
        parents=[shared, common],
        help="the legacy demo server's POST /generate (the lab's runtime keeps it)",
        description="POST /generate {prompt, n, use_beam_search, temperature, max_tokens}: the "
        "vLLM quickstart's request, which the lab's runtime serves beside the OpenAI API. The "
        "answer is each completion without the prompt in front; /generate reports no token counts.",
    )
    for parser in (complete, generate):
        parser.add_argument(
            "--n", type=int, default=1, help="completions to return (default 1; not with --stream)"
        )
    generate.add_argument(
        "--beam-search",
        action="store_true",
        help="beam search with beam width --n, best beam first",
    )
    for parser in (chat, complete, generate):
        parser.set_defaults(func=_cmd_query)
