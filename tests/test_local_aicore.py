"""The local AI Core (labkit.local.aicore*): SAP's client against it, its answers against the
official AI API spec, the deployment runner's phases and failures, the streaming proxy, and
restarts that lose nothing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from labkit.config import Config, load_config
from labkit.local import aicore
from labkit.local import aicore_runner as runner_mod
from labkit.local import aicore_server as server_mod
from labkit.local.aicore_runner import RunFailed, RunSpec, free_port
from labkit.util.procs import group_alive

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "templates" / "vllm-serving.yaml"
SCENARIO = "labkit-vllm"
EXECUTABLE = "labkit-vllm"
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
UNPACKED_MARKER = ".entrypoint-unpacked.json"  # runtime/entrypoint.py's MARKER
WAIT_S = 120.0  # failure bound for waits on the server's background work (never asserted on)
VLLM_WAIT_S = 1500.0  # a vLLM start on a busy 2-core machine

# --- the spec ------------------------------------------------------------------------------------


def _spec_path() -> Path | None:
    for candidate in (
        os.environ.get("LABKIT_AI_CORE_SPEC"),
        ROOT / "specs" / "AI_CORE_API.yaml",
        ROOT.parent / "shared" / "specs" / "AI_CORE_API.yaml",  # where DESIGN.md points
    ):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


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
    path = _spec_path()
    if path is None:
        pytest.skip("AI_CORE_API.yaml not found (set LABKIT_AI_CORE_SPEC to the spec file)")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


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


# --- a server in this process ----------------------------------------------------------------------


class Emulator:
    """A local AI Core served by uvicorn in a thread of the test process."""

    def __init__(self, state: Path, *, token_ttl: int = 43200, runner: str = "host") -> None:
        self.state = state
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # The key beside the state, kept across restarts (its URL follows the new port).
        key_cfg = Config(local_dir=state.parent / f"{state.name}-key", aicore_port=self.port)
        self.key = aicore.ensure_service_key(key_cfg)
        self.key_file = aicore.service_key_file(key_cfg)
        builder = None
        if runner != "host" and shutil.which("buildah"):
            from labkit.image import Builder, image_dir

            builder = Builder(
                "buildah", shutil.which("buildah") or "", image_dir(load_config()) / "storage"
            )
        self.settings = server_mod.Settings(
            state_dir=state,
            port=self.port,
            service_key_file=self.key_file,
            runner=runner_mod.RunnerSettings(
                mode=runner,  # type: ignore[arg-type]
                python=sys.executable,
                entrypoint=ROOT / "runtime" / "entrypoint.py",
                start_timeout=VLLM_WAIT_S,
                builder=builder,
                gpu=runner_mod.has_gpu(),
            ),
            token_ttl=token_ttl,
            sync_interval=3600,
            ttl_check=0.2,
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> Emulator:
        import uvicorn

        self.app = server_mod.create_app(self.settings)
        self.core: server_mod.LocalAICore = self.app.state.core
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_for(lambda: self._server.started, "the in-process server to start")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            assert self._thread is not None
            self._thread.join(60)
            self._server = None

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
    """The application's status once a sync of ``revision`` finished."""
    status = client.applications.get_status(app)
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


# --- units -------------------------------------------------------------------------------------


def test_service_key_is_private_generated_once_and_follows_the_port(tmp_path: Path) -> None:
    cfg = Config(local_dir=tmp_path, aicore_port=8123)
    key = aicore.ensure_service_key(cfg)
    path = aicore.service_key_file(cfg)
    assert path == tmp_path / "aicore-service-key.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert key["url"] == key["serviceurls"]["AI_API_URL"] == "http://127.0.0.1:8123"
    assert key["identityzone"] == "local" and len(key["clientsecret"]) >= 32
    assert json.loads(path.read_text()) == key
    path.chmod(0o644)
    again = aicore.ensure_service_key(Config(local_dir=tmp_path, aicore_port=8124))
    assert again["clientsecret"] == key["clientsecret"] and again["clientid"] == key["clientid"]
    assert again["url"] == "http://127.0.0.1:8124" and path.stat().st_mode & 0o777 == 0o600
    # The config's own reader takes it as a BTP service key.
    parsed = load_config(aicore_service_key_file=path).service_key()
    assert parsed is not None and parsed["clientid"] == key["clientid"]


def test_tokens_expire_and_are_bound_to_the_key_and_client(tmp_path: Path) -> None:
    from pydantic import SecretStr

    tokens = server_mod.Tokens(
        b"k" * 32, "client", SecretStr("s3cret"), "http://x/oauth/token", 5000
    )
    assert tokens.credentials_ok("client", "s3cret")
    assert not tokens.credentials_ok("client", "wrong") and not tokens.credentials_ok(
        "other", "s3cret"
    )
    issued = tokens.issue(at=1000.0)
    assert issued["expires_in"] == 4999 and issued["token_type"] == "bearer"
    bearer = f"Bearer {issued['access_token']}"
    assert tokens.check(bearer, at=1001.0)["cid"] == "client"
    for header, at, why in (
        (bearer, 6000.0, "expired"),
        (None, 1001.0, "no Authorization"),
        ("Basic abc", 1001.0, "must be 'Bearer"),
        (bearer[:-3] + "AAA", 1001.0, "not issued by this AI Core"),
        ("Bearer a.b", 1001.0, "not a JWT"),
    ):
        with pytest.raises(server_mod.ApiError) as err:
            tokens.check(header, at=at)
        assert err.value.status == 401 and why in err.value.message
    other_key = server_mod.Tokens(b"x" * 32, "client", SecretStr("s3cret"), "i", 5000)
    with pytest.raises(server_mod.ApiError):
        other_key.check(bearer, at=1001.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "localhost:5000/labkit/aicore-vllm:v261126-01",
            ("localhost:5000", "labkit/aicore-vllm", "v261126-01"),
        ),
        ("vllm/vllm-openai:v0.32.0", ("docker.io", "vllm/vllm-openai", "v0.32.0")),
        ("ubuntu", ("docker.io", "library/ubuntu", "latest")),
        ("ghcr.io/org/img@sha256:" + "a" * 64, ("ghcr.io", "org/img", "sha256:" + "a" * 64)),
        ("127.0.0.1:5000/x/y", ("127.0.0.1:5000", "x/y", "latest")),
    ],
)
def test_image_references_are_split_like_docker(text: str, expected: tuple[str, str, str]) -> None:
    image = runner_mod.parse_image(text)
    assert (image.registry, image.path, image.reference) == expected
    assert image.loopback == expected[0].startswith(("localhost", "127."))


@pytest.mark.parametrize("text", ["", "has space:1", "UPPER/case:1"])
def test_invalid_image_references_are_refused(text: str) -> None:
    with pytest.raises(RunFailed) as err:
        runner_mod.parse_image(text)
    assert err.value.reason == "InvalidImageName"


def test_container_command_follows_kubernetes() -> None:
    ep, cmd = ["python3", "/opt/labkit/entrypoint.py"], ["--x"]
    assert runner_mod.container_command(ep, cmd, None, None) == [*ep, *cmd]
    assert runner_mod.container_command(ep, cmd, None, ["--y"]) == [*ep, "--y"]
    assert runner_mod.container_command(ep, cmd, None, []) == ep
    assert runner_mod.container_command(ep, cmd, ["sh", "-c"], ["run"]) == ["sh", "-c", "run"]


