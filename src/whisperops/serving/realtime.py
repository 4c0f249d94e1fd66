"""``GET /v1/realtime?intent=transcription``: OpenAI's Realtime transcription events over a WebSocket.

The client streams pcm16 (24 kHz mono, little-endian, base64) with ``input_audio_buffer.append``.
With ``server_vad`` turn detection, Silero VAD runs on the audio as it arrives and cuts turns:
``speech_started``, ``speech_stopped``, ``committed``; without it the client cuts them with
``input_audio_buffer.commit``. While a turn is spoken it is decoded every ``PARTIAL_EVERY_S`` (greedy)
and the words that are settled go out as ``...input_audio_transcription.delta``: those two decodes agree
on, and those heard whole (``SETTLED_AFTER_S`` of audio follows them) where the decode before raised no
doubt about the words ahead of them, so a turn's first words need not wait for a second decode. The final
decode (full beam) gives ``.completed``, whose text is the final's own even where a partial heard a
word differently. That final decode starts as soon as the VAD hears silence, not after the silence
duration has passed, so the transcript is usually ready when the turn is declared over.

Decodes share the HTTP requests' slots and queue. A session obeys the server's API key and its
limits: sessions at once, seconds per session, bytes per message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import difflib
import json
import logging
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse

from whisperops.engine import DecodeOptions
from whisperops.errors import ModelNotFoundError, WhisperOpsError
from whisperops.serving import openai_format
from whisperops.serving.errors import error_body
from whisperops.serving.pool import QueueFull, RequestTimeout
from whisperops.serving.realtime_client import IN_RATE

log = logging.getLogger(__name__)

RATE = 16000  # Whisper's
VAD_FRAME = 512  # Silero's frame at 16 kHz (32 ms)
VAD_CONTEXT = 64
# Decode the turn so far this often while it is spoken. At most one delta comes per partial decode
# (its words settled), so for a delta every second the period is well under one.
PARTIAL_EVERY_S = 0.75
# A turn's first partial comes this soon after the VAD hears speech: its words heard whole can go
# out at once, and the first delta is the one a listener waits for longest.
FIRST_PARTIAL_S = 0.5
# A word that ended this long before the end of the audio decoded was heard whole; the last word or
# two of a partial decode are usually cut mid-sound and change in the next one.
SETTLED_AFTER_S = 0.25
PARTIAL_MAX_S = 30.0  # past one Whisper window, partial decodes cost more than they show
MIN_COMMIT_MS = 100  # OpenAI refuses to commit less audio than this
TAIL_PAD_MS = 200
SPECULATE_AFTER_MS = 200  # silence after which a turn's final decode starts before the turn is over
INCLUDE_LOGPROBS = "item.input_audio_transcription.logprobs"
CONTEXT_WORDS = 60  # of earlier turns, to prime each decode as offline decoding primes each window


class SessionError(WhisperOpsError):
    """A client event the session cannot honour: an ``error`` event; the session goes on."""

    def __init__(self, message: str, code: str = "invalid_value", param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.param = code, param


@dataclass
class TurnDetection:
    """OpenAI's ``server_vad`` settings, with OpenAI's defaults."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500

    def to_dict(self) -> dict[str, Any]:
        return {"type": "server_vad", **self.__dict__}


@dataclass
class SessionConfig:
    model: str = "whisper-1"
    language: str | None = None
    prompt: str | None = None
    turn: TurnDetection | None = field(default_factory=TurnDetection)
    logprobs: bool = False

    def to_dict(self, session_id: str, expires_at: int) -> dict[str, Any]:
        """The session as the client's ``RealtimeTranscriptionSessionCreateRequest`` reads it."""
        return {
            "type": "transcription",
            "id": session_id,
            "object": "realtime.transcription_session",
            "expires_at": expires_at,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": IN_RATE},
                    "transcription": {"model": self.model, "language": self.language, "prompt": self.prompt},
                    "turn_detection": self.turn.to_dict() if self.turn else None,
                    "noise_reduction": None,
                }
            },
            "include": [INCLUDE_LOGPROBS] if self.logprobs else [],
        }


