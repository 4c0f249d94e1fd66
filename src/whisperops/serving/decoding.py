"""Uploads through the engine: probed first, then streamed in bounded blocks with the limits enforced.

Nothing here holds a whole upload in memory: :func:`limited_blocks` feeds
:meth:`whisperops.engine.Engine.transcribe` the same windows a long file on disk gets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whisperops.errors import AudioError
from whisperops.results import Segment, Transcript
from whisperops.serving.errors import AudioTooLong
from whisperops.serving.pool import Cancelled

if TYPE_CHECKING:
    import numpy as np

    from whisperops.engine import DecodeOptions
    from whisperops.serving.app import ServerState


def too_long(filename: str, seconds: float, limit_s: float) -> AudioTooLong:
    return AudioTooLong(
        f"{filename}: {seconds:.0f} s of audio or more; this server accepts at most {limit_s:g} s (max_audio_s); "
        "send a shorter recording or split it"
    )


def check_duration(path: Path, filename: str, limit_s: float) -> None:
    """413 from the container's own duration, before any audio is decoded or a slot is taken."""
    from whisperops.audio import probe_duration

    duration = probe_duration(path)
    if duration is not None and duration > limit_s:
        raise too_long(filename, duration, limit_s)


def limited_blocks(
    blocks: Iterable[np.ndarray], filename: str, limit_s: float, cancel: threading.Event, sampling_rate: int
) -> Iterator[np.ndarray]:
    """``blocks`` until ``limit_s`` seconds have passed (413: a container can lie) or ``cancel`` is set.

    The cancel check matters for silence: it gives no segments, so a decode of hours of it would
    otherwise never see that its request was abandoned.
    """
    limit = int(limit_s * sampling_rate)
    total = 0
    for block in blocks:
        if cancel.is_set():
            raise Cancelled(filename)
        total += block.size
        if total > limit:
            raise too_long(filename, total / sampling_rate, limit_s)
        yield block
    if total == 0:
        raise AudioError(f"{filename}: contains no audio samples (zero-length clip)")


def transcribe(
    state: ServerState,
    name: str,
    path: Path,
    filename: str,
    options: DecodeOptions,
    cancel: threading.Event,
    on_segment: Callable[[Segment], None] | None = None,
) -> tuple[Transcript, Callable[[str], list[int]] | None]:
    """Worker-thread body: stream the upload through the engine; stop early if the request is abandoned.

    ``on_segment`` sees each segment as it is decoded (a streamed response sends it on).
    """
    from whisperops.audio import SAMPLE_RATE, DecodeReport, stream_audio

    def check(segment: Segment) -> None:
        if cancel.is_set():
            raise Cancelled(filename)
        if on_segment is not None:
            on_segment(segment)

    limit_s = state.settings.max_audio_s
    report = DecodeReport()
    with state.pool.use(name) as engine:
        blocks = limited_blocks(stream_audio(path, report=report), filename, limit_s, cancel, SAMPLE_RATE)
        transcript = engine.transcribe(blocks, options, source=filename, on_segment=check)
        # What decoding lost (damaged packets, truncation), as a file on disk would report it.
        transcript.warnings.extend(w.replace(str(path), filename) for w in report.warnings)
        tokenizer: Any = getattr(engine.model, "hf_tokenizer", None)
    tokenize = (lambda text: tokenizer.encode(text, add_special_tokens=False).ids) if tokenizer is not None else None
    return transcript, tokenize


def transcribe_diarized(
    state: ServerState,
    name: str,
    path: Path,
    filename: str,
    options: DecodeOptions,
    cancel: threading.Event,
    on_segment: Callable[[Segment], None] | None = None,
    references: dict[str, np.ndarray] | None = None,
) -> tuple[Transcript, Callable[[str], list[int]] | None]:
    """:func:`transcribe`, then speakers on its segments (``response_format=diarized_json``).

    ``on_segment`` sees the segments as they are decoded, before they have speakers: diarization
    needs the whole file. ``references`` (name -> clip) rename the clusters that sound like a known speaker.
    """
    from whisperops.diarize import DiarizeSettings, diarize_transcript

    transcript, tokenize = transcribe(state, name, path, filename, options, cancel, on_segment)
    if cancel.is_set():
        raise Cancelled(filename)
    settings = DiarizeSettings(diarize=True)
    return diarize_transcript(transcript, path, settings, keep_words=False, references=references), tokenize


__all__ = ["check_duration", "limited_blocks", "transcribe", "transcribe_diarized"]