def test_predictor_env_adds_cpu_defaults_only_where_the_template_is_silent() -> None:
    spec = RunSpec(
        image="x", env={"MODEL_ID": "a/b", "ENFORCE_EAGER": "false"}, container_port=8080
    )
    env = runner_mod.predictor_env(spec, port=1234, models="/mnt/models", gpu=False)
    assert env["ENFORCE_EAGER"] == "false" and env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert (env["PORT"], env["HOST"], env["MODELS_DIR"]) == ("1234", "127.0.0.1", "/mnt/models")
    gpu = runner_mod.predictor_env(spec, port=1, models="/m", gpu=True)
    assert "VLLM_CPU_KVCACHE_SPACE" not in gpu


def test_time_helpers() -> None:
    assert [server_mod.ttl_seconds(t) for t in ("30m", "2H", "1d")] == [1800, 7200, 86400]
    with pytest.raises(ValueError):
        server_mod.ttl_seconds("1w")
    when = server_mod.parse_time("2021-05-19T00:00:14.347+00:00")
    assert server_mod.log_time(when) == "2021-05-19T00:00:14.347+00:00"
    assert server_mod.iso(server_mod.parse_time("2021-05-19T00:00:14Z")) == "2021-05-19T00:00:14Z"


def test_the_shipped_template_becomes_scenario_and_executable() -> None:
    scenario, exe = server_mod.executable_from(yaml.safe_load(TEMPLATE.read_text()))
    assert scenario["id"] == exe["scenarioId"] == SCENARIO and exe["id"] == EXECUTABLE
    assert exe["deployable"] is True and exe["versionId"] == "1.0.0"
    params = {p["name"]: p for p in exe["parameters"]}
    assert {"image", "modelId", "revision", "resourcePlan", "args"} <= set(params)
    assert params["resourcePlan"]["default"] == "infer.s" and "default" not in params["image"]
    assert all(p["type"] == "string" for p in exe["parameters"])
    assert (
        exe["inputArtifacts"][0]["name"] == "model" and exe["inputArtifacts"][0]["kind"] == "model"
    )


# --- SAP's client against the server ------------------------------------------------------------


def test_token_endpoint_takes_form_and_basic_credentials_and_refuses_others(
    emulator: Emulator,
) -> None:
    from ai_api_client_sdk.exception import (
        AIAPIAuthenticatorAuthorizationException,
        AIAPIAuthorizationException,
    )

    key, url = emulator.key, emulator.base + "/oauth/token"
    form = {
        "grant_type": "client_credentials",
        "client_id": key["clientid"],
        "client_secret": key["clientsecret"],
    }
    ok = httpx.post(url, data=form, trust_env=False)
    assert ok.status_code == 200 and ok.json()["expires_in"] > 3600
    basic = base64.b64encode(f"{key['clientid']}:{key['clientsecret']}".encode()).decode()
    ok2 = httpx.post(
        url,
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {basic}"},
        trust_env=False,
    )
    assert ok2.status_code == 200
    bad = httpx.post(url, data={**form, "client_secret": "wrong"}, trust_env=False)
    assert bad.status_code == 401 and bad.json()["error"] == "unauthorized"
    assert key["clientsecret"] not in bad.text
    grant = httpx.post(url, data={**form, "grant_type": "password"}, trust_env=False)
    assert grant.status_code == 400
    with pytest.raises(AIAPIAuthenticatorAuthorizationException):
        sdk_client({**key, "clientsecret": "wrong"}).scenario.query()
    # A token of the right shape that has run out, and no token at all: 401 on the API.
    stale = emulator.core.tokens.issue(at=time.time() - 2 * emulator.settings.token_ttl)
    for headers in ({"Authorization": f"Bearer {stale['access_token']}"}, {}):
        resp = httpx.get(
            emulator.base + "/v2/lm/scenarios",
            headers={**headers, "AI-Resource-Group": "default"},
            trust_env=False,
        )
        assert resp.status_code == 401 and resp.json()["error"]["message"]
    client = emulator.client()
    client.rest_client.get_token = lambda: f"Bearer {stale['access_token']}"
    with pytest.raises(AIAPIAuthorizationException):
        client.repositories.query()  # an admin call: it goes through client.rest_client
    # The secret never lands in the server's files.
    for path in emulator.state.rglob("*"):
        if path.is_file():
            assert key["clientsecret"].encode() not in path.read_bytes(), path


def test_resource_group_header_is_enforced(emulator: Emulator) -> None:
    from ai_api_client_sdk.exception import AIAPIInvalidRequestException, AIAPINotFoundException

    missing = emulator.get("/v2/lm/deployments", group=None)
    assert missing.status_code == 400 and "AI-Resource-Group" in missing.json()["error"]["message"]
    validate(missing.json(), "/lm/deployments", "get", 400)
    unknown_list = emulator.get("/v2/lm/deployments", group="nope")
    assert unknown_list.status_code == 400
    unknown_item = emulator.get("/v2/lm/deployments/d0123456789abcde", group="nope")
    assert (
        unknown_item.status_code == 404
        and "resource group 'nope'" in unknown_item.json()["error"]["message"]
    )
    validate(unknown_item.json(), "/lm/deployments/{deploymentId}", "get", 404)
    with pytest.raises(AIAPIInvalidRequestException, match="does not exist"):
        emulator.client("nope").deployment.query()
    with pytest.raises(AIAPINotFoundException, match="resource group 'nope'"):
        emulator.client("nope").deployment.get("d0123456789abcde")

    client = emulator.client()
    created = client.resource_groups.create("team-a")
    assert created.resource_group_id == "team-a"
    assert client.resource_groups.get("team-a").status == "PROVISIONED"
    listing = emulator.get("/v2/admin/resourceGroups", group=None)
    validate(listing.json(), "/admin/resourceGroups", "get", 200)
    assert {g["resourceGroupId"] for g in listing.json()["resources"]} == {"default", "team-a"}
    assert emulator.client("team-a").deployment.query().count == 0
    dup = emulator.post("/v2/admin/resourceGroups", {"resourceGroupId": "team-a"}, group=None)
    assert dup.status_code == 400
    assert (
        emulator.post("/v2/admin/resourceGroups", {"resourceGroupId": "x"}, group=None).status_code
        == 400
    )
    client.resource_groups.delete("team-a")
    with pytest.raises(AIAPINotFoundException):
        client.resource_groups.get("team-a")


