"""Where whisperops keeps what it computes once and reuses (weights, downloads, transcripts)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def cache_dir() -> Path:
    """``$WHISPEROPS_CACHE``, else ``$XDG_CACHE_HOME/whisperops``, else ``~/.cache/whisperops``."""
    env = os.environ.get("WHISPEROPS_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "whisperops"


TMP_PREFIX = ".whisperops-"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write next to the target, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # A short temp name of its own: the target's name plus a suffix can pass the 255-byte name limit
    # when the target alone does not.
    tmp = path.with_name(f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
