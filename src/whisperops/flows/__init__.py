"""Metaflow flows: transcription at scale (``TranscriptionFlow``) and its card/report helpers.

Importing this package sets the environment Metaflow reads *when it is imported*, so it must be
imported before ``metaflow`` (``python -m whisperops.flows.transcription`` does that by itself).
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

FLOW_NAME = "TranscriptionFlow"
FLOW_FILE = Path(__file__).resolve().parent / "transcription.py"


def metaflow_env_defaults() -> dict[str, str]:
    """Environment defaults Metaflow needs here; values already set by the user always win.

    Metaflow refuses to run without a user name and rejects ``root`` as one, while containers and
    CI run as root: fall back to ``whisperops`` so a Docker run or a fresh CI clone just works.
    """
    env: dict[str, str] = {}
    user = os.environ.get("METAFLOW_USER") or os.environ.get("USERNAME") or os.environ.get("USER")
    if not user:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = ""
    if not user or user == "root":
        env["METAFLOW_USER"] = "whisperops"
    return env


def runtime_cwd() -> str:
    """Where to start a flow run so its cards land where the Client API looks for them.

    With ``METAFLOW_DATASTORE_SYSROOT_LOCAL`` set, Metaflow's local card writer still finds its root by
    walking up from the current directory (and ignores ``METAFLOW_CARD_LOCALROOT``), while
    ``get_cards`` reads ``<sysroot>/.metaflow/mf.cards``: running from the sysroot makes both agree.
    """
    sysroot = os.environ.get("METAFLOW_DATASTORE_SYSROOT_LOCAL")
    if not sysroot:
        return os.getcwd()
    Path(sysroot).mkdir(parents=True, exist_ok=True)
    return sysroot


def parameter(cls: type, name: str, flag: str, **kwargs: Any) -> Any:
    """A Metaflow ``Parameter`` with ``cls.name``'s declared default and help (the flow's ``--flag``).

    Like :func:`whisperops.cli.options.option` for the CLI: the flow never restates a default, and
    ``.setting`` records the binding for the test that checks every flow and CLI default.
    """
    from metaflow import Parameter

    from whisperops.config import default_of, help_of

    default = default_of(cls, name)
    # Metaflow parameters have no None; "" is how a flow says "not given".
    param = Parameter(flag, default="" if default is None else default, help=help_of(cls, name), **kwargs)
    param.setting = (cls, name)
    return param


def flow_classes() -> list[type]:
    """Every ``FlowSpec`` defined in this package's modules (imports them, and so metaflow)."""
    import importlib
    import inspect
    import pkgutil

    from metaflow import FlowSpec

    flows = []
    for info in pkgutil.iter_modules(__path__, f"{__name__}."):
        module = importlib.import_module(info.name)
        flows += [
            obj
            for obj in vars(module).values()
            if inspect.isclass(obj) and issubclass(obj, FlowSpec) and obj.__module__ == info.name
        ]
    return flows


def flow_parameters(flow: type) -> list[dict[str, Any]]:
    """The Metaflow parameters of ``flow`` as declared: attribute, ``--name``, default, help, setting.

    For the generated CLI reference and the settings test; ``setting`` is the ``(cls, name)`` that
    :func:`parameter` bound, else None.
    """
    from metaflow import Parameter

    rows = []
    for attr, param in vars(flow).items():
        if not isinstance(param, Parameter):
            continue
        # vars(), not getattr: a Parameter answers any attribute it lacks with a delayed value, and
        # keeps its declared keywords apart until the flow is initialised.
        state = vars(param)
        kwargs = state.get("kwargs") or state.get("_override_kwargs") or {}
        rows.append(
            {
                "attr": attr,
                "name": param.name,
                "default": kwargs.get("default"),
                "help": kwargs.get("help") or "",
                "type": kwargs.get("type"),
                "required": bool(kwargs.get("required")),
                "setting": state.get("setting"),
            }
        )
    return rows


def apply_metaflow_env() -> None:
    for key, value in metaflow_env_defaults().items():
        os.environ.setdefault(key, value)


apply_metaflow_env()