def test_secrets_are_kept_apart_and_never_listed(emulator: Emulator) -> None:
    from ai_api_client_sdk.exception import AIAPINotFoundException

    client = emulator.client()
    body = {
        "name": "default", "type": "S3", "bucket": "labkit-models", "endpoint": "127.0.0.1:9000",
        "region": "us-east-1", "path_prefix": "models", "usehttps": "0",
        "data": {"AWS_ACCESS_KEY_ID": "AKIA-TEST-ID", "AWS_SECRET_ACCESS_KEY": "very-secret-key"},
    }  # fmt: skip
    assert client.object_store_secrets.create(**body).message
    got = client.object_store_secrets.get("default")
    assert got.name == "default-object-store-secret"
    assert got.metadata["storage.ai.sap.com/pathPrefix"] == "models"
    assert got.metadata["serving.kubeflow.org/s3-endpoint"] == "127.0.0.1:9000"
    raw = emulator.get("/v2/admin/objectStoreSecrets")
    validate(raw.json(), "/admin/objectStoreSecrets", "get", 200)
    validate(
        emulator.get("/v2/admin/objectStoreSecrets/default").json(),
        "/admin/objectStoreSecrets/{objectStoreName}",
        "get",
        200,
    )
    assert "very-secret-key" not in raw.text
    dup = emulator.post("/v2/admin/objectStoreSecrets", {**body, "pathPrefix": "models"})
    assert dup.status_code == 400
    client.object_store_secrets.modify(
        **{**body, "data": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "rotated"}}
    )
    resolved = emulator.core.resolve_object_store("default", "default")
    assert resolved is not None and resolved.secret_access_key.get_secret_value() == "rotated"
    assert "rotated" not in repr(resolved) and resolved.endpoint_url == "http://127.0.0.1:9000"

    config = {
        "auths": {
            "localhost:5000": {
                "username": "u",
                "password": "registry-pass",
                "auth": "dTpyZWdpc3RyeS1wYXNz",
            }
        }
    }
    client.docker_registry_secrets.create(
        "labkit-registry", {".dockerconfigjson": json.dumps(config)}
    )
    assert client.docker_registry_secrets.get("labkit-registry").name == "labkit-registry"
    listing = emulator.get("/v2/admin/dockerRegistrySecrets", group=None)
    validate(listing.json(), "/admin/dockerRegistrySecrets", "get", 200)
    assert "registry-pass" not in listing.text
    bad = emulator.post(
        "/v2/admin/dockerRegistrySecrets",
        {"name": "x-y", "data": {".dockerconfigjson": "{}"}},
        group=None,
    )
    assert bad.status_code == 400

    state = (emulator.state / "state.json").read_text()
    assert (
        "very-secret-key" not in state and "rotated" not in state and "registry-pass" not in state
    )
    secrets_file = emulator.state / "secrets.json"
    assert secrets_file.stat().st_mode & 0o777 == 0o600 and "rotated" in secrets_file.read_text()

    client.object_store_secrets.delete("default")
    client.docker_registry_secrets.delete("labkit-registry")
    with pytest.raises(AIAPINotFoundException):
        client.object_store_secrets.get("default")
    assert "rotated" not in secrets_file.read_text()


def test_applications_sync_templates_and_report_lint_errors(
    emulator: Emulator, tmp_path: Path
) -> None:
    from ai_api_client_sdk.exception import AIAPINotFoundException

    client, repo, _ = onboard(emulator, tmp_path)
    status = client.applications.get_status("labkit-app")
    assert (status.sync_status, status.health_status) == ("Synced", "Healthy")
    assert [r.status for r in status.sync_resources_status] == ["Synced"]
    validate(
        emulator.get("/v2/admin/applications/labkit-app/status", group=None).json(),
        "/admin/applications/{applicationName}/status",
        "get",
        200,
    )
    validate(
        emulator.get("/v2/admin/applications", group=None).json(), "/admin/applications", "get", 200
    )
    validate(
        emulator.get("/v2/admin/repositories", group=None).json(), "/admin/repositories", "get", 200
    )
    assert client.repositories.get("lab-templates").status.value == "COMPLETED"
    assert client.applications.get("labkit-app").repository_url == str(repo)

    scenarios = client.scenario.query()
    assert [s.id for s in scenarios.resources] == [SCENARIO]
    exe = client.executable.get(SCENARIO, EXECUTABLE)
    assert exe.deployable and {"image", "modelId"} <= {p.name for p in exe.parameters}
    validate(
        emulator.get(f"/v2/lm/scenarios/{SCENARIO}").json(),
        "/lm/scenarios/{scenarioId}",
        "get",
        200,
    )
    validate(emulator.get("/v2/lm/scenarios").json(), "/lm/scenarios", "get", 200)
    validate(
        emulator.get(f"/v2/lm/scenarios/{SCENARIO}/executables").json(),
        "/lm/scenarios/{scenarioId}/executables",
        "get",
        200,
    )
    validate(
        emulator.get(f"/v2/lm/scenarios/{SCENARIO}/executables/{EXECUTABLE}").json(),
        "/lm/scenarios/{scenarioId}/executables/{executableId}",
        "get",
        200,
    )
    validate(
        emulator.get(f"/v2/lm/scenarios/{SCENARIO}/versions").json(),
        "/lm/scenarios/{scenarioId}/versions",
        "get",
        200,
    )

    # A second template that step 05's linter rejects: reported, while the valid one stays.
    broken = yaml.safe_load(TEMPLATE.read_text())
    broken["metadata"]["name"] = "broken_template"
    del broken["metadata"]["labels"]["ai.sap.com/version"]
    head2 = git_repo(repo, {"labkit/broken.yaml": yaml.safe_dump(broken)})
    client.applications.refresh("labkit-app")
    status = wait_for(
        lambda: synced(client, "labkit-app", head2), "the sync of the broken template"
    )
    assert (status.sync_status, status.health_status) == ("OutOfSync", "Degraded")
    failed = [r for r in status.sync_resources_status if r.status == "SyncFailed"]
    assert [r.name for r in failed] == ["broken_template"]
    assert "broken.yaml" in failed[0].message and "ai.sap.com/version" in failed[0].message
    assert client.executable.get(SCENARIO, EXECUTABLE).id == EXECUTABLE

    # Removing the template from git removes its executable (and the empty scenario).
    head3 = git_repo(repo, {"labkit/broken.yaml": "", "labkit/vllm-serving.yaml": ""})
    client.applications.refresh("labkit-app")
    wait_for(lambda: synced(client, "labkit-app", head3), "the sync of the empty folder")
    with pytest.raises(AIAPINotFoundException):
        client.executable.get(SCENARIO, EXECUTABLE)
    assert client.scenario.query().count == 0

    bad_repo = emulator.post(
        "/v2/admin/applications",
        {"repositoryUrl": "/nowhere", "revision": "HEAD", "path": "x"},
        group=None,
    )
    assert bad_repo.status_code == 400 and "not on-boarded" in bad_repo.json()["error"]["message"]
    again = emulator.post(
        "/v2/admin/repositories",
        {"name": "other", "url": str(repo), "username": "u", "password": "p"},
        group=None,
    )
    assert again.status_code == 409
    client.applications.delete("labkit-app")
    client.repositories.delete("lab-templates")


