"""Step 02: download a model from a Hugging Face Hub at a pinned revision, and verify it.

huggingface_hub does the downloading (concurrency, the cache layout, skipping finished files);
this module pins the revision, chooses the files, checks the disk, and proves the result:
every file's size, every LFS file's sha256 against the Hub's etag, every small file's git id.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import posixpath
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from labkit.errors import DiskError, ModelError, ServiceError
from labkit.util import html
from labkit.util.fs import HASH_CHUNK, human_bytes, sha256_file
from labkit.util.names import is_commit

SHA256 = re.compile(r"^[0-9a-f]{64}$")
WEIGHT_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".msgpack",
    ".onnx",
    ".gguf",
)
# Format presets: which weight files to keep. "safetensors" falls back to .bin, per folder,
# where a folder has no safetensors (old checkpoints, some diffusers components).
FORMATS = {
    "safetensors": ((".safetensors",), (".bin",)),
    "bin": ((".bin",), ()),
    "pt": ((".pt", ".pth"), ()),
    "all": ((), ()),
}
DISK_MARGIN_BYTES = 512 * 2**20


@dataclass
class RepoFile:
    """One file of the repo at the pinned commit, as the Hub describes it."""

    path: str
    size: int
    blob_id: str
    lfs_sha256: str | None = None


@dataclass
class DownloadPlan:
    """What a download will fetch: the pinned commit, the chosen files, the bytes still missing."""

    repo_id: str
    revision: str
    requested_revision: str
    endpoint: str
    cache_dir: str
    files: list[RepoFile]
    missing_bytes: int

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def _repr_html_(self) -> str:
        rows = html.table(
            ["file", "size", "storage"],
            [
                [
                    f"<code>{escape(f.path)}</code>",
                    human_bytes(f.size),
                    "LFS" if f.lfs_sha256 else "git",
                ]
                for f in self.files
            ],
            align=["", "right"],
        )
        return (
            f"<p><b>{escape(self.repo_id)}</b> @ <code>{escape(self.requested_revision)}</code> "
            f"= <code>{self.revision}</code><br>{len(self.files)} files, {human_bytes(self.total_bytes)}; "
            f"still to fetch {human_bytes(self.missing_bytes)} into <code>{escape(self.cache_dir)}</code></p>"
            f"{rows}"
        )


@dataclass
class ManifestEntry:
    """One downloaded file: its path in the snapshot, size, sha256 and the Hub's etag (blob name)."""

    path: str
    size: int
    sha256: str
    etag: str


@dataclass
class Snapshot:
    """A verified snapshot in the Hugging Face cache."""

    repo_id: str
    revision: str
    requested_revision: str
    endpoint: str
    cache_dir: str
    snapshot_dir: str
    files: list[ManifestEntry] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _repr_html_(self) -> str:
        rows = html.table(
            ["file", "size", "sha256"],
            [
                [
                    f"<code>{escape(f.path)}</code>",
                    human_bytes(f.size),
                    f"<code>{f.sha256[:16]}…</code>",
                ]
                for f in self.files
            ],
            align=["", "right"],
        )
        return (
            f"<p>✅ <b>{escape(self.repo_id)}</b> @ <code>{self.revision}</code> verified: "
            f"{len(self.files)} files, {human_bytes(self.total_bytes)}<br><code>{escape(self.snapshot_dir)}</code></p>"
            f"{rows}"
        )


def repo_folder(cache_dir: str | Path, repo_id: str) -> Path:
    """The cache folder of a model repo: ``models--<org>--<name>``."""
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def select_files(
    paths: Iterable[str],
    *,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    fmt: str = "safetensors",
) -> list[str]:
    """The repo paths to download: include/exclude globs, then the format preset, folder by folder."""
    if fmt not in FORMATS:
        raise ModelError(f"unknown format '{fmt}'", f"use one of {', '.join(FORMATS)}")
    chosen = [
        p
        for p in paths
        if (not include or any(fnmatch.fnmatch(p, g) for g in include))
        and not any(fnmatch.fnmatch(p, g) for g in exclude)
    ]
    preferred, fallback = FORMATS[fmt]
    if not preferred:
        return sorted(chosen)
    by_folder: dict[str, list[str]] = {}
    for p in chosen:
        if p.endswith(WEIGHT_SUFFIXES):
            by_folder.setdefault(posixpath.dirname(p), []).append(p)
    keep_weights: set[str] = set()
    for weights in by_folder.values():
        for suffixes in (preferred, fallback):
            picked = [p for p in weights if suffixes and p.endswith(suffixes)]
            if picked:
                keep_weights.update(picked)
                break
    return sorted(p for p in chosen if not p.endswith(WEIGHT_SUFFIXES) or p in keep_weights)


def _api(endpoint: str, token: str | None) -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint, token=token)


