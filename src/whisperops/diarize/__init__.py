"""Who spoke when: offline speaker diarization behind one small interface.

An engine turns 16 kHz mono samples into speaker :class:`Turn` s; :func:`diarize_file` picks channel
splitting for two-party stereo calls and an engine for everything else; :func:`label_transcript`
puts the labels onto a transcript's words and segments. Engines' weights come from installed
packages only, so diarization works with no network.

This module stays light (no numpy): the CLI imports :class:`DiarizeSettings` for its options.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from whisperops.config import setting
from whisperops.errors import OptionError

if TYPE_CHECKING:
    import numpy as np

    from whisperops.results import Transcript

CHANNEL_MODES = ("auto", "split", "mix")


@dataclass(frozen=True)
class Turn:
    """One stretch of one speaker's speech, in seconds from the start of the file."""

    start: float
    end: float
    speaker: str


class Diarizer(Protocol):
    """What an engine provides: speaker turns for 16 kHz mono float32 samples."""

    def diarize(
        self,
        audio: np.ndarray,
        sr: int = 16000,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        heard: Sequence[tuple[float, float]] = (),
    ) -> list[Turn]:
        """``heard``: spans (seconds) where the transcript has words, evidence of speech the VAD may miss."""
        ...


@dataclass
class DiarizeSettings:
    """How to diarize.

    Raises:
        OptionError: A speaker count below 1, min above max, or an unknown engine or channel mode.
    """

    diarize: bool = setting(False, help="Label who spoke when (offline; needs the diarize extra).")
    num_speakers: int | None = setting(None, help="Exact number of speakers, when known (else estimated).")
    min_speakers: int | None = setting(None, help="At least this many speakers (with the count estimated).")
    max_speakers: int | None = setting(None, help="At most this many speakers (with the count estimated).")
    channels: str = setting(
        "auto", help="Stereo: auto splits by channel when each carries its own speaker; split always; mix never."
    )
    engine: str = setting("resemblyzer", help="Diarization engine (see whisperops.diarize.ENGINES).")

    def __post_init__(self) -> None:
        for flag, value in (
            ("--num-speakers", self.num_speakers),
            ("--min-speakers", self.min_speakers),
            ("--max-speakers", self.max_speakers),
        ):
            if value is not None and value < 1:
                raise OptionError(f"{flag} {value}: must be at least 1 (or leave it out to estimate the count)")
        if self.min_speakers and self.max_speakers and self.min_speakers > self.max_speakers:
            raise OptionError(
                f"--min-speakers {self.min_speakers} is above --max-speakers {self.max_speakers}: swap or drop one"
            )
        if self.num_speakers and (self.min_speakers or self.max_speakers):
            raise OptionError("--num-speakers with --min-speakers/--max-speakers: give an exact count or a range")
        if self.channels not in CHANNEL_MODES:
            raise OptionError(f"--channels {self.channels!r}: must be one of {', '.join(CHANNEL_MODES)}")
        if self.engine not in ENGINES:
            raise OptionError(f"--diarize-engine {self.engine!r}: must be one of {', '.join(ENGINES)}")


def _resemblyzer() -> Diarizer:
    from whisperops.diarize.voice import VoiceEncoderDiarizer

    return VoiceEncoderDiarizer()


# Engine name -> factory; a factory imports its engine's heavy dependencies when called.
ENGINES = {"resemblyzer": _resemblyzer}
_LOADED: dict[str, Diarizer] = {}


def get_diarizer(name: str = "resemblyzer") -> Diarizer:
    """The engine ``name``, loaded once per process."""
    if name not in _LOADED:
        _LOADED[name] = ENGINES[name]()
    return _LOADED[name]


