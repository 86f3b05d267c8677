"""What the local AI Core's tests share (tests/test_local_aicore_*.py): the official AI API
spec to check answers against, a server in the test process (:class:`Emulator`) with SAP's
client, git repositories of templates, deployments without vLLM, and the fixtures."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from registry_images import build_and_push_cpu_image, build_prerequisites, put_minimal_image

from labkit.config import Config, load_config
from labkit.local import aicore
from labkit.local.aicore import app as app_mod
from labkit.local.aicore import core as core_mod
from labkit.local.aicore import runspec as runspec_mod
from labkit.util.net import free_port

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "templates" / "vllm-serving.yaml"
SCENARIO = "labkit-vllm"
EXECUTABLE = "labkit-vllm"
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
UNPACKED_MARKER = ".entrypoint-unpacked.json"  # runtime/entrypoint.py's MARKER
WAIT_S = 120.0  # failure bound for waits on the server's background work (never asserted on)
# The in-process server's pace: a tenant's durations (early 404s, a stop, back-off) 200-fold
# faster, so its tests see the same transitions in a fraction of a second.
TEST_TIME_SCALE = 0.005
VLLM_WAIT_S = 1500.0  # a vLLM start on a busy 2-core machine


# --- the spec ---------------------------------------------------------------------------------


def _spec_path() -> Path:
    """SAP's spec, committed in specs/ (LABKIT_AI_CORE_SPEC points at another copy)."""
    return Path(os.environ.get("LABKIT_AI_CORE_SPEC") or ROOT / "specs" / "AI_CORE_API.yaml")


def _openapi_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0 schema -> JSON Schema: ``nullable`` becomes a null type (jsonschema ignores
    ``nullable`` and would refuse null values the spec allows)."""
    if isinstance(node, dict):
        out = {k: _openapi_to_jsonschema(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable") is True:
            return {"anyOf": [out, {"type": "null"}]}
        return out
    if isinstance(node, list):
        return [_openapi_to_jsonschema(v) for v in node]
    return node


@functools.cache
def _spec() -> dict[str, Any]:
    return yaml.safe_load(_spec_path().read_text(encoding="utf-8"))


def validate(payload: Any, path: str, method: str, status: int) -> None:
    """Check a response body against the spec's schema for that operation and status."""
    import jsonschema

    spec = _spec()
    op = spec["paths"][path][method]
    response = op["responses"].get(str(status))
    assert response is not None, f"the spec has no {status} for {method.upper()} {path}"
    if "$ref" in response:
        response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[-1]]
    schema = response["content"]["application/json"]["schema"]
    root = _openapi_to_jsonschema({"components": spec["components"], **schema})
    jsonschema.Draft7Validator(root).validate(payload)


# --- a server in this process -----------------------------------------------------------------


