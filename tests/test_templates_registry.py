"""labkit.templates.rules.registry: the rule table is generated from the checks' declarations."""

from __future__ import annotations

from labkit import templates
from labkit.templates.rules import registry


def test_the_table_lists_every_declared_rule_once_in_table_order():
    rules = registry.rules()
    assert [r.code for r in rules] == list(registry.TABLE_ORDER) == list(templates.RULES)
    assert {r.code: r.doc for r in rules} == templates.RULES
    assert all(r.level in (registry.ERROR, registry.WARNING) for r in rules)


def test_every_rule_but_yaml_parse_has_one_check():
    owners = [r.code for c in registry.checks() for r in c.rules]
    assert sorted(owners) == sorted(set(registry.TABLE_ORDER) - {"yaml-parse"})


def test_checks_run_stage_by_stage():
    stages = [registry.STAGES.index(c.stage) for c in registry.checks()]
    assert stages == sorted(stages)
