"""labkit upload vs boto3 upload_file (defaults), and streaming from the cache vs tar-then-upload.

Both comparisons run on the same tar and the same local S3 (moto), contenders interleaved.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import boto3
from _timing import interleave, table

from labkit import hub, package, storage
from labkit.config import Config, load_config


class DiskPeak:
    """The most bytes that files under some folders took at once, sampled every 20 ms."""

    def __init__(self, *folders: Path) -> None:
        self.folders = folders
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _used(self) -> int:
        total = 0
        for folder in self.folders:
            for dirpath, _dirs, files in os.walk(folder):
                for name in files:
                    with contextlib.suppress(OSError):
                        total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._used())
            time.sleep(0.02)

    def __enter__(self) -> DiskPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._used())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", default=None, help="repo id (default: the lab's model)")
    parser.add_argument("--revision", default="main")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--part-size-mib", type=int, default=storage.DEFAULT_PART_SIZE >> 20)
    parser.add_argument("--concurrency", type=int, default=storage.DEFAULT_CONCURRENCY)
    return parser.parse_args()


@dataclass
class Setup:
    """What both comparisons share: the snapshot in a scratch cache, its tar, the store, boto3."""

    args: argparse.Namespace
    repo: str
    scratch: Path
    cache: Path
    snap: Any
    tar: Any
    store: Any
    plain: Any  # the same endpoint and credentials with boto3's default settings

    @property
    def part_size(self) -> int:
        return self.args.part_size_mib << 20

    def key(self, name: str, r: int) -> str:
        return f"bench/{os.getpid()}/{name}-{r}.tar"

    def drop(self, k: str) -> None:
        # moto keeps objects in memory; every contender drops its own (a few ms, alike for all).
        self.store.client.delete_object(Bucket=self.store.bucket, Key=k)

    def upload_tarball(self, path: Path, k: str) -> None:
        storage.upload_tarball(
            self.store,
            path,
            key=k,
            part_size=self.part_size,
            concurrency=self.args.concurrency,
            progress=False,
        )


def set_up(cfg: Config, args: argparse.Namespace, scratch: Path) -> Setup:
    """Download the model into a scratch cache, tar it, open the store and a plain boto3 client."""
    repo = args.repo or cfg.model_id
    cache = scratch / "cache"
    plan = hub.plan_download(
        repo, args.revision, endpoint=cfg.hub_endpoint, cache_dir=cache, fmt="all"
    )
    snap = hub.download(plan, progress=False)
    tar = package.write_tarball(cache, repo, snap.revision, scratch / "model.tar", progress=False)
    store = storage.open_store(cfg, max_connections=args.concurrency)
    # Resume records and the remembered tar hash go to the scratch folder, not the lab's.
    store.records_dir = scratch / "records"
    creds = cfg.s3_credentials()
    plain = boto3.client(  # the same endpoint and credentials with boto3's default settings
        "s3",
        endpoint_url=cfg.s3_endpoint,
        region_name=store.region,
        aws_access_key_id=creds[0] if creds else None,
        aws_secret_access_key=creds[1] if creds else None,
    )
    return Setup(args, repo, scratch, cache, snap, tar, store, plain)


def compare_with_boto3(b: Setup) -> None:
    """labkit's upload against boto3's upload_file, with its default checksum and with SHA-256."""
    args, tar, store = b.args, b.tar, b.store

    def labkit_upload(r: int) -> None:
        b.upload_tarball(tar.path, b.key("labkit", r))
        b.drop(b.key("labkit", r))

    def upload_file(r: int) -> None:
        b.plain.upload_file(str(tar.path), store.bucket, b.key("upload_file", r))
        b.drop(b.key("upload_file", r))

    def upload_file_sha256(r: int) -> None:
        # The same integrity as labkit's parts (boto3 defaults to CRC32): isolates what
        # SHA-256 costs the server (moto computes the composite in CompleteMultipartUpload).
        extra = {"ChecksumAlgorithm": "SHA256"}
        b.plain.upload_file(str(tar.path), store.bucket, b.key("sha256", r), ExtraArgs=extra)
        b.drop(b.key("sha256", r))

    print(
        f"{b.repo}@{b.snap.revision[:7]}: tar {tar.size / 1e6:.1f} MB, S3 {store.endpoint}, "
        f"labkit parts {args.part_size_mib} MiB x {args.concurrency}, "
        f"{args.rounds} interleaved rounds, load average {os.getloadavg()[0]:.1f}"
    )
    times = interleave(
        {
            "labkit upload (+verify)": labkit_upload,
            "boto3 upload_file": upload_file,
            "boto3 upload_file, SHA256": upload_file_sha256,
        },
        args.rounds,
    )
    for baseline in ("boto3 upload_file", "boto3 upload_file, SHA256"):
        print()
        print(
            table({k: times[k] for k in ("labkit upload (+verify)", baseline)}, tar.size, baseline)
        )


def compare_streaming(b: Setup) -> None:
    """Streaming vs tar-then-upload: wall time, and the disk each needs beyond the cache."""
    store = b.store
    work = b.scratch / "work"
    work.mkdir()
    peaks: dict[str, int] = {}
    label = {"stream": "stream from cache", "stream-again": "stream, tar hash remembered"}

    def streaming(name: str, *, remembered: bool) -> Callable[[int], None]:
        def run(r: int) -> None:
            if not remembered:  # a first run hashes the stream once before uploading it
                shutil.rmtree(store.records_dir / "tar-sha256", ignore_errors=True)
            with DiskPeak(work, store.records_dir) as disk:
                storage.upload_snapshot(
                    store,
                    b.snap.snapshot_dir,
                    key=b.key(name, r),
                    part_size=b.part_size,
                    concurrency=b.args.concurrency,
                    progress=False,
                )
            peaks[label[name]] = max(peaks.get(label[name], 0), disk.peak)
            b.drop(b.key(name, r))

        return run

    def tar_then_upload(r: int) -> None:
        with DiskPeak(work, store.records_dir) as disk:
            written = package.write_tarball(
                b.cache, b.repo, b.snap.revision, work / "model.tar", progress=False
            )
            b.upload_tarball(written.path, b.key("tar", r))
        peaks["tar, then upload"] = max(peaks.get("tar, then upload", 0), disk.peak)
        b.drop(b.key("tar", r))
        for p in work.iterdir():
            p.unlink()

    times = interleave(
        {
            label["stream"]: streaming("stream", remembered=False),
            label["stream-again"]: streaming("stream-again", remembered=True),
            "tar, then upload": tar_then_upload,
        },
        b.args.rounds,
    )
    print()
    print(table(times, b.tar.size, "tar, then upload"))
    print()
    print(
        f"{'contender':32} {'peak disk beyond the cache':>28}   (load average {os.getloadavg()[0]:.1f})"
    )
    for name, peak in peaks.items():
        print(f"{name:32} {peak / 1e6:25.1f} MB")


def main() -> None:
    args = parse_args()
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    cfg = load_config()
    scratch = Path(tempfile.mkdtemp(prefix="bench-upload-"))
    try:
        b = set_up(cfg, args, scratch)
        compare_with_boto3(b)
        compare_streaming(b)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
