#!/usr/bin/env python3
"""vLLM's OpenAI server, plus the legacy demo server's POST /generate on the same app and engine.

    python serve.py --model PATH [vLLM flags]      what entrypoint.py execs

Everything but one route is vLLM's own `python -m vllm.entrypoints.openai.api_server`: the same
argument parser, engine, middleware (--api-key, CORS), /metrics and signal handling. The route
keeps the request shape of vLLM's removed `vllm.entrypoints.api_server` working:

    POST /generate {"prompt": "...", "n": 4, "use_beam_search": true, "temperature": 0,
                    "max_tokens": 16, "stream": false, ...other sampling fields}
    -> {"text": [prompt + completion, ...]}        (n entries, best beam first)

It runs as a /v1/completions request through vLLM's own completion handler, so the sampling
fields are those of /v1/completions, and `use_beam_search` maps onto vLLM's beam search
(BeamSearchParams, beam width = n). With "stream": true it answers newline-delimited JSON, one
`{"text": [...]}` per step with each completion so far (the demo server's format since Feb 2024;
earlier versions ended each object with "\\0"); beam search has no partial results, so a stream
with beam search is a single line. Errors are vLLM's `{"error": {"message", ...}}` with its code.

This file needs vLLM and FastAPI, which the image carries; it imports nothing from the lab.
It supports vLLM 0.32 (the image's pin) and 0.26 (the newest that runs on the lab's H100, torch
2.11): the two place the server's entry and a few classes in different modules, and each is
tried in turn. On a vLLM with neither layout it exits with one line naming the version found.
"""

# No `from __future__ import annotations`: FastAPI reads the route's annotations at run time.
import functools
import json
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

ROUTE = "/generate"
# The request is rendered by the completion handler; its own echo would put the prompt in twice.
DROPPED_FIELDS = ("echo", "stream_options")
SUPPORTED_VLLM = "0.26 and 0.32"
# Where each version keeps what this file uses: (module, name), newest first.
_AUTH = (
    ("vllm.entrypoints.serve.middleware.authenticate", "AuthenticationMiddleware"),  # 0.32
    ("vllm.entrypoints.serve.utils.server_utils", "AuthenticationMiddleware"),  # 0.26
)
_ERROR_RESPONSE = (
    ("vllm.entrypoints.serve.engine.protocol", "ErrorResponse"),  # 0.32
    ("vllm.entrypoints.openai.engine.protocol", "ErrorResponse"),  # 0.26
)


class UnsupportedVllm(RuntimeError):
    """The installed vLLM keeps its server where neither supported version does."""


def _vllm_version() -> str:
    try:
        from vllm import __version__

        return str(__version__)
    except ImportError:
        return "not installed"


@functools.cache
def _first(candidates: tuple[tuple[str, str], ...]) -> Any:
    """The first (module, name) of ``candidates`` that imports (looked up once: /generate's
    authorization check asks on every request)."""
    import importlib

    for module, name in candidates:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise UnsupportedVllm(
        f"vLLM {_vllm_version()} has no {candidates[0][1]} where vLLM {SUPPORTED_VLLM} keep it; "
        f"serve.py supports vLLM {SUPPORTED_VLLM}"
    )


def _error(message: str, code: HTTPStatus = HTTPStatus.BAD_REQUEST) -> Any:
    """vLLM's error body for a request the route refuses."""
    from fastapi.responses import JSONResponse

    kind = code.phrase.replace(" ", "") + "Error"
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=code)


def _authorized(raw_request: Any) -> bool:
    """Whether the request passes vLLM's --api-key check (which only guards /v1/...)."""
    from vllm import envs

    AuthenticationMiddleware = _first(_AUTH)
    args = getattr(raw_request.app.state, "args", None)
    keys = [key for key in (getattr(args, "api_key", None) or [envs.VLLM_API_KEY]) if key]
    if not keys:
        return True
    return AuthenticationMiddleware(None, keys).verify_token(raw_request.headers)


def _completion_request(body: Any) -> tuple[Any, str, bool]:
    """The /v1/completions request for a /generate body, its prompt, and whether to stream."""
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
        raise ValueError('the body must be a JSON object with a string "prompt"')
    fields = {k: v for k, v in body.items() if k not in DROPPED_FIELDS}
    prompt = fields["prompt"]
    stream = bool(fields.pop("stream", False))
    beam = bool(fields.get("use_beam_search", False))
    # vLLM's beam search has no streaming: run it whole and send the result as one line.
    request = CompletionRequest.model_validate({**fields, "stream": stream and not beam})
    return request, prompt, stream


def _texts(prompt: str, choices: list[Any]) -> dict[str, list[str]]:
    """The demo server's answer: the prompt followed by each completion, in choice order."""
    return {"text": [prompt + c.text for c in sorted(choices, key=lambda c: c.index)]}


