"""`labkit query` and labkit.query.ask without a server: parsing, refusals, the streamed pieces and
the JSON shape (the real server: tests/test_cli_serving.py)."""

from __future__ import annotations

import io
import math
import sys
from contextlib import nullcontext
from pathlib import Path
from types import SimpleNamespace

import pytest

from labkit import query
from labkit.cli import build_parser, main
from labkit.query.client import ChatStream
from labkit.util import net

DOCUMENT = {"kind", "url", "model", "prompt", "answer", "choices", "finish_reason", "usage",
            "timings"}  # fmt: skip


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc: int, out: str, err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert rc == 2 and out == "", (rc, out, err)
    assert len(lines) == 1 and lines[0].startswith("labkit: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], err


def test_each_kind_parses_with_the_documented_defaults() -> None:
    parser = build_parser()
    chat = parser.parse_args(["query", "chat", "hi"])
    assert (chat.kind, chat.prompt, chat.stream, chat.max_tokens, chat.temperature, chat.url) == (
        "chat", "hi", False, query.MAX_TOKENS, 0.0, "")  # fmt: skip
    assert chat.timeout == query.DEFAULT_TIMEOUT_S and chat.system is None and not chat.json
    gen = parser.parse_args(["query", "generate", "x", "--n", "4", "--beam-search", "--json"])
    assert gen.n == 4 and gen.beam_search and gen.json
    assert parser.parse_args(["query", "complete", "x", "--stream"]).n == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["query", "chat", "x", "--n", "2"],  # n: complete and generate only
        ["query", "complete", "x", "--beam-search"],  # beam search: generate only
        ["query", "generate", "x", "--system", "s"],  # a system message: chat only
        ["query", "ask", "x"],
        ["query", "chat"],
    ],
)
def test_options_of_another_kind_are_usage_errors(argv, lab_env, capsys) -> None:
    rc, out, err = run(argv, capsys)
    assert rc == 2 and out == "" and err.startswith("usage:") and "Traceback" not in err


def test_help_shows_the_defaults(capsys) -> None:
    rc, out, _ = run(["query", "chat", "--help"], capsys)
    assert rc == 0
    for text in ("--stream", "--max-tokens", "default 64", "--url", "deployment of step 06",
                 "--json", "--system", "'-' reads stdin"):  # fmt: skip
        assert text in " ".join(out.split()), text


def test_without_a_deployment_it_says_to_run_step_06_or_pass_url(lab_env, capsys) -> None:
    rc, out, err = run(["query", "chat", "What is the capital of France?"], capsys)
    one_line_error(rc, out, err, "no deployment recorded", "step 06", "--url")


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["complete", "x", "--stream", "--n", "2"], ["n=2", "do not stream"]),
        (["chat", "x", "--max-tokens", "0"], ["max tokens 0"]),
        (["chat", "x", "--temperature", "nan"], ["temperature nan"]),
        (["chat", "x", "--temperature", "3"], ["from 0 to 2"]),
        (["generate", "x", "--n", "0"], ["n=0"]),
        (["chat", "   "], ["the prompt is empty"]),
        (["chat", "x", "--url", "localhost:8000"], ["not an http(s) URL"]),
        (["chat", "x", "--url", "http://127.0.0.1:1", "--timeout", "nan"], ["timeout nan"]),
        (["chat", "x", "--url", "http://127.0.0.1:1", "--timeout", "0"], ["above 0"]),
    ],
)
def test_bad_input_is_one_line(argv, fragments, lab_env, capsys) -> None:
    rc, out, err = run(["query", *argv], capsys)
    one_line_error(rc, out, err, *fragments)


def test_a_server_that_is_not_there_is_one_line(lab_env, capsys) -> None:
    url = f"http://127.0.0.1:{net.free_port()}"
    rc, out, err = run(["query", "chat", "hi", "--url", url, "--json"], capsys)
    one_line_error(rc, out, err, f"cannot reach {url}", "--url")


def test_a_dash_reads_the_prompt_from_stdin(lab_env, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("   \n"))
    one_line_error(*run(["query", "chat", "-"], capsys), "the prompt is empty")
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is 2+2?\n"))
    # Read and accepted: the next thing refused is the missing deployment.
    one_line_error(*run(["query", "chat", "-"], capsys), "no deployment recorded")


