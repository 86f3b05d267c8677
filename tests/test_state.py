from dataclasses import dataclass

import pytest

from labkit.errors import StepError
from labkit.state import State, open_lab


@dataclass
class Result:
    name: str
    size: int


def test_record_survives_a_reload_and_leaves_no_temp_files(tmp_path):
    state = State(tmp_path / "state.json")
    state.record("size", Result("m", 3))
    state.record("setup", {"profile": "local"})
    again = State(tmp_path / "state.json")
    assert again.get("size") == {"name": "m", "size": 3}
    assert again.get("setup") == {"profile": "local"}
    assert set(again.steps()) == {"size", "setup"}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_missing_step_names_the_notebook_to_run(tmp_path):
    with pytest.raises(StepError) as exc:
        State(tmp_path / "state.json").require("size")
    assert "01_size_model.ipynb" in str(exc.value)


def test_corrupt_state_is_a_clear_error(tmp_path):
    (tmp_path / "state.json").write_text("{half")
    with pytest.raises(StepError, match="not valid JSON"):
        State(tmp_path / "state.json")


def test_forget_removes_a_step(tmp_path):
    state = State(tmp_path / "state.json")
    state.record("size", {"fits": True})
    state.forget("size")
    assert State(tmp_path / "state.json").get("size") is None


def test_open_lab_uses_the_configured_lab_dir(lab_env):
    cfg, state = open_lab()
    assert state.path == lab_env / "state.json" == cfg.state_file


def test_record_keeps_what_another_kernel_recorded_meanwhile(tmp_path):
    first, second = State(tmp_path / "state.json"), State(tmp_path / "state.json")
    second.record("download", {"tar": "m.tar"})
    first.record("size", {"plan": "infer2.l"})  # e.g. the 01 form, long after it opened
    again = State(tmp_path / "state.json")
    assert again.get("download") == {"tar": "m.tar"} and again.get("size") == {"plan": "infer2.l"}
    first.forget("size")
    assert State(tmp_path / "state.json").get("download") == {"tar": "m.tar"}


def test_the_profile_chosen_in_00_carries_to_later_notebooks(lab_env, monkeypatch):
    monkeypatch.delenv("LABKIT_PROFILE", raising=False)
    cfg, state = open_lab(profile="")  # 00 with PROFILE = "": LABKIT_PROFILE, else local
    assert cfg.profile == "local"
    cfg, state = open_lab(profile="aicore")  # 00 with PROFILE = "aicore" records its choice
    state.record("setup", {"profile": cfg.profile})
    assert open_lab()[0].profile == "aicore"  # 01..99 declare no PROFILE
    assert open_lab(profile="local")[0].profile == "local"  # a parameter still wins
    # An explicit LABKIT_PROFILE (labkit run --profile, CI) wins, and says so.
    monkeypatch.setenv("LABKIT_PROFILE", "local")
    with pytest.warns(UserWarning, match="00_setup chose the aicore profile"):
        assert open_lab()[0].profile == "local"


def test_an_empty_parameter_is_unset(lab_env, monkeypatch):
    monkeypatch.setenv("LABKIT_BUCKET", "team-bucket")
    monkeypatch.setenv("LABKIT_RESOURCE_PLAN", "infer2.l")
    cfg, _ = open_lab(bucket="", resource_plan="", registry=None)
    assert (cfg.bucket, cfg.resource_plan) == ("team-bucket", "infer2.l")
    assert open_lab(bucket="mine")[0].bucket == "mine"
