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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
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
        self._multilingual: dict[str, bool | None] = {}

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
            f"(or whisper-1 for {self.settings.default_model})"
        )

    def multilingual(self, name: str) -> bool | None:
        """Whether served model ``name`` knows languages besides English, read without loading it."""
        name = self.canonical(name)
        if name not in self._multilingual:
            entry = self._entries[name]
            if entry.engine is not None:
                self._multilingual[name] = entry.engine.is_multilingual
            else:
                from whisperops.models import registry

                self._multilingual[name] = registry.is_multilingual(registry.resolve(name))
        return self._multilingual[name]

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


class ShuttingDown(WhisperOpsError):
    """The server is stopping and the request's grace time ran out (HTTP 503)."""


class Ticket:
    """One admitted request: its deadline, and the signals that end it early.

    Taken before the upload is read, so the bound on requests in progress covers uploads too: a
    flood gets 429 before its bodies arrive.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.cancel = threading.Event()  # seen by the decode thread at each segment
        self.aborted = asyncio.Event()  # set at shutdown, once the grace time is over
        self.files: list[Path] = []  # uploads stored for this request

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    async def wait(self, awaitable: Awaitable[T], timeout_s: float, on_timeout: Exception) -> T:
        """``await awaitable`` for at most ``timeout_s``; raise ``on_timeout`` or :class:`ShuttingDown`."""
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self.aborted.wait())
        try:
            done, _ = await asyncio.wait({work, stop}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if work in done:
            return work.result()
        work.cancel()
        if stop in done:
            raise ShuttingDown("server shutting down: the request was cancelled; retry it on another server")
        raise on_timeout


class Limiter:
    """``slots`` decodes at once, at most ``max_queue`` more uploading or waiting, the rest 429 at once."""

    def __init__(self, slots: int, max_queue: int) -> None:
        self.slots = slots
        self.max_queue = max_queue
        self.admitted = 0  # requests between admission and their answer: uploading, waiting or decoding
        self.running = 0  # decodes on worker threads, including ones whose request timed out
        self.waiting = 0
        self.tickets: set[Ticket] = set()
        self.active = 0  # decode threads inside their body, counted by the threads themselves
        self._active_lock = threading.Lock()
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
        return max(1, min(120, math.ceil(mean * (self.admitted - self.slots + 1) / self.slots)))

    def stats(self) -> dict[str, Any]:
        return {
            "slots": self.slots,
            "running": self.running,
            "waiting": self.waiting,
            "admitted": self.admitted,
            "max_queue": self.max_queue,
        }

    @contextlib.asynccontextmanager
    async def admit(self, timeout_s: float) -> AsyncIterator[Ticket]:
        """Admit one request for ``timeout_s`` (upload, queue and decode), or raise :class:`QueueFull`."""
        self._ensure()
        if self.admitted >= self.slots + self.max_queue:
            retry = self.retry_after_s()
            raise QueueFull(
                f"server busy: {self.admitted} requests in progress ({self.running} decoding, limit "
                f"{self.slots} + queue {self.max_queue}); retry after {retry} s",
                retry,
            )
        ticket = Ticket(time.monotonic() + timeout_s)
        self.admitted += 1
        self.tickets.add(ticket)
        try:
            yield ticket
        finally:
            self.admitted -= 1
            self.tickets.discard(ticket)

    def abort_all(self) -> int:
        """Cancel every admitted request (at shutdown): each answers 503, its decode stops soon."""
        for ticket in self.tickets:
            ticket.cancel.set()
            ticket.aborted.set()
        return len(self.tickets)

    def _body(self, fn: Callable[[threading.Event], T], cancel: threading.Event) -> T:
        with self._active_lock:
            self.active += 1
        try:
            return fn(cancel)
        finally:
            with self._active_lock:
                self.active -= 1

    def wait_idle(self, timeout_s: float) -> bool:
        """Block until no decode thread runs (at exit, when the loop is gone); False if one still does."""
        deadline = time.monotonic() + timeout_s
        while self.active and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.active

    async def run(self, fn: Callable[[threading.Event], T], ticket: Ticket, timeout_s: float) -> T:
        """Run ``fn(cancel_event)`` on a decode thread once a slot is free, before ``ticket``'s deadline."""
        sem = self._ensure()
        self.waiting += 1
        acquire = asyncio.ensure_future(sem.acquire())
        try:
            await ticket.wait(
                acquire,
                ticket.remaining(),
                RequestTimeout(f"request timed out after {timeout_s:g} s waiting for a free slot"),
            )
        except BaseException:
            if acquire.done() and not acquire.cancelled():
                sem.release()  # the slot came just as the request gave up: give it back
            else:
                acquire.cancel()  # a caller cancelled while queued: else the slot it gets later is never freed
            raise
        finally:
            self.waiting -= 1
        self.running += 1
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._body, fn, ticket.cancel)

        def _release(_: object) -> None:
            # Runs on the loop when the thread really finishes, not when the request gave up.
            self.running -= 1
            self._service_s.append(time.monotonic() - started)
            sem.release()

        future.add_done_callback(_release)
        try:
            return await ticket.wait(
                asyncio.shield(future),
                ticket.remaining(),
                RequestTimeout(f"request timed out after {timeout_s:g} s while decoding"),
            )
        except BaseException:
            ticket.cancel.set()
            # The abandoned future may still raise (Cancelled); retrieve it so asyncio does not log it.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            raise
