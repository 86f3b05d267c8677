"""Generated inputs for step 05 (Hypothesis): the shipped template mutated field by field, broken
YAML, aliases, deep nesting and raw bytes. Lint gives a report (never an exception but the step's
TemplateError for unreadable input); render and bindings give a result or TemplateError; the CLI
exits 0/1 with the report or 2 with one line.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import re
import time
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st
from templates_common import CPU_BINDINGS, REQUIRED, REV, SHIPPED, URL, context, data, sub, text

from labkit import templates
from labkit.templates import LintReport, TemplateError
from labkit.templates.load import MAX_DEPTH, MAX_TEMPLATE_CHARS

RULE_CODES = set(templates.RULES)


def fewer(divisor: int) -> settings:
    """A share of the profile's examples for a test that lints or runs the CLI several times
    an example (the file stays fast; `make fuzz` still scales it up)."""
    return settings(max_examples=max(10, settings.default.max_examples // divisor))


INNER = {
    "labels": ("spec", "template", "metadata", "labels"),
    "annotations": ("spec", "template", "metadata", "annotations"),
    "spec": ("spec", "template", "spec"),
}
_PLACEHOLDER = re.compile(r"\{\{[^{}]*\}\}")


# --- the shipped template as trees: the outer mapping and its three inner strings parsed ----------


def _get(tree: Any, path: tuple) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _inner_tree(source: str) -> tuple[Any, dict[str, str]]:
    """An inner string parsed, each placeholder standing in as a token (restored on dumping)."""
    tokens: dict[str, str] = {}

    def token(match: re.Match[str]) -> str:
        quoted = match.group(1) is not None
        name = f"__ph{len(tokens)}{'q' if quoted else 'u'}__"
        tokens[name] = match.group(0).strip('"')
        return f'"{name}"' if quoted else name

    # a placeholder in quotes stays quoted, a bare one (minReplicas: {{...}}) stays bare
    stand_in = re.sub(r'(")?\{\{[^{}]*\}\}(?(1)")', token, source)
    return yaml.safe_load(stand_in), tokens


def _dump_inner(tree: Any, tokens: dict[str, str]) -> str:
    out = yaml.safe_dump(tree, sort_keys=False, allow_unicode=True, width=10**6)
    for name, placeholder in tokens.items():
        out = out.replace(name, f'"{placeholder}"' if name.endswith("q__") else placeholder)
    return out


def _shipped_trees() -> tuple[dict[str, Any], dict[str, tuple[Any, dict[str, str]]]]:
    outer = data()
    inners = {}
    for key, path in INNER.items():
        source = _get(outer, path)
        if key == "spec":  # the folded `value: >- {{...}}` is the same string as a quoted one
            source = re.sub(r">-\n\s*(\{\{[^{}]*\}\})", r'"\1"', source)
        inners[key] = _inner_tree(source)
    return outer, inners


OUTER, INNERS = _shipped_trees()


def _paths(tree: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path in a tree (mapping keys and list indexes), parents before children."""
    found = [prefix]
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            found += _paths(value, (*prefix, i))
    return found


OUTER_PATHS = [p for p in _paths(OUTER) if p]
INNER_PATHS = [(key, p) for key, (tree, _) in INNERS.items() for p in _paths(tree)]
# every key of the template, to add one where it does not belong
KEYS = sorted(
    {p[-1] for p in OUTER_PATHS + [p for _, p in INNER_PATHS] if p and isinstance(p[-1], str)}
)


def compose(outer: dict[str, Any], inners: dict[str, Any]) -> dict[str, Any]:
    """The template: the outer tree with each inner tree (still under its path) dumped back."""
    out = copy.deepcopy(outer)
    for key, path in INNER.items():
        try:
            holder = _get(out, path[:-1])
        except (KeyError, IndexError, TypeError):
            continue
        if isinstance(holder, dict) and holder.get(path[-1]) is _get(OUTER, path):
            holder[path[-1]] = _dump_inner(inners[key], INNERS[key][1])
    return out


def _is_original(outer: dict[str, Any], path: tuple) -> bool:
    try:
        return _get(outer, path) is _get(OUTER, path)
    except (KeyError, IndexError, TypeError):
        return False


# --- strategies -----------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([0, -1, 1, 2**63, -(2**70), 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.dates(),  # YAML's own types: !!timestamp, !!binary, !!set
    st.binary(max_size=6),
    st.sets(st.integers(0, 3), max_size=2),
    st.sampled_from([
        "", " ", "0", "-1", "1.5", "nan", "inf", "²", "٣", "9" * 5000, "1" + "0" * 400 + "k",
        "x" * 20_000, "日本語 ✓ \u202e", "\x00", "{{", "}}", "{{inputs.parameters.image}}",
        "{{inputs.artifacts.model}}", "{{ nope }}", "{{inputs.parameters.}}", "'", '"', ": -",
        "[", "{", "*a", "&a x", "!!python/object:os.system", "latest", "model", "kserve-container",
    ]),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=10), st.integers()), inner, max_size=4),
    ),
    max_leaves=12,
)


