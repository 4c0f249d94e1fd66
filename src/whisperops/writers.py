"""Output writers, one class per format, in the spirit of openai/whisper's ``ResultWriter``.

Every file is written to a temporary name and renamed, so an interrupted run never leaves half a
subtitle file where a good one was.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import ClassVar

from whisperops.errors import OptionError
from whisperops.paths import atomic_write_text
from whisperops.results import Segment, Transcript


def format_timestamp(seconds: float, always_include_hours: bool = True, decimal_marker: str = ".") -> str:
    """``HH:MM:SS.mmm`` for subtitles (``,`` as ``decimal_marker`` for SRT); negative times clamp to 0."""
    ms = max(0, round(seconds * 1000.0))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    hours_marker = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{hours_marker}{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


class ResultWriter:
    """One output format: subclasses set ``extension`` and implement :meth:`render`."""

    extension: ClassVar[str]

    def render(self, transcript: Transcript) -> str:
        """The file's text for ``transcript``."""
        raise NotImplementedError

    def write(self, transcript: Transcript, output_dir: Path, name: str) -> Path:
        """Write ``output_dir/name.EXT`` atomically (a temporary name, then a rename); returns the path."""
        path = Path(output_dir) / f"{name}.{self.extension}"
        atomic_write_text(path, self.render(transcript))
        return path


def _cues(segments: Iterable[Segment], duration: float) -> Iterable[tuple[float, float, str]]:
    """Non-empty cues with monotonic, in-bounds times (players reject overlapping or negative cues)."""
    for start, end, text, _ in _segment_cues(segments, duration):
        yield start, end, text


def _segment_cues(segments: Iterable[Segment], duration: float) -> Iterable[tuple[float, float, str, Segment]]:
    """:func:`_cues` with the segment each cue came from (for its speaker)."""
    last_end = 0.0
    for seg in segments:
        text = seg.text.strip()
        if not text:
            continue
        start = min(max(seg.start, last_end), duration) if duration > 0 else max(seg.start, last_end)
        end = max(seg.end, start)
        if duration > 0:
            end = min(end, duration)
        last_end = end
        yield start, end, text.replace("-->", "->"), seg


def _diarized(transcript: Transcript) -> bool:
    """Speakers are written only for a diarized transcript, so other outputs stay byte-identical."""
    return transcript.speakers is not None


def _speaker_lines(transcript: Transcript) -> str:
    """One ``A: ...`` line per turn: consecutive segments of one speaker joined."""
    lines: list[list[str]] = []
    last = object()
    for seg in transcript.segments:
        text = seg.text.strip()
        if not text:
            continue
        if seg.speaker != last:
            lines.append([f"{seg.speaker or '?'}:"])
            last = seg.speaker
        lines[-1].append(text)
    return "".join(" ".join(line) + "\n" for line in lines)


class WriteTXT(ResultWriter):
    extension = "txt"

    def render(self, transcript: Transcript) -> str:
        if _diarized(transcript):
            return _speaker_lines(transcript)
        return "".join(f"{s.text.strip()}\n" for s in transcript.segments if s.text.strip())


class WriteSRT(ResultWriter):
    extension = "srt"

    def render(self, transcript: Transcript) -> str:
        label = (lambda seg: f"{seg.speaker}: " if seg.speaker else "") if _diarized(transcript) else (lambda seg: "")
        blocks = [
            f"{i}\n{format_timestamp(a, True, ',')} --> {format_timestamp(b, True, ',')}\n{label(seg)}{text}\n"
            for i, (a, b, text, seg) in enumerate(_segment_cues(transcript.segments, transcript.duration), start=1)
        ]
        return "\n".join(blocks)


class WriteVTT(ResultWriter):
    extension = "vtt"

    def render(self, transcript: Transcript) -> str:
        voice = (lambda seg: f"<v {seg.speaker}>" if seg.speaker else "") if _diarized(transcript) else (lambda seg: "")
        cues = [
            f"{format_timestamp(a)} --> {format_timestamp(b)}\n{voice(seg)}{text}\n"
            for a, b, text, seg in _segment_cues(transcript.segments, transcript.duration)
        ]
        return "WEBVTT\n\n" + "\n".join(cues)


class WriteTSV(ResultWriter):
    """Integer milliseconds, tab-separated: start, end, text (as openai/whisper writes it)."""

    extension = "tsv"

    def render(self, transcript: Transcript) -> str:
        if _diarized(transcript):
            rows = ["start\tend\tspeaker\ttext"]
            for a, b, text, seg in _segment_cues(transcript.segments, transcript.duration):
                rows.append(f"{round(1000 * a)}\t{round(1000 * b)}\t{seg.speaker or ''}\t{text.replace(chr(9), ' ')}")
            return "\n".join(rows) + "\n"
        rows = ["start\tend\ttext"]
        for a, b, text in _cues(transcript.segments, transcript.duration):
            rows.append(f"{round(1000 * a)}\t{round(1000 * b)}\t{text.replace(chr(9), ' ')}")
        return "\n".join(rows) + "\n"


class WriteJSON(ResultWriter):
    extension = "json"

    def render(self, transcript: Transcript) -> str:
        return json.dumps(transcript.to_dict(), ensure_ascii=False, indent=2)


WRITERS: dict[str, type[ResultWriter]] = {w.extension: w for w in (WriteTXT, WriteSRT, WriteVTT, WriteTSV, WriteJSON)}
DEFAULT_FORMATS = ("txt", "srt", "vtt", "json")


def parse_formats(value: str | Sequence[str]) -> list[str]:
    """``"txt,srt"`` or ``["txt", "srt"]`` or ``"all"`` -> validated list of extensions.

    Raises:
        OptionError: A format is unknown (the message lists the known ones).
    """
    parts = value.split(",") if isinstance(value, str) else list(value)
    formats = [p.strip().lower().lstrip(".") for p in parts if p.strip()]
    if formats == ["all"]:
        return list(WRITERS)
    bad = [f for f in formats if f not in WRITERS]
    if bad or not formats:
        raise OptionError(
            f"--formats {','.join(bad) or value!r}: unknown format; choose from {','.join(WRITERS)} or all"
        )
    return list(dict.fromkeys(formats))


def write_all(transcript: Transcript, output_dir: Path, name: str, formats: Sequence[str]) -> list[Path]:
    """Write ``transcript`` in each of ``formats``, as ``whisperops transcribe`` does.

    Args:
        transcript: What to write.
        output_dir: The folder to write into (created if missing).
        name: The files' stem: ``output_dir/name.srt``, ...
        formats: Extensions from :data:`WRITERS` (``txt``, ``srt``, ``vtt``, ``tsv``, ``json``);
            :func:`parse_formats` validates a user's list.

    Returns:
        The paths written, in the order of ``formats``.
    """
    return [WRITERS[f]().write(transcript, output_dir, name) for f in formats]
