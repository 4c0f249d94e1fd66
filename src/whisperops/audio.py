"""Decode any media PyAV reads into 16 kHz mono float32, with errors a user can act on."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
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
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory; pass the folder as a source to transcribe its media")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes); re-download or re-export it")
    blocks = list(stream_audio(path, sampling_rate=sampling_rate))
    audio = np.concatenate(blocks) if blocks else np.empty(0, dtype=np.float32)
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


def probe_duration(path: str | Path) -> float | None:
    """Container duration in seconds without decoding (None when the container does not say)."""
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if container.duration is not None:
                return container.duration / av.time_base
            stream = next(iter(container.streams.audio), None)
            if stream is not None and stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
    except (av.error.FFmpegError, ValueError):
        return None
    return None


def stream_audio(path: str | Path, block_s: float = 30.0, sampling_rate: int = SAMPLE_RATE) -> Iterator[np.ndarray]:
    """Decode ``path`` incrementally into mono float32 blocks of about ``block_s`` seconds.

    Memory stays bounded by a block, where :func:`load_audio` holds the whole file (twice, while
    converting): what makes hour-long recordings affordable.
    """
    import av

    block = int(block_s * sampling_rate)
    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=sampling_rate)
    pending: list[np.ndarray] = []
    size = 0
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            frames = container.decode(audio=0)
            while True:
                try:
                    frame = next(frames)
                except StopIteration:
                    frame = None
                except av.error.InvalidDataError:
                    continue  # a damaged packet: skip it, as faster-whisper's decoder does
                if frame is not None:
                    frame.pts = None
                for out in resampler.resample(frame):
                    pcm = out.to_ndarray().reshape(-1).astype(np.float32) / 32768.0
                    pending.append(pcm)
                    size += pcm.size
                    if size >= block:
                        yield np.concatenate(pending)
                        pending, size = [], 0
                if frame is None:
                    break
    except (av.error.FFmpegError, ValueError, IndexError, StopIteration) as err:
        reason = getattr(err, "strerror", None) or str(err) or "no audio stream"
        raise AudioError(f"{path}: cannot decode audio ({reason}); is it a real audio or video file?") from err
    if pending:
        yield np.concatenate(pending)


def quiet_windows(
    blocks: Iterable[np.ndarray], window_s: float, search_s: float = 20.0, sampling_rate: int = SAMPLE_RATE
) -> Iterator[tuple[int, np.ndarray]]:
    """Regroup blocks into ``(start_sample, window)`` pieces of at most ``window_s`` seconds.

    Each cut is placed at the quietest 100 ms in the window's last ``search_s`` seconds, so a cut
    rarely falls inside a word.
    """
    window, search, hop = int(window_s * sampling_rate), int(search_s * sampling_rate), sampling_rate // 10
    buffer = np.empty(0, dtype=np.float32)
    start = 0
    for block in blocks:
        buffer = np.concatenate([buffer, block])
        while buffer.size > window:
            region = buffer[max(0, window - search) : window]
            frames = region[: region.size // hop * hop].reshape(-1, hop)
            quietest = int(np.argmin(np.sqrt((frames**2).mean(axis=1)))) if frames.size else 0
            cut = max(0, window - search) + quietest * hop + hop // 2
            yield start, buffer[:cut]
            start += cut
            buffer = buffer[cut:]
    if buffer.size:
        yield start, buffer