@st.composite
def mutated(draw: st.DrawFn, max_mutations: int = 3) -> dict[str, Any]:
    """The shipped template with a few fields deleted or replaced, at any level."""
    outer = copy.deepcopy(OUTER)
    # keep the identity of untouched inner strings (compose re-dumps only those)
    for path in INNER.values():
        _get(outer, path[:-1])[path[-1]] = _get(OUTER, path)
    inners = {k: copy.deepcopy(tree) for k, (tree, _) in INNERS.items()}
    for _ in range(draw(st.integers(1, max_mutations))):
        if draw(st.booleans()):
            path, tree, root = draw(st.sampled_from(OUTER_PATHS)), outer, None
        else:
            key, path = draw(st.sampled_from(INNER_PATHS))
            tree, root = inners, key
            path = (key, *path)
        try:
            parent = _get(tree, path[:-1])
            _get(parent, path[-1:])
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed it
        if root is not None and len(path) == 1:  # the inner tree itself: replace it
            inners[root] = draw(VALUES)
            continue
        op = draw(st.sampled_from(["delete", "replace", "add"]))
        target = _get(parent, path[-1:])
        if op == "delete" and isinstance(parent, dict | list):
            del parent[path[-1]]
        elif op == "add" and isinstance(target, dict):
            target[draw(st.sampled_from(KEYS) | st.text(max_size=8))] = draw(VALUES)
        elif op == "add" and isinstance(target, list):
            target.insert(draw(st.integers(0, len(target))), draw(VALUES))
        else:
            parent[path[-1]] = draw(VALUES)
    return compose(outer, inners)


def bindings_strategy() -> st.SearchStrategy[dict[str, Any]]:
    names = [p["name"] for p in OUTER["spec"]["inputs"]["parameters"]]
    return st.dictionaries(
        st.one_of(st.sampled_from(names), st.text(max_size=8)), VALUES, max_size=5
    ).map(lambda extra: {**CPU_BINDINGS, **extra})


# --- the invariants -------------------------------------------------------------------------------


def assert_report(report: Any) -> None:
    """A LintReport whose every output form works and whose findings name declared rules."""
    assert isinstance(report, LintReport)
    shape = report.to_dict()
    assert set(shape) == {"ok", "errors", "warnings"}
    assert shape["ok"] is (not shape["errors"])
    for finding in (*shape["errors"], *shape["warnings"]):
        assert set(finding) == {"rule", "message"}
        assert finding["rule"] in RULE_CODES
        assert isinstance(finding["message"], str) and finding["message"]
        assert len(finding["message"].splitlines()) == 1, finding
    json.loads(json.dumps(shape))
    assert report.to_text().splitlines()[-1]
    report._repr_html_()


def assert_one_line(exc: BaseException) -> None:
    line = str(exc)
    assert line and "\n" not in line and "Traceback" not in line


def lint_or_error(source: Any, **kwargs: Any) -> LintReport | None:
    """lint's report (checked), or None when it raised TemplateError (checked)."""
    try:
        report = templates.lint(source, **kwargs)
    except TemplateError as exc:
        assert_one_line(exc)
        return None
    assert_report(report)
    return report


def assert_rendered(rendered: templates.Rendered) -> None:
    assert isinstance(rendered.port, int) and not isinstance(rendered.port, bool)
    assert all(isinstance(v, str) for v in rendered.env.values())
    assert all(isinstance(s, str) for s in rendered.image_pull_secrets)
    json.dumps(rendered.to_dict())
    document = yaml.safe_load(rendered.to_yaml())
    assert document["kind"] == "InferenceService"
    rendered._repr_html_()


def render_or_error(tpl: Any, parameters: Any, artifacts: Any) -> templates.Rendered | None:
    try:
        rendered = templates.render(tpl, parameters, artifacts)
    except TemplateError as exc:
        assert_one_line(exc)
        return None
    assert_rendered(rendered)
    return rendered


