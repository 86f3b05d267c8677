"""The local profile's Hugging Face Hub: olah, a Hub mirror server, serving local git repos offline.

Clients reach it through ``HF_ENDPOINT`` = ``cfg.hub_endpoint`` (http://127.0.0.1:<hub_port>).
Each repo is a git repository at ``<local_dir>/hub/mirrors/models/<org>/<name>``, the layout olah's
offline mirror reads. Large files are Git LFS pointers whose bytes sit in
``.git/lfs/objects/<aa>/<bb>/<sha256>``, where `git lfs` would put them (git-lfs itself is not
needed), so that they are LFS files with a sha256, as on huggingface.co.

olah runs inside a small launcher (``olah_launch.py``, run by olah's own venv) that corrects what its
offline mirror mode answers differently from huggingface.co: the errors for an unknown repo,
revision or file, model info without a revision or with file metadata, the ETag headers of LFS
files, streaming; and it emulates gated repos. Its docstring lists each change.

The default model's repo has two commits with fixed authors, dates and messages, so their ids are
the same on every machine: the model as built (tagged ``v1.0``) and a README note on top, which
``main`` points at. Pinning a revision is therefore observable: ``main`` and the first commit differ.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from labkit.config import DEFAULT_MODEL_ID, Config
from labkit.errors import ModelError, ServiceError
from labkit.local.daemon import (
    LOOPBACK,
    Daemon,
    ServiceStatus,
    extra_requirements,
    service_lock,
    tool_env,
)

log = logging.getLogger(__name__)

DEFAULT_REPO_ID = DEFAULT_MODEL_ID
DEFAULT_TAG = "v1.0"
# The default repo's two commits, as `up` builds them from the default model folder (whose bytes
# are deterministic). `default_revisions()` reads them from the built repo.
FIRST_COMMIT = "47bb1c287b2258735d6b877801c714a292bc7c5e"
MAIN_COMMIT = "6d86325e0e6acc56868542c32e1a1e1a4e92b541"

OLAH_EXTRA = "svc-hub"
# The Hub takes files up to 10 MB into plain git; larger ones must go through LFS.
LFS_MIN_SIZE = 10 * 1000 * 1000
# huggingface.co's default .gitattributes for a new model repo: these go to LFS whatever their size.
LFS_PATTERNS = (
    "*.7z",
    "*.arrow",
    "*.bin",
    "*.bz2",
    "*.ckpt",
    "*.ftz",
    "*.gguf",
    "*.gz",
    "*.h5",
    "*.joblib",
    "*.lfs.*",
    "*.mlmodel",
    "*.model",
    "*.msgpack",
    "*.npy",
    "*.npz",
    "*.onnx",
    "*.ot",
    "*.parquet",
    "*.pb",
    "*.pickle",
    "*.pkl",
    "*.pt",
    "*.pth",
    "*.rar",
    "*.safetensors",
    "saved_model/**/*",
    "*.tar.*",
    "*.tar",
    "*.tflite",
    "*.tgz",
    "*.wasm",
    "*.xz",
    "*.zip",
    "*.zst",
    "*tfevents*",
)

_AUTHOR = {
    "GIT_AUTHOR_NAME": "labkit",
    "GIT_AUTHOR_EMAIL": "labkit@localhost",
    "GIT_COMMITTER_NAME": "labkit",
    "GIT_COMMITTER_EMAIL": "labkit@localhost",
}
# Every repo's first commit is dated here, each later one a day after its parent, so that
# the same files give the same commit ids on every machine.
_EPOCH = 1730419200  # 2024-11-01T00:00:00Z
_DAY = 86400
_FIRST_MESSAGE = "Add SmolLM2-135M-Instruct dequantized from the Q4_1 GGUF"
_SECOND_MESSAGE = "README: note the pinned first revision"
_README_NOTE = f"""
## Revisions

