"""Step 06: deploy the served model through SAP AI Core's AI API with SAP's own client (``ai_core_sdk``).

Every object is get-or-create, in the order a team sets them up on a tenant: resource group, git
repository and application (AI Core syncs the serving templates from git), docker registry secret,
object store secret, artifact, configuration, deployment; then a bounded wait for RUNNING. What
the lab created is recorded in the lab state (key ``deploy``) as it goes, so that the clean-up
deletes only that, even after a run that failed half-way. The local profile's AI Core and a real
tenant run the same code; only the service key differs.

The package, one responsibility a module: ``secrets`` (masking, also in the SDK's debug logs),
``auth`` (service key and token), ``names`` (AI Core's naming rules), ``client`` (SAP's client
with one-line errors), ``results``, ``diagnosis`` (why a deployment died), ``status`` (the view
that updates while waiting), ``waiting``, ``resources`` (get-or-create, one object at a time),
``sync`` (the templates' sync), ``deployer`` (what step 05 recorded, and the step) and
``cleanup`` (after the deployment, and the clean-up). Importing it loads no SDK: that happens
when a call needs it.
"""

from __future__ import annotations

from labkit.aicore.auth import (
    ServiceKey,
    load_service_key,
    local_service_key_file,
    parse_service_key,
)
from labkit.aicore.cleanup import (
    CleanupReport,
    ModelList,
    cleanup,
    delete,
    list_deployments,
    list_models,
    recorded_deployment_id,
    recorded_objects,
    stop,
)
from labkit.aicore.client import (
    LOG_TAIL,
    AICore,
    MaskedHeaders,
    connect,
    deployment_headers,
    inference_url,
)
from labkit.aicore.deployer import (
    DEFAULT_ARTIFACT_KEY,
    STATE_KEY,
    Deployer,
    TemplateInputs,
    deploy,
    template_inputs,
)
from labkit.aicore.diagnosis import BLOCKING, Cause, detail_lines, diagnose
from labkit.aicore.errors import AICoreError, DeploymentFailed
from labkit.aicore.names import check_resource_group_name, check_ttl
from labkit.aicore.resources import (
    DEFAULT_APPLICATION,
    DEFAULT_REPOSITORY,
    configuration_name,
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
from labkit.aicore.results import (
    ACTIVE,
    ENDED,
    KINDS,
    DeploymentInfo,
    DeploymentResult,
    Resource,
    ResourceTable,
)
from labkit.aicore.secrets import MASK, redact, register_secret
from labkit.aicore.status import StatusView
from labkit.aicore.sync import DEFAULT_SYNC_TIMEOUT_S, FIRST_SYNC_S, SyncResult, sync_templates
from labkit.aicore.waiting import (
    APPEAR_S,
    DEFAULT_POLL_S,
    DEFAULT_STOP_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    MIN_POLL_S,
    STUCK_PENDING_S,
    TENANT_STOP_S,
    wait_running,
    wait_status,
)

__all__ = [
    "ACTIVE",
    "APPEAR_S",
    "BLOCKING",
    "DEFAULT_APPLICATION",
    "DEFAULT_ARTIFACT_KEY",
    "DEFAULT_POLL_S",
    "DEFAULT_REPOSITORY",
    "DEFAULT_STOP_TIMEOUT_S",
    "DEFAULT_SYNC_TIMEOUT_S",
    "DEFAULT_TIMEOUT_S",
    "ENDED",
    "FIRST_SYNC_S",
    "KINDS",
    "LOG_TAIL",
    "MASK",
    "MIN_POLL_S",
    "STATE_KEY",
    "STUCK_PENDING_S",
    "TENANT_STOP_S",
    "AICore",
    "AICoreError",
    "Cause",
    "CleanupReport",
    "Deployer",
    "DeploymentFailed",
    "DeploymentInfo",
    "DeploymentResult",
    "MaskedHeaders",
    "ModelList",
    "Resource",
    "ResourceTable",
    "ServiceKey",
    "StatusView",
    "SyncResult",
    "TemplateInputs",
    "check_resource_group_name",
    "check_ttl",
    "cleanup",
    "configuration_name",
    "connect",
    "delete",
    "deploy",
    "deployment_headers",
    "detail_lines",
    "diagnose",
    "ensure_application",
    "ensure_artifact",
    "ensure_configuration",
    "ensure_deployment",
    "ensure_docker_registry_secret",
    "ensure_object_store_secret",
    "ensure_repository",
    "ensure_resource_group",
    "inference_url",
    "list_deployments",
    "list_models",
    "load_service_key",
    "local_service_key_file",
    "parse_service_key",
    "recorded_deployment_id",
    "recorded_objects",
    "redact",
    "register_secret",
    "stop",
    "sync_templates",
    "template_inputs",
    "template_repo_url",
    "wait_running",
    "wait_status",
]
