"""labkit.bench: the seeded workload, the metrics, the results file and plots, and real runs of
the server engine, the HF worker and vLLM's own client against a real vLLM server (no timings)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from labkit import bench
from labkit.errors import ConfigError, ServiceError, StepError
from labkit.state import State

# Entries of the shipped prompt set that vLLM's ShareGPT filter must drop with the default model's
# tokenizer: two logs over 1024 prompt tokens, two long answers whose prompt + output pass 2048.
OVER_THE_LIMITS = {"logs-05", "logs-06", "document-21", "document-22"}


class WordTokenizer:
    """One token a whitespace-separated word; no chat template."""

    chat_template = None

    def __call__(self, text: str) -> object:
        return type("Enc", (), {"input_ids": [hash(w) % 1000 for w in text.split()]})()


def prompt(pid: str, words: int, out: int) -> bench.Prompt:
    return bench.Prompt(pid, "test", " ".join(["w"] * words), out)


# --- the prompt set and the workload ------------------------------------------------------------


def test_the_shipped_prompt_set_is_about_a_hundred_varied_prompts() -> None:
    prompts = bench.load_prompts()
    assert 90 <= len(prompts) <= 120
    assert len({p.id for p in prompts}) == len(prompts)
    assert len({p.category for p in prompts}) >= 8
    assert all(p.prompt.strip() and p.output_tokens >= bench.MIN_TOKENS for p in prompts)
    words = [len(p.prompt.split()) for p in prompts]
    assert min(words) < 10 and max(words) > 400  # short questions to long documents


def test_a_bad_prompt_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"prompt": "hi", "output_tokens": 5}\n{"prompt": "no length"}\n')
    with pytest.raises(ConfigError) as exc:
        bench.load_prompts(bad)
    assert "line 2" in str(exc.value) and "\n" not in str(exc.value)
    with pytest.raises(ConfigError):
        bench.load_prompts(tmp_path / "missing.jsonl")


def test_the_filter_is_vllms_sharegpt_filter() -> None:
    assert bench.is_valid_pair(4, 4)
    assert bench.is_valid_pair(1024, 1024)
    assert not bench.is_valid_pair(3, 100)  # prompt too short
    assert not bench.is_valid_pair(100, 3)  # output too short
    assert not bench.is_valid_pair(1025, 10)  # prompt over 1024
    assert not bench.is_valid_pair(1000, 1049)  # prompt + output over 2048


def test_sampling_shuffles_with_the_seed_filters_and_oversamples() -> None:
    pool = [prompt(f"p{i}", 5 + i, 10 + i) for i in range(10)]
    pool.append(prompt("too-long", 1100, 10))
    pool.append(prompt("total-too-long", 1000, 1100))
    tok = WordTokenizer()
    a = bench.sample_workload(tok, 30, seed=7, prompts=pool)
    b = bench.sample_workload(tok, 30, seed=7, prompts=pool)
    c = bench.sample_workload(tok, 30, seed=8, prompts=pool)
    ids = [r.id for r in a.requests]
    assert ids == [r.id for r in b.requests]
    assert ids[:10] != [r.id for r in c.requests][:10]
    assert set(ids[:10]) == {f"p{i}" for i in range(10)}  # every valid prompt once, then repeats
    assert sorted(a.dropped) == ["too-long", "total-too-long"] and a.oversampled == 20
    assert [r.index for r in a.requests] == list(range(30))
    few = bench.sample_workload(tok, 3, seed=7, prompts=pool)
    assert [r.id for r in few.requests] == ids[:3]  # a smaller workload is a prefix
    capped = bench.sample_workload(tok, 10, seed=7, prompts=pool, max_output_tokens=12)
    assert max(r.output_tokens for r in capped.requests) == 12


def test_sampling_refuses_what_cannot_work() -> None:
    tok = WordTokenizer()
    with pytest.raises(ConfigError):
        bench.sample_workload(tok, 0, prompts=[prompt("a", 10, 10)])
    with pytest.raises(ConfigError):
        bench.sample_workload(tok, 2, prompts=[prompt("a", 10, 10)], max_output_tokens=3)
    with pytest.raises(ConfigError) as exc:
        bench.sample_workload(tok, 2, prompts=[prompt("a", 2000, 10)])
    assert "max_prompt_tokens" in str(exc.value)


@pytest.fixture(scope="module")
def tokenizer(default_model: Path):
    return bench.load_tokenizer(default_model)


def test_workload_with_the_models_tokenizer_is_deterministic_and_within_limits(tokenizer) -> None:
    a = bench.sample_workload(tokenizer, 150, seed=3)
    b = bench.sample_workload(tokenizer, 150, seed=3)
    assert [(r.id, r.prompt_token_ids, r.output_tokens) for r in a.requests] == [
        (r.id, r.prompt_token_ids, r.output_tokens) for r in b.requests
    ]
    assert set(a.dropped) == OVER_THE_LIMITS  # 150 > the set: every prompt was looked at
    assert a.oversampled == 150 - (len(bench.load_prompts()) - len(OVER_THE_LIMITS))
    for r in a.requests:
        assert bench.MIN_TOKENS <= r.prompt_tokens <= bench.MAX_PROMPT_TOKENS
        assert r.prompt_tokens + r.output_tokens <= bench.MAX_TOTAL_TOKENS
        # the chat template is applied, and the ids are the tokenizer's for the text sent
        assert r.prompt.startswith("<|im_start|>") and r.prompt.endswith("assistant\n")
        assert list(r.prompt_token_ids) == tokenizer(r.prompt).input_ids
    assert max(r.prompt_tokens for r in a.requests) > 500  # long prompts are in the mix
    small = bench.sample_workload(tokenizer, 8, seed=3, max_output_tokens=64)
    assert [r.id for r in small.requests] == [r.id for r in a.requests[:8]]
    assert all(r.output_tokens <= 64 for r in small.requests)
    assert small.summary()["output_tokens"]["max"] <= 64
    assert "8 requests" in small._repr_html_()


def test_sharegpt_export_gives_each_request_its_exact_lengths(tokenizer, tmp_path: Path) -> None:
    wl = bench.sample_workload(tokenizer, 6, seed=1, max_output_tokens=100)
    data = json.loads(wl.to_sharegpt(tmp_path / "w.json", tokenizer).read_text())
    assert len(data) == 6
    for r, entry in zip(wl.requests, data, strict=True):
        human, gpt = entry["conversations"]
        assert human["value"] == r.prompt
        assert len(tokenizer(gpt["value"]).input_ids) == r.output_tokens


# --- metrics ------------------------------------------------------------------------------------


def test_percentile_matches_numpys_linear_interpolation() -> None:
    np = pytest.importorskip("numpy")
    values = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 1.5]
    for q in (0, 1, 25, 50, 90, 99, 100):
        assert math.isclose(bench.percentile(values, q), float(np.percentile(values, q)))
    assert bench.percentile([], 50) is None
    assert bench.percentile([2.0], 99) == 2.0
    with pytest.raises(ValueError):
        bench.percentile([1.0], 101)


def test_run_metrics_from_synthetic_timestamps() -> None:
    # Two requests: token stamps at known times after each request's start.
    stamps = {0: [0.2, 0.3, 0.4, 0.5], 1: [1.0, 1.5, 2.0]}
    records = [
        bench.RequestRecord(
            index=i,
            prompt_tokens=10,
            max_tokens=len(s),
            n=1,
            output_tokens=len(s),
            ttft_s=s[0],
            latency_s=s[-1],
            itl_s=bench.gaps(s),
            finish_reasons=["length"],
        )
        for i, s in stamps.items()
    ]
    failed = bench.RequestRecord(index=2, prompt_tokens=10, max_tokens=4, n=1, error="HTTP 500")
    run = bench.RunResult(
        "vllm-server-direct", "test", 1, duration_s=2.0, records=[*records, failed]
    )
    assert run.completed == 2 and run.output_tokens == 7 and run.prompt_tokens == 20
    assert run.output_tokens_per_s == 3.5
    assert run.requests_per_min == 60.0
    assert math.isclose(run.metric("ttft_s", 50), 0.6)
    assert math.isclose(run.metric("ttft_s", 99), 0.2 + 0.8 * 0.99)
    itl = [0.1, 0.1, 0.1, 0.5, 0.5]
    assert math.isclose(run.metric("itl_s", 50), statistics.median(itl))
    assert math.isclose(run.metric("latency_s", 50), 1.25)
    s = run.summary()
    assert s["requests"] == 3 and s["completed"] == 2 and s["output_tokens_per_s"] == 3.5
    offline = bench.RunResult("vllm-offline", "o", 1, 1.0, records[:1])
    offline.records[0].ttft_s = None
    offline.records[0].itl_s = []
    assert offline.metric("itl_s", 50) is None
    assert "3.5" in run._repr_html_() and "1 failed" in run._repr_html_()


def test_a_record_is_complete_when_it_ran_to_its_budget_or_stopped() -> None:
    def rec(out: int, reasons: list[str], n: int = 1, error: str | None = None):
        return bench.RequestRecord(0, 5, 8, n, out, finish_reasons=reasons, error=error)

    assert rec(8, ["length"]).complete
    assert rec(24, ["length"] * 3, n=3).complete
    assert rec(5, ["stop"]).complete
    assert not rec(5, ["length"]).complete
    assert not rec(8, ["length"], error="boom").complete


def test_sse_lines() -> None:
    assert bench._parse_sse('data: {"a": 1}') == {"a": 1}
    assert bench._parse_sse("data: [DONE]") is None
    assert bench._parse_sse(": keep-alive") is None
    assert bench._parse_sse("") is None


def test_parse_ints() -> None:
    assert bench.parse_ints("1, 4,8") == [1, 4, 8]
    for bad in ("", "0,2", "a,b"):
        with pytest.raises(ConfigError):
            bench.parse_ints(bad)


# --- the report: JSON round trip, ratios, table, plots ------------------------------------------


def synthetic_run(engine: str, tok_s: float, n: int = 1, count: int = 4, **kw) -> bench.RunResult:
    recs = [
        bench.RequestRecord(
            i, 20, 10, n, 10 * n, 0.1 * (i + 1), 1.0 + i, [0.05] * 9, ["length"] * n
        )
        for i in range(count)
    ]
    return bench.RunResult(engine, engine, n, duration_s=10 * count * n / tok_s, records=recs, **kw)


def synthetic_report() -> bench.BenchReport:
    runs = [
        synthetic_run("vllm-offline", 400.0, batch_size=4),
        synthetic_run("vllm-offline", 900.0, n=3, batch_size=4),
        synthetic_run("vllm-server-deployment", 100.0, concurrency=1),
        synthetic_run("vllm-server-deployment", 300.0, concurrency=4),
        synthetic_run("vllm-server-deployment", 280.0, concurrency=8),
        synthetic_run("vllm-server-deployment", 700.0, n=3, concurrency=8),
        synthetic_run("hf-single", 20.0, batch_size=1),
        synthetic_run("hf-static", 100.0, batch_size=4),
        synthetic_run("hf-single", 45.0, n=3, batch_size=1),
    ]
    proxy = bench.ProxyComparison(
        8, 1, deployment_tok_s=[290.0, 300.0], direct_tok_s=[300.0, 305.0]
    )
    cross = bench.CrossCheck(
        4,
        True,
        theirs={
            "output_throughput": 330.0,
            "request_throughput": 0.5,
            "median_ttft_ms": 200.0,
            "median_itl_ms": 50.0,
        },
        ours=runs[3].summary(),
    )
    return bench.BenchReport(
        model="m",
        machine={"cpu": "x", "cores": 2, "memory_gib": 8, "gpu": "none"},
        workload={"seed": 0, "requests": 4},
        runs=runs,
        proxy=proxy,
        crosscheck=cross,
        notes=["a note"],
    )


def test_results_json_round_trip(tmp_path: Path) -> None:
    report = synthetic_report()
    path = report.save(tmp_path / "out" / "results.json")
    back = bench.BenchReport.load(path)
    assert back.to_dict() == report.to_dict()
    assert back.runs[2].records[1].itl_s == [0.05] * 9
    data = json.loads(path.read_text())
    assert data["format"] == bench.RESULTS_FORMAT and data["launch_post"]["rows"]
    data["format"] = 99
    with pytest.raises(StepError):
        bench.BenchReport.from_dict(data)


def test_ratios_beside_the_launch_post() -> None:
    report = synthetic_report()
    ratios = {(r.n, r.vllm, r.baseline): r for r in report.ratios()}
    assert math.isclose(ratios[(1, "vLLM offline", "HF one at a time")].ratio, 20.0)
    assert math.isclose(ratios[(1, "vLLM server (c=4)", "HF static batching (4)")].ratio, 3.0)
    assert math.isclose(ratios[(3, "vLLM offline", "HF one at a time")].ratio, 20.0)
    one = ratios[(1, "vLLM offline", "HF one at a time")]
    assert (one.post_low, one.post_high) == (14.0, 24.0)
    tgi = [r for r in report.ratios() if r.baseline == "TGI"]
    assert [r.n for r in tgi] == [1, 3] and all(r.ratio is None for r in tgi)
    assert (tgi[1].post_low, tgi[1].post_high) == (3.3, 3.5)
    table = report.launch_post_table()
    md = table.to_markdown()
    assert "20.0x" in md and "14x - 24x" in md and "not measured" in md
    assert "TGI is not measured here" in table._repr_html_()
    full = report.to_markdown()
    assert full.count("\n| ") >= len(report.runs) + 5 and "0.975x throughput" in full
    assert math.isclose(report.proxy.ratio, 295 / 302.5) and report.proxy.within_budget
    assert math.isclose(report.crosscheck.ratios()["output_tokens_per_s"], 1.1)
    per_min = report.crosscheck.ratios()["requests_per_min"]
    assert math.isclose(per_min, 0.5 * 60 / report.runs[3].requests_per_min, abs_tol=1e-4)


def test_ratios_compare_the_same_requests_when_vllm_ran_them() -> None:
    runs = [
        synthetic_run("vllm-offline", 400.0, count=4),
        synthetic_run("hf-single", 20.0, count=2, batch_size=1),
    ]
    report = bench.BenchReport("m", {}, {}, runs=runs)
    (only,) = [r for r in report.ratios() if r.baseline != "TGI"]
    assert math.isclose(only.ratio, 20.0) and "not the same requests" in only.note
    report.runs.append(synthetic_run("vllm-offline", 300.0, count=2))
    (only,) = [r for r in report.ratios() if r.baseline != "TGI"]
    assert math.isclose(only.ratio, 15.0) and "the same 2 requests" in only.note
    assert report.find("vllm-offline").num_requests == 4  # default: the whole workload
    bars = report.plot_throughput().figure.axes[0].patches
    assert [round(b.get_height()) for b in bars] == [400, 20]  # the plot shows the whole workload


def test_find_takes_the_median_of_repeated_rounds() -> None:
    runs = [synthetic_run("hf-single", t, batch_size=1) for t in (30.0, 10.0, 20.0)]
    report = bench.BenchReport("m", {}, {}, runs=runs)
    assert math.isclose(report.find("hf-single").output_tokens_per_s, 20.0)


def test_the_proxy_verdict() -> None:
    slow = bench.ProxyComparison(4, 1, deployment_tok_s=[90.0], direct_tok_s=[100.0])
    assert math.isclose(slow.ratio, 0.9) and not slow.within_budget
    assert "over" in slow._repr_html_()
    back = bench.ProxyComparison.from_dict(slow.to_dict())
    assert back == slow


def test_plots_are_drawn_and_saved(tmp_path: Path) -> None:
    report = synthetic_report()
    fig = report.plot_throughput(tmp_path / "t.png").figure
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * 4  # n=1 and n=3 bars for 4 engines
    assert ax.get_xticklabels()[0].get_text() == "vLLM offline"
    fig = report.plot_latency(tmp_path / "l.png").figure
    lines = fig.axes[0].get_lines()
    assert len(lines) == 4 and list(lines[0].get_xdata()) == [1, 4, 8]
    for name in ("t.png", "l.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.plot_latency()._repr_png_()[:4] == b"\x89PNG"  # a notebook shows it as is


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
            assert len(r.itl_s) == (req.output_tokens - 1) * n
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
