"""Two-party stereo calls: one speaker per channel, told apart by which channel is louder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from whisperops.diarize import Turn
from whisperops.diarize.frames import SILENCE, levels_db, smooth, speech_mask, to_turns, trim_to_voice

SR = 16000
# Frames of 20 ms: a turn's edges are the VAD's own (its padding is inside the scoring collar);
# 0.1 s frames, rounded outwards, overshot them and closed pauses between two turns of one party.
HOP_S = 0.02
# Labels are smoothed over this long: a flicker shorter than a turn is crosstalk, not a turn.
SMOOTH_S = 0.5
# A frame belongs to a channel when it is this much louder there (crosstalk and echo are quieter).
DOMINANCE_DB = 6.0
# A pause of this long or more ends a party's turn (the usual minimum pause of reference
# segmentations, as NIST's); the VAD reports silences from this long, less its 60 ms padding each side.
PAUSE_S = 0.3
VAD_MIN_SILENCE_MS = 200


def load_channels(path: str | Path) -> np.ndarray:
    """``(channels, samples)`` float32 at 16 kHz: 1 row for mono, 2 for stereo (more are mixed to 2).

    Decoded by :func:`whisperops.audio.load_audio`, with its checks on what is opened.
    """
    from whisperops.audio import load_audio

    channels = load_audio(path, SR, mono=False)
    return channels[None, :] if channels.ndim == 1 else channels


def _levels_db(channels: np.ndarray) -> np.ndarray:
    """``(2, frames)`` RMS level per ``HOP_S`` frame, in dBFS."""
    return levels_db(channels, int(HOP_S * SR))


def call_speech(channels: np.ndarray, heard: Sequence[tuple[float, float]] = ()) -> np.ndarray:
    """Where anyone speaks in a call, one bool per ``HOP_S`` frame: the VAD on the mix (silences
    from VAD_MIN_SILENCE_MS), with the transcript's words ``heard`` (see :func:`speech_mask`).

    Trimmed to the voice: a turn ends where its party stops speaking, not where the VAD's padding
    does, and the pause to the other party's turn (or one's own next) is then seen whole.
    """
    mix = channels.mean(axis=0)
    return trim_to_voice(mix, SR, HOP_S, speech_mask(mix, SR, HOP_S, min_silence_ms=VAD_MIN_SILENCE_MS, heard=heard))


def talkers_per_channel(channels: np.ndarray, speech: np.ndarray | None = None, *, min_share: float = 0.7) -> bool:
    """True when each channel carries its own speaker: most speech is clearly louder on one side, both sides talk.

    A mono recording copied to two channels, or a stereo mix of one room, fails this and is
    diarized by voice instead. ``speech``: the :func:`call_speech` frames, when already known.
    """
    speech = call_speech(channels) if speech is None else speech
    levels = _levels_db(channels)
    n = min(speech.size, levels.shape[1])
    speech, levels = speech[:n], levels[:, :n]
    if speech.sum() < 10:
        return False
    diff = levels[0, speech] - levels[1, speech]
    left, right = (diff > DOMINANCE_DB).mean(), (diff < -DOMINANCE_DB).mean()
    return bool(left + right >= min_share and min(left, right) >= 0.05)


def split_by_channel(
    channels: np.ndarray, heard: Sequence[tuple[float, float]] = (), speech: np.ndarray | None = None
) -> list[Turn]:
    """Turns from which channel is louder while anyone speaks; speakers named in order of first speech.

    ``heard``: the transcript's word spans (seconds), more evidence of speech (see :func:`speech_mask`);
    ``speech``: the :func:`call_speech` frames instead, when already known.
    """
    speech = call_speech(channels, heard) if speech is None else speech
    levels = _levels_db(channels)
    n = min(speech.size, levels.shape[1])
    labels = np.full(n, SILENCE, dtype=np.int64)
    labels[speech[:n]] = (levels[1, speech[:n]] > levels[0, speech[:n]]).astype(np.int64)
    return to_turns(smooth(labels, round(SMOOTH_S / HOP_S)), HOP_S, bridge_s=PAUSE_S)
