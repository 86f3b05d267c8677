"""The local AI Core's deployments (labkit.local.aicore.deployments): restarts that lose nothing,
ttl, the stop and delete rules, and the whole lifecycle with SAP's client on the default model."""

from __future__ import annotations

import asyncio
import copy
import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import aicore_emulator
import httpx
import pytest
from aicore_emulator import (
    EXECUTABLE,
    MODEL_ID,
    SCENARIO,
    VLLM_WAIT_S,
    Emulator,
    _port_free,
    deploy,
    final_status,
    log_text,
    onboard,
    sdk_client,
    up_serving_default_model,
    validate,
    wait_for,
)

from labkit.config import Config
from labkit.local import aicore
from labkit.local.aicore import common as common_mod
from labkit.local.aicore import processes as processes_mod
from labkit.local.aicore.runspec import RunSpec
from labkit.util.procs import group_alive

# The fixtures of tests/aicore_emulator.py this file uses.
emulator = aicore_emulator.emulator
s3_cfg = aicore_emulator.s3_cfg
lab_image = aicore_emulator.lab_image
service_cfg = aicore_emulator.service_cfg


def test_state_survives_a_restart_and_deployments_are_recovered(
    tmp_path: Path, process_groups: Any
) -> None:
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
    orphan = process_groups.popen(["sleep", "600"])
    data = json.loads((state / "state.json").read_text())
    spec = RunSpec(
        image="localhost:1/none:v1", env={}, container_port=8080, storage_uri="ai://missing/x.tar"
    )
    common = {"configurationId": conf["id"], "configurationName": "c", "executableId": EXECUTABLE, "scenarioId": SCENARIO,
              "createdAt": "2024-01-01T00:00:00Z", "modifiedAt": "2024-01-01T00:00:00Z", "deploymentUrl": "", "_run": spec.to_dict()}  # fmt: skip
    data["deployments"]["default"] = {
        "drunning0000000a": {**common, "id": "drunning0000000a", "status": "RUNNING", "targetStatus": "RUNNING",
                             "_process": {"pgid": orphan.pid, "start": processes_mod.process_start_ticks(orphan.pid), "port": 1}},
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


def test_ttl_deletes_the_deployment(emulator: Emulator, tmp_path: Path) -> None:
    onboard(emulator, tmp_path)
    dep_id = deploy(emulator, "ai://missing/x.tar", "localhost:1/none:v1", ttl="5m")
    dep = final_status(emulator, dep_id, ("DEAD",))
    assert dep["ttl"] == "5m"
    with emulator.core.store.lock:  # as if it had been created six minutes ago
        emulator.core.store.data["deployments"]["default"][dep_id]["createdAt"] = common_mod.iso(
            common_mod.now() - timedelta(minutes=6)
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
    key, client, conf = up_serving_default_model(
        cfg, tmp_path, s3_cfg, default_tarball.path, lab_image
    )
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
