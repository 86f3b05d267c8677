"""Shared by the tests of labkit.aicore (tests/test_aicore_*.py): a service key in BTP's shape,
the one-line check, a scripted AI Core with a fake clock for the waits and the clean-up (it
refuses to stop what a tenant refuses to stop, and can take polls to stop as a tenant does), and a
replay of recorded tenant answers (tests/tenant/*.json) under SAP's own client."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

from labkit.aicore import AICoreError, DeploymentInfo

TENANT = Path(__file__).parent / "tenant"


def tenant_fixture(name: str) -> dict:
    """A file of facts about a real tenant's answers (tests/tenant/<name>.json)."""
    return json.loads((TENANT / f"{name}.json").read_text())


def tenant_refusal(status: int, body: dict) -> AICoreError:
    """The AICoreError the lab's client makes of a tenant's error answer."""
    exc = AICoreError(f"AI Core could not do it ({status}): {body['error']['message']}")
    exc.status_code, exc.server_message = status, body["error"]["message"]
    return exc


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

    def __init__(self, statuses=(), logs=(), *, stop_polls: int = 0, time_scale: float = 1.0):
        self.statuses = list(
            statuses
        )  # what wait_running reads: a status, a DeploymentInfo, None (404)
        self.logs = list(logs)
        self.deployments: dict[str, str] = {}  # what the clean-up reads
        self.calls: list[str] = []
        self.stop_polls = stop_polls  # reads that still show RUNNING after a stop (a tenant: ~9)
        self._stopping: dict[str, int] = {}
        self.time_scale = time_scale
        self.client = SimpleNamespace(
            deployment=SimpleNamespace(modify=self._modify, delete=self._delete),
            applications=SimpleNamespace(delete=self._deleter("application")),
            repositories=SimpleNamespace(delete=self._deleter("repository")),
            docker_registry_secrets=SimpleNamespace(delete=self._deleter("docker")),
            object_store_secrets=SimpleNamespace(delete=self._deleter("objectstore")),
            resource_groups=SimpleNamespace(delete=self._deleter("rg")),
        )

    def deployment(self, deployment_id):
        info = self.find_deployment(deployment_id)
        if info is None:
            raise AICoreError(f"cannot get deployment {deployment_id}: not found")
        return info

    def find_deployment(self, deployment_id):
        self.calls.append(f"get deployment {deployment_id}")
        if self.statuses:
            item = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
            if item is None or isinstance(item, DeploymentInfo):
                return item
            url = "http://fake/v2/inference/deployments/d1" if item == "RUNNING" else ""
            return DeploymentInfo(deployment_id, item, deployment_url=url,
                                  status_message="Dead" if item == "DEAD" else "")  # fmt: skip
        if deployment_id in self._stopping:
            self._stopping[deployment_id] -= 1
            if self._stopping[deployment_id] <= 0:
                del self._stopping[deployment_id]
                self.deployments[deployment_id] = "STOPPED"
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
        status = self.deployments[deployment_id]
        if status not in ("RUNNING", "PENDING"):
            # What a tenant answers (tests/tenant/deployments.json, stop_unknown).
            refusal = tenant_fixture("deployments")["stop_unknown"]
            body = json.loads(json.dumps(refusal["body"]).replace("UNKNOWN", status))
            raise tenant_refusal(400, body)
        if self.stop_polls:
            self._stopping[deployment_id] = self.stop_polls
        else:
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


class TenantReplay:
    """SAP's client (and the lab's token fetch) answered by recorded tenant answers: every HTTP
    request goes to ``requests.Session.request``, which this replaces; a route (method, path
    regex) answers its list of ``{"status", "body"}`` in order, repeating the last. Unknown
    requests fail the test."""

    def __init__(self, monkeypatch, routes: dict[tuple[str, str], list[dict[str, Any]]]):
        import requests

        self.routes = [(m.upper(), re.compile(p), list(a)) for (m, p), a in routes.items()]
        self.sent: list[tuple[str, str, Any]] = []
        replay = self

        def request(session, method, url, **kwargs):
            return replay._answer(method.upper(), url, kwargs)

        monkeypatch.setattr(requests.sessions.Session, "request", request)

    def _answer(self, method: str, url: str, kwargs: dict[str, Any]):
        import requests

        path = urlsplit(url).path
        self.sent.append((method, path, kwargs.get("json")))
        for m, rx, answers in self.routes:
            if m == method and rx.search(path):
                answer = answers.pop(0) if len(answers) > 1 else answers[0]
                response = requests.Response()
                response.status_code = int(answer["status"])
                response._content = json.dumps(answer.get("body", {})).encode()
                response.headers["Content-Type"] = "application/json"
                response.url = url
                return response
        raise AssertionError(f"the recorded tenant has no answer to {method} {path}")

    def count(self, method: str, pattern: str) -> int:
        return sum(1 for m, p, _ in self.sent if m == method and re.search(pattern, p))


def tenant_ai(monkeypatch, routes, *, time_scale: float = 1.0):
    """The lab's AICore (SAP's client inside) for a BTP service key, answered by ``routes`` and
    the recorded token answer."""
    from labkit.aicore import AICore, parse_service_key

    token = tenant_fixture("token")["answer"]
    replay = TenantReplay(monkeypatch, {("POST", r"/oauth/token$"): [{"status": 200, "body": token}],
                                        **routes})  # fmt: skip
    ai = AICore(parse_service_key(btp_key()), "default", time_scale=time_scale)
    return ai, replay
