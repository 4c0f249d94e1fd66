"""The Typer application that every command module registers on.

Command modules import heavy libraries inside their functions, never at module level, so that
``whisperops --help`` stays well under half a second.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from collections.abc import Iterator

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


_received: list[int] = []
_deferred = False


def _raise_interrupted(signum: int, frame: object) -> None:
    first = not _received
    _received.append(signum)
    if _deferred and first:
        return  # raised at the next progress event (see deferred_signals)
    raise Interrupted(signum)


def raise_if_interrupted() -> None:
    """Raise a signal that arrived while signals were deferred (see :func:`deferred_signals`)."""
    if _received:
        raise Interrupted(_received[-1])


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """While media is decoded, a first signal only marks; the next progress event raises it.

    PyAV drops (or prints) an exception raised inside its read callbacks, so raising from the
    handler there would go unnoticed. A second signal raises at once.
    """
    global _deferred
    _deferred = True
    try:
        yield
    finally:
        _deferred = False
    raise_if_interrupted()


def exit_on_signals() -> None:
    """Make Ctrl-C and SIGTERM unwind: ``finally`` blocks run, a child run is stopped, temp files go."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupted)
    default_hook = sys.unraisablehook

    def quiet_swallowed_signal(unraisable) -> None:
        # A second signal dropped by native code would print its traceback; it is raised again later.
        if not isinstance(unraisable.exc_value, Interrupted):
            default_hook(unraisable)

    sys.unraisablehook = quiet_swallowed_signal


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
