"""Decode any media PyAV reads into 16 kHz mono float32, with errors a user can act on."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from whisperops.errors import AudioError

SAMPLE_RATE = 16000

MEDIA_EXTENSIONS = frozenset(
    [
        ".wav",
        ".flac",
        ".mp3",
        ".ogg",
        ".oga",
        ".opus",
        ".m4a",
        ".aac",
        ".wma",
        ".aiff",
        ".aif",
        ".mp4",
        ".m4v",
        ".mkv",
        ".mov",
        ".webm",
        ".avi",
        ".3gp",
    ]
)


def is_media_path(path: Path) -> bool:
    return path.suffix.lower() in MEDIA_EXTENSIONS


def load_audio(path: str | Path, sampling_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sampling_rate``; raise :class:`AudioError` in one line."""
    import av
    from faster_whisper.audio import decode_audio

    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory; pass the folder as a source to transcribe its media")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes); re-download or re-export it")
    try:
        audio = decode_audio(str(path), sampling_rate=sampling_rate)
    except (av.error.FFmpegError, ValueError, IndexError, StopIteration) as err:
        # IndexError/StopIteration: PyAV opened a container that has no audio stream.
        reason = getattr(err, "strerror", None) or str(err) or "no audio stream"
        raise AudioError(f"{path}: cannot decode audio ({reason}); is it a real audio or video file?") from err
    if audio.size == 0:
        raise AudioError(f"{path}: contains no audio samples (zero-length clip)")
    return audio


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Content hash, so a renamed or re-downloaded file still hits the transcript cache."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