class Emulator:
    """A local AI Core served by uvicorn in a thread of the test process."""

    def __init__(
        self,
        state: Path,
        *,
        token_ttl: int = 43200,
        runner: str = "host",
        time_scale: float = TEST_TIME_SCALE,
        start_timeout: float = VLLM_WAIT_S,
    ) -> None:
        self.state = state
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # The key beside the state, kept across restarts (its URL follows the new port).
        key_cfg = Config(local_dir=state.parent / f"{state.name}-key", aicore_port=self.port)
        # The token endpoint on its own port, as on a tenant (XSUAA's host, not the API's).
        self.token_port = free_port()
        self.token_base = f"http://127.0.0.1:{self.token_port}"
        self.key = aicore.ensure_service_key(key_cfg, auth_url=self.token_base)
        self.key_file = aicore.service_key_file(key_cfg)
        builder = None
        if runner != "host" and shutil.which("buildah"):
            from labkit.image import Builder, image_dir

            builder = Builder(
                "buildah", shutil.which("buildah") or "", image_dir(load_config()) / "storage"
            )
        self.settings = core_mod.Settings(
            state_dir=state,
            port=self.port,
            service_key_file=self.key_file,
            runner=runspec_mod.RunnerSettings(
                mode=runner,  # type: ignore[arg-type]
                python=sys.executable,
                entrypoint=ROOT / "runtime" / "entrypoint.py",
                start_timeout=start_timeout,
                builder=builder,
                gpu=runspec_mod.has_gpu(),
                time_scale=time_scale,
            ),
            token_ttl=token_ttl,
            sync_interval=3600,
            ttl_check=0.2,
        )
        self._servers: list[tuple[Any, threading.Thread]] = []

    def start(self) -> Emulator:
        import uvicorn

        from labkit.local.aicore import tokens as tokens_mod

        self.app = app_mod.create_app(self.settings)
        self.core: core_mod.LocalAICore = self.app.state.core
        token_app = tokens_mod.create_token_app(self.core.tokens)
        for app, port in ((self.app, self.port), (token_app, self.token_port)):
            config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
            server = uvicorn.Server(config)
            thread = threading.Thread(target=server.run, daemon=True)
            thread.start()
            self._servers.append((server, thread))
            wait_for(lambda s=server: s.started, "the in-process server to start")
        return self

    def stop(self) -> None:
        for server, _ in self._servers:
            server.should_exit = True
        for _, thread in self._servers:
            thread.join(60)
        self._servers = []

    def client(self, resource_group: str | None = "default") -> Any:
        return sdk_client(self.key, resource_group)

    def token(self) -> str:
        return self.core.tokens.issue()["access_token"]

    def headers(self, group: str | None = "default") -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.token()}"}
        if group:
            h["AI-Resource-Group"] = group
        return h

    def get(self, path: str, group: str | None = "default", **kw: Any) -> httpx.Response:
        return httpx.get(self.base + path, headers=self.headers(group), trust_env=False, **kw)

    def post(self, path: str, body: Any, group: str | None = "default") -> httpx.Response:
        return httpx.post(self.base + path, json=body, headers=self.headers(group), trust_env=False)


def sdk_client(key: dict[str, Any], resource_group: str | None = "default") -> Any:
    from ai_core_sdk.ai_core_v2_client import AICoreV2Client

    return AICoreV2Client(
        base_url=key["serviceurls"]["AI_API_URL"] + "/v2",
        auth_url=key["url"] + "/oauth/token",
        client_id=key["clientid"],
        client_secret=key["clientsecret"],
        resource_group=resource_group,
        num_request_retries=0,
    )


def wait_for(check: Any, what: str, timeout: float = WAIT_S) -> Any:
    """Poll ``check`` until it returns something truthy (bounded; no timing is asserted)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.2)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Emulator]:
    emu = Emulator(tmp_path / "aicore").start()
    try:
        yield emu
    finally:
        emu.stop()


def git_repo(path: Path, files: dict[str, str]) -> str:
    """A git repository with ``files`` committed; returns HEAD."""
    path.mkdir(parents=True, exist_ok=True)
    if not (path / ".git").exists():
        subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    for name in [p for p in files if files[p] == ""]:
        (path / name).unlink()
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "templates", "--allow-empty"], check=True)
    return subprocess.run(
        [*git, "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()


def synced(client: Any, app: str, revision: str) -> Any:
    """The application's status once a sync of ``revision`` finished (None before; a tenant
    answers 404 until the first sync)."""
    from ai_api_client_sdk.exception import AIAPINotFoundException

    try:
        status = client.applications.get_status(app)
    except AIAPINotFoundException:
        return None
    return status if status.source.revision == revision and status.sync_finished_at else None


def onboard(
    emu: Emulator, tmp_path: Path, files: dict[str, str] | None = None
) -> tuple[Any, Path, str]:
    """Repository + application with the shipped template; waits for the first sync."""
    client = emu.client()
    repo = tmp_path / "templates-git"
    head = git_repo(repo, files or {"labkit/vllm-serving.yaml": TEMPLATE.read_text()})
    client.repositories.create(
        name="lab-templates", url=str(repo), username="git", password="unused"
    )
    client.applications.create(
        revision="HEAD", path="labkit", application_name="labkit-app", repository_url=str(repo)
    )
    wait_for(lambda: synced(client, "labkit-app", head), "the first sync")
    return client, repo, head


# --- deployments without vLLM -----------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_cfg() -> Config:
    """The lab's local S3 (moto), started as `labkit local up` does."""
    from labkit.local import s3

    cfg = load_config()
    s3.up(cfg, progress=False)
    return cfg


