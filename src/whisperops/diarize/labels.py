"""Speaker turns onto a transcript: every word gets a speaker, segments split where the speaker changes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from whisperops.diarize import Turn
from whisperops.results import Segment, Transcript, Word


def speaker_at(start: float, end: float, turns: Sequence[Turn]) -> str | None:
    """The speaker who overlaps ``[start, end]`` most, else the nearest turn's (None without turns)."""
    if not turns:
        return None
    best, best_overlap = None, 0.0
    for t in turns:
        overlap = min(end, t.end) - max(start, t.start)
        if overlap > best_overlap:
            best, best_overlap = t.speaker, overlap
    if best is not None:
        return best
    mid = (start + end) / 2
    return min(turns, key=lambda t: min(abs(mid - t.start), abs(mid - t.end))).speaker


def talk_time(turns: Sequence[Turn]) -> list[dict]:
    """``[{"speaker", "talk_time_s"}]`` in order of first speech."""
    totals: dict[str, float] = {}
    for t in turns:
        totals[t.speaker] = totals.get(t.speaker, 0.0) + (t.end - t.start)
    return [{"speaker": s, "talk_time_s": round(v, 3)} for s, v in totals.items()]


def label_transcript(transcript: Transcript, turns: Sequence[Turn], *, keep_words: bool = True) -> Transcript:
    """A copy of ``transcript`` with ``speaker`` on each word and segment and a ``speakers`` summary.

    Args:
        transcript: Best with word timestamps: segments are split at the words where the speaker
            changes. Segments without words take the speaker they overlap most.
        turns: The diarizer's turns; none (a silent file) leaves every label None and ``speakers`` empty.
        keep_words: False drops the words after use (when the user did not ask for them).
    """
    segments: list[Segment] = []
    for seg in transcript.segments:
        if not seg.words:
            segments.append(replace(seg, id=len(segments), speaker=speaker_at(seg.start, seg.end, turns)))
            continue
        runs = _runs([replace(w, speaker=speaker_at(w.start, w.end, turns)) for w in seg.words])
        for run, piece in zip(runs, seg.split(runs, keep_words=keep_words), strict=True):
            segments.append(replace(piece, id=len(segments), speaker=run[0].speaker))
    speakers = [s for s in talk_time(turns) if any(seg.speaker == s["speaker"] for seg in segments)] if turns else []
    return replace(transcript, segments=segments, speakers=speakers, timings=dict(transcript.timings))


def _runs(words: list[Word]) -> list[list[Word]]:
    runs: list[list[Word]] = []
    for w in words:
        if runs and runs[-1][-1].speaker == w.speaker:
            runs[-1].append(w)
        else:
            runs.append([w])
    return runs
