#!/usr/bin/env python3
"""Container entrypoint of the inference-server image: environment -> vLLM command line -> exec.

    python entrypoint.py                      resolve the model, then exec serve.py (vLLM's
                                              OpenAI server plus the legacy /generate route)
    python entrypoint.py --print-command      resolve the model, print the command as JSON, exit
    python entrypoint.py --unpack TAR DEST    unpack a model tarball under the server's safety rules

Settings come only from environment variables (see ENV_FLAGS and the README beside this file);
the model comes from MODELS_DIR (KServe's /mnt/models): an unpacked Hugging Face cache, a plain
model folder, or a single tarball that is unpacked into a writable dir first. vLLM serves the
local snapshot path under --served-model-name, offline, so it never calls the Hub.

Standard library only: the image carries vLLM but not the lab, so this file imports nothing else.
Every failure exits with EXIT_ERROR and one line on stderr, `entrypoint: error: ...`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
import tarfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# vLLM's OpenAI server with the legacy demo server's /generate added; it lives beside this file.
SERVER = Path(__file__).resolve().with_name("serve.py")
DEFAULT_MODELS_DIR = "/mnt/models"
DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = "8080"  # KServe's default container port
EXIT_ERROR = 2
# vLLM 0.32's --dtype choices (vllm/config/model.py ModelDType).
DTYPES = ("auto", "bfloat16", "float", "float16", "float32", "half")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
MARKER = ".entrypoint-unpacked.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# Environment for vLLM: the snapshot is local, so the Hub must never be asked (and must not be
# able to be: a pod may have no egress), and nothing phones home.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
_HEX40 = re.compile(r"[0-9a-fA-F]{40}")
_REPO_ID = re.compile(r"(?:[\w.-]+/)?[\w.-]+")
_REF = re.compile(r"[\w.-]+(?:/[\w.-]+)*")
_WORD = re.compile(r"[\w.-]+")
_INT = re.compile(r"\d+")
# vLLM's human_readable_int: "32k" = 32,000 and "4G" = 4 GiB (decimals only with k/m/g/t).
_SIZE = re.compile(r"\d+(?:\.\d+)?[kmgt]|\d+[KMGT]")
_MULT = {"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}
_MULT.update({"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40})
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


class EntrypointError(Exception):
    """A problem the deployment can fix; the message is one line saying what to change."""


@dataclass(frozen=True)
class EnvFlag:
    """One environment variable and the vLLM flag it becomes."""

    env: str
    flag: str
    kind: str  # int | size | fraction | dtype | bool | word
    none_is_unset: bool = False


# Order here is the order in the command line. Flags are vLLM 0.32's (vllm/engine/arg_utils.py).
ENV_FLAGS = (
    EnvFlag("NUM_SHARD", "--tensor-parallel-size", "int"),
    EnvFlag("DTYPE", "--dtype", "dtype"),
    EnvFlag("TRUST_REMOTE_CODE", "--trust-remote-code", "bool"),
    EnvFlag("MAX_MODEL_LEN", "--max-model-len", "size"),
    EnvFlag("GPU_MEMORY_UTILIZATION", "--gpu-memory-utilization", "fraction"),
    EnvFlag("KV_CACHE_MEMORY_BYTES", "--kv-cache-memory-bytes", "size"),
    EnvFlag("KV_CACHE_DTYPE", "--kv-cache-dtype", "word"),
    EnvFlag("MAX_NUM_BATCHED_TOKENS", "--max-num-batched-tokens", "size"),
    EnvFlag("MAX_NUM_SEQS", "--max-num-seqs", "int"),
    EnvFlag("BLOCK_SIZE", "--block-size", "int"),
    # Public templates pass QUANTIZATION=None to mean "not quantized"; as a flag it breaks vLLM.
    EnvFlag("QUANTIZATION", "--quantization", "word", none_is_unset=True),
    EnvFlag("ENFORCE_EAGER", "--enforce-eager", "bool"),
)
# Flags the entrypoint itself may add, and vLLM's other spellings of them.
MANAGED_FLAGS = (
    "--model",
    "--served-model-name",
    "--host",
    "--port",
    *(f.flag for f in ENV_FLAGS),
)
FLAG_ALIASES = {
    "-tp": "--tensor-parallel-size",
    "-q": "--quantization",
    "--device-memory-utilization": "--gpu-memory-utilization",
}
BOOL_FLAGS = {f.flag for f in ENV_FLAGS if f.kind == "bool"}


@dataclass(frozen=True)
class Model:
    """What vLLM serves: a local model folder and the name clients ask for."""

    path: Path
    name: str
    revision: str | None = None


@dataclass(frozen=True)
class Unpacked:
    """The result of an unpack: where it went, how much, and whether it was already there."""

    dest: Path
    files: int
    bytes: int
    reused: bool


def log(message: str) -> None:
    """Write one line to stderr, prefixed so it stands out in the pod log."""
    print(f"entrypoint: {message}", file=sys.stderr, flush=True)


def _value(environ: Mapping[str, str], name: str) -> str | None:
    """The stripped value of a variable, or None when it is unset or empty."""
    value = environ.get(name, "").strip()
    return value or None


def parse_bool(name: str, value: str) -> bool:
    """true/false/1/0/yes/no (any case) as a bool; anything else is an error naming the variable."""
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise EntrypointError(f"{name}={value!r}: expected true/false, 1/0 or yes/no")


def _check_value(spec: EnvFlag, value: str) -> str:
    """Validate one setting and return the text the flag gets."""
    name = spec.env
    if spec.kind == "int":
        if not _INT.fullmatch(value) or int(value) < 1:
            raise EntrypointError(f"{name}={value!r}: expected a whole number of at least 1")
        return str(int(value))
    if spec.kind == "size":
        if _INT.fullmatch(value):
            if int(value) < 1:
                raise EntrypointError(f"{name}={value!r}: expected a positive whole number")
            return str(int(value))
        if _SIZE.fullmatch(value) and float(value[:-1]) * _MULT[value[-1]] >= 1:
            return value
        raise EntrypointError(
            f"{name}={value!r}: expected a positive whole number (or vLLM's 32k / 4G forms)"
        )
    if spec.kind == "fraction":
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not 0 < number <= 1:
            raise EntrypointError(f"{name}={value!r}: expected a fraction in (0, 1], e.g. 0.9")
        return value
    if spec.kind == "dtype":
        if value.lower() not in DTYPES:
            raise EntrypointError(f"{name}={value!r}: expected one of {', '.join(DTYPES)}")
        return value.lower()
    if not _WORD.fullmatch(value):
        raise EntrypointError(f"{name}={value!r}: expected a single word such as awq or fp8")
    return value


def parse_arg(arg: str | None) -> list[str]:
    """Split the free-form ARG variable the way a shell would."""
    if not arg or not arg.strip():
        return []
    try:
        return shlex.split(arg)
    except ValueError as err:
        raise EntrypointError(f"ARG cannot be split like a shell line ({err}): {arg!r}") from None


def canonical_flag(token: str) -> str | None:
    """The managed flag a token of ARG sets (under any spelling vLLM accepts), or None."""
    if not re.match(r"--?[A-Za-z]", token):
        return None  # a value, including negative numbers
    key = token.split("=", 1)[0]
    if key.startswith("--"):
        if "." in key:
            return None  # --some-config.field: a JSON sub-key, never a managed flag
        key = "--" + key[2:].replace("_", "-")  # vLLM accepts --max_model_len too
    key = FLAG_ALIASES.get(key, key)
    if key.startswith("--no-") and "--" + key[5:] in BOOL_FLAGS:
        key = "--" + key[5:]
    if key in MANAGED_FLAGS:
        return key
    if key.startswith("--"):
        # argparse accepts unambiguous abbreviations (--max-model 2048). No vLLM 0.32 flag is a
        # proper prefix of a managed flag, so a prefix here can only mean that flag.
        matches = [f for f in MANAGED_FLAGS if f.startswith(key)]
        if len(matches) == 1:
            return matches[0]
    return None


def flags_in(tokens: Sequence[str]) -> set[str]:
    """The managed flags that ARG's tokens already set."""
    return {flag for token in tokens if (flag := canonical_flag(token))}