def cli(*args: str) -> tuple[int, str, str]:
    """`labkit ARGS` in this process: (exit code, stdout, stderr); no fixture, for @given."""
    from labkit.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def assert_cli_lint(path: Any) -> None:
    """`labkit template lint --json`: exit 0/1 and the report, or exit 2 and one line."""
    code, out, err = cli("template", "lint", str(path), "--json")
    if code == 2:
        assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err, err
        return
    assert code in (0, 1), (code, err)
    report = json.loads(out)
    assert set(report) == {"ok", "errors", "warnings"} and report["ok"] is (code == 0)


# --- the generator is realistic: the trees dump back to the shipped template's findings -----------


def test_the_unmutated_trees_lint_like_the_shipped_template():
    rebuilt = compose(OUTER, {k: tree for k, (tree, _) in INNERS.items()})
    assert templates.lint(rebuilt).to_dict() == templates.lint(SHIPPED).to_dict()
    ctx = context(bind=CPU_BINDINGS)
    assert templates.lint(rebuilt, context=ctx).to_dict() == (
        templates.lint(SHIPPED, context=ctx).to_dict()
    )
    assert templates.render(rebuilt, CPU_BINDINGS, {"model": URL}) == templates.render(
        data(), CPU_BINDINGS, {"model": URL}
    )


# --- lint: mutated templates ----------------------------------------------------------------------


@fewer(5)
@given(mutated())
def test_lint_of_a_mutated_template_is_a_report(tpl):
    assert_report(templates.lint(tpl))
    try:
        as_text = yaml.safe_dump(tpl, sort_keys=False, allow_unicode=True)
    except yaml.YAMLError:
        return
    lint_or_error(as_text if "\n" in as_text else as_text + "\n")


@fewer(4)
@given(mutated(), bindings_strategy(), st.sampled_from([None, 0, -4, 1, 9, 12]))
def test_lint_with_a_context_is_a_report(tpl, bound, heads):
    ctx = context(bind={}, attention_heads=heads)
    ctx.parameters = bound
    assert_report(templates.lint(tpl, context=ctx))


@fewer(4)
@given(st.sampled_from(sorted(p["name"] for p in OUTER["spec"]["inputs"]["parameters"])), VALUES)
@example("numGpus", "0")
@example("image", "reg/img:latest\\nmore")
@example("numGpus", "²")
@example("numGpus", "9" * 5000)
@example("maxModelLen", "1" + "0" * 400 + "k")
@example("maxModelLen", "9" * 400 + "K")
@example("concurrencyTarget", "9" * 5000)
def test_lint_of_any_binding_is_a_report(name, value):
    assert_report(templates.lint(SHIPPED, context=context(bind={name: value})))


# --- render and bindings --------------------------------------------------------------------------


@fewer(3)
@given(mutated())
def test_render_of_a_mutated_template_is_a_result_or_template_error(tpl):
    render_or_error(tpl, CPU_BINDINGS, {"model": URL})


@fewer(4)
@given(bindings_strategy(), st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=2))
def test_render_and_bindings_of_any_values(bound, artifacts):
    render_or_error(data(), bound, {"model": URL, **artifacts})
    try:
        out = templates.bindings(data(), bound, {"model": None, **artifacts})
    except TemplateError as exc:
        assert_one_line(exc)
        return
    assert all(isinstance(b["value"], str) for b in out["parameterBindings"])


# --- text: broken YAML, bytes, aliases, nesting ---------------------------------------------------


@st.composite
def edited_text(draw: st.DrawFn) -> str:
    """The shipped text with a slice replaced by junk, truncated, or a line repeated or dropped."""
    source = text()
    start = draw(st.integers(0, len(source)))
    op = draw(st.sampled_from(["replace", "truncate", "dup", "drop"]))
    if op == "truncate":
        return source[:start]
    lines = source.splitlines(keepends=True)
    i = draw(st.integers(0, len(lines) - 1))
    if op == "dup":
        return "".join(lines[: i + 1] + lines[i:])
    if op == "drop":
        return "".join(lines[:i] + lines[i + 1 :])
    end = draw(st.integers(start, min(len(source), start + 40)))
    junk = draw(
        st.one_of(
            st.text(max_size=20),
            st.sampled_from(["\t", "  ", "- ", ": ", "*x", "&x ", "\n---\n", "{{", "'", "\x85"]),
        )
    )
    return source[:start] + junk + source[end:]


@fewer(3)
@given(edited_text())
def test_lint_of_edited_text_is_a_report(source):
    lint_or_error(source + "\n")


@fewer(3)
@given(st.binary(max_size=300) | edited_text().map(lambda s: s.encode("utf-8", "surrogatepass")))
@example(b"")
@example(b"\xff\xfe\x00")
@example(b"\x00\x01\x02")
@example(b"apiVersion: x\n---\nkind: y\n")
@example(b"spec: \xc3\x28\n")
def test_cli_lint_of_any_bytes(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("bytes") / "t.yaml"
    path.write_bytes(raw)
    assert_cli_lint(path)


def billion_laughs(levels: int, width: int) -> str:
    lines = ["a0: &a0 [lol]"]
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * width)
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append(f"spec: *a{levels}")
    return "\n".join(lines) + "\n"


