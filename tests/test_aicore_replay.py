"""A replay of SAP's sample notebooks against a private local AI Core (issue 16, "A replay test").

The AI Core calls of SAP-samples/btp-generative-ai-hub-use-cases, folder 10-byom-oss-llm-ai-core
(`byom-oss-llm-code/00-init-config.ipynb`, `vllm/01-deployment.ipynb`, `vllm/04-cleanup.ipynb`,
whose saved outputs come from real tenants; the llama.cpp and local-ai 01-deployment notebooks
recorded the same loop's every poll), plus the resource group and object store secret calls of
SAP-samples/ai-core-samples, made in their order with SAP's client and the same methods and
arguments; only credentials, ids and the repository URL differ. Each call names the notebook and
cell it replays; each assertion is what the saved output shows.

The predictor: the sample's image (`docker.io/<YOUR_DOCKER_USER>/vllm-openai:ai-core`, built and
pushed by cells 2-4 of vllm/01-deployment, which are not AI Core calls) is not pushed here, so it
cannot be pulled. The replay keeps that image and asserts what a tenant shows for it: UNKNOWN,
then PENDING that stays PENDING (SAP docs, Troubleshooting > Deployment, "Deployment remains in
status PENDING ... check that your Docker Image can be downloaded"), the cause in
`statusDetails`, never in the logs. RUNNING needs a real vLLM start (minutes on this machine);
the lab's own integration tests cover it. The cleanup then stops a PENDING deployment, which a
tenant allows as it does a RUNNING one. Polls run at the local AI Core's compressed pace
(`Config.aicore_time_scale`): the notebooks' 20 s become 20 s times the scale.
"""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aicore_emulator
import pytest
import requests
from aicore_emulator import git_repo, wait_for

from labkit.config import Config
from labkit.local import aicore

service_cfg = aicore_emulator.service_cfg

TEMPLATE = Path(__file__).parent / "tenant" / "templates" / "vllm.yaml"
APP_PATH = "10-byom-oss-llm-ai-core/byom-oss-llm-templates"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
DEPLOYMENT_ID = re.compile(r"d[0-9a-f]{15}")  # d2205e6da6740a73, dc8777fe661ff053, ...
ISO_SECONDS_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")  # 2024-05-09T08:36:31Z
PENDING_POLLS = 4  # how many PENDING answers the bounded status loop waits for


def _config(repo: Path, key: dict[str, Any]) -> dict[str, Any]:
    """byom-oss-llm-code/config.template.json, filled in (the ids as the sample's own)."""
    return {
        "name": "byom-open-source-llms",
        "resource_group": "oss-llm",
        "ai_core_service_key": key,
        "docker_secret": {
            "name": "docker-secret",
            "data": {
                ".dockerconfigjson": json.dumps(
                    {"auths": {"docker.io": {"username": "replay", "password": "replay-token"}}}
                )
            },
        },
        "git_repo": {"repo_url": f"file://{repo}", "user": "replay", "access_token": "unused"},
        "application": {"path_in_repo": APP_PATH, "revision": "HEAD"},
        "scenarios": [{"name": "vllm", "id": "vllm"}],
        "configurations": [
            {
                "name": "vllm-mistral",
                "scenario_id": "vllm",
                "executable_id": "vllm",
                "input_artifacts": [],
                "parameters": [
                    {"key": "modelName", "value": "TheBloke/Mistral-7B-Instruct-v0.2-AWQ"},
                    {"key": "dataType", "value": "half"},
                    {"key": "gpuMemoryUtilization", "value": "0.95"},
                    {"key": "maxTokenLen", "value": "2048"},
                    {"key": "maxNumBatchedTokens", "value": "2048"},
                    {"key": "maxNumSeqs", "value": "2048"},
                    {"key": "quantization", "value": "awq"},
                    {"key": "resourcePlan", "value": "infer.s"},
                ],
            }
        ],
    }


