"""Transcription results as plain dataclasses that round-trip through JSON.

The shapes follow faster-whisper's ``Segment``/``Word`` so users of either feel at home, plus the
per-item metadata and timings a batch job needs to report on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Word:
    start: float
    end: float
    word: str
    probability: float
    speaker: str | None = None  # set by diarization (A, B, ... or a known speaker's name)


@dataclass
class Segment:
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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Segment:
        words = data.get("words")
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "words"}
        return cls(**fields, words=[Word(**w) for w in words] if words is not None else None)


@dataclass
class Transcript:
    """One item's transcript: text, timed segments (and words), language and how long it took."""

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
        return [w for s in self.segments for w in (s.words or [])]

    @property
    def speed(self) -> float:
        """Audio seconds per wall second of transcription (real-time factor's inverse)."""
        elapsed = self.timings.get("transcribe_s", 0.0)
        return self.duration / elapsed if elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=indent)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcript:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "segments"}
        return cls(**fields, segments=[Segment.from_dict(s) for s in data.get("segments", [])])

    @classmethod
    def from_json(cls, text: str) -> Transcript:
        return cls.from_dict(json.loads(text))

    @classmethod
    def load(cls, path: str | Path) -> Transcript:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
