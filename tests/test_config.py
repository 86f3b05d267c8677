import json

import pytest

from labkit.config import DEFAULT_MODEL_ID, load_config
from labkit.errors import ConfigError

SECRET = "s3cr3t-value-never-shown"


def test_parameters_win_over_environment_which_wins_over_dotenv(tmp_path, monkeypatch):
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / ".env").write_text(
        "LABKIT_BUCKET=from-dotenv\nLABKIT_REGISTRY=reg.dotenv:5000\n"
        "LABKIT_RESOURCE_GROUP=rg-dotenv\n"
    )
    monkeypatch.setenv("LABKIT_REGISTRY", "reg.env:5000")
    monkeypatch.setenv("LABKIT_RESOURCE_GROUP", "rg-env")
    cfg = load_config(root=tmp_path, resource_group="rg-param")
    assert cfg.bucket == "from-dotenv"
    assert cfg.registry == "reg.env:5000"
    assert cfg.resource_group == "rg-param"


def test_none_parameters_do_not_override(monkeypatch):
    monkeypatch.setenv("LABKIT_PROFILE", "aicore")
    assert load_config(profile=None).profile == "aicore"


def test_paths_derive_from_lab_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("LABKIT_LOCAL_DIR", raising=False)
    cfg = load_config(lab_dir=tmp_path)
    assert cfg.state_file == tmp_path / "state.json"
    assert cfg.local_model_dir == tmp_path / "local" / "models" / "SmolLM2-135M-Instruct"
    assert cfg.hub_cache_dir == tmp_path / "hub-cache"


def test_model_source_is_the_local_build_only_in_the_local_profile(tmp_path):
    assert load_config(profile="local").model_source.endswith("SmolLM2-135M-Instruct")
    assert load_config(profile="local").model_source != DEFAULT_MODEL_ID
    assert load_config(profile="aicore").model_source == DEFAULT_MODEL_ID
    assert load_config(profile="local", model_id="org/other").model_source == "org/other"


def test_invalid_setting_is_one_line_with_advice(monkeypatch):
    monkeypatch.setenv("LABKIT_PROFILE", "cloud")
    with pytest.raises(ConfigError) as exc:
        load_config()
    msg = str(exc.value)
    assert "\n" not in msg and "profile" in msg and "LABKIT_PROFILE" in msg


@pytest.mark.parametrize("var", ["HF_TOKEN", "LABKIT_HF_TOKEN"])
def test_secrets_are_masked_everywhere(monkeypatch, var):
    monkeypatch.setenv(var, SECRET)
    monkeypatch.setenv(
        "AICORE_SERVICE_KEY", json.dumps({"clientid": "id", "clientsecret": SECRET, "url": "u"})
    )
    cfg = load_config()
    assert cfg.hf_token.get_secret_value() == SECRET
    for text in (repr(cfg), str(cfg), json.dumps(cfg.public()), cfg._repr_html_()):
        assert SECRET not in text
    assert cfg.public()["hf_token"] == "********"


def test_service_key_from_file_and_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("AICORE_SERVICE_KEY", raising=False)
    assert load_config().service_key() is None
    key = tmp_path / "key.json"
    key.write_text(
        json.dumps(
            {
                "clientid": "id",
                "clientsecret": SECRET,
                "url": "https://auth",
                "serviceurls": {"AI_API_URL": "https://api"},
            }
        )
    )
    assert (
        load_config(aicore_service_key_file=key).service_key()["serviceurls"]["AI_API_URL"]
        == "https://api"
    )
    key.write_text("{not json " + SECRET)
    with pytest.raises(ConfigError) as exc:
        load_config(aicore_service_key_file=key).service_key()
    assert SECRET not in str(exc.value) and "not JSON" in str(exc.value)
    key.write_text(json.dumps({"clientid": "id"}))
    with pytest.raises(ConfigError, match="lacks"):
        load_config(aicore_service_key_file=key).service_key()
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(aicore_service_key_file=tmp_path / "missing.json").service_key()


def test_hub_endpoint_per_profile(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example")
    assert load_config(profile="local", hub_port=9999).hub_endpoint == "http://127.0.0.1:9999"
    assert load_config(profile="aicore").hub_endpoint == "https://hub.example"
    assert load_config(profile="aicore", hf_endpoint="https://x/").hub_endpoint == "https://x"


def test_executable_and_scenario_default_to_a_per_user_id(monkeypatch):
    """SAP Help, "Serving Templates": the executable id is unique in the whole tenant, so the
    lab's default carries the OS user; LABKIT_EXECUTABLE / LABKIT_SCENARIO set them."""
    from labkit.util import names

    monkeypatch.delenv("LABKIT_EXECUTABLE", raising=False)
    monkeypatch.delenv("LABKIT_SCENARIO", raising=False)
    monkeypatch.setattr(names.getpass, "getuser", lambda: "Jane.Doe")
    cfg = load_config()
    assert (cfg.executable, cfg.scenario) == ("labkit-vllm-jane-doe", "labkit-vllm-jane-doe")
    monkeypatch.setenv("LABKIT_EXECUTABLE", "team-llm-serving")
    monkeypatch.setenv("LABKIT_SCENARIO", "team.llms")
    cfg = load_config()
    assert (cfg.executable, cfg.scenario) == ("team-llm-serving", "team.llms")
    assert load_config(executable="other-exec").executable == "other-exec"  # a parameter wins
    for name, bad in (("executable", "Team_LLM"), ("executable", "abc"), ("scenario", "-x-")):
        with pytest.raises(ConfigError, match=f"invalid setting {name}") as exc:
            load_config(**{name: bad})
        assert "\n" not in str(exc.value) and f"LABKIT_{name.upper()}" in str(exc.value)


def test_unset_endpoints_show_where_the_steps_really_go(monkeypatch):
    from labkit import envcheck

    monkeypatch.delenv("LABKIT_S3_ENDPOINT_URL", raising=False)
    local = load_config(profile="local", s3_port=9123)
    page = local._repr_html_()
    assert "unset: http://127.0.0.1:9123" in page and "None: AWS" not in page
    plan = {p.notebook: p.uses for p in envcheck.step_plan(local)}
    assert plan["03_upload_to_s3"].endswith("via http://127.0.0.1:9123")
    tenant = load_config(profile="aicore")
    assert {p.notebook: p.uses for p in envcheck.step_plan(tenant)}["03_upload_to_s3"].endswith(
        "via AWS S3"
    )
    assert "unset: AWS S3" in tenant._repr_html_()
