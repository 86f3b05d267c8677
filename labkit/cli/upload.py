"""The object store commands of step 03: `labkit upload` and `labkit upload-stale`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from labkit.cli.common import emit, write_secret_body
from labkit.config import Config


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
        write_secret_body(args.secret_out, secret.body())
        data["secret_out"] = str(args.secret_out)
        text += f"\nsecret body with the key pair written to {args.secret_out} (mode 600)"
    emit(args, data, text)
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
    emit(args, data, "\n".join(text))
    return 0


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `upload` and `upload-stale`."""
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
