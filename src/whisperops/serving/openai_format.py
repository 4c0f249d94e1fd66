"""Transcripts in the shapes of OpenAI's audio API (json, text, srt, vtt, verbose_json, SSE events).

srt/vtt bodies come from :mod:`whisperops.writers`, so served subtitles are byte-for-byte the files
``whisperops transcribe`` writes. :func:`parse_extras` reads the form fields beyond the basic ones
(``stream``, ``include[]``, ``chunking_strategy``, ``keywords[]``, ``languages[]``, ...).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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


class ParamError(OptionError):
    """A form field the server cannot honour: a 400 whose ``param`` names the API field."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


# Fields of POST /v1/audio/transcriptions the app reads itself (FastAPI parameters), and the
# bracketed form names OpenAI's clients send for lists and objects.
BASE_FIELDS = frozenset(
    {"file", "model", "language", "prompt", "response_format", "temperature", "timestamp_granularities[]"}
)
EXTRA_FIELDS = frozenset(
    {"stream", "include[]", "chunking_strategy", "keywords[]", "languages[]", "known_speaker_names[]",
     "known_speaker_references[]"}
)  # fmt: skip
INCLUDES = ("logprobs",)
# chunking_strategy's server_vad fields -> DecodeOptions' VAD settings.
SERVER_VAD_FIELDS = {
    "threshold": "vad_threshold",
    "prefix_padding_ms": "vad_speech_pad_ms",
    "silence_duration_ms": "vad_min_silence_ms",
}
# Whisper's encoder sees 50 frames per second of audio: the "audio tokens" of a token usage.
AUDIO_TOKENS_PER_S = 50


@dataclass
class Extras:
    """What the extra form fields ask of the decoder and of the response."""

    stream: bool = False
    logprobs: bool = False
    language: str | None = None  # from languages[] when it names exactly one
    hotwords: str | None = None
    decode: dict[str, Any] = field(default_factory=dict)  # DecodeOptions fields (VAD settings)

    @property
    def word_timestamps(self) -> bool:
        # faster-whisper exposes per-token probabilities only through word alignment.
        return self.logprobs