def _translate(
    exc: Exception, *, repo_id: str, revision: str, endpoint: str, token: str | None
) -> Exception:
    """Turn a huggingface_hub/httpx error into a one-line LabError that says what to do."""
    import httpx2  # huggingface_hub's HTTP client
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, HFValidationError):  # huggingface_hub refuses the name before any request
        shown = repo_id if len(repo_id) <= 100 else repo_id[:99] + "…"
        return ModelError(
            f"{shown!r} is not a Hub repo id",
            "use org/name: letters, digits, '-', '_' and '.', at most 96 characters",
        )
    if isinstance(exc, GatedRepoError):
        if token:
            return ModelError(
                f"{repo_id} is gated and the token in HF_TOKEN has no access to it",
                f"accept the model's terms at {endpoint}/{repo_id} with the token's account",
            )
        return ModelError(
            f"{repo_id} is gated",
            f"accept its terms at {endpoint}/{repo_id}, then set HF_TOKEN to a token of that account",
        )
    if isinstance(exc, RevisionNotFoundError):
        return ModelError(
            f"{repo_id} has no revision '{revision}' at {endpoint}",
            "use a branch, a tag or a full 40-hex commit of that repo",
        )
    if isinstance(exc, RepositoryNotFoundError):
        return ModelError(
            f"no model repo '{repo_id}' at {endpoint}",
            "check the repo id (org/name); for a private repo set HF_TOKEN",
        )
    if isinstance(exc, httpx2.TransportError | ConnectionError | TimeoutError) or (
        isinstance(exc, OSError) and "connect" in str(exc).lower()
    ):
        local = endpoint.startswith(("http://127.0.0.1", "http://localhost"))
        return ServiceError(
            f"the Hub at {endpoint} is unreachable ({type(exc).__name__})",
            "start the local services with `labkit local up`"
            if local
            else "check the network and HF_ENDPOINT",
        )
    return exc


def resolve_revision(
    repo_id: str, revision: str, *, endpoint: str, token: str | None = None
) -> tuple[str, Any]:
    """The full 40-hex commit that ``revision`` names, and the repo info at it; refuses ambiguity."""
    api = _api(endpoint, token)
    try:
        if not is_commit(revision):
            refs = api.list_repo_refs(repo_id)
            branches = {b.name: b.target_commit for b in refs.branches}
            tags = {t.name: t.target_commit for t in refs.tags}
            if revision in branches and revision in tags and branches[revision] != tags[revision]:
                raise ModelError(
                    f"'{revision}' is both a branch and a tag of {repo_id}, at different commits",
                    f"pass refs/heads/{revision}, refs/tags/{revision} or the full commit",
                )
            if (
                revision not in branches
                and revision not in tags
                and not revision.startswith("refs/")
            ):
                hint = (
                    "branches: "
                    + ", ".join(sorted(branches))
                    + "; tags: "
                    + (", ".join(sorted(tags)) or "none")
                )
                if re.fullmatch(r"[0-9a-f]{7,39}", revision):
                    hint = "pass the full 40-hex commit, not an abbreviation"
                raise ModelError(f"{repo_id} has no branch or tag '{revision}'", hint)
        info = api.model_info(repo_id, revision=revision, files_metadata=True)
    except ModelError:
        raise
    except Exception as exc:
        raise _translate(
            exc, repo_id=repo_id, revision=revision, endpoint=endpoint, token=token
        ) from None
    if not info.sha or not is_commit(info.sha):
        raise ServiceError(
            f"the Hub at {endpoint} did not name the commit of {repo_id}@{revision}",
            "check HF_ENDPOINT points at a Hugging Face Hub",
        )
    if is_commit(revision) and info.sha != revision:
        raise ModelError(
            f"{repo_id}@{revision} resolved to another commit ({info.sha})", "check the revision"
        )
    return info.sha, info


def _complete_blob(folder: Path, f: RepoFile) -> bool:
    blob = folder / "blobs" / (f.lfs_sha256 or f.blob_id)
    return blob.is_file() and blob.stat().st_size == f.size


def plan_download(
    repo_id: str,
    revision: str = "main",
    *,
    endpoint: str,
    cache_dir: str | Path,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    fmt: str = "safetensors",
    token: str | None = None,
) -> DownloadPlan:
    """Pin the revision, choose the files and count what is still missing from the cache."""
    sha, info = resolve_revision(repo_id, revision, endpoint=endpoint, token=token)
    siblings = {s.rfilename: s for s in info.siblings or []}
    paths = select_files(siblings, include=include, exclude=exclude, fmt=fmt)
    if not paths:
        shown = ", ".join(sorted(siblings)[:8]) + (" ..." if len(siblings) > 8 else "")
        raise ModelError(
            f"no file of {repo_id}@{sha[:7]} matches include={list(include)} exclude={list(exclude)} format={fmt}",
            f"the repo has: {shown}",
        )
    files = [
        RepoFile(
            p,
            int(siblings[p].size or 0),
            siblings[p].blob_id or "",
            siblings[p].lfs.sha256 if siblings[p].lfs else None,
        )
        for p in paths
    ]
    if getattr(info, "gated", False):
        _check_access(
            repo_id, sha, min(files, key=lambda f: f.size).path, endpoint=endpoint, token=token
        )
    folder = repo_folder(cache_dir, repo_id)
    missing = sum(f.size for f in files if not _complete_blob(folder, f))
    return DownloadPlan(repo_id, sha, revision, endpoint, str(cache_dir), files, missing)


