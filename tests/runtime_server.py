"""The lab's runtime (runtime/entrypoint.py -> serve.py: the OpenAI API and /generate) serving the
default model on a free loopback port, eager, for the tests that ask a real server."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from labkit.config import DEFAULT_MODEL_ID
from labkit.util import net, procs

ENTRYPOINT = Path(__file__).resolve().parents[1] / "runtime" / "entrypoint.py"


@contextlib.contextmanager
def runtime_server(model_dir: Path, log_path: Path, *, arg: str = "") -> Iterator[str]:
    """Start the runtime on ``model_dir`` (``ARG``: extra vLLM flags, e.g. ``--api-key K``), wait
    for /health, yield its base URL, and stop its process group afterwards."""
    port = net.free_port()
    scratch = Path(tempfile.mkdtemp(prefix="q-", dir="/tmp"))  # short IPC socket paths
    env = {
        **os.environ,
        "TMPDIR": str(scratch),
        "MODELS_DIR": str(model_dir),
        "MODEL_SERVE_NAME": DEFAULT_MODEL_ID,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "ENFORCE_EAGER": "true",
        "MAX_MODEL_LEN": "2048",
        "ARG": arg,
        "VLLM_CPU_KVCACHE_SPACE": "1",
    }
    base = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ENTRYPOINT)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        started = time.monotonic()
        while True:
            try:
                if httpx.get(f"{base}/health", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, "server exited:\n" + log_path.read_text()[-4000:]
            assert time.monotonic() - started < 400, "no /health:\n" + log_path.read_text()[-4000:]
            time.sleep(1)
        yield base
    finally:
        procs.stop_group(proc.pid, proc=proc)
        shutil.rmtree(scratch, ignore_errors=True)