def test_artifacts_configurations_and_their_errors(emulator: Emulator, tmp_path: Path) -> None:
    from ai_api_client_sdk.exception import AIAPIInvalidRequestException
    from ai_api_client_sdk.models.artifact import Artifact
    from ai_api_client_sdk.models.input_artifact_binding import InputArtifactBinding
    from ai_api_client_sdk.models.parameter_binding import ParameterBinding

    client, _, _ = onboard(emulator, tmp_path)
    url = "ai://default/models/smollm2/6d86325/HuggingFaceTB--SmolLM2-135M-Instruct.tar"
    raw = emulator.post(
        "/v2/lm/artifacts", {"name": "smollm2", "kind": "model", "url": url, "scenarioId": SCENARIO}
    )
    assert raw.status_code == 201 and raw.headers["Location"].endswith(raw.json()["id"])
    validate(raw.json(), "/lm/artifacts", "post", 201)
    art = client.artifact.create(
        name="smollm2",
        kind=Artifact.Kind.MODEL,
        url=url,
        scenario_id=SCENARIO,
        description="the default model",
    )
    assert client.artifact.get(art.id).url == url
    assert client.artifact.count() == 2 and client.artifact.query(name="smollm2").count == 2
    validate(emulator.get("/v2/lm/artifacts").json(), "/lm/artifacts", "get", 200)
    validate(
        emulator.get(f"/v2/lm/artifacts/{art.id}", params={"$expand": "scenario"}).json(),
        "/lm/artifacts/{artifactId}",
        "get",
        200,
    )
    for body, why in (
        (
            {"name": "a", "kind": "model", "url": url, "scenarioId": "no-such-scenario"},
            "scenario 'no-such-scenario'",
        ),
        ({"name": "a", "kind": "weights", "url": url, "scenarioId": SCENARIO}, "'kind'"),
        ({"name": "a", "kind": "model", "url": "no-scheme", "scenarioId": SCENARIO}, "'url'"),
    ):
        resp = emulator.post("/v2/lm/artifacts", body)
        assert resp.status_code == 400 and why in resp.json()["error"]["message"]
        validate(resp.json(), "/lm/artifacts", "post", 400)

    params = [
        ParameterBinding("image", "localhost:5000/labkit/aicore-vllm:v010125-01"),
        ParameterBinding("modelId", MODEL_ID),
    ]
    conf = client.configuration.create(
        name="smollm2", scenario_id=SCENARIO, executable_id=EXECUTABLE,
        parameter_bindings=params, input_artifact_bindings=[InputArtifactBinding("model", art.id)],
    )  # fmt: skip
    got = client.configuration.get(conf.id)
    assert got.executable_id == EXECUTABLE and got.parameter_bindings[1].value == MODEL_ID
    assert client.configuration.count(executable_ids=[EXECUTABLE]) == 1
    validate(
        emulator.get(f"/v2/lm/configurations/{conf.id}").json(),
        "/lm/configurations/{configurationId}",
        "get",
        200,
    )
    validate(emulator.get("/v2/lm/configurations").json(), "/lm/configurations", "get", 200)
    with pytest.raises(
        AIAPIInvalidRequestException, match="executable 'no-such-exe' does not exist"
    ):
        client.configuration.create(name="x", scenario_id=SCENARIO, executable_id="no-such-exe")
    with pytest.raises(AIAPIInvalidRequestException, match="parameter 'gpuCount' is not declared"):
        client.configuration.create(
            name="x",
            scenario_id=SCENARIO,
            executable_id=EXECUTABLE,
            parameter_bindings=[ParameterBinding("gpuCount", "1")],
        )
    with pytest.raises(AIAPIInvalidRequestException, match="artifact 'a0000000' does not exist"):
        client.configuration.create(
            name="x",
            scenario_id=SCENARIO,
            executable_id=EXECUTABLE,
            input_artifact_bindings=[InputArtifactBinding("model", "a0000000")],
        )
    # A configuration that binds no image cannot render: the deployment is refused at once.
    bare = client.configuration.create(name="bare", scenario_id=SCENARIO, executable_id=EXECUTABLE)
    with pytest.raises(AIAPIInvalidRequestException, match="does not render"):
        client.deployment.create(bare.id)
    resp = emulator.post("/v2/lm/deployments", {"configurationId": conf.id, "ttl": "1w"})
    assert resp.status_code == 400 and "ttl" in resp.json()["error"]["message"]


# --- deployments without vLLM --------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_cfg() -> Config:
    """The lab's local S3 (moto), started as `labkit local up` does."""
    from labkit.local import s3

    cfg = load_config()
    s3.up(cfg, progress=False)
    return cfg


@pytest.fixture(scope="module")
def lab_image() -> str:
    """The newest lab image in the local registry (or LABKIT_TEST_AICORE_IMAGE)."""
    from labkit import image as image_mod

    if os.environ.get("LABKIT_TEST_AICORE_IMAGE"):
        return os.environ["LABKIT_TEST_AICORE_IMAGE"]
    cfg = load_config()
    try:
        tags = image_mod.list_tags(f"localhost:{cfg.registry_port}", cfg.image_repository)
    except Exception as exc:
        pytest.skip(f"the local registry does not answer ({exc}): run `labkit local up`")
    lab = sorted((t for t in tags if image_mod.is_lab_tag(t)), key=image_mod.parse_tag)
    if not lab:
        pytest.skip(f"no {cfg.image_repository}/aicore-vllm image in the local registry (step 04)")
    return f"localhost:{cfg.registry_port}/{cfg.image_repository}/aicore-vllm:{lab[-1]}"


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
    def check() -> dict[str, Any] | None:
        dep = emu.get(f"/v2/lm/deployments/{dep_id}").json()
        return dep if dep["status"] in wanted else None

    return wait_for(check, f"deployment {dep_id} to be {' or '.join(wanted)}", VLLM_WAIT_S)


def log_text(emu: Emulator, dep_id: str) -> str:
    resp = emu.get(f"/v2/lm/deployments/{dep_id}/logs", params={"$top": 5000})
    assert resp.status_code == 200
    validate(resp.json(), "/lm/deployments/{deploymentId}/logs", "get", 200)
    return "\n".join(r["msg"] for r in resp.json()["data"]["result"])


@pytest.mark.integration
def test_broken_deployments_go_dead_with_the_reason(
    emulator: Emulator, tmp_path: Path, s3_cfg: Config, lab_image: str
) -> None:
    client, _, _ = onboard(emulator, tmp_path)
    register_secret(emulator, s3_cfg)
    prefix = f"labkit-test-aicore/{uuid.uuid4().hex[:8]}"
    not_a_tar = put_object(s3_cfg, f"{prefix}/broken.tar", b"this is not a tar archive" * 100)
    buf = tmp_path / "junk.tar"
    subprocess.run(["tar", "-cf", str(buf), "-C", str(ROOT), "README.md"], check=True)
    no_model = put_object(s3_cfg, f"{prefix}/nomodel/junk.tar", buf.read_bytes())
    cases = {
        "missing secret": (f"ai://no-such-secret/{prefix}/x.tar", lab_image, "StorageInitializerError", "no-such-secret"),
        "missing object": (f"ai://default/{prefix}/absent.tar", lab_image, "StorageInitializerError", "holds nothing"),
        "not a tar": (f"ai://default/{not_a_tar}", lab_image, "StorageInitializerError", "cannot be unpacked"),
        "no model": (f"ai://default/{no_model}", lab_image, "ContainerExited", "no model in"),
        "missing image": (f"ai://default/{no_model}", lab_image.rsplit(":", 1)[0] + ":v010100-99", "ErrImagePull", "cannot be pulled"),
    }  # fmt: skip
    ids = {name: deploy(emulator, url, image) for name, (url, image, _, _) in cases.items()}
    for name, (_, _, reason, words) in cases.items():
        dep = final_status(emulator, ids[name], ("DEAD", "RUNNING"))
        assert dep["status"] == "DEAD", (name, dep)
        assert dep["statusDetails"]["reason"] == reason, (name, dep["statusDetails"])
        assert words in dep["statusMessage"] and len(dep["statusMessage"]) <= 256, (name, dep)
        assert dep["deploymentUrl"] == "" and dep["completionTime"]
        validate(
            emulator.get(f"/v2/lm/deployments/{ids[name]}").json(),
            "/lm/deployments/{deploymentId}",
            "get",
            200,
        )
        assert words in log_text(emulator, ids[name]), name
        sdk_view = client.deployment.get(ids[name])
        assert sdk_view.status.value == "DEAD" and words in sdk_view.status_message
    assert "host" in log_text(emulator, ids["no model"])  # says how the predictor ran
    listing = emulator.get("/v2/lm/deployments", params={"status": "DEAD"}).json()
    validate(listing, "/lm/deployments", "get", 200)
    assert listing["count"] == len(cases) and client.deployment.count() == len(cases)
    only = client.deployment.get(ids["no model"], select="status")
    assert only.status.value == "DEAD"
    # Not running: the inference URL says so; DEAD ones can be deleted, then they are gone.
    proxied = httpx.get(
        f"{emulator.base}/v2/inference/deployments/{ids['no model']}/v1/models",
        headers=emulator.headers(),
        trust_env=False,
    )
    assert proxied.status_code == 503 and "DEAD" in proxied.json()["error"]["message"]
    for dep_id in ids.values():
        resp = httpx.delete(
            f"{emulator.base}/v2/lm/deployments/{dep_id}",
            headers=emulator.headers(),
            trust_env=False,
        )
        assert resp.status_code == 202
        validate(resp.json(), "/lm/deployments/{deploymentId}", "delete", 202)
    wait_for(lambda: client.deployment.count() == 0, "the deletions")
    assert not any((emulator.state / "deployments").iterdir())
    from labkit import storage

    store = storage.open_store(s3_cfg)
    for key in (not_a_tar, no_model):
        store.client.delete_object(Bucket=store.bucket, Key=key)


