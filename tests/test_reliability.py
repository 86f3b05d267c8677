"""The reliability suite: bad input and stopped services give one line that says what to do, with
no traceback and nothing recorded as done. (Killed downloads, uploads and unpacks that resume are
in test_download, test_storage_upload and test_runtime; the local AI Core killed in a deployment's
storage phase, and restarted, in test_local_aicore.)"""

import json
import subprocess
from pathlib import Path

import pytest
from labkit_cli import labkit

from labkit.local.hub import FIRST_COMMIT
from labkit.util.net import free_port

REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"


def one_line_error(out: subprocess.CompletedProcess, *needles: str) -> str:
    """The CLI's failure shape: exit 2, nothing on stdout, one line on stderr, no traceback."""
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labkit: error: "), out.stderr
    assert "Traceback" not in out.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


BAD_INPUT = {
    "unknown model": (["download", "NoSuchOrg/no-model"], ["NoSuchOrg/no-model", "repo id"]),
    "unknown revision": (["download", REPO, "--revision", "nosuchbranch"], ["branches: main"]),
    "abbreviated revision": (["download", REPO, "--revision", FIRST_COMMIT[:7]], []),
    "unknown plan": (["size", "{model}", "--plan", "nosuch"], ["unknown plan", "infer.s"]),
    "patterns matching nothing": (
        ["download", REPO, "--revision", "v1.0", "--include", "*.nothing"],
        ["matches include", "config.json"],
    ),
    "invalid bucket name": (["upload", "{tar}", "--bucket", "Bad_Bucket"], ["LABKIT_BUCKET"]),
    "malformed image tag": (
        ["image", "push", "localhost:5000/labkit/aicore-vllm:latest"],
        ["v<ddmmyy>-<NN>"],
    ),
    "invalid image repository": (
        ["image", "next-tag", "--registry", "localhost:5000", "--repository", "Bad Repo"],
        ["lowercase"],
    ),
    "missing tarball": (
        ["upload", "/nonexistent/model.tar", "--bucket", "labkit-models"],
        ["model.tar"],
    ),
}


@pytest.mark.integration
@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_and_records_nothing(
    case: str, local_hub, default_model: Path, lab_env: Path, tmp_path: Path
) -> None:
    argv, needles = BAD_INPUT[case]
    tar = tmp_path / "model.tar"
    tar.write_bytes(b"\0" * 1024)
    argv = [a.format(model=default_model, tar=tar) for a in argv]
    one_line_error(labkit(*argv, env={"LABKIT_LAB_DIR": str(lab_env)}), *needles)
    assert not (lab_env / "state.json").exists()


@pytest.mark.integration
def test_a_stopped_hub_is_one_line_and_leaves_no_snapshot(lab_env: Path) -> None:
    port = free_port()  # nothing listens there: as if the mirror were stopped
    out = labkit("download", REPO, "--revision", "v1.0", env={"LABKIT_HUB_PORT": str(port)})
    one_line_error(out, f"127.0.0.1:{port}")
    assert not list((lab_env / "hub-cache").glob("models--*/snapshots/*/*"))


@pytest.mark.integration
def test_a_stopped_s3_is_one_line_and_records_no_upload(default_tarball, lab_env: Path) -> None:
    port = free_port()
    out = labkit(
        "upload", str(default_tarball.path), "--bucket", "labkit-models", "--json",
        env={"LABKIT_S3_PORT": str(port), "AWS_MAX_ATTEMPTS": "1"},
    )  # fmt: skip
    one_line_error(out, f"127.0.0.1:{port}")
    assert not (lab_env / "state.json").exists()


@pytest.mark.integration
def test_a_stopped_registry_is_one_line(lab_env: Path) -> None:
    port = free_port()
    out = labkit("image", "next-tag", "--registry", f"localhost:{port}", "--repository", "labkit")
    one_line_error(out, f"localhost:{port}")


def test_secrets_in_the_environment_never_reach_config_output(lab_env: Path) -> None:
    secrets = {
        "LABKIT_AWS_ACCESS_KEY_ID": "AKIAEXAMPLESECRET0001",
        "LABKIT_AWS_SECRET_ACCESS_KEY": "s3-secret-never-printed-0001",
        "LABKIT_REGISTRY_PASSWORD": "registry-password-never-printed",
        "HF_TOKEN": "hf_token_never_printed_0001",
        "AICORE_SERVICE_KEY": json.dumps(
            {"clientid": "id", "clientsecret": "client-secret-never-printed", "url": "http://x"}
        ),
    }
    for argv in (["config"], ["config", "--json"]):
        out = labkit(*argv, env=secrets)
        assert out.returncode == 0, out.stderr
        for name, value in secrets.items():
            if name == "AICORE_SERVICE_KEY":
                value = "client-secret-never-printed"
            assert value not in out.stdout + out.stderr, name
