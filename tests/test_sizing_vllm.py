"""Proof against the real thing: vLLM on the CPU logs its KV cache size; sizing must predict it."""

import os
import re
import signal
import subprocess
import sys
import threading

import pytest

from labkit import sizing
from labkit.util import procs
from labkit.util.net import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KV_LINE = re.compile(
    r"(?P<dev>\w+) KV cache size: (?P<tokens>[\d,]+) tokens, "
    r"Maximum concurrency for (?P<len>[\d,]+) tokens per request: (?P<conc>[\d.]+)x"
)
START_TIMEOUT_S = 600


def _vllm_kv_line(model_dir, max_model_len: int, kv_space_gib: int) -> re.Match:
    """Start vLLM's OpenAI server on the CPU until it logs the KV cache line, then stop it."""
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": str(kv_space_gib),
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model_dir), "--enforce-eager",
        "--max-model-len", str(max_model_len),
        "--host", "127.0.0.1", "--port", str(free_port()),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    watchdog = threading.Timer(
        START_TIMEOUT_S, lambda: procs.signal_group(proc.pid, signal.SIGKILL)
    )
    watchdog.start()
    log: list[str] = []
    try:
        for line in proc.stdout:
            log.append(line)
            if match := KV_LINE.search(line):
                return match
        pytest.fail("vLLM exited without logging its KV cache size:\n" + "".join(log[-40:]))
    finally:
        watchdog.cancel()
        # Only the log line was wanted: kill it. vLLM ignores SIGTERM while it starts up, so a
        # grace period would be waited out in full (60 s of this test's 113, measured).
        procs.stop_group(proc.pid, grace=0, proc=proc)


def test_sizing_predicts_the_kv_cache_vllm_logs(default_model):
    # 2000 is not a multiple of the CPU block size (128), so this also checks the rounding.
    max_model_len, kv_gib = 2000, 1
    logged = _vllm_kv_line(default_model, max_model_len, kv_gib)
    report = sizing.size(
        default_model, plan="basic", kv_cache_gib=kv_gib, max_model_len=max_model_len
    )
    assert logged["dev"] == "CPU"
    assert report.kv_cache_tokens == int(logged["tokens"].replace(",", ""))
    assert f"{report.max_concurrency:.2f}" == logged["conc"]
    assert report.fits
