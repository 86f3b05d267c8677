"""labkit.templates.load: templates from files and text, strict YAML."""

from __future__ import annotations

import pytest

from labkit import templates
from labkit.templates import TemplateError


def test_load_errors_are_template_errors(tmp_path):
    with pytest.raises(TemplateError, match="cannot read the template"):
        templates.load(tmp_path / "nope.yaml")
    with pytest.raises(TemplateError, match="cannot read the template"):
        templates.load("nope.yaml")
    with pytest.raises(TemplateError, match="duplicate key 'kind'"):
        templates.load("apiVersion: x\nkind: a\nkind: b\n")
    with pytest.raises(TemplateError, match="no YAML mapping"):
        templates.load("- a\n- b\n")
