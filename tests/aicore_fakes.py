"""Shared by the tests of labkit.aicore (tests/test_aicore_*.py): a service key in BTP's shape,
the one-line check, and a scripted AI Core with a fake clock for the waits and the clean-up."""

from __future__ import annotations

from types import SimpleNamespace

from labkit.aicore import AICoreError, DeploymentInfo

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
