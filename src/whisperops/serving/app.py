"""The FastAPI application: OpenAI's audio API over :class:`whisperops.engine.Engine`.

One app, two hosts: ``whisperops serve`` runs it with uvicorn; ``whisperops serve --ray`` builds the
same app inside each Ray Serve replica (see :mod:`whisperops.serving.ray_app`).
"""

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from whisperops import __version__
from whisperops.engine import DecodeOptions
from whisperops.errors import AudioError, ModelNotFoundError, OptionError
from whisperops.results import Transcript
from whisperops.serving import openai_format
from whisperops.serving.pool import ALIASES, Cancelled, Limiter, ModelPool, QueueFull, RequestTimeout
from whisperops.serving.settings import ServeSettings

log = logging.getLogger(__name__)

AUDIO_PATHS = ("/v1/audio/transcriptions", "/v1/audio/translations")
_STARTED = int(time.time())


# Form fields of OpenAI's POST /v1/audio/{transcriptions,translations}.
FileField = Annotated[UploadFile, File(description="Audio or video in any format FFmpeg reads.")]
ModelField = Annotated[str, Form(description="A served model name; whisper-1 means the first one.")]
FormatField = Annotated[str, Form(description="json, text, srt, vtt or verbose_json.")]
PromptField = Annotated[str | None, Form(description="Text to prime the decoder (initial prompt).")]
TempField = Annotated[float, Form(description="0: fall back from 0 to 1 as openai/whisper; >0: fixed.")]


class ApiError(HTTPException):
    """An HTTP error rendered in OpenAI's ``{"error": {...}}`` shape."""

    def __init__(
        self, status: int, message: str, code: str, *, kind: str = "invalid_request_error", param: str | None = None
    ) -> None:
        super().__init__(status_code=status, detail=message)
        self.code, self.kind, self.param = code, kind, param
        self.extra_headers: dict[str, str] = {}


def _error_body(message: str, kind: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _error_response(status: int, message: str, kind: str, code: str | None, headers=None) -> JSONResponse:
    return JSONResponse(_error_body(message, kind, code), status_code=status, headers=headers)


class _BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            f"upload larger than the server's limit of {limit / 1e6:g} MB; send a shorter or compressed file "
            "(or restart the server with a larger --max-upload-mb)",
            "file_too_large",
            param="file",
        )


