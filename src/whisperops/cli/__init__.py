"""``whisperops`` command line. One module per command group; this file only wires them up."""

from __future__ import annotations

import sys

from whisperops.cli import convert as _convert  # noqa: F401  (registers commands)
from whisperops.cli import data as _data  # noqa: F401  (registers commands)
from whisperops.cli import evaluate as _evaluate  # noqa: F401
from whisperops.cli import finetune as _finetune  # noqa: F401
from whisperops.cli import models as _models  # noqa: F401  (registers commands)
from whisperops.cli import runs as _runs  # noqa: F401
from whisperops.cli import serve as _serve  # noqa: F401
from whisperops.cli import transcribe as _transcribe  # noqa: F401
from whisperops.cli.app import app, err_console
from whisperops.errors import WhisperOpsError

EXIT_USAGE = 2


def main() -> None:
    try:
        app()
    except WhisperOpsError as err:
        # Bad options, unknown models and the like: one line, usage exit code.
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)
