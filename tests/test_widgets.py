"""The step 01 form: seeded from the parameters, re-sizes on change (the model on Enter only),
records what it shows as the step's result, sizes Hub models from the lab's Hub, and shows errors
instead of raising."""

import pytest

from labkit import widgets
from labkit.config import load_config
from labkit.local.hub import DEFAULT_REPO_ID
from labkit.state import State

pytestmark = pytest.mark.integration


def press_enter(text_box) -> None:
    """What pressing Enter in an ipywidgets Text sends: the front end's "submit" message."""
    text_box._handle_string_msg(None, {"event": "submit"}, None)


@pytest.fixture
def state(lab_env):
    return State(lab_env / "state.json")


@pytest.fixture
def form(default_model, state):
    return widgets.sizing_form(str(default_model), state=state, max_model_len=2048)


def test_form_is_seeded_from_the_parameters_and_resizes_on_change(form):
    assert form.report.max_model_len == 2048
    assert form.report.plan == form.report.smallest_fitting_plan
    form.fields["plan"].value = "infer2.l"
    assert form.report.plan == "infer2.l" and form.report.gpu_type == "A10G"
    form.fields["gpu_memory_utilization"].value = 0.5
    assert form.report.gpu_memory_utilization == 0.5
    form.fields["max_model_len"].value = 4096
    assert form.report.max_model_len == 4096
    form.fields["dtype"].value = "float32"
    assert form.report.dtype == "float32"
    assert form.result() is form.report


def test_a_change_in_the_form_is_the_recorded_result_and_the_form_says_so(form, state):
    assert state.get("size") is None  # seeding records nothing: the notebook's cell does
    assert "FITS" in form.verdict.value and form.report.plan in form.verdict.value
    form.fields["plan"].value = "infer2.l"
    recorded = State(state.path).require("size")
    assert recorded["plan"] == "infer2.l" and recorded["vllm_args"] == form.report.vllm_args
    assert "infer2.l" in form.verdict.value and "recorded" in form.note.value
    form.fields["max_model_len"].value = 8192
    assert State(state.path).require("size")["max_model_len"] == 8192


def test_the_utilisation_slider_shows_for_gpu_plans_only(form):
    catalogue = widgets.sizing.load_catalogue()
    cpu = next(p.name for p in catalogue.plans if p.gpus == 0)
    form.fields["plan"].value = cpu
    assert form.report.device == "cpu"
    assert form.fields["gpu_memory_utilization"].layout.display == "none"
    form.fields["plan"].value = "infer2.l"
    assert form.fields["gpu_memory_utilization"].layout.display is None


def test_the_model_is_read_on_enter_only_and_errors_show_in_the_form(form, state):
    before = form.report
    form.fields["model"].value = "/nonexistent/mo"  # typing: nothing is sized yet
    assert form.report is before and form.error is None
    form.fields["model"].value = "/nonexistent/model"
    press_enter(form.fields["model"])
    assert form.report is before and "/nonexistent/model" in form.error
    assert "/nonexistent/model" in form.verdict.value
    with pytest.raises(Exception, match="/nonexistent/model"):
        form.result()
    assert state.get("size") is None


def test_a_hub_repo_id_is_sized_from_the_labs_hub(local_hub, monkeypatch, state):
    # HF_ENDPOINT would send it to a closed port: the lab's Hub setting is what counts.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    form = widgets.sizing_form(DEFAULT_REPO_ID, cfg=load_config(), state=state)
    assert form.error is None and form.report.model == DEFAULT_REPO_ID
