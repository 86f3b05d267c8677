"""Step 05: the AI Core ServingTemplate: load, render, lint, configuration bindings, publish to git.

A ServingTemplate is YAML that holds more YAML as strings (`spec.template.metadata.labels`,
`.annotations` and `.spec`), so ordinary YAML checks never look inside. ``render`` does what AI
Core does: each ``{{inputs.parameters.X}}`` becomes the configuration's binding, else the
declared default (no default and no binding is an error); each ``{{inputs.artifacts.Y}}``
becomes the bound artifact's URL; the substitution is textual and the strings are parsed only
afterwards. ``lint`` checks SAP's rules (SAP Help: "Serving Templates", "API Schema Spec
ai.sap.com/v1alpha1", "KServe Spec serving.kserve.io/v1beta1"), Knative's and KServe's
(reserved env names and ports, one container port, the InferenceServiceSpec schema in
``kserve_predictor.schema.json``), the runtime's (runtime/entrypoint.py's settings), and, given a
``LintContext``, the lab's state: sizing, the downloaded revision, the built image.

Every finding has a rule id (``RULES``) and a message that says how to fix it.

Modules: ``spec`` (the names and limits), ``load``, ``parts`` (placeholders and the parts of a
template), ``render``, ``values`` (bindings, the lab's values with /dev/shm only for tensor
parallelism, the step's result), ``publish`` (the lab's executable and scenario ids, git)
and the ``rules`` package (a registry of rules, one module per rule family).
"""

from labkit.templates.load import TemplateError, load, predictor_schema, shipped_template
from labkit.templates.parts import Placeholder, artifact_names, parameter_names, placeholders
from labkit.templates.publish import publish, published_executables, set_ids, set_scenario
from labkit.templates.render import Rendered, render
from labkit.templates.rules import (
    RULES,
    Finding,
    LintContext,
    LintReport,
    RevisionCheck,
    lint,
    lint_folder,
)
from labkit.templates.spec import (
    AUTOSCALING_METRICS,
    DTYPES,
    EXECUTABLE_ID_LABEL,
    EXECUTABLE_NAME_ANNOTATION,
    FP16_UNSUPPORTED_MODEL_TYPES,
    INSTANCE_TYPE_LABEL,
    KSERVE_API_VERSION,
    MIN_LLM_CONCURRENCY_TARGET,
    MODELS_MOUNT,
    PLACEHOLDER_ARTIFACT_URL,
    PLACEHOLDER_IMAGE_TAG,
    PREDICTOR_CONTAINER,
    REQUIRED_ANNOTATIONS,
    REQUIRED_LABELS,
    RESERVED_ENV,
    RESERVED_PORTS,
    RESOURCE_PLAN_LABEL,
    RUNTIME_ENV_FLAGS,
    RUNTIME_ENV_KINDS,
    SCENARIO_ID_LABEL,
    SCENARIO_NAME_ANNOTATION,
    SCHEMA_FILE,
    SHIPPED_TEMPLATE,
    TEMPLATE_API_VERSION,
    TEMPLATE_KIND,
    VERSION_LABEL,
)
from labkit.templates.values import (
    AuthoredTemplate,
    LabValues,
    ParameterTable,
    bindings,
    lab_values,
    parameter_table,
    placeholder_image,
    required_parameters,
    with_shm,
)

# Every name here is public: notebooks, the CLI, other modules and tests use ``templates.X``.
__all__ = [
    "AUTOSCALING_METRICS",
    "DTYPES",
    "EXECUTABLE_ID_LABEL",
    "EXECUTABLE_NAME_ANNOTATION",
    "FP16_UNSUPPORTED_MODEL_TYPES",
    "INSTANCE_TYPE_LABEL",
    "KSERVE_API_VERSION",
    "MIN_LLM_CONCURRENCY_TARGET",
    "MODELS_MOUNT",
    "PLACEHOLDER_ARTIFACT_URL",
    "PLACEHOLDER_IMAGE_TAG",
    "PREDICTOR_CONTAINER",
    "REQUIRED_ANNOTATIONS",
    "REQUIRED_LABELS",
    "RESERVED_ENV",
    "RESERVED_PORTS",
    "RESOURCE_PLAN_LABEL",
    "RULES",
    "RUNTIME_ENV_FLAGS",
    "RUNTIME_ENV_KINDS",
    "SCENARIO_ID_LABEL",
    "SCENARIO_NAME_ANNOTATION",
    "SCHEMA_FILE",
    "SHIPPED_TEMPLATE",
    "TEMPLATE_API_VERSION",
    "TEMPLATE_KIND",
    "VERSION_LABEL",
    "AuthoredTemplate",
    "Finding",
    "LabValues",
    "LintContext",
    "LintReport",
    "ParameterTable",
    "Placeholder",
    "Rendered",
    "RevisionCheck",
    "TemplateError",
    "artifact_names",
    "bindings",
    "lab_values",
    "lint",
    "lint_folder",
    "load",
    "parameter_names",
    "parameter_table",
    "placeholder_image",
    "placeholders",
    "predictor_schema",
    "publish",
    "published_executables",
    "render",
    "required_parameters",
    "set_ids",
    "set_scenario",
    "shipped_template",
    "with_shm",
]
