"""``whisperops`` command line. One module per command group; this file only wires them up."""

from __future__ import annotations

import signal
import sys

from whisperops.cli import convert as _convert  # noqa: F401  (registers commands)
from whisperops.cli import data as _data  # noqa: F401  (registers commands)
from whisperops.cli import evaluate as _evaluate  # noqa: F401
from whisperops.cli import finetune as _finetune  # noqa: F401
from whisperops.cli import models as _models  # noqa: F401  (registers commands)
from whisperops.cli import runs as _runs  # noqa: F401
from whisperops.cli import serve as _serve  # noqa: F401
from whisperops.cli import transcribe as _transcribe  # noqa: F401
from whisperops.cli.app import Interrupted, app, err_console, exit_on_signals, raise_if_interrupted
from whisperops.errors import EXIT_USAGE, WhisperOpsError

__all__ = ["EXIT_USAGE", "main"]


def main() -> None:
    exit_on_signals()
    try:
        try:
            app()
        except SystemExit:
            raise_if_interrupted()  # a deferred signal that came after the last progress event
            raise
    except WhisperOpsError as err:
        # One line; usage errors (options, model names, dataset rows) exit 2, runtime failures 1.
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except Interrupted as err:
        # 128 + the signal's number, as shells report a process a signal stopped: 130 INT, 143 TERM.
        err_console.print(f"[yellow]interrupted[/] ({signal.Signals(err.signum).name})", highlight=False)
        sys.exit(128 + err.signum)
