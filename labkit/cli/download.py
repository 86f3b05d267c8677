"""The model commands of step 02: `labkit download` (with --tar) and `labkit package verify`."""

from __future__ import annotations

import argparse
from pathlib import Path

from labkit.cli.common import emit
from labkit.config import Config


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
    emit(args, data, text)
    return 0


def _cmd_package_verify(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import package
    from labkit.state import to_data

    report = package.verify_tarball(args.tar)
    data = to_data(report)
    emit(args, data, "ok" if report.ok else "\n".join(f"error: {e}" for e in report.errors))
    return 0 if report.ok else 1


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `download` and `package verify`."""
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
