"""Step 06, labkit.aicore.deployer: step 05's results read for the deployment; then the whole
lifecycle through SAP's client against the local AI Core; a `live` test on a tenant."""

from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import pytest
from aicore_fakes import one_line
from registry_images import put_minimal_image

from labkit import aicore
from labkit.aicore import AICoreError, DeploymentFailed, DeploymentResult
from labkit.config import load_config
from labkit.errors import ConfigError
from labkit.state import State
from labkit.util.net import free_port


def test_step_05_results_are_read_for_the_configuration():
    cfg = load_config(profile="local")
    tpl = aicore.template_inputs(
        {
            "executable_id": cfg.executable,
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


def test_an_override_of_num_gpus_brings_dev_shm_along(lab_env):
    """The configuration binds /dev/shm only for tensor parallelism, also when step 06 changes
    numGpus (`labkit deploy --set numGpus=2`)."""
    from labkit import templates
    from labkit.aicore import Deployer

    cfg = load_config(profile="local")
    state = State(cfg.state_file)
    tp2 = templates.with_shm({"numGpus": "2"})
    state.record("upload", {"artifact_url": "ai://default/m.tar"})
    state.record("template", {"executable_id": cfg.executable,
                              "parameters": {"image": "x", "numGpus": "1"}})  # fmt: skip

    def parameters(**overrides: str) -> dict[str, str]:
        ai = SimpleNamespace(resource_group="default", api_url="http://127.0.0.1:1")  # never called
        return Deployer(cfg, state, ai=ai, parameters=overrides, progress=False).parameters()

    assert parameters() == {"image": "x", "numGpus": "1"}
    assert parameters(numGpus="2") == {"image": "x", **tp2}
    mine = {"numGpus": "2", "volumes": "[]", "volumeMounts": "[]"}
    assert parameters(**mine) == {"image": "x", **mine}  # volumes set by hand win
    state.record("template", {"executable_id": cfg.executable,
                              "parameters": {"image": "x", **tp2}})  # fmt: skip
    assert parameters() == {"image": "x", **tp2}
    assert parameters(numGpus="1") == {"image": "x", "numGpus": "1"}


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


def _put_minimal_image(cfg, path: str, tag: str) -> str:
    """Push an image with a config blob and no layers: enough for the registry check, never run."""
    put_minimal_image(f"http://127.0.0.1:{cfg.registry_port}", path, tag)
    return f"localhost:{cfg.registry_port}/{path}:{tag}"


@pytest.fixture(scope="module")
def host_aicore(local_aicore, tmp_path_factory):
    """A second local AI Core of this module's own that runs predictors on the host
    (runtime/entrypoint.py with the lab's vLLM), so the lifecycle does not hang on an image
    build; stopped at the end."""
    from labkit.local import aicore as local

    # Both ports free: the token endpoint listens on its own (the API's + 1 may be taken).
    cfg = load_config(local_dir=tmp_path_factory.mktemp("aicore-host"), aicore_port=free_port(),
                      aicore_token_port=free_port(), aicore_runner="host")  # fmt: skip
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
        aicore_token_port=cfg_base.aicore_token_port,
    )
    state = State(cfg.state_file)
    store = storage.open_store(cfg)
    stored = storage.upload_tarball(store, tarball.path, secret_name=name, progress=False)
    state.record("upload", stored.to_dict())
    text = templates.set_ids(
        templates.shipped_template(cfg).read_text(), executable=name, scenario=name
    )
    text = edit(text)
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
    aicore.cleanup(lab[0], lab[1], delete_repository=True, poll=1)


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
        aicore.cleanup(cfg, state, delete_repository=True)


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
        aicore.cleanup(cfg, state, delete_repository=True)


@pytest.mark.integration
def test_a_broken_artifact_url_crash_loops_and_the_lab_names_the_model(error_lab):
    # As on a tenant, the storage initializer that cannot fetch the model is restarted with
    # back-off (Init:CrashLoopBackOff, PENDING): the lab stops waiting after a bounded time and
    # says why from the restarts and the logs (docs/tenant.md, item 5).
    cfg, state, name = error_lab
    with pytest.raises(DeploymentFailed) as exc:
        _deploy(cfg, state, name, artifact_url=f"ai://{name}/models/nothing/here.tar")
    text = one_line(exc.value)
    assert "is stuck in PENDING" in text and "model files" in text
    assert [c.name for c in exc.value.causes[:2]] == ["crashloop", "model"] and exc.value.logs
    assert state.get("deploy")["status"] == "PENDING"


@pytest.mark.integration
def test_a_broken_image_stays_pending_and_the_lab_names_the_image(error_lab):
    # As on a tenant, an image that cannot be pulled keeps the deployment PENDING (kubelet's
    # back-off); the lab names the image from statusDetails (docs/tenant.md, item 4).
    cfg, state, name = error_lab
    missing = f"localhost:{cfg.registry_port}/labkit-test-{SUFFIX}/aicore-vllm:v010125-99"
    with pytest.raises(DeploymentFailed) as exc:
        _deploy(cfg, state, name, parameters={"image": missing})
    text = one_line(exc.value)
    assert "is stuck in PENDING" in text and f"the image {missing} cannot be pulled" in text
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
        report = aicore.cleanup(cfg, State(cfg.state_file), delete_repository=True, poll=1)
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
        aicore.cleanup(cfg, state, delete_repository=True)
