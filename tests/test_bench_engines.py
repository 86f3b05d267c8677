"""labkit.bench.engines and server: workers, the lab's targets, and real runs of the server engine,
the HF worker and vLLM's own client against a real vLLM server (no timings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labkit import bench
from labkit.errors import ServiceError, StepError
from labkit.state import State

# --- workers and the lab's targets -------------------------------------------------------------


def test_a_worker_that_cannot_load_says_so_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(StepError) as exc:
        bench.Worker("hf", {"model": str(tmp_path / "nothing")}, log_path=tmp_path / "w.log")
    assert "hf worker" in str(exc.value) and "\n" not in str(exc.value)


def test_local_predictor_url_reads_the_local_ai_cores_record(lab_env: Path, tmp_path: Path) -> None:
    from labkit.config import load_config

    cfg = load_config(local_dir=tmp_path / "local")
    assert bench.local_predictor_url(cfg, "d1") is None
    state = {
        "deployments": {
            "default": {
                "d1": {"status": "RUNNING", "_process": {"port": 45678}},
                "d2": {"status": "STOPPED", "_process": None},
            }
        }
    }
    (tmp_path / "local" / "aicore").mkdir(parents=True)
    (tmp_path / "local" / "aicore" / "state.json").write_text(json.dumps(state))
    assert bench.local_predictor_url(cfg, "d1") == "http://127.0.0.1:45678"
    assert bench.local_predictor_url(cfg, "d2") is None
    assert bench.local_predictor_url(cfg, "nope") is None
    assert bench.local_predictor_url(load_config(profile="aicore"), "d1") is None


def test_targets_never_show_their_headers() -> None:
    t = bench.Target("deployment", "http://x", "m", lambda: {"Authorization": "Bearer s3cr3t"})
    assert "s3cr3t" not in repr(t) and "s3cr3t" not in json.dumps(t.public())


@pytest.mark.integration
@pytest.mark.slow
def test_hf_worker_runs_one_at_a_time_and_in_static_batches(tokenizer, default_model, tmp_path):
    wl = bench.sample_workload(tokenizer, 3, seed=2, max_output_tokens=8)
    with bench.Worker(
        "hf", {"model": str(default_model), "threads": 1}, log_path=tmp_path / "hf.log"
    ) as worker:
        assert worker.info["dtype"] == "float32" and worker.info["threads"] == 1
        single = bench.run_hf(worker, wl, mode="single")
        static = bench.run_hf(worker, wl, mode="static", n=3, batch_size=2)
    for run, n in ((single, 1), (static, 3)):
        assert run.completed == 3 and [r.index for r in run.records] == [0, 1, 2]
        for r, req in zip(run.records, wl.requests, strict=True):
            assert r.complete and r.output_tokens == req.output_tokens * n
            assert r.prompt_tokens == req.prompt_tokens
            assert 0 < r.ttft_s <= r.latency_s
            assert len(r.itl_s) == (req.output_tokens - 1) * n
    assert single.batch_size == 1 and static.batch_size == 2
    assert worker.proc.poll() is not None  # closed with the context


# --- the real thing: one vLLM server for the module ---------------------------------------------


@pytest.fixture(scope="module")
def server(default_model: Path, tmp_path_factory: pytest.TempPathFactory):
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    with bench.VllmServer(default_model, served_name="bench-test", log_path=log) as srv:
        yield srv
    assert srv.proc.poll() is not None


@pytest.mark.integration
@pytest.mark.slow
def test_server_engine_gives_sane_complete_records(server, tokenizer) -> None:
    wl = bench.sample_workload(tokenizer, 4, seed=5, max_output_tokens=12)
    target = bench.server_target(server.base_url)
    assert target.model == "bench-test"
    for n in (1, 3):
        run = bench.run_server(target, wl, concurrency=2, n=n, progress=False)
        assert run.completed == 4 and run.concurrency == 2 and run.n == n
        assert run.engine == "vllm-server-direct"
        for r, req in zip(run.records, wl.requests, strict=True):
            assert r.ok and r.complete, r
            assert r.output_tokens == req.output_tokens * n  # ignore_eos: the full budget
            assert r.prompt_tokens == req.prompt_tokens  # the server counts what we counted
            assert 0 < r.ttft_s <= r.latency_s
            assert len(r.finish_reasons) == n and set(r.finish_reasons) == {"length"}
            # A gap per chunk: one per token, fewer when vLLM merged tokens into one chunk
            # (CI saw 8 gaps for 12 tokens on a busy machine).
            assert len(r.itl_s) <= (req.output_tokens - 1) * n
            assert all(g >= 0 for g in r.itl_s) and r.ttft_s + sum(r.itl_s) / n <= r.latency_s
        assert run.output_tokens == wl.output_tokens * n
        assert run.output_tokens_per_s > 0 and run.metric("itl_s", 99) >= run.metric("itl_s", 50)


@pytest.mark.integration
@pytest.mark.slow
def test_a_stopping_request_is_complete_and_errors_are_records(server, tokenizer) -> None:
    wl = bench.sample_workload(tokenizer, 2, seed=5, max_output_tokens=40)
    target = bench.server_target(server.base_url)
    run = bench.run_server(target, wl, concurrency=2, ignore_eos=False, progress=False)
    for r in run.records:
        assert r.complete and r.output_tokens <= r.max_tokens
        assert r.finish_reasons[0] in ("stop", "length")
    wrong = bench.Target("direct", server.base_url, "no-such-model")
    with pytest.raises(ServiceError):
        bench.run_server(wrong, wl, concurrency=1, progress=False)
    failed = bench.run_server(wrong, wl, concurrency=1, warmup=False, progress=False)
    assert failed.completed == 0 and all("HTTP 404" in r.error for r in failed.records)


@pytest.mark.integration
@pytest.mark.slow
def test_vllm_bench_serve_replays_the_same_workload(server, tokenizer, default_model, tmp_path):
    wl = bench.sample_workload(tokenizer, 4, seed=5, max_output_tokens=12)
    target = bench.server_target(server.base_url)
    ours = bench.run_server(target, wl, concurrency=2, progress=False)
    check = bench.vllm_bench_serve(
        target, wl, concurrency=2, tokenizer=default_model, out_dir=tmp_path, ours=ours
    )
    assert check.ok, check.reason
    assert check.theirs["completed"] == 4 and check.theirs["failed"] == 0
    assert check.theirs["total_input_tokens"] == wl.prompt_tokens
    assert check.theirs["total_output_tokens"] == wl.output_tokens
    assert all(v is not None and v > 0 for v in check.ratios().values())
    assert check.command[:3] == ["vllm", "bench", "serve"]


@pytest.mark.integration
@pytest.mark.slow
def test_bench_session_records_the_benchmark(server, default_model, tmp_path, lab_env) -> None:
    b = bench.Bench.open(
        default_model,
        tmp_path / "out",
        num_requests=3,
        seed=0,
        max_output_tokens=8,
        direct=server.target(),
        progress=False,
    )
    with b:
        table = b.sweep([1, 2])
        skipped = b.compare_proxy(2)
        b.notes.append("test run")
        result = b.record(State(lab_env / "state.json"))
    assert isinstance(skipped, bench.Skipped) and "deployment URL" in skipped.reason
    assert [r.concurrency for r in table] == [1, 2] and "<table>" in table._repr_html_()
    assert State(lab_env / "state.json").require("benchmark") == result
    assert [r["concurrency"] for r in result["runs"]] == [1, 2]
    assert Path(result["results_file"]).is_file()
    assert all(Path(p).is_file() for p in result["plots"])
    assert "| vLLM server straight to it, concurrency 2 | 1 | 3/3 |" in result["table_markdown"]
    back = bench.BenchReport.load(result["results_file"])
    assert len(back.runs) == 2 and back.runs[0].records and "test run" in back.notes
