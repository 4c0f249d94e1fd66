"""The form of an audio request, read and validated in one place.

:func:`receive_form` streams the multipart body straight into one file in the upload directory
(stored once, never in memory, never named after the client's file), bounded in size, time and
shape. :class:`AudioForm` holds the fields; :data:`FIELDS` says how each one is parsed, so a new
parameter is one :class:`FormField` and one attribute. Every message names the API field.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from whisperops.engine import DecodeOptions
from whisperops.errors import ModelNotFoundError, OptionError
from whisperops.serving import openai_format
from whisperops.serving.errors import ApiError, BodyTimeout

if TYPE_CHECKING:
    from whisperops.serving.app import ServerState
    from whisperops.serving.pool import Ticket

# Limits on the form's shape. Fixed, not settings: OpenAI's form has a dozen fields of a few words.
MAX_PARTS = 64
MAX_FIELD_BYTES = 64 * 1024
# known_speaker_references[] carry audio: a 10 s clip as a base64 data URL.
MAX_REFERENCE_BYTES = 2 * 1024 * 1024
MAX_KNOWN_SPEAKERS = 4  # as OpenAI's API
REFERENCE_S = (2.0, 10.0)
MAX_FILENAME_BYTES = 255  # what file systems allow for one name
TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
ROUTES = {"transcribe": "transcriptions", "translate": "translations"}


def invalid(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, f"{param}: {message}", code, param)


def _text(value: str) -> str:
    return value.strip()


def _temperature(value: str) -> float:
    try:
        t = float(value)
    except ValueError:
        raise invalid("temperature", f"{value[:40]!r} is not a number; send one between 0 and 1") from None
    if not (math.isfinite(t) and 0.0 <= t <= 1.0):
        raise invalid("temperature", f"{value[:40]} is out of range; send one between 0 and 1")
    return t


def _format(value: str) -> str:
    fmt = value.strip().lower() or "json"
    if fmt not in openai_format.RESPONSE_FORMATS:
        raise invalid("response_format", f"{value[:40]!r}: choose one of {', '.join(openai_format.RESPONSE_FORMATS)}")
    return fmt


def _granularity(value: str) -> str:
    g = value.strip().lower()
    if g not in openai_format.GRANULARITIES:
        raise invalid("timestamp_granularities[]", f"{value[:40]!r}: choose segment and/or word")
    return g


def _language(value: str) -> str | None:
    if not value.strip():
        return None
    code = openai_format.language_code(value)
    if code not in openai_format.LANGUAGES:
        raise invalid("language", f"{value[:40]!r} is not a language Whisper knows; send an ISO-639-1 code such as en")
    return code


def _flag(name: str) -> Callable[[str], bool]:
    def parse(value: str) -> bool:
        v = value.strip().lower()
        if v in ("true", "1", "yes", "on"):
            return True
        if v in ("false", "0", "no", "off", ""):
            return False
        raise invalid(name, f"{value[:40]!r} is not a boolean; send true or false")

    return parse


def _include(value: str) -> str:
    if value.strip() not in INCLUDES:
        raise invalid("include[]", f"{value[:40]!r}: only logprobs can be included")
    return value.strip()


def _chunking(value: str) -> Any:
    """``"auto"``, or a server_vad object sent as JSON (curl); OpenAI's clients send bracketed fields."""
    v = value.strip()
    if v == "auto":
        return v
    try:
        obj = json.loads(v)
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        raise invalid("chunking_strategy", f'{v[:40]!r}: send "auto" or a server_vad object')
    return obj


INCLUDES = ("logprobs",)
# chunking_strategy's server_vad fields -> DecodeOptions' VAD settings.
SERVER_VAD = {
    "threshold": "vad_threshold",
    "prefix_padding_ms": "vad_speech_pad_ms",
    "silence_duration_ms": "vad_min_silence_ms",
}
STREAM_FORMATS = ("json", "text", "diarized_json")


