"""``whisperops serve`` on this machine: uvicorn, with a shutdown that keeps its promises.

First SIGINT or SIGTERM: stop accepting, let running requests finish for ``shutdown_grace_s``, then
answer what is left with 503 and exit 0. A second signal exits at once (status 1), deleting uploads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from types import FrameType
from typing import Any

from whisperops.serving.settings import ServeSettings

log = logging.getLogger(__name__)

# Seconds that abandoned decode threads get to notice their cancel flag before the process exits anyway.
_THREAD_EXIT_S = 2.0


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server with the drain and the forced second signal described above."""

        state: Any = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.should_exit:
                log.warning("second %s: exiting now", signal.Signals(sig).name)
                if self.state is not None:
                    for ticket in list(self.state.limiter.tickets):
                        for path in ticket.files:
                            path.unlink(missing_ok=True)
                os._exit(1)
            # Not re-raised after shutdown, as uvicorn would: SIGTERM then exits 0, as SIGINT does.
            self.should_exit = True
            loop = getattr(self, "_loop", None)
            if self.state is not None and loop is not None:
                loop.call_soon_threadsafe(self.state.drain, loop)

        async def serve(self, sockets: Any = None) -> None:
            self._loop = asyncio.get_running_loop()
            await super().serve(sockets)

    return Server


def run(settings: ServeSettings, log_level: str = "info") -> None:
    """Serve ``create_app(settings)`` on ``settings.host:port`` until a signal, then drain and exit."""
    import uvicorn

    from whisperops.serving.app import create_app

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        # Past our own grace, uvicorn cancels what is left; ours answers 503 first.
        timeout_graceful_shutdown=settings.shutdown_grace_s + 5,
    )
    server = _server_class()(config)
    server.state = app.state.whisperops
    server.run()
    if not server.state.limiter.wait_idle(_THREAD_EXIT_S):
        # A cancelled decode stops at its next segment or block; do not let it hold the exit.
        log.warning("a cancelled decode is still running: exiting without it")
        logging.shutdown()
        os._exit(0)


__all__ = ["run"]