The lab's local Hub serves two commits of this repo: the model as built (tag `{DEFAULT_TAG}`) and
this note on top of it (`main`). The weights are the same in both.
"""
_GATED_FILE = "labkit-gated"  # in .git; the launcher reads the same name
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_GIT_TIMEOUT_S = 600
_HEALTH_TIMEOUT_S = 5.0


# The program olah runs in (see its docstring): olah_launch.py beside this module, run with the
# tool venv's Python, which has olah but not labkit.
_LAUNCHER = Path(__file__).with_name("olah_launch.py")


def hub_dir(cfg: Config) -> Path:
    """The local Hub's data: git repos, olah's config, cache and logs."""
    return cfg.local_dir / "hub"


def hub_url(cfg: Config) -> str:
    """Where the local Hub listens (HF_ENDPOINT for the local profile)."""
    return f"http://127.0.0.1:{cfg.hub_port}"


def repo_dir(cfg: Config, repo_id: str) -> Path:
    """The git repo that olah serves as the model repo `repo_id`."""
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        raise ModelError(
            f"{repo_id!r} is not a Hub repo id", "use the form org/name (letters, digits, . _ -)"
        )
    return hub_dir(cfg) / "mirrors" / "models" / repo_id


def add_model(
    cfg: Config,
    folder: Path,
    repo_id: str,
    *,
    message: str | None = None,
    tag: str | None = None,
    gated_token: str | None = None,
) -> str:
    """Serve `folder` as the model repo `repo_id`; return the commit id `main` then points at.

    A changed folder becomes a new commit on `main` (an unchanged one none); `tag` names that
    commit; `gated_token` makes the repo gated, its files served only to that token (a call
    without it makes the repo public again).
    """
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise ModelError(f"{folder} is not a folder", "pass the folder that holds the model files")
    files = _folder_files(folder)
    if not files:
        raise ModelError(f"{folder} holds no files", "pass the folder that holds the model files")
    repo = repo_dir(cfg, repo_id)
    _require_git()
    with service_lock(hub_dir(cfg) / ".lock"):
        if not (repo / ".git").is_dir():
            repo.mkdir(parents=True, exist_ok=True)
            _init_repo(repo)
        parent = _rev(repo, "refs/heads/main")
        commit = _commit(repo, files, parent=parent, message=message or f"Upload {folder.name}")
        if commit != parent:
            _git(repo, "update-ref", "refs/heads/main", commit)
        if tag:
            _git(repo, "update-ref", f"refs/tags/{tag}", commit)
        gate = repo / ".git" / _GATED_FILE
        if gated_token:
            # Only a digest: the launcher compares the request's token against it.
            gate.write_text(hashlib.sha256(gated_token.encode()).hexdigest() + "\n")
        else:
            gate.unlink(missing_ok=True)
    return commit


def default_revisions(cfg: Config) -> dict[str, str]:
    """The default repo's refs as built here: ``{"main": ..., "v1.0": ...}``."""
    repo = repo_dir(cfg, DEFAULT_REPO_ID)
    return {
        "main": _rev(repo, "refs/heads/main") or "",
        DEFAULT_TAG: _rev(repo, f"refs/tags/{DEFAULT_TAG}") or "",
    }


def ensure_default_repo(cfg: Config, *, progress: bool = True) -> Path:
    """Build the default model's git repo unless an intact one is there; return its path."""
    _require_git()
    with service_lock(hub_dir(cfg) / ".lock"):
        return _ensure_default_repo(cfg, progress=progress)


def _ensure_default_repo(cfg: Config, *, progress: bool) -> Path:
    from labkit.local.model import ensure_default_model

    dest = repo_dir(cfg, DEFAULT_REPO_ID)
    if _default_repo_intact(dest):
        return dest
    folder = ensure_default_model(cfg.local_model_dir, progress=progress)
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    for stale in dest.parent.glob(f".{dest.name}.partial-*"):  # killed builds; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    # Built beside its final place and renamed, so an interrupted build leaves no half repo.
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    work.chmod(0o755)
    try:
        _init_repo(work)
        files = _folder_files(folder)
        memo: dict[tuple[Path, int, int], tuple[str, int]] = {}
        first = _commit(work, files, parent=None, message=_FIRST_MESSAGE, lfs_memo=memo)
        readme = files["README.md"].read_bytes() + _README_NOTE.encode()
        second = _commit(
            work,
            {**files, "README.md": readme},
            parent=first,
            message=_SECOND_MESSAGE,
            lfs_memo=memo,
        )
        _git(work, "update-ref", f"refs/tags/{DEFAULT_TAG}", first)
        _git(work, "update-ref", "refs/heads/main", second)
        work.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if (first, second) != (FIRST_COMMIT, MAIN_COMMIT):
        # Still a consistent Hub; only the ids differ from the ones the docs quote.
        log.warning(
            "the default repo's commits are %s and %s, not the pinned %s and %s: the model "
            "folder's bytes differ from the reference build (other transformers version?)",
            first,
            second,
            FIRST_COMMIT,
            MAIN_COMMIT,
        )
    return dest


