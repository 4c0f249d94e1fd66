"""Loaded models and inference slots: lazy load, idle unload, bounded concurrency and queue.

Decoding is CPU-bound and blocks, so it runs on a small thread pool (one thread per slot) while the
event loop keeps answering ``/health`` and rejecting overflow. A request that waits longer than its
deadline gets 504; its decode is cancelled at the next segment boundary so the slot frees soon.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from whisperops.engine import Engine
from whisperops.errors import ModelNotFoundError, WhisperOpsError
from whisperops.serving.settings import ServeSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

# OpenAI's clients send "whisper-1"; serve it with the first configured model so they work unchanged.
ALIASES = ("whisper-1",)


class QueueFull(WhisperOpsError):
    """Every slot is busy and the queue is full (HTTP 429)."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestTimeout(WhisperOpsError):
    """The request's deadline passed while it waited or decoded (HTTP 504)."""


class Cancelled(Exception):
    """Raised inside a decode whose request already timed out, to free its slot early."""


@dataclass
class _Entry:
    engine: Engine | None = None
    users: int = 0
    last_used: float = 0.0


class ModelPool:
    """Served model names -> engines, loaded on first use and unloaded after ``idle_unload_s``."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self._entries = {name: _Entry() for name in settings.models}
        self._lock = threading.Lock()  # guards entry counters
        self._load_locks = {name: threading.Lock() for name in settings.models}  # one load per model at once

    @property
    def names(self) -> list[str]:
        return list(self._entries)

    def canonical(self, name: str | None) -> str:
        """The served name for a request's ``model`` field; :class:`ModelNotFoundError` if not served."""
        if not name or name in ALIASES:
            return self.settings.default_model
        if name in self._entries:
            return name
        raise ModelNotFoundError(
            f"model {name!r} is not served here; choose one of {', '.join(self.names)} "
            f"(or whisper-1 for {self.settings.default_model}), or restart with --model {name}"
        )

    def loaded(self) -> list[str]:
        with self._lock:
            return [n for n, e in self._entries.items() if e.engine is not None]

    @contextlib.contextmanager
    def use(self, name: str) -> Iterator[Engine]:
        """The engine for ``name``, loaded if needed (blocking: call from a worker thread)."""
        name = self.canonical(name)
        entry = self._entries[name]
        with self._lock:
            entry.users += 1
        try:
            if entry.engine is None:
                with self._load_locks[name]:
                    if entry.engine is None:
                        s = self.settings
                        entry.engine = Engine(
                            name, s.device, s.compute_type, cpu_threads=s.cpu_threads, num_workers=s.slots
                        )
            yield entry.engine
        finally:
            with self._lock:
                entry.users -= 1
                entry.last_used = time.monotonic()

    def unload_idle(self, now: float | None = None) -> list[str]:
        """Drop engines unused for ``idle_unload_s`` that no request holds; returns their names."""
        idle = self.settings.idle_unload_s
        if idle <= 0:
            return []
        now = time.monotonic() if now is None else now
        dropped = []
        with self._lock:
            for name, entry in self._entries.items():
                if entry.engine is not None and entry.users == 0 and now - entry.last_used >= idle:
                    entry.engine = None
                    dropped.append(name)
        if dropped:
            gc.collect()  # CTranslate2 frees its weights when the last reference goes
            log.info("unloaded idle models: %s", ", ".join(dropped))
        return dropped


class Limiter:
    """``slots`` decodes at once, at most ``max_queue`` waiting, everything else 429 at once."""

    def __init__(self, slots: int, max_queue: int) -> None:
        self.slots = slots
        self.max_queue = max_queue
        self.running = 0  # decodes on worker threads, including ones whose request timed out
        self.waiting = 0
        self._sem: asyncio.Semaphore | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._service_s: deque[float] = deque(maxlen=32)

    def _ensure(self) -> asyncio.Semaphore:
        # Created lazily inside the serving process and loop (the app may be pickled into a Ray replica).
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.slots)
            self._executor = ThreadPoolExecutor(self.slots, thread_name_prefix="whisperops-decode")
        return self._sem

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free: queue length times the recent mean decode time."""
        mean = sum(self._service_s) / len(self._service_s) if self._service_s else 1.0
        return max(1, min(120, math.ceil(mean * (self.waiting + 1) / self.slots)))

    def stats(self) -> dict[str, Any]:
        return {"slots": self.slots, "running": self.running, "waiting": self.waiting, "max_queue": self.max_queue}

    async def run(self, fn: Callable[[threading.Event], T], timeout_s: float) -> T:
        """Run ``fn(cancel_event)`` on a decode thread once a slot is free, within ``timeout_s``."""
        sem = self._ensure()
        if self.running + self.waiting >= self.slots + self.max_queue:
            retry = self.retry_after_s()
            raise QueueFull(
                f"server busy: {self.running} decoding, {self.waiting} queued (limit {self.max_queue}); "
                f"retry after {retry} s",
                retry,
            )
        deadline = time.monotonic() + timeout_s
        self.waiting += 1
        try:
            await asyncio.wait_for(sem.acquire(), timeout=timeout_s)
        except (asyncio.TimeoutError, TimeoutError) as err:
            raise RequestTimeout(f"request timed out after {timeout_s:g} s waiting for a free slot") from err
        finally:
            self.waiting -= 1
        self.running += 1
        cancel = threading.Event()
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, fn, cancel)

        def _release(_: object) -> None:
            # Runs on the loop when the thread really finishes, not when the request gave up.
            self.running -= 1
            self._service_s.append(time.monotonic() - started)
            sem.release()

        future.add_done_callback(_release)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout=max(0.0, deadline - time.monotonic()))
        except (asyncio.TimeoutError, TimeoutError) as err:
            cancel.set()
            # The abandoned future may still raise (Cancelled); retrieve it so asyncio does not log it.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise RequestTimeout(f"request timed out after {timeout_s:g} s while decoding") from err