def test_state_survives_a_restart_and_deployments_are_recovered(tmp_path: Path) -> None:
    state = tmp_path / "aicore"
    emu = Emulator(state).start()
    try:
        client, _, _ = onboard(emu, tmp_path)
        art = emu.post(
            "/v2/lm/artifacts",
            {"name": "m", "kind": "model", "url": "ai://missing/x.tar", "scenarioId": SCENARIO},
        ).json()
        conf = emu.post("/v2/lm/configurations", {"name": "c", "scenarioId": SCENARIO, "executableId": EXECUTABLE,
            "parameterBindings": [{"key": "image", "value": "localhost:1/none:v1"}, {"key": "modelId", "value": MODEL_ID}],
            "inputArtifactBindings": [{"key": "model", "artifactId": art["id"]}]}).json()  # fmt: skip
        token = emu.token()
    finally:
        emu.stop()
    # What a server killed mid-flight leaves behind: a deployment that should run, one that was
    # stopping, one half deleted, and a predictor process of the old server still alive.
    orphan = subprocess.Popen(["sleep", "600"], start_new_session=True)
    data = json.loads((state / "state.json").read_text())
    spec = RunSpec(
        image="localhost:1/none:v1", env={}, container_port=8080, storage_uri="ai://missing/x.tar"
    )
    common = {"configurationId": conf["id"], "configurationName": "c", "executableId": EXECUTABLE, "scenarioId": SCENARIO,
              "createdAt": "2024-01-01T00:00:00Z", "modifiedAt": "2024-01-01T00:00:00Z", "deploymentUrl": "", "_run": spec.to_dict()}  # fmt: skip
    data["deployments"]["default"] = {
        "drunning0000000a": {**common, "id": "drunning0000000a", "status": "RUNNING", "targetStatus": "RUNNING",
                             "_process": {"pgid": orphan.pid, "start": runner_mod.process_start_ticks(orphan.pid), "port": 1}},
        "dstopping000000b": {**common, "id": "dstopping000000b", "status": "STOPPING", "targetStatus": "STOPPED", "_process": None},
        "ddeleted0000000c": {**common, "id": "ddeleted0000000c", "status": "STOPPED", "targetStatus": "DELETED", "_process": None},
    }  # fmt: skip
    (state / "state.json").write_text(json.dumps(data))
    emu2 = Emulator(state).start()
    assert emu2.key["clientsecret"] == emu.key["clientsecret"]
    try:
        assert orphan.wait(30) is not None  # the old predictor was ended
        client = emu2.client()
        assert client.executable.get(SCENARIO, EXECUTABLE).id == EXECUTABLE
        assert client.configuration.get(conf["id"]).name == "c"
        assert client.artifact.get(art["id"]).url == "ai://missing/x.tar"
        # A token issued before the restart still works.
        resp = httpx.get(
            f"{emu2.base}/v2/lm/scenarios",
            headers={"Authorization": f"Bearer {token}", "AI-Resource-Group": "default"},
            trust_env=False,
        )
        assert resp.status_code == 200
        assert client.deployment.get("dstopping000000b").status.value == "STOPPED"
        ids = {d.id for d in client.deployment.query().resources}
        assert "ddeleted0000000c" not in ids
        # The deployment that should run was started again: it runs its phases (and dies here,
        # since its artifact's secret does not exist).
        dep = final_status(emu2, "drunning0000000a", ("DEAD",))
        assert "restarted" in log_text(emu2, "drunning0000000a")
        assert dep["statusDetails"]["reason"] in ("ErrImagePull", "StorageInitializerError")
    finally:
        emu2.stop()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(orphan.pid, signal.SIGKILL)


def test_ttl_deletes_the_deployment(emulator: Emulator, tmp_path: Path) -> None:
    onboard(emulator, tmp_path)
    dep_id = deploy(emulator, "ai://missing/x.tar", "localhost:1/none:v1", ttl="5m")
    dep = final_status(emulator, dep_id, ("DEAD",))
    assert dep["ttl"] == "5m"
    with emulator.core.store.lock:  # as if it had been created six minutes ago
        emulator.core.store.data["deployments"]["default"][dep_id]["createdAt"] = server_mod.iso(
            server_mod.now() - server_mod.timedelta(minutes=6)
        )
    wait_for(
        lambda: emulator.get(f"/v2/lm/deployments/{dep_id}").status_code == 404,
        "the ttl to delete it",
    )


def test_stop_and_delete_rules(emulator: Emulator, tmp_path: Path) -> None:
    client, _, _ = onboard(emulator, tmp_path)
    dep_id = deploy(emulator, "ai://missing/x.tar", "localhost:1/none:v1")
    final_status(emulator, dep_id, ("DEAD",))
    restart = httpx.patch(
        f"{emulator.base}/v2/lm/deployments/{dep_id}",
        json={"targetStatus": "RUNNING"},
        headers=emulator.headers(),
        trust_env=False,
    )
    assert (
        restart.status_code == 400
        and "cannot be started again" in restart.json()["error"]["message"]
    )
    validate(restart.json(), "/lm/deployments/{deploymentId}", "patch", 400)
    stop = httpx.patch(
        f"{emulator.base}/v2/lm/deployments/{dep_id}",
        json={"targetStatus": "STOPPED"},
        headers=emulator.headers(),
        trust_env=False,
    )
    assert stop.status_code == 202
    validate(stop.json(), "/lm/deployments/{deploymentId}", "patch", 202)
    dep = client.deployment.get(dep_id)
    assert (dep.status.value, dep.target_status.value) == ("STOPPED", "STOPPED")
    change = httpx.patch(
        f"{emulator.base}/v2/lm/deployments/{dep_id}",
        json={"configurationId": dep.configuration_id},
        headers=emulator.headers(),
        trust_env=False,
    )
    assert change.status_code == 412
    validate(change.json(), "/lm/deployments/{deploymentId}", "patch", 412)
    # A deployment that is still PENDING cannot be deleted; its bulk stop works.
    with emulator.core.store.lock:
        dep2 = emulator.core.store.data["deployments"]["default"][dep_id]
        pending = copy.deepcopy(dep2) | {
            "id": "dpending0000000a",
            "status": "PENDING",
            "targetStatus": "RUNNING",
        }
        emulator.core.store.data["deployments"]["default"]["dpending0000000a"] = pending
    refused = httpx.delete(
        f"{emulator.base}/v2/lm/deployments/dpending0000000a",
        headers=emulator.headers(),
        trust_env=False,
    )
    assert refused.status_code == 412 and "stop it first" in refused.json()["error"]["message"]
    validate(refused.json(), "/lm/deployments/{deploymentId}", "delete", 412)
    bulk = httpx.patch(
        f"{emulator.base}/v2/lm/deployments",
        json={
            "deployments": [
                {"id": "dpending0000000a", "targetStatus": "STOPPED"},
                {"id": "dnotthere0000000", "targetStatus": "STOPPED"},
            ]
        },
        headers={**emulator.headers(), "Content-Type": "application/merge-patch+json"},
        trust_env=False,
    )
    assert bulk.status_code == 202
    validate(bulk.json(), "/lm/deployments", "patch", 202)
    assert "error" in bulk.json()["deployments"][1]
    wait_for(
        lambda: client.deployment.get("dpending0000000a").status.value == "STOPPED", "the bulk stop"
    )
    client.deployment.delete(dep_id)
    client.deployment.delete("dpending0000000a")
    wait_for(lambda: client.deployment.count() == 0, "the deletions")


