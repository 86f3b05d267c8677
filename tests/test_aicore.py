"""Step 06 (labkit.aicore): service keys, secrets, waits and the diagnosis without a server; then
the whole lifecycle through SAP's client against the local AI Core; a `live` test on a tenant."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import ClassVar
from urllib.parse import parse_qs

import pytest

from labkit import aicore
from labkit.aicore import (
    AICoreError,
    DeploymentFailed,
    DeploymentInfo,
    DeploymentResult,
    Resource,
    diagnose,
    parse_service_key,
)
from labkit.config import load_config
from labkit.errors import ConfigError, LabError, ServiceError
from labkit.state import State

SECRET = "s3cr3t-client-value-0123456789"


def btp_key(url: str = "https://tenant.authentication.sap.hana.ondemand.com", **extra) -> dict:
    """A service key in the shape the BTP cockpit shows."""
    return {
        "clientid": "sb-1234!b5678|aicore!b540",
        "clientsecret": SECRET,
        "url": url,
        "identityzone": "tenant",
        "identityzoneid": "abcd",
        "appname": "1234!b5678|aicore!b540",
        "serviceurls": {"AI_API_URL": "https://api.ai.prod.eu-central-1.aws.ml.hana.ondemand.com"},
        **extra,
    }


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text.strip(), text
    return text


# --- service keys --------------------------------------------------------------------------------


def test_service_key_from_btp_json_gives_the_sdk_urls_and_masks_the_secret():
    key = parse_service_key(json.dumps(btp_key()), "AICORE_SERVICE_KEY")
    assert key.base_url == "https://api.ai.prod.eu-central-1.aws.ml.hana.ondemand.com/v2"
    assert key.auth_url == "https://tenant.authentication.sap.hana.ondemand.com/oauth/token"
    assert key.client_secret.get_secret_value() == SECRET
    for shown in (repr(key), str(key), json.dumps(key.public())):
        assert SECRET not in shown
    assert key.public()["client_id"] == "sb-1234!b5678|aicore!b540"


def test_service_key_wrapped_in_credentials_and_urls_with_suffixes():
    key = parse_service_key({"credentials": btp_key("https://x.example/oauth/token/")}, "f.json")
    assert key.auth_url == "https://x.example/oauth/token"
    data = btp_key()
    data["serviceurls"]["AI_API_URL"] += "/v2/"
    assert parse_service_key(data).base_url.endswith(".hana.ondemand.com/v2")


def test_x509_service_key_uses_the_cert_url():
    data = btp_key()
    del data["clientsecret"]
    data.update(certificate="-----BEGIN CERTIFICATE-----\\nAAA", key="-----BEGIN KEY-----\\nBBB",
                certurl="https://tenant.authentication.cert.example")  # fmt: skip
    key = parse_service_key(data)
    assert key.auth == "x509"
    assert key.auth_url == "https://tenant.authentication.cert.example/oauth/token"
    assert "BBB" not in repr(key)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "not a JSON object"),
        (json.dumps({k: v for k, v in btp_key().items() if k != "serviceurls"}), "AI_API_URL"),
        (json.dumps({k: v for k, v in btp_key().items() if k != "clientsecret"}), "clientsecret"),
    ],
)
def test_broken_service_keys_say_what_is_wrong_in_one_line(text, says):
    with pytest.raises(ConfigError) as exc:
        parse_service_key(text, "key.json")
    assert says in one_line(exc.value) and "key.json" in str(exc.value)
    assert SECRET not in str(exc.value)


def test_local_profile_reads_the_local_ai_core_key_and_never_a_tenant_key(tmp_path, monkeypatch):
    monkeypatch.setenv("AICORE_SERVICE_KEY", json.dumps(btp_key()))
    cfg = load_config(profile="local", local_dir=tmp_path)
    with pytest.raises(ServiceError) as exc:
        aicore.load_service_key(cfg)
    assert "labkit local up" in one_line(exc.value)
    local = {"clientid": "labkit", "clientsecret": "local-secret", "url": "http://127.0.0.1:8100",
             "serviceurls": {"AI_API_URL": "http://127.0.0.1:8100"}, "identityzone": "local"}  # fmt: skip
    (tmp_path / "aicore-service-key.json").write_text(json.dumps(local))
    key = aicore.load_service_key(cfg)
    assert key.base_url == "http://127.0.0.1:8100/v2"
    assert key.auth_url == "http://127.0.0.1:8100/oauth/token"


def test_tenant_profile_reads_the_variable_then_the_file_then_the_sdk_variables(
    tmp_path, monkeypatch
):
    for name in ("AICORE_SERVICE_KEY", "LABKIT_AICORE_SERVICE_KEY", "VCAP_SERVICES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AICORE_HOME", str(tmp_path / "home"))  # no ~/.aicore/config.json
    monkeypatch.setenv("AICORE_SERVICE_KEY", json.dumps(btp_key("https://from-env")))
    assert aicore.load_service_key(load_config(profile="aicore")).auth_url.startswith(
        "https://from-env"
    )
    monkeypatch.delenv("AICORE_SERVICE_KEY")
    path = tmp_path / "key.json"
    path.write_text(json.dumps(btp_key("https://from-file")))
    cfg = load_config(profile="aicore", aicore_service_key_file=path)
    assert aicore.load_service_key(cfg).auth_url.startswith("https://from-file")
    with pytest.raises(ConfigError):
        aicore.load_service_key(load_config(profile="aicore"))
    monkeypatch.setenv("AICORE_CLIENT_ID", "sdk-client")
    monkeypatch.setenv("AICORE_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("AICORE_AUTH_URL", "https://sdk-auth")
    monkeypatch.setenv("AICORE_BASE_URL", "https://sdk-api/v2")
    key = aicore.load_service_key(load_config(profile="aicore"))
    assert (key.client_id, key.auth_url, key.base_url) == (
        "sdk-client",
        "https://sdk-auth/oauth/token",
        "https://sdk-api/v2",
    )


# --- token endpoint, secrets in reprs and logs ---------------------------------------------------


class _TokenHandler(BaseHTTPRequestHandler):
    issued: ClassVar[list[str]] = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        form = parse_qs(self.rfile.read(length).decode())
        ok = form.get("client_id") == ["good"] and form.get("client_secret") == [SECRET]
        body = (
            {"access_token": f"tok-{len(self.issued)}-abcdefgh", "expires_in": 43199}
            if ok
            else {"error": "unauthorized", "error_description": "Bad credentials"}
        )
        if ok:
            self.issued.append(body["access_token"])
        data = json.dumps(body).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def token_server():
    _TokenHandler.issued = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _key(url: str, client_id: str = "good") -> aicore.ServiceKey:
    data = btp_key(url)
    data["clientid"] = client_id
    data["serviceurls"]["AI_API_URL"] = url
    return parse_service_key(data, "test key")


def test_token_is_fetched_once_and_masked_in_headers(token_server):
    ai = aicore.AICore(_key(token_server), "default")
    headers = ai.headers()
    assert headers["Authorization"] == "Bearer tok-0-abcdefgh"
    assert headers["AI-Resource-Group"] == "default"
    assert ai.token() == "Bearer tok-0-abcdefgh"  # cached
    assert len(_TokenHandler.issued) == 1
    for shown in (repr(headers), str(headers), headers._repr_html_(), repr(ai), ai._repr_html_()):
        assert "tok-0" not in shown and SECRET not in shown


def test_bad_credentials_give_one_line_without_the_secret(token_server):
    ai = aicore.AICore(_key(token_server, client_id="wrong"), "default")
    with pytest.raises(AICoreError) as exc:
        ai.token()
    text = one_line(exc.value)
    assert "refused the client id and secret" in text and "401" in text
    assert SECRET not in text


def test_unreachable_token_endpoint_says_start_the_local_services():
    key = _key("http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(ServiceError) as exc:
        aicore.AICore(key, "default", local=True).token()
    assert "labkit local up" in one_line(exc.value)
    with pytest.raises(AICoreError) as exc:
        aicore.AICore(key, "default").token()
    assert "unreachable" in one_line(exc.value)


def test_sdk_debug_logs_never_show_registered_secrets(caplog, monkeypatch):
    aicore.register_secret("AKIA-very-secret-key")
    aicore._install_redaction()
    caplog.set_level(logging.DEBUG, logger="ai-api-client-sdk")
    logging.getLogger("ai-api-client-sdk").debug(
        "Sending post request with payload: %s",
        {"data": {"AWS_SECRET_ACCESS_KEY": "AKIA-very-secret-key"}},
    )
    assert "AKIA-very-secret-key" not in caplog.text
    assert aicore.MASK in caplog.text
    assert aicore.redact("x AKIA-very-secret-key y") == f"x {aicore.MASK} y"


def test_resource_group_and_ttl_are_checked_before_any_call():
    with pytest.raises(ConfigError):
        aicore.check_resource_group_name("a")
    assert aicore.check_resource_group_name("default") == "default"
    for bad in ("10", "1w", "0h", "1.5h"):
        with pytest.raises(ConfigError):
            aicore.check_ttl(bad)
    assert aicore.check_ttl("30m") == "30m" and aicore.check_ttl(None) is None


# --- the diagnosis of a failed deployment --------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "cause"),
    [
        ("aicore: deployment failed: image localhost:5000/labkit/nope:v1 cannot be pulled: "
         "registry localhost:5000 has no such repository or tag (manifest unknown)", "image"),
        ("Back-off pulling image: ErrImagePull: pull access denied", "image"),
        ("the artifact ai://missing/models/x.tar names the object store secret 'missing', which "
         "does not exist in the deployment's resource group", "secret"),
        ("cannot fetch s3://b/k: the object store refused the secret's credentials "
         "(InvalidAccessKeyId)", "secret"),
        ("Container kserve-container was OOMKilled (exit code 137)", "oom"),
        ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "oom"),
        ("ValueError: The model's max seq len (8192) is larger than the maximum number of tokens "
         "that can be stored in KV cache (4096)", "oom"),
        ("the artifact ai://default/models/nope.tar points at s3://labkit-models/models/nope.tar, "
         "where the object store holds nothing", "model"),
        ("entrypoint: error: no model in /mnt/models: expected models--<org>--<name>/", "model"),
        ("storage-initializer: NoSuchKey: The specified key does not exist.", "model"),
    ],
)  # fmt: skip
def test_diagnosis_names_the_cause_from_a_log_line(line, cause):
    found = diagnose(["INFO starting", line, "INFO shutting down"])
    assert [c.name for c in found][:1] == [cause]
    assert found[0].evidence and found[0].advice


def test_diagnosis_puts_the_cause_nearest_the_failure_first_and_ignores_healthy_logs():
    assert diagnose(["storage-initializer: done in 1.2 s", "INFO: Uvicorn running"]) == []
    found = diagnose(["failed to pull image x", "later: OOMKilled"])
    assert [c.name for c in found] == ["oom", "image"]


def test_a_warning_ranks_after_the_error_that_killed_the_deployment():
    found = diagnose(
        [
            "aicore: warning: imagePullSecret 'labkit-registry' does not exist",
            "entrypoint: error: MAX_MODEL_LEN='x': expected a positive whole number",
            "aicore: deployment failed: the predictor exited with code 2 before it was ready",
        ]
    )
    assert [c.name for c in found] == ["server", "secret"]
    assert "exited with code 2" in found[0].evidence


# --- bounded waits (fake AI Core, fake clock) ----------------------------------------------------


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class FakeAI:
    """The parts of AICore the waits and the clean-up use, scripted."""

    api_url = "http://fake"
    resource_group = "default"
    local = True

    def __init__(self, statuses=(), logs=()):
        self.statuses = list(statuses)
        self.logs = list(logs)
        self.deployments: dict[str, str] = {}
        self.calls: list[str] = []
        self.client = SimpleNamespace(
            deployment=SimpleNamespace(modify=self._modify, delete=self._delete),
            applications=SimpleNamespace(delete=self._deleter("application")),
            repositories=SimpleNamespace(delete=self._deleter("repository")),
            docker_registry_secrets=SimpleNamespace(delete=self._deleter("docker")),
            object_store_secrets=SimpleNamespace(delete=self._deleter("objectstore")),
            resource_groups=SimpleNamespace(delete=self._deleter("rg")),
        )

    def deployment(self, deployment_id):
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        url = "http://fake/v2/inference/deployments/d1" if status == "RUNNING" else ""
        return DeploymentInfo(deployment_id, status, deployment_url=url,
                              status_message="Dead" if status == "DEAD" else "")  # fmt: skip

    def find_deployment(self, deployment_id):
        status = self.deployments.get(deployment_id)
        return DeploymentInfo(deployment_id, status) if status else None

    def logs_tail(self, deployment_id, lines=40):
        return self.logs[-lines:]

    def call(self, what, fn, *args, missing_ok=False, **kwargs):
        self.calls.append(what)
        try:
            return fn(*args, **kwargs)
        except KeyError:
            if missing_ok:
                return None
            raise AICoreError(f"cannot {what}: not found") from None

    def _modify(self, deployment_id, target_status):
        self.deployments[deployment_id] = "STOPPED"
        return object()

    def _delete(self, deployment_id):
        del self.deployments[deployment_id]
        return object()

    def _deleter(self, kind):
        def delete(name):
            self.calls.append(f"deleted {kind} {name}")
            return object()

        return delete


def test_wait_running_polls_until_running_and_returns_the_url():
    clock = FakeClock()
    ai = FakeAI(["UNKNOWN", "PENDING", "PENDING", "RUNNING"])
    info = aicore.wait_running(ai, "d1", timeout=60, poll=5, clock=clock, sleep=clock.sleep)
    assert info.status == "RUNNING" and info.deployment_url.endswith("/d1")
    assert clock.sleeps == [5, 5, 5]


def test_a_dead_deployment_fails_at_once_with_the_logs_and_the_cause():
    clock = FakeClock()
    logs = ["storage-initializer: downloading", "failed to pull image: manifest unknown"]
    ai = FakeAI(["PENDING", "DEAD"], logs=logs)
    with pytest.raises(DeploymentFailed) as exc:
        aicore.wait_running(ai, "d1", timeout=600, poll=5, clock=clock, sleep=clock.sleep)
    text = one_line(exc.value)
    assert "d1 is DEAD" in text and "image cannot be pulled" in text
    assert exc.value.logs == logs and exc.value.causes[0].name == "image"
    assert clock.now == 5  # no waiting after DEAD
    data = exc.value.to_dict()
    assert data["status"] == "DEAD" and data["logs_tail"] == logs
    assert "likely causes" in exc.value.report()


def test_the_wait_is_bounded_by_the_timeout():
    clock = FakeClock()
    ai = FakeAI(["PENDING"])
    with pytest.raises(DeploymentFailed) as exc:
        aicore.wait_running(ai, "d1", timeout=12, poll=5, clock=clock, sleep=clock.sleep)
    assert clock.sleeps == [5, 5, 2] and clock.now == 12
    assert "still PENDING after 12 s" in one_line(exc.value)


def test_status_view_prints_a_line_per_change_and_the_failure(capsys):
    view = aicore.StatusView("deployment d1", live=False)
    clock = FakeClock()
    ai = FakeAI(["PENDING", "PENDING", "DEAD"], logs=["OOMKilled"])
    with pytest.raises(DeploymentFailed):
        aicore.wait_running(ai, "d1", timeout=60, poll=1, view=view, clock=clock, sleep=clock.sleep)
    err = capsys.readouterr().err
    assert err.count("deployment d1: PENDING") == 1
    assert "DEAD" in err and "out of memory" in err and "OOMKilled" in err


def test_the_sync_wait_is_bounded_and_names_what_the_scenario_has():
    clock = FakeClock()
    ai = FakeAI()
    status = SimpleNamespace(sync_status="Synced", health_status="Healthy", message="ok",
                             sync_finished_at="T1", source=SimpleNamespace(revision="HEAD"),
                             sync_resources_status=[])  # fmt: skip
    ai.client.applications = SimpleNamespace(get_status=lambda name: status,
                                             refresh=lambda name: None)  # fmt: skip
    ai.client.executable = SimpleNamespace(
        get=lambda scenario, exe: {}[exe],  # 404
        query=lambda scenario: SimpleNamespace(resources=[SimpleNamespace(id="other-exe")]),
    )
    with pytest.raises(AICoreError) as exc:
        aicore.sync_templates(ai, "app", scenario_id="s1", executable_id="mine", timeout=30,
                              poll=5, clock=clock, sleep=clock.sleep)  # fmt: skip
    assert clock.now == 30 and max(clock.sleeps) == 5
    text = one_line(exc.value)
    assert "no executable mine in scenario s1 after 30 s" in text and "other-exe" in text


def test_the_sync_waits_for_the_refresh_when_the_synced_commit_is_older():
    clock = FakeClock()
    ai = FakeAI()
    old, new = "a" * 40, "b" * 40
    statuses = [
        SimpleNamespace(sync_status="Synced", health_status="Healthy", message="", source=
                        SimpleNamespace(revision=rev), sync_finished_at=at,
                        sync_resources_status=[])
        for rev, at in ((old, "T1"), (old, "T1"), (old, "T1"), (new, "T2"))
    ]  # fmt: skip
    ai.client.applications = SimpleNamespace(get_status=lambda name: statuses.pop(0),
                                             refresh=lambda name: None)  # fmt: skip
    exe = SimpleNamespace(parameters=[SimpleNamespace(name="image", default="")],
                          input_artifacts=[SimpleNamespace(name="model")])  # fmt: skip
    ai.client.executable = SimpleNamespace(get=lambda scenario, executable: exe)
    done = aicore.sync_templates(ai, "app", scenario_id="s", executable_id="e", needs=["image"],
                                 commit=new, poll=5, clock=clock, sleep=clock.sleep)  # fmt: skip
    assert clock.sleeps == [5, 5] and done.input_artifacts == ["model"]


# --- the recorded state and the clean-up ---------------------------------------------------------


def _recorded(state: State) -> None:
    objects = [
        Resource("resource_group", "default", "reused", False, api_url="http://fake"),
        Resource("repository", "labkit-templates", "created", True, api_url="http://fake"),
        Resource("application", "labkit-templates", "created", True, api_url="http://fake"),
        Resource("object_store_secret", "default", "reused", False, resource_group="default",
                 api_url="http://fake"),
        Resource("artifact", "a1", "created", True, resource_group="default", api_url="http://fake"),
        Resource("configuration", "c1", "created", True, resource_group="default",
                 api_url="http://fake"),
        Resource("deployment", "d0", "created", True, resource_group="default",
                 api_url="http://fake"),
        Resource("deployment", "d1", "created", True, resource_group="default",
                 api_url="http://fake"),
    ]  # fmt: skip
    result = DeploymentResult("d1", "RUNNING", "http://fake/d1", "c1", "a1", "ai://default/m.tar",
                              "labkit-vllm", "labkit-vllm", "default", "http://fake",
                              objects=objects)  # fmt: skip
    state.record("deploy", result)


def test_cleanup_deletes_only_what_the_lab_created_and_is_safe_twice(tmp_path):
    state = State(tmp_path / "state.json")
    _recorded(state)
    ai = FakeAI()
    ai.deployments = {"d1": "RUNNING"}  # d0 is already gone (say, a ttl ended it)
    cfg = load_config(profile="local", lab_dir=tmp_path)
    report = aicore.cleanup(cfg, state, ai=ai, poll=0)
    actions = {(r.kind, r.id): (r.action, r.detail) for r in report.rows}
    assert actions[("deployment", "d1")] == ("deleted", "")
    assert actions[("deployment", "d0")][0] == "gone"
    assert (
        actions[("configuration", "c1")][0] == "kept"
        and "cannot delete" in actions[("configuration", "c1")][1]
    )
    assert actions[("artifact", "a1")][0] == "kept"
    assert actions[("object_store_secret", "default")] == ("kept", "the lab did not create it")
    assert actions[("resource_group", "default")][0] == "kept"
    assert "deleted application labkit-templates" in ai.calls
    assert "deleted repository labkit-templates" in ai.calls
    assert not any("objectstore" in c or "deleted rg" in c for c in ai.calls)
    assert [r.kind for r in report.rows][:2] == ["deployment", "deployment"]  # newest first
    assert ai.calls.index("deleted application labkit-templates") < ai.calls.index(
        "deleted repository labkit-templates"
    )
    recorded = state.get("deploy")
    assert recorded["status"] == "DELETED" and recorded["deployment_url"] == ""

    again = FakeAI()
    second = aicore.cleanup(cfg, State(tmp_path / "state.json"), ai=again)
    assert second.deleted == [] and not any(c.startswith("deleted") for c in again.calls)


def test_cleanup_can_keep_the_setup_and_does_nothing_without_a_record(tmp_path):
    state = State(tmp_path / "state.json")
    cfg = load_config(profile="local", lab_dir=tmp_path)
    assert aicore.cleanup(cfg, state, ai=FakeAI()).rows == []
    _recorded(state)
    ai = FakeAI()
    ai.deployments = {"d1": "DEAD"}
    report = aicore.cleanup(cfg, state, ai=ai, delete_setup=False, poll=0)
    assert {r.id for r in report.deleted} == {"d1"}
    assert not any(c.startswith("deleted") for c in ai.calls)


def test_step_05_results_are_read_for_the_configuration():
    cfg = load_config(profile="local")
    tpl = aicore.template_inputs(
        {
            "executable_id": "labkit-vllm",
            "bindings": {
                "parameterBindings": [{"key": "image", "value": "localhost:5000/x:v1"}],
                "inputArtifactBindings": [{"key": "model", "artifactId": ""}],
            },
        },
        cfg,
    )
    assert tpl.scenario_id == cfg.scenario and tpl.parameters == {"image": "localhost:5000/x:v1"}
    assert tpl.artifact_key == "model"
    assert aicore.template_inputs(
        {"executable_id": "e", "parameters": {"a": 1}}, cfg
    ).parameters == {"a": "1"}
    with pytest.raises(ConfigError):
        aicore.template_inputs({}, cfg)


def test_configuration_names_follow_the_bindings():
    a = aicore.configuration_name("labkit-vllm", {"image": "x"}, {"model": "a1"})
    assert a == aicore.configuration_name("labkit-vllm", {"image": "x"}, {"model": "a1"})
    assert a != aicore.configuration_name("labkit-vllm", {"image": "y"}, {"model": "a1"})
    assert a.startswith("labkit-vllm-")


def test_inference_url_and_a_missing_url():
    assert (
        aicore.inference_url("http://h/v2/inference/deployments/d1/", "/v1/models")
        == "http://h/v2/inference/deployments/d1/v1/models"
    )
    with pytest.raises(LabError):
        aicore.inference_url("", "/v1/models")


def test_cli_status_without_a_recorded_deployment_is_one_line(lab_env, capsys, tmp_path,
                                                              monkeypatch):  # fmt: skip
    from labkit.cli import main

    monkeypatch.setenv("LABKIT_LOCAL_DIR", str(tmp_path / "nolocal"))
    assert main(["deploy", "status"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("labkit: error:") and "\n" not in err and "labkit local up" in err
    assert main(["deploy", "--ttl", "5x", "--json"]) == 2
    assert "ttl '5x'" in capsys.readouterr().err


# --- against the local AI Core (integration) -----------------------------------------------------
#
# Each module run uses its own scenario, executable, repository, application and object store
# secret (suffix below), so it never meets the notebooks' objects in the shared local AI Core,
# and deletes what it made at the end.

SUFFIX = uuid.uuid4().hex[:6]
SERVED = "smollm2-test"


@pytest.fixture(scope="module")
def local_aicore(local_hub):
    """The local AI Core with S3 and the registry, started as `labkit local up` does."""
    local = pytest.importorskip("labkit.local.aicore", reason="the local AI Core is not built yet")
    from labkit.local import registry, s3

    cfg = load_config()
    if registry.program() is None:
        pytest.skip("docker-registry is not installed (make system)")
    s3.up(cfg, progress=False)
    registry.up(cfg, progress=False)
    local.up(cfg, progress=False)
    return cfg


def _registry_base(cfg) -> str:
    return f"http://127.0.0.1:{cfg.registry_port}"


def _put_minimal_image(cfg, path: str, tag: str) -> str:
    """Push an image with a config blob and no layers: enough for the registry check, never run."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    base = _registry_base(cfg)
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {}}).encode()
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    start = opener.open(urllib.request.Request(f"{base}/v2/{path}/blobs/uploads/", method="POST"))
    location = urllib.parse.urljoin(base, start.headers["Location"])
    sep = "&" if "?" in location else "?"
    opener.open(
        urllib.request.Request(f"{location}{sep}digest={digest}", data=config, method="PUT",
                               headers={"Content-Type": "application/octet-stream"})
    )  # fmt: skip
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "size": len(config), "digest": digest},
        "layers": [],
    }  # fmt: skip
    opener.open(
        urllib.request.Request(
            f"{base}/v2/{path}/manifests/{tag}",
            data=json.dumps(manifest).encode(),
            method="PUT",
            headers={"Content-Type": manifest["mediaType"]},
        )
    )
    return f"localhost:{cfg.registry_port}/{path}:{tag}"


