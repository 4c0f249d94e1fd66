"""Declare each setting once: a dataclass field carries its default and its help text.

The CLI (``whisperops.cli.options.option``), the flows, the server and the docs' settings reference
all read defaults and help from these fields, so a default cannot drift between them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


def setting(default: Any = dataclasses.MISSING, *, help: str, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with its help text (``factory`` for mutable defaults)."""
    metadata = {"help": help}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def same_as(cls: type, name: str, *, default: Any = dataclasses.MISSING, help: str | None = None) -> Any:
    """A setting that repeats ``cls.name``'s default and help unless told otherwise.

    For a field that means the same as another class's (an evaluation's beam size is a decoding beam
    size), so a change to the original reaches both.
    """
    return setting(
        default_of(cls, name) if default is dataclasses.MISSING else default,
        help=help_of(cls, name) if help is None else help,
    )


def _field(cls: type, name: str) -> dataclasses.Field:
    try:
        return cls.__dataclass_fields__[name]  # type: ignore[attr-defined]
    except KeyError:
        raise AttributeError(f"{cls.__name__} has no setting {name!r}") from None


def default_of(cls: type, name: str) -> Any:
    """The declared default of ``cls.name`` (a fresh value for factory defaults)."""
    f = _field(cls, name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise AttributeError(f"{cls.__name__}.{name} has no default")


def help_of(cls: type, name: str) -> str:
    """The help text declared on ``cls.name``."""
    return _field(cls, name).metadata.get("help", "")


def describe(cls: type) -> list[dict[str, Any]]:
    """Every setting of ``cls``: name, type, default and help (for the generated settings reference)."""
    rows = []
    for f in dataclasses.fields(cls):
        try:
            default = default_of(cls, f.name)
        except AttributeError:
            default = None
        rows.append({"name": f.name, "type": str(f.type), "default": default, "help": f.metadata.get("help", "")})
    return rows


__all__ = ["default_of", "describe", "help_of", "same_as", "setting"]