def diarize_file(
    path: str | Path, settings: DiarizeSettings | None = None, heard: Sequence[tuple[float, float]] = ()
) -> list[Turn]:
    """Speaker turns for the media file at ``path``: by channel for two-party stereo calls, else by voice.

    ``heard``: the spans (seconds) of the file's transcribed words (see :func:`words_heard`).
    """
    from whisperops.diarize.stereo import call_speech, load_channels, split_by_channel, talkers_per_channel

    settings = settings or DiarizeSettings(diarize=True)
    channels = load_channels(path)
    if channels.shape[0] == 2 and settings.channels != "mix":
        # One VAD pass for both the choice and the split.
        speech = call_speech(channels, heard)
        if settings.channels == "split" or talkers_per_channel(channels, speech):
            return split_by_channel(channels, speech=speech)
    return get_diarizer(settings.engine).diarize(
        channels.mean(axis=0),
        16000,
        num_speakers=settings.num_speakers,
        min_speakers=settings.min_speakers,
        max_speakers=settings.max_speakers,
        heard=heard,
    )


def words_heard(transcript: Transcript) -> list[tuple[float, float]]:
    """Where ``transcript`` has timed words: (start, end) in seconds."""
    return [(w.start, w.end) for seg in transcript.segments for w in seg.words or ()]


# Cosine similarity above which a cluster is taken to be a known speaker's voice.
KNOWN_SPEAKER_SIMILARITY = 0.75


def name_speakers(
    turns: list[Turn], audio: np.ndarray, references: dict[str, np.ndarray], engine: str = "resemblyzer"
) -> list[Turn]:
    """Turns with each cluster that sounds like a reference clip renamed after it (one name per cluster).

    Args:
        turns: The diarizer's turns for ``audio`` (16 kHz mono).
        references: Speaker name -> 16 kHz mono clip of that speaker alone.
    """
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    if not turns or not references:
        return turns
    diarizer = get_diarizer(engine)
    labels = list(dict.fromkeys(t.speaker for t in turns))
    voices = np.stack(
        [
            diarizer.voiceprint(
                np.concatenate([audio[int(t.start * 16000) : int(t.end * 16000)] for t in turns if t.speaker == lab])
            )
            for lab in labels
        ]
    )
    names = list(references)
    prints = np.stack([diarizer.voiceprint(references[n]) for n in names])
    similarity = voices @ prints.T
    rows, cols = linear_sum_assignment(-similarity)
    pairs = zip(rows, cols, strict=True)
    rename = {labels[r]: names[c] for r, c in pairs if similarity[r, c] >= KNOWN_SPEAKER_SIMILARITY}
    return [Turn(t.start, t.end, rename.get(t.speaker, t.speaker)) for t in turns]


def diarize_transcript(
    transcript: Transcript,
    path: str | Path,
    settings: DiarizeSettings,
    *,
    keep_words: bool = True,
    references: dict[str, np.ndarray] | None = None,
) -> Transcript:
    """``transcript`` of the file at ``path`` with speakers on its words and segments (timed in ``timings``).

    A diarization that fails keeps the transcript, unlabelled, with the reason in ``warnings``: the
    words were already paid for.
    """
    import dataclasses
    import logging
    import time

    from whisperops.diarize.labels import label_transcript

    start = time.perf_counter()
    try:
        turns = diarize_file(path, settings, words_heard(transcript))
        if references:
            from whisperops.diarize.stereo import load_channels

            turns = name_speakers(turns, load_channels(path).mean(axis=0), references, settings.engine)
    except Exception as err:  # the transcript must survive a diarizer that cannot cope with this audio
        logging.getLogger(__name__).warning("diarization failed on %s: %s", path, err)
        return dataclasses.replace(transcript, warnings=[*transcript.warnings, f"diarization failed: {err}"])
    labelled = label_transcript(transcript, turns, keep_words=keep_words)
    labelled.timings["diarize_s"] = round(time.perf_counter() - start, 4)
    return labelled


__all__ = [
    "ENGINES",
    "DiarizeSettings",
    "Diarizer",
    "Turn",
    "diarize_file",
    "diarize_transcript",
    "get_diarizer",
    "name_speakers",
    "words_heard",
]
