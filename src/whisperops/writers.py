"""Output writers, one class per format, in the spirit of openai/whisper's ``ResultWriter``.

Every file is written to a temporary name and renamed, so an interrupted run never leaves half a
subtitle file where a good one was.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from whisperops.config import setting
from whisperops.errors import OptionError
from whisperops.paths import atomic_write_text
from whisperops.results import Segment, Transcript

# With word times, a pause this long (s) between two words ends a cue: a new thought, or a gap.
CUE_PAUSE_S = 0.6
# A cue this full may end early at a sentence or clause end, so cues rarely break mid-phrase.
CUE_PUNCTUATION_FILL = 0.5
_CLAUSE_END = re.compile(r"[.!?;:,]$")


@dataclass
class SubtitleOptions:
    """How srt/vtt/tsv cues are laid out (defaults follow broadcast subtitle practice)."""

    max_line_width: int = setting(42, help="Most characters on one subtitle line.")
    max_line_count: int = setting(2, help="Most lines in one subtitle cue.")
    max_cue_duration: float = setting(7.0, help="Longest a subtitle cue stays on screen (seconds).")

    def __post_init__(self) -> None:
        if self.max_line_width < 10:
            raise OptionError(f"--max-line-width {self.max_line_width}: must be at least 10 characters (e.g. 42)")
        if self.max_line_count < 1:
            raise OptionError(f"--max-line-count {self.max_line_count}: must be at least 1 (e.g. 2)")
        if self.max_cue_duration <= 0.5:
            raise OptionError(f"--max-cue-duration {self.max_cue_duration}: must be over 0.5 seconds (e.g. 7)")


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

    def __init__(self, subtitles: SubtitleOptions | None = None) -> None:
        self.subtitles = subtitles or SubtitleOptions()

    def render(self, transcript: Transcript) -> str:
        """The file's text for ``transcript``."""
        raise NotImplementedError

    def write(self, transcript: Transcript, output_dir: Path, name: str) -> Path:
        """Write ``output_dir/name.EXT`` atomically (a temporary name, then a rename); returns the path."""
        path = Path(output_dir) / f"{name}.{self.extension}"
        atomic_write_text(path, self.render(transcript))
        return path

    def cues(self, transcript: Transcript) -> list[tuple[float, float, str]]:
        return list(_cues(transcript.segments, transcript.duration, self.subtitles))

    def segment_cues(self, transcript: Transcript) -> list[tuple[float, float, str, Segment]]:
        """:meth:`cues` with the segment each cue came from (for its speaker)."""
        return list(_segment_cues(transcript.segments, transcript.duration, self.subtitles))


def _timed_words(seg: Segment) -> tuple[list[tuple[float, float, str]], bool]:
    """``seg``'s words with times and Whisper's spacing (a word that goes on the one before has none).

    Whisper's times when it timed them, else spread over the segment by length.
    """
    if seg.words:
        words: list[tuple[float, float, str]] = []
        for w in seg.words:
            if not w.word.strip():
                continue
            if words and not w.word[:1].isspace():
                # A piece without a leading space ("-substantial") is the end of the word before it.
                a, _, text = words[-1]
                words[-1] = (a, w.end, text + w.word)
            else:
                words.append((w.start, w.end, w.word if w.word[:1].isspace() else " " + w.word))
        if words:
            return words, True
    tokens = seg.text.split()
    total = sum(len(t) + 1 for t in tokens) or 1
    span, at, words = max(seg.end - seg.start, 0.0), 0, []
    for token in tokens:
        a = seg.start + span * at / total
        at += len(token) + 1
        words.append((a, seg.start + span * at / total, " " + token))
    return words, False