def _client(config: dict[str, Any]) -> Any:
    """00-init-config cell 7 (and vllm/01-deployment cell 8, vllm/04-cleanup cell 4)."""
    from ai_core_sdk.ai_core_v2_client import AICoreV2Client

    ai_core_sk = config["ai_core_service_key"]
    return AICoreV2Client(base_url=ai_core_sk.get("serviceurls").get("AI_API_URL")+"/v2",
                          auth_url=ai_core_sk.get("url")+"/oauth/token",
                          client_id=ai_core_sk.get("clientid"),
                          client_secret=ai_core_sk.get("clientsecret"),
                          resource_group=config["resource_group"])  # fmt: skip


def _init_config(config: dict[str, Any], scale: float) -> str:
    """00-init-config.ipynb: resource group, secrets, repository, application, configuration.
    Returns the configuration id (what the notebook writes to vllm/env.json)."""
    from ai_api_client_sdk.exception import AIAPINotFoundException
    from ai_core_sdk.models import ParameterBinding

    resource_group, name = config["resource_group"], config["name"]
    client = _client(config)

    # 00-init-config cell 9; saved output: {'resource_group_id': 'oss-llm-2', 'labels': None,
    # 'status': None, 'created_at': None}.
    response = client.resource_groups.create(resource_group_id=resource_group)
    assert response.__dict__ == {
        "resource_group_id": resource_group, "labels": None, "status": None, "created_at": None}  # fmt: skip
    # ai-core-samples 06_Cloud_Connector_Demo/demo.ipynb, "Check if resource group is available";
    # saved output: "The default resource group is PROVISIONED".
    group = wait_for(lambda: f"{(g := client.resource_groups.get(resource_group)).status}"
                     == "PROVISIONED" and g, "the resource group to be PROVISIONED")  # fmt: skip
    assert f"The {group.resource_group_id} resource group is {group.status}" == (
        f"The {resource_group} resource group is PROVISIONED"
    )

    # ai-core-samples tutorial 01_04 (ingest-data-house-predictor) cell 18: the object store
    # secret `default` of the resource group (no saved output).
    response = client.object_store_secrets.create(
        name="default", path_prefix="example-dataset/house-price-toy/model", type="S3",
        data={"AWS_ACCESS_KEY_ID": "replay", "AWS_SECRET_ACCESS_KEY": "replay"},
        bucket="replay-bucket", region="eu-central-1", endpoint="s3-eu-central-1.amazonaws.com",
        resource_group=resource_group,
    )  # fmt: skip
    assert isinstance(response.message, str) and response.message

    # 00-init-config cell 11; saved output: {'message': 'secret has been created'}.
    docker_secret = config["docker_secret"]
    response = client.docker_registry_secrets.create(
        name=docker_secret["name"], data=docker_secret["data"]
    )
    assert response.__dict__ == {"message": "secret has been created"}

    # 00-init-config cell 14; saved output: "Message: Repository has been on-boarded." and
    # "Id: byom-open-source-llms, Message: Application has been successfully created."
    repo_config = config["git_repo"]
    repository = client.repositories.create(name, url=repo_config.get("repo_url"),
                                            username=repo_config.get("user"),
                                            password=repo_config.get("access_token"))  # fmt: skip
    assert str(repository) == "Message: Repository has been on-boarded."
    app_config = config["application"]
    application = client.applications.create(revision=app_config.get("revision", "HEAD"),
                                             path=app_config.get("path_in_repo"),
                                             application_name=name, repository_name=name)  # fmt: skip
    assert str(application) == f"Id: {name}, Message: Application has been successfully created."

    # 00-init-config cell 17 ran in a later kernel (execution count 3 after 64), after the first
    # sync. Right after the creation a tenant has no status yet (SAP's AI Core set-up tutorial:
    # "KeyError: 'operationState'" ... "wait for 3 minutes"): the replay waits as it advises.
    with pytest.raises(AIAPINotFoundException):
        client.applications.get_status(name)
    wait_for(lambda: _has_status(client, name), "the application's first sync")
    # Cell 17 as it is (its 20 s interval at the local pace); saved output: "Health Status:
    # Healthy, Sync Status: Synced, Sync Finished at: 2024-05-09T08:36:31Z", "Application synced",
    # and "Scenario {...} synced" for each scenario.
    max_tries, i, interval_s = 10, 0, 20 * scale
    printed = []
    while i < max_tries:
        i = i + 1
        app_status = client.applications.get_status(name)
        printed.append((app_status.health_status, app_status.sync_status,
                        app_status.sync_finished_at))  # fmt: skip
        if app_status.sync_status == "Synced":
            break
        client.applications.refresh(name)
        time.sleep(interval_s)
    assert app_status.sync_status == "Synced", printed
    assert printed[-1][0] == "Healthy" and ISO_SECONDS_Z.fullmatch(printed[-1][2]), printed
    scenarios = client.scenario.query()
    for scenario in config["scenarios"]:
        assert scenario["name"] in [s.name for s in scenarios.resources]

    # 00-init-config cell 21: an artifact (the saved output's configurations had a dummy model
    # artifact; saved output: {'id': '<uuid>', 'message': 'Artifact acknowledged', 'url':
    # 'ai://object-store-secret/Dummy'}), then one configuration per entry; saved output:
    # "Id: <uuid>, Message: Configuration created".
    from ai_api_client_sdk.models.artifact import Artifact

    artifact = client.artifact.create(name="dummy-model", kind=Artifact.Kind.MODEL,
                                      url="ai://object-store-secret/Dummy", scenario_id="vllm",
                                      description="a placeholder model")  # fmt: skip
    assert set(artifact.__dict__) == {"id", "message", "url"}
    assert UUID.fullmatch(artifact.id) and artifact.message == "Artifact acknowledged"
    assert artifact.url == "ai://object-store-secret/Dummy"
    config_id = ""
    for conf in config["configurations"]:
        parameter_bindings = [ParameterBinding(key=pb["key"], value=pb["value"])
                              for pb in conf["parameters"]]  # fmt: skip
        configuration = client.configuration.create(
            name=conf["name"], scenario_id=conf["scenario_id"],
            executable_id=conf["executable_id"], parameter_bindings=parameter_bindings,
            input_artifact_bindings=[])  # fmt: skip
        assert UUID.fullmatch(configuration.id)
        assert str(configuration) == f"Id: {configuration.id}, Message: Configuration created"
        config_id = configuration.id
    return config_id