@pytest.fixture(scope="module")
def host_aicore(local_aicore, tmp_path_factory):
    """A second local AI Core of this module's own that runs predictors on the host
    (runtime/entrypoint.py with the lab's vLLM), so the lifecycle does not hang on an image
    build; stopped at the end."""
    import socket

    from labkit.local import aicore as local

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = load_config(local_dir=tmp_path_factory.mktemp("aicore-host"), aicore_port=port,
                      aicore_runner="host")  # fmt: skip
    local.up(cfg, progress=False)
    yield cfg
    local.down(cfg)


def _make_lab(cfg_base, tarball, tmp, *, image_ref: str, executable: str | None = None,
              edit=lambda text: text):  # fmt: skip
    """A lab state with steps 03 and 05 done the lab's way, under this module's names, for the
    AI Core ``cfg_base`` points at."""
    from labkit import storage, templates

    name = f"labkit-test-{SUFFIX}"
    cfg = load_config(
        lab_dir=tmp / "lab",
        object_store_secret=name,
        local_dir=cfg_base.local_dir,
        aicore_port=cfg_base.aicore_port,
    )
    state = State(cfg.state_file)
    store = storage.open_store(cfg)
    stored = storage.upload_tarball(store, tarball.path, secret_name=name, progress=False)
    state.record("upload", stored.to_dict())
    text = templates.set_scenario(templates.shipped_template(cfg).read_text(), name)
    text = edit(re.sub(r"(?m)^  name: labkit-vllm$", f"  name: {name}", text, count=1))
    repo = tmp / "templates-git"
    path = f"labkit/{name}.yaml"
    commit = templates.publish(text, repo, path, "labkit test template")
    values = {
        "image": image_ref,
        "resourcePlan": "starter",
        "modelId": tarball.repo_id,
        "revision": tarball.revision,
        "servedModelName": SERVED,
        "maxModelLen": "2048",
        "args": "--enforce-eager",
    }
    bindings = templates.bindings(templates.load(text), values, {"model": None})
    state.record(
        "template",
        {"executable_id": executable or name, "scenario_id": name, "commit": commit,
         "path_in_repo": path, "repo_dir": str(repo), "bindings": bindings},
    )  # fmt: skip
    return cfg, state, name