def up(cfg: Config, *, progress: bool = True) -> None:
    """`labkit local up`: build the repos and start olah once; quick when it already answers."""
    daemon = _daemon(cfg)
    if daemon.pid() is not None and daemon.healthy():
        return
    _require_git()
    # Under the lock from the first check to the start: a second `up` waits, then finds olah up.
    with service_lock(hub_dir(cfg) / ".lock"):
        daemon = _daemon(cfg)
        if daemon.pid() is not None:
            if daemon.healthy():
                return
            daemon.stop()  # hung, or started for another port: start afresh
        if _port_in_use(cfg.hub_port):
            raise ServiceError(
                f"port {cfg.hub_port} is taken by another program, so the local hub cannot start",
                "stop that program or set LABKIT_HUB_PORT to a free port",
            )
        with _Steps(progress) as steps:
            steps.start("tool env")
            bin_dir = tool_env(cfg.local_dir / "envs", OLAH_EXTRA)
            steps.start("git repos")
            _ensure_default_repo(cfg, progress=progress)
            steps.start("start olah")
            _write_olah_config(cfg)
            _daemon(cfg, bin_dir).start()
            steps.finish()


def down(cfg: Config) -> None:
    """Stop olah; the git repos stay for the next `up`."""
    _daemon(cfg).stop()


def status(cfg: Config) -> ServiceStatus:
    """Whether olah runs and serves the default repo."""

    def details(pid: int) -> str:
        repos = sorted(
            f"{p.parent.name}/{p.name}"
            for p in (hub_dir(cfg) / "mirrors" / "models").glob("*/*")
            if (p / ".git").is_dir() and not p.name.startswith(".")
        )
        return f"{_olah_requirement()}, pid {pid}, repos: {', '.join(repos)}"

    return _daemon(cfg).status(hub_url(cfg), "does not serve the default repo", details)


@dataclass
class _Olah(Daemon):
    """olah counts as healthy only when it serves the default repo at its first commit."""

    expected_sha: str = ""

    def healthy(self, timeout: float = _HEALTH_TIMEOUT_S) -> bool:
        try:
            with LOOPBACK.open(self.health_url, timeout=timeout) as resp:
                return json.load(resp).get("sha") == self.expected_sha
        except (OSError, ValueError, AttributeError):
            return False


def _daemon(cfg: Config, bin_dir: Path | None = None) -> _Olah:
    bin_dir = bin_dir or cfg.local_dir / "envs" / OLAH_EXTRA / "bin"
    root = hub_dir(cfg)
    first = _rev(repo_dir(cfg, DEFAULT_REPO_ID), f"refs/tags/{DEFAULT_TAG}") or FIRST_COMMIT
    return _Olah(
        name="hub",
        argv=[
            str(bin_dir / "python"),
            str(_LAUNCHER),
            "--config",
            str(root / "olah.toml"),
            "--log-path",
            str(root / "logs"),
        ],
        run_dir=cfg.local_dir,
        health_url=f"{hub_url(cfg)}/api/models/{DEFAULT_REPO_ID}/revision/{first}",
        env={"LABKIT_HUB_MIRRORS": str(root / "mirrors")},
        cwd=root,
        expected_sha=first,
    )


