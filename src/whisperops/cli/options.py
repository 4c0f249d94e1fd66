"""Typer options built from the settings dataclasses, so the CLI never restates a default or its help."""

from __future__ import annotations

from typing import Any

import typer

from whisperops.config import default_of, help_of


def option(cls: type, name: str, *flags: str, help: str | None = None, **kwargs: Any) -> Any:
    """``typer.Option`` for ``cls.name``: its declared default and help; ``flags`` as typer takes them."""
    return typer.Option(default_of(cls, name), *flags, help=help if help is not None else help_of(cls, name), **kwargs)


__all__ = ["option"]
