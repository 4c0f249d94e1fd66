"""Typer options built from the settings dataclasses, so the CLI never restates a default or its help."""

from __future__ import annotations

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


__all__ = ["bound_setting", "option"]