def _flag(param: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off", ""):
        return False
    raise ParamError(param, f"{value!r} is not a boolean; send true or false")


def _number(param: str, value: Any, kind: type, low: float, high: float) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ParamError(param, f"{value!r} is not a {kind.__name__}") from None
    if not low <= number <= high:
        raise ParamError(param, f"{number} must be between {low:g} and {high:g}")
    return number


def chunking(form: Mapping[str, Any]) -> dict[str, Any]:
    """``chunking_strategy`` ("auto", an object in bracketed form fields, or JSON) -> DecodeOptions fields."""
    from whisperops.engine import DecodeOptions

    raw: dict[str, Any] = {
        k[len("chunking_strategy[") : -1]: v for k, v in form.items() if k.startswith("chunking_strategy[")
    }
    whole = form.get("chunking_strategy")
    if whole is not None and not raw:
        whole = str(whole).strip()
        if whole == "auto":
            return {"vad_filter": True}
        try:
            raw = json.loads(whole)
        except ValueError:
            raise ParamError("chunking_strategy", f'{whole!r}: send "auto" or a server_vad object') from None
        if not isinstance(raw, dict):
            raise ParamError("chunking_strategy", f'{whole!r}: send "auto" or a server_vad object')
    if not raw:
        return {}
    if raw.get("type") != "server_vad":
        raise ParamError("chunking_strategy", f'type {raw.get("type")!r}: only "server_vad" (or "auto") is supported')
    out: dict[str, Any] = {"vad_filter": True}
    fields = DecodeOptions.__dataclass_fields__
    for name, value in raw.items():
        if name == "type":
            continue
        target = SERVER_VAD_FIELDS.get(name)
        param = f"chunking_strategy.{name}"
        if target is None:
            raise ParamError(param, f"unknown field; use {', '.join(SERVER_VAD_FIELDS)}")
        if target not in fields:
            raise ParamError(param, "this server's engine has no such VAD setting")
        if name == "threshold":
            out[target] = _number(param, value, float, 0.0, 1.0)
        else:
            out[target] = _number(param, value, int, 0, 600_000)
    return out


def parse_extras(form: Any, response_format: str, *, task: str = "transcribe") -> Extras:
    """Check every form field (400 naming any the server cannot honour) and map the extra ones.

    ``form`` is Starlette's multi-valued ``FormData`` (``getlist`` for the ``name[]`` lists).
    """
    allowed = (
        BASE_FIELDS | EXTRA_FIELDS if task == "transcribe" else BASE_FIELDS - {"language", "timestamp_granularities[]"}
    )
    for key in form:
        if key in allowed or (task == "transcribe" and key.startswith("chunking_strategy[")):
            continue
        raise ParamError(key, f"not a parameter of {task}s here; remove it (see /docs for the accepted fields)")
    extras = Extras()
    if task != "transcribe":
        return extras
    getlist = form.getlist if hasattr(form, "getlist") else lambda k: [form[k]] if k in form else []
    stream = form.get("stream")
    extras.stream = _flag("stream", str(stream)) if stream is not None else False
    fmt = (response_format or "json").strip().lower()
    if extras.stream and fmt not in ("json", "text"):
        raise ParamError("stream", f"streaming sends text events; use response_format json or text, not {fmt}")
    for item in getlist("include[]"):
        if item not in INCLUDES:
            raise ParamError("include[]", f"{item!r}: only logprobs can be included")
        extras.logprobs = True
    if extras.logprobs and fmt != "json":
        raise ParamError("include[]", f"logprobs need response_format json (as in OpenAI's API), not {fmt}")
    for name in ("known_speaker_names[]", "known_speaker_references[]"):
        if getlist(name):
            raise ParamError(name, "speaker diarization is not available on this server; remove it")
    keywords = [k.strip() for k in getlist("keywords[]") if str(k).strip()]
    extras.hotwords = " ".join(keywords) or None
    languages = list(dict.fromkeys(c for c in (language_code(v) for v in getlist("languages[]")) if c))
    if len(languages) > 1:
        raise ParamError("languages[]", f"{', '.join(languages)}: choose one language, or send none to detect it")
    extras.language = languages[0] if languages else None
    given = language_code(form.get("language"))
    if given and extras.language and given != extras.language:
        raise ParamError("languages[]", f"{extras.language} contradicts language={given}; send one of them")
    extras.decode = chunking(form)
    return extras


def usage(t: Transcript) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(t.duration)}


def diarized(t: Transcript) -> dict[str, Any]:
    """OpenAI's ``diarized_json`` (``TranscriptionDiarized``): one segment per speaker turn, labelled A, B, ..."""
    return {
        "task": "transcribe",
        "duration": t.duration,
        "text": t.text,
        "segments": [
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
        ],
        "usage": usage(t),
    }


def token_usage(t: Transcript, prompt_tokens: int = 0) -> dict[str, Any]:
    """The ``tokens`` usage OpenAI's streamed ``transcript.text.done`` carries (the client's type)."""
    audio = math.ceil(t.duration * AUDIO_TOKENS_PER_S)
    output = sum(len([x for x in (s.tokens or []) if x < _TIMESTAMP_FLOOR]) for s in t.segments)
    return {
        "type": "tokens",
        "input_tokens": audio + prompt_tokens,
        "input_token_details": {"audio_tokens": audio, "text_tokens": prompt_tokens},
        "output_tokens": output,
        "total_tokens": audio + prompt_tokens + output,
    }


# Whisper's special and timestamp tokens all sit above the text vocabulary (50257 tokens in every size).
_TIMESTAMP_FLOOR = 50257


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


def done_event(t: Transcript, with_logprobs: bool, prompt_tokens: int = 0) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "transcript.text.done", "text": t.text}
    if with_logprobs:
        event["logprobs"] = logprobs(t.words)
    event["usage"] = token_usage(t, prompt_tokens)
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