@fewer(5)
@given(st.integers(1, 12), st.integers(1, 12), st.sampled_from(["top", "inner", "label"]))
@example(9, 10, "top")
@example(9, 10, "inner")
@example(9, 10, "label")  # before: the label check's repr() of 10**9 items never ended
def test_alias_expansion_is_bounded(levels, width, where):
    bomb = billion_laughs(levels, width)
    if where == "inner":
        inner = "\n".join("      " + line for line in bomb.splitlines())
        source = sub(text(), "    spec: |\n", "    spec: |\n" + inner + "\n")
    elif where == "label":
        source = bomb.replace("spec:", "x-spec:") + text()  # anchors before their use
        source = sub(source, '    ai.sap.com/version: "1.0.0"\n', f"    bomb: *a{levels}\n")
    else:
        source = text() + bomb.replace("spec:", "x-spec:")
    started = time.monotonic()
    report = lint_or_error(source)
    assert time.monotonic() - started < 10
    expanded = sum(width**i for i in range(levels + 1))
    if expanded > 1_000_000:
        assert report is not None and ({"yaml-parse", "inner-yaml"} & report.rules())
        assert "aliases expand" in report.to_text()


@fewer(4)
@given(st.integers(1, 3 * MAX_DEPTH), st.sampled_from(["[", "{a: ", "- ", "[{x: "]))
@example(5000, "[")
@example(MAX_DEPTH, "[")
@example(MAX_DEPTH + 1, "[")
def test_deep_nesting_is_a_finding(depth, opener):
    if opener == "- ":
        body = "".join("  " * i + "-\n" for i in range(depth)) + "  " * depth + "x\n"
    else:
        closer = {"[": "]", "{a: ": "}", "[{x: ": "}]"}[opener]
        body = opener * depth + "1" + closer * depth + "\n"
    for source in (f"spec:\n  inputs: {body}" if opener != "- " else body, body):
        report = lint_or_error(source)
        assert report is not None and not report.ok


@pytest.mark.parametrize(
    "source",
    [
        "a: &a [*a]\n",  # a recursive alias
        "a: &a {b: *a}\n",
        "spec: &s {template: *s}\n",
        "apiVersion: x\n---\nkind: y\n",  # two documents
        "",
        "\n\n# only a comment\n",
        "---\n...\n",
        "- a\n",
        "just text\n",
        "? [a, b]\n: c\n",  # a key that is no scalar
        "{1: x, 2.5: y, null: z, true: t}\n",  # keys of every type
        "apiVersion: 1\nkind: []\nmetadata: 5\nspec: [1, 2]\n",
        "spec: {inputs: {parameters: {a: 1}, artifacts: 7}, template: []}\n",
        "spec:\n  template:\n    spec: 12\n    metadata: {labels: [], annotations: 5}\n",
        "a: !!binary aGVsbG8=\nb: !!timestamp 2001-12-14\nc: !!set {x, y}\n",
        "a: !!python/object/apply:os.system [echo hi]\n",
        "<<: {apiVersion: ai.sap.com/v1alpha1}\nkind: ServingTemplate\n",
    ],
)
def test_odd_yaml_is_a_report(source):
    report = lint_or_error(source)
    assert report is not None and not report.ok


