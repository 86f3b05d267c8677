"""The CPU image: build time (cold, warm, after an entrypoint change), size, push; and the
entrypoint's overhead: container start to /health vs the entrypoint on the host vs vLLM by hand.

Builds go into a storage of their own under the image cache (image.image_dir; removed afterwards), so "cold"
means no cached layers and an empty pip cache; the mmdebstrap base tarball is reused when it is
there (its first making is timed separately). Start-ups run interleaved, same model (the default
model's tarball from the local Hub), same flags (--enforce-eager, --max-model-len 2048).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from labkit import hub, image, package
from labkit.config import load_config
from labkit.local import registry as local_registry
from labkit.util import net, procs

ROOT = Path(__file__).resolve().parents[1]
MODULE = "vllm.entrypoints.openai.api_server"
FLAGS = ["--enforce-eager", "--max-model-len", "2048"]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _wait_health(port: int, proc: subprocess.Popen, log: Path, limit: float = 600) -> float:
    started = time.monotonic()
    while not _healthy(port):
        if proc.poll() is not None:
            raise SystemExit(f"server exited while starting:\n{log.read_text()[-3000:]}")
        if time.monotonic() - started > limit:
            raise SystemExit(f"no /health within {limit:.0f} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return time.monotonic() - started


def _stop(proc: subprocess.Popen) -> None:
    procs.stop_group(proc.pid, grace=60, proc=proc)
    time.sleep(1)  # let the engine's children go before the next start


def bench_build(cfg, args, scratch: Path) -> image.Image | None:
    """Cold, warm and one-file-changed builds in a fresh storage; returns the built image."""
    storage = Path(tempfile.mkdtemp(prefix="bench-storage-", dir=image.image_dir(cfg)))
    builder = image.Builder("buildah", shutil.which("buildah") or "buildah", storage)
    registry = local_registry.require(cfg)
    ref = image.find_next_tag(registry, "labkit-bench")
    rows: list[tuple[str, float, str]] = []
    try:
        tarball_cached = (
            image.image_dir(cfg)
            / "base"
            / f"{image.BASE_SUITE}-{image.base_packages_key(cfg.debian_mirror)}.tar"
        ).is_file()
        started = time.monotonic()
        base = image.ensure_cpu_base(cfg, builder)
        rows.append(
            (
                "base image"
                + (
                    " (import of the cached mmdebstrap tar)"
                    if tarball_cached
                    else " (mmdebstrap + import)"
                ),
                time.monotonic() - started,
                base,
            )
        )
        cold = image.build(cfg, ref, variant="cpu", builder=builder)
        rows.append(("cold build (no layers, empty pip cache)", cold.build_seconds, ""))
        warm = image.build(cfg, ref, variant="cpu", builder=builder)
        rows.append(("warm build (nothing changed)", warm.build_seconds, ""))
        context = scratch / "context"
        shutil.copytree(image.runtime_dir(cfg), context)
        with open(context / "entrypoint.py", "a") as fh:
            fh.write("\n# changed by bench/image.py\n")
        changed = image.build(cfg, ref, variant="cpu", builder=builder, context=context)
        rows.append(("warm build, entrypoint.py changed", changed.build_seconds, ""))
        rebuilt = image.build(cfg, ref, variant="cpu", builder=builder)  # back to the real file
        pushed = image.push(cfg, rebuilt, builder=builder)
        rows.append(("push to the local registry (first time)", pushed.push_seconds, pushed.digest))
        again = image.push(cfg, image.Image(pushed.reference, "cpu", "buildah"), builder=builder)
        rows.append(("push again (layers already there)", again.push_seconds, ""))
        print(
            f"\nCPU image build ({cfg.root / 'runtime' / 'Dockerfile'}, buildah, 2-core machine):"
        )
        for what, seconds, note in rows:
            print(f"  {what:48} {seconds:7.1f} s  {note}")
        print(
            f"  size: {pushed.size_bytes / 1e9:.2f} GB uncompressed, "
            f"{pushed.pushed_bytes / 1e9:.2f} GB compressed in the registry "
            f"(base alone: {image.image_size(builder, base) / 1e9:.2f} GB)"
        )
        return pushed
    finally:
        subprocess.run(builder.argv("rm", "--all"), env=builder.env(), capture_output=True)
        subprocess.run(
            builder.argv("rmi", "--all", "--force"), env=builder.env(), capture_output=True
        )
        shutil.rmtree(storage, ignore_errors=True)


def bench_startup(cfg, args, scratch: Path, reference: str) -> None:
    """Start to /health: the image (buildah run), the entrypoint on the host, vLLM by hand."""
    builder = image.find_builder(cfg, "buildah")
    if not image.image_exists(builder, reference):
        raise SystemExit(
            f"{reference} is not in buildah's storage: build it first (or drop --image)"
        )
    models, snapshot = _model_files(cfg, scratch)
    base_env = _base_env()
    times: dict[str, list[float]] = {
        "container (buildah run)": [],
        "entrypoint on the host": [],
        "vllm serve by hand": [],
    }
    for r in range(args.rounds):
        times["container (buildah run)"].append(
            _start_container(cfg, builder, reference, models, scratch / f"container-{r}.log")
        )
        time.sleep(1)
        times["entrypoint on the host"].append(
            _start_entrypoint(cfg, base_env, models, scratch / f"entrypoint-{r}.log")
        )
        times["vllm serve by hand"].append(
            _start_by_hand(cfg, base_env, snapshot, scratch / f"vllm-{r}.log")
        )
    _print_startup(cfg, args, times)


def _model_files(cfg, scratch: Path) -> tuple[Path, Path]:
    """The default model's tarball in a models folder, and the snapshot it unpacks to."""
    cache = scratch / "hub-cache"
    plan = hub.plan_download(cfg.model_id, "main", endpoint=cfg.hub_endpoint, cache_dir=cache)
    snap = hub.download(plan, progress=False)
    models = scratch / "models"
    models.mkdir()
    tar = package.write_tarball(
        cache, cfg.model_id, snap.revision, models / "model.tar", progress=False
    ).path
    unpacked = scratch / "unpacked"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "runtime" / "entrypoint.py"),
            "--unpack",
            str(tar),
            str(unpacked),
        ],
        check=True,
        capture_output=True,
    )
    return models, next(unpacked.glob("models--*/snapshots/*"))


