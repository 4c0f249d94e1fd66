"""A small Realtime transcription client: play a recording into ``/v1/realtime`` as a microphone would.

Used by the tests, by ``benchmarks/serve_stream.py`` and as the docs' WebSocket example: it sends
pcm16 at 24 kHz in 100 ms appends, at real-time pace (or faster), and records every server event
with the time it arrived, so latency and delta cadence can be read off the result.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IN_RATE = 24000  # OpenAI's pcm16 (audio/pcm) rate


def pcm16_24k(samples: np.ndarray) -> bytes:
    """16 kHz float32 -> 24 kHz little-endian int16, the Realtime API's pcm16."""
    from scipy.signal import resample_poly

    up = resample_poly(samples.astype(np.float32), 3, 2)
    return (np.clip(up, -1.0, 1.0) * 32767).astype("<i2").tobytes()


@dataclass
class Replay:
    """What the server sent: ``(seconds since the first append, event)``, in order."""

    events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    sent_s: float = 0.0  # when the last append went out

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e["type"] == kind]

    def at(self, kind: str) -> dict[str, float]:
        """item_id -> arrival time of its (last) event of ``kind``."""
        return {e["item_id"]: t for t, e in self.events if e["type"] == kind and "item_id" in e}

    def transcripts(self) -> list[str]:
        return [e["transcript"] for e in self.of("conversation.item.input_audio_transcription.completed")]

    def latencies(self) -> list[float]:
        """Per turn: seconds from the end of its speech (in the replayed timeline) to ``completed``."""
        ends = {e["item_id"]: e["audio_end_ms"] / 1000 for e in self.of("input_audio_buffer.speech_stopped")}
        done = self.at("conversation.item.input_audio_transcription.completed")
        return [done[i] - ends[i] for i in ends if i in done]


async def replay(
    url: str,
    audio: np.ndarray,
    *,
    api_key: str | None = None,
    session: dict[str, Any] | None = None,
    pace: float = 1.0,
    chunk_ms: int = 100,
    lead_s: float = 0.5,
    tail_s: float = 1.5,
    commit: bool = False,
    timeout_s: float = 60.0,
) -> Replay:
    """Play ``audio`` (16 kHz float32) into the realtime endpoint at ``url`` (ws://.../v1/realtime?...).

    ``lead_s``/``tail_s`` of silence go before and after, as a microphone would hear; ``commit``
    sends ``input_audio_buffer.commit`` at the end (for sessions without turn detection). Returns
    once every committed turn has completed (or failed), or after ``timeout_s``.
    """
    import websockets

    silence = np.zeros(int(16000 * lead_s), dtype=np.float32)
    tail = np.zeros(int(16000 * tail_s), dtype=np.float32)
    pcm = pcm16_24k(np.concatenate([silence, audio.astype(np.float32), tail]))
    step = IN_RATE * chunk_ms // 1000 * 2
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    result = Replay()
    async with websockets.connect(url, additional_headers=headers, max_size=None) as ws:
        created = json.loads(await ws.recv())
        result.events.append((0.0, created))
        if session is not None:
            await ws.send(json.dumps({"type": "session.update", "session": session}))
        t0 = time.monotonic()

        async def send() -> None:
            for n, i in enumerate(range(0, len(pcm), step)):
                chunk = base64.b64encode(pcm[i : i + step]).decode()
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
                if pace > 0:
                    await asyncio.sleep(max(0.0, t0 + (n + 1) * chunk_ms / 1000 / pace - time.monotonic()))
            if commit:
                await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            result.sent_s = time.monotonic() - t0

        sender = asyncio.ensure_future(send())
        deadline = t0 + timeout_s
        try:
            while time.monotonic() < deadline:
                try:
                    raw = await asyncio.wait_for(ws.recv(), timeout=0.25)
                except (asyncio.TimeoutError, TimeoutError):
                    raw = None
                if raw is not None:
                    result.events.append((time.monotonic() - t0, json.loads(raw)))
                if sender.done() and _settled(result, time.monotonic() - t0):
                    break
        finally:
            sender.cancel()
    return result


def _settled(result: Replay, now: float) -> bool:
    committed = {e["item_id"] for e in result.of("input_audio_buffer.committed")}
    ended = set(result.at("conversation.item.input_audio_transcription.completed"))
    ended |= set(result.at("conversation.item.input_audio_transcription.failed"))
    if not committed:  # nothing heard (or refused): give the server a moment to say so
        return now > result.sent_s + 1.0
    return committed <= ended


def replay_file(url: str, path: str | Path, **kw: Any) -> Replay:
    """:func:`replay` for a media file (any format FFmpeg reads), from synchronous code."""
    from whisperops.audio import load_audio

    return asyncio.run(replay(url, load_audio(path), **kw))
