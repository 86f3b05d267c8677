"""`labkit query` and `labkit bench` as a pipeline runs them, against a real server: the lab's
runtime (the OpenAI API and /generate) on the default model, started once, no token (--url)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from labkit_cli import labkit
from runtime_server import runtime_server
from test_query_cli import DOCUMENT

from labkit.config import DEFAULT_MODEL_ID
from labkit.state import State

pytestmark = [pytest.mark.integration, pytest.mark.slow]
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def server(default_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with runtime_server(default_model, tmp_path_factory.mktemp("cli") / "server.log") as base:
        yield base


def query(server: str, *args: str) -> tuple[str, str]:
    out = labkit("query", *args, "--url", server)
    assert out.returncode == 0, out.stderr
    return out.stdout, out.stderr


def query_json(server: str, *args: str) -> dict:
    stdout, _ = query(server, *args, "--json")
    data = json.loads(stdout)
    assert data.keys() == DOCUMENT and data["url"] == server and data["model"] == DEFAULT_MODEL_ID
    return data


def test_chat_answers_a_simple_question(server: str) -> None:
    data = query_json(server, "chat", QUESTION)
    assert "Paris" in data["answer"] and data["kind"] == "chat" and data["prompt"] == QUESTION
    assert data["usage"]["prompt_tokens"] > 0 and 0 < data["usage"]["completion_tokens"] <= 64
    assert data["timings"]["seconds"] > 0 and data["timings"]["ttft_s"] is None
    stdout, stderr = query(server, "chat", QUESTION)
    assert stdout == data["answer"] + "\n"  # the answer alone, for answer=$(labkit query ...)
    assert DEFAULT_MODEL_ID in stderr and "tokens in" in stderr


def test_streamed_chat_prints_the_same_answer_and_times_the_first_token(server: str) -> None:
    whole = query_json(server, "chat", QUESTION)
    streamed = query_json(server, "chat", QUESTION, "--stream")
    assert streamed["answer"] == whole["answer"]
    assert streamed["usage"] == whole["usage"]
    assert 0 < streamed["timings"]["ttft_s"] <= streamed["timings"]["seconds"]
    stdout, stderr = query(server, "chat", QUESTION, "--stream")
    assert stdout == whole["answer"] + "\n" and "first token after" in stderr


def test_completion_streamed_or_not(server: str) -> None:
    data = query_json(server, "complete", "The capital of France is", "--max-tokens", "6")
    assert "Paris" in data["answer"] and data["kind"] == "completion"
    streamed = query_json(server, "complete", "The capital of France is", "--max-tokens", "6",
                          "--stream")  # fmt: skip
    assert streamed["answer"] == data["answer"] and streamed["usage"] == data["usage"]
    assert streamed["timings"]["ttft_s"] is not None


def test_generate_as_the_quickstart_writes_it(server: str) -> None:
    prompt = "San Francisco is a"
    data = query_json(server, "generate", prompt, "--max-tokens", "5")
    # Greedy /generate is the same request as /v1/completions, without the prompt in front.
    assert data["kind"] == "generate" and data["answer"]
    assert data["answer"] == query_json(server, "complete", prompt, "--max-tokens", "5")["answer"]
    assert data["usage"] == {"prompt_tokens": None, "completion_tokens": None}
    stdout, _ = query(server, "generate", prompt, "--max-tokens", "5", "--stream")
    assert stdout == data["answer"] + "\n"
    beams = query_json(server, "generate", prompt, "--max-tokens", "5", "--n", "2",
                       "--beam-search")  # fmt: skip
    assert len(beams["choices"]) == 2 and beams["answer"] == beams["choices"][0]
    stdout, _ = query(server, "generate", prompt, "--max-tokens", "5", "--n", "2", "--beam-search")
    assert stdout.startswith("[1] ") and "\n[2] " in stdout


def test_a_refusal_of_the_server_is_one_line(server: str) -> None:
    out = labkit("query", "complete", "x", "--max-tokens", "5000", "--url", server)
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "max_tokens" in out.stderr


def test_bench_writes_step_08s_results_file_and_records_it(server: str, tmp_path: Path) -> None:
    lab = tmp_path / "lab"
    out = labkit("bench", "--url", server, "--engines", "server", "--requests", "2",
                 "--max-output-tokens", "8", "--concurrencies", "1,2", "--parallel-n", "1",
                 "--no-cross-check", "--json", env={"LABKIT_LAB_DIR": str(lab)})  # fmt: skip
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["results_file"] == str(lab / "benchmark" / "results.json")  # as notebook 08
    assert Path(data["results_file"]).is_file() and all(Path(p).is_file() for p in data["plots"])
    assert [(r["engine"], r["concurrency"], r["completed"]) for r in data["runs"]] == [
        ("vllm-server-direct", 1, 2), ("vllm-server-direct", 2, 2)]  # fmt: skip
    assert data["workload"]["requests"] == 2 and data["workload"]["max_output_tokens"] == 8
    assert State(lab / "state.json").require("benchmark") == data
    # Progress on stderr: the skipped proxy comparison, a line per run.
    assert "deployment URL vs straight to the server: skipped" in out.stderr
    assert out.stderr.count("requests in") == 2