def _deploy(cfg, state, name, **kwargs):
    options = {"repository": name, "application": name, "timeout": 900, "poll": 2,
               "sync_timeout": 120, "progress": False, **kwargs}  # fmt: skip
    return aicore.deploy(cfg, state, **options)


@pytest.fixture(scope="module")
def error_lab(local_aicore, default_tarball, tmp_path_factory):
    """One lab for the error cases: a registry image that exists (never started), cleaned up after."""
    cfg = local_aicore
    image_ref = _put_minimal_image(cfg, f"labkit-test-{SUFFIX}/aicore-vllm", "v010125-01")
    lab = _make_lab(cfg, default_tarball, tmp_path_factory.mktemp("errors"), image_ref=image_ref)
    yield lab
    aicore.cleanup(lab[0], lab[1], poll=1)


@pytest.mark.integration
def test_bad_credentials_give_one_line(local_aicore, tmp_path):
    key = json.loads(aicore.local_service_key_file(local_aicore).read_text())
    key["clientsecret"] = "not-the-secret"
    path = tmp_path / "key.json"
    path.write_text(json.dumps(key))
    with pytest.raises(AICoreError) as exc:
        aicore.connect(load_config(aicore_service_key_file=path))
    assert "refused the client id and secret" in one_line(exc.value)
    assert "not-the-secret" not in str(exc.value)