def _has_status(client: Any, name: str) -> bool:
    from ai_api_client_sdk.exception import AIAPINotFoundException

    try:
        client.applications.get_status(name)
    except AIAPINotFoundException:
        return False
    return True


def _current_time() -> str:
    """vllm/01-deployment cell 13's get_current_time()."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _deploy(config: dict[str, Any], configuration_id: str, scale: float) -> str:
    """vllm/01-deployment.ipynb: the deployment and its status loop. Returns its id."""
    from ai_core_sdk.models import Status

    resource_group = config["resource_group"]
    client = _client(config)
    base_url = config["ai_core_service_key"]["serviceurls"]["AI_API_URL"] + "/v2/lm"  # cell 8
    token = client.rest_client.get_token()  # cell 9
    headers = {"Authorization": token, "ai-resource-group": resource_group,
               "Content-Type": "application/json"}  # fmt: skip

    # Cell 17; saved output: {'id': 'd2205e6da6740a73', 'message': 'Deployment scheduled.',
    # 'deployment_url': '', 'status': <Status.UNKNOWN: 'UNKNOWN'>, 'ttl': None}.
    response = client.deployment.create(configuration_id=configuration_id,
                                        resource_group=resource_group)  # fmt: skip
    last_check_time = _current_time()
    deployment_id, status = response.id, response.status
    assert DEPLOYMENT_ID.fullmatch(deployment_id)
    assert response.__dict__ == {"id": deployment_id, "message": "Deployment scheduled.",
                                 "deployment_url": "", "status": Status.UNKNOWN, "ttl": None}  # fmt: skip

    # Cell 19 as it is, bounded (the image cannot be pulled here; see the module's docstring).
    # Saved outputs (llama.cpp and local-ai/01-deployment, the same loop): every poll of the
    # deployment answers its status, UNKNOWN a few times, then PENDING until RUNNING; the logs
    # answer the tenant's not-found error at first, then {"data": {"result": [...]}}.
    deployment_url = f"{base_url}/deployments/{deployment_id}"
    deployment_log_url = f"{deployment_url}/logs?start="
    interval_s = 20 * scale
    statuses, logs = [], []
    while status != "RUNNING" and status != "DEAD" and statuses.count("PENDING") < PENDING_POLLS:
        current_time = _current_time()
        response = requests.get(url=deployment_url, headers=headers)
        resp = response.json()
        status = resp["status"]
        statuses.append(status)
        response_log = requests.get(url=f"{deployment_log_url}{last_check_time}", headers=headers)
        last_check_time = current_time
        logs.append(json.loads(response_log.text))
        time.sleep(interval_s)
    assert re.fullmatch(r"(UNKNOWN )*(PENDING )+", " ".join(statuses) + " "), statuses
    not_found = {"code": "05011000", "target": f"/api/v4alpha/deployments/{deployment_id}/logs",
                 "message": f"DeploymentNotFoundError: Deployment {deployment_id} not found."}  # fmt: skip
    for answer in logs:
        assert list(answer) == ["data"] or answer["error"].items() >= not_found.items(), answer
        assert list(answer.get("data", {"result": []})) == ["result"], answer
    assert "error" in logs[0] and "data" in logs[-1], logs  # the first poll came right after
    # What a tenant shows for an image it cannot pull: the cause in statusDetails, the logs
    # silent about it.
    details = resp.get("statusDetails") or {}
    assert details.get("reason") in ("ErrImagePull", "ImagePullBackOff"), resp
    assert not any(
        "vllm-openai" in r["msg"] for a in logs for r in a.get("data", {}).get("result", [])
    )
    return deployment_id


def _cleanup(config: dict[str, Any], deployment_id: str, scale: float) -> None:
    """vllm/04-cleanup.ipynb cell 9: stop (unless UNKNOWN), wait for STOPPED, delete."""
    from ai_core_sdk.models import Status

    resource_group = config["resource_group"]
    client = _client(config)
    deployment = client.deployment.get(deployment_id, resource_group=resource_group)
    seen = []
    if deployment.status != Status.UNKNOWN:
        client.deployment.modify(deployment_id, target_status=Status.STOPPED,
                                 resource_group=resource_group)  # fmt: skip
        interval_s = 20 * scale
        status = None
        while status != Status.STOPPED:
            time.sleep(interval_s)
            deployment = client.deployment.get(deployment_id, resource_group=resource_group)
            status = deployment.status
            seen.append(status)
    # Saved output: "Deployment status: Status.RUNNING" 8 or 9 times, then Status.STOPPED, never
    # STOPPING; here the deployment was PENDING, and stays so until it is STOPPED.
    assert seen[-1] == Status.STOPPED and set(seen[:-1]) == {Status.PENDING}, seen
    response = client.deployment.delete(deployment_id, resource_group=resource_group)
    # Saved output: "Id: d2205e6da6740a73, Message: Deletion scheduled".
    assert str(response) == f"Id: {deployment_id}, Message: Deletion scheduled"


@pytest.mark.integration
def test_sap_sample_notebooks_replay_against_the_local_ai_core(
    service_cfg: Config, tmp_path: Path
) -> None:
    aicore.up(service_cfg, progress=False)
    key = json.loads(aicore.service_key_file(service_cfg).read_text())
    repo = tmp_path / "btp-generative-ai-hub-use-cases"
    git_repo(repo, {f"{APP_PATH}/vllm-template.yaml": TEMPLATE.read_text()})
    config = _config(repo, key)
    scale = service_cfg.aicore_time_scale
    assert scale < 1, "the replay runs at the compressed pace"
    configuration_id = _init_config(config, scale)
    deployment_id = _deploy(config, configuration_id, scale)
    _cleanup(config, deployment_id, scale)