def env_flag_groups(environ: Mapping[str, str]) -> list[list[str]]:
    """Each set setting as its flag and value (a bool as the flag alone), in ENV_FLAGS order."""
    groups: list[list[str]] = []
    for spec in ENV_FLAGS:
        value = _value(environ, spec.env)
        if value is None or (spec.none_is_unset and value.lower() in ("none", "null")):
            continue
        if spec.kind == "bool":
            if parse_bool(spec.env, value):
                groups.append([spec.flag])
        else:
            groups.append([spec.flag, _check_value(spec, value)])
    return groups


def env_flags(environ: Mapping[str, str]) -> list[str]:
    """vLLM flags for the settings that are set, each validated; unset ones are left out."""
    return [token for group in env_flag_groups(environ) for token in group]


def server_settings(environ: Mapping[str, str]) -> tuple[str, str]:
    """HOST and PORT, validated; PORT defaults to KServe's 8080."""
    host = _value(environ, "HOST") or DEFAULT_HOST
    port = _value(environ, "PORT") or DEFAULT_PORT
    if not _INT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise EntrypointError(f"PORT={port!r}: expected a TCP port number from 1 to 65535")
    if any(c.isspace() for c in host):
        raise EntrypointError(f"HOST={host!r}: expected a host name or address")
    return host, str(int(port))


