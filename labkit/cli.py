"""The `labkit` command: each step headless, for people, pipelines and other tools.

Contract (DESIGN.md): with --json a command prints one JSON object on stdout; a user error
exits non-zero with one line on stderr (a traceback only with --debug).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from labkit import __version__
from labkit.config import Config, load_config
from labkit.errors import LabError

EXIT_USER_ERROR = 2


def _emit(args: argparse.Namespace, data: dict[str, Any], text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def _cmd_size(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import sizing

    catalogue = sizing.load_catalogue(args.plans_file) if args.plans_file else None
    report = sizing.size(
        args.model,
        plan=args.plan,
        gpus=args.gpus,
        gpu_memory_gib=args.gpu_memory_gib,
        tp=args.tp,
        dtype=args.dtype,
        kv_cache_dtype=args.kv_cache_dtype,
        max_model_len=args.max_model_len,
        max_num_batched_tokens=args.max_num_batched_tokens,
        gpu_memory_utilization=args.gpu_memory_utilization,
        weights_gib=args.weights_gib,
        activation_gib=args.activation_gib,
        non_torch_gib=args.non_torch_gib,
        kv_cache_gib=args.kv_cache_gib,
        block_size=args.block_size,
        revision=args.revision,
        token=cfg.hub_token(),
        catalogue=catalogue,
    )
    _emit(args, report.to_dict(), report.to_text())
    return 0


def _cmd_download(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import hub

    cache_dir = args.cache_dir or cfg.hub_cache_dir
    compression = "gz" if args.tar and args.tar.name.endswith((".tar.gz", ".tgz")) else None
    if args.tar:
        from labkit import package

        package.destination(
            args.tar, args.repo_id, compression
        )  # a bad name fails before the download
    plan = hub.plan_download(
        args.repo_id,
        args.revision or cfg.revision,
        endpoint=cfg.hub_endpoint,
        cache_dir=cache_dir,
        include=args.include,
        exclude=args.exclude,
        fmt=args.format,
        token=cfg.hub_token(),
    )
    snap = hub.download(
        plan, max_workers=args.workers, token=cfg.hub_token(), progress=not args.json
    )
    data = {
        "repo_id": snap.repo_id,
        "revision": snap.revision,
        "snapshot_dir": snap.snapshot_dir,
        "files": [
            {"path": f.path, "size": f.size, "sha256": f.sha256, "etag": f.etag} for f in snap.files
        ],
    }
    text = (
        f"{snap.repo_id}@{snap.revision}: {len(snap.files)} files verified in {snap.snapshot_dir}"
    )
    if args.tar:
        from labkit import package

        tar = package.write_tarball(
            cache_dir, snap.repo_id, snap.revision, args.tar, progress=not args.json
        )
        data.update(tar=str(tar.path), tar_sha256=tar.sha256)
        text += f"\n{tar.path}  sha256 {tar.sha256}"
    _emit(args, data, text)
    return 0


def _cmd_package_verify(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import package
    from labkit.state import to_data

    report = package.verify_tarball(args.tar)
    data = to_data(report)
    _emit(args, data, "ok" if report.ok else "\n".join(f"error: {e}" for e in report.errors))
    return 0 if report.ok else 1


def _cmd_upload(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import storage
    from labkit.errors import StorageError

    store = storage.open_store(cfg, args.bucket, max_connections=args.concurrency)
    options = {
        "family": args.family,
        "overwrite": args.overwrite,
        "part_size": args.part_size_mib << 20,
        "concurrency": args.concurrency,
        "secret_name": args.secret_name,
        "path_prefix": args.path_prefix,
        "progress": not args.json,
    }
    if args.from_snapshot:
        stored = storage.upload_snapshot(
            store, args.from_snapshot, revision=args.revision, **options
        )
    else:
        stored = storage.upload_tarball(store, args.tar, **options)
    data = stored.to_dict()
    text = stored.to_text()
    try:
        secret = storage.object_store_secret(
            cfg, name=stored.secret_name, bucket=stored.bucket, path_prefix=stored.path_prefix
        )
    except StorageError as exc:
        if args.secret_out:
            raise
        secret = None
        print(f"labkit: warning: no object store secret: {exc}", file=sys.stderr)
    data["object_store_secret"] = secret.public() if secret else None
    if secret is not None:
        text += "\nobject store secret: " + json.dumps(secret.public())
    if args.secret_out and secret is not None:
        # The one place the key pair is written: a file only its owner can read, for the deploy step.
        fd = os.open(args.secret_out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(secret.body(), fh, indent=2)
        data["secret_out"] = str(args.secret_out)
        text += f"\nsecret body with the key pair written to {args.secret_out} (mode 600)"
    _emit(args, data, text)
    return 0


def _cmd_upload_stale(args: argparse.Namespace, cfg: Config) -> int:
    from datetime import timedelta

    from labkit import storage

    store = storage.open_store(cfg, args.bucket)
    aborted = []
    if args.abort:
        older = None if args.older_than is None else timedelta(hours=args.older_than)
        aborted = storage.abort_stale_uploads(store, older_than=older)
    left = storage.list_stale_uploads(store)

    def line(u: storage.StaleUpload) -> str:
        if u.owner_pid is not None:
            who = f"running (pid {u.owner_pid})"
        elif u.ours:
            who = f"ours, {u.recorded_parts} parts recorded"
        else:
            who = "no record here"
        return f"{u.key}  {u.upload_id[:16]}…  {u.initiated}  {who}"

    text = [f"aborted {line(u)}" for u in aborted]
    text += [line(u) for u in left] or ([] if aborted else [f"no open uploads in {store.bucket}"])
    data = {
        "bucket": store.bucket,
        "aborted": [u.to_dict() for u in aborted],
        "uploads": [u.to_dict() for u in left],
    }
    _emit(args, data, "\n".join(text))
    return 0


def _cmd_run(args: argparse.Namespace, cfg: Config) -> int:
    from labkit.run import run_lab

    report = run_lab(cfg, out_dir=args.out, only=args.only, progress=not args.json)
    text = "\n".join(f"{n.status:6} {n.seconds:7.1f}s  {n.notebook}" for n in report.notebooks)
    _emit(args, report.to_dict(), f"{text}\nexecuted notebooks and report.md in {report.out_dir}")
    return 0


def _cmd_local(args: argparse.Namespace, cfg: Config) -> int:
    from labkit.local import services

    action = {"up": services.up, "down": services.down, "status": services.status}[args.action]
    rows = action(cfg, progress=not args.json) if args.action == "up" else action(cfg)
    text = "\n".join(
        f"{s.name:9} {'ok' if s.healthy else 'DOWN':5} {s.url}  {s.detail}" for s in rows
    )
    _emit(args, {"services": [s.to_dict() for s in rows]}, text)
    # A service whose program is not installed ("unavailable: ...", e.g. the registry without
    # Debian's docker-registry) does not fail `up`: the steps that need it say so themselves.
    ok = all(s.healthy or s.detail.startswith("unavailable:") for s in rows)
    return 0 if args.action == "down" or ok else 1


def _cmd_config(args: argparse.Namespace, cfg: Config) -> int:
    data = cfg.public()
    _emit(args, data, "\n".join(f"{k:24} {'' if v is None else v}" for k, v in data.items()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (kept separate so --help text is testable)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument("--profile", choices=["local", "aicore"], help="override LABKIT_PROFILE")

    parser = argparse.ArgumentParser(
        prog="labkit",
        description="Take an open LLM to a measured vLLM endpoint on SAP AI Core, one step at a time.",
        epilog="Settings come from options, then LABKIT_* variables, then .env. See README.md.",
    )
    parser.add_argument("--version", action="version", version=f"labkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    size = sub.add_parser(
        "size",
        parents=[common],
        help="will a model fit a resource plan, and with which vLLM settings (step 01)",
        description="Size a model against AI Core resource plans the way vLLM accounts memory.",
    )
    size.add_argument("model", help="Hub repo id, model folder, or path to a config.json")
    size.add_argument("--revision", help="Hub revision (branch, tag or commit)")
    where = size.add_mutually_exclusive_group()
    where.add_argument(
        "--plan", help="resource plan name (default: every plan, smallest that fits)"
    )
    where.add_argument(
        "--gpus", type=int, help="size for N GPUs of --gpu-memory-gib instead of a plan"
    )
    size.add_argument("--gpu-memory-gib", type=float, help="usable memory per GPU, with --gpus")
    size.add_argument("--tp", type=int, help="tensor-parallel size (default: the plan's GPU count)")
    size.add_argument("--dtype", default="auto", help="vLLM --dtype: auto, half, bfloat16, float32")
    size.add_argument(
        "--kv-cache-dtype", default="auto", help="vLLM --kv-cache-dtype: auto, fp8, ..."
    )
    size.add_argument(
        "--max-model-len", type=int, help="vLLM --max-model-len (default: the model's)"
    )
    size.add_argument("--max-num-batched-tokens", type=int, help="vLLM --max-num-batched-tokens")
    size.add_argument(
        "--gpu-memory-utilization", type=float, default=0.9, help="vLLM --gpu-memory-utilization"
    )
    size.add_argument("--weights-gib", type=float, help="measured weights per model (override)")
    size.add_argument("--activation-gib", type=float, help="measured peak activation (override)")
    size.add_argument("--non-torch-gib", type=float, help="measured non-torch memory (override)")
    size.add_argument(
        "--kv-cache-gib",
        type=float,
        help="fixed KV cache per GPU (vLLM --kv-cache-memory-bytes; VLLM_CPU_KVCACHE_SPACE on CPU)",
    )
    size.add_argument(
        "--block-size", type=int, help="KV block size (default 16 on GPU, 128 on CPU)"
    )
    size.add_argument(
        "--plans-file", type=Path, help="TOML file with extra plans or instance types"
    )
    size.set_defaults(func=_cmd_size)

    download = sub.add_parser(
        "download",
        parents=[common],
        help="download a model at a pinned revision and verify it (step 02)",
        description="Download a model from the Hub (HF_ENDPOINT; the local mirror in the local profile) "
        "at a pinned commit into the Hugging Face cache, verify every file, optionally package it.",
    )
    download.add_argument("repo_id", help="Hub repo id, e.g. HuggingFaceTB/SmolLM2-135M-Instruct")
    download.add_argument(
        "--revision", help="branch, tag or 40-hex commit (default: LABKIT_REVISION or main)"
    )
    download.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="only these files (repeatable)",
    )
    download.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="not these files (repeatable)",
    )
    download.add_argument(
        "--format",
        default="safetensors",
        choices=["safetensors", "bin", "pt", "all"],
        help="weights to keep: safetensors (falls back to .bin where a folder has none), bin, pt, all",
    )
    download.add_argument(
        "--workers", type=int, default=8, help="concurrent file downloads (default 8)"
    )
    download.add_argument(
        "--cache-dir", type=Path, help="Hugging Face cache (default .lab/hub-cache)"
    )
    download.add_argument(
        "--tar", type=Path, help="also write the model tarball here (.tar or .tar.gz)"
    )
    download.set_defaults(func=_cmd_download)

    pkg = sub.add_parser(
        "package",
        help="check a model tarball",
        description="Model tarballs in the HF cache layout.",
    )
    pkg_sub = pkg.add_subparsers(dest="package_command", required=True, metavar="ACTION")
    verify = pkg_sub.add_parser(
        "verify",
        parents=[common],
        help="re-open a tarball and check its layout and checksums",
        description="Check a model tarball: layout, links inside the tree, blob and manifest checksums.",
    )
    verify.add_argument("tar", type=Path, help="the .tar or .tar.gz file")
    verify.set_defaults(func=_cmd_package_verify)

    from labkit import storage  # names and defaults only: boto3 loads when a command runs

    upload = sub.add_parser(
        "upload",
        parents=[common],
        help="put the model tarball into the object store AI Core reads (step 03)",
        description="Upload a model tarball (or stream it from the HF cache) to "
        "s3://BUCKET/models/<family>/<rev7>/<org>--<name>.tar with SHA-256 checksums; an "
        "interrupted upload resumes, an identical object is skipped. Prints the artifact URL "
        "and the object store secret (key pair masked).",
    )
    what = upload.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "tar",
        nargs="?",
        type=Path,
        help="the tar from `labkit download --tar` (manifest beside it)",
    )
    what.add_argument(
        "--from-snapshot",
        type=Path,
        metavar="DIR",
        help="stream the tar of this snapshot (snapshot_dir of `labkit download --json`) "
        "without writing it to disk",
    )
    upload.add_argument(
        "--revision", help="with --from-snapshot DIR=models--org--name: the commit or ref"
    )
    upload.add_argument("--bucket", help="S3 bucket (default LABKIT_BUCKET)")
    upload.add_argument("--family", help="model family in the key (default: from the repo id)")
    upload.add_argument(
        "--overwrite", action="store_true", help="replace a different object at the key"
    )
    upload.add_argument(
        "--part-size-mib",
        type=int,
        default=storage.DEFAULT_PART_SIZE >> 20,
        help=f"multipart part size (default {storage.DEFAULT_PART_SIZE >> 20}; raised where "
        "10,000 parts would not do)",
    )
    upload.add_argument(
        "--concurrency",
        type=int,
        default=storage.DEFAULT_CONCURRENCY,
        help=f"parts in flight at once (default {storage.DEFAULT_CONCURRENCY})",
    )
    upload.add_argument(
        "--secret-name", help="AI Core object store secret (default LABKIT_OBJECT_STORE_SECRET)"
    )
    upload.add_argument(
        "--path-prefix", help="that secret's pathPrefix (default LABKIT_S3_PATH_PREFIX)"
    )
    upload.add_argument(
        "--secret-out",
        type=Path,
        metavar="FILE",
        help="write the secret body with the real key pair to FILE (mode 600)",
    )
    upload.set_defaults(func=_cmd_upload)

    stale = sub.add_parser(
        "upload-stale",
        parents=[common],
        help="list or abort multipart uploads left open by interrupted uploads",
        description="Open multipart uploads under models/ in the bucket. With --abort, abort those "
        "this machine started whose process is gone (they hold storage until aborted); with "
        "--older-than H also others started more than H hours ago.",
    )
    stale.add_argument("--bucket", help="S3 bucket (default LABKIT_BUCKET)")
    stale.add_argument("--abort", action="store_true", help="abort the stale ones")
    stale.add_argument(
        "--older-than",
        type=float,
        metavar="HOURS",
        help="with --abort: also abort uploads without a record here started this long ago",
    )
    stale.set_defaults(func=_cmd_upload_stale)

    run = sub.add_parser(
        "run",
        parents=[common],
        help="execute the lab's notebooks headless with papermill",
        description="Execute notebooks/NN_*.ipynb in order into a run folder with a report.",
    )
    run.add_argument("--out", type=Path, help="run folder (default .lab/runs/<timestamp>)")
    run.add_argument("--only", nargs="+", metavar="NN", help="only notebooks with these prefixes")
    run.set_defaults(func=_cmd_run)

    local = sub.add_parser(
        "local",
        parents=[common],
        help="start, stop or check the local profile's services",
        description="The local profile's stand-ins: the default model and the services later steps use.",
    )
    local.add_argument("action", choices=["up", "down", "status"])
    local.set_defaults(func=_cmd_local)

    config = sub.add_parser(
        "config", parents=[common], help="show the effective configuration (secrets masked)"
    )
    config.set_defaults(func=_cmd_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `labkit` console script."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace, Config], int] = args.func
    try:
        cfg = load_config(profile=args.profile)
        return func(args, cfg)
    except LabError as exc:
        if args.debug:
            raise
        print(f"labkit: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("labkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `labkit size ... | head`: the reader left, nothing to report
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
