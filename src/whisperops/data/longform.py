"""Long-form test recordings built offline from shorter real ones, written as compressed FLAC.

Hour-long files are streamed piece by piece into the encoder, so building one never holds more
than a piece in memory (the point of the recordings is to check that transcribing them does not).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from whisperops.audio import SAMPLE_RATE, load_audio


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)


def write_flac(path: Path, pieces: Iterable[np.ndarray], sampling_rate: int = SAMPLE_RATE) -> Path:
    """Encode 16 kHz mono float32 ``pieces``, in order, into one FLAC file at ``path``."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="flac") as container:
        stream = container.add_stream("flac", rate=sampling_rate, layout="mono")
        for piece in pieces:
            pcm = (np.clip(piece, -1.0, 1.0) * 32767.0).astype(np.int16).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            frame.sample_rate = sampling_rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def looped(path: Path, clips: list[tuple[Path, str]], minutes: float, gap_s: float = 2.0) -> tuple[Path, str]:
    """``clips`` (audio, reference) played in turn, ``gap_s`` apart, until ``minutes`` are filled.

    Returns the file and its reference text (the clips' references in the same order).
    """
    audio = [load_audio(p) for p, _ in clips]
    target = int(minutes * 60 * SAMPLE_RATE)
    refs: list[str] = []

    def pieces() -> Iterable[np.ndarray]:
        written, k = 0, 0
        while written < target:
            clip = audio[k % len(audio)]
            refs.append(clips[k % len(clips)][1])
            yield clip
            yield silence(gap_s)
            written += clip.size + int(gap_s * SAMPLE_RATE)
            k += 1

    write_flac(path, pieces())
    return path, " ".join(refs)