def _number(value: Any, param: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise SessionError(f"{param}: {value!r} must be a number from {low:g} to {high:g}", param=param)
    return value


def apply_update(config: SessionConfig, session: Any, served: Any) -> None:
    """Apply a ``session.update`` (GA shape) or ``transcription_session.update`` (beta shape)."""
    if not isinstance(session, dict):
        raise SessionError("session: must be an object", param="session")
    audio_in = ((session.get("audio") or {}).get("input") or {}) if isinstance(session.get("audio"), dict) else {}
    fmt = audio_in.get("format", session.get("input_audio_format"))
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else fmt
        rate = fmt.get("rate", IN_RATE) if isinstance(fmt, dict) else IN_RATE
        if kind not in ("pcm16", "audio/pcm") or rate != IN_RATE:
            raise SessionError(
                f"input audio format {fmt!r}: only pcm16 (audio/pcm at 24000 Hz) is supported",
                param="session.audio.input.format",
            )
    transcription = audio_in.get("transcription", session.get("input_audio_transcription"))
    if isinstance(transcription, dict):
        if transcription.get("model"):
            try:
                served(transcription["model"])
            except ModelNotFoundError as err:
                raise SessionError(str(err), "model_not_found", "session.audio.input.transcription.model") from err
            config.model = transcription["model"]
        if "language" in transcription:
            config.language = openai_format.language_code(transcription.get("language"))
        if "prompt" in transcription:
            config.prompt = transcription.get("prompt") or None
    key = "turn_detection"
    if key in audio_in or key in session:
        turn = audio_in[key] if key in audio_in else session[key]
        if turn is None:
            config.turn = None
        elif isinstance(turn, dict) and turn.get("type", "server_vad") == "server_vad":
            base = TurnDetection()
            p = "session.audio.input.turn_detection"
            config.turn = TurnDetection(
                threshold=float(_number(turn.get("threshold", base.threshold), f"{p}.threshold", 0.0, 1.0)),
                prefix_padding_ms=int(
                    _number(turn.get("prefix_padding_ms", base.prefix_padding_ms), f"{p}.prefix_padding_ms", 0, 10_000)
                ),
                silence_duration_ms=int(
                    _number(
                        turn.get("silence_duration_ms", base.silence_duration_ms), f"{p}.silence_duration_ms", 1, 10_000
                    )
                ),
            )
        else:
            raise SessionError(
                f"turn_detection {turn!r}: use server_vad or null (semantic_vad is not available here)",
                param="session.audio.input.turn_detection",
            )
    noise = audio_in.get("noise_reduction", session.get("input_audio_noise_reduction"))
    if noise:
        raise SessionError(
            "noise_reduction is not available here; send null", param="session.audio.input.noise_reduction"
        )
    include = session.get("include")
    if include is not None:
        bad = [i for i in include if i != INCLUDE_LOGPROBS]
        if bad:
            raise SessionError(f"include {bad[0]!r}: only {INCLUDE_LOGPROBS} can be included", param="session.include")
        config.logprobs = bool(include)


class StreamingVad:
    """Silero VAD over audio that arrives in pieces: its recurrent state carries across calls."""

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        self.session = get_vad_model().session
        self.state_h = np.zeros((1, 1, 128), dtype=np.float32)
        self.state_c = np.zeros((1, 1, 128), dtype=np.float32)
        self.context = np.zeros(VAD_CONTEXT, dtype=np.float32)
        self.pending = np.zeros(0, dtype=np.float32)

    def feed(self, samples: np.ndarray) -> np.ndarray:
        """Speech probabilities of each whole new 32 ms frame in ``samples`` (16 kHz float32)."""
        audio = np.concatenate([self.pending, samples])
        whole = audio.size // VAD_FRAME * VAD_FRAME
        self.pending = audio[whole:]
        if whole == 0:
            return np.zeros(0, dtype=np.float32)
        frames = audio[:whole].reshape(-1, VAD_FRAME)
        contexts = np.concatenate([self.context[None, :], frames[:-1, -VAD_CONTEXT:]], axis=0)
        self.context = frames[-1, -VAD_CONTEXT:].copy()
        batch = np.concatenate([contexts, frames], axis=1).astype(np.float32)
        out, self.state_h, self.state_c = self.session.run(None, {"input": batch, "h": self.state_h, "c": self.state_c})
        return np.asarray(out, dtype=np.float32).reshape(-1)


def resample(pcm16: np.ndarray) -> np.ndarray:
    """24 kHz int16 -> 16 kHz float32 (polyphase, 2/3)."""
    from scipy.signal import resample_poly

    return resample_poly(pcm16.astype(np.float32) / 32768.0, 2, 3).astype(np.float32)


_WORD = re.compile(r"[^\w']+")


def _norm(word: str) -> str:
    return _WORD.sub("", word.lower())


def agreed_prefix(previous: list[str], current: list[str]) -> int:
    """How many leading words two hypotheses share (case and punctuation aside)."""
    n = 0
    for a, b in zip(previous, current, strict=False):
        if _norm(a) != _norm(b):
            break
        n += 1
    return n


def heard_whole(ends: list[float], audio_s: float) -> int:
    """How many leading words of a partial decode end ``SETTLED_AFTER_S`` or more before its audio does."""
    n = 0
    for end in ends:
        if end > audio_s - SETTLED_AFTER_S:
            break
        n += 1
    return n


def settled_prefix(previous: list[str], previous_whole: int, current: list[str], current_whole: int) -> int:
    """How many leading words of the ``current`` partial decode can go out as deltas.

    Those the decode before agrees on, as LocalAgreement does; and, where that agreement covers every
    word the decode before heard whole (none, for a turn's first decode), those heard whole now. A
    decode that contradicts a word the one before heard whole gets only the agreed words: one of the
    two misheard it, and the next decode tells which.
    """
    agreed = agreed_prefix(previous, current)
    if agreed >= previous_whole:
        return max(agreed, current_whole)
    return agreed


def covered(sent: list[str], final: list[str]) -> int:
    """How many of ``final``'s words the ``sent`` words already stand for, aligned word by word.

    The deltas of a turn come from partial decodes, which may have heard a word or two differently
    (or split one in two): the turn's last delta goes on from here, so it neither repeats nor skips.
    """
    n = len(sent)
    if n == 0:
        return 0
    matcher = difflib.SequenceMatcher(None, [_norm(w) for w in sent], [_norm(w) for w in final], autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if i2 < n:
            continue
        if tag == "equal":
            return j1 + (n - i1)
        if tag == "replace":
            return j2 if i2 == n else j1 + round((n - i1) * (j2 - j1) / (i2 - i1))
        return j1  # sent words the final lacks, or final words past the sent ones
    return len(final)


@dataclass
class Turn:
    """One committed (or being spoken) piece of audio: a conversation item."""

    item_id: str
    start_ms: int
    end_ms: int | None = None
    emitted: list[str] = field(default_factory=list)  # words sent as deltas
    hypothesis: list[str] = field(default_factory=list)  # the last partial decode's words
    heard_whole: int = 0  # how many of them were heard whole
    partial_at_ms: int = 0
    partial: asyncio.Task | None = None
    final: asyncio.Task | None = None
    final_end_ms: int | None = None  # the audio end the final decode was started on


class Session:
    """One WebSocket: its config, its audio buffer (24 kHz pcm16 since ``base_ms``) and its turns."""

    def __init__(self, ws: WebSocket, state: Any, beta: bool) -> None:
        self.ws, self.state, self.beta = ws, state, beta
        self.settings = state.settings
        self.id = "sess_" + uuid.uuid4().hex[:20]
        self.config = SessionConfig()
        self.started = time.monotonic()
        self.expires_at = int(time.time() + self.settings.realtime_session_s)
        self.send_lock = asyncio.Lock()
        self.buffer = np.zeros(0, dtype=np.int16)
        self.base_ms = 0  # session time of buffer[0]
        self.total_ms = 0  # audio received so far
        self.vad: StreamingVad | None = None
        self.vad_ms = 0  # session time of the next VAD frame
        self.speaking = False
        self.silence_from_ms: int | None = None
        self.turn: Turn | None = None  # being spoken
        self.previous_item: str | None = None
        self.context: list[str] = []  # words of the turns completed so far
        self.tasks: set[asyncio.Task] = set()

    # -- sending -------------------------------------------------------------------------------

    async def send(self, event: dict[str, Any]) -> None:
        event = {"event_id": "event_" + uuid.uuid4().hex[:20], **event}
        async with self.send_lock:
            await self.ws.send_text(json.dumps(event, ensure_ascii=False))

    async def error(self, err: SessionError, client_event: str | None = None) -> None:
        await self.send(
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "code": err.code,
                    "message": str(err),
                    "param": err.param,
                    "event_id": client_event,
                },
            }
        )

    def _name(self, ga: str, beta: str) -> str:
        return beta if self.beta else ga

    async def send_session(self, ga: str, beta: str) -> None:
        await self.send({"type": self._name(ga, beta), "session": self.config.to_dict(self.id, self.expires_at)})

    # -- client events -------------------------------------------------------------------------

    async def handle(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind in ("session.update", "transcription_session.update"):
            self.beta = kind == "transcription_session.update"
            apply_update(self.config, event.get("session"), self.state.pool.canonical)
            if self.config.turn is None and self.turn is not None:
                self.turn = None  # what the VAD heard so far waits for an explicit commit
            await self.send_session("session.updated", "transcription_session.updated")
        elif kind == "input_audio_buffer.append":
            await self.append(event.get("audio"))
        elif kind == "input_audio_buffer.commit":
            await self.commit_manual()
        elif kind == "input_audio_buffer.clear":
            self._drop_until(self.total_ms)
            self.turn, self.speaking, self.silence_from_ms = None, False, None
            await self.send({"type": "input_audio_buffer.cleared"})
        else:
            raise SessionError(
                f"event type {kind!r} is not supported by a transcription session; send session.update or "
                "input_audio_buffer.append/commit/clear",
                "unknown_event",
                "type",
            )

    async def append(self, audio: Any) -> None:
        if not isinstance(audio, str):
            raise SessionError("input_audio_buffer.append needs audio: base64 pcm16", param="audio")
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise SessionError("audio: not valid base64", param="audio") from None
        if len(raw) % 2:
            raise SessionError("audio: pcm16 needs an even number of bytes", param="audio")
        pcm = np.frombuffer(raw, dtype="<i2").astype(np.int16)
        self.buffer = np.concatenate([self.buffer, pcm])
        self.total_ms = self.base_ms + len(self.buffer) * 1000 // IN_RATE
        if self.config.turn is not None:
            await self._detect(pcm)

    async def _detect(self, pcm: np.ndarray) -> None:
        turn_cfg = self.config.turn
        assert turn_cfg is not None
        if self.vad is None:
            self.vad = StreamingVad()
            self.vad_ms = self.total_ms - len(pcm) * 1000 // IN_RATE
        probs = self.vad.feed(resample(pcm))
        frame_ms = VAD_FRAME * 1000 / RATE
        for p in probs:
            at = int(self.vad_ms)
            self.vad_ms += frame_ms
            if p >= turn_cfg.threshold:
                self.silence_from_ms = None
                if not self.speaking:
                    self.speaking = True
                    if self.turn is None:
                        await self._start_turn(max(self.base_ms, at - turn_cfg.prefix_padding_ms), at)
                elif self.turn is not None and self.turn.final is not None:
                    self._cancel_final(self.turn)  # speech went on: that decode is stale
            elif self.speaking and p < max(turn_cfg.threshold - 0.15, 0.01):
                if self.silence_from_ms is None:
                    self.silence_from_ms = at
                quiet = at - self.silence_from_ms
                if (
                    self.turn is not None
                    and self.turn.final is None
                    and quiet >= min(SPECULATE_AFTER_MS, turn_cfg.silence_duration_ms)
                ):
                    # Most silences this long are the turn's end: decode now, not once it is certain.
                    self._start_final(self.silence_from_ms)
                if quiet >= turn_cfg.silence_duration_ms:
                    self.speaking = False
                    await self._stop_turn(self.silence_from_ms)
        if self.turn is None and not self.speaking:
            # Keep only what a future turn's prefix padding may need.
            self._drop_until(self.total_ms - turn_cfg.prefix_padding_ms)
        if self.turn is not None and self.speaking and self.silence_from_ms is None:
            # Not in a pause: a partial then could hold the slot the turn's final decode is about to need.
            self._maybe_partial()

    async def _start_turn(self, start_ms: int, heard_ms: int) -> None:
        first_ms = heard_ms - round((PARTIAL_EVERY_S - FIRST_PARTIAL_S) * 1000)
        self.turn = Turn("item_" + uuid.uuid4().hex[:20], start_ms, partial_at_ms=first_ms)
        await self.send(
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": start_ms, "item_id": self.turn.item_id}
        )

    async def _stop_turn(self, end_ms: int) -> None:
        turn = self.turn
        assert turn is not None
        turn.end_ms = end_ms
        await self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end_ms, "item_id": turn.item_id})
        if turn.final is None or turn.final_end_ms != end_ms:
            self._start_final(end_ms)
        await self._committed(turn)

    async def commit_manual(self) -> None:
        if self.total_ms - self.base_ms < MIN_COMMIT_MS:
            raise SessionError(
                f"input audio buffer holds {self.total_ms - self.base_ms} ms; commit at least {MIN_COMMIT_MS} ms",
                "input_audio_buffer_commit_empty",
            )
        turn = self.turn or Turn("item_" + uuid.uuid4().hex[:20], self.base_ms)
        self.turn = turn
        turn.end_ms = self.total_ms
        self.speaking, self.silence_from_ms = False, None
        self._start_final(self.total_ms)
        await self._committed(turn)

    async def _committed(self, turn: Turn) -> None:
        await self.send(
            {"type": "input_audio_buffer.committed", "item_id": turn.item_id, "previous_item_id": self.previous_item}
        )
        self.previous_item, self.turn = turn.item_id, None
        self._spawn(self._complete(turn))
        self._drop_until(turn.end_ms or self.total_ms)

    # -- audio and decoding --------------------------------------------------------------------

    def _drop_until(self, ms: int) -> None:
        if ms <= self.base_ms:
            return
        cut = min(len(self.buffer), (ms - self.base_ms) * IN_RATE // 1000)
        self.buffer = self.buffer[cut:]
        self.base_ms += cut * 1000 // IN_RATE

    def _audio(self, start_ms: int, end_ms: int) -> np.ndarray:
        a = max(0, (start_ms - self.base_ms) * IN_RATE // 1000)
        b = max(a, (end_ms - self.base_ms) * IN_RATE // 1000)
        return resample(self.buffer[a:b])

    def _options(self, final: bool, timed: bool = False) -> DecodeOptions:
        return DecodeOptions(
            language=self.config.language,
            # Partial hypotheses only need to be quick; the final one decodes as the server does.
            beam_size=self.settings.beam_size if final else 1,
            batch_size=0,  # a turn is one window: the sequential decoder, with its fallback and timestamps
            vad_filter=False,  # turns are speech already; the VAD cut them
            # A partial times its words (to tell those heard whole) only until the turn's first delta:
            # after that, agreement alone keeps a delta coming each decode, and untimed ones cost less.
            word_timestamps=self.config.logprobs if final else timed,
            initial_prompt=" ".join([*([self.config.prompt] if self.config.prompt else []), *self.context]) or None,
            temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0) if final else (0.0,),
        )

    async def _decode(self, samples: np.ndarray, final: bool, timed: bool = False) -> Any:
        name = self.state.pool.canonical(self.config.model)
        options = self._options(final, timed)

        def run(_cancel: Any) -> Any:
            with self.state.pool.use(name) as engine:
                return engine.transcribe(samples, options, source=self.id)

        timeout_s = self.settings.request_timeout_s
        async with self.state.limiter.admit(timeout_s) as ticket:  # the HTTP requests' queue and deadline
            return await self.state.limiter.run(run, ticket, timeout_s)

    def warm_up(self) -> None:
        """Load the model now, so the first turn does not wait for it."""
        name = self.state.pool.canonical(self.config.model)

        def load() -> None:
            with self.state.pool.use(name):
                pass

        self._spawn(asyncio.to_thread(load))

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    def _cancel_final(self, turn: Turn) -> None:
        # Still queued: it never takes a slot. Already decoding: the slot frees when it ends.
        if turn.final is not None:
            turn.final.cancel()
        turn.final, turn.final_end_ms = None, None

    def _start_final(self, end_ms: int) -> None:
        turn = self.turn
        if turn is None:
            return
        self._cancel_final(turn)
        # A little of the silence too: the VAD calls speech over a frame or two before the last sound fades.
        samples = self._audio(turn.start_ms, min(self.total_ms, end_ms + TAIL_PAD_MS))
        turn.final, turn.final_end_ms = self._spawn(self._decode(samples, final=True)), end_ms

    def _maybe_partial(self) -> None:
        turn = self.turn
        assert turn is not None
        busy = (turn.partial is not None and not turn.partial.done()) or turn.final is not None
        spoken_s = (self.total_ms - turn.start_ms) / 1000
        if busy or spoken_s > PARTIAL_MAX_S or self.total_ms - turn.partial_at_ms < PARTIAL_EVERY_S * 1000:
            return
        if self.state.limiter.running >= self.state.limiter.slots:
            return  # never queue a partial behind real work
        turn.partial_at_ms = self.total_ms
        turn.partial = self._spawn(self._partial(turn, self._audio(turn.start_ms, self.total_ms)))

    async def _partial(self, turn: Turn, samples: np.ndarray) -> None:
        try:
            transcript = await self._decode(samples, final=False, timed=not turn.emitted)
        except (QueueFull, RequestTimeout):
            return
        timed = [w for w in transcript.words if w.word.strip()]
        words = [w.word.strip() for w in timed] if timed else transcript.text.split()
        whole = heard_whole([w.end for w in timed], len(samples) / RATE)
        settled = settled_prefix(turn.hypothesis, turn.heard_whole, words, whole)
        turn.hypothesis, turn.heard_whole = words, whole
        if turn.end_ms is not None or settled <= len(turn.emitted):
            return
        if agreed_prefix(turn.emitted, words) < len(turn.emitted):
            return  # this hypothesis rewrote words already sent; wait for the final
        await self._delta(turn, words[len(turn.emitted) : settled])

    async def _delta(self, turn: Turn, words: list[str], logprobs: list[dict[str, Any]] | None = None) -> None:
        text = " ".join(words)
        if turn.emitted:
            text = " " + text
        turn.emitted.extend(words)
        event = {
            "type": "conversation.item.input_audio_transcription.delta",
            "item_id": turn.item_id,
            "content_index": 0,
            "delta": text,
        }
        if logprobs is not None:
            event["logprobs"] = logprobs
        await self.send(event)

    async def _complete(self, turn: Turn) -> None:
        if turn.partial is not None:
            with contextlib.suppress(Exception):
                await turn.partial  # its delta goes out before the completion
        try:
            assert turn.final is not None
            transcript = await turn.final
        except Exception as err:
            message = str(err) if isinstance(err, WhisperOpsError) else f"{type(err).__name__}: {err}"
            log.warning("realtime transcription failed: %s", message)
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.failed",
                    "item_id": turn.item_id,
                    "content_index": 0,
                    "error": {"type": "server_error", "code": "transcription_failed", "message": message},
                }
            )
            return
        # The final decode (whole turn, full beam) is the transcript, even where a partial decode
        # heard a word differently: a delta cannot be taken back, but the completed text is what
        # clients keep. The last delta goes on from the final's word the sent ones reached.
        words = transcript.text.split()
        self.context = (self.context + words)[-CONTEXT_WORDS:]
        done = covered(turn.emitted, words)
        if done < len(words):
            logprobs = openai_format.logprobs(transcript.words[done:]) if self.config.logprobs else None
            await self._delta(turn, words[done:], logprobs)
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": turn.item_id,
                "content_index": 0,
                "transcript": transcript.text,
                "usage": {"type": "duration", "seconds": round(transcript.duration, 3)},
            }
        )


