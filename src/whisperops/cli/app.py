"""The Typer application that every command module registers on.

Command modules import heavy libraries inside their functions, never at module level, so that
``whisperops --help`` stays well under half a second.
"""

from __future__ import annotations

import logging
import signal

import typer
from rich.console import Console

from whisperops import __version__

app = typer.Typer(
    name="whisperops",
    help="Run OpenAI Whisper in production: transcribe at scale, evaluate, fine-tune and serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
console = Console()
err_console = Console(stderr=True)


class Interrupted(BaseException):
    """SIGINT or SIGTERM, raised where the program is, so cleanup runs and the exit code says which.

    Not a KeyboardInterrupt: click turns those into "Aborted!" and exit 1 before ``main`` sees them.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


def _raise_interrupted(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def exit_on_signals() -> None:
    """Make Ctrl-C and SIGTERM unwind: ``finally`` blocks run, a child run is stopped, temp files go."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupted)


def progress_bar():
    """The one progress-bar look for every long command (on stderr, gone when done)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )


def _version(value: bool) -> None:
    if value:
        console.print(f"whisperops {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More logging (-v info, -vv debug)."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
