"""MkDocs hook: the reference pages, generated from the code at every build so they cannot drift.

* ``reference/cli.md``: every ``whisperops`` command (typer's click tree) and every Metaflow flow's
  parameters;
* ``reference/settings.md``: every settings dataclass (``whisperops.config.describe``), with the CLI
  flags and flow parameters bound to each field;
* ``reference/http.md`` (+ ``reference/openapi.json``): the server's OpenAPI schema,
  ``create_app().openapi()``.

A page that cannot be generated fails the build (``mkdocs build --strict`` runs in ``make test``).
"""

from __future__ import annotations

import inspect
import json
import sys
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File

# Settings classes that no CLI option binds (yet): listed so their page exists all the same.
EXTRA_SETTINGS = ("whisperops.serving.settings.ServeSettings", "whisperops.training.config.FinetuneConfig")


def on_config(config: Any) -> Any:
    # Metaflow's vendored yaml imports the old _yaml location; not ours to fix, and not a doc problem.
    warnings.filterwarnings("ignore", message="The _yaml extension module", category=DeprecationWarning)
    # Document this checkout's code, whatever an editable install elsewhere points at.
    src = str(Path(config.config_file_path).resolve().parent / "src")
    if src not in sys.path:
        sys.path.insert(0, src)
    return config


def on_files(files: Any, config: Any) -> Any:
    cli = _cli_commands()
    flows = _flows()
    pages = {
        "reference/cli.md": cli_page(cli, flows),
        "reference/settings.md": settings_page(cli, flows),
        "reference/http.md": http_page(),
        "reference/openapi.json": json.dumps(_openapi(), indent=2) + "\n",
    }
    for path, content in pages.items():
        files.append(File.generated(config, path, content=content))
    return files


# ---------------------------------------------------------------------------------------------
# Reading the code


def _cli_commands() -> list[tuple[str, Any, dict[str, tuple[type, str]]]]:
    """(command path, click command, {param name: bound (cls, field)}) for the app and every command."""
    from whisperops.cli import app
    from whisperops.cli.options import walk_commands

    return list(walk_commands(app))


def _flows() -> list[tuple[type, list[dict[str, Any]]]]:
    from whisperops.flows import flow_classes, flow_parameters

    return [(flow, flow_parameters(flow)) for flow in sorted(flow_classes(), key=lambda f: f.__name__)]


def _openapi() -> dict[str, Any]:
    from whisperops.serving import ServeSettings, create_app

    # Building the app loads no model (each loads on its first request).
    return create_app(ServeSettings()).openapi()


# ---------------------------------------------------------------------------------------------
# Formatting


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def _code(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return f"`{_cell(value)}`"


def _option_default(param: Any) -> str:
    if param.required:
        return "required"
    if getattr(param, "is_flag", False) and param.secondary_opts:
        return _code(param.opts[0] if param.default else param.secondary_opts[0])
    if getattr(param, "is_flag", False):
        return _code(param.opts[0]) if param.default else ""
    return _code(param.default)


def _usage(path: str, command: Any) -> str:
    pieces = [path, "[OPTIONS]"]
    for p in command.params:
        if p.param_type_name == "argument":
            name = p.name.upper() + ("..." if p.nargs == -1 else "")
            pieces.append(name if p.required else f"[{name}]")
    if hasattr(command, "commands"):
        pieces.append("COMMAND [ARGS]...")
    return " ".join(pieces)


def _anchor(path: str) -> str:
    return path.replace(" ", "-").replace(".", "")


def cli_page(cli: list[tuple[str, Any, dict]], flows: list[tuple[type, list[dict]]]) -> str:
    lines = [
        "# Command line",
        "",
        "Generated from the code at build time: every command, argument and option with its default.",
        "Defaults bound to a settings field link to it in [Settings](settings.md).",
        "",
    ]
    for path, command, bound in cli:
        level = "#" * min(2 + path.count(" ") - 1, 4) if path != "whisperops" else "##"
        lines += [f"{level} `{path}` {{#{_anchor(path)}}}", ""]
        if command.help:
            lines += [inspect.cleandoc(command.help), ""]
        if hasattr(command, "commands"):
            subs = ", ".join(f"[`{name}`](#{_anchor(f'{path} {name}')})" for name in sorted(command.commands))
            lines += [f"Commands: {subs}.", ""]
        lines += ["```text", _usage(path, command), "```", ""]
        params = [p for p in command.params if p.name not in ("help",)]
        if not params:
            continue
        lines += ["| argument / option | default | meaning |", "|---|---|---|"]
        for p in params:
            if p.param_type_name == "argument":
                name = f"`{p.name.upper()}`" + (" ..." if p.nargs == -1 else "")
                meaning = getattr(p, "help", None) or ""
            else:
                name = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
                meaning = p.help or ""
            if p.name in bound:
                cls, field = bound[p.name]
                meaning += f" ([`{cls.__name__}.{field}`](settings.md#{cls.__name__.lower()}))"
            lines.append(f"| {name} | {_option_default(p)} | {_cell(meaning)} |")
        lines.append("")
    lines += [
        "## Flows",
        "",
        "Each flow also runs under Metaflow's own CLI, `python -m MODULE run --PARAMETER VALUE ...`",
        "(plus `resume`, `card view`, `--with`, `argo-workflows create`, ...: see Metaflow's documentation).",
        "",
    ]
    for flow, params in flows:
        module = flow.__module__
        lines += [f"### `{flow.__name__}` {{#{flow.__name__.lower()}}}", ""]
        if flow.__doc__:
            lines += [inspect.cleandoc(flow.__doc__), ""]
        lines += ["```text", f"python -m {module} run [--PARAMETER VALUE ...]", "```", ""]
        lines += ["| parameter | default | meaning |", "|---|---|---|"]
        for p in params:
            default = "required" if p["required"] else _code(p["default"])
            meaning = p["help"]
            if p["setting"]:
                cls, field = p["setting"]
                meaning += f" ([`{cls.__name__}.{field}`](settings.md#{cls.__name__.lower()}))"
            lines.append(f"| `--{p['name']}` | {default} | {_cell(meaning)} |")
        lines.append("")
    return "\n".join(lines)


def _settings_classes(cli: list[tuple[str, Any, dict]], flows: list[tuple[type, list[dict]]]) -> list[type]:
    import importlib

    classes: dict[str, type] = {}
    for _, _, bound in cli:
        for cls, _ in bound.values():
            classes[f"{cls.__module__}.{cls.__qualname__}"] = cls
    for _, params in flows:
        for p in params:
            if p["setting"]:
                cls = p["setting"][0]
                classes[f"{cls.__module__}.{cls.__qualname__}"] = cls
    for dotted in EXTRA_SETTINGS:
        module, _, name = dotted.rpartition(".")
        classes.setdefault(dotted, getattr(importlib.import_module(module), name))
    return [classes[k] for k in sorted(classes, key=lambda k: k.rpartition(".")[2])]


def settings_page(cli: list[tuple[str, Any, dict]], flows: list[tuple[type, list[dict]]]) -> str:
    from whisperops.config import describe

    where: dict[tuple[type, str], list[str]] = defaultdict(list)
    for path, command, bound in cli:
        for p in command.params:
            if p.name in bound:
                where[bound[p.name]].append(f"[`{path} {p.opts[0]}`](cli.md#{_anchor(path)})")
    for flow, params in flows:
        for p in params:
            if p["setting"]:
                where[p["setting"]].append(f"[`{flow.__name__} --{p['name']}`](cli.md#{flow.__name__.lower()})")
    lines = [
        "# Settings",
        "",
        "Every setting is declared once, on a dataclass field with `whisperops.config.setting(default, help=...)`;",
        "the CLI options, flow parameters, benchmarks and this page read the default and the help from there",
        "(`tests/test_settings.py` checks that every option and parameter agrees). Generated at build time.",
        "",
    ]
    for cls in _settings_classes(cli, flows):
        doc = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].replace("\n", " ")
        lines += [f"## `{cls.__name__}` {{#{cls.__name__.lower()}}}", "", f"`{cls.__module__}.{cls.__qualname__}`"]
        lines += ["", doc, "", "| field | type | default | set with | meaning |", "|---|---|---|---|---|"]
        for row in describe(cls):
            used = ", ".join(where.get((cls, row["name"]), []))
            default = _code(row["default"]) if row["default"] not in (None, "") else "`None`"
            lines.append(f"| `{row['name']}` | {_type(row['type'])} | {default} | {used} | {_cell(row['help'])} |")
        lines.append("")
    return "\n".join(lines)


