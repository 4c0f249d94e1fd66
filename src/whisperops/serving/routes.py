"""The routes of OpenAI's audio API, plus ``/health``: one :class:`~fastapi.APIRouter`.

Each route reads the per-process :class:`~whisperops.serving.app.ServerState` from the app, so the
router is plain module state that new routes (streaming, realtime) can join. Errors are raised, never
answered here: :mod:`whisperops.serving.errors` turns each into OpenAI's shape.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import secrets
import time
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from whisperops import __version__
from whisperops.errors import AudioError
from whisperops.serving import decoding, openai_format, streaming
from whisperops.serving.errors import ApiError, to_api_error
from whisperops.serving.forms import AudioForm, openapi_body, receive_form
from whisperops.serving.pool import ALIASES, ShuttingDown

if TYPE_CHECKING:
    from whisperops.engine import DecodeOptions
    from whisperops.serving.app import ServerState
    from whisperops.serving.pool import Ticket

log = logging.getLogger(__name__)
router = APIRouter()
_STARTED = int(time.time())
_bearer = HTTPBearer(auto_error=False, description="The server's --api-key (or WHISPEROPS_API_KEY)")


def get_state(request: Request) -> ServerState:
    return request.app.state.whisperops


State = Annotated["ServerState", Depends(get_state)]


def require_key(state: State, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """401 unless the request carries the server's key (checked before the body is read)."""
    key = state.settings.api_key
    if key is None:
        return
    given = creds.credentials if creds is not None else ""
    if not secrets.compare_digest(given.encode("utf-8", "replace"), key.encode()):
        raise ApiError(
            401,
            "missing or wrong API key; send the server's key as 'Authorization: Bearer KEY' (OpenAI(api_key=KEY))",
            "invalid_api_key",
        )


@router.get("/health", tags=["server"])
async def health(state: State) -> dict[str, Any]:
    """Liveness and load: answered on the event loop, so it stays fast while decodes run."""
    return {
        "status": "draining" if state.draining else "ok",
        "version": __version__,
        "models": state.pool.names,
        "loaded": state.pool.loaded(),
        **state.limiter.stats(),
    }


# HEAD too, for load balancers' health checks; one operation in the schema.
router.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)


def model_card(state: ServerState, name: str) -> dict[str, Any]:
    target = state.pool.canonical(name)
    return {
        "id": name,
        "object": "model",
        "created": _STARTED,
        "owned_by": "whisperops",
        "root": target,
        "loaded": target in state.pool.loaded(),
    }


@router.get("/v1/models", tags=["models"], dependencies=[Depends(require_key)])
async def list_models(state: State) -> dict[str, Any]:
    """The served models, in OpenAI's list shape."""
    return {"object": "list", "data": [model_card(state, n) for n in [*state.pool.names, *ALIASES]]}


@router.get("/v1/models/{model}", tags=["models"], dependencies=[Depends(require_key)])
async def get_model(state: State, model: str) -> dict[str, Any]:
    return model_card(state, model)


async def transcribe_upload(request: Request, state: ServerState, task: str) -> Response:
    """Admit, read and check the form, probe, then decode on a slot; every limit applies in that order."""
    if state.draining:
        raise ShuttingDown("server shutting down: not accepting new requests; retry on another server")
    settings = state.settings
    async with contextlib.AsyncExitStack() as stack:
        ticket = await stack.enter_async_context(state.limiter.admit(settings.request_timeout_s))
        form = await stack.enter_async_context(receive_form(request, state, ticket, task))
        name, options = form.check(state)
        assert form.path is not None  # check() refuses a form without a file
        path = form.path
        try:
            await run_in_threadpool(decoding.check_duration, path, form.filename, settings.max_audio_s)
            if form.response_format == "diarized_json":
                clips = await run_in_threadpool(form.reference_clips, path.parent)
                run = functools.partial(decoding.transcribe_diarized, references=clips)
            else:
                run = decoding.transcribe
            if form.stream:
                # The stream outlives this call: its admission and its upload end when the stream does.
                transcribe = functools.partial(run, state, name)
                return await stream_upload(request, state, ticket, form, transcribe, options, stack.pop_all())
            transcript, tokenize = await state.limiter.run(
                lambda cancel: run(state, name, path, form.filename, options, cancel),
                ticket,
                settings.request_timeout_s,
            )
        except AudioError as err:
            # Messages name the client's file, never the server's path for it.
            err.args = (str(err).replace(str(path), form.filename),)
            raise
    return render(form, transcript, tokenize)


async def stream_upload(
    request: Request,
    state: ServerState,
    ticket: Ticket,
    form: AudioForm,
    transcribe: Any,
    options: DecodeOptions,
    cleanup: contextlib.AsyncExitStack,
) -> Response:
    """``stream=true``: the decode's segments as server-sent events (:mod:`whisperops.serving.streaming`).

    ``transcribe`` is :func:`~whisperops.serving.decoding.transcribe` (or its diarized variant) bound
    to the served model.
    """
    assert form.path is not None
    path, filename, timeout_s = form.path, form.filename, state.settings.request_timeout_s

    def run(fn: Any) -> Any:
        return state.limiter.run(fn, ticket, timeout_s)

    def decode(cancel: Any, push: Any) -> Any:
        return transcribe(path, filename, options, cancel, on_segment=push)

    def shape(err: BaseException) -> ApiError:
        api = to_api_error(err)
        if api is None:
            log.error("stream failed: %r", err, exc_info=err)
            return ApiError(500, f"internal error: {type(err).__name__}: {err}", None, None, "server_error")
        api.message = api.message.replace(str(path), filename)  # name the client's file, never our path
        return api

    return await streaming.open_stream(
        request.receive,
        run,
        decode,
        cleanup,
        with_logprobs=form.logprobs,
        error_shape=shape,
        speaker_segments=form.response_format == "diarized_json",
    )


def render(form: AudioForm, transcript: Any, tokenize: Any) -> Response:
    fmt = form.response_format
    body = openai_format.render(
        transcript,
        fmt,
        task=form.task,
        granularities=form.granularities,
        tokenize=tokenize,
        with_logprobs=form.logprobs,
    )
    if isinstance(body, str):
        return PlainTextResponse(body, media_type=openai_format.MEDIA_TYPES[fmt])
    return JSONResponse(body)


@router.post(
    "/v1/audio/transcriptions",
    tags=["audio"],
    dependencies=[Depends(require_key)],
    openapi_extra=openapi_body("transcribe"),
)
async def transcriptions(request: Request, state: State) -> Response:
    """Transcribe speech in its own language (OpenAI's ``audio.transcriptions.create``)."""
    return await transcribe_upload(request, state, "transcribe")


@router.post(
    "/v1/audio/translations",
    tags=["audio"],
    dependencies=[Depends(require_key)],
    openapi_extra=openapi_body("translate"),
)
async def translations(request: Request, state: State) -> Response:
    """Translate speech into English text (OpenAI's ``audio.translations.create``; multilingual models)."""
    return await transcribe_upload(request, state, "translate")


__all__ = ["router"]
