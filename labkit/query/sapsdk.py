"""Step 07 the way SAP applications ask a model: SAP's generative AI SDK (``sap-ai-sdk-gen``).

The lab's scenario is registered as a foundation-model scenario of the SDK's proxy client, as
SAP's BYOM sample does (SAP-samples/btp-generative-ai-hub-use-cases,
10-byom-oss-llm-ai-core/byom-oss-llm-code/ollama/02-ollama-sap-genai-hub-sdk.ipynb, cell
"5.0 Register the scenario as a foundation model scenario"):
``GenAIHubProxyClient.add_foundation_model_scenario(scenario_id=..., config_names=...,
prediction_url_suffix="/v1/chat/completions")``. The proxy client then lists the RUNNING
deployments of that scenario (``GET /lm/deployments?status=RUNNING&scenarioId=...``), keeps
those whose configuration name matches, and reads each one's configuration
(``GET /lm/configurations/{id}``) for the model name. The deployment is then asked through the
SDK's OpenAI-like client and its LangChain ``ChatOpenAI``, with the lab's token and resource
group (SAP's ``AICoreV2Client`` of ``labkit.aicore``).

Needs the ``sapsdk`` extra (``pip install -e '.[sapsdk]'``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from labkit.config import Config
from labkit.errors import StepError
from labkit.query.common import MAX_TOKENS, QueryError
from labkit.state import State
from labkit.util import html

PREDICTION_SUFFIX = "/v1/chat/completions"  # what SAP's BYOM sample registers for vLLM/Ollama
CHAT_PATH = "/chat/completions"
# The configuration's parameter the model name comes from, snake-cased as the SDK reads
# parameterBindings (gen_ai_hub/proxy/gen_ai_hub_proxy/client.py, config_parameters): the
# lab's template binds servedModelName (vLLM --served-model-name; empty means modelId).
SERVED_PARAMETER = "served_model_name"
MODEL_ID_PARAMETER = "model_id"
CHAIN_TEMPLATE = "What is the capital of {country}? Answer in one word."


def _require_sdk() -> None:
    try:
        import gen_ai_hub  # noqa: F401
        import langchain_core  # noqa: F401
    except ImportError as exc:
        raise QueryError(
            f"SAP's generative AI SDK is not installed ({exc.name})",
            "install the lab's sapsdk extra: `uv pip install -e '.[sapsdk]'` (make install does)",
        ) from exc


@functools.cache
def proxy_class() -> type:
    """``GenAIHubProxyClient`` with the lab's scenarios only and the deployment URL fixed.

    sap-ai-sdk-gen 7.4.1 keeps a scenario's ``prediction_url_suffix`` but its OpenAI client
    posts to the deployment URL + ``chat/completions`` (gen_ai_hub/proxy/native/openai/
    clients.py, ``_prepare_url``), which vLLM serves under ``/v1``: the suffix's part before
    ``/chat/completions`` goes onto the URL. A deployment whose configuration leaves
    servedModelName empty is named by its modelId, as vLLM names it.
    """
    _require_sdk()
    from gen_ai_hub.proxy.gen_ai_hub_proxy.client import (
        Deployment,
        GenAIHubProxyClient,
        config_parameters,
    )

    class LabProxyClient(GenAIHubProxyClient):
        # Its own list, so SAP's default 'foundation-models' scenario is not asked.
        foundational_model_scenarios = []  # type: ignore[assignment]  # noqa: RUF012

        def _create_deployment(self, deployment: Any, scenario_info: Any) -> Any:
            name = scenario_info.model_name_parameter
            params = config_parameters(name, self.ai_core_client, deployment)
            extra = params["additonal_parameters"]  # (sic) the SDK's spelling
            suffix = scenario_info.prediction_url_suffix or ""
            base = suffix[: -len(CHAT_PATH)] if suffix.endswith(CHAT_PATH) else ""
            return Deployment(
                url=deployment.deployment_url.rstrip("/") + base,
                deployment_id=deployment.id,
                created_at=deployment.created_at,
                config_id=deployment.configuration_id,
                config_name=deployment.configuration_name,
                custom_prediction_suffix=scenario_info.prediction_url_suffix,
                model_name=params["model_name"] or extra.get(MODEL_ID_PARAMETER),
                additonal_parameters=extra,
            )

    return LabProxyClient


def langchain_openai() -> Any:
    """The SDK's ``gen_ai_hub.proxy.langchain.openai`` (``ChatOpenAI``).

    Its package's ``__init__`` also imports the Amazon and Google integrations, which need the
    SDK's ``amazon`` and ``google`` extras; ``amazon`` (aiobotocore) pins botocore below 1.44,
    which the lab's boto3==1.44.8 excludes. Without them the OpenAI module is loaded alone, under
    a bare package that holds only it.
    """
    import importlib
    import importlib.util
    import sys
    import types

    _require_sdk()
    name = "gen_ai_hub.proxy.langchain"
    try:
        return importlib.import_module(f"{name}.openai")
    except ImportError:  # the amazon or google integration is missing
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.submodule_search_locations is not None
        package = types.ModuleType(name)
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        sys.modules[name] = package
        return importlib.import_module(f"{name}.openai")


def register(
    scenario_id: str, config_names: str | Sequence[str] = "*", suffix: str = PREDICTION_SUFFIX
) -> None:
    """Register ``scenario_id`` as a foundation-model scenario of the lab's proxy client (once)."""
    cls = proxy_class()
    names = [config_names] if isinstance(config_names, str) else list(config_names)
    for known in cls.foundational_model_scenarios:
        if (known.scenario_id, known.config_names, known.prediction_url_suffix) == (
            scenario_id,
            names,
            suffix,
        ):
            return
    cls.add_foundation_model_scenario(
        scenario_id=scenario_id,
        config_names=names,
        prediction_url_suffix=suffix,
        model_name_parameter=SERVED_PARAMETER,
    )