def _log_failure(task: asyncio.Task) -> None:
    if task.cancelled() or task.exception() is None:
        return
    err = task.exception()
    if isinstance(err, (WebSocketDisconnect, RuntimeError)) or type(err).__name__.startswith("ConnectionClosed"):
        return  # a client gone mid-send: the end of its session, not news
    log.warning("realtime session task failed: %r", err, exc_info=err)


def _offered_key(ws: WebSocket) -> str:
    auth = ws.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    # Browsers cannot set headers on a WebSocket; OpenAI takes the key as a subprotocol instead.
    for proto in ws.scope.get("subprotocols", []):
        if proto.startswith("openai-insecure-api-key."):
            return proto[len("openai-insecure-api-key.") :]
    return ""


router = APIRouter()


@router.websocket("/v1/realtime")
async def realtime(ws: WebSocket, intent: str | None = None, model: str | None = None) -> None:
    """OpenAI's Realtime API for transcription sessions (``?intent=transcription``)."""
    state = ws.app.state.whisperops
    active: set[Session] = state.realtime_sessions
    settings = state.settings
    if settings.api_key is not None and not secrets.compare_digest(
        _offered_key(ws).encode(), settings.api_key.encode()
    ):
        message = "missing or wrong API key; send the server's key as 'Authorization: Bearer KEY'"
        body = error_body(message, "invalid_request_error", "invalid_api_key", None)
        await ws.send_denial_response(JSONResponse(body, status_code=401))
        return
    if intent not in (None, "transcription"):
        message = f"intent={intent}: only transcription sessions are served here (?intent=transcription)"
        body = error_body(message, "invalid_request_error", "invalid_value", "intent")
        await ws.send_denial_response(JSONResponse(body, status_code=400))
        return
    protocols = [p for p in ws.scope.get("subprotocols", []) if p == "realtime"]
    await ws.accept(subprotocol=protocols[0] if protocols else None)
    session = Session(ws, state, beta=ws.headers.get("openai-beta", "").startswith("realtime=v1"))
    if len(active) >= settings.realtime_sessions:
        await session.error(
            SessionError(
                f"{len(active)} realtime sessions already open (limit {settings.realtime_sessions}); retry later",
                "session_limit_reached",
            )
        )
        await ws.close(code=1013)
        return
    if model:  # OpenAI's clients name a realtime model here; use it only when it is one we serve
        with contextlib.suppress(ModelNotFoundError):
            state.pool.canonical(model)
            session.config.model = model
    active.add(session)
    try:
        session.warm_up()
        await session.send_session("session.created", "transcription_session.created")
        await _serve(session)
    finally:
        active.discard(session)
        for task in list(session.tasks):
            task.cancel()


