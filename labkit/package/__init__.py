"""Package one pinned snapshot of a Hugging Face cache as the tarball AI Core unpacks into /mnt/models.

The archive is a Hugging Face cache holding exactly one snapshot, so vLLM finds the model with
HF_HUB_CACHE=/mnt/models and HF_HUB_OFFLINE=1:

    models--<org>--<name>/blobs/<etag>            file contents, named as the Hub names them
    models--<org>--<name>/refs/<ref>              the 40-hex commit, no newline (as huggingface_hub writes it)
    models--<org>--<name>/snapshots/<commit>/...  relative symlinks into ../../blobs
    version.txt                                   "1", the transformers cache-format marker

The bytes are a pure function of the snapshot: one generator (`iter_tar_bytes`) produces them,
`write_tarball` writes them to disk, and a later step can stream the same bytes to S3.

Modules: ``tarformat`` (ustar/pax headers), ``plan`` (members and size of a snapshot's archive),
``writer`` (the byte stream and the file), ``manifest`` (the manifest and sha256 sidecars),
``verify`` (layout and checksums of an archive), ``tree`` (a listing for people).
"""

from __future__ import annotations

from labkit.package.manifest import PackedFile, Tarball, write_sidecars
from labkit.package.plan import (
    VERSION_TXT,
    PlannedFile,
    TarPlan,
    plan_tarball,
    tarball_path,
)
from labkit.package.tarformat import BLOCK, MTIME, RECORD, Kind, TarMember
from labkit.package.tree import tar_tree
from labkit.package.verify import VerifyReport, verify_tarball
from labkit.package.writer import (
    CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    destination,
    iter_tar_bytes,
    write_tarball,
)

__all__ = [
    "BLOCK",
    "CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "MTIME",
    "RECORD",
    "VERSION_TXT",
    "Kind",
    "PackedFile",
    "PlannedFile",
    "TarMember",
    "TarPlan",
    "Tarball",
    "VerifyReport",
    "destination",
    "iter_tar_bytes",
    "plan_tarball",
    "tar_tree",
    "tarball_path",
    "verify_tarball",
    "write_sidecars",
    "write_tarball",
]
