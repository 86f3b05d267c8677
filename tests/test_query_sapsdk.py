"""Step 07 through SAP's generative AI SDK (labkit/query/sapsdk.py): the lab's scenario
registered as a foundation-model scenario, the deployment asked through the SDK's OpenAI-like
client and LangChain, against one deployment of the default model on a local AI Core."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aicore_emulator
import pytest
from aicore_emulator import SCENARIO, VLLM_WAIT_S, up_serving_default_model, wait_for
from labkit_cli import labkit

from labkit.config import Config, load_config
from labkit.local import aicore
from labkit.query import sapsdk
from labkit.state import State
from labkit.util.net import free_port

pytest.importorskip("gen_ai_hub", reason="needs the sapsdk extra")

s3_cfg = aicore_emulator.s3_cfg
registry_image = aicore_emulator.registry_image
QUESTION = "What is the capital of France? Answer in one word."


@pytest.fixture(scope="module")
def deployed(
    tmp_path_factory: pytest.TempPathFactory, default_tarball: Any, s3_cfg: Config,
    registry_image: str,
) -> Iterator[tuple[Config, Any]]:  # fmt: skip
    """A local AI Core of this module's own serving the default model (vLLM on the host), one
    RUNNING deployment, and a lab whose state records it as step 06 does: (cfg, deployment)."""
    tmp = tmp_path_factory.mktemp("sapsdk")
    cfg = load_config(local_dir=tmp / "local", lab_dir=tmp / "lab", aicore_port=free_port(),
                      aicore_token_port=free_port(), aicore_runner="host")  # fmt: skip
    _, client, conf = up_serving_default_model(
        cfg, tmp, s3_cfg, default_tarball.path, registry_image
    )
    try:
        created = client.deployment.create(conf.id)

        def running() -> Any:
            dep = client.deployment.get(created.id)
            assert dep.status.value != "DEAD", dep.status_message
            return dep if dep.status.value == "RUNNING" else None

        dep = wait_for(running, "the deployment to run", VLLM_WAIT_S)
        State(cfg.state_file).record("deploy", {
            "deployment_id": dep.id, "scenario_id": SCENARIO, "resource_group": "default",
            "deployment_url": dep.deployment_url, "status": "RUNNING",
        })  # fmt: skip
        yield cfg, dep
    finally:
        aicore.down(cfg)


@pytest.fixture(scope="module")
def sdk(deployed: tuple[Config, Any]) -> sapsdk.SapSdk:
    cfg, _ = deployed
    return sapsdk.sap_sdk(cfg, max_tokens=16)


@pytest.mark.integration
def test_the_sdk_finds_the_deployment_of_the_lab_scenario(sdk: sapsdk.SapSdk, deployed) -> None:
    _, dep = deployed
    found = sdk.deployment
    assert found.deployment_id == dep.id and found.config_name == "smollm2-cpu"
    assert found.url == dep.deployment_url + "/v1"  # the registered suffix's /v1
    assert found.model_name == aicore_emulator.MODEL_ID  # servedModelName unset: modelId


@pytest.mark.integration
def test_openai_like_chat_answers(sdk: sapsdk.SapSdk) -> None:
    assert "Paris" in sdk.chat(QUESTION).text


@pytest.mark.integration
def test_openai_like_streaming_answers_in_pieces(sdk: sapsdk.SapSdk) -> None:
    pieces: list[str] = []
    answer = sdk.stream(QUESTION, on_text=pieces.append)
    assert "Paris" in answer.text and len(pieces) > 1 and "".join(pieces) == answer.text


@pytest.mark.integration
def test_a_langchain_chain_answers(sdk: sapsdk.SapSdk) -> None:
    answer = sdk.chain("What is the capital of {country}? Answer in one word.", country="France")
    assert "Paris" in answer.text and answer.question.endswith("France? Answer in one word.")


@pytest.mark.integration
def test_another_scenario_does_not_pick_up_the_deployment(
    deployed, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labkit import aicore as lab_aicore

    cfg, dep = deployed
    cls = sapsdk.proxy_class()
    monkeypatch.setattr(cls, "foundational_model_scenarios", [])
    client = lab_aicore.connect(cfg, resource_group="default").client
    sapsdk.register("another-scenario")
    assert sapsdk.proxy_client(client).update_deployments() == []
    sapsdk.register(SCENARIO, config_names="other-config*")  # the lab's scenario, other names
    assert sapsdk.proxy_client(client).update_deployments() == []
    sapsdk.register(SCENARIO)
    assert [d.deployment_id for d in sapsdk.proxy_client(client).update_deployments()] == [dep.id]


def test_no_deployment_recorded_says_what_to_run(tmp_path: Path) -> None:
    from labkit.errors import StepError

    with pytest.raises(StepError, match="step 06"):
        sapsdk.sap_sdk(load_config(lab_dir=tmp_path / "lab"))


def _cli_env(cfg: Config) -> dict[str, str | None]:
    return {"LABKIT_LAB_DIR": str(cfg.lab_dir), "LABKIT_LOCAL_DIR": str(cfg.local_dir),
            "LABKIT_AICORE_PORT": str(cfg.aicore_port),
            "LABKIT_AICORE_TOKEN_PORT": str(cfg.aicore_token_port), "LABKIT_PROFILE": "local"}  # fmt: skip


@pytest.mark.integration
def test_labkit_query_via_sap_sdk(deployed) -> None:
    cfg, dep = deployed
    env = _cli_env(cfg)
    done = labkit("query", "chat", QUESTION, "--via", "sap-sdk", "--max-tokens", "16", env=env)
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout and "SAP's SDK" in done.stderr
    done = labkit("query", "chat", QUESTION, "--via", "sap-sdk", "--stream", "--json", env=env)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert "Paris" in answer["answer"] and answer["deployment_id"] == dep.id


def test_labkit_query_via_sap_sdk_refuses_a_url() -> None:
    done = labkit("query", "chat", QUESTION, "--via", "sap-sdk", "--url", "http://127.0.0.1:1")
    assert done.returncode != 0 and "drop --url" in done.stderr


@pytest.mark.integration
def test_labkit_query_without_the_sdk_asks_the_recorded_deployment(deployed) -> None:
    """The same deployment through the lab's own client: no --url, so `labkit query` takes the
    deployment URL step 06 recorded, with the local AI Core's token and resource group."""
    cfg, _ = deployed
    env = _cli_env(cfg)
    done = labkit("query", "chat", QUESTION, "--max-tokens", "16", "--json", env=env)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert "Paris" in answer["answer"] and answer["kind"] == "chat", answer
    done = labkit("query", "generate", "The capital of France is", "--max-tokens", "4", env=env)
    assert done.returncode == 0 and "Paris" in done.stdout, (done.stdout, done.stderr)