def proxy_client(ai_core_client: Any) -> Any:
    """The lab's proxy client on SAP's ``AICoreV2Client`` (its token and resource group)."""
    return proxy_class()(ai_core_client=ai_core_client)


@dataclass
class SdkAnswer:
    """One answer through the SDK: how it was asked, the question, the text, the seconds."""

    via: str
    question: str
    text: str
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        # "answer", as `labkit query --json` without the SDK (docs/architecture.md).
        return {"via": self.via, "question": self.question, "answer": self.text,
                "seconds": round(self.seconds, 3)}  # fmt: skip

    def _repr_html_(self) -> str:
        return html.fields([("via", html.esc(self.via)), ("question", html.esc(self.question)),
                            ("answer", html.esc(self.text)), ("seconds", f"{self.seconds:.2f}")])  # fmt: skip


@dataclass
class SapSdk:
    """The lab's deployment as SAP's SDK sees it: the proxy client and the deployment id."""

    proxy: Any
    deployment_id: str
    max_tokens: int = MAX_TOKENS
    answers: list[SdkAnswer] = field(default_factory=list)

    @property
    def deployment(self) -> Any:
        """The SDK's record of the deployment (URL, configuration, model name)."""
        return self.proxy.select_deployment(deployment_id=self.deployment_id)

    def __repr__(self) -> str:
        return f"SapSdk(deployment_id={self.deployment_id!r})"

    def _repr_html_(self) -> str:
        d = self.deployment
        return html.fields([("deployment", html.esc(d.deployment_id)),
                            ("configuration", html.esc(d.config_name)),
                            ("model", html.esc(d.model_name)), ("URL", html.esc(d.url))])  # fmt: skip

    def _messages(self, question: str, system: str | None) -> list[dict[str, str]]:
        return [*([{"role": "system", "content": system}] if system else []),
                {"role": "user", "content": question}]  # fmt: skip

    def _keep(self, via: str, question: str, text: str, started: float) -> SdkAnswer:
        answer = SdkAnswer(via, question, text, time.perf_counter() - started)
        self.answers.append(answer)
        return answer

    def _openai(self) -> Any:
        from gen_ai_hub.proxy.native.openai import OpenAI

        return OpenAI(proxy_client=self.proxy)

    def chat(self, question: str, *, system: str | None = None, temperature: float = 0.0,
             max_tokens: int | None = None) -> SdkAnswer:  # fmt: skip
        """One chat completion through the SDK's OpenAI-like client."""
        started = time.perf_counter()
        reply = self._openai().chat.completions.create(
            deployment_id=self.deployment_id, messages=self._messages(question, system),
            max_tokens=max_tokens or self.max_tokens, temperature=temperature,
        )  # fmt: skip
        return self._keep("OpenAI-like", question, reply.choices[0].message.content or "", started)

    def stream(self, question: str, *, on_text: Callable[[str], Any] | None = None,
               system: str | None = None, temperature: float = 0.0,
               max_tokens: int | None = None) -> SdkAnswer:  # fmt: skip
        """A streamed chat completion; ``on_text`` gets each piece as it arrives."""
        started = time.perf_counter()
        chunks = self._openai().chat.completions.create(
            deployment_id=self.deployment_id, messages=self._messages(question, system),
            max_tokens=max_tokens or self.max_tokens, temperature=temperature, stream=True,
        )  # fmt: skip
        pieces = []
        for chunk in chunks:
            piece = chunk.choices[0].delta.content if chunk.choices else None
            if piece:
                pieces.append(piece)
                if on_text:
                    on_text(piece)
        return self._keep("OpenAI-like, streamed", question, "".join(pieces), started)

    def llm(self, *, temperature: float = 0.0, max_tokens: int | None = None) -> Any:
        """The SDK's LangChain ``ChatOpenAI`` for the deployment."""
        return langchain_openai().ChatOpenAI(proxy_client=self.proxy, deployment_id=self.deployment_id,
                          temperature=temperature, max_tokens=max_tokens or self.max_tokens)  # fmt: skip

    def chain(self, template: str = CHAIN_TEMPLATE, **variables: str) -> SdkAnswer:
        """A LangChain chain, ``PromptTemplate(template) | ChatOpenAI``, invoked on ``variables``."""
        from langchain_core.prompts import PromptTemplate

        prompt = PromptTemplate.from_template(template)
        started = time.perf_counter()
        reply = (prompt | self.llm()).invoke(variables)
        return self._keep(
            "LangChain chain", prompt.format(**variables), str(reply.content), started
        )


