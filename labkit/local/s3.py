"""The local profile's S3: moto in server mode, a real HTTP S3 endpoint on 127.0.0.1:<s3_port>.

moto runs from a venv of its own (the ``svc-s3`` extra) and keeps every bucket in memory, spilling
object bodies to temporary files under ``<local_dir>/s3``: a restart empties it. Its request
recorder (``MOTO_ENABLE_RECORDING``) could replay a session, but it stores every request body
again, base64-encoded, which for model tarballs is no persistence worth having; `up` simply
creates the lab's bucket again. Known gaps against AWS (see docs/reference.md): moto accepts a wrong
SHA-256 checksum and returns no part checksums from ListParts, so labkit.storage relies on
neither.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from labkit.config import Config
from labkit.errors import ServiceError
from labkit.local.daemon import (
    LOOPBACK,
    Daemon,
    ServiceStatus,
    extra_requirements,
    service_lock,
    tool_env,
)

S3_EXTRA = "svc-s3"
_HEALTH_TIMEOUT_S = 5.0


def s3_url(cfg: Config) -> str:
    """Where the local moto listens."""
    return f"http://127.0.0.1:{cfg.s3_port}"


@dataclass
class _Moto(Daemon):
    """moto counts as healthy only when it answers ListBuckets with S3's XML."""

    def healthy(self, timeout: float = _HEALTH_TIMEOUT_S) -> bool:
        try:
            with LOOPBACK.open(self.health_url, timeout=timeout) as resp:
                return resp.status == 200 and b"<ListAllMyBucketsResult" in resp.read(1 << 20)
        except (OSError, ValueError):
            return False


def _daemon(cfg: Config, bin_dir: Path | None = None) -> _Moto:
    bin_dir = bin_dir or cfg.local_dir / "envs" / S3_EXTRA / "bin"
    data = cfg.local_dir / "s3"
    return _Moto(
        name="s3",
        argv=[str(bin_dir / "moto_server"), "-H", "127.0.0.1", "-p", str(cfg.s3_port)],
        run_dir=cfg.local_dir,
        health_url=s3_url(cfg) + "/",
        # Object bodies above a few MB spill to temporary files: keep them with the lab's data.
        env={"TMPDIR": str(data)},
        cwd=data,
    )


def _local_cfg(cfg: Config) -> Config:
    """The same settings aimed at the local moto (whatever the profile and endpoint say)."""
    return cfg.model_copy(
        update={"profile": "local", "s3_endpoint_url": s3_url(cfg), "aws_region": "us-east-1"}
    )


def up(cfg: Config, *, progress: bool = True) -> None:
    """`labkit local up`: start moto once and create the lab's bucket; quick when both are there."""
    from tqdm.auto import tqdm

    from labkit import storage

    with (
        service_lock(cfg.local_dir / "s3.lock"),
        tqdm(total=3, desc="s3", disable=not progress, leave=False) as bar,
    ):
        daemon = _daemon(cfg)
        if daemon.pid() is None or not daemon.healthy():
            bar.set_description_str("s3: moto venv")
            bin_dir = tool_env(cfg.local_dir / "envs", S3_EXTRA)
            bar.update()
            bar.set_description_str("s3: start moto")
            (cfg.local_dir / "s3").mkdir(parents=True, exist_ok=True)
            _daemon(cfg, bin_dir).start()
        else:
            bar.update()
        bar.update()
        bar.set_description_str(f"s3: bucket {cfg.bucket}")
        store = storage.open_store(_local_cfg(cfg), cfg.bucket, check=False)
        storage.ensure_bucket(store)
        bar.update()


def down(cfg: Config) -> None:
    """Stop moto; everything it held is gone (it keeps buckets in memory)."""
    _daemon(cfg).stop()


def status(cfg: Config) -> ServiceStatus:
    """Whether moto runs, answers S3 requests and has the lab's bucket."""
    url = s3_url(cfg)

    def details(pid: int) -> ServiceStatus | str:
        objects = _count_objects(url, cfg.bucket)
        if objects is None:
            return ServiceStatus(
                "s3", url, False, f"no bucket {cfg.bucket} (moto restarted?): run `labkit local up`"
            )
        return (
            f"{_moto_requirement()}, pid {pid}, bucket {cfg.bucket} ({objects} objects); "
            "in memory: a restart empties it"
        )

    return _daemon(cfg).status(url, "does not answer S3 requests", details)


def _count_objects(url: str, bucket: str) -> int | None:
    """Objects in the bucket (first 1000), or None when the bucket is missing."""
    try:
        with LOOPBACK.open(f"{url}/{bucket}?list-type=2", timeout=_HEALTH_TIMEOUT_S) as resp:
            body = resp.read(8 << 20)
    except (OSError, ValueError):
        return None
    match = re.search(rb"<KeyCount>(\d+)</KeyCount>", body)
    return int(match.group(1)) if match else body.count(b"<Contents>")


def _moto_requirement() -> str:
    try:
        return extra_requirements(S3_EXTRA)[0]
    except ServiceError:
        return "moto"
