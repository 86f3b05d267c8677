"""Generated argument lists for every `labkit` command, in-process: exit 0 with output, a
finding (exit 1) where the command's contract has one, argparse's usage error (exit 2), or the
one-line LabError shape (exit 2, nothing on stdout) -- never a traceback.

Only the parsing layer runs for real: every service address points at a closed loopback port,
the Hub is offline, names outside this machine do not resolve, and the commands that would
build, deploy, start services or run notebooks get arguments that fail before they do."""

from __future__ import annotations

import io
import json
import socket
import sys
from pathlib import Path

import pytest
from aicore_fakes import btp_key
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from test_package import PINNED, REPO_ID, make_cache

from labkit.cli import main
from labkit.package import write_tarball
from labkit.util import net

CLOSED = net.free_port()  # nothing listens here: any contact is refused at once
LOCAL = f"localhost:{CLOSED}"
SECRET = "zq-cli-secret-8d1c-never-shown"

# A template that renders and lints, beside the generated paths.
TEMPLATE = Path(__file__).resolve().parents[1] / "templates" / "vllm-serving.yaml"

TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20
)
NUMBERS = st.sampled_from(
    ["0", "-1", "1", "3", "0.5", "1e309", "nan", "-inf", "99999999999999999999", "1" * 400, "x"]
)
PATHS = st.sampled_from(
    ["missing.tar", "garbage.bin", "empty", ".", "sub/dir/x.tar", "template.yaml", "good.tar"]
)
BAD_REGISTRY = st.sampled_from(["bad host", "Example.com/x", "https://x.example", "a b:1", ""])
REGISTRIES = st.sampled_from([LOCAL, f"127.0.0.1:{CLOSED}"]) | BAD_REGISTRY
VALUES = TEXT | NUMBERS | PATHS | st.sampled_from(["--json", "-", "--", "KEY=VALUE", "=x"])

# Per command: the fixed words, positional strategies and the options with value strategies
# (None: a flag). Commands that would do work get only arguments that fail first.
COMMANDS: dict[tuple[str, ...], tuple[list, dict]] = {
    ("config",): ([], {}),
    ("size",): (
        [PATHS | TEXT | st.just("org/name")],
        {
            "--plan": TEXT | st.sampled_from(["infer2.l", "infer.s"]),
            "--gpus": NUMBERS,
            "--gpu-memory-gib": NUMBERS,
            "--tp": NUMBERS,
            "--dtype": TEXT,
            "--max-model-len": NUMBERS,
            "--gpu-memory-utilization": NUMBERS,
            "--weights-gib": NUMBERS,
            "--kv-cache-gib": NUMBERS,
            "--block-size": NUMBERS,
            "--plans-file": PATHS,
            "--revision": TEXT,
        },
    ),
    ("download",): (
        [TEXT | st.just("org/name")],
        {
            "--revision": TEXT,
            "--include": TEXT,
            "--exclude": TEXT,
            "--workers": NUMBERS,
            "--format": st.sampled_from(["safetensors", "bin", "onnx"]),
            "--cache-dir": PATHS,
            "--tar": PATHS | st.just("x.tar.gz"),
        },
    ),
    ("package", "verify"): ([PATHS], {}),
    ("upload",): (
        [PATHS],
        {
            "--bucket": TEXT | st.just("labkit-models"),
            "--family": TEXT,
            "--part-size-mib": NUMBERS,
            "--concurrency": NUMBERS,
            "--secret-name": TEXT,
            "--path-prefix": TEXT,
            "--overwrite": None,
            "--from-snapshot": PATHS,
            "--revision": TEXT,
        },
    ),
    ("upload-stale",): (
        [],
        {"--bucket": TEXT | st.just("labkit-models"), "--abort": None, "--older-than": NUMBERS},
    ),
    ("image", "next-tag"): (
        [],
        {
            "--registry": REGISTRIES,
            "--repository": TEXT | st.just("labkit"),
            "--date": TEXT | st.sampled_from(["2024-02-30", "2024-01-01", "99999-01-01"]),
        },
    ),
    ("image", "lint"): ([], {"--dockerfile": PATHS}),
    ("image", "build"): (  # an invalid registry: fails before the build
        [],
        {
            "--registry": BAD_REGISTRY,
            "--tag": TEXT,
            "--push": None,
            "--no-cache": None,
            "--variant": st.sampled_from(["cpu", "gpu", "tpu"]),
        },
    ),
    ("image", "push"): ([TEXT.map(lambda t: f"bad ref {t}")], {}),  # refused before any push
    ("image", "inspect"): (
        [st.sampled_from([f"{LOCAL}/labkit/aicore-vllm:v010124-01", f"{LOCAL}/x", "no ref"])],
        {},
    ),
    ("image", "login-secret"): (
        [],
        {
            "--registry": REGISTRIES,
            "--username": TEXT,
            "--password-stdin": None,
            "--no-verify": None,
            "--name": TEXT,
            "--secret-out": PATHS,
        },
    ),
    ("template", "lint"): (
        [PATHS],
        {"--set": TEXT | st.just("dtype=half"), "--lab-state": None},
    ),
    ("template", "render"): (
        [PATHS],
        {"--set": TEXT | st.just("dtype=half"), "--artifact": TEXT | st.just("model=ai://d/x")},
    ),
    ("deploy",): (  # up: always a --set without '=', which fails before AI Core is asked
        [st.sampled_from(["status", "logs", "stop", "delete", "list", "cleanup", "bogus"]), TEXT],
        {
            "--resource-group": TEXT | st.just("default"),
            "--tail": NUMBERS,
            "--timeout": NUMBERS,
            "--keep-setup": None,
        },
    ),
    ("run",): (  # always an unknown parameter: refused before any notebook runs
        [],
        {
            "--only": st.sampled_from(["01", "99", "5"]),
            "--out": PATHS,
            "--resume": None,
            "-p": st.tuples(st.sampled_from(["MAX_MODEL_LEN", "OFFLINE", "TIMEOUT_S"]), VALUES),
        },
    ),
    ("local",): ([st.sampled_from(["status", "down", "sideways"])], {}),
}
# `labkit query` and `labkit bench`: no deployment is recorded, and every URL is refused at once.
URLS = st.sampled_from([f"http://{LOCAL}", f"http://127.0.0.1:{CLOSED}/v1", "localhost:1", ""])
QUERY = {
    "--stream": None,
    "--max-tokens": NUMBERS,
    "--temperature": NUMBERS,
    "--url": URLS | TEXT,
    "--model": TEXT,
    "--timeout": NUMBERS,
}
for kind, extra in (
    ("chat", {"--system": TEXT}),
    ("complete", {"--n": NUMBERS}),
    ("generate", {"--n": NUMBERS, "--beam-search": None}),
):
    COMMANDS[("query", kind)] = ([TEXT | st.just("-")], {**QUERY, **extra})