def vad_settings(strategy: Any) -> dict[str, Any]:
    """``chunking_strategy`` -> DecodeOptions fields: VAD on, with the server_vad object's settings."""
    if strategy is None:
        return {}
    if strategy == "auto":
        return {"vad_filter": True}
    if strategy.get("type") != "server_vad":
        raise invalid("chunking_strategy", f'type {strategy.get("type")!r}: only server_vad (or "auto") is supported')
    out: dict[str, Any] = {"vad_filter": True}
    for key, value in strategy.items():
        if key == "type":
            continue
        param = f"chunking_strategy.{key}"
        target = SERVER_VAD.get(key)
        if target is None:
            raise invalid(param, f"unknown field; use {', '.join(SERVER_VAD)}")
        if target not in DecodeOptions.__dataclass_fields__:
            raise invalid(param, "this server's engine has no such VAD setting", "unsupported_parameter")
        try:
            number = float(value) if key == "threshold" else int(value)
        except (TypeError, ValueError):
            raise invalid(param, f"{str(value)[:40]!r} is not a number") from None
        high = 1.0 if key == "threshold" else 600_000
        if not 0 <= number <= high:
            raise invalid(param, f"{number} must be between 0 and {high:g}")
        out[target] = number
    return out


@dataclass(frozen=True)
class FormField:
    """One form parameter: where it goes on :class:`AudioForm`, how it is parsed, and its docs."""

    attr: str
    parse: Callable[[str], Any]
    help: str
    tasks: tuple[str, ...] = ("transcribe", "translate")
    repeated: bool = False  # an array parameter (``name[]``): every value is kept
    schema: dict[str, Any] = field(default_factory=lambda: {"type": "string"})


FIELDS: dict[str, FormField] = {
    "model": FormField("model", _text, "A served model name; whisper-1 means the first one."),
    "language": FormField(
        "language", _language, "ISO-639-1 code (or English name) of the speech; empty to detect.", ("transcribe",)
    ),
    "prompt": FormField("prompt", str, "Text to prime the decoder (initial prompt)."),
    "response_format": FormField("response_format", _format, "json, text, srt, vtt, verbose_json or diarized_json."),
    "temperature": FormField(
        "temperature", _temperature, "0: fall back from 0 to 1 as openai/whisper; >0: fixed.", schema={"type": "number"}
    ),
    "known_speaker_names[]": FormField(
        "known_speaker_names",
        _text,
        "diarized_json: up to 4 names for the speakers in known_speaker_references[], in the same order.",
        ("transcribe",),
        repeated=True,
        schema={"type": "array", "items": {"type": "string"}},
    ),
    "known_speaker_references[]": FormField(
        "known_speaker_references",
        _text,
        "diarized_json: a data URL (data:audio/wav;base64,...) of a 2-10 s clip of each known speaker.",
        ("transcribe",),
        repeated=True,
        schema={"type": "array", "items": {"type": "string"}},
    ),
    "timestamp_granularities[]": FormField(
        "timestamp_granularities",
        _granularity,
        "segment and/or word (verbose_json only).",
        ("transcribe",),
        repeated=True,
        schema={"type": "array", "items": {"type": "string", "enum": list(openai_format.GRANULARITIES)}},
    ),
    "stream": FormField(
        "stream",
        _flag("stream"),
        "true: server-sent events (transcript.text.delta per segment, transcript.text.segment per speaker turn "
        "with diarized_json, then transcript.text.done).",
        ("transcribe",),
        schema={"type": "boolean"},
    ),
    "include[]": FormField(
        "include",
        _include,
        "logprobs: per-word log probabilities (json and streamed responses).",
        ("transcribe",),
        repeated=True,
        schema={"type": "array", "items": {"type": "string", "enum": list(INCLUDES)}},
    ),
    "chunking_strategy": FormField(
        "chunking_strategy",
        _chunking,
        'VAD: "auto", or {"type": "server_vad", "threshold", "prefix_padding_ms", "silence_duration_ms"}.',
        ("transcribe",),
    ),
    "keywords[]": FormField(
        "keywords", _text, "Words or phrases to bias decoding towards (hotwords).", ("transcribe",), repeated=True,
        schema={"type": "array", "items": {"type": "string"}},
    ),
    "languages[]": FormField(
        "languages", _language, "The language of the speech, as a one-item list.", ("transcribe",), repeated=True,
        schema={"type": "array", "items": {"type": "string"}},
    ),
}  # fmt: skip


