"""Typer options built from the settings dataclasses, so the CLI never restates a default or its help."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import typer

from whisperops.config import default_of, help_of


def option(cls: type, name: str, *flags: str, help: str | None = None, **kwargs: Any) -> Any:
    """``typer.Option`` for ``cls.name``: its declared default and help; ``flags`` as typer takes them.

    The option remembers ``(cls, name)`` as ``.setting``, so tests can check every CLI default against
    its dataclass without a list of options to keep in step.
    """
    info = typer.Option(default_of(cls, name), *flags, help=help if help is not None else help_of(cls, name), **kwargs)
    info.setting = (cls, name)
    return info


def bound_setting(default: Any) -> tuple[type, str] | None:
    """The ``(cls, name)`` an :func:`option` was built from, or None for an option declared by hand."""
    return getattr(default, "setting", None)


def walk_commands(app: typer.Typer) -> Iterator[tuple[str, Any, dict[str, tuple[type, str]]]]:
    """Every command and group of ``app``: its path, its click command, and the settings it binds.

    The third item maps each parameter built with :func:`option` to its ``(cls, name)``; for the
    generated CLI reference and the test that checks every default against its dataclass.
    """
    import inspect

    def walk(command: Any, path: tuple[str, ...]) -> Iterator[tuple[str, Any, dict[str, tuple[type, str]]]]:
        bound: dict[str, tuple[type, str]] = {}
        if command.callback is not None:
            function = getattr(command.callback, "__wrapped__", command.callback)
            for name, param in inspect.signature(function).parameters.items():
                if (setting := bound_setting(param.default)) is not None:
                    bound[name] = setting
        yield " ".join(path), command, bound
        # Duck-typed: typer may build its commands on a click of its own, not the installed one.
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            yield from walk(sub, (*path, name))

    yield from walk(typer.main.get_command(app), (app.info.name or "whisperops",))


__all__ = ["bound_setting", "option", "walk_commands"]