# --- the proxy -------------------------------------------------------------------------------------


class GatedUpstream:
    """A server that streams ``first`` to every request, then waits until the test says that
    all clients have it before it streams ``second``: a proxy that buffers, or that serves
    fewer streams at once than there are clients, makes it time out and send ``timeout``."""

    def __init__(self) -> None:
        from starlette.applications import Starlette
        from starlette.responses import StreamingResponse
        from starlette.routing import Route

        self.release = threading.Event()
        self.seen_headers: list[dict[str, str]] = []

        async def stream(request: Any) -> Any:
            self.seen_headers.append(dict(request.headers))
            body = await request.body()

            async def chunks() -> Any:
                yield b"data: first " + body + b"\n\n"
                for _ in range(int(WAIT_S * 20)):
                    if self.release.is_set():
                        yield b"data: second\n\n"
                        return
                    await asyncio.sleep(0.05)
                yield b"data: timeout\n\n"

            return StreamingResponse(
                chunks(), media_type="text/event-stream", headers={"X-Upstream": "yes"}
            )

        self.app = Starlette(routes=[Route("/v1/stream", stream, methods=["POST"])])
        self.port = free_port()

    def __enter__(self) -> GatedUpstream:
        import uvicorn

        self.server = uvicorn.Server(
            uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, "the upstream")
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.should_exit = True
        self.thread.join(30)


def fake_running(emu: Emulator, dep_id: str, port: int) -> None:
    spec = RunSpec(image="x", env={}, container_port=8080)
    with emu.core.store.lock:
        emu.core.store.in_group("deployments", "default")[dep_id] = {
            "id": dep_id, "status": "RUNNING", "targetStatus": "RUNNING", "deploymentUrl": "",
            "configurationId": "c0000000", "configurationName": "c", "executableId": EXECUTABLE,
            "scenarioId": SCENARIO, "createdAt": "2024-01-01T00:00:00Z", "modifiedAt": "2024-01-01T00:00:00Z",
            "_run": spec.to_dict(), "_process": {"port": port},
        }  # fmt: skip


def test_proxy_streams_64_concurrent_responses_chunk_by_chunk(emulator: Emulator) -> None:
    clients = 64
    with GatedUpstream() as upstream:
        fake_running(emulator, "dfake00000000001", upstream.port)
        url = f"{emulator.base}/v2/inference/deployments/dfake00000000001/v1/stream"
        headers = emulator.headers()
        got_first = 0
        lock = threading.Lock()

        async def one(i: int, client: httpx.AsyncClient) -> bytes:
            nonlocal got_first
            buf = b""
            async with client.stream(
                "POST", url, headers=headers, content=f"#{i}".encode()
            ) as resp:
                assert resp.status_code == 200 and resp.headers["x-upstream"] == "yes"
                async for chunk in resp.aiter_raw():
                    before = b"first" in buf
                    buf += chunk
                    if not before and b"\n\n" in buf:
                        with lock:
                            got_first += 1
                            if got_first == clients:
                                upstream.release.set()
            return buf

        async def run() -> list[bytes]:
            limits = httpx.Limits(max_connections=clients * 2)
            async with httpx.AsyncClient(
                timeout=WAIT_S * 2, limits=limits, trust_env=False
            ) as client:
                return await asyncio.gather(*(one(i, client) for i in range(clients)))

        bodies = asyncio.run(run())
    assert all(
        b == f"data: first #{i}\n\ndata: second\n\n".encode() for i, b in enumerate(bodies)
    ), bodies[:3]
    # The upstream sees neither the token nor the resource group.
    assert all(
        "authorization" not in h and "ai-resource-group" not in h for h in upstream.seen_headers
    )


def test_proxy_checks_token_resource_group_and_deployment(emulator: Emulator) -> None:
    fake_running(emulator, "dfake00000000002", free_port())
    path = "/v2/inference/deployments/dfake00000000002/v1/models"
    no_token = httpx.get(
        emulator.base + path, headers={"AI-Resource-Group": "default"}, trust_env=False
    )
    assert no_token.status_code == 401
    no_group = httpx.get(
        emulator.base + path,
        headers={"Authorization": f"Bearer {emulator.token()}"},
        trust_env=False,
    )
    assert no_group.status_code == 400
    emulator.post("/v2/admin/resourceGroups", {"resourceGroupId": "other"}, group=None)
    wrong_group = httpx.get(
        emulator.base + path, headers=emulator.headers("other"), trust_env=False
    )
    assert wrong_group.status_code == 404
    unknown = httpx.get(
        emulator.base + path.replace("dfake00000000002", "dnothere00000000"),
        headers=emulator.headers(),
        trust_env=False,
    )
    assert unknown.status_code == 404
    down = httpx.get(emulator.base + path, headers=emulator.headers(), trust_env=False)
    assert down.status_code == 502  # RUNNING on paper, but nothing listens on its port


# --- the service module ------------------------------------------------------------------------


@pytest.fixture
def service_cfg(tmp_path: Path) -> Iterator[Config]:
    """A Config for a local AI Core of its own (port, state), sharing the machine's image storage."""
    local = tmp_path / "local"
    local.mkdir()
    cfg = load_config(local_dir=local, aicore_port=free_port(), aicore_runner="host")
    try:
        yield cfg
    finally:
        aicore.down(cfg)


def test_up_status_down(service_cfg: Config) -> None:
    cfg = service_cfg
    assert not aicore.status(cfg).healthy
    aicore.up(cfg, progress=False)
    aicore.up(cfg, progress=False)  # idempotent
    row = aicore.status(cfg)
    assert (
        row.healthy
        and row.url == f"http://127.0.0.1:{cfg.aicore_port}"
        and "0 deployments" in row.detail
    )
    key = json.loads(aicore.service_key_file(cfg).read_text())
    assert sdk_client(key).resource_groups.get("default").resource_group_id == "default"
    log = (cfg.local_dir / "aicore.log").read_text()
    assert key["clientsecret"] not in log
    aicore.down(cfg)
    assert not aicore.status(cfg).healthy
    # Something else on the port is not taken for the local AI Core.
    with _other_server(cfg.aicore_port):
        from labkit.errors import ServiceError

        with pytest.raises(ServiceError, match="aicore"):
            aicore.up(cfg, progress=False)


@contextlib.contextmanager
def _other_server(port: int) -> Iterator[None]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/"), "http.server")
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2):
            return True
    except OSError:
        return False


def test_registered_as_the_last_local_service() -> None:
    from labkit.local import services

    assert services.SERVICES[-1] == "aicore"


# --- the real thing: SAP's client, the default model, vLLM --------------------------------------


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


