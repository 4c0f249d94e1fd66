"""Errors users see. Each carries one line that names the input and the fix."""

from __future__ import annotations


class WhisperOpsError(Exception):
    """Base class: ``str(err)`` is a complete, one-line message for the user."""


class SourceError(WhisperOpsError):
    """A source (file, folder, list, URL) cannot be read or fetched."""


class AudioError(WhisperOpsError):
    """A media file cannot be decoded into audio, or holds none."""


class ModelNotFoundError(WhisperOpsError):
    """A model name resolves to no weights here."""


class OptionError(WhisperOpsError):
    """An option has a value we cannot use."""


class UnsupportedMediaError(AudioError):
    """Bytes that are not a plain audio/video container we decode (playlists, concat lists, images...)."""
