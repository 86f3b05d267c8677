"""vLLM against Hugging Face Transformers on one seeded workload, side by side on this machine.

Engines, same model, same requests: vLLM offline (LLM.generate), the vLLM server through the
deployment URL at a sweep of concurrencies, HF generate one request at a time and in static
batches; one and several completions per request. Then the deployment URL against the server
behind it (interleaved rounds) and `vllm bench serve` on the same requests as a cross-check.

    python bench/serving.py                        the lab's deployment (run notebooks 00-06 first)
    python bench/serving.py --start-server         a vLLM server of its own, no deployment
    python bench/serving.py --base-url URL         any vLLM server

Prints the figures and the ratios beside the vLLM launch post's; writes results.json and two
plots into --out. With --rounds R every engine runs R times, interleaved, and the tables take
each one's median.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from datetime import datetime
from pathlib import Path

from labkit import bench
from labkit.errors import LabError
from labkit.state import open_lab


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=32, help="requests in the workload (%(default)s)"
    )
    parser.add_argument(
        "--max-output-tokens",
        type=int,
        default=128,
        help="cap on output lengths, 0: none (%(default)s)",
    )
    parser.add_argument(
        "--max-prompt-tokens",
        type=int,
        default=bench.MAX_PROMPT_TOKENS,
        help="longest prompt in tokens (%(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the workload (%(default)s)")
    parser.add_argument(
        "--concurrencies",
        default="1,4,16,32",
        help="requests in flight, comma-separated (%(default)s)",
    )
    parser.add_argument(
        "--n", default="1,3", help="completions per request, comma-separated (%(default)s)"
    )
    parser.add_argument(
        "--hf-requests", type=int, default=8, help="requests HF runs, it is slow (%(default)s)"
    )
    parser.add_argument(
        "--hf-batch", type=int, default=8, help="HF static batch size (%(default)s)"
    )
    parser.add_argument(
        "--dtype",
        default="float32",
        help="dtype of the offline engines and --start-server (%(default)s)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="interleaved rounds of all engines (%(default)s)"
    )
    parser.add_argument(
        "--proxy-rounds",
        type=int,
        default=3,
        help="rounds of deployment URL vs direct, 0 skips it (%(default)s)",
    )
    parser.add_argument("--no-cross-check", action="store_true", help="skip vllm bench serve")
    parser.add_argument("--base-url", default="", help="a vLLM server instead of the deployment")
    parser.add_argument("--direct-url", default="", help="the server behind the deployment URL")
    parser.add_argument(
        "--start-server", action="store_true", help="start a vLLM server of its own"
    )
    parser.add_argument("--model-dir", default="", help="model folder (default: step 02's)")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    cfg, state = open_lab()
    out = args.out or cfg.lab_dir / "bench" / f"serving-{datetime.now():%Y%m%d-%H%M%S}"
    concurrencies = bench.parse_ints(args.concurrencies)
    ns = bench.parse_ints(args.n, "n")
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        b = _open(stack, args, cfg, state, out)
        _run_rounds(b, args, ns, concurrencies)
        b.stop()
        proxy = b.compare_proxy(max(concurrencies), rounds=args.proxy_rounds)
        print(proxy.line(), flush=True)
        if not args.no_cross_check:
            check = b.cross_check(max(concurrencies))
            print(check.line(), flush=True)
        report = b.save()
    _print_report(report, out, started)
    return 0


def _open(
    stack: contextlib.ExitStack, args: argparse.Namespace, cfg, state, out: Path
) -> bench.Bench:
    """The bench on the workload (and a vLLM server of its own with --start-server)."""
    base_url = args.base_url
    if args.start_server:
        model = args.model_dir or str(cfg.model_source)
        print(f"starting a vLLM server on {model} (eager) ...", flush=True)
        server = stack.enter_context(
            bench.VllmServer(
                model,
                served_name="bench",
                log_path=out / "server.log",
                extra_args=["--dtype", args.dtype],
            )
        )
        base_url = server.base_url
    b = stack.enter_context(
        bench.open_bench(
            cfg,
            state,
            bench.Plan(
                requests=args.requests,
                max_output_tokens=args.max_output_tokens,
                max_prompt_tokens=args.max_prompt_tokens,
                seed=args.seed,
                dtype=args.dtype,
            ),
            base_url=base_url,
            direct_url=args.direct_url,
            model_dir=args.model_dir,
            out_dir=out,
            progress=sys.stderr.isatty(),
        )
    )
    print(f"workload: {b.workload.line()}", flush=True)
    return b


def _run_rounds(
    b: bench.Bench, args: argparse.Namespace, ns: list[int], concurrencies: list[int]
) -> None:
    """Every engine once per round: vLLM offline, HF single and static, the server per concurrency."""
    keep_workers = args.rounds > 1
    for r in range(args.rounds):
        tag = f"[round {r + 1}/{args.rounds}]"
        for n in ns:
            _show(tag, b.offline(n=n))
        if not keep_workers:
            b.stop("vllm")
        for n in ns:
            for mode in ("single", "static"):
                _show(tag, b.hf(mode, n=n, requests=args.hf_requests, batch_size=args.hf_batch))
        if not keep_workers:
            b.stop("hf")
        for c in concurrencies:
            _show(tag, b.server(c))
        for n in ns:
            if n > 1:
                _show(tag, b.server(max(concurrencies), n=n))


def _print_report(report: bench.BenchReport, out: Path, started: float) -> None:
    print()
    print(report.to_text())
    print(f"\nresults: {out / 'results.json'} (+ throughput.png, latency.png)")
    print(f"total time: {time.monotonic() - started:.0f} s")


def _show(tag: str, run: bench.RunResult) -> None:
    print(f"{tag} {run.line()}", flush=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LabError as exc:
        print(f"serving.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
