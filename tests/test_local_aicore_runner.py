"""The local AI Core's deployment runner (labkit.local.aicore.runner): its phases' failures as
DEAD deployments with the reason, a crash in the storage phase, and the pushed image under
buildah."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aicore_emulator
import httpx
import pytest
from aicore_emulator import (
    MODEL_ID,
    PULL_REASONS,
    ROOT,
    UNPACKED_MARKER,
    VLLM_WAIT_S,
    WAIT_S,
    Emulator,
    _port_free,
    deploy,
    final_status,
    log_text,
    onboard,
    pending_with,
    put_object,
    register_secret,
    sdk_client,
    up_serving_default_model,
    validate,
    wait_for,
)

from labkit.config import Config
from labkit.local import aicore
from labkit.local.aicore import launch as launch_mod
from labkit.local.aicore import runspec as runspec_mod
from labkit.util.procs import group_alive

# The fixtures of tests/aicore_emulator.py this file uses.
emulator = aicore_emulator.emulator
s3_cfg = aicore_emulator.s3_cfg
lab_image = aicore_emulator.lab_image
registry_image = aicore_emulator.registry_image
service_cfg = aicore_emulator.service_cfg


@pytest.mark.integration
def test_broken_deployments_behave_as_on_a_tenant(
    tmp_path: Path, s3_cfg: Config, registry_image: str
) -> None:
    """A storage initializer or predictor that fails restarts with back-off (PENDING, restarts
    in statusDetails) until the progress deadline makes it DEAD with the reason; an image that
    cannot be pulled stays PENDING, the reason in statusDetails only."""
    emulator = Emulator(tmp_path / "aicore", start_timeout=20).start()  # a 20 s deadline
    try:
        _broken_deployments(emulator, tmp_path, s3_cfg, registry_image)
    finally:
        emulator.stop()


def _broken_deployments(
    emulator: Emulator, tmp_path: Path, s3_cfg: Config, registry_image: str
) -> None:
    client, _, _ = onboard(emulator, tmp_path)
    register_secret(emulator, s3_cfg)
    prefix = f"labkit-test-aicore/{uuid.uuid4().hex[:8]}"
    not_a_tar = put_object(s3_cfg, f"{prefix}/broken.tar", b"this is not a tar archive" * 100)
    buf = tmp_path / "junk.tar"
    subprocess.run(["tar", "-cf", str(buf), "-C", str(ROOT), "README.md"], check=True)
    no_model = put_object(s3_cfg, f"{prefix}/nomodel/junk.tar", buf.read_bytes())
    init, crash = "Init:CrashLoopBackOff", "CrashLoopBackOff"
    cases = {
        "missing secret": (f"ai://no-such-secret/{prefix}/x.tar", registry_image, init, "no-such-secret"),
        "missing object": (f"ai://default/{prefix}/absent.tar", registry_image, init, "holds nothing"),
        "not a tar": (f"ai://default/{not_a_tar}", registry_image, init, "cannot be unpacked"),
        "no model": (f"ai://default/{no_model}", registry_image, crash, "no model in"),
    }  # fmt: skip
    missing_image = registry_image.rsplit(":", 1)[0] + ":v010100-99"
    pulling = deploy(emulator, f"ai://default/{no_model}", missing_image)
    ids = {name: deploy(emulator, url, image) for name, (url, image, _, _) in cases.items()}
    for name, (_, _, reason, words) in cases.items():
        dep = pending_with(emulator, ids[name], (reason,))
        assert dep["statusDetails"]["restartCount"] >= 1, (name, dep)
        assert words in dep["statusDetails"]["lastState"]["terminated"]["message"], (name, dep)
    for name, (_, _, _, words) in cases.items():
        dep = final_status(emulator, ids[name], ("DEAD", "RUNNING"))
        assert dep["status"] == "DEAD", (name, dep)
        assert dep["statusDetails"]["reason"] == "ProgressDeadlineExceeded", (name, dep)
        assert words in dep["statusMessage"] and len(dep["statusMessage"]) <= 256, (name, dep)
        assert dep["deploymentUrl"] == "" and dep["completionTime"]
        validate(
            emulator.get(f"/v2/lm/deployments/{ids[name]}").json(),
            "/lm/deployments/{deploymentId}",
            "get",
            200,
        )
        assert words in log_text(emulator, ids[name]), name  # the containers' own output
        sdk_view = client.deployment.get(ids[name])
        assert sdk_view.status.value == "DEAD" and words in sdk_view.status_message
    assert "host" in log_text(emulator, ids["no model"])  # says how the predictor ran
    # The image that cannot be pulled: still PENDING, the reason an event, not a log line.
    dep = pending_with(emulator, pulling, PULL_REASONS)
    assert missing_image in dep["statusMessage"] and dep["statusDetails"]["events"]
    assert "Failed to pull" not in log_text(emulator, pulling)
    listing = emulator.get("/v2/lm/deployments", params={"status": "DEAD"}).json()
    validate(listing, "/lm/deployments", "get", 200)
    assert listing["count"] == len(cases) and client.deployment.count() == len(cases) + 1
    only = client.deployment.get(ids["no model"], select="status")
    assert only.status.value == "DEAD"
    # Not running: the inference URL says so; DEAD ones can be deleted, then they are gone.
    proxied = httpx.get(
        f"{emulator.base}/v2/inference/deployments/{ids['no model']}/v1/models",
        headers=emulator.headers(),
        trust_env=False,
    )
    assert proxied.status_code == 503 and "DEAD" in proxied.json()["error"]["message"]
    stop = httpx.patch(f"{emulator.base}/v2/lm/deployments/{pulling}", json={"targetStatus": "STOPPED"},
                       headers=emulator.headers(), trust_env=False)  # fmt: skip
    assert stop.status_code == 202
    final_status(emulator, pulling, ("STOPPED",))
    for dep_id in [*ids.values(), pulling]:
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
    service_cfg: Config, default_tarball: Any, s3_cfg: Config, registry_image: str, tmp_path: Path
) -> None:
    """The local AI Core killed (its whole process group, the unpacker too) while a deployment
    downloads its model, and again while it unpacks it: after each restart every object is
    still there, once, and the deployment fetches again from scratch and runs on exactly the
    tarball's files."""
    from ai_api_client_sdk.models.target_status import TargetStatus

    cfg = service_cfg
    key, client, conf = up_serving_default_model(
        cfg, tmp_path, s3_cfg, default_tarball.path, registry_image
    )
    created = client.deployment.create(conf.id)
    work = aicore.state_dir(cfg) / "deployments" / created.id
    state_file = aicore.state_dir(cfg) / "state.json"
    objects = json.loads(state_file.read_text())
    # Killed first while the tarball downloads, then, after a restart, while it is unpacked.
    for phase in ("download", "models"):
        pid = launch_mod._daemon(cfg).pid()
        assert pid is not None
        deadline = time.monotonic() + WAIT_S
        while not (work / phase).is_dir():
            assert time.monotonic() < deadline, f"the storage phase never reached {phase}/"
            time.sleep(0.01)
        os.killpg(pid, signal.SIGKILL)
        wait_for(functools.partial(lambda p: not group_alive(p), pid), "the killed server")
        assert not (work / runspec_mod.STORAGE_MARKER).exists(), "killed after the storage phase"
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


