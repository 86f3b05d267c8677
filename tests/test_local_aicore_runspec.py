"""What the local AI Core's runner starts (labkit.local.aicore.runspec): the container's command
as Kubernetes makes it, and the predictor's environment."""

from __future__ import annotations

from labkit.local.aicore import runspec as runspec_mod
from labkit.local.aicore.runspec import RunSpec


def test_container_command_follows_kubernetes() -> None:
    ep, cmd = ["python3", "/opt/labkit/entrypoint.py"], ["--x"]
    assert runspec_mod.container_command(ep, cmd, None, None) == [*ep, *cmd]
    assert runspec_mod.container_command(ep, cmd, None, ["--y"]) == [*ep, "--y"]
    assert runspec_mod.container_command(ep, cmd, None, []) == ep
    assert runspec_mod.container_command(ep, cmd, ["sh", "-c"], ["run"]) == ["sh", "-c", "run"]


def test_predictor_env_adds_cpu_defaults_only_where_the_template_is_silent() -> None:
    spec = RunSpec(
        image="x", env={"MODEL_ID": "a/b", "ENFORCE_EAGER": "false"}, container_port=8080
    )
    env = runspec_mod.predictor_env(spec, port=1234, models="/mnt/models", gpu=False)
    assert env["ENFORCE_EAGER"] == "false" and env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert (env["PORT"], env["HOST"], env["MODELS_DIR"]) == ("1234", "127.0.0.1", "/mnt/models")
    gpu = runspec_mod.predictor_env(spec, port=1, models="/m", gpu=True)
    assert "VLLM_CPU_KVCACHE_SPACE" not in gpu


def test_predictor_env_passes_on_the_machines_cpu_binding(monkeypatch) -> None:
    """VLLM_CPU_OMP_THREADS_BIND of the local AI Core's own environment reaches CPU predictors
    (the test suite gives each worker's engines their own cores); the template's value wins."""
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    spec = RunSpec(image="x", env={}, container_port=8080)
    assert "VLLM_CPU_OMP_THREADS_BIND" not in runspec_mod.predictor_env(
        spec, port=1, models="/m", gpu=False
    )
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "1")
    assert (
        runspec_mod.predictor_env(spec, port=1, models="/m", gpu=False)["VLLM_CPU_OMP_THREADS_BIND"]
        == "1"
    )
    assert "VLLM_CPU_OMP_THREADS_BIND" not in runspec_mod.predictor_env(
        spec, port=1, models="/m", gpu=True
    )
    pinned = RunSpec(image="x", env={"VLLM_CPU_OMP_THREADS_BIND": "0"}, container_port=8080)
    assert (
        runspec_mod.predictor_env(pinned, port=1, models="/m", gpu=False)[
            "VLLM_CPU_OMP_THREADS_BIND"
        ]
        == "0"
    )
