"""The sizing form re-sizes when a value changes, and shows errors instead of raising."""

import pytest

from labkit import widgets

pytestmark = pytest.mark.integration


@pytest.fixture
def form(default_model):
    return widgets.sizing_form(str(default_model), max_model_len=2048)


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


def test_form_shows_an_error_and_keeps_the_last_report(form):
    before = form.report
    form.fields["model"].value = "/nonexistent/model"
    assert form.report is before and "/nonexistent/model" in form.error
