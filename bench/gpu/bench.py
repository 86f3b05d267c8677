"""Step 08's benchmark on a GPU through the lab's own code (labkit.bench): vLLM offline, vLLM's
OpenAI server at a sweep of concurrencies, HF Transformers one at a time and in static batches,
each with 1 and 3 completions per request, on a model shape with random weights.

    python bench/gpu/bench.py --tokenizer DIR --out DIR --parts vllm     offline + server
    python bench/gpu/bench.py --tokenizer DIR --out DIR --parts hf       HF, added to the results

Parts run in separate calls (a device call lasts 10 minutes at most); each adds its runs to
OUT/results.json, which labkit.bench.BenchReport reads, so the table, ratios and plots come out
as step 08's (plots here when matplotlib is installed, else from results.json on another
machine: ``python bench/gpu/bench.py --plots OUT``). Every request generates exactly its listed
answer length (``ignore_eos``), so the random weights' tokens cost what real ones would.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import model_folder

from labkit import bench
from labkit.bench.worker import on_gpu

# The GPU kit's reference workload: the lab's 102 prompts, answers capped at 512 tokens; HF on
# the first 12 in static batches of 4; the server swept up to the whole workload at once.
PLAN = bench.Plan(
    requests=102, max_output_tokens=512, concurrencies=(8, 32, 102), parallel_n=3,
    hf_requests=12, hf_batch=4, dtype="bfloat16", proxy_rounds=0, cross_check=False,
)  # fmt: skip
# --quick: the same runs on a handful of short requests, to prove the code path on a CPU first
# (``--shape smollm2-135m``) before spending device time.
QUICK = bench.Plan(
    requests=6, max_output_tokens=16, concurrencies=(2, 6), parallel_n=3, hf_requests=4,
    hf_batch=2, dtype="bfloat16", proxy_rounds=0, cross_check=False,
)  # fmt: skip


def open_bench(args: argparse.Namespace, plan: bench.Plan) -> bench.Bench:
    folder = model_folder(args.shape, args.tokenizer, args.work / args.shape)
    b = bench.Bench.open(
        folder, args.out, num_requests=plan.requests, seed=plan.seed,
        max_output_tokens=plan.max_output_tokens, max_prompt_tokens=plan.max_prompt_tokens,
        model_name=f"{args.shape} shape, random weights", dtype=plan.dtype, load_format="dummy",
        progress=False,
    )  # fmt: skip
    results = args.out / "results.json"
    if results.is_file():  # an earlier part's runs
        earlier = bench.BenchReport.load(results)
        b.runs.extend(earlier.runs)
        b.notes.extend(n for n in earlier.notes if n not in b.notes)

    def checkpoint(line: str) -> None:  # each run is kept as it ends: a device call may be cut
        print(line, flush=True)
        b.report().save(results)

    b.log = checkpoint
    return b


def run_vllm(b: bench.Bench, args: argparse.Namespace, plan: bench.Plan) -> None:
    b.offline_runs(plan)
    with bench.VllmServer(
        b.model_path, served_name="bench", log_path=args.out / "server.log",
        eager=not on_gpu(),  # as the offline worker: CUDA graphs on a GPU, CPU graphs give garbage
        extra_args=["--dtype", plan.dtype, "--load-format", "dummy"],
    ) as server:  # fmt: skip
        b.direct = server.target()
        b.server_runs(plan)
    b.direct = None


def save(b: bench.Bench) -> None:
    report = b.report()
    report.save(b.out_dir / "results.json")
    try:
        plots(b.out_dir)
    except ImportError as exc:
        print(f"no plots here ({exc}); run --plots {b.out_dir} where matplotlib is", flush=True)
    print(report.to_text(), flush=True)


def plots(out: Path) -> None:
    report = bench.BenchReport.load(out / "results.json")
    report.plot_throughput(out / "throughput.png")
    report.plot_latency(out / "latency.png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--tokenizer", type=Path, help="a folder with SmolLM2's tokenizer files")
    parser.add_argument("--out", type=Path, help="results folder")
    parser.add_argument("--parts", default="vllm,hf", help="vllm, hf or both (%(default)s)")
    parser.add_argument("--shape", default="llama-7b", help="model shape (%(default)s)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-models"),
                        help="where the model folder goes (%(default)s)")  # fmt: skip
    parser.add_argument(
        "--quick",
        action="store_true",
        help="6 short requests instead of the reference workload (a smoke run)",
    )
    parser.add_argument("--plots", type=Path, help="only draw the plots of this results folder")
    args = parser.parse_args()
    if args.plots:
        plots(args.plots)
        return 0
    if not (args.tokenizer and args.out):
        parser.error("--tokenizer and --out are required")
    started = time.monotonic()
    parts = {p for p in args.parts.split(",") if p}
    plan = QUICK if args.quick else PLAN
    with open_bench(args, plan) as b:
        print(f"workload: {b.workload.line()}", flush=True)
        if "vllm" in parts:
            run_vllm(b, args, plan)
        if "hf" in parts:
            b.hf_runs(plan)
        save(b)
    print(f"total {time.monotonic() - started:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