def _write_olah_config(cfg: Config) -> None:
    root = hub_dir(cfg)
    for sub in ("mirrors", "cache", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    # offline: never reach huggingface.co; every answer comes from the git repos in mirrors-path.
    text = (
        "[basic]\n"
        'host = "127.0.0.1"\n'
        f"port = {cfg.hub_port}\n"
        f'mirror-netloc = "127.0.0.1:{cfg.hub_port}"\n'
        f'mirror-lfs-netloc = "127.0.0.1:{cfg.hub_port}"\n'
        f"repos-path = {json.dumps(str(root / 'cache'))}\n"
        f"mirrors-path = [{json.dumps(str(root / 'mirrors'))}]\n"
        "\n[accessibility]\n"
        "offline = true\n"
    )
    (root / "olah.toml").write_text(text, encoding="utf-8")


def _olah_requirement() -> str:
    try:
        return extra_requirements(OLAH_EXTRA)[0]
    except ServiceError:
        return "olah"


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _require_git() -> None:
    if shutil.which("git") is None:
        raise ServiceError(
            "the local hub needs git, which is not installed",
            "install it (`apt-get install git`) and run `labkit local up` again",
        )


def _git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY")
    }
    # The user's git config must not change the objects (signing, encoding, object format).
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, GIT_TERMINAL_PROMPT="0")
    env.update(extra or {})
    return env


def _git(
    repo: Path, *args: str, input: str | None = None, env: Mapping[str, str] | None = None
) -> str:
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo), *args],
            input=input,
            capture_output=True,
            text=True,
            env=_git_env(env),
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServiceError(
            f"git {args[0]} failed in {repo} ({exc})", "check that git works"
        ) from exc
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ServiceError(
            f"git {args[0]} failed in {repo} ({last})",
            f"delete {repo} and run `labkit local up` again",
        )
    return proc.stdout.strip()


def _rev(repo: Path, ref: str) -> str | None:
    """The commit id `ref` names in `repo`, or None when the repo or ref is missing."""
    if not (repo / ".git").is_dir():
        return None
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            capture_output=True,
            text=True,
            env=_git_env(),
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def _init_repo(repo: Path) -> None:
    _git(repo, "init", "--quiet")
    _git(repo, "symbolic-ref", "HEAD", "refs/heads/main")


def _default_repo_intact(repo: Path) -> bool:
    """The refs are there, main sits on the tag, and every LFS object of both commits is in place."""
    main, first = _rev(repo, "refs/heads/main"), _rev(repo, f"refs/tags/{DEFAULT_TAG}")
    if main is None or first is None or _rev(repo, "refs/heads/main~1") != first:
        return False
    try:
        return all(_lfs_objects_present(repo, commit) for commit in (first, main))
    except ServiceError:
        return False


def _lfs_objects_present(repo: Path, commit: str) -> bool:
    listing = _git(repo, "ls-tree", "-r", "-l", commit)
    for line in listing.splitlines():
        meta, _path = line.split("\t", 1)
        _mode, _type, blob, size = meta.split()
        if not 120 < int(size) < 150:
            continue
        pointer = _parse_pointer(_git(repo, "cat-file", "blob", blob) + "\n")
        if pointer is None:
            continue
        oid, length = pointer
        obj = _lfs_object_path(repo, oid)
        if not obj.is_file() or obj.stat().st_size != length:
            return False
    return True


def _parse_pointer(text: str) -> tuple[str, int] | None:
    match = re.fullmatch(
        r"version https://git-lfs\.github\.com/spec/v1\noid sha256:([0-9a-f]{64})\nsize ([0-9]+)\n",
        text,
    )
    return (match.group(1), int(match.group(2))) if match else None


def _lfs_object_path(repo: Path, oid: str) -> Path:
    return repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid


def _folder_files(folder: Path) -> dict[str, Path]:
    """The files of a model folder by repo path, without git's or huggingface_hub's own folders."""
    files = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if any(part in (".git", ".cache") for part in rel.parts) or not path.is_file():
            continue
        if "\n" in rel.as_posix():
            raise ModelError(f"{path} has a newline in its name", "rename the file")
        files[rel.as_posix()] = path
    return files


def _is_lfs_pattern(rel: str) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(rel if "/" in p else name, p) for p in LFS_PATTERNS)


def _gitattributes(extra_paths: list[str]) -> bytes:
    lines = [f"{p} filter=lfs diff=lfs merge=lfs -text" for p in LFS_PATTERNS]
    lines += [
        f"{p.replace(' ', '[[:space:]]')} filter=lfs diff=lfs merge=lfs -text" for p in extra_paths
    ]
    return ("\n".join(lines) + "\n").encode()


