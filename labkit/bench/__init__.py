"""Step 08: one seeded workload through vLLM and Hugging Face Transformers, side by side.

The workload comes from the lab's own prompt set (``bench_prompts.jsonl``), sampled the way
vLLM's benchmarks sample ShareGPT: shuffle with the seed, tokenize with the model's tokenizer,
drop pairs with a prompt over 1024 tokens or prompt + output over 2048 (or either under 4), and
oversample when too few remain. Each request asks for exactly its output length (``ignore_eos``),
so every engine produces the same number of tokens and throughput compares like with like.

Engines: vLLM offline (``vllm.LLM.generate``) and HF ``generate`` (one request at a time, and
static batches with left padding) run in worker subprocesses that load the model once; the vLLM
server is driven over HTTP with streaming, through the deployment URL or straight to the server,
at a given concurrency, which gives time to first token (TTFT) and inter-token latency (ITL).
``vllm bench serve`` (vLLM's own client) replays the same workload as a cross-check.

Run as ``python -m labkit.bench worker vllm|hf ARGS_JSON`` it is such a worker (internal).

The package: ``workload`` (the prompt set and its sampling), ``metrics`` (records, runs, their
table), ``server`` (the server over HTTP, and a vLLM server of our own), ``engines`` and
``worker`` (the engine workers, caller and child), ``proxy`` (deployment URL vs the server),
``crosscheck`` (``vllm bench serve``), ``report`` and ``plots`` (results file, tables, figures),
``plan`` (what step 08 runs, with the notebook's defaults), ``session`` (the whole benchmark, as
the notebook, ``labkit bench`` and the script run it).
"""

from __future__ import annotations

from labkit.bench.crosscheck import CrossCheck, vllm_bench_serve
from labkit.bench.engines import (
    WORKER_START_TIMEOUT,
    Worker,
    engine_threads,
    run_hf,
    run_offline,
)
from labkit.bench.metrics import RequestRecord, RunResult, RunTable, gaps, percentile
from labkit.bench.plan import ENGINES, Plan, parse_engines
from labkit.bench.plots import Plot, plot_latency, plot_throughput
from labkit.bench.proxy import PROXY_BUDGET, ProxyComparison, compare_proxy
from labkit.bench.report import (
    LAUNCH_POST,
    LAUNCH_POST_URL,
    RESULTS_FORMAT,
    BenchReport,
    LaunchPostTable,
    Ratio,
    machine,
    machine_line,
)
from labkit.bench.server import (
    LOCAL_HOSTS,
    REQUEST_TIMEOUT,
    SERVER_START_TIMEOUT,
    Target,
    VllmServer,
    _parse_sse,
    deployment_target,
    local_predictor_url,
    run_server,
    served_model,
    server_target,
)
from labkit.bench.session import Bench, Skipped, open_bench, parse_ints
from labkit.bench.workload import (
    MAX_PROMPT_TOKENS,
    MAX_TOTAL_TOKENS,
    MIN_TOKENS,
    PROMPTS_FILE,
    TEMPERATURE,
    Prompt,
    Request,
    Workload,
    build_workload,
    filler_text,
    is_valid_pair,
    load_prompts,
    load_tokenizer,
    prompts_path,
    sample_workload,
)
from labkit.engine import worker_env
from labkit.util.net import free_port

__all__ = [
    "ENGINES",
    "LAUNCH_POST",
    "LAUNCH_POST_URL",
    "LOCAL_HOSTS",
    "MAX_PROMPT_TOKENS",
    "MAX_TOTAL_TOKENS",
    "MIN_TOKENS",
    "PROMPTS_FILE",
    "PROXY_BUDGET",
    "REQUEST_TIMEOUT",
    "RESULTS_FORMAT",
    "SERVER_START_TIMEOUT",
    "TEMPERATURE",
    "WORKER_START_TIMEOUT",
    "Bench",
    "BenchReport",
    "CrossCheck",
    "LaunchPostTable",
    "Plan",
    "Plot",
    "Prompt",
    "ProxyComparison",
    "Ratio",
    "Request",
    "RequestRecord",
    "RunResult",
    "RunTable",
    "Skipped",
    "Target",
    "VllmServer",
    "Worker",
    "Workload",
    "_parse_sse",
    "build_workload",
    "compare_proxy",
    "deployment_target",
    "engine_threads",
    "filler_text",
    "free_port",
    "gaps",
    "is_valid_pair",
    "load_prompts",
    "load_tokenizer",
    "local_predictor_url",
    "machine",
    "machine_line",
    "open_bench",
    "parse_engines",
    "parse_ints",
    "percentile",
    "plot_latency",
    "plot_throughput",
    "prompts_path",
    "run_hf",
    "run_offline",
    "run_server",
    "sample_workload",
    "served_model",
    "server_target",
    "vllm_bench_serve",
    "worker_env",
]