def build_command(
    model: Model, environ: Mapping[str, str], python: str = sys.executable
) -> list[str]:
    """The exact vLLM command: managed flags from the environment, minus those ARG sets, then ARG."""
    extra = parse_arg(environ.get("ARG"))
    given = flags_in(extra)
    if "--model" in given:
        raise EntrypointError(
            "ARG sets --model: remove it; the entrypoint serves the model it finds in MODELS_DIR "
            "(choose it with MODEL_ID and REVISION)"
        )
    host, port = server_settings(environ)
    served = _value(environ, "MODEL_SERVE_NAME") or model.name
    managed = [["--served-model-name", served], ["--host", host], ["--port", port]]
    managed += env_flag_groups(environ)  # validated even when ARG overrides, so typos surface
    flags = [token for group in managed if group[0] not in given for token in group]
    return [python, str(SERVER), "--model", str(model.path), *flags, *extra]


def _writable_dir(path: str | None) -> bool:
    """Whether ``path`` is an existing directory this process may write into."""
    return bool(path) and os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)


def temp_root(environ: Mapping[str, str]) -> Path:
    """The writable scratch dir: TMPDIR, else /tmp."""
    return Path(_value(environ, "TMPDIR") or "/tmp")


def vllm_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment vLLM runs with: offline, no telemetry, writable caches, no VLLM_PORT."""
    env = dict(environ)
    # vLLM reads VLLM_PORT as an internal port, not the API port; Kubernetes injects
    # VLLM_PORT=tcp://<ip>:<port> when a service named "vllm" exists, which crashes vLLM at start.
    env.pop("VLLM_PORT", None)
    env.update(OFFLINE_ENV)
    if not _writable_dir(env.get("HOME")):
        # AI Core runs pods as user 65534, whose home is /nonexistent: every ~/.cache or
        # ~/.config write (Hugging Face, vLLM, torch, triton) needs a writable home instead.
        home = temp_root(environ) / "labkit-home"
        env["HOME"] = str(home)
        env.setdefault("XDG_CACHE_HOME", str(home / ".cache"))
        env.setdefault("XDG_CONFIG_HOME", str(home / ".config"))
        env.setdefault("HF_HOME", str(home / ".cache" / "huggingface"))
        env.setdefault("VLLM_CACHE_ROOT", str(home / ".cache" / "vllm"))
        env.setdefault("VLLM_CONFIG_ROOT", str(home / ".config" / "vllm"))
    return env


def _listing(names: Sequence[str], limit: int = 6) -> str:
    """A short comma-separated list of names, for error messages."""
    if not names:
        return "nothing"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _visible(path: Path) -> list[Path]:
    """The entries of a directory, sorted, without hidden ones (lost+found counts as hidden)."""
    return sorted(
        p for p in path.iterdir() if not p.name.startswith(".") and p.name != "lost+found"
    )


def _repo_id(folder: str) -> str:
    """The Hub repo id a cache folder name stands for: models--org--name -> org/name."""
    return folder.removeprefix("models--").replace("--", "/", 1)


def find_tarball(models_dir: Path) -> Path | None:
    """The single tarball in a models dir that holds no unpacked model, else None."""
    entries = _visible(models_dir)
    if any(p.name.startswith("models--") and p.is_dir() for p in entries):
        return None
    if (models_dir / "config.json").is_file():
        return None
    tars = [p for p in entries if p.is_file() and p.name.endswith(TAR_SUFFIXES)]
    if len(tars) > 1:
        raise EntrypointError(
            f"{models_dir} holds {len(tars)} tarballs ({_listing([p.name for p in tars])}): "
            "the model artifact must be exactly one .tar or .tar.gz"
        )
    return tars[0] if tars else None


def resolve_model(
    models_dir: Path, model_id: str | None = None, revision: str | None = None
) -> Model:
    """Find the model in an unpacked models dir and check it is complete enough to serve."""
    if not models_dir.is_dir():
        raise EntrypointError(
            f"MODELS_DIR {models_dir} is not a directory: bind the model artifact "
            "(KServe unpacks it into /mnt/models) or set MODELS_DIR"
        )
    entries = _visible(models_dir)
    caches = [p for p in entries if p.name.startswith("models--") and p.is_dir()]
    if caches:
        return _resolve_cache(models_dir, caches, model_id, revision)
    if (models_dir / "config.json").is_file():
        check_model_files(models_dir, models_dir)
        return Model(models_dir, model_id or models_dir.name, None)
    raise EntrypointError(
        f"no model in {models_dir}: expected models--<org>--<name>/ (a Hugging Face cache), "
        f"a config.json or one .tar; it holds {_listing([p.name for p in entries])}"
    )


def _resolve_cache(
    root: Path, caches: list[Path], model_id: str | None, revision: str | None
) -> Model:
    """Pick the repo folder and the snapshot REVISION names in a Hugging Face cache."""
    known = ", ".join(_repo_id(p.name) for p in caches)
    if model_id:
        if not _REPO_ID.fullmatch(model_id):
            raise EntrypointError(f"MODEL_ID={model_id!r}: expected a Hub repo id like org/name")
        repo = root / ("models--" + model_id.replace("/", "--"))
        if not repo.is_dir():
            raise EntrypointError(
                f"MODEL_ID={model_id}: no {repo.name} in {root}; it holds MODEL_ID={known}"
            )
    elif len(caches) == 1:
        repo = caches[0]
        model_id = _repo_id(repo.name)
    else:
        raise EntrypointError(f"{root} holds several models: set MODEL_ID to one of {known}")

    snapshots = repo / "snapshots"
    have = sorted(p.name for p in snapshots.iterdir()) if snapshots.is_dir() else []
    if revision and _HEX40.fullmatch(revision):
        commit = revision.lower()
    else:
        ref = revision or "main"
        if not _REF.fullmatch(ref) or ".." in ref.split("/"):
            raise EntrypointError(f"REVISION={ref!r}: expected a 40-hex commit or a ref name")
        ref_file = repo / "refs" / ref
        if ref_file.is_file():
            commit = ref_file.read_text(encoding="utf-8").strip()
            if not _HEX40.fullmatch(commit):
                raise EntrypointError(f"{ref_file} holds {commit[:60]!r}, not a 40-hex commit")
        elif revision is None and len(have) == 1:
            commit = have[0]  # snapshot_download(revision=<sha>) writes no refs: one snapshot
        else:
            refs_dir = repo / "refs"
            refs = (
                sorted(
                    p.relative_to(refs_dir).as_posix() for p in refs_dir.rglob("*") if p.is_file()
                )
                if refs_dir.is_dir()
                else []
            )
            raise EntrypointError(
                f"{model_id}: no ref {ref!r} in {repo.name}/refs (refs: {_listing(refs)}; "
                f"snapshots: {_listing(have)}): set REVISION to one of them"
            )
    snapshot = snapshots / commit
    if not snapshot.is_dir():
        raise EntrypointError(
            f"{model_id}: no snapshot {commit} in {repo.name}/snapshots (it holds {_listing(have)}): "
            "set REVISION to one of them or package that revision"
        )
    check_model_files(snapshot, root)
    return Model(snapshot, model_id, commit)


def check_model_files(folder: Path, tree: Path) -> None:
    """Require config, tokenizer and weights, and every symlink resolving to a file inside ``tree``."""
    top = os.path.realpath(tree)
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in (*dirnames, *filenames):
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                continue
            rel = os.path.relpath(path, folder)
            target = os.path.realpath(path)
            if os.path.commonpath([top, target]) != top:
                raise EntrypointError(f"{folder}: {rel} links to {target}, outside {tree}")
            if not os.path.exists(target):
                raise EntrypointError(
                    f"{folder}: {rel} links to the missing {target} (an incomplete download or unpack)"
                )
    if not (folder / "config.json").is_file():
        raise EntrypointError(f"{folder}: no config.json; is this a Hugging Face model folder?")
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise EntrypointError(
            f"{folder}: no tokenizer (expected one of {', '.join(TOKENIZER_FILES)})"
        )
    for index in WEIGHT_INDEXES:
        if (folder / index).is_file():
            try:
                shards = set(
                    json.loads((folder / index).read_text(encoding="utf-8"))["weight_map"].values()
                )
            except (ValueError, KeyError, TypeError, AttributeError):
                raise EntrypointError(f"{folder}: {index} has no readable weight_map") from None
            missing = sorted(s for s in shards if not (folder / s).is_file())
            if missing:
                raise EntrypointError(
                    f"{folder}: {index} lists {len(missing)} missing shard(s): {_listing(missing)}"
                )
            return
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise EntrypointError(f"{folder}: no weights (*.safetensors or *.bin)")


def _member_parts(name: str) -> list[str]:
    """Path components of a member name, refusing absolute names and '..'."""
    if name.startswith("/") or re.match(r"[A-Za-z]:[\\/]", name):
        raise EntrypointError(f"refused: member {name!r} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise EntrypointError(f"refused: member {name!r} has a '..' component")
    return parts


def _resolve_in_tree(parts: list[str], symlinks: Mapping[str, str], what: str) -> list[str]:
    """Resolve a path through the archive's own symlinks, refusing any step outside its root."""
    done: list[str] = []
    todo = list(parts)
    hops = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not done:
                raise EntrypointError(f"refused: {what} leaves the archive")
            done.pop()
            continue
        done.append(part)
        target = symlinks.get("/".join(done))
        if target is not None:
            hops += 1
            if hops > 40:
                raise EntrypointError(f"refused: {what} goes through a symlink loop")
            if target.startswith("/"):
                raise EntrypointError(f"refused: {what} goes through a link to an absolute path")
            done.pop()
            todo = target.split("/") + todo
    return done