@pytest.fixture(scope="module")
def registry_image() -> str:
    """An image the local AI Core's pull check finds, for predictors run on the host (only the
    manifest is looked up): LABKIT_TEST_AICORE_IMAGE, else a minimal one pushed to the local
    registry. Independent of any other test having built or pushed the lab's image."""
    if os.environ.get("LABKIT_TEST_AICORE_IMAGE"):
        return os.environ["LABKIT_TEST_AICORE_IMAGE"]
    cfg = load_config()
    name, tag = "labkit-test/aicore-vllm", "v010125-01"
    try:
        put_minimal_image(f"http://127.0.0.1:{cfg.registry_port}", name, tag)
    except OSError as exc:
        pytest.skip(f"the local registry does not answer ({exc}): run `labkit local up`")
    return f"localhost:{cfg.registry_port}/{name}:{tag}"


@pytest.fixture(scope="module")
def lab_image() -> str:
    """The lab's CPU image in the local registry, for the buildah runner: LABKIT_TEST_AICORE_IMAGE,
    else built (layers cached per machine, one build at a time) and pushed by this fixture."""
    if os.environ.get("LABKIT_TEST_AICORE_IMAGE"):
        return os.environ["LABKIT_TEST_AICORE_IMAGE"]
    if why := build_prerequisites():
        pytest.skip(why)
    return build_and_push_cpu_image(load_config()).reference


def put_object(cfg: Config, key: str, body: bytes) -> str:
    from labkit import storage

    store = storage.open_store(cfg)
    store.client.put_object(Bucket=store.bucket, Key=key, Body=body)
    return key


def register_secret(emu: Emulator, cfg: Config) -> None:
    from labkit import storage

    secret = storage.object_store_secret(cfg).body()
    resp = emu.post("/v2/admin/objectStoreSecrets", secret)
    assert resp.status_code == 202, resp.text


def deploy(
    emu: Emulator,
    url: str,
    image: str,
    *,
    extra: dict[str, str] | None = None,
    ttl: str | None = None,
) -> str:
    art = emu.post(
        "/v2/lm/artifacts", {"name": "m", "kind": "model", "url": url, "scenarioId": SCENARIO}
    ).json()
    values = {"image": image, "modelId": MODEL_ID, "revision": "0" * 40, **(extra or {})}
    bindings = [{"key": k, "value": v} for k, v in values.items()]
    conf = emu.post("/v2/lm/configurations", {
        "name": "c", "scenarioId": SCENARIO, "executableId": EXECUTABLE,
        "parameterBindings": bindings, "inputArtifactBindings": [{"key": "model", "artifactId": art["id"]}],
    }).json()  # fmt: skip
    body = {"configurationId": conf["id"], **({"ttl": ttl} if ttl else {})}
    resp = emu.post("/v2/lm/deployments", body)
    assert resp.status_code == 202, resp.text
    validate(resp.json(), "/lm/deployments", "post", 202)
    assert resp.json()["status"] == "UNKNOWN" and resp.json()["deploymentUrl"] == ""
    return resp.json()["id"]


def final_status(
    emu: Emulator, dep_id: str, wanted: tuple[str, ...] = ("DEAD", "RUNNING")
) -> dict[str, Any]:
    """The deployment once its status is one of ``wanted`` (through its first moments' 404s)."""

    def check() -> dict[str, Any] | None:
        resp = emu.get(f"/v2/lm/deployments/{dep_id}")
        if resp.status_code == 404:
            return None
        dep = resp.json()
        return dep if dep["status"] in wanted else None

    return wait_for(check, f"deployment {dep_id} to be {' or '.join(wanted)}", VLLM_WAIT_S)


PULL_REASONS = ("ErrImagePull", "ImagePullBackOff")