BENCH_NUMBERS = ("requests", "max-output-tokens", "max-prompt-tokens", "seed", "parallel-n",
                 "hf-requests", "hf-batch", "proxy-rounds")  # fmt: skip
COMMANDS[("bench",)] = (
    [],
    {
        **{f"--{name}": NUMBERS for name in BENCH_NUMBERS},
        "--concurrencies": TEXT | st.sampled_from(["1,4,8", "0", "1,,2"]),
        "--engines": TEXT | st.sampled_from(["server", "offline,hf", "gpu"]),
        "--no-cross-check": None,
        "--dtype": TEXT,
        "--url": URLS | TEXT,
        "--direct-url": URLS,
        "--model-dir": PATHS,
        "--out": PATHS,
    },
)


@st.composite
def argvs(draw: st.DrawFn) -> list[str]:
    words = draw(st.sampled_from(sorted(COMMANDS)))
    positionals, options = COMMANDS[words]
    argv = list(words)
    if words == ("deploy",) and draw(st.booleans()):
        argv += ["--set", draw(TEXT.filter(lambda t: "=" not in t))]
    else:
        for strategy in positionals:
            if draw(st.integers(0, 9)):  # now and then missing
                argv.append(draw(strategy))
    for name in draw(st.lists(st.sampled_from(sorted(options)), max_size=4)) if options else []:
        strategy = options[name]
        if strategy is None:
            argv.append(name)
        elif name == "-p":
            argv += [name, *draw(strategy)]
        elif draw(st.integers(0, 11)):
            argv += [name, draw(strategy)]
        else:
            argv.append(name)  # its value missing
    if words == ("run",):
        argv += ["-p", "NOPE_" + draw(st.text("ABC_", max_size=5)), draw(VALUES)]
    if draw(st.integers(0, 3)):  # mostly the common options only, now and then junk
        extra = draw(st.lists(st.sampled_from(["--json", "--profile=local", "--profile=aicore"])))
    else:
        extra = draw(
            st.lists(st.sampled_from(["--profile", "aicore", "--bogus", "-h"]) | VALUES, max_size=2)
        )
    return argv + extra