def _base_env() -> dict[str, str]:
    base_env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
    }
    base_env.pop("HF_ENDPOINT", None)
    return base_env


def _start_container(cfg, builder: image.Builder, reference: str, models: Path, log: Path) -> float:
    port = net.free_port()
    container = image.start_container(
        builder,
        reference,
        env={
            "PORT": str(port),
            "HOST": "127.0.0.1",
            "MODEL_ID": cfg.model_id,
            "ENFORCE_EAGER": "1",
            "MAX_MODEL_LEN": "2048",
        },
        volumes={models: "/mnt/models"},
        log=log,
    )
    try:
        return _wait_health(port, container.process, log)
    finally:
        container.stop()


def _start_entrypoint(cfg, base_env: dict[str, str], models: Path, log: Path) -> float:
    port = net.free_port()
    tmp = Path(tempfile.mkdtemp(prefix="ep-", dir="/tmp"))
    env = {**base_env, "MODELS_DIR": str(models), "UNPACK_DIR": str(tmp / "unpacked"), "TMPDIR": str(tmp),
           "MODEL_ID": cfg.model_id, "PORT": str(port), "HOST": "127.0.0.1", "ARG": " ".join(FLAGS)}  # fmt: skip
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "runtime" / "entrypoint.py")],
            env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        return _wait_health(port, proc, log)
    finally:
        _stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def _start_by_hand(cfg, base_env: dict[str, str], snapshot: Path, log: Path) -> float:
    port = net.free_port()
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", MODULE, "--model", str(snapshot), "--served-model-name",
             cfg.model_id, "--host", "127.0.0.1", "--port", str(port), *FLAGS],
            env=base_env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        return _wait_health(port, proc, log)
    finally:
        _stop(proc)


def _print_startup(cfg, args, times: dict[str, list[float]]) -> None:
    base = statistics.median(times["vllm serve by hand"])
    print(
        f"\nstart to /health, {cfg.model_id}, {' '.join(FLAGS)}, {args.rounds} interleaved rounds:"
    )
    print(
        f"  {'contender':28} {'median s':>9} {'min s':>7} {'max s':>7} {'overhead vs by hand':>20}"
    )
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:28} {med:9.1f} {min(ts):7.1f} {max(ts):7.1f} {med - base:+19.1f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3, help="start-up rounds (default 3)")
    parser.add_argument("--skip-build", action="store_true", help="only the start-up comparison")
    parser.add_argument("--skip-startup", action="store_true", help="only the build figures")
    parser.add_argument(
        "--image", help="reference in buildah's lab storage to start (default: the one just built)"
    )
    args = parser.parse_args()
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    cfg = load_config()
    scratch = Path(tempfile.mkdtemp(prefix="bench-image-"))
    try:
        built = None if args.skip_build else bench_build(cfg, args, scratch)
        if not args.skip_startup:
            reference = args.image
            if reference is None and built is not None:
                # The bench storage is gone: start the same Dockerfile's image from the lab's storage.
                lab = image.find_builder(cfg, "buildah")
                reference = str(image.find_next_tag(built.ref.registry, "labkit-bench"))
                image.build(cfg, reference, variant="cpu", builder=lab)
            if reference is None:
                raise SystemExit("give --image REFERENCE with --skip-build")
            bench_startup(cfg, args, scratch, reference)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