# --- labkit.query.ask on a stand-in client ---------------------------------------------------------


class FakeClient:
    """What ask() and ChatStream use of a Client: the model, errors, the streaming calls."""

    model = "m"
    base_url = "http://fake"

    def __init__(self, lines=(), chunks=()) -> None:
        self.lines = list(lines)
        self.chunks = list(chunks)

    def _errors(self, what: str):
        return nullcontext()

    def stream_generate(self, prompt: str, **params):
        yield from self.lines

    def generate(self, prompt: str, **params):
        return query.Generated(prompt, self.lines[-1], 0.5, params["use_beam_search"], params["n"])

    def stream_complete(self, prompt: str, **params):
        return ChatStream(self, prompt, iter(self.chunks), 0.0, kind="completion")


def completion_chunk(text: str | None, usage=None, finish=None):
    choices = [] if text is None else [SimpleNamespace(text=text, finish_reason=finish)]
    return SimpleNamespace(model="m", usage=usage, choices=choices)


def test_streamed_generate_shows_each_new_piece_once() -> None:
    client = FakeClient(lines=[["P"], ["P a"], ["P a b"], ["P a b"], ["P a b c"]])
    pieces: list[str] = []
    answer = query.ask(client, "generate", "P", stream=True, on_text=pieces.append)
    assert pieces == [" a", " b", " c"]
    assert answer.kind == "generate" and answer.text == " a b c" and answer.choices == [" a b c"]
    assert answer.ttft_s is not None and 0 <= answer.ttft_s <= answer.seconds
    assert answer.prompt_tokens is None and answer.model == "m"


def test_generate_answers_the_completions_without_the_prompt() -> None:
    client = FakeClient(lines=[["P x", "P y"]])
    answer = query.ask(client, "generate", "P", n=2, use_beam_search=True)
    assert answer.choices == [" x", " y"] and answer.text == " x" and answer.ttft_s is None


def test_a_streamed_completion_carries_usage_and_the_first_token_time() -> None:
    usage = SimpleNamespace(prompt_tokens=5, completion_tokens=3)
    chunks = [completion_chunk(" Pa"), completion_chunk("ris"), completion_chunk(".", finish="length"),
              completion_chunk(None, usage=usage)]  # fmt: skip
    pieces: list[str] = []
    answer = query.ask(FakeClient(chunks=chunks), "completion", "The capital is", stream=True,
                       on_text=pieces.append)  # fmt: skip
    assert pieces == [" Pa", "ris", "."] and answer.text == " Paris."
    assert answer.kind == "completion" and answer.finish_reason == "length"
    assert (answer.prompt_tokens, answer.completion_tokens) == (5, 3)
    assert answer.ttft_s is not None


def test_the_json_document_holds_answer_usage_and_timings() -> None:
    answer = query.Answer("chat", "q", "Paris", "m", 0.123456, ttft_s=0.05, prompt_tokens=7,
                          completion_tokens=2, finish_reason="stop", choices=["Paris"])  # fmt: skip
    doc = answer.document("http://x")
    assert doc.keys() == DOCUMENT
    assert doc["answer"] == "Paris" and doc["url"] == "http://x" and doc["choices"] == ["Paris"]
    assert doc["usage"] == {"prompt_tokens": 7, "completion_tokens": 2}
    assert doc["timings"] == {"seconds": 0.1235, "ttft_s": 0.05}
    line = answer.timing_line()
    assert "2 tokens" in line and "123 ms" in line and "first token after 50 ms" in line


@pytest.mark.parametrize("timeout", [0, -1, math.nan, math.inf])
def test_a_client_refuses_a_timeout_that_is_not_a_positive_number(timeout) -> None:
    with pytest.raises(query.QueryError) as exc:
        query.Client("http://127.0.0.1:1", timeout=timeout)
    assert "\n" not in str(exc.value) and "above 0" in str(exc.value)


def test_every_command_is_in_the_readme_and_query_and_bench_in_the_contracts() -> None:
    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert [name for name in sub.choices if f"labkit {name} " not in readme] == []
    contracts = (root / "docs" / "architecture.md").read_text()
    assert "`labkit query chat|complete|generate PROMPT" in contracts
    assert "`labkit bench [--requests N]" in contracts
