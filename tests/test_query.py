"""labkit.query against a real vLLM server started once (runtime/entrypoint.py -> serve.py, eager,
on the default model, checking API keys), plus the pure parts: token cache, metrics, curl."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
from runtime_server import runtime_server

from labkit import query
from labkit.config import DEFAULT_MODEL_ID
from labkit.errors import LabError, StepError
from labkit.state import State
from labkit.util import net

PROMPT = "San Francisco is a"


def fake_jwt(exp: float, tag: str) -> str:
    """A JWT-shaped token with an ``exp`` claim (unsigned: vLLM compares the string only)."""

    def part(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part({'exp': exp, 'tag': tag})}.sig"


# Two keys the server accepts: the first expires at t=1000 on the tests' clock, the second later.
TOKEN_A = fake_jwt(1000, "a")
TOKEN_B = fake_jwt(5000, "b")


class Clock:
    """A clock the tests move by hand: the token cache's notion of now."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Provider:
    """A token provider that hands out the given tokens in turn and counts the calls."""

    def __init__(self, *tokens: str) -> None:
        self.tokens = list(tokens)
        self.calls = 0

    def __call__(self) -> str:
        token = self.tokens[min(self.calls, len(self.tokens) - 1)]
        self.calls += 1
        return f"Bearer {token}"  # as SAP's SDK and labkit.aicore return it


