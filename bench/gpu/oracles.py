"""Sizing oracles: vLLM's own start-up log on a GPU, for model shapes and settings the lab sizes.

For each case it writes a model folder (a real model's config.json, random weights: no weights
travel), starts vLLM's OpenAI server as the lab's runtime does, reads its log until the KV cache
line, stops it, and writes the lines that carry memory figures, with the exact command, vLLM's
and torch's versions and the GPU, to OUT/<case>.json. tests/test_sizing_gpu.py holds
``labkit size`` to them.

    python bench/gpu/oracles.py --tokenizer DIR --out DIR [--only case,case]

Runs on the GPU machine (bench/README.md, "On a GPU"); one case takes about half a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contextlib

from shapes import SHAPES, model_folder

# name: (shape, extra vLLM flags). --max-model-len 2048 and vLLM's defaults otherwise.
CASES = {
    "llama-7b": ("llama-7b", []),
    "llama-7b-fp8-kv": ("llama-7b", ["--kv-cache-dtype", "fp8"]),
    "llama-7b-mnbt-4096": ("llama-7b", ["--max-num-batched-tokens", "4096"]),
    "llama-7b-mnbt-16384": ("llama-7b", ["--max-num-batched-tokens", "16384"]),
    "llama-7b-gmu-0.80": ("llama-7b", ["--gpu-memory-utilization", "0.8"]),
    "llama-7b-gmu-0.95": ("llama-7b", ["--gpu-memory-utilization", "0.95"]),
    "llama-3.1-8b-gqa": ("llama-3.1-8b", []),
    "falcon-7b-mqa": ("falcon-7b", []),
    "qwen2.5-14b-gqa": ("qwen2.5-14b", []),
}
# Tensor parallelism (issue 20; needs a machine with 2 or 4 GPUs, run with --only): a GQA model
# whose 8 KV heads divide the GPUs, one with fewer KV heads than GPUs (Qwen2.5-1.5B: 2, which
# vLLM replicates at TP 4), and Falcon-7B (MQA; 71 query heads divide neither 2 nor 4, which
# vLLM refuses: the oracle is its error line).
TP_CASES = {
    f"{name}-tp{tp}": (shape, ["--tensor-parallel-size", str(tp)])
    for tp in (2, 4)
    for name, shape in (
        ("llama-3.1-8b-gqa", "llama-3.1-8b"),
        ("qwen2.5-1.5b-gqa", "qwen2.5-1.5b"),
        ("falcon-7b-mqa", "falcon-7b"),
    )
}
CASES.update(TP_CASES)
DEFAULT_CASES = [c for c in CASES if c not in TP_CASES]
MAX_MODEL_LEN = 2048
# The lines that carry memory figures or the settings they depend on.
KEEP = re.compile(
    r"GiB|KV cache|Maximum concurrency|max_num_batched_tokens|max_num_seqs|CUDA graph|"
    r"block_size|Memory profiling|memory snapshot|torch.compile takes|Model loading took|"
    r"divisible|Error"
)
DONE = re.compile(r"Maximum concurrency for [\d,]+ tokens per request")
CASE_TIMEOUT_S = 240


_VERSIONS = """
import json, torch, vllm
free, total = torch.cuda.mem_get_info()
print(json.dumps({"vllm": vllm.__version__, "torch": torch.__version__,
                  "gpu": torch.cuda.get_device_name(0), "gpu_total_bytes": total,
                  "gpu_free_bytes_before": free}))
"""


def versions() -> dict[str, str]:
    """vLLM, torch, the GPU and its free memory now: in a child, so this process never holds a
    CUDA context while vLLM measures what is free."""
    done = subprocess.run([sys.executable, "-c", _VERSIONS], capture_output=True, text=True,
                          check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_case(name: str, tokenizer: Path, work: Path) -> dict:
    """Start the server on the case's shape until the KV cache line; its relevant log lines."""
    shape, flags = CASES[name]
    folder = model_folder(shape, tokenizer, work / shape)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
           "--load-format", "dummy", "--max-model-len", str(MAX_MODEL_LEN),
           "--port", "18000", "--host", "127.0.0.1", *flags]  # fmt: skip
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "DEBUG", "HF_HUB_OFFLINE": "1",
           "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}  # fmt: skip
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)  # fmt: skip
    kept: list[str] = []
    tail: list[str] = []
    found = False
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            tail = ([*tail, line.rstrip()])[-30:]
            if KEEP.search(line):
                kept.append(line.rstrip())
            if DONE.search(line):
                found = True
                break
            if time.monotonic() - started > CASE_TIMEOUT_S:
                break
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # Let the GPU's memory come back before the next case measures what is free.
    time.sleep(3)
    cmd_shown = ["python", *cmd[1:]]
    cmd_shown[cmd_shown.index("--model") + 1] = f"<folder with {shape} config.json>"
    return {"case": name, "shape": shape, "config": SHAPES[shape], "command": cmd_shown,
            "env": {"VLLM_LOGGING_LEVEL": "DEBUG"}, "found": found,
            "seconds": round(time.monotonic() - started, 1), "log": kept,
            **({} if found else {"tail": tail})}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--tokenizer",
        type=Path,
        required=True,
        help="a folder with the tokenizer files (SmolLM2's)",
    )
    parser.add_argument("--out", type=Path, required=True, help="where <case>.json go")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path("/tmp/oracle-models"),
        help="where the model folders go (%(default)s)",
    )
    parser.add_argument("--only", default="",
                        help="comma-separated cases (default: all but the -tpN ones)")  # fmt: skip
    args = parser.parse_args()
    cases = [c for c in args.only.split(",") if c] or DEFAULT_CASES
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    info = versions()  # once: importing vLLM takes seconds
    for name in cases:
        result = {**run_case(name, args.tokenizer, args.work), **info}
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
        last = next((ln for ln in reversed(result["log"]) if "KV cache size" in ln), "no KV line")
        print(f"{name}: {result['seconds']} s, {last[-90:]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