async def _serve(session: Session) -> None:
    settings = session.settings
    ws = session.ws
    while True:
        left = settings.realtime_session_s - (time.monotonic() - session.started)
        try:
            message = await asyncio.wait_for(ws.receive(), timeout=max(left, 0.001))
        except (asyncio.TimeoutError, TimeoutError):
            await session.error(
                SessionError(
                    f"session reached its {settings.realtime_session_s:g} s limit; open a new one", "session_expired"
                )
            )
            await ws.close(code=1000)
            return
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None and message.get("bytes") is not None:
            text = message["bytes"].decode("utf-8", "replace")
        if text is None:
            continue
        if len(text) > settings.realtime_message_bytes:
            await session.error(
                SessionError(
                    f"message of {len(text)} bytes is over the limit of {settings.realtime_message_bytes}; "
                    "append audio in smaller pieces",
                    "message_too_large",
                )
            )
            await ws.close(code=1009)
            return
        try:
            event = json.loads(text)
            if not isinstance(event, dict):
                raise ValueError("not an object")
        except ValueError:
            await session.error(SessionError("message is not a JSON event object", "invalid_json"))
            continue
        try:
            await session.handle(event)
        except SessionError as err:
            await session.error(err, event.get("event_id"))
        except WebSocketDisconnect:
            return
