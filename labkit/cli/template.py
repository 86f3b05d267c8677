"""The `labkit template` commands of step 05: lint and render a ServingTemplate."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from labkit.cli.common import emit
from labkit.config import Config


def _template_pairs(pairs: Sequence[str] | None, option: str) -> dict[str, str]:
    from labkit.templates import TemplateError

    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise TemplateError(f"{option} {pair!r} is not KEY=VALUE", f"e.g. {option} dtype=half")
        out[key] = value
    return out


def _as_published(path: Path, cfg: Config) -> str:
    """The template as step 05 publishes it: with the lab's executable and scenario ids (the text
    as it is when they cannot be set; lint then reports why)."""
    from labkit import templates
    from labkit.templates.load import read_source

    text, _ = read_source(path)
    try:
        return templates.set_ids(text, executable=cfg.executable, scenario=cfg.scenario)
    except templates.TemplateError:
        return text


def _cmd_template_lint(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import templates
    from labkit.state import State

    values = _template_pairs(args.set, "--set")
    context = None
    source: Path | str = args.file
    if args.lab_state:
        source = _as_published(args.file, cfg)
        # The file as `publish` would name it in the synced folder is this template, not a clash.
        context = templates.LintContext.from_state(
            cfg,
            State(cfg.state_file),
            values,
            path_in_repo=f"{cfg.template_repo_path}/{args.file.name}",
        )
    elif values:
        context = templates.LintContext(parameters=values)
    # A missing file is a user error (exit 2); broken YAML is a finding (exit 1).
    report = templates.lint(source, context=context)
    report.source = str(args.file)
    emit(args, report.to_dict(), report.to_text())
    return 0 if report.ok else 1


def _cmd_template_render(args: argparse.Namespace, cfg: Config) -> int:
    from labkit import templates

    rendered = templates.render(
        templates.load(args.file),
        _template_pairs(args.set, "--set"),
        _template_pairs(args.artifact, "--artifact"),
    )
    if args.json:
        print(json.dumps(rendered.to_dict(), indent=2))
    else:
        sys.stdout.write(rendered.to_yaml())
    return 0


def add_parsers(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `template lint` and `template render`."""
    tpl = sub.add_parser(
        "template",
        help="render and lint AI Core ServingTemplates (step 05)",
        description="Render a ServingTemplate with AI Core's placeholder semantics, and lint it "
        "against SAP's, KServe's and the runtime's rules.",
    )
    tpl_sub = tpl.add_subparsers(dest="template_command", required=True, metavar="ACTION")
    bind = argparse.ArgumentParser(add_help=False)
    bind.add_argument("file", type=Path, help="the ServingTemplate YAML file")
    bind.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="bind a parameter as a configuration would (repeatable)",
    )
    tpl_lint = tpl_sub.add_parser(
        "lint",
        parents=[common, bind],
        help="check a template; exit 1 when it has errors",
        description="Lint a ServingTemplate: --json prints {ok, errors: [{rule, message}], "
        "warnings}; exit 1 on errors, warnings alone pass.",
    )
    tpl_lint.add_argument(
        "--lab-state",
        action="store_true",
        help="also cross-check with the lab state (sizing, downloaded revision, image), "
        "the ids set to the lab's (LABKIT_EXECUTABLE, LABKIT_SCENARIO) as step 05 publishes it",
    )
    tpl_lint.set_defaults(func=_cmd_template_lint)
    tpl_render = tpl_sub.add_parser(
        "render",
        parents=[common, bind],
        help="print the InferenceService AI Core would create",
        description="Render a ServingTemplate: bindings beat defaults, artifacts become URLs; "
        "prints the InferenceService YAML (or, with --json, its parts).",
    )
    tpl_render.add_argument(
        "--artifact",
        action="append",
        metavar="NAME=URL",
        help="the URL an input artifact is bound to, e.g. model=ai://default/models/x.tar",
    )
    tpl_render.set_defaults(func=_cmd_template_render)
