"""Griffe extension: a settings field's ``help=`` becomes its docstring in the Python reference.

Fields declared with ``whisperops.config.setting`` (or ``same_as``) carry their help as dataclass
metadata, not as a docstring; reading it from the class at build time keeps one declaration.
"""

from __future__ import annotations

import ast
import importlib
from typing import Any

import griffe

SETTING_CALLS = {"setting", "same_as"}


def _called_name(node: ast.AST) -> str | None:
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


class SettingsHelp(griffe.Extension):
    def on_attribute_instance(self, *, node: Any, attr: griffe.Attribute, **kwargs: Any) -> None:
        value = getattr(node, "value", None)
        if _called_name(value) not in SETTING_CALLS or attr.docstring is not None or not attr.parent:
            return
        from whisperops.config import help_of

        cls_path = attr.parent.path
        module, _, cls_name = cls_path.rpartition(".")
        cls = getattr(importlib.import_module(module), cls_name)
        attr.docstring = griffe.Docstring(help_of(cls, attr.name), parent=attr)