@pytest.mark.integration
def test_a_wrong_resource_group_gives_one_line(error_lab, capsys, monkeypatch):
    cfg, state, name = error_lab
    ai = aicore.connect(cfg, resource_group="labkit-no-such-group")
    with pytest.raises(AICoreError) as exc:
        ai.check_resource_group()
    text = one_line(exc.value)
    assert "'labkit-no-such-group' does not exist" in text and "default" in text
    wrong = load_config(lab_dir=cfg.lab_dir, resource_group="labkit-no-such-group",
                        object_store_secret=name)  # fmt: skip
    with pytest.raises(AICoreError) as exc:
        _deploy(wrong, state, name, create_resource_group=False)
    assert "does not exist" in one_line(exc.value)
    from labkit.cli import main

    monkeypatch.setenv("LABKIT_LAB_DIR", str(cfg.lab_dir))
    assert main(["deploy", "list", "--resource-group", "labkit-no-such-group"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "does not exist" in err


@pytest.mark.integration
def test_an_unknown_executable_gives_one_line(local_aicore, default_tarball, tmp_path):
    cfg, state, name = _make_lab(
        local_aicore, default_tarball, tmp_path, image_ref="localhost:5000/x/y:v010125-01",
        executable="labkit-test-nope",
    )  # fmt: skip
    try:
        with pytest.raises(AICoreError) as exc:
            _deploy(cfg, state, name, sync_timeout=60)
        text = one_line(exc.value)
        assert "no executable labkit-test-nope" in text and name in text
    finally:
        aicore.cleanup(cfg, state)


@pytest.mark.integration
def test_a_template_that_fails_to_sync_shows_the_sync_error(local_aicore, default_tarball,
                                                             tmp_path):  # fmt: skip
    cfg, state, name = _make_lab(
        local_aicore, default_tarball, tmp_path, image_ref="localhost:5000/x/y:v010125-01",
        edit=lambda text: text.replace('    ai.sap.com/version: "1.0.0"\n', ""),
    )  # fmt: skip
    try:
        with pytest.raises(AICoreError) as exc:
            _deploy(cfg, state, name, sync_timeout=60)
        text = one_line(exc.value)
        assert "did not sync" in text and "ai.sap.com/version is missing" in text
    finally:
        aicore.cleanup(cfg, state)


@pytest.mark.integration
def test_a_broken_artifact_url_goes_dead_with_the_reason(error_lab):
    cfg, state, name = error_lab
    with pytest.raises(DeploymentFailed) as exc:
        _deploy(cfg, state, name, artifact_url=f"ai://{name}/models/nothing/here.tar")
    text = one_line(exc.value)
    assert "is DEAD" in text and "model files" in text
    assert exc.value.causes[0].name == "model" and exc.value.logs
    assert state.get("deploy")["status"] == "DEAD"


@pytest.mark.integration
def test_a_broken_image_goes_dead_with_the_reason(error_lab):
    cfg, state, name = error_lab
    missing = f"localhost:{cfg.registry_port}/labkit-test-{SUFFIX}/aicore-vllm:v010125-99"
    with pytest.raises(DeploymentFailed) as exc:
        _deploy(cfg, state, name, parameters={"image": missing})
    text = one_line(exc.value)
    assert "is DEAD" in text and "image cannot be pulled" in text
    assert exc.value.causes[0].name == "image"


@pytest.mark.integration
@pytest.mark.slow
def test_the_whole_lifecycle_through_the_sdk(host_aicore, default_tarball, tmp_path, capsys,
                                             monkeypatch):  # fmt: skip
    from labkit.cli import main
    from labkit.config import LOCAL_S3_CREDENTIALS

    # The registry check needs the image to exist; host mode runs the runtime entrypoint.
    image_ref = _put_minimal_image(host_aicore, f"labkit-test-{SUFFIX}/aicore-vllm", "v010125-02")
    cfg, state, name = _make_lab(host_aicore, default_tarball, tmp_path, image_ref=image_ref)
    try:
        result = _deploy(cfg, state, name, ttl="2h")
        assert result.status == "RUNNING" and result.deployment_url
        assert result.served_model_name == SERVED and result.ttl == "2h"
        created = {o.kind for o in result.objects if o.created}
        assert {"repository", "application", "object_store_secret", "artifact", "configuration",
                "deployment"} <= created  # fmt: skip

        models = aicore.list_models(cfg, result.deployment_url)
        assert models.models == [SERVED] and models.max_model_len == 2048

        for var, value in (("LABKIT_LAB_DIR", cfg.lab_dir), ("LABKIT_LOCAL_DIR", cfg.local_dir),
                           ("LABKIT_AICORE_PORT", cfg.aicore_port),
                           ("LABKIT_OBJECT_STORE_SECRET", name)):  # fmt: skip
            monkeypatch.setenv(var, str(value))
        capsys.readouterr()
        # Again, from the CLI as a pipeline would: idempotent, everything is reused.
        argv = ["deploy", "--json", "--repository", name, "--application", name, "--ttl", "2h"]
        assert main([*argv, "--poll", "2"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert (data["deployment_id"], data["status"], data["deployment_url"]) == (
            result.deployment_id, "RUNNING", result.deployment_url,
        )  # fmt: skip
        again = DeploymentResult.from_dict(State(cfg.state_file).get("deploy"))
        assert again.configuration_id == result.configuration_id
        assert again.artifact_id == result.artifact_id
        assert {o.action for o in again.objects} == {"reused"}

        ai = aicore.connect(cfg)  # SAP's client sees the same
        sdk = ai.client.deployment.get(result.deployment_id)
        assert sdk.status.value == "RUNNING" and sdk.deployment_url == result.deployment_url

        secret = json.loads(aicore.local_service_key_file(cfg).read_text())["clientsecret"]
        token = ai.token().removeprefix("Bearer ")
        recorded = cfg.state_file.read_text()
        for value in (secret, token, LOCAL_S3_CREDENTIALS[1]):
            assert value not in recorded and value not in repr(ai.headers())

        assert main(["deploy", "status", "--json"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert (data["deployment_id"], data["status"], data["deployment_url"]) == (
            result.deployment_id, "RUNNING", result.deployment_url,
        )  # fmt: skip
        assert main(["deploy", "logs", "--json"]) == 0
        logs = json.loads(capsys.readouterr().out)["logs"]
        assert logs and not any(secret in line or token in line for line in logs)

        stopped = aicore.stop(ai, result.deployment_id, poll=1)
        assert stopped.status == "STOPPED"
        with pytest.raises(AICoreError):
            aicore.list_models(cfg, result.deployment_url, timeout=0)
    finally:
        report = aicore.cleanup(cfg, State(cfg.state_file), poll=1)
    deleted = {r.kind for r in report.deleted}
    assert {"deployment", "application", "repository", "object_store_secret"} <= deleted
    assert aicore.connect(cfg).find_deployment(result.deployment_id) is None
    assert aicore.cleanup(cfg, State(cfg.state_file)).deleted == []


# --- a real tenant (never in CI) -----------------------------------------------------------------


def _tenant_key() -> bool:
    import os

    return bool(os.environ.get("AICORE_SERVICE_KEY") or os.environ.get("LABKIT_AICORE_SERVICE_KEY")
                or os.environ.get("LABKIT_AICORE_SERVICE_KEY_FILE"))  # fmt: skip


@pytest.mark.live
@pytest.mark.skipif(not _tenant_key(), reason="no AI Core service key (AICORE_SERVICE_KEY)")
def test_live_tenant_connects_and_lists():
    cfg = load_config(profile="aicore")
    ai = aicore.connect(cfg)
    assert cfg.resource_group in ai.resource_group_names()
    assert isinstance(aicore.list_deployments(ai), list)


@pytest.mark.live
@pytest.mark.skipif(not _tenant_key(), reason="no AI Core service key (AICORE_SERVICE_KEY)")
def test_live_tenant_runs_the_same_flow(tmp_path):
    """The lifecycle on a tenant, from a lab state whose steps 03-05 ran there
    (LABKIT_LIVE_STATE=path/to/state.json); a 1 h ttl bounds the cost if the clean-up fails."""
    import os
    import shutil

    source = os.environ.get("LABKIT_LIVE_STATE")
    if not source:
        pytest.skip("LABKIT_LIVE_STATE (a state.json with steps 03-05 done on the tenant) is unset")
    (tmp_path / "lab").mkdir()
    shutil.copy(source, tmp_path / "lab" / "state.json")
    cfg = load_config(profile="aicore", lab_dir=tmp_path / "lab")
    state = State(cfg.state_file)
    try:
        result = aicore.deploy(cfg, state, ttl="1h", timeout=3600, poll=15, progress=False)
        assert result.status == "RUNNING"
        assert aicore.list_models(cfg, result.deployment_url, timeout=300).models
    finally:
        aicore.cleanup(cfg, state)