@pytest.fixture(scope="module")
def server(default_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The lab's runtime serving the default model, eager, with API keys TOKEN_A and TOKEN_B."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with runtime_server(default_model, log_path, arg=f"--api-key {TOKEN_A} {TOKEN_B}") as base:
        yield base


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[query.Client]:
    """A client with a token provider, as the lab makes one for a deployment."""
    with query.Client(
        server, token=Provider(TOKEN_B), headers={"AI-Resource-Group": "default"}
    ) as c:
        yield c


def assert_one_line(exc: BaseException, *fragments: str) -> None:
    text = str(exc)
    assert isinstance(exc, LabError) and "\n" not in text, text
    for fragment in fragments:
        assert fragment in text, text


# --- the OpenAI API ------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_chat_answers_and_reports_tokens(client: query.Client) -> None:
    assert client.models() == [DEFAULT_MODEL_ID] and client.model == DEFAULT_MODEL_ID
    answer = client.chat("What is the capital of France?", max_tokens=24)
    assert "Paris" in answer.text and answer.kind == "chat"
    assert answer.model == DEFAULT_MODEL_ID and answer.finish_reason in ("stop", "length")
    assert answer.prompt_tokens and 0 < answer.completion_tokens <= 24
    assert "Paris" in answer._repr_html_()


@pytest.mark.integration
@pytest.mark.slow
def test_streamed_chat_gives_the_same_text_piece_by_piece(client: query.Client) -> None:
    whole = client.chat("What is the capital of France?", max_tokens=16)
    stream = client.stream_chat("What is the capital of France?", max_tokens=16)
    pieces = list(stream)
    assert len(pieces) > 1 and "".join(pieces) == whole.text  # greedy: the same answer
    answer = stream.answer
    assert answer is not None and answer.text == whole.text
    assert answer.ttft_s is not None and 0 < answer.ttft_s <= answer.seconds
    assert answer.completion_tokens == whole.completion_tokens


@pytest.mark.integration
@pytest.mark.slow
def test_completions_n4_and_streaming(client: query.Client) -> None:
    greedy = client.complete("The capital of France is", max_tokens=6)
    assert "Paris" in greedy.text and greedy.kind == "completion"
    assert "".join(client.stream_complete("The capital of France is", max_tokens=6)) == greedy.text
    four = client.complete(PROMPT, max_tokens=6, n=4, temperature=0.9, seed=1)
    assert len(four.choices) == 4 and four.completion_tokens and four.completion_tokens <= 24


@pytest.mark.integration
@pytest.mark.slow
def test_batch_answers_every_prompt_in_order(client: query.Client) -> None:
    prompts = ["What is the capital of France?", "What is the capital of Germany?"]
    batch = client.batch(prompts, max_tokens=16, concurrency=2)
    assert [a.prompt for a in batch.answers] == prompts
    assert "Paris" in batch.answers[0].text and "Berlin" in batch.answers[1].text
    assert (
        batch.tokens_per_s > 0 and batch.to_dict()["completion_tokens"] == batch.completion_tokens
    )
    assert "Berlin" in batch._repr_html_()


# --- /generate (the legacy demo server's route in serve.py) ---------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_generate_returns_prompt_plus_completion(client: query.Client) -> None:
    one = client.generate(PROMPT, max_tokens=6)
    assert len(one.texts) == 1 and one.texts[0].startswith(PROMPT) and one.completions[0]
    # Greedy /generate is the same request as /v1/completions.
    assert one.completions == [client.complete(PROMPT, max_tokens=6).text]
    four = client.generate(PROMPT, n=4, temperature=0.9, max_tokens=6, seed=7)
    assert len(four.texts) == 4 and all(t.startswith(PROMPT) for t in four.texts)


@pytest.mark.integration
@pytest.mark.slow
def test_generate_with_beam_search_as_the_source_document_writes_it(client: query.Client) -> None:
    body = {"prompt": PROMPT, "use_beam_search": True, "n": 4, "temperature": 0, "max_tokens": 6}
    assert client.generate_body(PROMPT, use_beam_search=True, n=4, max_tokens=6) == body
    beams = client.generate(PROMPT, use_beam_search=True, n=4, max_tokens=6)
    assert len(beams.texts) == 4 and all(t.startswith(PROMPT) for t in beams.texts)
    assert len(set(beams.texts)) > 1  # distinct beams, best first
    # Beam search has no partial results: the stream is one line, the same beams.
    lines = list(client.stream_generate(PROMPT, use_beam_search=True, n=4, max_tokens=6))
    assert lines == [beams.texts]


@pytest.mark.integration
@pytest.mark.slow
def test_streamed_generate_grows_each_completion(client: query.Client) -> None:
    lines = list(client.stream_generate(PROMPT, max_tokens=5))
    assert len(lines) > 1 and all(len(texts) == 1 for texts in lines)
    assert all(b[0].startswith(a[0]) for a, b in pairwise(lines))
    assert lines[-1] == client.generate(PROMPT, max_tokens=5).texts


@pytest.mark.integration
@pytest.mark.slow
def test_generate_refusals_are_one_line(client: query.Client, server: str) -> None:
    with pytest.raises(query.QueryError) as exc:
        client.generate(PROMPT, max_tokens=5000)
    assert_one_line(exc.value, "400", "max_tokens", "max_model_len")
    raw = httpx.post(f"{server}/generate", content=b"not json", timeout=30, trust_env=False,
                     headers={"Authorization": f"Bearer {TOKEN_A}"})  # fmt: skip
    assert raw.status_code == 400 and "bad /generate request" in raw.json()["error"]["message"]
    missing = httpx.post(f"{server}/generate", json={"n": 2}, timeout=30, trust_env=False,
                         headers={"Authorization": f"Bearer {TOKEN_A}"})  # fmt: skip
    assert missing.status_code == 400 and '"prompt"' in missing.json()["error"]["message"]
    # The server checks API keys, and /generate with them (vLLM's own check covers /v1 only).
    anonymous = httpx.post(f"{server}/generate", json={"prompt": PROMPT}, timeout=30,
                           trust_env=False)  # fmt: skip
    assert anonymous.status_code == 401


# --- tokens ---------------------------------------------------------------------------------------


def test_a_jwt_is_kept_until_near_its_expiry() -> None:
    clock = Clock(0)
    provider = Provider(TOKEN_A, TOKEN_B)
    auth = query.TokenAuth(provider, clock=clock, margin=60)
    assert auth.token() == TOKEN_A and provider.calls == 1  # the Bearer prefix is dropped
    clock.now = 939
    assert auth.token() == TOKEN_A and provider.calls == 1
    clock.now = 941  # within 60 s of exp=1000
    assert auth.token() == TOKEN_B and provider.calls == 2
    assert "eyJ" not in repr(auth) and TOKEN_B not in repr(auth)


def test_an_opaque_token_is_asked_for_every_time() -> None:
    provider = Provider("opaque-1", "opaque-2")
    auth = query.TokenAuth(provider)
    assert [auth.token(), auth.token()] == ["opaque-1", "opaque-2"]
    assert query.jwt_expiry("opaque-1") is None and query.jwt_expiry(TOKEN_A) == 1000


@pytest.mark.integration
@pytest.mark.slow
def test_the_token_is_refreshed_as_it_expires(server: str) -> None:
    clock = Clock(0)
    provider = Provider(TOKEN_A, TOKEN_B)
    with query.Client(server, token=provider, clock=clock) as c:
        assert c.models() == [DEFAULT_MODEL_ID] and provider.calls == 1
        c.generate(PROMPT, max_tokens=2)  # /generate (httpx) shares the cache with openai
        c.complete(PROMPT, max_tokens=2)
        assert provider.calls == 1 and c.auth.token() == TOKEN_A
        clock.now = 990  # TOKEN_A is about to expire: the next request asks again
        c.complete(PROMPT, max_tokens=2)
        assert provider.calls == 2 and c.auth.token() == TOKEN_B
        c.generate(PROMPT, max_tokens=2)
        assert provider.calls == 2


@pytest.mark.integration
@pytest.mark.slow
def test_a_refused_token_is_asked_for_again_once(server: str) -> None:
    # Valid by its exp, but unknown to the server (revoked early).
    revoked = Provider(fake_jwt(10**10, "revoked"), TOKEN_B)
    with query.Client(server, token=revoked, clock=Clock(0)) as c:
        assert c.models() == [DEFAULT_MODEL_ID] and revoked.calls == 2
    revoked = Provider(fake_jwt(10**10, "revoked"), TOKEN_B)
    with query.Client(server, token=revoked, clock=Clock(0)) as c:
        assert c.generate(PROMPT, max_tokens=2).texts and revoked.calls == 2
    wrong = Provider("tok-zz9")
    with query.Client(server, token=wrong) as c, pytest.raises(query.QueryError) as exc:
        c.chat("hi", max_tokens=2)
    assert_one_line(exc.value, "refused the credentials", "401", "service key")
    assert "tok-zz9" not in str(exc.value)
    with query.Client(server) as c, pytest.raises(query.QueryError) as exc:
        c.models()  # a client without a token against a server that checks one
    assert_one_line(exc.value, "401", "token=")


# --- errors ---------------------------------------------------------------------------------------


def test_connect_uses_base_url_or_the_deployment_of_step_06(lab_env: Path) -> None:
    from labkit.config import load_config

    cfg = load_config()
    state = State(cfg.state_file)
    with query.connect(cfg, state, base_url="http://127.0.0.1:8000/v1/") as c:
        assert c.base_url == "http://127.0.0.1:8000" and c.auth is None
    with pytest.raises(StepError) as exc:
        query.connect(cfg, state)
    assert_one_line(exc.value, "no deployment recorded", "06_deploy.ipynb", "--url")
    state.record("deploy", {"deployment_id": "d123", "status": "PENDING", "deployment_url": ""})
    with pytest.raises(query.QueryError) as exc:
        query.connect(cfg, state)
    assert_one_line(exc.value, "d123 has no URL yet", "BASE_URL", "--url")


def test_a_bad_base_url_is_one_line() -> None:
    for url in ("", "localhost:8000", "ftp://x/y"):
        with pytest.raises(query.QueryError) as exc:
            query.Client(url)
        assert_one_line(exc.value, "not an http(s) URL")
    with query.Client(f"http://127.0.0.1:{net.free_port()}", max_retries=0) as c:
        for call in (c.models, lambda: c.generate(PROMPT), c.metrics):
            with pytest.raises(query.QueryError) as exc:
                call()
            assert_one_line(exc.value, "cannot reach http://127.0.0.1:", "the server is running")


@pytest.mark.integration
@pytest.mark.slow
def test_a_wrong_path_is_one_line(server: str) -> None:
    with query.Client(server + "/v2/inference/deployments/nope", token=Provider(TOKEN_A)) as c:
        with pytest.raises(query.QueryError) as exc:
            c.generate(PROMPT)
        assert_one_line(exc.value, "404")
        with pytest.raises(query.QueryError) as exc:
            c.models()
        assert_one_line(exc.value, "404")


# --- metrics --------------------------------------------------------------------------------------

PROMETHEUS = """\
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="m"} 3.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="m"} 7.0
vllm:generation_tokens_total{engine="0",model_name="m"} 120.0
vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.25
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="m"} 2.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.5",model_name="m"} 6.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="1.0",model_name="m"} 10.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} 10.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} 10.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 4.0
weird{label="a \\"quoted\\" value"} 1
not a sample line
"""


def test_metrics_parse_and_histogram_quantiles() -> None:
    metrics = query.Metrics.parse(PROMETHEUS)
    assert metrics.total("vllm:request_success_total") == 10
    assert metrics.total("vllm:request_success_total", finished_reason="stop") == 3
    assert metrics.samples[-1].labels == {"label": 'a "quoted" value'}
    ttft = metrics.histogram("vllm:time_to_first_token_seconds")
    assert ttft is not None and ttft.mean == pytest.approx(0.4)
    assert ttft.quantile(0.5) == pytest.approx(0.4)  # rank 5: 3/4 of the way through (0.1, 0.5]
    assert ttft.quantile(0.9) == pytest.approx(0.875)
    summary = metrics.summary()
    assert summary["requests finished"] == 10 and summary["generated tokens"] == 120
    assert summary["KV cache usage"] == 25.0 and summary["inter-token latency"] is None
    assert summary["time to first token"]["count"] == 10
    assert "p90 875 ms" in metrics._repr_html_()


@pytest.mark.integration
@pytest.mark.slow
def test_metrics_of_the_real_server(client: query.Client) -> None:
    before = client.metrics().summary()
    client.chat("What is the capital of France?", max_tokens=8)
    after = client.metrics()
    summary = after.summary()
    assert summary["requests finished"] == before["requests finished"] + 1
    assert summary["generated tokens"] > before["generated tokens"]
    for key in ("time to first token", "end-to-end latency"):
        h = summary[key]
        assert h["count"] >= 1 and 0 < h["p50_s"] <= h["p99_s"] and h["mean_s"] > 0
    assert after.url.endswith("/metrics") and "time to first token" in after._repr_html_()


# --- curl -----------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_curl_masks_the_token_and_works_once_it_is_set(client: query.Client) -> None:
    body = client.generate_body(PROMPT, max_tokens=3)
    command = client.curl("/generate", body)
    text = str(command)
    assert TOKEN_B not in text and TOKEN_B not in command._repr_html_()
    assert '-H "Authorization: Bearer $TOKEN"' in text and "AI-Resource-Group: default" in text
    ran = subprocess.run(["bash", "-c", text], env={**os.environ, "TOKEN": TOKEN_B},
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["text"] == client.generate(PROMPT, max_tokens=3).texts
    chat = client.curl(body=client.chat_body("What is the capital of France?", max_tokens=12))
    ran = subprocess.run(["bash", "-c", str(chat)], env={**os.environ, "TOKEN": TOKEN_B},
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert "Paris" in json.loads(ran.stdout)["choices"][0]["message"]["content"]


def test_the_curl_recipe_says_where_the_service_key_is() -> None:
    with query.Client("http://127.0.0.1:8000", token=lambda: "Bearer x", model="m") as c:
        c.service_key_file = "/lab/local/aicore-service-key.json"
        page = c.curl(body=c.chat_body("hi"))._repr_html_()
        assert "the service key in <code>/lab/local/aicore-service-key.json</code>" in page
        assert "KEY=/lab/local/aicore-service-key.json" in page and "jq -r .clientid" in page
        c.service_key_file = ""
        assert "AICORE_SERVICE_KEY" in c.curl()._repr_html_()


def test_curl_without_auth_has_no_authorization_header() -> None:
    with query.Client("http://127.0.0.1:8000", model="m") as c:
        command = c.curl(body=c.chat_body("hi"))
    assert "Authorization" not in command.text and not command.needs_token
    assert command.text.startswith("curl -sS http://127.0.0.1:8000/v1/chat/completions")


# --- the chat box and the record ------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_chat_box_streams_into_the_widget_and_records(client: query.Client, lab_env: Path) -> None:
    box = query.chat_box(client, max_tokens=16)
    answer = box.ask("What is the capital of France?")
    assert box.text == answer.text and "Paris" in answer.text
    assert box.question.value == "What is the capital of France?" and box.answers == [answer]
    assert "first token after" in box.status.value
    box.question.value = "What is the capital of Germany?"
    box.question._handle_string_msg(None, {"event": "submit"}, None)  # what Enter sends
    assert len(box.answers) == 2 and "Berlin" in box.text == box.answers[1].text
    samples = client.batch(["What is the capital of France?"], max_tokens=8)
    state = State(lab_env / "state.json")
    generated = client.generate(PROMPT, max_tokens=3)
    data = query.record(state, client, samples=samples, chat=answer, generated=[generated],
                        metrics=client.metrics())  # fmt: skip
    stored = State(lab_env / "state.json").require("query")
    assert stored == data and stored["model"] == DEFAULT_MODEL_ID
    assert stored["samples"][0]["prompt"] == "What is the capital of France?"
    assert stored["latency"]["chat_ttft_s"] == round(answer.ttft_s, 3)
    assert stored["generate"][0]["texts"] == generated.texts
    assert TOKEN_B not in (lab_env / "state.json").read_text()


# --- offline batch ------------------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_offline_batch_with_vllm_llm_in_a_child_process(
    default_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    prompts = ["What is the capital of France?", "What is the capital of Germany?"]
    result = query.offline_batch(default_model, prompts, max_tokens=16, log=tmp_path / "o.log")
    assert "offline batch: done" in capsys.readouterr().err  # the bar followed the child
    assert result.prompts == prompts and len(result.texts) == 2
    assert "Paris" in result.texts[0] and "Berlin" in result.texts[1]
    assert 0 < result.output_tokens <= 32 and result.tokens_per_s > 0 and result.load_s > 0
    assert "vllm.LLM" in result._repr_html_()


def test_the_offline_progress_bar_follows_the_stages_the_child_marks(tmp_path: Path) -> None:
    from labkit.query.offline import StageBar, _mark

    job = {"stages": str(tmp_path / "stages")}
    with StageBar(tmp_path / "stages", 5, show=False) as bar:
        bar.update()  # no file yet: still starting
        assert bar.stage == 0 and "starting" in bar.description
        _mark(job, 1)
        bar.update()
        assert bar.stage == 1 and "loading the model" in bar.description
        _mark(job, 2)
        bar.update()
        assert "answering 5 prompts" in bar.description
        _mark(job, 3)
    assert bar.stage == 3 and bar.description.endswith("done")


def test_offline_batch_refuses_a_folder_without_a_model(tmp_path: Path) -> None:
    with pytest.raises(query.QueryError) as exc:
        query.offline_batch(tmp_path)
    assert_one_line(exc.value, "no config.json", "snapshot_dir")
