"""Griffe extension: docstrings read as the code means them, with one declaration per setting.

* A settings field (``whisperops.config.setting`` or ``same_as``) carries its help as dataclass
  metadata, not as a docstring: its help becomes the field's docstring and its default the value
  shown, both read from the class at build time.
* The code's docstrings use Sphinx roles (``:class:`Transcript```) and reST's ``Example::``;
  Markdown has neither, so they become plain code spans and a colon.
"""

from __future__ import annotations

import ast
import importlib
import re
from typing import Any

import griffe

SETTING_CALLS = {"setting", "same_as"}
SPHINX_ROLE = re.compile(r":(?:class|meth|func|attr|mod|data|exc|obj):`~?([^`]+)`")
# reST's "Example::" before an indented block; Markdown shows the block as code anyway.
LITERAL_MARKER = re.compile(r"(\S)::$", re.MULTILINE)


def _called_name(node: Any) -> str | None:
    if not isinstance(node, ast.Call):
        return None
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


class SettingsHelp(griffe.Extension):
    def on_attribute_instance(self, *, node: Any, attr: griffe.Attribute, **kwargs: Any) -> None:
        if _called_name(getattr(node, "value", None)) not in SETTING_CALLS or not attr.parent:
            return
        from whisperops.config import default_of, help_of

        module, _, cls_name = attr.parent.path.rpartition(".")
        cls = getattr(importlib.import_module(module), cls_name)
        if attr.docstring is None:
            attr.docstring = griffe.Docstring(help_of(cls, attr.name), parent=attr)
        try:
            attr.value = repr(default_of(cls, attr.name))
        except AttributeError:  # no default: a required field
            attr.value = None

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = SPHINX_ROLE.sub(lambda m: f"`{m.group(1)}`", obj.docstring.value)
            obj.docstring.value = LITERAL_MARKER.sub(r"\1:", text)
