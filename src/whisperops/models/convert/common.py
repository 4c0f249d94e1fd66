"""What every conversion shares: the error type and finding the source weights."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from whisperops.errors import WhisperOpsError
from whisperops.models import registry


class ConversionError(WhisperOpsError):
    """Weights cannot be converted (wrong format, missing files, unsupported target)."""


def resolve_source(model: str | Path, fmt: str) -> Path:
    """Directory of ``model`` (a registry name or a directory), checked to be in format ``fmt``."""
    path = registry.resolve(model)
    found = registry.detect_format(path)
    if found != fmt:
        hint = {"ct2": "--to hf", "hf": "--to ct2"}[found] if found in ("ct2", "hf") else ""
        raise ConversionError(
            f"model {str(model)!r} at {path} is in {found} format, not {fmt}"
            + (f"; convert it with whisperops convert {model} {hint} first" if hint else "")
        )
    return path


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No per-shard progress bars from transformers while converting (restored afterwards)."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