def check_members(members: Sequence[tarfile.TarInfo], max_bytes: int | None = None) -> int:
    """Check every member against the unpack rules before anything is written; return the bytes."""
    kinds: dict[str, str] = {}
    symlinks: dict[str, str] = {}
    order: dict[str, int] = {}
    total = 0
    for i, ti in enumerate(members):
        parts = _member_parts(ti.name)
        path = "/".join(parts)
        if ti.ischr() or ti.isblk():
            raise EntrypointError(f"refused: member {ti.name!r} is a device")
        if ti.isfifo():
            raise EntrypointError(f"refused: member {ti.name!r} is a FIFO")
        if not (ti.isreg() or ti.isdir() or ti.issym() or ti.islnk()):
            raise EntrypointError(f"refused: member {ti.name!r} has unsupported type {ti.type!r}")
        if not parts:
            if ti.isdir():
                continue  # "./", the archive root itself
            raise EntrypointError(f"refused: member {ti.name!r} has no name")
        if path in kinds:
            raise EntrypointError(f"refused: member {path!r} appears twice")
        if ti.isreg():
            if max_bytes is not None and ti.size > max_bytes:
                raise EntrypointError(
                    f"refused: member {path!r} is {ti.size} bytes, over MAX_UNPACK_BYTES={max_bytes}"
                )
            total += ti.size
        kinds[path] = "dir" if ti.isdir() else "symlink" if ti.issym() else "file"
        order[path] = i
        if ti.issym():
            symlinks[path] = ti.linkname
    if max_bytes is not None and total > max_bytes:
        raise EntrypointError(
            f"refused: the archive holds {total} bytes, over MAX_UNPACK_BYTES={max_bytes}"
        )
    for i, ti in enumerate(members):
        parts = _member_parts(ti.name)
        path = "/".join(parts)
        for depth in range(1, len(parts)):
            # Nothing is written through a link or under a file: then every parent is a real
            # directory of the tree, and a link's position is what its name says.
            parent = "/".join(parts[:depth])
            if kinds.get(parent, "dir") != "dir":
                raise EntrypointError(
                    f"refused: member {path!r} lies under the {kinds[parent]} {parent!r}"
                )
        if ti.issym():
            what = f"symlink {path!r} -> {ti.linkname!r}"
            if not ti.linkname:
                raise EntrypointError(f"refused: {what} has an empty target")
            if ti.linkname.startswith("/"):
                raise EntrypointError(f"refused: {what} points to an absolute path")
            # Relative to the link's own directory, and followed through the archive's other
            # links the way the kernel will follow them.
            _resolve_in_tree([*parts[:-1], *ti.linkname.split("/")], symlinks, what)
        elif ti.islnk():
            # A hard link's target is named relative to the archive root (as tarfile and GNU tar
            # write it) and must be a regular file the archive already extracted.
            what = f"hard link {path!r} -> {ti.linkname!r}"
            if ti.linkname.startswith("/") or ".." in ti.linkname.split("/"):
                raise EntrypointError(f"refused: {what} leaves the archive")
            target = "/".join(p for p in ti.linkname.split("/") if p not in ("", "."))
            if kinds.get(target) != "file" or order[target] >= i:
                raise EntrypointError(
                    f"refused: {what} does not name an earlier regular file of the archive"
                )
    return total