@dataclass
class AudioForm:
    """The fields of one ``/v1/audio/*`` request, each parsed by its :data:`FIELDS` entry."""

    task: str
    path: Path | None = None  # the upload, once stored
    filename: str = "upload"
    size: int = 0
    model: str = "whisper-1"
    language: str | None = None
    prompt: str | None = None
    response_format: str = "json"
    temperature: float = 0.0
    timestamp_granularities: list[str] = field(default_factory=list)
    stream: bool = False
    include: list[str] = field(default_factory=list)
    chunking_strategy: Any = None  # "auto" or a server_vad dict
    keywords: list[str] = field(default_factory=list)
    languages: list[str | None] = field(default_factory=list)
    known_speaker_names: list[str] = field(default_factory=list)
    known_speaker_references: list[str] = field(default_factory=list)

    def set(self, name: str, raw: str) -> None:
        if name.startswith("chunking_strategy[") and name.endswith("]") and self.task == "transcribe":
            # OpenAI's clients send an object as one field per key: chunking_strategy[type]=server_vad.
            if not isinstance(self.chunking_strategy, dict):
                self.chunking_strategy = {}
            self.chunking_strategy[name[len("chunking_strategy[") : -1]] = raw.strip()
            return
        spec = FIELDS.get(name)
        if spec is None or self.task not in spec.tasks:
            where = "" if spec is None else f" for /v1/audio/{ROUTES[self.task]}"
            raise invalid(name, f"unknown parameter{where}; see /docs for the fields", "unknown_parameter")
        value = spec.parse(raw)
        if spec.repeated:
            getattr(self, spec.attr).append(value)
        else:
            setattr(self, spec.attr, value)

    def check(self, state: ServerState) -> tuple[str, DecodeOptions]:
        """Cross-field checks, before anything is decoded: the served model and the decode options."""
        if self.path is None:
            raise invalid("file", "missing; send the audio as the multipart field 'file'")
        if self.size == 0:
            raise invalid("file", f"{self.filename} is empty (0 bytes); send the audio itself")
        try:
            name = state.pool.canonical(self.model)
        except ModelNotFoundError as err:
            raise ApiError(404, str(err), "model_not_found", "model") from err
        self._check_extras()
        grans = list(dict.fromkeys(self.timestamp_granularities))
        if grans and self.response_format != "verbose_json":
            raise invalid("timestamp_granularities[]", "needs response_format=verbose_json (as in OpenAI's API)")
        self.check_known_speakers()
        if self.response_format == "diarized_json" and self.task == "translate":
            raise invalid("response_format", "diarized_json is for transcriptions only (as in OpenAI's API)")
        if state.pool.multilingual(name) is False:
            if self.task == "translate":
                raise invalid("model", f"{self.model!r} ({name}) is English-only; translation needs a multilingual one")
            if self.language not in (None, "en"):
                raise invalid("language", f"{self.language!r}: model {self.model!r} ({name}) is English-only")
        settings = state.settings
        try:
            options = DecodeOptions(
                language=self.language,
                task=self.task,
                beam_size=settings.beam_size,
                # The sequential decoder: the API's segments are Whisper's own (timestamp tokens, seek), a
                # stream sends each window's as it is decoded, and the pool runs requests side by side.
                batch_size=0,
                # Diarization labels words, then splits segments where the speaker changes; logprobs come from
                # faster-whisper's word alignment.
                word_timestamps="word" in grans or self.response_format == "diarized_json" or self.logprobs,
                initial_prompt=self.prompt or None,
                hotwords=" ".join(k for k in self.keywords if k) or None,
                temperature=TEMPERATURES if self.temperature <= 0 else (self.temperature,),
                **{"vad_filter": settings.vad_filter, **vad_settings(self.chunking_strategy)},
            )
        except OptionError as err:
            raise invalid("model", str(err)) from err
        return name, options

    def check_known_speakers(self) -> None:
        """The known speakers' shape: names and clips paired, diarized_json only (clips are checked by decoding)."""
        names, refs = self.known_speaker_names, self.known_speaker_references
        if not names and not refs:
            return
        field_name = "known_speaker_names[]" if names else "known_speaker_references[]"
        if self.response_format != "diarized_json":
            raise invalid(field_name, "needs response_format=diarized_json")
        if len(names) != len(refs):
            raise invalid(
                "known_speaker_references[]", f"{len(refs)} clip(s) for {len(names)} name(s); send one clip per name"
            )
        if len(names) > MAX_KNOWN_SPEAKERS:
            raise invalid("known_speaker_names[]", f"{len(names)} names; send at most {MAX_KNOWN_SPEAKERS}")
        if any(not n for n in names) or len(set(names)) != len(names):
            raise invalid("known_speaker_names[]", "names must be non-empty and different")

    def reference_clips(self, upload_dir: Path) -> dict[str, Any]:
        """Name -> 16 kHz mono samples of each known speaker's clip.

        Raises:
            ApiError: 400 naming ``known_speaker_references[]`` for a clip that is not a base64 data
                URL, does not decode, or is not 2-10 s long.
        """
        import base64
        import binascii

        from whisperops.audio import load_audio
        from whisperops.errors import AudioError

        field_name = "known_speaker_references[]"
        clips: dict[str, Any] = {}
        for i, (name, url) in enumerate(zip(self.known_speaker_names, self.known_speaker_references, strict=True)):
            where = f"#{i + 1} ({name})"
            head, _, payload = url.partition(",")
            if not head.startswith("data:") or not head.endswith(";base64"):
                raise invalid(field_name, f"{where}: not a base64 data URL (data:audio/wav;base64,...)")
            try:
                raw = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise invalid(field_name, f"{where}: the base64 data does not decode") from None
            fd, tmp = tempfile.mkstemp(prefix="reference-", dir=upload_dir)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(raw)
                samples = load_audio(tmp)
            except AudioError:
                raise invalid(field_name, f"{where}: not decodable audio; send a WAV or MP3 clip") from None
            finally:
                Path(tmp).unlink(missing_ok=True)
            seconds = samples.size / 16000
            low, high = REFERENCE_S
            if not low <= seconds <= high:
                raise invalid(field_name, f"{where}: {seconds:.1f} s; send a clip of {low:g} to {high:g} s")
            clips[name] = samples
        return clips

    def _check_extras(self) -> None:
        """The parameters beyond the basic ones, against each other and the response format."""
        if self.stream and self.response_format not in STREAM_FORMATS:
            kinds = ", ".join(STREAM_FORMATS)
            raise invalid(
                "stream", f"streaming sends text events; use response_format {kinds}, not {self.response_format}"
            )
        if self.logprobs and self.response_format != "json":
            raise invalid(
                "include[]", f"logprobs need response_format json (as in OpenAI's API), not {self.response_format}"
            )
        languages = list(dict.fromkeys(code for code in self.languages if code))
        if len(languages) > 1:
            raise invalid("languages[]", f"{', '.join(languages)}: choose one language, or send none to detect it")
        if languages:
            if self.language not in (None, languages[0]):
                raise invalid("languages[]", f"{languages[0]} contradicts language={self.language}; send one of them")
            self.language = languages[0]

    @property
    def logprobs(self) -> bool:
        # faster-whisper exposes token probabilities only through word alignment: logprobs time words.
        return "logprobs" in self.include

    @property
    def granularities(self) -> list[str]:
        return list(dict.fromkeys(self.timestamp_granularities)) or ["segment"]


