"""Every CLI option and flow parameter that stands for a setting has its dataclass field's default and help.

The walk is generic: each command of the typer app (and each parameter of each Metaflow flow in
``whisperops.flows``) is found by introspection, so a new command or flow is covered without editing
this file. An option built with ``cli.options.option`` (a flow parameter with ``flows.parameter``)
records its field; an option declared by hand whose name matches a field of a class the same
command already binds is checked against that field too, so a restated literal that drifts fails.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import pytest
import typer

from whisperops.cli import app
from whisperops.cli.options import walk_commands
from whisperops.config import default_of, help_of


def _field_names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def _candidates(names: set[str], classes: set[type]) -> list[tuple[type, str]]:
    """Fields of ``classes`` that a hand-declared parameter called any of ``names`` stands for."""
    return [(cls, n) for cls in sorted(classes, key=lambda c: c.__qualname__) for n in names & _field_names(cls)]


def _normal(value: Any) -> Any:
    # click keeps a multiple option's default as a list; the dataclass may say tuple.
    return list(value) if isinstance(value, tuple) else value


def _check(where: str, cls: type, name: str, default: Any, help_text: str | None) -> list[str]:
    problems = []
    expected = help_of(cls, name)
    if not expected:
        problems.append(f"{where}: {cls.__name__}.{name} declares no help (use config.setting)")
    if _normal(default) != _normal(default_of(cls, name)):
        problems.append(f"{where}: default {default!r}, but {cls.__name__}.{name} declares {default_of(cls, name)!r}")
    if help_text != expected:
        problems.append(f"{where}: help {help_text!r}, but {cls.__name__}.{name} declares {expected!r}")
    return problems


def _cli_problems() -> tuple[list[str], int]:
    problems: list[str] = []
    checked = 0
    for path, command, bound in walk_commands(app):
        classes = {cls for cls, _ in bound.values()}
        for param in command.params:
            if param.param_type_name != "option" or param.name is None:
                continue
            where = f"{path} {param.opts[0]}"
            if param.name in bound:
                targets = [bound[param.name]]
            else:
                long_names = {o.lstrip("-").replace("-", "_") for o in param.opts if o.startswith("--")}
                targets = _candidates({param.name} | long_names, classes)
            for cls, name in targets:
                checked += 1
                problems += _check(where, cls, name, param.default, param.help)
    return problems, checked


def _flow_problems() -> tuple[list[str], int]:
    from whisperops.flows import flow_classes, flow_parameters

    problems: list[str] = []
    checked = 0
    for flow in flow_classes():
        params = flow_parameters(flow)
        classes = {p["setting"][0] for p in params if p["setting"]}
        for p in params:
            where = f"{flow.__name__} --{p['name']}"
            names = {p["attr"], p["name"].replace("-", "_")}
            targets = [p["setting"]] if p["setting"] else _candidates(names, classes)
            for cls, name in targets:
                checked += 1
                # A flow parameter cannot be None: "" is how it says "not given".
                default = None if p["default"] == "" and default_of(cls, name) is None else p["default"]
                problems += _check(where, cls, name, default, p["help"] or None)
    return problems, checked


def test_every_cli_option_has_its_settings_default_and_help():
    problems, checked = _cli_problems()
    assert checked >= 20, f"only {checked} options are bound to settings: is the walk still finding commands?"
    assert not problems, "\n".join(problems)


def test_every_flow_parameter_has_its_settings_default_and_help():
    problems, checked = _flow_problems()
    assert checked >= 8, f"only {checked} flow parameters are bound to settings"
    assert not problems, "\n".join(problems)


def test_a_restated_literal_that_drifts_is_caught(monkeypatch):
    """A hand-declared option named like a bound field, with another default, is reported."""
    from whisperops.cli.options import option
    from whisperops.engine import DecodeOptions

    drift = typer.Typer()

    @drift.command()
    def cmd(
        beam_size: int = option(DecodeOptions, "beam_size", "--beam-size"),
        task: str = typer.Option("translate", "--task", help=help_of(DecodeOptions, "task")),
        vad: bool = typer.Option(True, "--vad/--no-vad", help="Another help."),
    ) -> None:
        """Never run."""

    @drift.command()
    def other() -> None:
        """A second command, so typer keeps the group."""

    monkeypatch.setitem(globals(), "app", drift)
    problems, checked = _cli_problems()
    assert checked == 2  # beam_size (bound) and task (by name); --vad names no field of DecodeOptions
    assert len(problems) == 1 and "--task: default 'translate'" in problems[0], problems


@pytest.mark.parametrize("cls_path", ["whisperops.engine.DecodeOptions", "whisperops.evaluation.settings.EvalSettings"])
def test_settings_describe_every_field_with_help(cls_path):
    from whisperops.config import describe

    module, _, name = cls_path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    rows = describe(cls)
    assert [r["name"] for r in rows] == [f.name for f in dataclasses.fields(cls)]
    assert all(r["help"] for r in rows), [r["name"] for r in rows if not r["help"]]