def _tar_identity(tar: Path) -> dict[str, object]:
    """What the unpack marker records, so the same tarball is never unpacked twice."""
    st = tar.stat()
    return {"tar": str(tar.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_marker(dest: Path) -> dict[str, object] | None:
    """The unpack marker of a finished unpack, or None."""
    try:
        return json.loads((dest / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _free_bytes(path: Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (or would, once created)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def _remove_stale_partials(dest: Path) -> None:
    """Delete unfinished unpacks of ``dest`` left by processes that are gone."""
    for partial in dest.parent.glob(f".{dest.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        alive = False
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                alive = True
            except ProcessLookupError:
                pass
            except PermissionError:
                alive = True
        if not alive:
            shutil.rmtree(partial, ignore_errors=True)


def _extract(tf: tarfile.TarFile, members: Sequence[tarfile.TarInfo], root: Path) -> int:
    """Write checked members under ``root``: dirs 0755, files read-only, links as links."""
    files = 0
    for ti in members:
        parts = _member_parts(ti.name)
        if not parts:
            continue
        target = root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        if ti.isdir():
            target.mkdir(mode=0o755, exist_ok=True)
        elif ti.issym():
            os.symlink(ti.linkname, target)
        elif ti.islnk():
            source_parts = [p for p in ti.linkname.split("/") if p not in ("", ".")]
            os.link(root.joinpath(*source_parts), target, follow_symlinks=False)
            files += 1
        else:
            source = tf.extractfile(ti)
            if source is None:
                raise EntrypointError(f"cannot read member {ti.name!r}")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            with source, os.fdopen(os.open(target, flags, 0o600), "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
            os.chmod(target, 0o444)
            files += 1
    return files


def unpack_tarball(
    tar: Path, dest: Path, *, max_bytes: int | None = None, replace: bool = False
) -> Unpacked:
    """Unpack a model tarball into ``dest`` safely and once: checked first, then temp dir + rename."""
    if not tar.is_file():
        raise EntrypointError(f"{tar}: no such tarball")
    identity = _tar_identity(tar)
    marker = _read_marker(dest) if dest.is_dir() else None
    if marker is not None and {k: marker.get(k) for k in identity} == identity:
        return Unpacked(dest, int(marker.get("files", 0)), int(marker.get("bytes", 0)), True)
    if dest.exists() or dest.is_symlink():
        if not dest.is_dir() or dest.is_symlink():
            raise EntrypointError(
                f"{dest} exists and is not a directory: remove it or pick another DEST"
            )
        if marker is not None and not replace:
            raise EntrypointError(f"{dest} holds an unpack of {marker.get('tar')}: remove it first")
        if marker is None and any(dest.iterdir()):
            raise EntrypointError(f"{dest} exists and is not empty: remove it or pick another DEST")
    try:
        tf = tarfile.open(tar, "r:*")  # noqa: SIM115 - closed by the `with tf:` below
    except (tarfile.TarError, OSError) as err:
        raise EntrypointError(f"{tar}: not a readable tar archive ({err})") from None
    with tf:
        try:
            members = tf.getmembers()
        except (tarfile.TarError, OSError, EOFError) as err:
            raise EntrypointError(f"{tar}: damaged tar archive ({err})") from None
        total = check_members(members, max_bytes)
        free = _free_bytes(dest.parent)
        if total > free:
            raise EntrypointError(
                f"refused: {tar.name} unpacks to {total} bytes and {dest.parent} has {free} free"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(dest)
        partial = dest.parent / f".{dest.name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            partial.mkdir(mode=0o755)
            files = _extract(tf, members, partial)
            record = {**identity, "files": files, "bytes": total}
            (partial / MARKER).write_text(json.dumps(record) + "\n", encoding="utf-8")
            if dest.is_dir():
                # Only an empty dir or an unpack of another tarball (replace=True) gets here.
                shutil.rmtree(dest)
            os.rename(partial, dest)
        except EntrypointError:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        except (OSError, tarfile.TarError, EOFError) as err:
            shutil.rmtree(partial, ignore_errors=True)
            raise EntrypointError(f"unpacking {tar.name} into {dest} failed: {err}") from None
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    return Unpacked(dest, files, total, False)


def max_unpack_bytes(environ: Mapping[str, str]) -> int | None:
    """MAX_UNPACK_BYTES as an int, or None when unset."""
    value = _value(environ, "MAX_UNPACK_BYTES")
    if value is None:
        return None
    spec = EnvFlag("MAX_UNPACK_BYTES", "", "size")
    text = _check_value(spec, value)
    return int(text) if _INT.fullmatch(text) else int(float(text[:-1]) * _MULT[text[-1]])


def unpack_dest(tar: Path, environ: Mapping[str, str]) -> Path:
    """Where the server unpacks a tarball: UNPACK_DIR (default $TMPDIR/labkit-models)/<tar stem>."""
    base = Path(_value(environ, "UNPACK_DIR") or temp_root(environ) / "labkit-models")
    stem = tar.name
    for suffix in TAR_SUFFIXES:
        stem = stem.removesuffix(suffix)
    return base / stem


def prepare_model(environ: Mapping[str, str]) -> Model:
    """Locate the model (unpacking a single tarball if that is what MODELS_DIR holds) and check it."""
    models_dir = Path(_value(environ, "MODELS_DIR") or DEFAULT_MODELS_DIR)
    if not models_dir.is_dir():
        hint = f" (STORAGE_URI={uri})" if (uri := _value(environ, "STORAGE_URI")) else ""
        raise EntrypointError(
            f"MODELS_DIR {models_dir} is not a directory{hint}: bind the model artifact "
            "(KServe unpacks it into /mnt/models) or set MODELS_DIR"
        )
    tar = find_tarball(models_dir)
    if tar is not None:
        limit = max_unpack_bytes(environ)
        started = time.monotonic()
        done = unpack_tarball(tar, unpack_dest(tar, environ), max_bytes=limit, replace=True)
        if done.reused:
            log(f"model tarball {tar.name} already unpacked in {done.dest}")
        else:
            log(
                f"unpacked {tar.name} ({done.files} files, {done.bytes / 1e6:.1f} MB) into "
                f"{done.dest} in {time.monotonic() - started:.1f} s"
            )
        models_dir = done.dest
    return resolve_model(models_dir, _value(environ, "MODEL_ID"), _value(environ, "REVISION"))


USAGE = "usage: entrypoint.py [--print-command | --unpack TAR DEST]"


def run(args: Sequence[str], environ: Mapping[str, str]) -> int:
    """Do what the arguments ask; raises EntrypointError (or OSError) on failure."""
    args = list(args)
    if args in (["-h"], ["--help"]):
        print(f"{USAGE}\n\n{__doc__}")
        return 0
    if args[:1] == ["--unpack"]:
        if len(args) != 3:
            raise EntrypointError(f"--unpack takes TAR and DEST; {USAGE}")
        done = unpack_tarball(Path(args[1]), Path(args[2]), max_bytes=max_unpack_bytes(environ))
        state = "already unpacked in" if done.reused else "unpacked into"
        log(f"{args[1]}: {done.files} files, {done.bytes} bytes {state} {args[2]}")
        return 0
    if args not in ([], ["--print-command"]):
        raise EntrypointError(
            f"unknown arguments {shlex.join(args)}: vLLM flags go in ARG; {USAGE}"
        )
    model = prepare_model(environ)
    command = build_command(model, environ)
    if args == ["--print-command"]:
        print(json.dumps(command))
        return 0
    if not SERVER.is_file():
        raise EntrypointError(f"{SERVER} is missing: copy serve.py beside entrypoint.py")
    env = vllm_env(environ)
    Path(env["HOME"]).mkdir(parents=True, exist_ok=True)
    log(f"exec {shlex.join(command)}")
    sys.stdout.flush()
    # exec, not a child process: vLLM becomes this process (PID 1 in the container), so the
    # kubelet's SIGTERM reaches it directly and its exit status is the container's.
    os.execvpe(command[0], command, env)
    return EXIT_ERROR  # not reached: execvpe returns only by raising


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run the entrypoint; every failure becomes one `entrypoint: error:` line and EXIT_ERROR."""
    try:
        return run(
            sys.argv[1:] if argv is None else argv, os.environ if environ is None else environ
        )
    except EntrypointError as err:
        message = str(err)
    except OSError as err:
        message = f"{err.strerror or err}" + (f": {err.filename}" if err.filename else "")
    except Exception as err:  # a bug, still reported the way the contract says: one line
        message = f"unexpected {type(err).__name__}: {err}"
    print(f"entrypoint: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
