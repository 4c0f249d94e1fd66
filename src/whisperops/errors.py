"""Errors users see. Each carries one line that names the input and the fix.

``exit_code`` is what the CLI exits with: 2 for usage errors (an option, a model name, a dataset
row: fix the command or its input), 1 for runtime failures (training, export, a job).
"""

from __future__ import annotations

EXIT_RUNTIME = 1
EXIT_USAGE = 2


class WhisperOpsError(Exception):
    """Base class: ``str(err)`` is a complete, one-line message for the user."""

    exit_code = EXIT_RUNTIME


class SourceError(WhisperOpsError):
    """A source (file, folder, list, URL) cannot be read or fetched."""


class AudioError(WhisperOpsError):
    """A media file cannot be decoded into audio, or holds none."""


class ModelNotFoundError(WhisperOpsError):
    """A model name resolves to no weights here."""

    exit_code = EXIT_USAGE


class OptionError(WhisperOpsError):
    """An option has a value we cannot use."""

    exit_code = EXIT_USAGE


class UnsupportedMediaError(AudioError):
    """Bytes that are not a plain audio/video container we decode (playlists, concat lists, images...)."""
