"""The FastAPI application: OpenAI's audio API over :class:`whisperops.engine.Engine`.

One app, two hosts: ``whisperops serve`` runs it with uvicorn (:mod:`whisperops.serving.local`);
``whisperops serve --ray`` builds the same app inside each Ray Serve replica
(:mod:`whisperops.serving.ray_app`). This module only wires: the routes live in
:mod:`~whisperops.serving.routes`, the error table in :mod:`~whisperops.serving.errors`, the form in
:mod:`~whisperops.serving.forms`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI

from whisperops import __version__
from whisperops.serving import errors, realtime, routes
from whisperops.serving.errors import ApiError
from whisperops.serving.pool import Limiter, ModelPool
from whisperops.serving.settings import ServeSettings

log = logging.getLogger(__name__)


class ServerState:
    """Pool, limiter and settings of one process (one uvicorn server or one Ray replica)."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.pool = ModelPool(settings)
        self.limiter = Limiter(settings.slots, settings.max_queue)
        self.upload_dir = settings.upload_dir()
        self.draining = False
        self.realtime_sessions: set[Any] = set()  # open /v1/realtime sessions

    def drain(self, loop: asyncio.AbstractEventLoop) -> None:
        """Stop admitting; after ``shutdown_grace_s`` cancel what still runs (each answers 503)."""
        if self.draining:
            return
        self.draining = True
        grace = self.settings.shutdown_grace_s
        log.info("shutting down: %d request(s) in progress get %g s to finish", self.limiter.admitted, grace)

        def cancel() -> None:
            if n := self.limiter.abort_all():
                log.warning("shutdown grace of %g s over: cancelled %d request(s) with 503", grace, n)

        loop.call_later(grace, cancel)


class HostGuard:
    """ASGI middleware against DNS rebinding and cross-site use of a local server.

    A ``Host`` outside :meth:`ServeSettings.host_allowed` gets 400 before any route runs; a browser
    ``Origin`` that is neither the server's own nor in ``cors_origins`` gets 403.
    """

    def __init__(self, app: Any, settings: ServeSettings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        host = headers.get(b"host", b"").decode("latin-1")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        err = None
        if not self.settings.host_allowed(name):
            err = ApiError(
                400,
                f"Host {host[:100]!r} is not served here; use http://127.0.0.1 or localhost, or start the server "
                "with --allowed-host NAME",
                "invalid_host",
                "host",
            )
        origin = headers.get(b"origin", b"").decode("latin-1")
        if err is None and origin and origin not in self.settings.cors_origins and origin.split("://")[-1] != host:
            err = ApiError(
                403,
                f"Origin {origin[:100]!r} may not call this server; start it with --cors-origin {origin[:100]} "
                "to allow that web page",
                "origin_not_allowed",
                "origin",
            )
        if err is None:
            await self.app(scope, receive, send)
            return
        log.info("%s %s -> %d %s: %s", scope.get("method"), scope.get("path"), err.status, err.code, err.message)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await errors.error_response(err, close=errors.body_unread(scope))(scope, receive, send)


async def _unload_idle(state: ServerState) -> None:
    """Background sweep: drop models nobody used for ``idle_unload_s`` (each replica its own)."""
    interval = max(0.2, min(30.0, state.settings.idle_unload_s / 4))
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(state.pool.unload_idle)
        except Exception:  # a failed sweep must not end the sweeper
            log.exception("idle unload failed")


def create_app(settings: ServeSettings | None = None) -> FastAPI:
    """Build the app. Model names are checked now (fail fast); weights load on first request.

    Args:
        settings: What to serve and how much to accept (models, key, slots, queue, timeouts,
            upload limit, decoding); the defaults of ``ServeSettings`` when None.

    Returns:
        A FastAPI app with OpenAI's audio routes under ``/v1``, ``/health`` and ``/docs``; run it
        with any ASGI server, or deploy it on Ray Serve with ``whisperops.serving.ray_app.build``.

    Raises:
        ModelNotFoundError: A model in ``settings.models`` is not known.
    """
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
    app.include_router(routes.router)
    app.include_router(realtime.router)
    errors.install(app)
    # add_middleware wraps: the last added runs first. CORS answers preflights only for origins
    # HostGuard let through; ErrorBoundary catches what everything inside it raises.
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(HostGuard, settings=settings)
    app.add_middleware(errors.ErrorBoundary)
    return app


__all__ = ["ServerState", "create_app"]
