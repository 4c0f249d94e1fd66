"""Transcripts in the shapes of OpenAI's audio API (json, text, srt, vtt, verbose_json, SSE events).

srt/vtt bodies come from :mod:`whisperops.writers`, so served subtitles are byte-for-byte the files
``whisperops transcribe`` writes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from whisperops.errors import OptionError
from whisperops.languages import ALIASES, LANGUAGES
from whisperops.results import Segment, Transcript, Word
from whisperops.writers import WRITERS

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
GRANULARITIES = ("segment", "word")
MEDIA_TYPES = {
    "json": "application/json",
    "verbose_json": "application/json",
    "diarized_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}

# verbose_json names the language in words, as openai/whisper's tokenizer does (whisperops.languages).
_CODES = {**{name: code for code, name in LANGUAGES.items()}, **ALIASES}


def check_format(response_format: str, granularities: Sequence[str]) -> tuple[str, list[str]]:
    """Validate ``response_format`` and ``timestamp_granularities[]``; raise :class:`OptionError`."""
    fmt = (response_format or "json").strip().lower()
    if fmt not in RESPONSE_FORMATS:
        raise OptionError(f"response_format {response_format!r}: choose one of {', '.join(RESPONSE_FORMATS)}")
    grans = [g.strip().lower() for g in granularities if g and g.strip()]
    bad = [g for g in grans if g not in GRANULARITIES]
    if bad:
        raise OptionError(f"timestamp_granularities[] {bad[0]!r}: choose segment and/or word")
    if grans and fmt != "verbose_json":
        raise OptionError("timestamp_granularities[] needs response_format=verbose_json (as in OpenAI's API)")
    return fmt, list(dict.fromkeys(grans)) or ["segment"]


def language_code(value: str | None) -> str | None:
    """``en``, ``English`` or ``english`` -> ``en``; empty -> None (detect)."""
    if not value or not value.strip():
        return None
    v = value.strip().lower()
    return _CODES.get(v, v)


def usage(t: Transcript) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(t.duration)}


def speaker_segments(t: Transcript) -> list[dict[str, Any]]:
    """One ``transcript.text.segment`` per speaker turn: diarized_json's segments and the streamed events alike."""
    return [
        {
            "type": "transcript.text.segment",
            "id": f"seg_{s.id}",
            "start": s.start,
            "end": s.end,
            "text": s.text,
            "speaker": s.speaker or "A",
        }
        for s in t.segments
        if s.text.strip()
    ]


def diarized(t: Transcript) -> dict[str, Any]:
    """OpenAI's ``diarized_json`` (``TranscriptionDiarized``): one segment per speaker turn, labelled A, B, ..."""
    return {
        "task": "transcribe",
        "duration": t.duration,
        "text": t.text,
        "segments": speaker_segments(t),
        "usage": usage(t),
    }


def logprobs(words: Sequence[Word]) -> list[dict[str, Any]]:
    """Per-word log probabilities (faster-whisper's word probability is its tokens' mean)."""
    return [
        {"token": w.word, "logprob": round(math.log(max(w.probability, 1e-10)), 4), "bytes": list(w.word.encode())}
        for w in words
    ]


def delta_text(segment: Segment, first: bool) -> str:
    """The piece of ``Transcript.text`` a segment adds: joined with single spaces, as json's text is."""
    text = segment.text.strip()
    if not text:
        return ""
    return text if first else " " + text


def delta_event(delta: str, words: Sequence[Word] | None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "transcript.text.delta", "delta": delta}
    if words is not None:
        event["logprobs"] = logprobs(words)
    return event


def done_event(t: Transcript, with_logprobs: bool) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "transcript.text.done", "text": t.text}
    if with_logprobs:
        event["logprobs"] = logprobs(t.words)
    # Whisper is billed by duration, as the non-streamed bodies say (the client's type here lists tokens only).
    event["usage"] = usage(t)
    return event


def error_event(message: str, kind: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"type": "error", "error": {"message": message, "type": kind, "param": param, "code": code}}


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event, as OpenAI writes them (a ``data:`` line of JSON)."""
    return f"data: {json.dumps(event, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()


def render(
    t: Transcript,
    fmt: str,
    *,
    task: str = "transcribe",
    granularities: Sequence[str] = ("segment",),
    tokenize: Callable[[str], list[int]] | None = None,
    with_logprobs: bool = False,
) -> str | dict[str, Any]:
    """The response body: a dict for the JSON formats, a string for text/srt/vtt."""
    if fmt == "json":
        body = {"text": t.text}
        if with_logprobs:
            body["logprobs"] = logprobs(t.words)
        return {**body, "usage": usage(t)}
    if fmt == "text":
        # OpenAI's text body is json's text (segments joined by spaces), not one segment per line.
        return t.text + "\n" if t.text else ""
    if fmt in ("srt", "vtt"):
        return WRITERS[fmt]().render(t)
    if fmt == "diarized_json":
        return diarized(t)
    body: dict[str, Any] = {
        "task": task,
        # A translation's text is English, and OpenAI's type says so; the source language is in the logs.
        "language": "english" if task == "translate" else LANGUAGES.get(t.language, t.language),
        "duration": t.duration,
        "text": t.text,
    }
    if "segment" in granularities:
        body["segments"] = [
            {
                "id": s.id,
                "seek": s.seek,
                # Whisper's last timestamp token may fall past the audio's end; srt/vtt clamp too.
                "start": min(s.start, t.duration),
                "end": min(s.end, t.duration),
                "text": s.text,
                "tokens": s.tokens if s.tokens is not None else (tokenize(s.text) if tokenize else []),
                "temperature": s.temperature if s.temperature is not None else 0.0,
                "avg_logprob": s.avg_logprob,
                "compression_ratio": s.compression_ratio,
                "no_speech_prob": s.no_speech_prob,
            }
            for s in t.segments
        ]
    if "word" in granularities:
        body["words"] = [{"word": w.word.strip(), "start": w.start, "end": w.end} for w in t.words]
    body["usage"] = usage(t)
    return body