class UploadLimit:
    """ASGI middleware: 413 before reading an oversized body (by Content-Length, else while streaming)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            err = _BodyTooLarge(self.limit)
            await _error_response(413, err.detail, err.kind, err.code, {"Connection": "close"})(scope, receive, send)
            return
        seen = 0

        async def counting_receive() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                # An HTTPException, so FastAPI's body parser passes it through as 413 rather than 400.
                raise _BodyTooLarge(self.limit)
            return message

        await self.app(scope, counting_receive, send)


class ServerState:
    """Pool, limiter and settings of one process (one uvicorn server or one Ray replica)."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.pool = ModelPool(settings)
        self.limiter = Limiter(settings.slots, settings.max_queue)
        self.upload_dir = settings.upload_dir()


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """Build the app. Model names are checked now (fail fast); weights load on first request."""
    from whisperops.models import registry

    settings = settings or ServeSettings()
    for name in settings.models:
        registry.resolve(name)  # ModelNotFoundError now beats a 404 on every request later
    state = ServerState(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        reaper = asyncio.create_task(_unload_idle(state)) if settings.idle_unload_s > 0 else None
        try:
            yield
        finally:
            if reaper is not None:
                reaper.cancel()

    app = FastAPI(
        title="whisperops",
        version=__version__,
        description="OpenAI-compatible speech-to-text over faster-whisper. "
        "Use any OpenAI client with base_url=http://HOST:PORT/v1.",
        lifespan=lifespan,
    )
    app.state.whisperops = state
    app.add_middleware(UploadLimit, limit=settings.max_upload_bytes)
    bearer = HTTPBearer(auto_error=False, description="The server's --api-key (or WHISPEROPS_API_KEY)")

    def require_key(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if settings.api_key is None:
            return
        given = creds.credentials if creds is not None else ""
        if not secrets.compare_digest(given.encode(), settings.api_key.encode()):
            raise ApiError(
                401,
                "missing or wrong API key; send the server's key as 'Authorization: Bearer KEY' (OpenAI(api_key=KEY))",
                "invalid_api_key",
            )

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
        kind = getattr(exc, "kind", "invalid_request_error")
        code = getattr(exc, "code", None)
        headers = {**(exc.headers or {}), **getattr(exc, "extra_headers", {})}
        return _error_response(exc.status_code, str(exc.detail), kind, code, headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        field = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return _error_response(400, f"{field}: {first.get('msg', 'invalid')}", "invalid_request_error", "invalid")

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        # One bad request must not take the server down; log it whole, answer in OpenAI's shape.
        log.error("unexpected error: %r", exc, exc_info=exc)
        return _error_response(500, f"internal error: {type(exc).__name__}: {exc}", "server_error", None)

    @app.get("/health", tags=["server"])
    async def health() -> dict[str, Any]:
        """Liveness and load: answered on the event loop, so it stays fast while decodes run."""
        return {
            "status": "ok",
            "version": __version__,
            "models": state.pool.names,
            "loaded": state.pool.loaded(),
            **state.limiter.stats(),
        }

    @app.get("/v1/models", tags=["models"], dependencies=[Depends(require_key)])
    async def list_models() -> dict[str, Any]:
        """The served models, in OpenAI's list shape, with what the registry knows about each."""
        return {"object": "list", "data": [_model_card(state, n) for n in [*state.pool.names, *ALIASES]]}

    @app.get("/v1/models/{model}", tags=["models"], dependencies=[Depends(require_key)])
    async def get_model(model: str) -> dict[str, Any]:
        try:
            state.pool.canonical(model)
        except ModelNotFoundError as err:
            raise ApiError(404, str(err), "model_not_found", param="model") from err
        return _model_card(state, model)

    async def audio_endpoint(
        task: str,
        file: UploadFile,
        model: str,
        language: str | None,
        prompt: str | None,
        response_format: str,
        temperature: float,
        granularities: list[str],
    ) -> Response:
        try:
            fmt, grans = openai_format.check_format(response_format, granularities)
            name = state.pool.canonical(model)
            options = DecodeOptions(
                language=openai_format.language_code(language),
                task=task,
                beam_size=settings.beam_size,
                vad_filter=settings.vad_filter,
                word_timestamps="word" in grans and fmt == "verbose_json",
                initial_prompt=prompt or None,
                temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0) if temperature <= 0 else (temperature,),
            )
        except ModelNotFoundError as err:
            raise ApiError(404, str(err), "model_not_found", param="model") from err
        except OptionError as err:
            raise ApiError(400, str(err), "invalid_value") from err
        if not 0.0 <= temperature <= 1.0:
            raise ApiError(400, f"temperature {temperature}: must be between 0 and 1", "invalid_value")

        filename = Path(file.filename or "upload").name
        suffix = Path(filename).suffix[:16]
        fd, tmp_name = tempfile.mkstemp(prefix="upload-", suffix=suffix, dir=state.upload_dir)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                await run_in_threadpool(shutil.copyfileobj, file.file, out, 1 << 20)
            transcript, tokenize = await state.limiter.run(
                lambda cancel: _decode(state, name, tmp, filename, options, cancel), settings.request_timeout_s
            )
        except AudioError as err:
            message = str(err).replace(str(tmp), filename)
            raise ApiError(400, message, "invalid_audio", param="file") from err
        except OptionError as err:
            raise ApiError(400, str(err), "invalid_value") from err
        except ModelNotFoundError as err:
            raise ApiError(404, str(err), "model_not_found", param="model") from err
        except QueueFull as err:
            api = ApiError(429, str(err), "server_busy", kind="rate_limit_error")
            api.extra_headers = {"Retry-After": str(err.retry_after_s)}
            raise api from err
        except RequestTimeout as err:
            raise ApiError(
                504, f"{filename}: {err}; send shorter audio or retry later", "timeout", kind="timeout"
            ) from err
        finally:
            tmp.unlink(missing_ok=True)  # uploads never outlive their request, whatever happened
            await file.close()
        body = openai_format.render(transcript, fmt, task=task, granularities=grans, tokenize=tokenize)
        if isinstance(body, str):
            return PlainTextResponse(body, media_type=openai_format.MEDIA_TYPES[fmt])
        return JSONResponse(body)

    @app.post("/v1/audio/transcriptions", tags=["audio"], dependencies=[Depends(require_key)])
    async def transcriptions(
        file: FileField,
        model: ModelField = "whisper-1",
        language: Annotated[str | None, Form(description="ISO-639-1 code; empty to detect.")] = None,
        prompt: PromptField = None,
        response_format: FormatField = "json",
        temperature: TempField = 0.0,
        granularities: Annotated[
            list[str] | None,
            Form(alias="timestamp_granularities[]", description="segment and/or word (verbose_json only)."),
        ] = None,
    ) -> Response:
        """Transcribe speech in its own language (OpenAI's ``audio.transcriptions.create``)."""
        return await audio_endpoint(
            "transcribe", file, model, language, prompt, response_format, temperature, granularities or []
        )

    @app.post("/v1/audio/translations", tags=["audio"], dependencies=[Depends(require_key)])
    async def translations(
        file: FileField,
        model: ModelField = "whisper-1",
        prompt: PromptField = None,
        response_format: FormatField = "json",
        temperature: TempField = 0.0,
    ) -> Response:
        """Translate speech into English text (OpenAI's ``audio.translations.create``; multilingual models)."""
        return await audio_endpoint("translate", file, model, None, prompt, response_format, temperature, [])

    return app


def _decode(
    state: ServerState, name: str, path: Path, filename: str, options: DecodeOptions, cancel: threading.Event
) -> tuple[Transcript, Any]:
    """Worker-thread body: decode the upload, transcribe, stop early if the request timed out."""
    from whisperops.audio import load_audio

    samples = load_audio(path)

    def check(_segment: object) -> None:
        if cancel.is_set():
            raise Cancelled(filename)

    with state.pool.use(name) as engine:
        transcript = engine.transcribe(samples, options, source=filename, on_segment=check)
        tokenizer = getattr(engine.model, "hf_tokenizer", None)
    tokenize = (lambda text: tokenizer.encode(text, add_special_tokens=False).ids) if tokenizer is not None else None
    return transcript, tokenize


def _model_card(state: ServerState, name: str) -> dict[str, Any]:
    target = state.pool.canonical(name)
    return {
        "id": name,
        "object": "model",
        "created": _STARTED,
        "owned_by": "whisperops",
        "root": target,
        "loaded": target in state.pool.loaded(),
    }


async def _unload_idle(state: ServerState) -> None:
    period = max(0.2, min(30.0, state.settings.idle_unload_s / 4))
    while True:
        await asyncio.sleep(period)
        try:
            await asyncio.to_thread(state.pool.unload_idle)
        except Exception:  # a failed sweep must not end the sweeper
            log.exception("idle unload failed")


__all__ = ["AUDIO_PATHS", "ServerState", "create_app"]