def test_huge_inputs_are_refused_without_reading_them(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("a: " + "x" * (MAX_TEMPLATE_CHARS + 10) + "\n")
    with pytest.raises(TemplateError, match="larger than"):
        templates.lint(big)
    assert_cli_lint(big)
    report = lint_or_error("a: " + "x" * (MAX_TEMPLATE_CHARS + 10) + "\n")
    assert report is not None and report.rules() == {"yaml-parse"}


def test_a_long_default_used_many_times_is_refused_when_rendered():
    # 100 KiB default x 40 uses = 4 MiB of rendered text from a 100 KiB file
    uses = "\n".join(f"          k{i}: {{{{inputs.parameters.image}}}}" for i in range(40))
    source = sub(
        text(), "        imagePullSecrets:\n", f"        x:\n{uses}\n        imagePullSecrets:\n"
    )
    tpl = templates.load(source)
    for p in tpl["spec"]["inputs"]["parameters"]:
        if p["name"] == "image":
            p["default"] = "x" * 100_000
    report = templates.lint(tpl)
    assert "inner-yaml" in report.rules() and "larger than" in report.to_text()
    with pytest.raises(TemplateError, match="larger than"):
        templates.render(tpl, {"modelId": REQUIRED["modelId"], "revision": REV}, {"model": URL})


def test_many_unclosed_braces_lint_in_linear_time():
    source = sub(text(), "    spec: |\n", "    spec: |\n      # " + "{{" * 200_000 + "\n")
    started = time.monotonic()
    assert_report(templates.lint(source))
    assert time.monotonic() - started < 10


# --- the CLI --------------------------------------------------------------------------------------


@fewer(10)
@given(mutated(max_mutations=2), st.lists(st.text(max_size=12), max_size=2))
def test_cli_lint_and_render_of_a_mutated_file(tmp_path_factory, tpl, pairs):
    path = tmp_path_factory.mktemp("cli") / "t.yaml"
    path.write_text(yaml.safe_dump(tpl, sort_keys=False, allow_unicode=True))
    assert_cli_lint(path)
    sets = [f"--set={pair}" for pair in pairs]  # --set=-x: argparse's own parsing stays out
    code, out, err = cli("template", "lint", str(path), "--json", *sets)
    assert code in (0, 1, 2) and "Traceback" not in err
    args = [f"--set={k}={v}" for k, v in REQUIRED.items()]
    code, out, err = cli(
        "template", "render", str(path), "--json", *args, "--artifact", f"model={URL}"
    )
    if code == 2:
        assert out == "" and len(err.splitlines()) == 1, err
    else:
        assert code == 0, err
        assert json.loads(out)["yaml"]


# --- regressions: inputs that crashed before ------------------------------------------------------


def test_regression_spec_as_a_list_from_an_alias_is_a_report(tmp_path):
    """Before: AttributeError ('list' object has no attribute 'items') in placeholder-location."""
    path = tmp_path / "list.yaml"
    path.write_text(
        "apiVersion: ai.sap.com/v1alpha1\nkind: ServingTemplate\nx: &a [1, 2]\nspec: *a\n"
    )
    report = templates.lint(path)
    assert "inner-string" in report.rules()
    code, out, _ = cli("template", "lint", str(path), "--json")
    assert code == 1 and json.loads(out)["ok"] is False


def test_regression_num_gpus_zero_is_an_env_value_error():
    """Before: ZeroDivisionError in the tensor-parallel check when attention heads are known."""
    report = templates.lint(SHIPPED, context=context(bind={"numGpus": "0"}))
    assert [f.rule for f in report.errors] == ["env-value"]
    assert "NUM_SHARD='0'" in report.errors[0].message


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('        imagePullSecrets:\n          - name: "{{inputs.parameters.imagePullSecret}}"\n',
         "        imagePullSecrets: 1\n"),
        ('          - name: "{{inputs.parameters.imagePullSecret}}"\n',
         "          - name: 2024-01-01\n"),
        ("        volumes: {{inputs.parameters.volumes}}\n", "        volumes: 7\n        x:\n"),
        ("            volumeMounts: {{inputs.parameters.volumeMounts}}\n",
         "            volumeMounts: 7\n            x:\n"),
    ],
)  # fmt: skip
def test_regression_fields_of_the_wrong_type_in_the_predictor(old, new):
    """Before: TypeError (int is not iterable) in lint and render, and a date as a pull secret
    name that `template render --json` could not print."""
    source = sub(text(), old, new)
    assert_report(templates.lint(source))
    render_or_error(source, REQUIRED, {"model": URL})


@pytest.mark.parametrize(
    "bind",
    [
        {"volumeMounts": "[{name: [], mountPath: /dev/shm}]"},  # the mount's name
        {"volumes": "[{name: {a: 1}, emptyDir: {medium: Memory}}]"},  # the volume's name
    ],
)
def test_regression_a_shm_volume_name_that_is_no_string(bind):
    """Before: TypeError (unhashable type: 'list') in the dev-shm check (found by `make fuzz`)."""
    shm = templates.with_shm({"numGpus": "2"})
    for gpus in ("1", "2", "x"):
        ctx = context(bind={**shm, "numGpus": gpus, **bind})
        assert_report(templates.lint(SHIPPED, context=ctx))


def test_regression_nul_in_a_path_is_a_template_error():
    """Before: ValueError (embedded null byte) from reading the file."""
    with pytest.raises(TemplateError, match="cannot read the template"):
        templates.lint("a\x00b.yaml")


@pytest.mark.parametrize("nan", [math.nan])
def test_nan_placeholder_values_do_not_matter(nan):
    assert_report(templates.lint(SHIPPED, context=context(bind={"gpuMemoryUtilization": nan})))
