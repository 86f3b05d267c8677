"""The local AI Core's /v2/lm catalogue (labkit.local.aicore.lm): artifacts and configurations,
and their errors."""

from __future__ import annotations

from pathlib import Path

import aicore_emulator
import pytest
from aicore_emulator import (
    EXECUTABLE,
    MODEL_ID,
    SCENARIO,
    Emulator,
    onboard,
    validate,
)

# The fixtures of tests/aicore_emulator.py this file uses.
emulator = aicore_emulator.emulator


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


def test_meta_answers_as_the_spec_says(emulator: Emulator) -> None:
    """Issue 16, item 13: every version in /lm/meta is a MetaVersion (x.y.z)."""
    resp = emulator.get("/v2/lm/meta")
    assert resp.status_code == 200
    validate(resp.json(), "/lm/meta", "get", 200)
    assert resp.json()["extensions"]["resourceGroups"]["version"].count(".") == 2
