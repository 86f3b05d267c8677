"""The local AI Core's ArgoCD: applications sync ServingTemplates from git into scenarios and
executables.

Applications sync ServingTemplates from a git repository on this machine (a path or file://
URL) at ``revision`` under ``path``. The gatekeeper is what AI Core itself enforces (SAP's
documented ServingTemplate rules, :func:`sync_problems`), not the lab's own lint: SAP's published
templates (no STORAGE_URI, no parameters, a ``.`` in the executable id, a container named
``kfserving-container``) sync here as on a tenant. Valid templates become scenarios and
executables, invalid ones are listed in the application's status as ``SyncFailed``.

Timing and failures as on a tenant: a new application's first sync comes after
``FIRST_SYNC_S`` (scaled by ``LABKIT_AICORE_TIME_SCALE``; until then its status is 404), later
ones on ``/refresh`` and every ``--sync-interval`` seconds (AI Core: about every 3 minutes). A
revision that does not resolve or a path that does not exist is an application-level message
in ArgoCD's words with ``syncStatus`` ``Unknown`` and ``healthStatus`` ``Healthy`` (or
``Unknown`` before any sync succeeded), not ``Degraded``.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from labkit.config import DEFAULT_AICORE_TIME_SCALE
from labkit.local.aicore.common import ID, LABEL_KEY, iso, log, now
from labkit.local.aicore.store import Store

SYNC_INTERVAL_S = 180.0
# SAP's AI Core set-up tutorial: reading a new application's status fails ("KeyError:
# 'operationState'") until its first sync; "wait for 3 minutes".
FIRST_SYNC_S = 180.0
TEMPLATE_KINDS = ("ServingTemplate",)
MAX_SERVING_TEMPLATES = 50

# scenario/executable key -> (scenario, executable, template document, file)
Found = dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any], str]]


# --- templates --------------------------------------------------------------------------------


class GitError(Exception):
    """The repository cannot be read."""


class RevisionError(GitError):
    """The application's revision does not resolve to a commit."""


class AppPathError(GitError):
    """The application's path does not exist at the synced commit."""


def argo_message(exc: GitError, revision: str, path: str) -> str:
    """An application-level sync failure in the words ArgoCD reports it on a tenant (issue 16,
    from SAP's sample notebooks' outputs): "Unable to resolve '<branch>' to a commit SHA",
    "rpc error: code = Unknown desc = <path>: app path does not exist"."""
    if isinstance(exc, RevisionError):
        return f"Unable to resolve '{revision}' to a commit SHA"
    if isinstance(exc, AppPathError):
        return f"rpc error: code = Unknown desc = {path}: app path does not exist"
    return f"rpc error: code = Unknown desc = {exc}"  # unverified wording for other git errors


def repo_path(url: str) -> Path:
    """The local repository an URL names: a path or a file:// URL (the local profile's gitops)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        return Path(urllib.parse.unquote(parts.path))
    if parts.scheme and len(parts.scheme) > 1:
        raise GitError(
            f"{url} is a remote URL; the local AI Core syncs repositories on this machine only "
            "(a path or file:// URL)"
        )
    return Path(url).expanduser()


def _git(repo: Path, *args: str, timeout: float = 60) -> str:
    argv = ["git", "-c", "safe.directory=*", "-C", str(repo), *args]
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GitError(f"git failed: {exc}") from None
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise GitError(last.removeprefix("fatal: "))
    return proc.stdout


def repo_reachable(url: str) -> str | None:
    """None when the URL names a readable git repository, else why not."""
    try:
        path = repo_path(url)
        if not path.is_dir():
            return f"{path} is not a directory"
        _git(path, "rev-parse", "--git-dir")
    except GitError as exc:
        return str(exc)
    return None


def read_templates(url: str, revision: str, path: str) -> tuple[str, list[tuple[str, str]]]:
    """The commit ``revision`` resolves to and the YAML files under ``path`` at that commit."""
    repo = repo_path(url)
    if not repo.is_dir():
        raise GitError(f"repository {url} does not exist on this machine")
    if revision.startswith("-") or not revision:
        raise RevisionError(f"revision {revision!r} is not a git revision")
    try:
        sha = _git(
            repo, "rev-parse", "--verify", "--end-of-options", f"{revision}^{{commit}}"
        ).strip()
    except GitError as exc:
        raise RevisionError(str(exc)) from None
    folder = path.strip("/")
    if folder and folder != "." and not _git(repo, "ls-tree", sha, "--", folder).strip():
        raise AppPathError(f"{path}: app path does not exist")
    names = _git(
        repo,
        "ls-tree",
        "-r",
        "--name-only",
        sha,
        "--",
        *([folder] if folder and folder != "." else []),
    )
    files = []
    for name in sorted(names.splitlines()):
        if name.endswith((".yaml", ".yml")):
            files.append((name, _git(repo, "show", f"{sha}:{name}")))
    return sha, files


def _executable_inputs(
    doc: Mapping[str, Any], annotations: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The parameters and input artifacts a ServingTemplate declares, as the executable lists them."""
    inputs = (doc.get("spec") or {}).get("inputs") or {}
    parameters = []
    for p in inputs.get("parameters") or []:
        item = {"name": str(p["name"]), "type": "string"}
        if p.get("default") is not None:
            item["default"] = str(p["default"])
        if p.get("description"):
            item["description"] = str(p["description"])
        parameters.append(item)
    artifacts = []
    for a in inputs.get("artifacts") or []:
        item = {"name": str(a["name"])}
        for key in ("kind", "description"):
            # AI Core reads an input artifact's kind and description from annotations
            # artifacts.ai.sap.com/<name>.<key>.
            value = a.get(key) or annotations.get(f"artifacts.ai.sap.com/{a['name']}.{key}")
            if value:
                item[key] = str(value)
        artifacts.append(item)
    return parameters, artifacts


