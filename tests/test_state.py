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
