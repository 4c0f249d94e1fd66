"""Transcription results as plain dataclasses that round-trip through JSON.

The shapes follow faster-whisper's ``Segment``/``Word`` so users of either feel at home, plus the
per-item metadata and timings a batch job needs to report on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass
class Word:
    """One timed word (``DecodeOptions(word_timestamps=True)``).

    Attributes:
        start: Start, in seconds from the start of the file.
        end: End, in seconds from the start of the file.
        word: The word as decoded, with its leading space (join words with ``""``).
        probability: The decoder's probability for the word, 0 to 1.
        speaker: The speaker's label when the transcript was diarized, else None.
    """

    start: float
    end: float
    word: str
    probability: float
    speaker: str | None = None  # set by diarization (A, B, ... or a known speaker's name)


@dataclass
class Segment:
    """One decoded segment: a stretch of speech with its text, like faster-whisper's ``Segment``.

    Attributes:
        id: Index of the segment in its transcript, from 0.
        start: Start, in seconds from the start of the file.
        end: End, in seconds from the start of the file.
        text: The segment's text (with Whisper's leading space).
        avg_logprob: Mean log-probability of its tokens; below about -1 the decoder was unsure.
        no_speech_prob: The model's probability that the window held no speech.
        compression_ratio: gzip compression ratio of the text; above about 2.4 it is repetitive.
        temperature: The sampling temperature that produced it (a fallback when above 0).
        words: Timed words, when word timestamps were asked for; else None.
        speaker: The speaker's label when the transcript was diarized, else None.
    """

    id: int
    start: float
    end: float
    text: str
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    temperature: float | None = 0.0
    words: list[Word] | None = None
    speaker: str | None = None  # set by diarization; every segment then holds one speaker
    # As faster-whisper's: the decoding window's offset in 10 ms frames, and the decoder's token ids
    # (timestamp tokens included), which OpenAI's verbose_json reports per segment.
    seek: int = 0
    tokens: list[int] | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Segment:
        """A segment from its ``asdict`` form (unknown keys are ignored)."""
        words = data.get("words")
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "words"}
        return cls(**fields, words=[Word(**w) for w in words] if words is not None else None)

    def split(self, runs: Sequence[Sequence[Word]], *, keep_words: bool = True) -> list[Segment]:
        """One segment per run of this segment's words (all of them, in order), each timed by its words.

        A piece's token ids are unknown (None); a single run keeps the segment's own times and tokens.
        """
        whole = len(runs) == 1
        return [
            replace(
                self,
                start=self.start if whole else run[0].start,
                end=self.end if whole else run[-1].end,
                text="".join(w.word for w in run),
                words=list(run) if keep_words else None,
                tokens=self.tokens if whole else None,
            )
            for run in runs
        ]


@dataclass
class Transcript:
    """One item's transcript: text, timed segments (and words), language and how long it took.

    Round-trips through JSON: ``Transcript.from_json(t.to_json()) == t``; the ``json`` writer writes
    exactly this.

    Attributes:
        source: Where the audio came from: a path, a URL, or ``<array>``.
        text: The whole text, segments joined.
        segments: The timed segments, in order.
        language: The language code given or detected.
        language_probability: The detector's probability for ``language`` (1.0 when it was given).
        duration: The audio's length in seconds.
        model: The model's name as asked for (``tiny.en``, a path, ...).
        duration_after_vad: Seconds of audio left after voice-activity detection, when VAD ran.
        options: The decoding options used (``DecodeOptions.to_dict()``).
        metadata: What the source knew about the item (title, uploader, URL, ...).
        timings: Seconds spent per stage, e.g. ``decode_audio_s`` and ``transcribe_s``.
        warnings: What went wrong without failing the item: damaged packets skipped, a truncated
            file, ...
        speakers: When diarized, ``[{"speaker": "A", "talk_time_s": 12.3}, ...]``; else None.
    """

    source: str
    text: str
    segments: list[Segment]
    language: str
    language_probability: float
    duration: float
    model: str = ""
    duration_after_vad: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    # What went wrong without failing the item: damaged packets skipped, a truncated file, ...
    warnings: list[str] = field(default_factory=list)
    # Diarization: [{"speaker": "A", "talk_time_s": 12.3}, ...]; None when not diarized.
    speakers: list[dict[str, Any]] | None = None

    @property
    def words(self) -> list[Word]:
        """Every timed word of every segment, in order (empty without word timestamps)."""
        return [w for s in self.segments for w in (s.words or [])]

    @property
    def speed(self) -> float:
        """Audio seconds per wall second of transcription (real-time factor's inverse)."""
        elapsed = self.timings.get("transcribe_s", 0.0)
        return self.duration / elapsed if elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain dicts and lists, ready for ``json.dumps``."""
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        """The transcript as JSON text (``indent=None`` for one line)."""
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcript:
        """A transcript from :meth:`to_dict`'s form (unknown keys are ignored, so older files load)."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "segments"}
        return cls(**fields, segments=[Segment.from_dict(s) for s in data.get("segments", [])])

    @classmethod
    def from_json(cls, text: str) -> Transcript:
        """A transcript from :meth:`to_json`'s text."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> Transcript:
        """A transcript from a ``.json`` file written by the ``json`` writer."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
