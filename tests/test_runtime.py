"""runtime/entrypoint.py: environment -> vLLM command, model resolution, safe unpack, and a real start."""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from labkit.util.net import free_port
from labkit.util.procs import group_alive

ROOT = Path(__file__).resolve().parents[1]
ENTRYPOINT = ROOT / "runtime" / "entrypoint.py"
SERVER = str(ROOT / "runtime" / "serve.py")  # vLLM's OpenAI server plus /generate
REPO_ID = "org/tiny"
FOLDER = "models--org--tiny"
SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER = "89abcdef0123456789abcdef0123456789abcdef"
FILES = {
    "config.json": b'{"model_type": "llama"}\n',
    "tokenizer.json": b'{"model": {}}\n',
    "tokenizer_config.json": b"{}\n",
    "model.safetensors": b"\0" * 4096,
}


def _load() -> ModuleType:
    """The entrypoint is a script, not a package module: load it from its file."""
    spec = importlib.util.spec_from_file_location("runtime_entrypoint", ENTRYPOINT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


ep = _load()


def add_snapshot(cache: Path, folder: str, commit: str, files: dict[str, bytes]) -> Path:
    """A snapshot as huggingface_hub writes it: blobs by hash, relative symlinks to them."""
    repo = cache / folder
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap = repo / "snapshots" / commit
    for rel, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    return snap


def set_ref(cache: Path, folder: str, ref: str, commit: str) -> None:
    """Write refs/<ref> the way huggingface_hub does (no newline)."""
    path = cache / folder / "refs" / ref
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(commit)


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """A models dir holding an unpacked cache of org/tiny: SHA (refs/main) and OTHER (refs/v1)."""
    root = tmp_path / "models"
    add_snapshot(root, FOLDER, SHA, FILES)
    add_snapshot(root, FOLDER, OTHER, FILES)
    set_ref(root, FOLDER, "main", SHA)
    set_ref(root, FOLDER, "v1", OTHER)
    (root / "version.txt").write_text("1")
    return root


def command(environ: dict[str, str]) -> list[str]:
    """What --print-command would print, computed in-process."""
    return ep.build_command(ep.prepare_model(environ), environ)


def run_main(
    capsys: pytest.CaptureFixture[str], argv: list[str], environ: dict[str, str]
) -> tuple[int, str, str]:
    """main() in-process: exit code, stdout, stderr."""
    code = ep.main(argv, environ)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    """The failure contract: a fixed non-zero code and one `entrypoint: error:` line, no traceback."""
    assert code == ep.EXIT_ERROR == 2
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("entrypoint: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


# --- environment -> command ---------------------------------------------------------------------


def test_typical_deployment_gives_the_exact_command(models: Path) -> None:
    environ = {
        "MODELS_DIR": str(models),
        "STORAGE_URI": "ai://default/models/tiny",
        "MODEL_ID": REPO_ID,
        "REVISION": SHA,
        "MODEL_SERVE_NAME": "tiny-chat",
        "NUM_SHARD": "2",
        "DTYPE": "half",
        "TRUST_REMOTE_CODE": "false",
        "MAX_MODEL_LEN": "4096",
        "GPU_MEMORY_UTILIZATION": "0.9",
        "QUANTIZATION": "None",
        "PORT": "8080",
        "ARG": "--max-num-seqs 64 --dtype=bfloat16",
    }
    assert command(environ) == [
        sys.executable, SERVER,
        "--model", str(models / FOLDER / "snapshots" / SHA),
        "--served-model-name", "tiny-chat",
        "--host", "0.0.0.0",
        "--port", "8080",
        "--tensor-parallel-size", "2",
        "--max-model-len", "4096",
        "--gpu-memory-utilization", "0.9",
        "--max-num-seqs", "64",
        "--dtype=bfloat16",
    ]  # fmt: skip


def test_unset_and_empty_values_are_left_out(models: Path) -> None:
    blank = {spec.env: "" for spec in ep.ENV_FLAGS} | {"ARG": " ", "PORT": "", "HOST": ""}
    for environ in ({"MODELS_DIR": str(models)}, {"MODELS_DIR": str(models), **blank}):
        assert command(environ) == [
            sys.executable, SERVER,
            "--model", str(models / FOLDER / "snapshots" / SHA),
            "--served-model-name", REPO_ID,  # the cache folder names the repo
            "--host", "0.0.0.0",
            "--port", "8080",  # KServe's default container port
        ]  # fmt: skip


def test_every_setting_becomes_its_flag() -> None:
    environ = {
        "NUM_SHARD": "4",
        "DTYPE": "BFloat16",
        "TRUST_REMOTE_CODE": "Yes",
        "MAX_MODEL_LEN": "32k",
        "GPU_MEMORY_UTILIZATION": "0.85",
        "KV_CACHE_MEMORY_BYTES": "4G",
        "KV_CACHE_DTYPE": "fp8",
        "MAX_NUM_BATCHED_TOKENS": "8192",
        "MAX_NUM_SEQS": "128",
        "BLOCK_SIZE": "16",
        "QUANTIZATION": "awq",
        "ENFORCE_EAGER": "1",
    }
    assert ep.env_flags(environ) == [
        "--tensor-parallel-size", "4",
        "--dtype", "bfloat16",
        "--trust-remote-code",
        "--max-model-len", "32k",
        "--gpu-memory-utilization", "0.85",
        "--kv-cache-memory-bytes", "4G",
        "--kv-cache-dtype", "fp8",
        "--max-num-batched-tokens", "8192",
        "--max-num-seqs", "128",
        "--block-size", "16",
        "--quantization", "awq",
        "--enforce-eager",
    ]  # fmt: skip
    false = {"TRUST_REMOTE_CODE": "no", "ENFORCE_EAGER": "FALSE", "QUANTIZATION": "none"}
    assert ep.env_flags(false) == []


@pytest.mark.parametrize(
    ("arg", "flag"),
    [
        ("--dtype=bfloat16", "--dtype"),
        ("--dtype bfloat16", "--dtype"),
        ("--max_model_len 1024", "--max-model-len"),
        ("--max-model 1024", "--max-model-len"),  # argparse takes unambiguous abbreviations
        ("-tp 4", "--tensor-parallel-size"),
        ("-tp=4", "--tensor-parallel-size"),
        ("--device-memory-utilization 0.5", "--gpu-memory-utilization"),
        ("--no-enforce-eager", "--enforce-eager"),
        ("--trust_remote_code", "--trust-remote-code"),
        ("-q gptq", "--quantization"),
        ("--port=9000", "--port"),
        ("--host ::", "--host"),
        ("--served-model-name a b", "--served-model-name"),
    ],
)
def test_a_flag_in_arg_is_never_added_again(models: Path, arg: str, flag: str) -> None:
    environ = {
        "MODELS_DIR": str(models),
        "NUM_SHARD": "2",
        "DTYPE": "half",
        "TRUST_REMOTE_CODE": "true",
        "MAX_MODEL_LEN": "2048",
        "GPU_MEMORY_UTILIZATION": "0.9",
        "QUANTIZATION": "awq",
        "ENFORCE_EAGER": "true",
        "ARG": f"--seed 7 {arg}",
    }
    cmd = command(environ)
    assert cmd[-len(shlex.split(arg)) :] == shlex.split(arg)  # ARG verbatim, last
    assert [ep.canonical_flag(t) for t in cmd].count(flag) == 1, cmd
    assert "--seed" in cmd


def test_values_in_arg_are_not_mistaken_for_flags(models: Path) -> None:
    environ = {"MODELS_DIR": str(models), "ARG": "--seed -1 --chat-template '--port x'"}
    cmd = command(environ)
    assert cmd[-4:] == ["--seed", "-1", "--chat-template", "--port x"]
    assert cmd.count("--port") == 1 and "8080" in cmd


def test_print_command_prints_json(models: Path) -> None:
    environ = {"MODELS_DIR": str(models), "MODEL_ID": REPO_ID, "ARG": "--enforce-eager"}
    run = subprocess.run(
        [sys.executable, str(ENTRYPOINT), "--print-command"],
        env={"PATH": os.environ.get("PATH", ""), **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert json.loads(run.stdout) == command(environ)
    assert run.stdout.count("\n") == 1


# --- validation errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NUM_SHARD", "0"),
        ("NUM_SHARD", "two"),
        ("DTYPE", "fp64"),
        ("TRUST_REMOTE_CODE", "maybe"),
        ("ENFORCE_EAGER", "on"),
        ("MAX_MODEL_LEN", "-5"),
        ("MAX_MODEL_LEN", "1.5"),
        ("MAX_MODEL_LEN", "1.5K"),
        ("GPU_MEMORY_UTILIZATION", "0"),
        ("GPU_MEMORY_UTILIZATION", "1.5"),
        ("GPU_MEMORY_UTILIZATION", "nan"),
        ("KV_CACHE_MEMORY_BYTES", "lots"),
        ("MAX_NUM_SEQS", "0"),
        ("MAX_NUM_BATCHED_TOKENS", "-1"),
        ("BLOCK_SIZE", "16.0"),
        ("QUANTIZATION", "awq gptq"),
        ("KV_CACHE_DTYPE", "fp8;rm"),
        ("PORT", "http"),
        ("PORT", "70000"),
        ("HOST", "a b"),
        ("MODEL_ID", "not a repo"),
        ("REVISION", "../../etc"),
        ("ARG", "--chat-template 'unclosed"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    models: Path, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    code, out, err = run_main(capsys, ["--print-command"], {"MODELS_DIR": str(models), name: value})
    assert out == ""
    assert_one_line_error(code, err, name, repr(value) if name != "ARG" else "ARG")


def test_model_in_arg_is_refused(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(
        capsys, ["--print-command"], {"MODELS_DIR": str(models), "ARG": "--model=/other"}
    )
    assert_one_line_error(code, err, "ARG sets --model", "MODEL_ID")


def test_unknown_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(capsys, ["--enforce-eager"], {})
    assert_one_line_error(code, err, "unknown arguments --enforce-eager", "ARG")
    code, _, err = run_main(capsys, ["--unpack", "only-one"], {})
    assert_one_line_error(code, err, "--unpack takes TAR and DEST")


def test_failure_in_a_real_process_is_one_line(models: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(ENTRYPOINT)],
        env={"PATH": os.environ.get("PATH", ""), "MODELS_DIR": str(models), "DTYPE": "fp64"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.stdout == ""
    assert_one_line_error(run.returncode, run.stderr, "DTYPE='fp64'", "bfloat16")


# --- finding the model --------------------------------------------------------------------------


def test_revision_picks_the_snapshot(models: Path) -> None:
    def snapshot(**env: str) -> Path:
        return ep.prepare_model({"MODELS_DIR": str(models), **env}).path

    assert snapshot() == models / FOLDER / "snapshots" / SHA  # refs/main
    assert snapshot(REVISION="v1") == models / FOLDER / "snapshots" / OTHER
    assert snapshot(REVISION=OTHER.upper()) == models / FOLDER / "snapshots" / OTHER
    assert ep.prepare_model({"MODELS_DIR": str(models)}).revision == SHA


def test_missing_ref_or_snapshot_says_what_exists(
    models: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = {"MODELS_DIR": str(models)}
    code, _, err = run_main(capsys, ["--print-command"], {**base, "REVISION": "release"})
    assert_one_line_error(code, err, "no ref 'release'", "refs: main, v1", SHA, OTHER)
    missing = "f" * 40
    code, _, err = run_main(capsys, ["--print-command"], {**base, "REVISION": missing})
    assert_one_line_error(code, err, f"no snapshot {missing}", f"{SHA}, {OTHER}")
    (models / FOLDER / "refs" / "main").write_text("not-a-commit")
    code, _, err = run_main(capsys, ["--print-command"], base)
    assert_one_line_error(code, err, "refs/main holds 'not-a-commit', not a 40-hex commit")


def test_without_refs_a_single_snapshot_is_used(tmp_path: Path) -> None:
    # snapshot_download(revision=<sha>) writes no refs at all.
    root = tmp_path / "models"
    add_snapshot(root, FOLDER, SHA, FILES)
    assert ep.prepare_model({"MODELS_DIR": str(root)}).path == root / FOLDER / "snapshots" / SHA
    add_snapshot(root, FOLDER, OTHER, FILES)
    with pytest.raises(ep.EntrypointError, match=r"no ref 'main'.*refs: nothing"):
        ep.prepare_model({"MODELS_DIR": str(root)})


def test_model_id_picks_the_repo_folder(models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_snapshot(models, "models--acme--big", SHA, FILES)
    set_ref(models, "models--acme--big", "main", SHA)
    base = {"MODELS_DIR": str(models)}
    got = ep.prepare_model({**base, "MODEL_ID": "acme/big"})
    assert (got.path, got.name) == (models / "models--acme--big" / "snapshots" / SHA, "acme/big")
    code, _, err = run_main(capsys, ["--print-command"], base)
    assert_one_line_error(code, err, "several models", "MODEL_ID to one of acme/big, org/tiny")
    code, _, err = run_main(capsys, ["--print-command"], {**base, "MODEL_ID": "org/other"})
    assert_one_line_error(code, err, "no models--org--other", "acme/big, org/tiny")


def test_plain_model_folder_is_served_directly(tmp_path: Path) -> None:
    folder = tmp_path / "SmolLM"
    folder.mkdir()
    for rel, data in FILES.items():
        (folder / rel).write_bytes(data)
    cmd = command({"MODELS_DIR": str(folder)})
    assert cmd[2:6] == ["--model", str(folder), "--served-model-name", "SmolLM"]
    cmd = command({"MODELS_DIR": str(folder), "MODEL_ID": "HuggingFaceTB/SmolLM2"})
    assert cmd[5] == "HuggingFaceTB/SmolLM2"


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda snap, root: (snap / "config.json").unlink(), "no config.json"),
        (
            lambda snap, root: [
                (snap / n).unlink() for n in ("tokenizer.json", "tokenizer_config.json")
            ],
            "no tokenizer",
        ),
        (lambda snap, root: (snap / "model.safetensors").unlink(), "no weights"),
        (
            lambda snap, root: (snap / "model.safetensors.index.json").write_text(
                json.dumps({"weight_map": {"a": "model.safetensors", "b": "model-2.safetensors"}})
            ),
            "lists 1 missing shard(s): model-2.safetensors",
        ),
        (
            lambda snap, root: (snap / "pytorch_model.bin.index.json").write_text("[]"),
            "has no readable weight_map",
        ),
        (
            lambda snap, root: [
                p.unlink() for p in (root / FOLDER / "blobs").iterdir() if p.stat().st_size == 4096
            ],
            "model.safetensors links to the missing",
        ),
        (
            lambda snap, root: os.symlink(root.parent / "elsewhere.json", snap / "extra.json"),
            "extra.json links to",
        ),
    ],
    ids=["config", "tokenizer", "weights", "index-shard", "index-bad", "dangling", "outside"],
)
def test_required_files_are_checked_before_starting(
    models: Path,
    capsys: pytest.CaptureFixture[str],
    damage: Callable[[Path, Path], object],
    says: str,
) -> None:
    (models.parent / "elsewhere.json").write_text("{}")
    damage(models / FOLDER / "snapshots" / SHA, models)
    code, _, err = run_main(capsys, ["--print-command"], {"MODELS_DIR": str(models)})
    assert_one_line_error(code, err, says)
    if "links to" in says and "missing" not in says:
        assert "outside" in err


def test_sharded_weights_with_a_complete_index_pass(models: Path) -> None:
    snap = models / FOLDER / "snapshots" / SHA
    (snap / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "model.safetensors"}})
    )
    assert ep.prepare_model({"MODELS_DIR": str(models)}).path == snap


def test_missing_or_empty_models_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    env = {"MODELS_DIR": str(tmp_path / "nope"), "STORAGE_URI": "ai://default/m"}
    code, _, err = run_main(capsys, ["--print-command"], env)
    assert_one_line_error(code, err, "is not a directory", "STORAGE_URI=ai://default/m")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("hi")
    code, _, err = run_main(capsys, ["--print-command"], {"MODELS_DIR": str(tmp_path / "empty")})
    assert_one_line_error(code, err, "no model in", "holds README.md")


# --- the environment vLLM gets and the exec -----------------------------------------------------


def test_vllm_env_is_offline_without_vllm_port_and_with_a_writable_home(tmp_path: Path) -> None:
    environ = {
        "HOME": "/nonexistent",
        "TMPDIR": str(tmp_path),
        "VLLM_PORT": "tcp://10.0.0.7:8000",  # a Kubernetes service link
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": "/data/hf",
        "KEEP": "me",
    }
    env = ep.vllm_env(environ)
    assert "VLLM_PORT" not in env and env["KEEP"] == "me"
    assert {k: env[k] for k in ep.OFFLINE_ENV} == {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    home = tmp_path / "labkit-home"
    assert env["HOME"] == str(home)
    assert env["XDG_CACHE_HOME"] == str(home / ".cache")
    assert env["XDG_CONFIG_HOME"] == str(home / ".config")
    assert env["VLLM_CACHE_ROOT"] == str(home / ".cache" / "vllm")
    assert env["HF_HOME"] == "/data/hf"  # what the deployment sets wins
    writable = ep.vllm_env({"HOME": str(tmp_path)})
    assert writable["HOME"] == str(tmp_path) and "XDG_CACHE_HOME" not in writable


class Execd(BaseException):
    """Stands in for the process image being replaced."""


def test_main_execs_vllm_with_the_printed_command(
    models: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    calls: list[tuple[str, list[str], dict[str, str]]] = []

    def fake_exec(file: str, args: list[str], env: dict[str, str]) -> None:
        calls.append((file, args, env))
        raise Execd

    monkeypatch.setattr(ep.os, "execvpe", fake_exec)
    environ = {
        "MODELS_DIR": str(models),
        "HOME": "/nonexistent",
        "TMPDIR": str(tmp_path),
        "VLLM_PORT": "tcp://10.0.0.7:8000",
        "ARG": "--enforce-eager",
    }
    with pytest.raises(Execd):
        ep.main([], environ)
    (file, args, env), = calls  # fmt: skip
    assert file == sys.executable and args == command(environ)
    assert "VLLM_PORT" not in env and env["HF_HUB_OFFLINE"] == "1"
    assert (tmp_path / "labkit-home").is_dir()
    out, err = capsys.readouterr()
    assert out == "" and err == f"entrypoint: exec {shlex.join(args)}\n"


def test_a_missing_serve_py_is_one_line(
    models: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(ep, "SERVER", models / "serve.py")
    code, out, err = run_main(capsys, [], {"MODELS_DIR": str(models)})
    assert out == ""
    assert_one_line_error(code, err, "serve.py is missing", "beside entrypoint.py")


def test_runtime_imports_only_the_standard_library() -> None:
    tree = ast.parse(ENTRYPOINT.read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module.split(".")[0] for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module
    }  # fmt: skip
    assert imported - {"__future__"} <= sys.stdlib_module_names, imported


# --- safe unpack --------------------------------------------------------------------------------


def member(
    name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 8
) -> tarfile.TarInfo:
    """A hand-made archive member."""
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname = kind, linkname
    ti.size = size if kind == tarfile.REGTYPE else 0
    ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    return ti


def write_tar(path: Path, members: list[tarfile.TarInfo]) -> Path:
    """An archive of hand-made members, each regular file filled with 'x'."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for ti in members:
            tf.addfile(ti, io.BytesIO(b"x" * ti.size) if ti.isreg() else None)
    return path


def tree_of(path: Path) -> dict[str, tuple[str, int]]:
    """Everything under a directory: kind and size, to compare before and after."""
    return {
        str(p.relative_to(path)): (
            "link" if p.is_symlink() else "dir" if p.is_dir() else "file",
            p.lstat().st_size,
        )
        for p in sorted(path.rglob("*"))
    }


GOOD = member(f"{FOLDER}/config.json")
HOSTILE = {
    "absolute": ([], "has an absolute path"),  # built in the test: a path under tmp_path
    "dotdot": ([member(f"{FOLDER}/../../victim.txt")], "has a '..' component"),
    "symlink-out": (
        [member(f"{FOLDER}/evil", tarfile.SYMTYPE, "../../victim")],
        "leaves the archive",
    ),
    "symlink-abs": ([member("evil", tarfile.SYMTYPE, "/etc/passwd")], "points to an absolute path"),
    "symlink-chain": (
        [member("here", tarfile.SYMTYPE, "."), member("up", tarfile.SYMTYPE, "here/..")],
        "'up' -> 'here/..'",
    ),
    "symlink-loop": (
        [member("a", tarfile.SYMTYPE, "b"), member("b", tarfile.SYMTYPE, "a/x")],
        "symlink loop",
    ),
    "through-symlink": (
        [member("sub", tarfile.SYMTYPE, FOLDER), member("sub/x.json")],
        "lies under the symlink 'sub'",
    ),
    "under-file": ([member("f"), member("f/x.json")], "lies under the file 'f'"),
    "hardlink-out": ([member(f"{FOLDER}/h", tarfile.LNKTYPE, "../victim")], "leaves the archive"),
    "hardlink-abs": ([member(f"{FOLDER}/h", tarfile.LNKTYPE, "/etc/passwd")], "leaves the archive"),
    "hardlink-stranger": (
        [member(f"{FOLDER}/h", tarfile.LNKTYPE, "etc/passwd")],
        "does not name an earlier regular file",
    ),
    "char-device": ([member("dev/null", tarfile.CHRTYPE)], "is a device"),
    "block-device": ([member("dev/sda", tarfile.BLKTYPE)], "is a device"),
    "fifo": ([member("pipe", tarfile.FIFOTYPE)], "is a FIFO"),
    "duplicate": ([member(f"{FOLDER}/config.json")], "appears twice"),
    "oversized-member": (
        [member("big.bin", size=200)],
        "'big.bin' is 200 bytes, over MAX_UNPACK_BYTES=100",
    ),
    "oversized-total": (
        [member("a.bin", size=60), member("b.bin", size=60)],
        "holds 128 bytes, over MAX_UNPACK_BYTES=100",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_unpack_refuses_hostile_members_before_writing_anything(tmp_path: Path, case: str) -> None:
    evil, says = HOSTILE[case]
    victim = tmp_path / "VICTIM"
    members = [GOOD, *evil]
    if case == "absolute":
        members = [GOOD, member(str(victim / "abs.txt"))]
    tar = write_tar(tmp_path / "evil.tar", members)
    parent = tmp_path / "out"
    parent.mkdir()
    (parent / "keep.txt").write_text("untouched")
    before, around = tree_of(parent), tree_of(tmp_path)
    with pytest.raises(ep.EntrypointError, match="refused") as err:
        ep.unpack_tarball(tar, parent / "dest", max_bytes=100)
    assert says in str(err.value) and "\n" not in str(err.value)
    assert tree_of(parent) == before and tree_of(tmp_path) == around
    assert not victim.exists() and not (tmp_path / "victim.txt").exists()


def test_unpack_refuses_more_than_the_free_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tar = write_tar(tmp_path / "m.tar", [GOOD, member(f"{FOLDER}/w.bin", size=1000)])
    monkeypatch.setattr(ep, "_free_bytes", lambda path: 500)
    with pytest.raises(ep.EntrypointError, match=r"unpacks to 1008 bytes and .* has 500 free"):
        ep.unpack_tarball(tar, tmp_path / "out" / "dest")
    assert not (tmp_path / "out").exists()


def test_unpack_cli_refuses_with_one_line(tmp_path: Path) -> None:
    tar = write_tar(tmp_path / "evil.tar", [GOOD, member("x", tarfile.SYMTYPE, "../../etc/passwd")])
    run = subprocess.run(
        [sys.executable, str(ENTRYPOINT), "--unpack", str(tar), str(tmp_path / "dest")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_line_error(
        run.returncode, run.stderr, "refused: symlink 'x' -> '../../etc/passwd' leaves"
    )
    assert not (tmp_path / "dest").exists()
    (tmp_path / "junk.tar").write_bytes(b"no tar here" * 100)
    run = subprocess.run(
        [
            sys.executable,
            str(ENTRYPOINT),
            "--unpack",
            str(tmp_path / "junk.tar"),
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert_one_line_error(run.returncode, run.stderr, "not a readable tar archive")


def cache_tar(tmp_path: Path, name: str = "org--tiny.tar") -> Path:
    """A model tarball as the package step lays it out: models--org--tiny/ + version.txt."""
    cache = tmp_path / "hub"
    add_snapshot(cache, FOLDER, SHA, {**FILES, "sub/extra.json": b"{}"})
    set_ref(cache, FOLDER, "main", SHA)
    (cache / "version.txt").write_text("1")
    tar = tmp_path / "artifacts" / name
    tar.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar, "w:gz" if name.endswith("gz") else "w") as tf:
        tf.add(cache / FOLDER, FOLDER)  # symlinks stay symlinks
        tf.add(cache / "version.txt", "version.txt")
        blob = next((cache / FOLDER / "blobs").iterdir())
        ti = tf.gettarinfo(blob, f"{FOLDER}/blobs/hardlink-to-{blob.name}")
        ti.type, ti.linkname, ti.size = tarfile.LNKTYPE, f"{FOLDER}/blobs/{blob.name}", 0
        tf.addfile(ti)
    return tar


@pytest.mark.parametrize("name", ["org--tiny.tar", "org--tiny.tar.gz"])
def test_unpack_a_good_tarball_once(tmp_path: Path, name: str) -> None:
    tar = cache_tar(tmp_path, name)
    dest = tmp_path / "out" / "dest"
    done = ep.unpack_tarball(tar, dest)
    assert not done.reused and done.files == 8  # 5 blobs, refs/main, version.txt, the hard link
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dest"]  # no partial left
    snap = dest / FOLDER / "snapshots" / SHA
    assert (snap / "config.json").is_symlink() and (snap / "config.json").read_bytes() == FILES[
        "config.json"
    ]
    assert os.readlink(snap / "sub" / "extra.json").startswith("../../../blobs/")
    blobs = dest / FOLDER / "blobs"
    hard = next(p for p in blobs.iterdir() if p.name.startswith("hardlink-to-"))
    blob = blobs / hard.name.removeprefix("hardlink-to-")
    assert blob.stat().st_mode & 0o777 == 0o444 and blob.stat().st_ino == hard.stat().st_ino
    marker = json.loads((dest / ep.MARKER).read_text())
    assert marker["tar"] == str(tar.resolve()) and marker["files"] == done.files
    stamp = (dest / ep.MARKER).stat().st_mtime_ns

    again = ep.unpack_tarball(tar, dest)
    assert again.reused and (again.files, again.bytes) == (done.files, done.bytes)
    assert (dest / ep.MARKER).stat().st_mtime_ns == stamp
    assert ep.resolve_model(dest, REPO_ID).path == snap


def test_unpack_never_overwrites_what_it_did_not_make(tmp_path: Path) -> None:
    tar = cache_tar(tmp_path)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep")
    with pytest.raises(ep.EntrypointError, match="exists and is not empty"):
        ep.unpack_tarball(tar, busy)
    assert [p.name for p in busy.iterdir()] == ["mine.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not ep.unpack_tarball(tar, empty).reused  # an empty dir is fine
    other = write_tar(tmp_path / "other.tar", [GOOD, member(f"{FOLDER}/tokenizer.json")])
    with pytest.raises(ep.EntrypointError, match=r"holds an unpack of .*org--tiny\.tar: remove it"):
        ep.unpack_tarball(other, empty)
    assert not ep.unpack_tarball(other, empty, replace=True).reused  # the server's own dir
    assert sorted(p.name for p in (empty / FOLDER).iterdir()) == ["config.json", "tokenizer.json"]


def test_interrupted_unpack_leaves_nothing_and_stale_partials_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tar = cache_tar(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".dest.partial-999999999"  # from a process that is gone
    (stale / "junk").mkdir(parents=True)
    real = ep._extract

    def failing(tf: tarfile.TarFile, members: list[tarfile.TarInfo], root: Path) -> int:
        real(tf, members[:3], root)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ep, "_extract", failing)
    with pytest.raises(ep.EntrypointError, match="No space left on device"):
        ep.unpack_tarball(tar, out / "dest")
    assert list(out.iterdir()) == []


def test_server_unpacks_the_single_tarball_into_a_writable_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = cache_tar(tmp_path)
    models = tmp_path / "mnt" / "models"
    models.mkdir(parents=True)
    os.link(tar, models / tar.name)
    environ = {
        "MODELS_DIR": str(models),
        "UNPACK_DIR": str(tmp_path / "unpacked"),
        "MODEL_ID": REPO_ID,
    }
    code, out, err = run_main(capsys, ["--print-command"], environ)
    assert code == 0, err
    snap = tmp_path / "unpacked" / "org--tiny" / FOLDER / "snapshots" / SHA
    assert json.loads(out)[2:6] == ["--model", str(snap), "--served-model-name", REPO_ID]
    assert err.startswith("entrypoint: unpacked org--tiny.tar (") and err.count("\n") == 1
    assert sorted(p.name for p in models.iterdir()) == ["org--tiny.tar"]  # /mnt/models untouched

    code, out2, err = run_main(capsys, ["--print-command"], environ)
    assert (code, out2) == (0, out)
    assert err == f"entrypoint: model tarball org--tiny.tar already unpacked in {snap.parents[2]}\n"

    code, _, err = run_main(capsys, ["--print-command"], {**environ, "MAX_UNPACK_BYTES": "1k"})
    assert code == 0  # already unpacked: the limit applies to unpacking
    os.link(tar, models / "second.tar")
    code, _, err = run_main(capsys, ["--print-command"], environ)
    assert_one_line_error(code, err, "holds 2 tarballs", "exactly one")


def test_unpack_cli_is_idempotent(tmp_path: Path) -> None:
    tar = cache_tar(tmp_path)
    dest = tmp_path / "dest"
    runs = [
        subprocess.run(
            [sys.executable, str(ENTRYPOINT), "--unpack", str(tar), str(dest)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        for _ in range(2)
    ]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr
    assert " unpacked into " in runs[0].stderr and " already unpacked in " in runs[1].stderr
    assert sorted(p.name for p in dest.iterdir()) == [ep.MARKER, FOLDER, "version.txt"]


# --- the real thing -----------------------------------------------------------------------------


def _get(url: str, timeout: float = 5) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


def _post_json(url: str, body: dict[str, object], timeout: float = 120) -> dict[str, object]:
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


@pytest.mark.integration
@pytest.mark.slow
def test_entrypoint_serves_the_default_model_tarball_and_stops_on_sigterm(
    default_tarball, tmp_path: Path
) -> None:
    tb = default_tarball
    repo_id = tb.repo_id
    models = tmp_path / "mnt" / "models"
    models.mkdir(parents=True)
    os.link(tb.path, models / tb.path.name)  # the single tar, as the local AI Core hands it over

    port = free_port()
    # A short private TMPDIR: the writable home lands there, and vLLM's IPC socket paths
    # (under TMPDIR, at most 107 bytes) stay short.
    scratch = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))
    env = {
        **os.environ,
        "TMPDIR": str(scratch),
        "MODELS_DIR": str(models),
        "UNPACK_DIR": str(tmp_path / "unpacked"),
        "MODEL_ID": repo_id,
        "REVISION": "main",
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "ARG": "--enforce-eager --max-model-len 2048",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HOME": "/nonexistent",  # as user 65534 has it on AI Core
        "VLLM_PORT": f"tcp://10.0.0.7:{port + 1}",  # a Kubernetes service link the entrypoint drops
    }
    env.pop("HF_ENDPOINT", None)
    log_path = tmp_path / "entrypoint.log"
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(ENTRYPOINT)],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        while _get(f"{base}/health") != 200:
            assert proc.poll() is None, (
                "vLLM exited during start-up:\n" + log_path.read_text()[-4000:]
            )
            assert time.monotonic() - started < 300, (
                "no /health within 5 min:\n" + log_path.read_text()[-4000:]
            )
            time.sleep(1)
        start_s = time.monotonic() - started
        # exec'd: the entrypoint's pid is vLLM's API server now.
        cmdline = Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")
        assert SERVER.encode() in cmdline
        text = log_path.read_text()
        assert (
            text.count("entrypoint: exec ") == 1 and f"entrypoint: unpacked {tb.path.name}" in text
        )
        seen = dict(
            item.split("=", 1)
            for item in Path(f"/proc/{proc.pid}/environ").read_text().split("\0")
            if "=" in item
        )
        assert "VLLM_PORT" not in seen and seen["HF_HUB_OFFLINE"] == "1"
        assert seen["HOME"] == str(scratch / "labkit-home") and Path(seen["HOME"]).is_dir()

        with urllib.request.urlopen(f"{base}/v1/models", timeout=10) as resp:
            assert [m["id"] for m in json.loads(resp.read())["data"]] == [repo_id]
        reply = _post_json(
            f"{base}/v1/chat/completions",
            {
                "model": repo_id,
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "temperature": 0,
                "max_tokens": 32,
            },
        )
        answer = reply["choices"][0]["message"]["content"]  # type: ignore[index]
        print(f"start to /health: {start_s:.1f} s; answer: {answer!r}")
        assert "Paris" in answer
        # The legacy demo server's route, served by the same process (serve.py).
        prompt = "The capital of France is"
        legacy = _post_json(
            f"{base}/generate", {"prompt": prompt, "max_tokens": 4, "temperature": 0}
        )
        assert [t.startswith(prompt) for t in legacy["text"]] == [True]  # type: ignore[union-attr]

        stop = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=30)
        while group_alive(proc.pid) and time.monotonic() - stop < 30:
            time.sleep(0.2)
        stop_s = time.monotonic() - stop
        print(f"SIGTERM to exit: {stop_s:.1f} s, exit code {code}")
        assert code == 0, log_path.read_text()[-3000:]
        assert not group_alive(proc.pid), "processes of the server's group outlived it"
    finally:
        if proc.poll() is None or group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(scratch, ignore_errors=True)