def _wrap(text: str, width: int) -> list[str]:
    """Greedy fill at word boundaries (a word longer than ``width`` gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and len(lines[-1]) + 1 + len(word) <= width:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


def _layout(seg: Segment, opts: SubtitleOptions) -> Iterator[tuple[float, float, str]]:
    """Split one segment into cues that fit ``opts``: at pauses, clause ends and word boundaries.

    A segment too long for one cue is cut into about equal cues (two of 4 s read better than one
    of 7 s and one word), preferring a clause end once a cue is half full.
    """
    words, timed = _timed_words(seg)
    capacity = opts.max_line_width * opts.max_line_count
    chars, span = len(seg.text.strip()), max(seg.end - seg.start, 0.0)
    parts = max(1, math.ceil(chars / capacity), math.ceil(span / opts.max_cue_duration))
    share_chars, share_s = 1.15 * chars / parts, 1.15 * span / parts
    cue: list[tuple[float, float, str]] = []

    def text_of(pieces: list[tuple[float, float, str]]) -> str:
        return "".join(w for _, _, w in pieces).strip()

    for word in words:
        if cue:
            current = text_of(cue)
            full = len(_wrap(current + word[2], opts.max_line_width)) > opts.max_line_count
            too_long = word[1] - cue[0][0] > opts.max_cue_duration
            paused = timed and word[0] - cue[-1][1] >= CUE_PAUSE_S
            share = parts > 1 and (len(current) + len(word[2]) > share_chars or word[1] - cue[0][0] > share_s)
            clause = _CLAUSE_END.search(current) and len(current) >= CUE_PUNCTUATION_FILL * min(capacity, share_chars)
            if full or too_long or paused or share or clause:
                yield cue[0][0], cue[-1][1], current
                cue = []
        cue.append(word)
    if cue:
        yield cue[0][0], cue[-1][1], text_of(cue)


def _cues(
    segments: Iterable[Segment], duration: float, opts: SubtitleOptions | None = None
) -> Iterable[tuple[float, float, str]]:
    """Readable cues with monotonic, in-bounds times (players reject overlapping or negative cues)."""
    for start, end, text, _ in _segment_cues(segments, duration, opts):
        yield start, end, text


def _segment_cues(
    segments: Iterable[Segment], duration: float, opts: SubtitleOptions | None = None
) -> Iterable[tuple[float, float, str, Segment]]:
    """:func:`_cues` with the segment each cue came from (for its speaker)."""
    opts = opts or SubtitleOptions()
    last_end = 0.0
    for seg in segments:
        if not seg.text.strip():
            continue
        for a, b, text in _layout(seg, opts):
            start = min(max(a, last_end), duration) if duration > 0 else max(a, last_end)
            # One long word (or a segment Whisper timed across a pause) still leaves the screen in time.
            end = min(max(b, start), start + opts.max_cue_duration)
            if duration > 0:
                end = min(end, duration)
            last_end = end
            lines = _wrap(text.replace("-->", "->"), opts.max_line_width)
            yield start, end, "\n".join(lines), seg


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
            for i, (a, b, text, seg) in enumerate(self.segment_cues(transcript), start=1)
        ]
        return "\n".join(blocks)


class WriteVTT(ResultWriter):
    extension = "vtt"

    def render(self, transcript: Transcript) -> str:
        voice = (lambda seg: f"<v {seg.speaker}>" if seg.speaker else "") if _diarized(transcript) else (lambda seg: "")
        cues = [
            f"{format_timestamp(a)} --> {format_timestamp(b)}\n{voice(seg)}{text}\n"
            for a, b, text, seg in self.segment_cues(transcript)
        ]
        return "WEBVTT\n\n" + "\n".join(cues)


class WriteTSV(ResultWriter):
    """Integer milliseconds, tab-separated: start, end, text (as openai/whisper writes it)."""

    extension = "tsv"

    def render(self, transcript: Transcript) -> str:
        if _diarized(transcript):
            rows = ["start\tend\tspeaker\ttext"]
            for a, b, text, seg in self.segment_cues(transcript):
                flat = text.replace(chr(9), " ").replace("\n", " ")
                rows.append(f"{round(1000 * a)}\t{round(1000 * b)}\t{seg.speaker or ''}\t{flat}")
            return "\n".join(rows) + "\n"
        rows = ["start\tend\ttext"]
        for a, b, text in self.cues(transcript):
            flat = text.replace(chr(9), " ").replace("\n", " ")
            rows.append(f"{round(1000 * a)}\t{round(1000 * b)}\t{flat}")
        return "\n".join(rows) + "\n"


class WriteJSON(ResultWriter):
    extension = "json"

    def render(self, transcript: Transcript) -> str:
        return json.dumps(transcript.to_dict(), ensure_ascii=False, indent=2)


WRITERS: dict[str, type[ResultWriter]] = {w.extension: w for w in (WriteTXT, WriteSRT, WriteVTT, WriteTSV, WriteJSON)}
DEFAULT_FORMATS = ("txt", "srt", "vtt", "json")
FORMATS_HELP = "Comma list of txt, srt, vtt, tsv, json, or all."


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


def write_all(
    transcript: Transcript,
    output_dir: Path,
    name: str,
    formats: Sequence[str],
    subtitles: SubtitleOptions | None = None,
) -> list[Path]:
    """Write ``transcript`` in each of ``formats``, as ``whisperops transcribe`` does.

    Args:
        transcript: What to write.
        output_dir: The folder to write into (created if missing).
        name: The files' stem: ``output_dir/name.srt``, ...
        formats: Extensions from :data:`WRITERS` (``txt``, ``srt``, ``vtt``, ``tsv``, ``json``);
            :func:`parse_formats` validates a user's list.
        subtitles: How srt/vtt/tsv cues are laid out (the defaults of :class:`SubtitleOptions` when None).

    Returns:
        The paths written, in the order of ``formats``.
    """
    return [WRITERS[f](subtitles).write(transcript, output_dir, name) for f in formats]