async def _lines(prompt: str, n: int, events: AsyncIterator[str]) -> AsyncIterator[bytes]:
    """Turn the completion handler's server-sent events into the demo server's JSON lines."""
    texts = [""] * n
    async for chunk in events:
        for event in chunk.split("\n\n"):
            data = event.removeprefix("data: ").strip()
            if not data or data == "[DONE]":
                continue
            payload = json.loads(data)
            if "error" in payload:
                yield (json.dumps(payload) + "\n").encode()
                return
            if not payload.get("choices"):
                continue  # a usage-only event
            for choice in payload["choices"]:
                texts[choice["index"]] += choice.get("text") or ""
            yield (json.dumps({"text": [prompt + t for t in texts]}) + "\n").encode()


def add_generate_route(app: Any) -> None:
    """Add POST /generate to vLLM's app; it answers from app.state's completion handler."""
    from fastapi import Request
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from pydantic import ValidationError
    from vllm.entrypoints.openai.completion.protocol import CompletionResponse
    from vllm.entrypoints.serve.utils.api_utils import with_cancellation

    ErrorResponse = _first(_ERROR_RESPONSE)

    @with_cancellation
    async def run(request: Any, raw_request: Request) -> Any:
        handler = getattr(raw_request.app.state, "openai_serving_completion", None)
        if handler is None:
            return _error("this model does not generate text", HTTPStatus.NOT_FOUND)
        return await handler.create_completion(request, raw_request)

    async def generate(raw_request: Request) -> Response:
        """The legacy demo server's /generate: prompt + sampling fields -> {"text": [...]}."""
        if not _authorized(raw_request):
            return JSONResponse({"error": "Unauthorized"}, status_code=HTTPStatus.UNAUTHORIZED)
        try:
            body = json.loads(await raw_request.body())
            request, prompt, stream = _completion_request(body)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            return _error(problems)
        except ValueError as exc:  # JSONDecodeError included
            return _error(f"bad /generate request: {exc}")
        result = await run(request, raw_request)
        if result is None:  # the client went away
            return Response(status_code=499)
        if isinstance(result, ErrorResponse):
            return JSONResponse(result.model_dump(), status_code=result.error.code)
        if isinstance(result, JSONResponse | Response):
            return result
        if isinstance(result, CompletionResponse):
            answer = _texts(prompt, result.choices)
            if stream:
                return StreamingResponse(
                    iter([(json.dumps(answer) + "\n").encode()]), media_type="application/json"
                )
            return JSONResponse(answer)
        return StreamingResponse(
            _lines(prompt, request.n or 1, result), media_type="application/json"
        )

    app.add_api_route(ROUTE, generate, methods=["POST"], include_in_schema=True)


def _server_module() -> tuple[Any, Any]:
    """The module whose ``build_app`` builds the app, and the function that runs the server
    (vLLM 0.32: launchers.api_server.entry.main; 0.26: the ``__main__`` block of
    openai.api_server, repeated here since that version has no main function)."""
    try:
        from vllm.entrypoints.launchers.api_server import entry  # 0.32

        return entry, entry.main
    except ImportError:
        pass
    try:
        from vllm.entrypoints.openai import api_server  # 0.26
    except ImportError:
        api_server = None
    if api_server is None or not hasattr(api_server, "run_server"):
        raise UnsupportedVllm(
            f"vLLM {_vllm_version()} has no OpenAI server entry where vLLM {SUPPORTED_VLLM} keep "
            f"it; serve.py supports vLLM {SUPPORTED_VLLM}"
        )

    def main_026() -> None:
        import uvloop
        from vllm.entrypoints.openai.cli_args import make_arg_parser, validate_parsed_serve_args
        from vllm.utils.argparse_utils import FlexibleArgumentParser

        api_server.cli_env_setup()
        parser = make_arg_parser(
            FlexibleArgumentParser(description="vLLM OpenAI-Compatible RESTful API server.")
        )
        args = parser.parse_args()
        validate_parsed_serve_args(args)
        uvloop.run(api_server.run_server(args))

    return api_server, main_026


def main() -> None:
    """Run vLLM's OpenAI server main() with /generate added to the app it builds."""
    import sys

    try:
        module, run = _server_module()
        _first(_AUTH), _first(_ERROR_RESPONSE)  # fail now, not at the first /generate
    except UnsupportedVllm as exc:
        print(f"serve.py: error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    # vLLM offers no public hook for extra routes other than endpoint plugins, which need an
    # installed distribution and a VLLM_PLUGINS allowlist that would also filter every other
    # plugin: wrapping the one function that builds the app keeps the rest of vLLM's server as is.
    build_app = module.build_app

    def build_app_with_generate(*args: Any, **kwargs: Any) -> Any:
        app = build_app(*args, **kwargs)
        add_generate_route(app)
        return app

    module.build_app = build_app_with_generate
    run()


if __name__ == "__main__":
    main()
