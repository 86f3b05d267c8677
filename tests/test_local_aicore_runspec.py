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