def pending_with(
    emu: Emulator, dep_id: str, reasons: tuple[str, ...], timeout: float = VLLM_WAIT_S
) -> dict[str, Any]:
    """The deployment once it is PENDING with one of ``reasons`` in its ``statusDetails``."""

    def check() -> dict[str, Any] | None:
        resp = emu.get(f"/v2/lm/deployments/{dep_id}")
        dep = resp.json() if resp.status_code == 200 else {}
        found = dep.get("status") == "PENDING" and (dep.get("statusDetails") or {}).get("reason")
        return dep if found in reasons else None

    return wait_for(check, f"deployment {dep_id} to be PENDING with {reasons}", timeout)


def log_text(emu: Emulator, dep_id: str) -> str:
    wait_for(lambda: emu.get(f"/v2/lm/deployments/{dep_id}").status_code != 404, "the deployment")
    resp = emu.get(f"/v2/lm/deployments/{dep_id}/logs", params={"$top": 5000})
    assert resp.status_code == 200
    validate(resp.json(), "/lm/deployments/{deploymentId}/logs", "get", 200)
    return "\n".join(r["msg"] for r in resp.json()["data"]["result"])


# --- the service module -----------------------------------------------------------------------


@pytest.fixture
def service_cfg(tmp_path: Path) -> Iterator[Config]:
    """A Config for a local AI Core of its own (port, state), sharing the machine's image storage."""
    local = tmp_path / "local"
    local.mkdir()
    cfg = load_config(
        local_dir=local,
        aicore_port=free_port(),
        aicore_token_port=free_port(),
        aicore_runner="host",
    )
    try:
        yield cfg
    finally:
        aicore.down(cfg)


# --- the real thing: SAP's client, the default model, vLLM ------------------------------------


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def serve_default_model(
    client: Any, tmp_path: Path, s3_cfg: Config, tarball: Path, image: str
) -> Any:
    """What steps 03-06 set up in AI Core for the default model: templates repository and
    application (synced), object store secret, the tarball in S3, artifact, configuration."""
    from ai_api_client_sdk.models.artifact import Artifact
    from ai_api_client_sdk.models.input_artifact_binding import InputArtifactBinding
    from ai_api_client_sdk.models.parameter_binding import ParameterBinding

    from labkit import storage

    repo = tmp_path / "templates-git"
    head = git_repo(repo, {"labkit/vllm-serving.yaml": TEMPLATE.read_text()})
    client.repositories.create(
        name="lab-templates", url=f"file://{repo}", username="git", password="unused"
    )
    client.applications.create(
        revision="HEAD",
        path="labkit",
        application_name="labkit-app",
        repository_url=f"file://{repo}",
    )
    wait_for(lambda: synced(client, "labkit-app", head), "the sync")
    secret = storage.object_store_secret(s3_cfg)
    client.object_store_secrets.create(
        **{("path_prefix" if k == "pathPrefix" else k): v for k, v in secret.body().items()}
    )
    stored = storage.upload_tarball(storage.open_store(s3_cfg), tarball, progress=False)
    art = client.artifact.create(
        name="smollm2", kind=Artifact.Kind.MODEL, url=stored.artifact_url, scenario_id=SCENARIO
    )
    return client.configuration.create(
        name="smollm2-cpu", scenario_id=SCENARIO, executable_id=EXECUTABLE,
        parameter_bindings=[
            ParameterBinding("image", image), ParameterBinding("modelId", MODEL_ID),
            ParameterBinding("revision", stored.revision), ParameterBinding("resourcePlan", "starter"),
            ParameterBinding("maxModelLen", "2048"),
        ],
        input_artifact_bindings=[InputArtifactBinding("model", art.id)],
    )  # fmt: skip


def up_serving_default_model(
    cfg: Config, tmp_path: Path, s3_cfg: Config, tarball: Path, image: str
) -> tuple[dict[str, Any], Any, Any]:
    """The local AI Core of ``cfg`` up, its service key, SAP's client on it, and the
    configuration :func:`serve_default_model` creates: (key, client, configuration)."""
    aicore.up(cfg, progress=False)
    key = json.loads(aicore.service_key_file(cfg).read_text())
    client = sdk_client(key)
    return key, client, serve_default_model(client, tmp_path, s3_cfg, tarball, image)
