"""Multipart uploads left open under the lab's key prefix: listed with this machine's resume
records, and aborted when their process is gone (or, with an age, anyone's)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from labkit.storage.client import Store, _code
from labkit.storage.naming import KEY_ROOT
from labkit.storage.records import _records


@dataclass
class StaleUpload:
    """A multipart upload left open under the lab's key prefix."""

    key: str
    upload_id: str
    initiated: str
    recorded_parts: int | None = None
    owner_pid: int | None = None
    aborted: bool = False
    record: str | None = field(default=None, repr=False)

    @property
    def ours(self) -> bool:
        """Whether this machine's lab started it (a resume record exists)."""
        return self.record is not None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ours": self.ours}


def list_stale_uploads(store: Store, prefix: str = KEY_ROOT + "/") -> list[StaleUpload]:
    """Open multipart uploads under ``prefix``, with the resume record this machine keeps for each."""
    by_upload = {(r.key, r.upload_id): r for r in _records(store)}
    found: list[StaleUpload] = []
    kwargs: dict[str, Any] = {"Bucket": store.bucket, "Prefix": prefix}
    try:
        while True:
            page = store.client.list_multipart_uploads(**kwargs)
            for up in page.get("Uploads", []):
                rec = by_upload.get((up["Key"], up["UploadId"]))
                initiated = up.get("Initiated")
                found.append(
                    StaleUpload(
                        key=up["Key"],
                        upload_id=up["UploadId"],
                        initiated=initiated.isoformat() if initiated else "",
                        recorded_parts=len(rec.parts) if rec else None,
                        owner_pid=rec.active_elsewhere() if rec else None,
                        record=str(rec.path) if rec else None,
                    )
                )
            if not page.get("IsTruncated"):
                break
            kwargs.update(
                KeyMarker=page.get("NextKeyMarker", ""),
                UploadIdMarker=page.get("NextUploadIdMarker", ""),
            )
    except Exception as exc:
        raise store.translate(exc) from None
    return found


def abort_stale_uploads(
    store: Store,
    *,
    older_than: timedelta | None = None,
    prefix: str = KEY_ROOT + "/",
) -> list[StaleUpload]:
    """Abort this machine's uploads whose process is gone (and, with ``older_than``, older others)."""
    # Uploads without a record here may be a teammate's, still running: only age lets them go.
    now = datetime.now(UTC)
    aborted = []
    for up in list_stale_uploads(store, prefix):
        if up.owner_pid is not None:
            continue
        if not up.ours:
            if older_than is None or not up.initiated:
                continue
            if now - datetime.fromisoformat(up.initiated) < older_than:
                continue
        try:
            store.client.abort_multipart_upload(
                Bucket=store.bucket, Key=up.key, UploadId=up.upload_id
            )
        except Exception as exc:
            if _code(exc) not in ("NoSuchUpload", "404"):
                raise store.translate(exc, key=up.key) from None
        if up.record:
            Path(up.record).unlink(missing_ok=True)
        up.aborted = True
        aborted.append(up)
    return aborted
