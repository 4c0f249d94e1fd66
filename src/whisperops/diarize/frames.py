"""Frame-level speaker labels to turns, shared by the engines and the channel splitter."""

from __future__ import annotations

import string
from collections.abc import Sequence

import numpy as np

from whisperops.diarize import Turn

# -1 marks a frame with no speech.
SILENCE = -1


def speech_mask(
    audio: np.ndarray,
    sr: int,
    hop_s: float,
    *,
    min_silence_ms: int = 300,
    heard: Sequence[tuple[float, float]] = (),
) -> np.ndarray:
    """One bool per ``hop_s`` frame: Silero VAD (shipped inside faster-whisper) heard speech there,
    or the transcript ``heard`` a word (start, end seconds) there that stands out of the noise.

    Silero scores narrow-band and quiet speech low; the words decoded there are evidence of speech.
    Only their loud stretches count (what the transcription's own energy rescue would decode again,
    :func:`whisperops.engine._loud_gaps`), so a word timed across a pause, or one written over
    silence or steady noise, adds nothing.
    """
    from faster_whisper.vad import VadOptions

    from whisperops.vad import speech_timestamps

    n = int(np.ceil(audio.size / sr / hop_s))
    mask = np.zeros(n, dtype=bool)
    if audio.size == 0:
        return mask
    options = VadOptions(min_silence_duration_ms=min_silence_ms, speech_pad_ms=60)
    spans = [(ts["start"], ts["end"]) for ts in speech_timestamps(audio.astype(np.float32), options, sampling_rate=sr)]
    _mark(mask, [(a / sr, b / sr) for a, b in spans], hop_s)
    if heard:
        from whisperops.engine import _loud_gaps

        words, loud = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        _mark(words, heard, hop_s)
        _mark(loud, [(a / sr, b / sr) for a, b in _loud_gaps(audio, spans)], hop_s)
        mask |= words & loud
    return mask


# A frame this close to the recording's noise floor (dB, the noise's own spread) is not speech; the
# floor is judged from at least NOISE_FLOOR_S of non-speech, and never below NOISE_FLOOR_MIN_DB
# (digital silence has no floor: judged against a quiet room instead).
NOISE_FLOOR_MARGIN_DB = 3.0
NOISE_FLOOR_S = 1.0
NOISE_FLOOR_MIN_DB = -70.0


def trim_to_voice(audio: np.ndarray, sr: int, hop_s: float, speech: np.ndarray) -> np.ndarray:
    """``speech`` (a :func:`speech_mask`) with each stretch's edge frames dropped while they are no
    louder than the noise outside speech (its median level).

    The VAD pads each stretch, and a word's timing can reach past its sound: a stretch then starts
    or ends in the room's noise (or silence), which closes the pause to the next turn. Only the
    edges are trimmed: quiet speech inside a stretch can sit as close to the floor, and is speech.
    The voice engine does not use it: on narrow-band copies it cut the onsets of quiet readers'
    words that the truth counts as speech.
    """
    level = levels_db(audio, round(hop_s * sr))
    n = min(level.size, speech.size)
    quiet = level[:n][~speech[:n]]
    if quiet.size * hop_s < NOISE_FLOOR_S:
        return speech
    floor = max(float(np.median(quiet)), NOISE_FLOOR_MIN_DB)
    voiced = np.ones(speech.size, dtype=bool)
    voiced[:n] = level[:n] > floor + NOISE_FLOOR_MARGIN_DB
    out = speech.copy()
    for a, b in stretches(speech):
        inside = np.flatnonzero(voiced[a:b])
        if not inside.size:
            continue  # nothing above the floor at all: leave it to the VAD
        out[a : a + inside[0]] = False
        out[a + inside[-1] + 1 : b] = False
    return out


def stretches(mask: np.ndarray) -> list[tuple[int, int]]:
    """``(start, end)`` frame indexes (end exclusive) of each run of True in ``mask``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def levels_db(x: np.ndarray, hop: int) -> np.ndarray:
    """Mean-square level of each ``hop``-sample frame along the last axis, in dBFS (a partial last frame dropped)."""
    n = x.shape[-1] // hop
    frames = x[..., : n * hop].reshape(*x.shape[:-1], n, hop)
    return 10 * np.log10(np.mean(frames**2, axis=-1) + 1e-10)


def _mark(mask: np.ndarray, spans: Sequence[tuple[float, float]], hop_s: float) -> None:
    """Set the frames of ``mask`` that spans (seconds) reach into."""
    for a, b in spans:
        mask[max(0, int(a / hop_s)) : int(np.ceil(b / hop_s))] = True


def smooth(labels: np.ndarray, width: int) -> np.ndarray:
    """Majority vote over ``width`` frames among speech frames: removes flickers shorter than a turn."""
    if width <= 1 or labels.size == 0:
        return labels
    out = labels.copy()
    half = width // 2
    for i in np.flatnonzero(labels != SILENCE):
        window = labels[max(0, i - half) : i + half + 1]
        window = window[window != SILENCE]
        out[i] = np.bincount(window).argmax()
    return out


def to_turns(labels: np.ndarray, hop_s: float, *, bridge_s: float = 0.5) -> list[Turn]:
    """Runs of equal labels as turns named A, B, ... in order of first speech.

    A pause shorter than ``bridge_s`` between two stretches of one speaker is kept inside the turn,
    as people hear it.
    """
    runs: list[list] = []
    for i, lab in enumerate(labels.tolist()):
        if lab == SILENCE:
            continue
        start, end = i * hop_s, (i + 1) * hop_s
        if runs and runs[-1][2] == lab and start - runs[-1][1] <= bridge_s + 1e-9:
            runs[-1][1] = end
        else:
            runs.append([start, end, lab])
    names: dict[int, str] = {}
    for _, _, lab in runs:
        names.setdefault(lab, speaker_name(len(names)))
    return [Turn(round(a, 3), round(b, 3), names[lab]) for a, b, lab in runs]


def speaker_name(index: int) -> str:
    """A, B, ..., Z, AA, AB, ... as OpenAI's diarized_json labels them."""
    letters = string.ascii_uppercase
    name = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        name = letters[rem] + name
    return name
