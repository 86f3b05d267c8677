"""The worker subprocess (``python -m labkit.bench worker vllm|hf ARGS_JSON``, internal): load the
engine once, say ready, then answer one JSON line per command until told to stop.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from labkit.bench.metrics import RequestRecord, gaps
from labkit.bench.workload import MAX_TOTAL_TOKENS, MIN_TOKENS, TEMPERATURE


def _warmup_cmd() -> dict[str, Any]:
    ids = list(range(10, 42))
    return {"cmd": "run", "n": 1, "batch_size": 1, "seed": 0, "temperature": TEMPERATURE,
            "requests": [{"index": -1, "ids": ids, "max_tokens": MIN_TOKENS}]}  # fmt: skip


def _record(request: Mapping[str, Any], n: int, **measured: Any) -> dict[str, Any]:
    """One request's record as a JSON-ready dict: what was asked, and what the engine measured."""
    return asdict(
        RequestRecord(
            index=request["index"],
            prompt_tokens=len(request["ids"]),
            max_tokens=request["max_tokens"],
            n=n,
            **measured,
        )
    )


def on_gpu() -> bool:
    """Whether torch sees a GPU: vLLM compiles with CUDA graphs there, and runs eager on a CPU."""
    import torch

    return bool(torch.cuda.is_available())


class _VllmEngine:
    """vllm.LLM on the model folder: eager on a CPU (CPU graphs give garbage in vLLM 0.32),
    compiled with CUDA graphs on a GPU, as vLLM serves there by default. ``load_format`` "dummy"
    gives random weights of the folder's config.json (a model's shape without its weights)."""

    def __init__(self, args: Mapping[str, Any]) -> None:
        from vllm import LLM

        gpu = on_gpu()
        self.llm = LLM(
            model=args["model"],
            enforce_eager=not gpu,
            max_model_len=int(args.get("max_model_len", MAX_TOTAL_TOKENS)),
            seed=int(args.get("seed", 0)),
            dtype=args.get("dtype", "auto"),
            load_format=str(args.get("load_format", "auto")),
        )
        self.info = {"engine": "vllm", "dtype": str(args.get("dtype", "auto")),
                     "device": "cuda" if gpu else "cpu", "load_format": str(args.get("load_format", "auto"))}  # fmt: skip
        # A first call pays for lazy set-up; keep it out of the measured runs.
        self.run(_warmup_cmd())

    def run(self, cmd: Mapping[str, Any]) -> dict[str, Any]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        n = int(cmd["n"])
        reqs = cmd["requests"]
        prompts = [TokensPrompt(prompt_token_ids=r["ids"]) for r in reqs]
        params = [
            SamplingParams(
                n=n,
                max_tokens=r["max_tokens"],
                ignore_eos=True,
                temperature=float(cmd["temperature"]),
                top_p=1.0,
                seed=int(cmd["seed"]) + i,
            )
            for i, r in enumerate(reqs)
        ]
        start = time.perf_counter()
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        duration = time.perf_counter() - start
        records = []
        for r, out in zip(reqs, outs, strict=True):
            records.append(
                _record(
                    r,
                    n,
                    output_tokens=sum(len(o.token_ids) for o in out.outputs),
                    finish_reasons=[str(o.finish_reason) for o in out.outputs],
                )
            )
        return {"duration_s": duration, "records": records}


class _Clock:
    """A generate() streamer that only notes when each step's tokens came out."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def put(self, value: Any) -> None:
        if hasattr(value, "cpu"):
            value.cpu()  # on a GPU, wait for the step's kernels before taking the time
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


class _HfEngine:
    """transformers' generate on the model folder, with left padding for static batches
    (``load_format`` "dummy": random weights of the folder's config.json, as vLLM's)."""

    def __init__(self, args: Mapping[str, Any]) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        dtype = str(args.get("dtype", "float32"))
        if args.get("threads"):
            torch.set_num_threads(int(args["threads"]))
        tok = AutoTokenizer.from_pretrained(args["model"])
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        # On a GPU machine the baseline runs on the GPU too, as in the launch post.
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if args.get("load_format", "auto") == "dummy":
            config = AutoConfig.from_pretrained(args["model"])
            with torch.device(self.device):
                self.model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
        else:
            self.model = AutoModelForCausalLM.from_pretrained(
                args["model"], dtype=getattr(torch, dtype)
            ).to(self.device)
        self.model.eval()
        self.info = {
            "engine": "hf",
            "dtype": dtype,
            "device": self.device,
            "threads": torch.get_num_threads(),
        }
        self.run(_warmup_cmd())

    def run(self, cmd: Mapping[str, Any]) -> dict[str, Any]:
        torch = self.torch
        n, size = int(cmd["n"]), int(cmd["batch_size"])
        reqs = cmd["requests"]
        torch.manual_seed(int(cmd["seed"]))
        records: list[dict[str, Any]] = []
        start = time.perf_counter()
        for b in range(0, len(reqs), size):
            batch = reqs[b : b + size]
            width = max(len(r["ids"]) for r in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, r in enumerate(batch):
                ids[row, width - len(r["ids"]) :] = torch.tensor(r["ids"])
                mask[row, width - len(r["ids"]) :] = 1
            new = max(r["max_tokens"] for r in batch)
            clock = _Clock()
            t0 = time.perf_counter()
            with torch.inference_mode():
                self.model.generate(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    max_new_tokens=new,
                    min_new_tokens=new,
                    do_sample=True,
                    temperature=float(cmd["temperature"]),
                    top_p=1.0,
                    top_k=0,
                    num_return_sequences=n,
                    pad_token_id=self.pad_id,
                    streamer=clock,
                )
            # The streamer's first call carries the prompt; each later one is one step.
            steps = clock.times[1:]
            for r in batch:
                k = min(r["max_tokens"], len(steps))
                mine = steps[:k]
                records.append(
                    _record(
                        r,
                        n,
                        output_tokens=k * n,
                        ttft_s=(mine[0] - t0) if mine else None,
                        latency_s=(mine[-1] - t0) if mine else None,
                        itl_s=gaps(mine) * n,
                        finish_reasons=["length"] * n,
                    )
                )
        return {"duration_s": time.perf_counter() - start, "records": records}


def _worker_main(argv: Sequence[str]) -> int:
    """The worker's loop: load the engine, say ready, answer one JSON line per command."""
    if len(argv) != 2 or argv[0] not in ("vllm", "hf"):
        print("usage: python -m labkit.bench worker vllm|hf ARGS_JSON", file=sys.stderr)
        return 2
    # Answers go to the original stdout; everything else (vLLM logs to stdout) goes to stderr.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)

    def say(msg: Mapping[str, Any]) -> None:
        answers.write(json.dumps(msg) + "\n")
        answers.flush()

    args = json.loads(argv[1])
    try:
        engine: Any = _VllmEngine(args) if argv[0] == "vllm" else _HfEngine(args)
    except Exception as exc:
        say({"error": f"{type(exc).__name__}: {exc}"[:500]})
        return 1
    say({"ready": True, **engine.info})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("cmd") == "stop":
            break
        try:
            say(engine.run(cmd))
        except Exception as exc:
            say({"error": f"{type(exc).__name__}: {exc}"[:500]})
    return 0


def main(argv: Sequence[str]) -> int:
    """``python -m labkit.bench worker vllm|hf ARGS_JSON`` (argv without the program name)."""
    if len(argv) >= 1 and argv[0] == "worker":
        return _worker_main(argv[1:])
    print("internal: python -m labkit.bench worker vllm|hf ARGS_JSON", file=sys.stderr)
    return 2