@pytest.mark.integration
@pytest.mark.slow
def test_lifecycle_with_sap_client_on_the_default_model(
    service_cfg: Config, default_tarball: Any, s3_cfg: Config, lab_image: str, tmp_path: Path
) -> None:
    from ai_api_client_sdk.exception import (
        AIAPIInvalidRequestException,
        AIAPIPreconditionFailedException,
    )
    from ai_api_client_sdk.models.target_status import TargetStatus

    cfg = service_cfg
    aicore.up(cfg, progress=False)
    key = json.loads(aicore.service_key_file(cfg).read_text())
    client = sdk_client(key)
    conf = serve_default_model(client, tmp_path, s3_cfg, default_tarball.path, lab_image)
    created = client.deployment.create(conf.id, ttl="2h")
    assert (
        created.status.value == "UNKNOWN" and created.deployment_url == "" and created.ttl == "2h"
    )

    def status(ever_ran: bool = False) -> Any:
        dep = client.deployment.get(created.id)
        assert dep.status.value != "DEAD", dep.status_message
        if dep.status.value != "RUNNING" and not ever_ran:
            assert dep.deployment_url == ""  # empty until it first runs, then kept
        return dep if dep.status.value == "RUNNING" else None

    dep = wait_for(status, "RUNNING", VLLM_WAIT_S)
    assert (
        dep.deployment_url
        == f"{key['serviceurls']['AI_API_URL']}/v2/inference/deployments/{created.id}"
    )
    assert dep.details["scaling"]["backend_details"]["predictor"]["running_replicas"] == 1
    logs = "\n".join(r.msg for r in client.deployment.query_logs(created.id).data.result)
    assert "storage-initializer: unpacking" in logs and "runs on the host" in logs
    models = aicore.state_dir(cfg) / "deployments" / created.id / "models"
    assert not os.access(models, os.W_OK) or os.geteuid() == 0
    assert models.stat().st_mode & 0o222 == 0  # read-only, as KServe mounts it

    headers = {"Authorization": client.rest_client.get_token(), "AI-Resource-Group": "default"}
    with pytest.raises(AIAPIPreconditionFailedException, match="stop it first"):
        client.deployment.delete(created.id)
    names = httpx.get(dep.deployment_url + "/v1/models", headers=headers, trust_env=False).json()
    assert [m["id"] for m in names["data"]] == [MODEL_ID]
    ask = {"model": MODEL_ID, "messages": [{"role": "user", "content": "What is the capital of France?"}],
           "max_tokens": 16, "temperature": 0, "stream": True}  # fmt: skip

    async def stream_all(n: int) -> list[str]:
        async def one(client_: httpx.AsyncClient) -> str:
            text = ""
            async with client_.stream(
                "POST", dep.deployment_url + "/v1/chat/completions", headers=headers, json=ask
            ) as resp:
                assert resp.status_code == 200
                async for line in resp.aiter_lines():
                    if line.startswith("data: {"):
                        text += json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
            return text

        async with httpx.AsyncClient(
            timeout=600, limits=httpx.Limits(max_connections=n), trust_env=False
        ) as c:
            return await asyncio.gather(*(one(c) for _ in range(n)))

    answers = asyncio.run(stream_all(64))
    assert len(answers) == 64 and all("Paris" in a for a in answers), answers[:2]

    # Restart the local AI Core: the deployment comes back by itself.
    aicore.down(cfg)
    aicore.up(cfg, progress=False)
    client = sdk_client(key)
    dep = wait_for(lambda: status(ever_ran=True), "RUNNING after the restart", VLLM_WAIT_S)
    assert "restarted" in "\n".join(
        r.msg for r in client.deployment.query_logs(created.id).data.result
    )
    process = json.loads((aicore.state_dir(cfg) / "state.json").read_text())["deployments"][
        "default"
    ][created.id]["_process"]
    again = httpx.post(
        dep.deployment_url + "/v1/chat/completions",
        headers=headers,
        json={**ask, "stream": False},
        trust_env=False,
        timeout=300,
    )
    assert "Paris" in again.json()["choices"][0]["message"]["content"]

    client.deployment.modify(created.id, target_status=TargetStatus.STOPPED)
    wait_for(lambda: client.deployment.get(created.id).status.value == "STOPPED", "STOPPED", 120)
    assert not group_alive(process["pgid"]) and _port_free(process["port"])
    with pytest.raises(AIAPIInvalidRequestException, match="cannot be started again"):
        client.deployment.modify(created.id, target_status=TargetStatus.RUNNING)
    client.deployment.delete(created.id)
    wait_for(lambda: client.deployment.count() == 0, "the deletion")
    assert not (aicore.state_dir(cfg) / "deployments" / created.id).exists()


def _same_tree(root: Path, tarball: Path) -> list[str]:
    """What differs between ``root`` and the tarball's members (files by sha256, links by
    target, and any extra or missing path), apart from the unpacker's own marker."""
    import hashlib
    import tarfile

    wanted: dict[str, str] = {}
    with tarfile.open(tarball) as tar:
        for member in tar:
            name = member.name.strip("./")
            if member.isfile():
                data = tar.extractfile(member)
                assert data is not None
                wanted[name] = "file " + hashlib.sha256(data.read()).hexdigest()
            elif member.issym():
                wanted[name] = "link " + member.linkname
    found: dict[str, str] = {}
    for path in root.rglob("*"):
        name = path.relative_to(root).as_posix()
        if name == UNPACKED_MARKER:
            continue
        if path.is_symlink():
            found[name] = "link " + os.readlink(path)
        elif path.is_file():
            found[name] = "file " + hashlib.sha256(path.read_bytes()).hexdigest()
    return sorted(n for n in wanted.keys() | found.keys() if wanted.get(n) != found.get(n))


def _object_ids(state: dict[str, Any]) -> dict[str, list[str]]:
    """Every object in the local AI Core's state: kind -> sorted ids ("group/id" when grouped)."""
    out: dict[str, list[str]] = {}
    for kind, objects in state.items():
        if not isinstance(objects, dict):
            continue
        ids: list[str] = []
        for key, value in objects.items():
            grouped = isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())
            ids += [f"{key}/{inner}" for inner in value] if grouped else [key]
        out[kind] = sorted(ids)
    return out


@pytest.mark.integration
@pytest.mark.slow
def test_a_crash_in_the_storage_phase_loses_nothing_and_the_model_arrives_whole(
    service_cfg: Config, default_tarball: Any, s3_cfg: Config, lab_image: str, tmp_path: Path
) -> None:
    """The local AI Core killed (its whole process group, the unpacker too) while a deployment
    downloads its model, and again while it unpacks it: after each restart every object is
    still there, once, and the deployment fetches again from scratch and runs on exactly the
    tarball's files."""
    from ai_api_client_sdk.models.target_status import TargetStatus

    cfg = service_cfg
    aicore.up(cfg, progress=False)
    key = json.loads(aicore.service_key_file(cfg).read_text())
    client = sdk_client(key)
    conf = serve_default_model(client, tmp_path, s3_cfg, default_tarball.path, lab_image)
    created = client.deployment.create(conf.id)
    work = aicore.state_dir(cfg) / "deployments" / created.id
    state_file = aicore.state_dir(cfg) / "state.json"
    objects = json.loads(state_file.read_text())
    # Killed first while the tarball downloads, then, after a restart, while it is unpacked.
    for phase in ("download", "models"):
        pid = aicore._daemon(cfg).pid()
        assert pid is not None
        deadline = time.monotonic() + WAIT_S
        while not (work / phase).is_dir():
            assert time.monotonic() < deadline, f"the storage phase never reached {phase}/"
            time.sleep(0.01)
        os.killpg(pid, signal.SIGKILL)
        wait_for(functools.partial(lambda p: not group_alive(p), pid), "the killed server")
        assert not (work / runner_mod.STORAGE_MARKER).exists(), "killed after the storage phase"
        aicore.up(cfg, progress=False)
    client = sdk_client(key)
    dep = wait_for(
        lambda: (d := client.deployment.get(created.id)).status.value in ("RUNNING", "DEAD") and d,
        "the deployment after the restart",
        VLLM_WAIT_S,
    )
    logs = "\n".join(r.msg for r in client.deployment.query_logs(created.id).data.result)
    assert dep.status.value == "RUNNING", dep.status_message
    assert "restarted" in logs and "storage-initializer: done" in logs
    assert not _same_tree(work / "models", default_tarball.path)
    assert not (work / "download").exists()
    # No object lost, none doubled.
    assert _object_ids(json.loads(state_file.read_text())) == _object_ids(objects)
    assert client.deployment.count() == 1 and client.artifact.count() == 1
    assert client.configuration.count() == 1
    client.deployment.modify(created.id, target_status=TargetStatus.STOPPED)
    wait_for(lambda: client.deployment.get(created.id).status.value == "STOPPED", "STOPPED", 120)