def _store_lfs(repo: Path, src: Path) -> tuple[str, int]:
    """Copy `src` into the repo's LFS store under its sha256 (one pass); return (sha256, size)."""
    tmp_dir = repo / ".git" / "lfs" / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    with tempfile.NamedTemporaryFile(dir=tmp_dir, delete=False) as out, src.open("rb") as f:
        tmp = Path(out.name)
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    oid = digest.hexdigest()
    dest = _lfs_object_path(repo, oid)
    if dest.is_file() and dest.stat().st_size == size:
        tmp.unlink()
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp.chmod(0o644)
        tmp.rename(dest)
    return oid, size


def _commit(
    repo: Path,
    files: Mapping[str, Path | bytes],
    *,
    parent: str | None,
    message: str,
    lfs_memo: dict[tuple[Path, int, int], tuple[str, int]] | None = None,
) -> str:
    """Commit exactly `files` (repo path -> file or bytes) on top of `parent`; return the commit id.

    Returns `parent` itself when the tree would not change. Large files become LFS pointers.
    """
    lfs_memo = {} if lfs_memo is None else lfs_memo
    scratch = Path(tempfile.mkdtemp(prefix="labkit-", dir=repo / ".git"))
    try:
        blobs: dict[str, Path] = {}
        size_lfs: list[str] = []
        for n, (rel, src) in enumerate(sorted(files.items())):
            if isinstance(src, bytes):
                path = scratch / f"content-{n}"
                path.write_bytes(src)
                src = path
            stat = src.stat()
            if not (_is_lfs_pattern(rel) or stat.st_size >= LFS_MIN_SIZE):
                blobs[rel] = src
                continue
            key = (src, stat.st_size, stat.st_mtime_ns)
            if key not in lfs_memo:
                lfs_memo[key] = _store_lfs(repo, src)
            oid, size = lfs_memo[key]
            pointer = scratch / f"pointer-{n}"
            pointer.write_text(
                f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
            )
            blobs[rel] = pointer
            if not _is_lfs_pattern(rel):
                size_lfs.append(rel)
        if ".gitattributes" not in blobs:
            attrs = scratch / "gitattributes"
            attrs.write_bytes(_gitattributes(size_lfs))
            blobs[".gitattributes"] = attrs
        names = sorted(blobs)
        shas = _git(
            repo,
            "hash-object",
            "-w",
            "--no-filters",
            "--stdin-paths",
            input="".join(f"{blobs[name]}\n" for name in names),
        ).split()
        index_env = {"GIT_INDEX_FILE": str(scratch / "index")}
        _git(
            repo,
            "update-index",
            "--add",
            "--index-info",
            input="".join(f"100644 {sha}\t{name}\n" for sha, name in zip(shas, names, strict=True)),
            env=index_env,
        )
        tree = _git(repo, "write-tree", env=index_env)
        if parent is not None:
            if _git(repo, "rev-parse", f"{parent}^{{tree}}") == tree:
                return parent
            when = int(_git(repo, "show", "-s", "--format=%ct", parent)) + _DAY
        else:
            when = _EPOCH
        date = f"{when} +0000"
        args = ["-c", "i18n.commitEncoding=UTF-8", "commit-tree", "--no-gpg-sign", tree]
        if parent is not None:
            args += ["-p", parent]
        return _git(
            repo,
            *args,
            input=message.rstrip("\n") + "\n",
            env={**_AUTHOR, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date},
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class _Steps:
    """`up`'s steps as a tqdm bar (none when quiet)."""

    def __init__(self, enabled: bool) -> None:
        from tqdm.auto import tqdm

        self.started = False
        self.bar = tqdm(
            total=3,
            desc="hub",
            disable=not enabled,
            bar_format="{desc} {n_fmt}/{total_fmt} [{elapsed}]",
        )

    def start(self, what: str) -> None:
        if self.started:
            self.bar.update()
        self.started = True
        log.debug("hub: %s", what)
        self.bar.set_description_str(f"hub: {what}")

    def finish(self) -> None:
        self.bar.update()
        self.bar.set_description_str("hub: running")

    def __enter__(self) -> _Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.close()
