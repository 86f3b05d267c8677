"""The `labkit bench` command of step 08: the notebook's workload through its engines, from a
terminal; the same results file, plots and state record; a line per run on stderr."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from labkit.cli.common import emit
from labkit.config import Config


def _plan(args: argparse.Namespace):  # -> labkit.bench.Plan (imported when the command runs)
    from labkit import bench

    return bench.Plan(
        requests=args.requests,
        max_output_tokens=args.max_output_tokens,
        max_prompt_tokens=args.max_prompt_tokens,
        seed=args.seed,
        concurrencies=tuple(bench.parse_ints(args.concurrencies)),
        parallel_n=args.parallel_n,
        hf_requests=args.hf_requests,
        hf_batch=args.hf_batch,
        dtype=args.dtype,
        engines=bench.parse_engines(args.engines),
        proxy_rounds=args.proxy_rounds,
        cross_check=not args.no_cross_check,
    )


def _cmd_bench(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import bench
    from labkit.state import State

    plan = _plan(args)  # bad knobs are refused before anything starts

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    state = State(cfg.state_file)
    with bench.open_bench(
        cfg,
        state,
        plan,
        base_url=args.url,
        direct_url=args.direct_url,
        model_dir=args.model_dir,
        out_dir=args.out,
        progress=sys.stderr.isatty(),
    ) as b:
        b.log = log
        log(f"workload: {b.workload.line()}")
        b.run(plan)
        result = b.record(state)
        report_text = b.report().to_text()
        out_dir = b.out_dir
    text = f"{report_text}\n\nresults: {result['results_file']} (+ throughput.png, latency.png in {out_dir})"
    emit(args, result, text)
    return 0


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `bench`."""
    from labkit.bench.plan import ENGINES, Plan

    d = Plan()
    b = sub.add_parser(
        "bench",
        parents=[common],
        help="benchmark the deployment: vLLM offline, the server, HF Transformers (step 08)",
        description="Step 08 from a terminal: one seeded workload from the lab's prompt set "
        "through vLLM offline, the server (the deployment of step 06, or --url) at each "
        "concurrency, and HF Transformers; then the deployment URL against the server behind it "
        "and `vllm bench serve` as a cross-check. Writes results.json, throughput.png and "
        "latency.png (default .lab/benchmark/, as the notebook) and records the summary in the "
        "lab state (key 'benchmark'); one line per run on stderr. Defaults are notebook 08's.",
    )
    b.add_argument(
        "--requests",
        type=int,
        default=d.requests,
        help=f"requests in the workload (default {d.requests})",
    )
    b.add_argument(
        "--max-output-tokens",
        type=int,
        default=d.max_output_tokens,
        help=f"cap on each request's output length; 0: the prompt set's own (default {d.max_output_tokens})",
    )
    b.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=d.max_prompt_tokens,
        help=f"longest prompt in tokens (default {d.max_prompt_tokens})",
    )
    b.add_argument(
        "--seed", type=int, default=d.seed, help=f"seed of the workload (default {d.seed})"
    )
    b.add_argument(
        "--concurrencies",
        default=",".join(map(str, d.concurrencies)),
        help="requests in flight at the server, comma-separated (default %(default)s)",
    )
    b.add_argument(
        "--engines",
        default=",".join(d.engines),
        help=f"which engines run, comma-separated, of {','.join(ENGINES)} (default %(default)s); "
        "the proxy comparison and the cross-check come with server",
    )
    b.add_argument(
        "--parallel-n",
        type=int,
        default=d.parallel_n,
        help=f"completions per request of the parallel-sampling runs; 1: none (default {d.parallel_n})",
    )
    b.add_argument(
        "--hf-requests",
        type=int,
        default=d.hf_requests,
        help=f"first requests of the workload HF runs, it is slow (default {d.hf_requests})",
    )
    b.add_argument(
        "--hf-batch",
        type=int,
        default=d.hf_batch,
        help=f"HF static batch size (default {d.hf_batch})",
    )
    b.add_argument(
        "--dtype",
        default=d.dtype,
        help=f"dtype of the offline engines: float32 on CPUs without bfloat16, bfloat16 on a GPU "
        f"(default {d.dtype})",
    )
    b.add_argument(
        "--proxy-rounds",
        type=int,
        default=d.proxy_rounds,
        help=f"interleaved rounds, deployment URL vs straight to the server; 0: skip (default "
        f"{d.proxy_rounds})",
    )
    b.add_argument(
        "--no-cross-check", action="store_true", help="skip `vllm bench serve` (about a minute)"
    )
    b.add_argument(
        "--url",
        default="",
        help="a vLLM server to benchmark instead of the deployment, e.g. http://127.0.0.1:8000 "
        "(default: the deployment of step 06)",
    )
    b.add_argument(
        "--direct-url",
        default="",
        help="the server behind the deployment (default: the local AI Core's predictor)",
    )
    b.add_argument(
        "--model-dir",
        default="",
        help="model folder for the tokenizer and the offline engines (default: step 02's snapshot)",
    )
    b.add_argument(
        "--out", type=Path, help="folder for results.json and the plots (default .lab/benchmark)"
    )
    b.set_defaults(func=_cmd_bench)
