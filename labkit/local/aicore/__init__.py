"""The local profile's SAP AI Core: an emulator of the AI API subset the lab uses, run as a
local service (`labkit local up|down|status`; ``up``, ``down`` and ``status`` here).

The package, by area:

- :mod:`~labkit.local.aicore.launch`: the service key, and the server started in the
  background (what this package exports);
- :mod:`~labkit.local.aicore.server`: the program (``python -m labkit.local.aicore.server``),
  :mod:`~labkit.local.aicore.app`: its FastAPI app, one router per area,
  :mod:`~labkit.local.aicore.core`: the areas assembled around one
  :mod:`~labkit.local.aicore.store` (``state.json``, ``secrets.json``);
- the areas: :mod:`~labkit.local.aicore.tokens` (OAuth), :mod:`~labkit.local.aicore.admin`
  (resource groups, secrets, repositories, applications), :mod:`~labkit.local.aicore.gitsync`
  (templates from git), :mod:`~labkit.local.aicore.lm` (scenarios, executables, artifacts,
  configurations), :mod:`~labkit.local.aicore.deployments` and their
  :mod:`~labkit.local.aicore.logs`, :mod:`~labkit.local.aicore.inference` (the proxy);
  shared: :mod:`~labkit.local.aicore.common`, :mod:`~labkit.local.aicore.deps`;
- the predictors: :mod:`~labkit.local.aicore.runner` (a deployment's phases),
  :mod:`~labkit.local.aicore.runspec`, :mod:`~labkit.local.aicore.images`,
  :mod:`~labkit.local.aicore.processes`.
"""

from labkit.local.aicore.launch import (
    CLIENT_ID,
    SERVICE,
    aicore_url,
    down,
    ensure_service_key,
    server_argv,
    service_key_file,
    state_dir,
    status,
    token_url,
    up,
)

__all__ = [
    "CLIENT_ID",
    "SERVICE",
    "aicore_url",
    "down",
    "ensure_service_key",
    "server_argv",
    "service_key_file",
    "state_dir",
    "status",
    "token_url",
    "up",
]