def sap_sdk(cfg: Config, state: State | None = None, *, max_tokens: int = MAX_TOKENS) -> SapSdk:
    """The deployment of step 06 through SAP's SDK: its scenario registered, the lab's client."""
    deploy = (state or State(cfg.state_file)).get("deploy")
    if not deploy or not deploy.get("deployment_id") or not deploy.get("scenario_id"):
        raise StepError(
            "no deployment recorded (the 'deploy' step has not run)",
            "run step 06 (notebooks/06_deploy.ipynb or `labkit deploy`)",
        )
    from labkit import aicore

    register(deploy["scenario_id"])
    ai = aicore.connect(cfg, resource_group=deploy.get("resource_group") or None)
    return SapSdk(proxy_client(ai.client), deploy["deployment_id"], max_tokens=max_tokens)


@dataclass
class Compared:
    """The same questions through the OpenAI client and through SAP's SDK, side by side."""

    rows: list[tuple[str, str, str]]

    def _repr_html_(self) -> str:
        cells = [tuple(html.esc(c) for c in r) for r in self.rows]
        return html.table(("question", "OpenAI client", "SAP's SDK"), cells)


def compare(client: Any, sdk: SapSdk, questions: Sequence[str]) -> Compared:
    """Each question asked through the lab's OpenAI client and the SDK's OpenAI-like client."""
    return Compared([(q, client.chat(q, max_tokens=sdk.max_tokens).text, sdk.chat(q).text)
                     for q in questions])  # fmt: skip