def _check_access(repo_id: str, sha: str, path: str, *, endpoint: str, token: str | None) -> None:
    """A gated repo shows its metadata to anyone; ask for one file now rather than fail mid-download."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    try:
        get_hf_file_metadata(
            hf_hub_url(repo_id, path, revision=sha, endpoint=endpoint), token=token
        )
    except Exception as exc:
        raise _translate(
            exc, repo_id=repo_id, revision=sha, endpoint=endpoint, token=token
        ) from None


def check_disk(plan: DownloadPlan) -> None:
    """Refuse to start when the cache's disk cannot hold what is still to fetch."""
    target = Path(plan.cache_dir)
    target.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(target).free
    need = plan.missing_bytes + DISK_MARGIN_BYTES
    if plan.missing_bytes and free < need:
        raise DiskError(
            f"{plan.repo_id} needs {human_bytes(need)} more in {target}, only {human_bytes(free)} is free",
            "free disk space or set LABKIT_HUB_CACHE_DIR to a larger disk",
        )


def download(
    plan: DownloadPlan, *, max_workers: int = 8, token: str | None = None, progress: bool = True
) -> Snapshot:
    """Fetch the planned files at the pinned commit (finished files are skipped), then verify them."""
    from huggingface_hub import snapshot_download
    from tqdm.auto import tqdm

    check_disk(plan)
    _remove_orphaned_partials(plan)
    try:
        snapshot_download(
            plan.repo_id,
            revision=plan.revision,
            cache_dir=plan.cache_dir,
            allow_patterns=[glob.escape(f.path) for f in plan.files],
            max_workers=max_workers,
            endpoint=plan.endpoint,
            token=token,
            tqdm_class=tqdm if progress else None,
        )
    except Exception as exc:
        raise _translate(
            exc, repo_id=plan.repo_id, revision=plan.revision, endpoint=plan.endpoint, token=token
        ) from None
    folder = repo_folder(plan.cache_dir, plan.repo_id)
    if plan.requested_revision != plan.revision:
        # snapshot_download was given the commit, so it wrote no ref; record the name we pinned.
        ref = (
            folder
            / "refs"
            / plan.requested_revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        )
        ref.parent.mkdir(parents=True, exist_ok=True)
        ref.write_text(plan.revision)
    return verify_snapshot(plan, progress=progress)


def _remove_orphaned_partials(plan: DownloadPlan) -> None:
    """Delete partial blobs a killed download left behind (huggingface_hub restarts them anyway).

    A partial is orphaned when nobody holds its blob's lock in ``.locks``, the same lock
    huggingface_hub takes while it writes that blob.
    """
    from filelock import FileLock, Timeout

    folder = repo_folder(plan.cache_dir, plan.repo_id)
    locks = Path(plan.cache_dir) / ".locks" / folder.name
    for partial in folder.glob("blobs/*.incomplete"):
        etag = partial.name.split(".", 1)[0]
        try:
            with FileLock(locks / f"{etag}.lock", timeout=0):
                partial.unlink(missing_ok=True)
        except Timeout:
            continue  # another process is downloading this blob right now


def _git_blob_id(path: Path, size: int) -> str:
    digest = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_snapshot(plan: DownloadPlan, *, progress: bool = False) -> Snapshot:
    """Check every planned file against the Hub's metadata; a bad blob is removed and named."""
    from tqdm.auto import tqdm

    folder = repo_folder(plan.cache_dir, plan.repo_id)
    snap = folder / "snapshots" / plan.revision
    entries: list[ManifestEntry] = []
    with tqdm(
        total=plan.total_bytes, unit="B", unit_scale=True, desc="verify", disable=not progress
    ) as bar:
        for f in plan.files:
            link = snap / f.path
            if not link.exists():
                raise ModelError(
                    f"{f.path} is missing from the snapshot {snap}",
                    "run the download again to fetch it",
                )
            blob = link.resolve()
            size = blob.stat().st_size
            sha = sha256_file(blob)
            problem = None
            if size != f.size:
                problem = f"has {size} bytes, the Hub says {f.size}"
            elif f.lfs_sha256 and sha != f.lfs_sha256:
                problem = f"sha256 {sha[:12]}… differs from the Hub's etag {f.lfs_sha256[:12]}…"
            elif not f.lfs_sha256 and f.blob_id and _git_blob_id(blob, size) != f.blob_id:
                problem = f"git id differs from the Hub's {f.blob_id[:12]}…"
            if problem:
                # Never leave a bad file looking complete: the next run fetches it again.
                blob.unlink(missing_ok=True)
                link.unlink(missing_ok=True)
                raise ModelError(
                    f"{f.path} of {plan.repo_id}@{plan.revision[:7]} {problem}",
                    "run the download again",
                )
            entries.append(ManifestEntry(f.path, size, sha, blob.name))
            bar.update(size)
    return Snapshot(
        plan.repo_id,
        plan.revision,
        plan.requested_revision,
        plan.endpoint,
        plan.cache_dir,
        str(snap),
        entries,
    )