def _type(annotation: str) -> str:
    # A "|" would end the table cell, escaped or not inside a code span.
    return " or ".join(f"`{part.strip()}`" for part in annotation.split("|"))


def _schema_type(schema: dict[str, Any]) -> str:
    if "anyOf" in schema:
        return " or ".join(_schema_type(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"array of {_schema_type(schema.get('items', {}))}"
    if "$ref" in schema:
        return schema["$ref"].rpartition("/")[2]
    return schema.get("type", "any")


def http_page() -> str:
    spec = _openapi()
    schemas = spec.get("components", {}).get("schemas", {})
    info = spec["info"]
    lines = [
        "# HTTP API",
        "",
        f"{info.get('description', '')} Generated at build time from `create_app().openapi()`",
        f"(version {info['version']}); the raw schema is [openapi.json](openapi.json), and a running server",
        "serves it at `/openapi.json` with interactive docs at `/docs`.",
        "",
        "Endpoints marked *Bearer key* need `Authorization: Bearer KEY` when the server was started with",
        "`--api-key` (or `WHISPEROPS_API_KEY`).",
        "",
    ]
    for route, methods in spec["paths"].items():
        for method, op in methods.items():
            auth = " · *Bearer key*" if op.get("security") else ""
            lines += [f"## `{method.upper()} {route}`", "", f"**{op.get('summary', '')}**{auth}", ""]
            if op.get("description"):
                lines += [inspect.cleandoc(op["description"]), ""]
            params = op.get("parameters", [])
            if params:
                lines += ["| parameter | in | type | required | meaning |", "|---|---|---|---|---|"]
                for p in params:
                    lines.append(
                        f"| `{p['name']}` | {p['in']} | {_schema_type(p.get('schema', {}))} | "
                        f"{'yes' if p.get('required') else ''} | {_cell(p.get('description', ''))} |"
                    )
                lines.append("")
            body = op.get("requestBody")
            if body:
                for media, content in body.get("content", {}).items():
                    schema = content.get("schema", {})
                    if "$ref" in schema:
                        schema = schemas.get(schema["$ref"].rpartition("/")[2], {})
                    required = set(schema.get("required", []))
                    lines += [f"Request body: `{media}`", ""]
                    lines += ["| field | type | default | required | meaning |", "|---|---|---|---|---|"]
                    for name, prop in schema.get("properties", {}).items():
                        lines.append(
                            f"| `{name}` | {_schema_type(prop)} | {_code(prop.get('default'))} | "
                            f"{'yes' if name in required else ''} | {_cell(prop.get('description', ''))} |"
                        )
                    lines.append("")
            responses = op.get("responses", {})
            if responses:
                lines += ["| status | meaning |", "|---|---|"]
                lines += [f"| {code} | {_cell(r.get('description', ''))} |" for code, r in responses.items()]
                lines.append("")
    return "\n".join(lines)
