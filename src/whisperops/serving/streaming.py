"""``stream=true``: OpenAI's server-sent events, one ``transcript.text.delta`` per decoded segment.

With ``response_format=diarized_json`` the decode goes on to diarize the whole file; its speaker
turns then go out as ``transcript.text.segment`` events, just before ``transcript.text.done``.

The decode runs on a limiter slot like any other request (same queue limit and deadline). Its
segments cross from the decode thread to the event loop through a queue; the HTTP response starts
only once the first segment is out, so anything that fails before that (bad audio, a full queue, a
timeout while waiting) is still an ordinary HTTP error. Later failures become an ``error`` event
that ends the stream. A client that goes away stops its decode at the next segment, freeing the slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi.responses import StreamingResponse

from whisperops.results import Segment, Transcript
from whisperops.serving import openai_format
from whisperops.serving.pool import Cancelled

log = logging.getLogger(__name__)

# What the decode thread is given: the limiter's cancel event and a per-segment callback.
Decode = Callable[[threading.Event, Callable[[Segment], None]], tuple[Transcript, Any]]
# Maps an exception to the ApiError (message, type, code, param) the error event carries.
ErrorShape = Callable[[BaseException], Any]

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}  # proxies must not buffer events


class _Feed:
    """Segments from the decode thread to the event loop; ``leave`` asks the decode to give up."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Segment] = asyncio.Queue()
        self.stop = threading.Event()
        self.cancel: threading.Event | None = None  # the decode's own, once it runs: seen between blocks too
        self.decoded_s = 0.0

    def push(self, segment: Segment) -> None:  # runs on the decode thread
        if self.stop.is_set():
            raise Cancelled("client disconnected")
        self.decoded_s = segment.end
        self.loop.call_soon_threadsafe(self.queue.put_nowait, segment)

    def leave(self) -> None:
        """The stream is over: stop the decode at its next segment or block (diarization is skipped)."""
        self.stop.set()
        if self.cancel is not None:
            self.cancel.set()


async def _next(feed: _Feed, task: asyncio.Future) -> Segment | None:
    """The next segment, or None once the decode finished (its exception raised here)."""
    if feed.queue.empty() and not task.done():
        getter = asyncio.ensure_future(feed.queue.get())
        done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
    # Segments are queued before the decode's result is set, so a finished decode has none in flight.
    if not feed.queue.empty():
        return feed.queue.get_nowait()
    task.result()
    return None


async def _finish(feed: _Feed, task: asyncio.Future, cleanup: contextlib.AsyncExitStack) -> None:
    """Stop the decode and release the request once it has stopped."""
    if not task.done():
        task.add_done_callback(lambda _: log.info("stream closed: decode stopped at %.1f s of audio", feed.decoded_s))
    feed.leave()
    # An abandoned decode ends in Cancelled (or anything else); take the exception so asyncio does not log it.
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    if task.done():
        await cleanup.aclose()
    else:
        # The decode still reads the upload until its next segment: its admission and file go after.
        task.add_done_callback(lambda _: asyncio.ensure_future(cleanup.aclose()))


async def open_stream(
    receive: Callable[[], Any],
    run: Callable[[Callable[[threading.Event], Any]], Awaitable[Any]],
    decode: Decode,
    cleanup: contextlib.AsyncExitStack,
    *,
    with_logprobs: bool,
    error_shape: ErrorShape,
    speaker_segments: bool = False,
) -> StreamingResponse:
    """Start ``decode`` through ``run`` (a slot, the request's deadline); return the event stream once
    its first segment (or its end) is known. ``cleanup`` (the request's admission and upload) is
    closed when the stream ends, however it ends. ``speaker_segments``: the transcript ``decode``
    returns carries speakers, sent as ``transcript.text.segment`` events before ``done``.
    """
    feed = _Feed()

    def start(cancel: threading.Event) -> tuple[Transcript, Any]:
        feed.cancel = cancel
        if feed.stop.is_set():
            raise Cancelled("client disconnected")
        return decode(cancel, feed.push)

    task = asyncio.ensure_future(run(start))
    try:
        first = await _next(feed, task)
    except BaseException:
        await _finish(feed, task, cleanup)
        raise
    events = _events(receive, feed, task, first, with_logprobs, error_shape, speaker_segments, cleanup)
    return StreamingResponse(events, media_type="text/event-stream", headers=HEADERS)


async def _watch(receive: Callable[[], Any], feed: _Feed) -> None:
    # Starlette notices a client gone only when a send fails (ASGI 2.4), which may be windows later.
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            feed.leave()
            return


async def _events(
    receive: Callable[[], Any],
    feed: _Feed,
    task: asyncio.Future,
    item: Segment | None,
    with_logprobs: bool,
    error_shape: ErrorShape,
    speaker_segments: bool,
    cleanup: contextlib.AsyncExitStack,
) -> AsyncIterator[bytes]:
    started = False
    watch = asyncio.ensure_future(_watch(receive, feed))
    try:
        while item is not None:
            delta = openai_format.delta_text(item, first=not started)
            if delta:
                started = True
                words = (item.words or []) if with_logprobs else None
                yield openai_format.sse(openai_format.delta_event(delta, words))
            item = await _next(feed, task)
        transcript, _ = task.result()
        if speaker_segments:
            for segment in openai_format.speaker_segments(transcript):
                yield openai_format.sse(segment)
        yield openai_format.sse(openai_format.done_event(transcript, with_logprobs))
    except Exception as err:
        if feed.stop.is_set():
            return  # the client left; nobody is there to tell
        api = error_shape(err)
        log.warning("stream ended by an error: %s", api.message)
        yield openai_format.sse(openai_format.error_event(api.message, api.kind, api.code, api.param))
    finally:
        watch.cancel()
        if not task.done():
            log.info("client left mid-stream; cancelling its decode")
        await _finish(feed, task, cleanup)
