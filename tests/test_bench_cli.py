"""`labkit bench` and bench.Plan without a server: the notebook's defaults, refusals, the order of
step 08's parts (the real run: tests/test_cli_serving.py)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from test_query_cli import one_line_error, run

from labkit import bench
from labkit.cli import build_parser
from labkit.errors import ConfigError

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "08_benchmark.ipynb"
# Notebook 08's parameters and the Plan's fields they set.
PARAMETERS = {
    "NUM_REQUESTS": "requests",
    "MAX_OUTPUT_TOKENS": "max_output_tokens",
    "MAX_PROMPT_TOKENS": "max_prompt_tokens",
    "SEED": "seed",
    "CONCURRENCIES": "concurrencies",
    "PARALLEL_N": "parallel_n",
    "HF_REQUESTS": "hf_requests",
    "HF_BATCH": "hf_batch",
    "DTYPE": "dtype",
    "PROXY_ROUNDS": "proxy_rounds",
    "CROSS_CHECK": "cross_check",
}


def plan_of(argv: list[str]) -> bench.Plan:
    from labkit.cli.bench import _plan

    return _plan(build_parser().parse_args(["bench", *argv]))


def test_the_defaults_are_notebook_08s() -> None:
    import papermill

    declared = papermill.inspect_notebook(str(NOTEBOOK))
    plan = bench.Plan()
    for name, field in PARAMETERS.items():
        value = ast.literal_eval(declared[name]["default"])
        if name == "CONCURRENCIES":
            value = tuple(bench.parse_ints(value))
        assert getattr(plan, field) == value, name
    assert plan_of([]) == plan


def test_the_knobs_reach_the_plan() -> None:
    plan = plan_of(["--requests", "2", "--max-output-tokens", "0", "--concurrencies", "4, 1",
                    "--engines", "server,offline", "--parallel-n", "1", "--proxy-rounds", "0",
                    "--no-cross-check", "--seed", "7", "--dtype", "bfloat16"])  # fmt: skip
    assert (plan.requests, plan.max_output_tokens, plan.seed, plan.dtype) == (2, 0, 7, "bfloat16")
    assert plan.concurrencies == (4, 1) and plan.top == 4
    assert plan.engines == ("offline", "server")  # step 08's order, whatever the order given
    assert plan.ns == [1] and plan.proxy_rounds == 0 and not plan.cross_check
    assert bench.Plan(requests=8, hf_requests=4, parallel_n=3).offline_requests == [4, 8]
    assert bench.Plan(parallel_n=3).ns == [1, 3]


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--engines", "gpu"], ["engines gpu", "offline,server,hf"]),
        (["--engines", ","], ["engines", "one or more"]),
        (["--concurrencies", "1,x"], ["concurrencies '1,x'"]),
        (["--concurrencies", "0"], ["concurrencies"]),
        (["--requests", "0"], ["requests 0"]),
        (["--max-output-tokens", "2"], ["max output tokens 2"]),
        (["--max-prompt-tokens", "1"], ["max prompt tokens 1"]),
        (["--hf-batch", "0"], ["HF batch 0"]),
        (["--proxy-rounds", "-1"], ["proxy rounds -1"]),
        ([], ["no deployment recorded", "step 06", "--url"]),
    ],
)
def test_bad_input_is_one_line(argv, fragments, lab_env, capsys) -> None:
    one_line_error(*run(["bench", *argv], capsys), *fragments)


def test_a_server_that_is_not_there_is_one_line(lab_env, capsys, free_port) -> None:
    url = f"http://127.0.0.1:{free_port}"
    one_line_error(*run(["bench", "--url", url, "--json"], capsys), f"models of {url}")


def test_help_shows_the_defaults(capsys) -> None:
    rc, out, _ = run(["bench", "--help"], capsys)
    text = " ".join(out.split())
    assert rc == 0
    for flag in ("--requests", "(default 8)", "--max-output-tokens", "--concurrencies",
                 "(default 1,4,8)", "--engines", "(default offline,server,hf)", "--seed",
                 "--json", "--url", "--out", ".lab/benchmark"):  # fmt: skip
        assert flag in text, flag


# --- the order of step 08's parts --------------------------------------------------------------


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A Bench on an empty workload whose parts only say that they ran."""
    b = bench.Bench(tmp_path / "model", bench.Workload(seed=0, requests=[]), tmp_path / "out")
    b.calls = []
    for part in ("offline_runs", "server_runs", "hf_runs", "proxy_run", "cross_check_run"):
        monkeypatch.setattr(b, part, lambda plan, part=part: b.calls.append(part))
    return b


@pytest.mark.parametrize(
    ("engines", "parts"),
    [
        (bench.ENGINES,
         ["offline_runs", "server_runs", "hf_runs", "proxy_run", "cross_check_run"]),
        (("server",), ["server_runs", "proxy_run", "cross_check_run"]),
        (("offline", "hf"), ["offline_runs", "hf_runs"]),
    ],
)  # fmt: skip
def test_run_takes_the_plans_engines_in_the_notebooks_order(session, engines, parts) -> None:
    report = session.run(bench.Plan(engines=engines))
    assert session.calls == parts and isinstance(report, bench.BenchReport)


def test_parts_that_do_not_run_say_so_on_the_log(tmp_path: Path) -> None:
    lines: list[str] = []
    b = bench.Bench(
        tmp_path, bench.Workload(seed=0, requests=[]), tmp_path / "out", log=lines.append
    )
    plan = bench.Plan(proxy_rounds=0, cross_check=False)
    assert isinstance(b.proxy_run(plan), bench.Skipped)
    assert isinstance(b.cross_check_run(plan), bench.Skipped)
    assert lines == [
        "deployment URL vs straight to the server: skipped, no rounds asked for",
        "vllm bench serve: skipped, the cross-check is switched off",
    ]


def test_a_plan_refuses_what_step_08_cannot_run() -> None:
    with pytest.raises(ConfigError):
        bench.Plan(engines=())
    with pytest.raises(ConfigError):
        bench.Plan(concurrencies=())
    assert bench.parse_engines(["hf", "hf", "server"]) == ("server", "hf")
