"""The lab's runtime on a GPU: runtime/entrypoint.py with the environment the serving template
sets, on a model tarball in the Hugging Face cache layout (the default model's shape, random
weights saved as safetensors), then /health, /v1/models, /v1/chat/completions and /generate
with beam search (runtime/serve.py), and a SIGTERM. Writes OUT/runtime.json and OUT/server.log.

    python bench/gpu/runtime_check.py --tokenizer DIR --out DIR

Standard library plus what the GPU machine has (torch, transformers); the runtime itself uses
only the standard library and vLLM.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from shapes import model_folder

REPO = Path(__file__).resolve().parents[2]
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
# Model ids of the shapes (bench/gpu/shapes.py) the check can serve; with NUM_SHARD 2 or 4 the
# query heads must divide the GPUs (SmolLM2's 9 do not; Qwen2.5-1.5B's 12 do).
MODEL_IDS = {"smollm2-135m": MODEL_ID, "qwen2.5-1.5b": "Qwen/Qwen2.5-1.5B",
             "llama-3.1-8b": "meta-llama/Llama-3.1-8B"}  # fmt: skip
REVISION = "0" * 39 + "1"  # a 40-hex commit: the snapshot's name in the cache layout
# As templates/vllm-serving.yaml sets them (step 05's bindings for one GPU), MODELS_DIR aside.
TEMPLATE_ENV = {
    "STORAGE_URI": "s3://labkit-models/smollm2/",
    "MODEL_ID": MODEL_ID,
    "REVISION": REVISION,
    "MODEL_SERVE_NAME": "smollm2",
    "NUM_SHARD": "1",
    "DTYPE": "bfloat16",
    "MAX_MODEL_LEN": "2048",
    "GPU_MEMORY_UTILIZATION": "0.5",
    "ARG": "",
    "PORT": "8080",
}


def model_tarball(tokenizer: Path, work: Path, shape: str = "smollm2-135m") -> Path:
    """models--<org>--<name>/{refs/main, snapshots/<rev>/...} with random weights, as one .tar."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    repo = work / "cache" / ("models--" + MODEL_IDS[shape].replace("/", "--"))
    snapshot = model_folder(shape, tokenizer, repo / "snapshots" / REVISION)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(snapshot),
                                             dtype=torch.bfloat16)  # fmt: skip
    model.save_pretrained(snapshot)
    models = work / "models"
    models.mkdir(parents=True, exist_ok=True)
    tar = models / f"{shape}.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(repo, arcname=repo.name)
    return models


def call(method: str, url: str, body: dict | None = None, timeout: float = 120) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})  # fmt: skip
    started = time.monotonic()
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        text = resp.read().decode()
        status = resp.status
    try:
        answer: object = json.loads(text)
    except ValueError:
        answer = text[:400]
    return {"request": f"{method} {url.split(':8080')[-1]}", "body": body, "status": status,
            "seconds": round(time.monotonic() - started, 3), "answer": answer}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--tokenizer", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("/tmp/runtime-check"))
    parser.add_argument("--num-shard", type=int, default=1,
                        help="NUM_SHARD: GPUs for tensor parallelism (2, 4: issue 20)")  # fmt: skip
    parser.add_argument("--shape", default="smollm2-135m", choices=sorted(MODEL_IDS),
                        help="model shape, random weights (%(default)s)")  # fmt: skip
    args = parser.parse_args()
    TEMPLATE_ENV.update(NUM_SHARD=str(args.num_shard), MODEL_ID=MODEL_IDS[args.shape])
    args.out.mkdir(parents=True, exist_ok=True)
    models = model_tarball(args.tokenizer, args.work, args.shape)
    env = {**os.environ, **TEMPLATE_ENV, "MODELS_DIR": str(models),
           "TMPDIR": str(args.work / "tmp")}  # fmt: skip
    Path(env["TMPDIR"]).mkdir(parents=True, exist_ok=True)
    log = open(args.out / "server.log", "w")  # noqa: SIM115 - the server writes to it while it runs
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(REPO / "runtime" / "entrypoint.py")], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    base = "http://127.0.0.1:8080"
    record: dict = {"env": TEMPLATE_ENV, "calls": []}
    try:
        while time.monotonic() - started < 420:
            if proc.poll() is not None:
                raise SystemExit(f"the runtime exited with {proc.returncode}: see server.log")
            try:
                record["calls"].append(call("GET", base + "/health", timeout=5))
                break
            except OSError:
                time.sleep(2)
        record["ready_after_s"] = round(time.monotonic() - started, 1)
        record["calls"].append(call("GET", base + "/v1/models"))
        record["calls"].append(call("POST", base + "/v1/chat/completions", {
            "model": "smollm2", "max_tokens": 16, "temperature": 0,
            "messages": [{"role": "user", "content": "What is the capital of France?"}]}))  # fmt: skip
        record["calls"].append(call("POST", base + "/generate", {
            "prompt": "San Francisco is a", "n": 4, "use_beam_search": True, "temperature": 0,
            "max_tokens": 16}))  # fmt: skip
        record["calls"].append(call("POST", base + "/generate", {
            "prompt": "San Francisco is a", "max_tokens": 8, "stream": True}))  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            record["exit_code_after_sigterm"] = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            record["exit_code_after_sigterm"] = "killed after 60 s"
        (args.out / "runtime.json").write_text(json.dumps(record, indent=1) + "\n")
    for c in record["calls"]:
        print(c["request"], c["status"], json.dumps(c["answer"])[:300], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
