"""Step 06 as one run: read what step 05 recorded, then each phase (setup and sync, secrets,
artifact and configuration, deployment, the wait for RUNNING) get-or-creates its objects and
records them in the lab state (key ``deploy``) as it goes."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labkit.aicore.client import AICore, connect
from labkit.aicore.errors import DeploymentFailed
from labkit.aicore.names import check_ttl
from labkit.aicore.resources import (
    DEFAULT_APPLICATION,
    DEFAULT_REPOSITORY,
    ensure_application,
    ensure_artifact,
    ensure_configuration,
    ensure_deployment,
    ensure_docker_registry_secret,
    ensure_object_store_secret,
    ensure_repository,
    ensure_resource_group,
    template_repo_url,
)
from labkit.aicore.results import DeploymentResult, Resource, ResourceTable, _known
from labkit.aicore.status import StatusView
from labkit.aicore.sync import DEFAULT_SYNC_TIMEOUT_S, SyncResult, sync_templates
from labkit.aicore.waiting import DEFAULT_POLL_S, DEFAULT_TIMEOUT_S, wait_running
from labkit.config import Config
from labkit.errors import ConfigError
from labkit.state import State

STATE_KEY = "deploy"
DEFAULT_ARTIFACT_KEY = "model"


# --- what step 05 recorded -----------------------------------------------------------------------


@dataclass
class TemplateInputs:
    """What the deployment needs from step 05: executable, scenario, parameter values."""

    executable_id: str
    scenario_id: str
    parameters: dict[str, str]
    artifact_key: str = DEFAULT_ARTIFACT_KEY
    commit: str = ""
    repo_dir: str = ""
    folder: str = ""  # the repo folder the application syncs


def template_inputs(template: Mapping[str, Any], cfg: Config) -> TemplateInputs:
    """Step 05's recorded result, read for the deployment."""
    executable = template.get("executable_id") or template.get("executableId")
    if not executable:
        raise ConfigError(
            "step 05's result names no executable",
            "run notebooks/05_author_serving_template.ipynb again",
        )
    scenario = template.get("scenario_id") or template.get("scenarioId") or cfg.scenario
    bindings = template.get("bindings") or {}
    params: dict[str, str] = {}
    listed = bindings.get("parameterBindings") or template.get("parameter_bindings")
    if listed:
        params = {str(b["key"]): str(b["value"]) for b in listed}
    elif isinstance(template.get("parameters"), Mapping):
        params = {str(k): str(v) for k, v in template["parameters"].items()}
    artifact_key = DEFAULT_ARTIFACT_KEY
    artifact_bindings = bindings.get("inputArtifactBindings") or []
    if artifact_bindings:
        artifact_key = str(artifact_bindings[0]["key"])
    elif template.get("input_artifacts"):
        artifact_key = str(next(iter(template["input_artifacts"])))
    return TemplateInputs(
        executable_id=str(executable),
        scenario_id=str(scenario),
        parameters=params,
        artifact_key=artifact_key,
        commit=str(template.get("commit") or ""),
        repo_dir=str(template.get("repo_dir") or ""),
        folder=Path(str(template["path_in_repo"])).parent.as_posix()
        if template.get("path_in_repo")
        else "",
    )


def _artifact_name(upload: Mapping[str, Any]) -> str:
    repo = str(upload.get("repo_id") or "model").rsplit("/", 1)[-1].lower()
    rev = str(upload.get("revision") or "")[:7]
    return f"{repo}-{rev}" if rev else repo


# --- the step ------------------------------------------------------------------------------------