def openapi_body(task: str) -> dict[str, Any]:
    """The request body's schema for ``/docs``, from :data:`FIELDS` (the route reads the body itself)."""
    props: dict[str, Any] = {"file": {"type": "string", "format": "binary", "description": "Audio or video."}}
    props.update(
        {name: {**spec.schema, "description": spec.help} for name, spec in FIELDS.items() if task in spec.tasks}
    )
    schema = {"type": "object", "required": ["file"], "properties": props}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


def _filename(raw: bytes) -> str:
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        name = raw.decode("latin-1")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise invalid("file", "the filename holds control characters (NUL, newline...); send a plain file name")
    if len(raw) > MAX_FILENAME_BYTES:
        raise invalid("file", f"the filename is {len(raw)} bytes long; send one of at most {MAX_FILENAME_BYTES}")
    # Only a label for messages: the path part is dropped, and the upload is stored under our own name.
    return Path(name.replace("\\", "/")).name or "upload"


class _Parser:
    """python-multipart callbacks: fields into :class:`AudioForm`, the one file into its file."""

    def __init__(self, form: AudioForm, upload_dir: Path, stored: list[Path]) -> None:
        self.form = form
        self.upload_dir = upload_dir
        self.stored = stored  # the ticket's list, so a forced exit can still delete the upload
        self.parts = 0
        self.name = ""
        self.headers: dict[bytes, bytes] = {}
        self.header_name = b""
        self.header_value = b""
        self.data = bytearray()
        self.is_file = False
        self.file: Any = None
        self.pending: list[bytes] = []  # file bytes to write once the parser returns
        self.ended = False

    def on_part_begin(self) -> None:
        self.parts += 1
        self.headers, self.data, self.is_file = {}, bytearray(), False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_name.strip().lower()] = self.header_value.strip()
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        raw_name = options.get(b"name")
        if raw_name is None:
            raise invalid("file", "a multipart part has no name in its Content-Disposition", "invalid_multipart")
        self.name = raw_name.decode("utf-8", "replace")
        if self.parts > MAX_PARTS:
            raise invalid(
                self.name, f"more than {MAX_PARTS} form fields; send only the API's fields", "too_many_fields"
            )
        self.is_file = b"filename" in options or self.name == "file"
        if not self.is_file:
            return
        if self.name != "file":
            raise invalid(self.name, "unexpected file; send the audio as the field 'file'", "unknown_parameter")
        if self.form.path is not None:
            raise invalid("file", "sent twice; send one audio file per request")
        self.form.filename = _filename(options.get(b"filename", b"upload"))
        # No suffix from the client: the bytes decide what is decoded, never the name.
        fd, name = tempfile.mkstemp(prefix="upload-", dir=self.upload_dir)
        self.form.path = Path(name)
        self.stored.append(self.form.path)
        self.file = os.fdopen(fd, "wb")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.is_file:
            self.pending.append(data[start:end])
            self.form.size += end - start
            return
        self.data += data[start:end]
        limit = MAX_REFERENCE_BYTES if self.name == "known_speaker_references[]" else MAX_FIELD_BYTES
        if len(self.data) > limit:
            raise invalid(self.name, f"longer than {limit // 1024} KB; send a shorter value", "field_too_large")

    def on_part_end(self) -> None:
        if self.is_file:
            return
        try:
            value = self.data.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid(self.name, "is not UTF-8 text") from None
        if "\x00" in value:
            raise invalid(self.name, "holds a NUL character")
        self.form.set(self.name, value)

    def on_end(self) -> None:
        self.ended = True

    def callbacks(self) -> dict[str, Callable[..., None]]:
        names = ("part_begin", "part_data", "part_end", "header_field", "header_value", "header_end")
        return {f"on_{n}": getattr(self, f"on_{n}") for n in (*names, "headers_finished", "end")}