# --- the kubelet's ways, with a stand-in predictor (fast: no registry, S3 or vLLM) -------------

# A predictor that crashes on its first start once it answered /health (when CRASH_ONCE names a
# file), or at once (without it), printing why.
_PREDICTOR = """
import http.server, os, sys
flag = os.environ.get("CRASH_ONCE")
if not flag:
    print("boom: the model does not load", flush=True)
    sys.exit(3)
first = not os.path.exists(flag)
open(flag, "a").close()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
        if first:
            os._exit(4)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"""


class _Events:
    """What a runner tells the server, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.lines: list[str] = []

    def log(self, line: str) -> None:
        self.lines.append(line)

    def phase(self, message: str) -> None:
        self.calls.append(("phase", message))

    def pending(self, message: str, details: dict[str, Any]) -> None:
        self.calls.append(("pending", (message, details)))

    def running(self, port: int) -> None:
        self.calls.append(("running", port))

    def dead(self, reason: str, message: str) -> None:
        self.calls.append(("dead", (reason, message)))

    def process(self, info: Any) -> None:
        pass

    def object_store(self, name: str) -> None:
        return None

    def docker_config(self, name: str) -> None:
        return None

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.calls if kind != "phase"]

    def pendings(self) -> list[tuple[str, dict[str, Any]]]:
        return [value for kind, value in self.calls if kind == "pending"]


def _runner(tmp_path: Path, *, env: dict[str, str] | None = None, secrets: list[str] | None = None,
            scale: float = 0.005, predictor: str = _PREDICTOR) -> tuple[Any, _Events]:  # fmt: skip
    from labkit.local.aicore.runner import Runner

    script = tmp_path / "predictor.py"
    script.write_text(predictor)
    settings = runspec_mod.RunnerSettings(
        mode="host", python=sys.executable, entrypoint=script, start_timeout=0.01,
        time_scale=scale,
    )  # fmt: skip
    spec = runspec_mod.RunSpec(
        image="registry.example/lab/aicore-vllm:v1", env=env or {}, container_port=8080,
        image_pull_secrets=secrets or [],
    )  # fmt: skip
    events = _Events()
    runner = Runner("dtest00000000001", spec, tmp_path / "work", settings, events)
    return runner, events


def test_a_crashing_predictor_restarts_with_back_off_then_goes_dead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16, items 5 and 10: Kubernetes restarts a crashing container with back-off
    (CrashLoopBackOff, the restarts in statusDetails, the deployment PENDING); DEAD only when
    Knative's progress deadline (600 s, scaled) has passed."""
    from labkit.local.aicore import runner as runner_mod

    monkeypatch.setattr(runner_mod, "check_image", lambda image, auths: "sha256:0")
    runner, events = _runner(tmp_path)
    runner.start()
    wait_for(lambda: "dead" in events.kinds(), "the progress deadline")
    runner.stop()
    pendings = events.pendings()
    assert len(pendings) >= 2 and events.kinds()[-1] == "dead", events.calls
    counts = [d["restartCount"] for _, d in pendings]
    assert counts == list(range(1, len(counts) + 1))
    message, details = pendings[-1]
    assert details["reason"] == "CrashLoopBackOff" and "CrashLoopBackOff" in message
    assert "restarting failed container=kserve-container" in details["message"]
    assert "boom" in details["lastState"]["terminated"]["message"]
    reason, why = events.calls[-1][1]
    assert reason == "ProgressDeadlineExceeded" and "boom" in why
    # Each start says "boom", but on a busy machine the deadline can cut the last one off before
    # it speaks: the DEAD message then quotes the last failure (the next test pins that case).
    assert sum("boom" in line for line in events.lines) in (len(counts), len(counts) + 1)


