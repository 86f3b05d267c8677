"""The local AI Core assembled: its settings, and :class:`LocalAICore`, which holds the store,
the tokens and one object per area (admin resources, git sync, the lm catalogue, deployments),
and starts and stops their background work with the server."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from labkit.local.aicore.admin import (
    Applications,
    DockerRegistrySecrets,
    ObjectStoreSecrets,
    Repositories,
    ResourceGroups,
)
from labkit.local.aicore.deployments import TTL_CHECK_S, Deployments
from labkit.local.aicore.gitsync import FIRST_SYNC_S, SYNC_INTERVAL_S, GitSync, templates_module
from labkit.local.aicore.lm import Artifacts, Configurations, Scenarios
from labkit.local.aicore.runspec import ObjectStore, RunnerSettings
from labkit.local.aicore.store import Store
from labkit.local.aicore.tokens import TOKEN_PATH, Tokens, read_service_key, token_key


@dataclass
class Settings:
    """Where the server keeps its state and how it runs deployments."""

    state_dir: Path
    port: int
    service_key_file: Path
    runner: RunnerSettings
    host: str = "127.0.0.1"
    token_ttl: int = 7200
    sync_interval: float = SYNC_INTERVAL_S
    ttl_check: float = TTL_CHECK_S

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


class LocalAICore:
    """The objects, their rules and the deployments' runners; the HTTP layer calls into it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.state_dir)
        key = read_service_key(settings.service_key_file)
        self.tokens = Tokens(
            token_key(settings.state_dir),
            str(key["clientid"]),
            SecretStr(str(key["clientsecret"])),
            settings.base_url + TOKEN_PATH,
            settings.token_ttl,
        )
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self.object_stores = ObjectStoreSecrets(self.store)
        self.registry_secrets = DockerRegistrySecrets(self.store)
        self.deployments = Deployments(
            self.store,
            settings.runner,
            settings.base_url,
            self._closing,
            self.object_stores,
            self.registry_secrets,
            settings.ttl_check,
        )
        self.resource_groups = ResourceGroups(self.store, self.deployments)
        self.sync = GitSync(
            self.store,
            self._closing,
            settings.sync_interval,
            first_sync=FIRST_SYNC_S * settings.runner.time_scale,
        )
        self.repositories = Repositories(self.store)
        self.applications = Applications(self.store, self.sync)
        self.scenarios = Scenarios(self.store)
        self.artifacts = Artifacts(self.store)
        self.configurations = Configurations(self.store)

    # lifecycle

    def startup(self) -> None:
        """Pick up where the last run stopped: end its predictors, start what should run."""
        self.deployments.recover()
        for target, name in (
            (self.deployments.ttl_loop, "aicore-ttl"),
            (self.sync.loop, "aicore-sync"),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self.sync.schedule_all()
        # labkit.templates (jsonschema, the KServe schema) takes seconds to import on a busy
        # machine: import it now rather than in the first application's sync.
        threading.Thread(target=templates_module, name="aicore-import", daemon=True).start()

    def shutdown(self) -> None:
        """Stop every predictor (in parallel); their deployments keep their status, so the next
        start runs them again."""
        self._closing.set()
        self.deployments.stop_all()

    def resolve_object_store(self, group: str, name: str) -> ObjectStore | None:
        """The object store secret with its credentials, for the storage initializer."""
        return self.object_stores.resolve(group, name)
