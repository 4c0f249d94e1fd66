"""Every error the server answers, in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

:data:`ERRORS` is the one table from an exception type to its HTTP status, ``code``, ``param`` and
``type``; :func:`install` makes every handler (domain errors, Starlette's 404/405, validation, the
catch-all 500) answer through it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from whisperops.errors import AudioError, ModelNotFoundError, OptionError, UnsupportedMediaError, WhisperOpsError
from whisperops.serving.pool import QueueFull, RequestTimeout, ShuttingDown

log = logging.getLogger(__name__)


@dataclass
class ApiError(Exception):
    """An error answered as it is: the status, message, ``code``, ``param`` and ``type`` given."""

    status: int
    message: str
    code: str | None
    param: str | None = None
    kind: str = "invalid_request_error"
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.message


class AudioTooLong(AudioError):
    """The audio is longer than the server's ``max_audio_s`` (HTTP 413)."""


class BodyTimeout(WhisperOpsError):
    """The client stopped sending its upload (HTTP 408)."""


# Exception type -> (status, code, param, type). Looked up along the exception's MRO, so a subclass
# listed before its base (UnsupportedMediaError before AudioError) wins.
ERRORS: dict[type[BaseException], tuple[int, str, str | None, str]] = {
    ModelNotFoundError: (404, "model_not_found", "model", "invalid_request_error"),
    AudioTooLong: (413, "audio_too_long", "file", "invalid_request_error"),
    UnsupportedMediaError: (400, "unsupported_media", "file", "invalid_request_error"),
    AudioError: (400, "invalid_audio", "file", "invalid_request_error"),
    OptionError: (400, "invalid_value", None, "invalid_request_error"),
    BodyTimeout: (408, "request_timeout", "file", "invalid_request_error"),
    QueueFull: (429, "server_busy", None, "rate_limit_error"),
    RequestTimeout: (504, "timeout", None, "timeout"),
    ShuttingDown: (503, "server_shutting_down", None, "server_error"),
}

# Starlette's own HTTP errors (routing), with the field to blame.
_HTTP_CODES: dict[int, tuple[str, str | None]] = {
    404: ("unknown_url", "url"),
    405: ("method_not_allowed", "method"),
}


def to_api_error(exc: BaseException) -> ApiError | None:
    """The :class:`ApiError` for a known exception (None for a real bug: a 500)."""
    if isinstance(exc, ApiError):
        return exc
    for cls in type(exc).__mro__:
        if cls in ERRORS:
            status, code, param, kind = ERRORS[cls]
            err = ApiError(status, str(exc), code, getattr(exc, "param", None) or param, kind)
            if isinstance(exc, QueueFull):
                err.headers["Retry-After"] = str(exc.retry_after_s)
            return err
    return None


def error_body(message: str, kind: str, code: str | None, param: str | None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(err: ApiError, *, close: bool = False) -> JSONResponse:
    headers = dict(err.headers)
    if close:
        # The request body was not read to its end: say so, and uvicorn closes instead of reading on.
        headers["Connection"] = "close"
    return JSONResponse(error_body(err.message, err.kind, err.code, err.param), err.status, headers=headers or None)


def body_unread(scope: dict[str, Any]) -> bool:
    """Whether a request carries a body that its handler did not read to the end."""
    if scope.get("type") != "http" or scope.get("whisperops.body_done"):
        return False
    headers = dict(scope.get("headers") or [])
    length = headers.get(b"content-length", b"0").strip()
    return headers.get(b"transfer-encoding") is not None or (length != b"0" and length != b"")


def respond(request: Request, err: ApiError) -> JSONResponse:
    """Log the handled error in one line, and answer it."""
    log.info("%s %s -> %d %s: %s", request.method, request.url.path, err.status, err.code, err.message)
    return error_response(err, close=body_unread(request.scope))


def install(app: FastAPI) -> None:
    """Route every error FastAPI and Starlette raise through :func:`respond`."""

    async def on_known(request: Request, exc: Exception) -> JSONResponse:
        err = to_api_error(exc)
        assert err is not None  # registered only for the table's types
        return respond(request, err)

    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, param = _HTTP_CODES.get(exc.status_code, ("http_error", None))
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"unknown URL {request.method} {request.url.path}; see /docs for the API's routes"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}; see /docs for the methods it takes"
        err = ApiError(exc.status_code, message, code, param, headers=dict(exc.headers or {}))
        return respond(request, err)

    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ())]
        param = ".".join(loc[1:]) or None
        err = ApiError(400, f"{param or 'request'}: {first.get('msg', 'invalid')}", "invalid_value", param)
        return respond(request, err)

    app.add_exception_handler(ApiError, on_known)
    for cls in ERRORS:
        app.add_exception_handler(cls, on_known)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)


class ErrorBoundary:
    """ASGI middleware: a real bug becomes one logged traceback and a 500 in OpenAI's shape.

    Starlette's own ``Exception`` handler answers and then re-raises, so uvicorn logged a second
    traceback and dropped the keep-alive connection without saying ``Connection: close``.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            log.error("%s %s -> 500: %r", scope.get("method"), scope.get("path"), exc, exc_info=exc)
            if started:
                raise  # half a response is out: only closing the connection can say it failed
            err = ApiError(500, f"internal error: {type(exc).__name__}: {exc}", None, None, "server_error")
            await error_response(err, close=True)(scope, receive, send)


__all__ = ["ERRORS", "ApiError", "AudioTooLong", "BodyTimeout", "ErrorBoundary", "error_response", "install"]