def executable_from(doc: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The scenario and executable objects a ServingTemplate defines (without timestamps)."""
    meta = doc.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    eid, sid = meta.get("name"), labels.get("scenarios.ai.sap.com/id")
    version = labels.get("ai.sap.com/version")
    if not isinstance(eid, str) or not ID.fullmatch(eid):
        raise ValueError(
            "metadata.name (the executable id) is missing or not 4-64 of [A-Za-z0-9_.-]"
        )
    if not sid or not ID.fullmatch(sid):
        raise ValueError("label scenarios.ai.sap.com/id is missing or not 4-64 of [A-Za-z0-9_.-]")
    if not version:
        raise ValueError("label ai.sap.com/version is missing")
    parameters, artifacts = _executable_inputs(doc, annotations)
    executable: dict[str, Any] = {
        "id": eid,
        "name": str(annotations.get("executables.ai.sap.com/name") or eid),
        "scenarioId": sid,
        "versionId": version,
        "parameters": parameters,
        "inputArtifacts": artifacts,
        "outputArtifacts": [],
        "labels": [{"key": k, "value": v} for k, v in labels.items() if LABEL_KEY.fullmatch(k)],
        "deployable": True,
    }
    if annotations.get("executables.ai.sap.com/description"):
        executable["description"] = str(annotations["executables.ai.sap.com/description"])
    scenario: dict[str, Any] = {
        "id": sid,
        "name": str(annotations.get("scenarios.ai.sap.com/name") or sid),
        "labels": [
            {"key": k, "value": v}
            for k, v in labels.items()
            if re.fullmatch(r"(scenarios|ext)\.ai\.sap\.com/[\w.-]+", k)
            and k != "scenarios.ai.sap.com/id"
        ],
    }
    if annotations.get("scenarios.ai.sap.com/description"):
        scenario["description"] = str(annotations["scenarios.ai.sap.com/description"])
    return scenario, executable


def templates_module() -> Any:
    from labkit import templates

    return templates


# The sync's gatekeeper: SAP's documented ServingTemplate rules (the "sap" family of
# labkit.templates.rules, SAP Help "Serving Templates" and "API Schema Spec
# ai.sap.com/v1alpha1"), less the rules SAP's own published templates break while they sync and
# run on tenants (10-byom-oss-llm-ai-core's ollama and llama.cpp templates), and less those that
# are no sync's concern. The lab's own rules (KServe schema strictness, the runtime's values, the
# lab's cross-checks, the kserve-container name, STORAGE_URI) stay in `labkit template lint` and
# step 05.
SYNC_EXEMPT = {
    # SAP's ollama template declares no spec.inputs at all.
    "parameters": "a template may declare no parameters",
    # The lab's id style (lowercase, hyphens); AI Core takes the AI API's id pattern
    # ^[\w.-]{4,64}$ (specs/AI_CORE_API.yaml), checked by executable_from: "llama.cpp".
    "executable-id": "the AI API's id pattern instead",
    "executable-id-unique": "the sync checks ids across files and applications itself",
    "binding-unknown": "bindings are a configuration's concern",
}
SYNC_EXTRA = ("yaml-parse",)  # a file that is no YAML mapping cannot sync


def sync_rules() -> frozenset[str]:
    """The lint rule codes the sync enforces: the SAP family less ``SYNC_EXEMPT``."""
    from labkit.templates.rules import registry

    sap = {
        code
        for c in registry.checks()
        if c.fn.__module__.rsplit(".", 1)[-1] == "sap"
        for code in c.codes
    }
    return frozenset(sap - set(SYNC_EXEMPT)) | frozenset(SYNC_EXTRA)


def sync_problems(report: Any) -> list[str]:
    """The errors of a lint report that AI Core's sync would refuse the template for."""
    gate = sync_rules()
    return [f"{f.rule}: {f.message}" for f in getattr(report, "errors", []) if f.rule in gate]


# --- one file of templates ---------------------------------------------------------------------


def _failed_file(file: str, message: str) -> dict[str, Any]:
    return {
        "name": file,
        "kind": "Unknown",
        "status": "SyncFailed",
        "message": message,
        "_file": file,
    }


def sync_file(templates: Any, file: str, text: str, found: Found) -> list[dict[str, Any]]:
    """The sync status of each document of one YAML file; valid templates land in ``found``."""
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        problem = " ".join(str(exc).split())
        return [_failed_file(file, f"invalid YAML: {problem}")]
    out: list[dict[str, Any]] = []
    for doc in docs:
        if not isinstance(doc, dict):
            out.append(_failed_file(file, "not a YAML mapping"))
            continue
        # A one-document file is linted as text: the strict loader then also catches
        # duplicate keys, which safe_load_all silently merges.
        lint_input = text + "\n" if len(docs) == 1 else doc
        out.append(_sync_doc(templates, file, doc, lint_input, found))
    return out


def _sync_doc(
    templates: Any, file: str, doc: dict[str, Any], lint_input: Any, found: Found
) -> dict[str, Any]:
    kind = str(doc.get("kind") or "Unknown")
    rname = str((doc.get("metadata") or {}).get("name") or file)
    entry = {"name": rname, "kind": kind, "status": "Synced", "message": "", "_file": file}
    if kind not in TEMPLATE_KINDS:
        entry.update(
            status="SyncFailed",
            message=f"{file}: the local AI Core syncs {', '.join(TEMPLATE_KINDS)}s only",
        )
        return entry
    try:
        report = templates.lint(lint_input)
    except Exception as exc:  # a broken template must not stop the sync of the others
        entry.update(status="SyncFailed", message=f"{file}: {exc}")
        return entry
    problems = sync_problems(report)
    if problems:
        entry.update(status="SyncFailed", message=f"{file}: " + "; ".join(problems))
        return entry
    try:
        scenario, executable = executable_from(doc)
    except (ValueError, KeyError, TypeError) as exc:
        entry.update(status="SyncFailed", message=f"{file}: {exc}")
        return entry
    key = f"{executable['scenarioId']}/{executable['id']}"
    if key in found:
        entry.update(status="SyncFailed", message=f"{file}: executable {key} is defined twice")
        return entry
    entry["message"] = (
        f"{file}: executable {executable['id']} of scenario {executable['scenarioId']}"
    )
    found[key] = (scenario, executable, doc, file)
    return entry


# --- the sync ----------------------------------------------------------------------------------


class GitSync:
    """Syncs applications: one sync per application at a time, in background threads."""

    def __init__(
        self,
        store: Store,
        closing: threading.Event,
        interval: float,
        first_sync: float | None = None,
    ) -> None:
        self.store = store
        self.closing = closing
        self.interval = interval
        # How long a new application waits for its first sync (its status is 404 until then).
        self.first_sync = (
            FIRST_SYNC_S * DEFAULT_AICORE_TIME_SCALE if first_sync is None else first_sync
        )
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)

    def first_due(self) -> float:
        """When an application created now gets its first sync (epoch seconds)."""
        return time.time() + self.first_sync

    def _wait_until_due(self, name: str) -> bool:
        """Wait for the application's first sync to be due; False when it is gone or the
        server closes."""
        with self.store.lock:
            app = self.store.data["applications"].get(name)
            due = float(app.get("_dueAt") or 0) if app is not None else None
        if due is None:
            return False
        return not self.closing.wait(max(0.0, due - time.time()))

    def schedule(self, name: str) -> None:
        """Sync an application in the background (one sync per application at a time)."""
        with self.store.lock:
            app = self.store.data["applications"].get(name)
            if app is None:
                return
            app.setdefault("_sync", {})["healthStatus"] = "Progressing"
            app["_sync"]["syncStartedAt"] = iso(now())
        threading.Thread(
            target=self.sync, args=(name,), name=f"aicore-sync-{name}", daemon=True
        ).start()

    def schedule_all(self) -> None:
        with self.store.lock:
            names = list(self.store.data["applications"])
        for name in names:
            self.schedule(name)

    def loop(self) -> None:
        """Sync every application every ``interval`` seconds until the server closes."""
        while not self.closing.wait(self.interval):
            self.schedule_all()

    def sync(self, name: str) -> None:
        """Read the application's templates from git and make them scenarios and executables."""
        if not self._wait_until_due(name):
            return
        with self._locks[name]:
            with self.store.lock:
                app = self.store.data["applications"].get(name)
                if app is None:
                    return
                url, revision, path = app["repositoryUrl"], app["revision"], app["path"]
                started = app.get("_sync", {}).get("syncStartedAt") or iso(now())
            resources: list[dict[str, Any]] = []
            found: Found = {}
            try:
                sha, files = read_templates(url, revision, path)
                templates = templates_module()
            except GitError as exc:
                self._finish(name, started, None, resources, argo_message(exc, revision, path))
                log.warning("application %s cannot sync: %s", name, exc)
                return
            except ImportError as exc:
                self._finish(name, started, None, resources, f"ComparisonError: {exc}")
                return
            for file, text in files:
                resources += sync_file(templates, file, text, found)
            applied = self._admit(name, found, resources)
            with self.store.lock:
                if name in self.store.data["applications"]:
                    self.apply(name, applied)
            for r in resources:
                r.pop("_file", None)
            failed = [r for r in resources if r["status"] != "Synced"]
            message = (
                f"{len(failed)} of {len(resources)} resources failed to sync: "
                + "; ".join(f"{r['name']}: {r['message']}" for r in failed)
                if failed
                else f"successfully synced (all tasks run); {len(resources)} templates at {sha[:12]}"
            )
            self._finish(name, started, sha, resources, message)

    def _admit(self, name: str, found: Found, resources: list[dict[str, Any]]) -> Found:
        """The templates this application may define: none another application defines, and at
        most MAX_SERVING_TEMPLATES in all (the others are marked SyncFailed)."""
        with self.store.lock:
            taken = {
                key: t["application"]
                for key, t in self.store.data["templates"].items()
                if t["application"] != name
            }
        others = len(taken)
        applied: Found = {}
        for key, (scenario, executable, doc, file) in found.items():
            status = next(
                r for r in resources if r["name"] == executable["id"] and r.get("_file") == file
            )
            if key in taken:
                status.update(
                    status="SyncFailed",
                    message=f"executable {key} is already defined by application '{taken[key]}'",
                )
            elif len(applied) + others >= MAX_SERVING_TEMPLATES:
                status.update(
                    status="SyncFailed",
                    message=f"at most {MAX_SERVING_TEMPLATES} serving templates per tenant",
                )
            else:
                applied[key] = (scenario, executable, doc, file)
        return applied

    def apply(self, name: str, applied: Mapping[str, Any]) -> None:
        """Make the store hold exactly ``applied`` for this application (ArgoCD prunes)."""
        data = self.store.data
        stamp = iso(now())
        for key in [
            k for k, t in data["templates"].items() if t["application"] == name and k not in applied
        ]:
            del data["templates"][key]
            data["executables"].pop(key, None)
        for key, (scenario, executable, doc, file) in applied.items():
            old = data["executables"].get(key)
            template = {"application": name, "file": file, "template": doc}
            changed = old is None or data["templates"].get(key, {}).get("template") != doc
            data["templates"][key] = template
            data["executables"][key] = {
                **executable,
                "createdAt": old["createdAt"] if old else stamp,
                "modifiedAt": stamp if changed or old is None else old["modifiedAt"],
            }
            sid = scenario["id"]
            old_scenario = data["scenarios"].get(sid)
            same = old_scenario and {k: old_scenario.get(k) for k in scenario} == scenario
            data["scenarios"][sid] = {
                **scenario,
                "createdAt": old_scenario["createdAt"] if old_scenario else stamp,
                "modifiedAt": old_scenario["modifiedAt"] if same else stamp,
            }
        used = {e["scenarioId"] for e in data["executables"].values()}
        for sid in [s for s in data["scenarios"] if s not in used]:
            del data["scenarios"][sid]

    def _finish(
        self,
        name: str,
        started: str,
        sha: str | None,
        resources: list[dict[str, Any]],
        message: str,
    ) -> None:
        failed = sha is None or any(r["status"] != "Synced" for r in resources)
        with self.store.lock:
            app = self.store.data["applications"].get(name)
            if app is None:
                return
            stamp = iso(now())
            if sha is None:
                # ArgoCD cannot compare: the app is Unknown, its resources from an earlier
                # sync stay up (Healthy); never Degraded (issue 16, SAP's sample outputs).
                health = "Healthy" if app.get("_sync", {}).get("revision") else "Unknown"
            else:
                health = "Degraded" if failed else "Healthy"
            sync = {
                "healthStatus": health,
                "syncStatus": ("Unknown" if sha is None else "OutOfSync") if failed else "Synced",
                "message": message,
                "syncStartedAt": started,
                "syncFinishedAt": stamp,
                "reconciledAt": stamp,
                "resources": resources,
            }
            if sha is not None:
                sync["revision"] = sha
            elif app.get("_sync", {}).get("revision"):
                sync["revision"] = app["_sync"]["revision"]
            app["_sync"] = sync
            self.store.save()