class Deployer:
    """One run of step 06: each phase get-or-creates its objects and records them in the state."""

    def __init__(
        self,
        cfg: Config,
        state: State,
        ai: AICore | None = None,
        *,
        parameters: Mapping[str, str] | None = None,
        artifact_url: str | None = None,
        repository: str = DEFAULT_REPOSITORY,
        application: str = DEFAULT_APPLICATION,
        update_secrets: bool = False,
        create_resource_group: bool = True,
        progress: bool = True,
    ) -> None:
        self.cfg = cfg
        self.state = state
        self.ai = ai or connect(cfg)
        self.overrides = {str(k): str(v) for k, v in (parameters or {}).items()}
        self.artifact_url_override = artifact_url
        self.repository = repository
        self.application = application
        self.update_secrets = update_secrets
        self.create_resource_group = create_resource_group
        self.progress = progress
        self.template = template_inputs(state.require("template"), cfg)
        self.upload = state.require("upload")
        self.sync: SyncResult | None = None
        self.started = time.monotonic()
        previous = state.get(STATE_KEY) or {}
        self.result = DeploymentResult(
            deployment_id="",
            status="",
            deployment_url="",
            configuration_id="",
            artifact_id="",
            artifact_url=self.artifact_url,
            scenario_id=self.template.scenario_id,
            executable_id=self.template.executable_id,
            resource_group=self.ai.resource_group,
            api_url=self.ai.api_url,
            objects=[Resource(**_known(Resource, o)) for o in previous.get("objects", []) or []],
        )
        same_place = (previous.get("api_url"), previous.get("resource_group")) == (
            self.ai.api_url,
            self.ai.resource_group,
        )
        if same_place:
            # Until this run gets that far, the state keeps pointing at the last deployment.
            for name in ("deployment_id", "status", "deployment_url", "configuration_id",
                         "artifact_id", "served_model_name", "ttl", "status_message"):  # fmt: skip
                if previous.get(name):
                    setattr(self.result, name, previous[name])
        self._previous = previous if same_place else {}

    @property
    def artifact_url(self) -> str:
        """The model's ai:// URL: the override, else step 03's."""
        url = self.artifact_url_override or self.upload.get("artifact_url")
        if not url:
            raise ConfigError(
                "step 03's result has no artifact URL", "run notebooks/03_upload_to_s3.ipynb"
            )
        return str(url)

    def _note(self, *resources: Resource | None) -> ResourceTable:
        table = ResourceTable()
        for res in resources:
            if res is None:
                continue
            table.append(res)
            for old in self.result.objects:
                if old.key() == res.key() and not old.deleted:
                    old.created = old.created or res.created
                    old.action, old.detail = res.action, res.detail
                    break
            else:
                self.result.objects.append(res)
        self._record()
        return table

    def _record(self) -> None:
        self.result.seconds = time.monotonic() - self.started
        self.state.record(STATE_KEY, self.result)

    def _view(self, title: str) -> StatusView:
        return StatusView(title, enabled=self.progress)

    def setup(
        self, *, sync_timeout: float = DEFAULT_SYNC_TIMEOUT_S, poll: float = DEFAULT_POLL_S
    ) -> ResourceTable:
        """Resource group, git repository, application; then the templates' sync."""
        ai, cfg = self.ai, self.cfg
        table = self._note(ensure_resource_group(ai, create=self.create_resource_group))
        url = template_repo_url(cfg, self.template.repo_dir or None)
        repo = ensure_repository(
            ai, url, self.repository, username=cfg.git_username or "", password=cfg.git_password
        )
        table += self._note(repo)
        folder = self.template.folder if self.template.folder not in ("", ".") else None
        path = folder or cfg.template_repo_path
        table += self._note(ensure_application(ai, url, path, self.application))
        app = next(r.id for r in table if r.kind == "application")
        self.sync = sync_templates(
            ai,
            app,
            scenario_id=self.template.scenario_id,
            executable_id=self.template.executable_id,
            needs=self.parameters().keys(),
            commit=self.template.commit,
            timeout=sync_timeout,
            poll=poll,
            view=self._view(f"application {app}"),
        )
        return table

    def parameters(self) -> dict[str, str]:
        """Step 05's parameter values with this run's overrides on top; an override of numGpus
        brings /dev/shm along (bound only above 1 GPU) unless volumes are overridden too."""
        from labkit.templates.values import SHM_PARAMETERS, with_shm

        params = {**self.template.parameters, **self.overrides}
        if "numGpus" in self.overrides and not set(SHM_PARAMETERS) & set(self.overrides):
            params = with_shm(params)
        return params

    def secrets(self) -> ResourceTable:
        """The docker registry secret (when the registry needs a login) and the object store secret."""
        from labkit import image, storage

        cfg, upload = self.cfg, self.upload
        login = image.credentials(cfg)
        docker = None
        if login is not None:
            built = self.state.get("image") or {}
            registry = built.get("registry") or image.registry_address(cfg)
            docker = image.registry_secret(
                registry, login[0], login[1], name=cfg.docker_registry_secret, verify=False
            )
        made = ensure_docker_registry_secret(self.ai, docker, update=self.update_secrets)
        table = self._note(made)
        if made is None:
            table.append(
                Resource(
                    "docker_registry_secret",
                    cfg.docker_registry_secret,
                    "skipped",
                    detail="the registry needs no login",
                )
            )
        secret_name = str(self.artifact_url.removeprefix("ai://").split("/", 1)[0])
        secret = storage.object_store_secret(
            cfg,
            name=secret_name,
            bucket=upload.get("bucket") or None,
            path_prefix=upload.get("path_prefix")
            if secret_name == upload.get("secret_name")
            else None,
        )
        table += self._note(ensure_object_store_secret(self.ai, secret, update=self.update_secrets))
        return table

    def configure(self) -> ResourceTable:
        """The artifact for the uploaded model and the configuration that binds it."""
        tpl, upload = self.template, self.upload
        prefer = self._previous.get("artifact_id")
        artifact = ensure_artifact(
            self.ai,
            self.artifact_url,
            tpl.scenario_id,
            _artifact_name(upload),
            f"{upload.get('repo_id', '')}@{upload.get('revision', '')} "
            f"(s3://{upload.get('bucket', '')}/{upload.get('key', '')})",
            prefer=prefer,
        )
        table = self._note(artifact)
        self.result.artifact_id = artifact.id
        params = self.parameters()
        if self.sync is not None:
            unknown = sorted(set(params) - set(self.sync.parameters))
            if unknown:
                raise ConfigError(
                    f"executable {tpl.executable_id} declares no parameter {', '.join(unknown)}",
                    f"use its parameters: {', '.join(sorted(self.sync.parameters))}",
                )
        key = tpl.artifact_key
        if (
            self.sync is not None
            and self.sync.input_artifacts
            and key not in self.sync.input_artifacts
        ):
            key = self.sync.input_artifacts[0]
        served = params.get("servedModelName")
        if served is None and self.sync is not None:
            served = self.sync.parameters.get("servedModelName")
        self.result.served_model_name = served or ""
        conf = ensure_configuration(
            self.ai,
            scenario_id=tpl.scenario_id,
            executable_id=tpl.executable_id,
            parameters=params,
            artifacts={key: artifact.id},
        )
        self.result.configuration_id = conf.id
        table += self._note(conf)
        return table

    def start(self, *, ttl: str | None = None) -> ResourceTable:
        """The deployment of the configuration (a live one is reused)."""
        dep = ensure_deployment(
            self.ai,
            self.result.configuration_id,
            ttl=ttl,
            prefer=self._previous.get("deployment_id"),
        )
        self.result.deployment_id = dep.id
        self.result.ttl = check_ttl(ttl)
        self.result.status = dep.detail if dep.action == "reused" else "UNKNOWN"
        return self._note(dep)

    def wait(
        self, *, timeout: float = DEFAULT_TIMEOUT_S, poll: float = DEFAULT_POLL_S
    ) -> DeploymentResult:
        """Wait for RUNNING (live status view); records the outcome either way."""
        try:
            info = wait_running(
                self.ai,
                self.result.deployment_id,
                timeout=timeout,
                poll=poll,
                view=self._view(f"deployment {self.result.deployment_id}"),
            )
        except DeploymentFailed as exc:
            if exc.info is not None:
                self.result.status = exc.info.status
                self.result.status_message = exc.info.status_message
            self._record()
            raise
        self.result.status = info.status
        self.result.deployment_url = info.deployment_url
        self.result.status_message = info.status_message
        self._record()
        return self.result

    def run(
        self,
        *,
        ttl: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        poll: float = DEFAULT_POLL_S,
        sync_timeout: float = DEFAULT_SYNC_TIMEOUT_S,
    ) -> DeploymentResult:
        """Every phase in order."""
        check_ttl(ttl)
        self.setup(sync_timeout=sync_timeout, poll=poll)
        self.secrets()
        self.configure()
        self.start(ttl=ttl)
        return self.wait(timeout=timeout, poll=poll)


def deploy(
    cfg: Config,
    state: State,
    *,
    ai: AICore | None = None,
    ttl: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    poll: float = DEFAULT_POLL_S,
    sync_timeout: float = DEFAULT_SYNC_TIMEOUT_S,
    parameters: Mapping[str, str] | None = None,
    artifact_url: str | None = None,
    repository: str = DEFAULT_REPOSITORY,
    application: str = DEFAULT_APPLICATION,
    update_secrets: bool = False,
    create_resource_group: bool = True,
    progress: bool = True,
) -> DeploymentResult:
    """Get-or-create everything the deployment needs, start it, wait for RUNNING; records state ``deploy``."""
    check_ttl(ttl)  # before any call: a typo should not leave half a setup behind
    return Deployer(
        cfg,
        state,
        ai,
        parameters=parameters,
        artifact_url=artifact_url,
        repository=repository,
        application=application,
        update_secrets=update_secrets,
        create_resource_group=create_resource_group,
        progress=progress,
    ).run(ttl=ttl, timeout=timeout, poll=poll, sync_timeout=sync_timeout)