@pytest.fixture
def cli_env(lab_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every address a closed loopback port, the Hub offline, files in a temp folder."""
    env = {
        "LABKIT_LOCAL_DIR": str(tmp_path / "local"),
        "LABKIT_PROFILE": "local",
        "LABKIT_HUB_PORT": str(CLOSED),
        "LABKIT_S3_PORT": str(CLOSED),
        "LABKIT_AICORE_PORT": str(CLOSED),
        "LABKIT_REGISTRY_PORT": str(CLOSED),
        "LABKIT_REGISTRY": LOCAL,
        "LABKIT_HF_ENDPOINT": f"http://127.0.0.1:{CLOSED}",
        "HF_ENDPOINT": f"http://127.0.0.1:{CLOSED}",
        "LABKIT_S3_ENDPOINT_URL": f"http://127.0.0.1:{CLOSED}",
        "LABKIT_REGISTRY_PASSWORD": SECRET,
        "HF_HUB_OFFLINE": "1",
        "AWS_MAX_ATTEMPTS": "1",
        "AICORE_HOME": str(tmp_path / "aicore-home"),
        "AICORE_SERVICE_KEY": json.dumps(
            btp_key(f"http://127.0.0.1:{CLOSED}", clientsecret=SECRET)
            | {"serviceurls": {"AI_API_URL": f"http://127.0.0.1:{CLOSED}"}}
        ),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.bin").write_bytes(b"\xff\x00not a tar" * 10)
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "template.yaml").write_bytes(TEMPLATE.read_bytes())
    write_tarball(
        make_cache(tmp_path / "c"), REPO_ID, PINNED, tmp_path / "good.tar", progress=False
    )
    monkeypatch.setattr(sys, "stdin", io.StringIO("pw\n"))

    # Nothing but this machine: a name elsewhere does not resolve.
    real_getaddrinfo = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if host not in ("localhost", "127.0.0.1", "::1", None):
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not on this machine (test)")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", local_only)

    # `labkit run`: the notebooks' parameters without papermill, and never an execution.
    from labkit import run

    table = {
        "01_size_model.ipynb": {"MAX_MODEL_LEN": "int"},
        "07_query.ipynb": {"OFFLINE": "bool"},
        "99_cleanup.ipynb": {"TIMEOUT_S": "float"},
    }
    monkeypatch.setattr(run, "notebook_parameters", lambda nb: table.get(nb.name, {}))

    def never(*args, **kwargs):
        raise AssertionError("a notebook would run")

    monkeypatch.setattr(run, "_execute", never)
    return tmp_path


FINDINGS = {("template", "lint"), ("package", "verify"), ("image", "lint"), ("local",)}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        rc = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return rc, out, err


def check_outcome(argv: list[str], rc: int, out: str, err: str) -> None:
    assert "Traceback" not in out + err, (argv, err)
    assert SECRET not in out + err, argv
    if rc == 0:
        assert out.strip() or argv[:2] == ["local", "down"], (argv, err)
    elif rc == 1:
        assert any(tuple(argv[: len(c)]) == c for c in FINDINGS), (argv, out, err)
    else:
        assert rc == 2, (argv, rc, err)
        lines = err.strip().split("\n")  # argparse echoes a \r in an argument as it is
        if err.startswith("usage:"):  # argparse: the usage (maybe wrapped), then one error line
            assert lines[-1].startswith("labkit") and ": error: " in lines[-1], (argv, err)
        else:  # a LabError: exactly one line on stderr, nothing on stdout
            assert out == "", (argv, out)
            assert len(lines) == 1 and lines[0].startswith("labkit: error: "), (argv, err)


# The fixtures hold no state between examples that matters: the same closed port, temp folder
# and environment for each argument list.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argvs())
@example(["run", "-p", "MAX_MODEL_LEN", "long", "-p", "NOPE", "1"])
@example(["local", "sideways"])
@example(["deploy", "--set", "oops"])
@example(["image", "next-tag", "--date", "2024-02-30"])
@example(["size", "--gpus", "1e309"])
@example(["query", "chat", "hi", "--timeout", "nan", "--url", f"http://{LOCAL}"])
@example(["query", "generate", "-", "--n", "2", "--stream"])
@example(["bench", "--concurrencies", "1,,2", "--url", f"http://{LOCAL}"])
def test_every_command_exits_cleanly(cli_env, capsys, argv):
    rc, out, err = run_cli(argv, capsys)
    check_outcome(argv, rc, out, err)
    words = " ".join(argv[:2] if argv[0] in ("image", "template", "package", "query") else argv[:1])
    event(f"{words}: {'usage error' if err.startswith('usage:') else f'exit {rc}'}")


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "-p", "MAX_MODEL_LEN", "long"],
        ["run", "-p", "TIMEOUT_S", "nan"],
        ["run", "-p", "OFFLINE", "maybe"],
    ],
)
def test_run_parameter_of_the_wrong_type_is_one_line(cli_env, capsys, argv):
    """Were handed to papermill as they were (a str for an int, NaN for a timeout)."""
    rc, out, err = run_cli(argv, capsys)
    check_outcome(argv, rc, out, err)
    assert rc == 2 and "takes" in err


def test_every_command_has_help(cli_env, capsys):
    """`labkit --help` lists every command the generator drives."""
    rc, out, _ = run_cli(["--help"], capsys)
    assert rc == 0
    listed = {words[0] for words in COMMANDS}
    assert all(name in out for name in listed)
    for words in COMMANDS:
        rc, out, err = run_cli([*words, "--help"], capsys)
        assert rc == 0 and out.startswith("usage:"), (words, err)