@pytest.mark.integration
@pytest.mark.slow
def test_buildah_runs_the_pushed_image(
    tmp_path: Path, default_tarball: Any, s3_cfg: Config, lab_image: str
) -> None:
    if shutil.which("buildah") is None:
        pytest.skip("buildah is not installed: the local AI Core runs the entrypoint on the host")
    emu = Emulator(tmp_path / "aicore", runner="buildah").start()
    try:
        onboard(emu, tmp_path)
        register_secret(emu, s3_cfg)
        from labkit import storage

        stored = storage.upload_tarball(
            storage.open_store(s3_cfg), default_tarball.path, progress=False
        )
        dep_id = deploy(
            emu,
            stored.artifact_url,
            lab_image,
            extra={"revision": stored.revision, "maxModelLen": "2048"},
        )
        dep = final_status(emu, dep_id)
        assert dep["status"] == "RUNNING", dep.get("statusMessage")
        logs = log_text(emu, dep_id)
        assert "runs with buildah" in logs and "mounted read-only at /mnt/models" in logs
        resp = httpx.get(
            dep["deploymentUrl"] + "/v1/models", headers=emu.headers(), trust_env=False, timeout=60
        )
        assert [m["id"] for m in resp.json()["data"]] == [MODEL_ID]
        process = emu.core.store.data["deployments"]["default"][dep_id]["_process"]
        stop = httpx.patch(
            f"{emu.base}/v2/lm/deployments/{dep_id}",
            json={"targetStatus": "STOPPED"},
            headers=emu.headers(),
            trust_env=False,
        )
        assert stop.status_code == 202
        final_status(emu, dep_id, ("STOPPED",))
        assert not group_alive(process["pgid"]) and _port_free(process["port"])
        containers = subprocess.run(
            emu.settings.runner.builder.argv("containers", "--format", "{{.ContainerName}}"),
            capture_output=True, text=True, env=emu.settings.runner.builder.env(),
        ).stdout  # fmt: skip
        assert f"labkit-aicore-{dep_id}" not in containers
    finally:
        emu.stop()


def test_admin_write_answers_match_the_spec(emulator: Emulator, tmp_path: Path) -> None:
    base = emulator.base + "/v2"

    def call(method: str, path: str, body: Any = None, group: str | None = None) -> Any:
        resp = httpx.request(
            method, base + path, json=body, headers=emulator.headers(group), trust_env=False
        )
        assert resp.status_code < 300, resp.text
        return resp

    def check(
        method: str, path: str, spec_path: str, body: Any = None, group: str | None = None
    ) -> None:
        resp = call(method, path, body, group)
        validate(resp.json(), spec_path, method.lower(), resp.status_code)

    check(
        "POST",
        "/admin/resourceGroups",
        "/admin/resourceGroups",
        {"resourceGroupId": "team-b", "labels": [{"key": "ext.ai.sap.com/team", "value": "b"}]},
    )
    validate(
        call("GET", "/admin/resourceGroups/team-b").json(),
        "/admin/resourceGroups/{resourceGroupId}",
        "get",
        200,
    )
    assert call("PATCH", "/admin/resourceGroups/team-b", {"labels": []}).status_code == 202
    check("DELETE", "/admin/resourceGroups/team-b", "/admin/resourceGroups/{resourceGroupId}")
    secret = {
        "name": "store",
        "type": "S3",
        "bucket": "b",
        "data": {"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"},
    }
    check("POST", "/admin/objectStoreSecrets", "/admin/objectStoreSecrets", secret, "default")
    check(
        "PATCH",
        "/admin/objectStoreSecrets/store",
        "/admin/objectStoreSecrets/{objectStoreName}",
        secret,
        "default",
    )
    check(
        "DELETE",
        "/admin/objectStoreSecrets/store",
        "/admin/objectStoreSecrets/{objectStoreName}",
        None,
        "default",
    )
    docker = {"name": "regcred", "data": {".dockerconfigjson": json.dumps({"auths": {}})}}
    check("POST", "/admin/dockerRegistrySecrets", "/admin/dockerRegistrySecrets", docker)
    check(
        "PATCH",
        "/admin/dockerRegistrySecrets/regcred",
        "/admin/dockerRegistrySecrets/{dockerRegistryName}",
        {"data": docker["data"]},
    )
    validate(
        call("GET", "/admin/dockerRegistrySecrets/regcred").json(),
        "/admin/dockerRegistrySecrets/{dockerRegistryName}",
        "get",
        200,
    )
    check(
        "DELETE",
        "/admin/dockerRegistrySecrets/regcred",
        "/admin/dockerRegistrySecrets/{dockerRegistryName}",
    )
    repo = tmp_path / "git"
    git_repo(repo, {"labkit/vllm-serving.yaml": TEMPLATE.read_text()})
    check(
        "POST",
        "/admin/repositories",
        "/admin/repositories",
        {"name": "templates", "url": str(repo), "username": "u", "password": "p"},
    )
    validate(
        call("GET", "/admin/repositories/templates").json(),
        "/admin/repositories/{repositoryName}",
        "get",
        200,
    )
    check(
        "PATCH",
        "/admin/repositories/templates",
        "/admin/repositories/{repositoryName}",
        {"username": "u2", "password": "p2"},
    )
    app = {
        "repositoryName": "templates",
        "revision": "HEAD",
        "path": "labkit",
        "applicationName": "templates-app",
    }
    check("POST", "/admin/applications", "/admin/applications", app)
    validate(
        call("GET", "/admin/applications/templates-app").json(),
        "/admin/applications/{applicationName}",
        "get",
        200,
    )
    check(
        "POST",
        "/admin/applications/templates-app/refresh",
        "/admin/applications/{applicationName}/refresh",
    )
    check(
        "PATCH",
        "/admin/applications/templates-app",
        "/admin/applications/{applicationName}",
        {"repositoryUrl": str(repo), "revision": "main", "path": "labkit"},
    )
    check("DELETE", "/admin/applications/templates-app", "/admin/applications/{applicationName}")
    check("DELETE", "/admin/repositories/templates", "/admin/repositories/{repositoryName}")
    validate(
        call("GET", "/admin/resources/instanceTypes").json(),
        "/admin/resources/instanceTypes",
        "get",
        200,
    )
    missing = httpx.get(
        base + "/admin/applications/nope", headers=emulator.headers(None), trust_env=False
    )
    assert missing.status_code == 404
    validate(missing.json(), "/admin/applications/{applicationName}", "get", 404)