@contextlib.asynccontextmanager
async def receive_form(request: Request, state: ServerState, ticket: Ticket, task: str) -> AsyncIterator[AudioForm]:
    """Read the body of an audio request into an :class:`AudioForm`; its upload is deleted on exit.

    Bounded in size (``max_upload_mb``: 413, then the connection closes), in idle time
    (``body_timeout_s``: 408) and by the request's deadline (``request_timeout_s``: 408).
    """
    from python_multipart.exceptions import FormParserError
    from python_multipart.multipart import MultipartParser, parse_options_header

    settings = state.settings
    limit = settings.max_upload_bytes
    too_large = ApiError(
        413,
        f"upload larger than this server's limit of {settings.max_upload_mb:g} MB (max_upload_mb); "
        "send a shorter or compressed file",
        "file_too_large",
        "file",
    )
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise invalid("file", "send the request as multipart/form-data (as OpenAI's clients do)", "invalid_multipart")
    form = AudioForm(task=task)
    parser = _Parser(form, state.upload_dir, ticket.files)
    multipart = MultipartParser(boundary, parser.callbacks())  # type: ignore[arg-type]
    seen = 0
    try:
        while True:
            idle = settings.body_timeout_s < ticket.remaining()
            timeout = (
                BodyTimeout(f"upload stalled: nothing received for {settings.body_timeout_s:g} s (body_timeout_s)")
                if idle
                else BodyTimeout(
                    f"upload not finished within the request's {settings.request_timeout_s:g} s (request_timeout_s)"
                )
            )
            message = await ticket.wait(request.receive(), min(settings.body_timeout_s, ticket.remaining()), timeout)
            if message["type"] == "http.disconnect":
                raise invalid("file", "the client disconnected before the upload ended", "client_disconnected")
            chunk = message.get("body", b"")
            last = not message.get("more_body", False)
            if last:
                # Read to its end: an error found below can keep the connection open.
                request.scope["whisperops.body_done"] = True
            seen += len(chunk)
            if seen > limit:
                raise too_large
            try:
                multipart.write(chunk)
            except FormParserError as err:
                raise invalid(
                    "file", f"malformed multipart body ({err}); send multipart/form-data", "invalid_multipart"
                ) from None
            if parser.pending:
                data, parser.pending = b"".join(parser.pending), []
                await run_in_threadpool(parser.file.write, data)
            if last:
                break
        if not parser.ended:
            raise invalid("file", "the multipart body was cut off before its closing boundary", "invalid_multipart")
        if parser.file is not None:
            await run_in_threadpool(parser.file.close)
        yield form
    finally:
        if parser.file is not None and not parser.file.closed:
            parser.file.close()
        if form.path is not None:
            form.path.unlink(missing_ok=True)  # uploads never outlive their request, whatever happened


__all__ = ["FIELDS", "AudioForm", "FormField", "openapi_body", "receive_form"]