def test_the_deadline_quotes_the_last_failure_when_the_restarted_predictor_says_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI once saw the progress deadline pass while a restarted predictor was still starting:
    DEAD's message must still say why the container failed, not only that it was slow."""
    from labkit.local.aicore import runner as runner_mod

    silent_after_a_crash = (
        "import os, sys, time\n"
        "flag = os.environ['CRASH_ONCE']\n"
        "if not os.path.exists(flag):\n"
        "    open(flag, 'a').close()\n"
        "    print('boom: the model does not load', flush=True)\n"
        "    sys.exit(3)\n"
        "time.sleep(600)\n"
    )
    monkeypatch.setattr(runner_mod, "check_image", lambda image, auths: "sha256:0")
    # A 6 s deadline (scale 0.01): room for the first start to crash even on a busy machine.
    runner, events = _runner(
        tmp_path, env={"CRASH_ONCE": str(tmp_path / "crashed")}, predictor=silent_after_a_crash,
        scale=0.01,
    )  # fmt: skip
    runner.start()
    try:
        wait_for(lambda: "dead" in events.kinds(), "the progress deadline")
    finally:
        runner.stop()
    assert events.kinds() == ["pending", "dead"], events.calls
    reason, why = events.calls[-1][1]
    assert reason == "ProgressDeadlineExceeded", why
    assert why.endswith(
        "(6 s): no output yet; its last failure: the predictor exited with code 3 before it was "
        "ready: boom: the model does not load"
    ), why


def test_a_predictor_that_crashes_after_it_ran_is_restarted_and_runs_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labkit.local.aicore import runner as runner_mod

    monkeypatch.setattr(runner_mod, "check_image", lambda image, auths: "sha256:0")
    runner, events = _runner(tmp_path, env={"CRASH_ONCE": str(tmp_path / "crashed")}, scale=0.01)
    runner.start()
    try:
        wait_for(lambda: events.kinds().count("running") == 2, "RUNNING again after the crash")
    finally:
        runner.stop()
    assert events.kinds() == ["running", "pending", "running"], events.calls
    assert events.pendings()[0][1]["restartCount"] == 1


def test_an_image_that_cannot_be_pulled_stays_pending_with_the_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16, item 4 (SAP docs, Troubleshooting > Deployment: "Deployment remains in status
    PENDING"): a failed pull is retried with back-off, never DEAD; the reason and the missing
    pull secret are events in statusDetails, not log lines."""
    from labkit.local.aicore import runner as runner_mod
    from labkit.local.aicore.runspec import RunFailed

    tries = []

    def refuse(image: Any, auths: Any) -> str:
        tries.append(image)
        raise RunFailed("ErrImagePull", f"failed to resolve reference {image}: not found")

    monkeypatch.setattr(runner_mod, "check_image", refuse)
    runner, events = _runner(tmp_path, secrets=["labkit-registry"])
    runner.start()
    try:
        wait_for(lambda: len(tries) >= 4, "the pull's retries")
    finally:
        runner.stop()
    assert set(events.kinds()) == {"pending"}, events.calls
    first, later = events.pendings()[0], events.pendings()[-1]
    assert first[1]["reason"] == "ErrImagePull" and later[1]["reason"] == "ImagePullBackOff"
    assert later[1]["message"] == 'Back-off pulling image "registry.example/lab/aicore-vllm:v1"'
    assert 'secret "labkit-registry" not found' in later[0]
    reasons = [e["reason"] for e in later[1]["events"]]
    assert reasons == ["FailedToRetrieveImagePullSecret", "Failed", "BackOff"]
    assert not any("pull" in line or "labkit-registry" in line for line in events.lines)
