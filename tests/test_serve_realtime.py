"""``GET /v1/realtime?intent=transcription`` with a real WebSocket client (``websockets``) on 127.0.0.1.

Shared clips are played into the server at real-time pace, as a microphone would, and every event the
server sends is validated against the official client's Realtime types. The limits get a server of
their own, tuned to hit each one quickly.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ConversationItemInputAudioTranscriptionDeltaEvent,
    InputAudioBufferClearedEvent,
    InputAudioBufferCommittedEvent,
    InputAudioBufferSpeechStartedEvent,
    InputAudioBufferSpeechStoppedEvent,
    RealtimeErrorEvent,
    SessionCreatedEvent,
    SessionUpdatedEvent,
)

from test_serve import KEY, settings, uvicorn_server
from whisperops.audio import load_audio
from whisperops.evaluation.metrics import wer
from whisperops.serving.realtime_client import pcm16_24k, replay

pytestmark = pytest.mark.shared_data

TYPES = {
    "session.created": SessionCreatedEvent,
    "session.updated": SessionUpdatedEvent,
    "input_audio_buffer.speech_started": InputAudioBufferSpeechStartedEvent,
    "input_audio_buffer.speech_stopped": InputAudioBufferSpeechStoppedEvent,
    "input_audio_buffer.committed": InputAudioBufferCommittedEvent,
    "input_audio_buffer.cleared": InputAudioBufferClearedEvent,
    "conversation.item.input_audio_transcription.delta": ConversationItemInputAudioTranscriptionDeltaEvent,
    "conversation.item.input_audio_transcription.completed": ConversationItemInputAudioTranscriptionCompletedEvent,
    "error": RealtimeErrorEvent,
}
VAD = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 500}


def _session(turn_detection: dict | None = VAD) -> dict:
    audio_in = {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": turn_detection}
    return {"type": "transcription", "audio": {"input": audio_in}}


def _words(text: str) -> list[str]:
    return re.sub(r"[^\w' ]", "", text.lower()).split()


def _validate(events: list[dict]) -> None:
    for event in events:
        TYPES[event["type"]].model_validate(event)


@pytest.fixture(scope="module")
def ws_url(shared_speech: Path) -> Iterator[str]:
    with uvicorn_server(settings(api_key=KEY)) as base:
        url = base.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
        # One decode first, as a server that is up has done: a cold model's load and first decode would
        # delay the timed tests' first partial decodes by more than they measure.
        short = load_audio(shared_speech / "ljspeech" / "LJ001-0002.wav")
        asyncio.run(replay(url, short, api_key=KEY, session=_session(None), pace=0, commit=True))
        yield url


@pytest.mark.slow
def test_server_vad_turns_at_real_time_pace(ws_url: str, shared_manifest: list[dict]) -> None:
    clip = next(r for r in shared_manifest if r["audio"] == "ljspeech/LJ001-0001.wav")  # 9.7 s, one breath
    result = asyncio.run(replay(ws_url, load_audio(clip["path"]), api_key=KEY, session=_session()))
    events = [e for _, e in result.events]
    _validate(events)
    assert events[0]["type"] == "session.created" and events[1]["type"] == "session.updated"
    assert events[1]["session"]["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 500
    started, stopped = result.of("input_audio_buffer.speech_started"), result.of("input_audio_buffer.speech_stopped")
    assert started and len(started) == len(stopped) == len(result.of("input_audio_buffer.committed"))
    assert 200 <= started[0]["audio_start_ms"] <= 700  # 0.5 s of silence lead in, less the prefix padding
    text = " ".join(result.transcripts())
    assert wer(clip["text"], text) < 0.15, text
    for item in {e["item_id"] for e in started}:
        kinds = [e["type"].rsplit(".", 1)[-1] for e in events if e.get("item_id") == item]
        assert kinds[0] == "speech_started" and kinds[-1] == "completed", kinds
        assert kinds.index("speech_stopped") + 1 == kinds.index("committed"), kinds
        deltas = [e["delta"] for e in events if e.get("item_id") == item and e["type"].endswith(".delta")]
        done = next(e for e in events if e.get("item_id") == item and e["type"].endswith(".completed"))
        # Deltas carry the words partial decodes settled on, then the rest of the final decode, which is
        # the completed text: a partial may have heard a word differently, never many.
        assert deltas and _words("".join(deltas))[-2:] == _words(done["transcript"])[-2:], (deltas, done)
        assert wer(done["transcript"], "".join(deltas)) < 0.15, (deltas, done["transcript"])
    # Partial decodes: words show while the turn is still spoken, before its speech_stopped.
    first_delta = min(t for t, e in result.events if e["type"].endswith(".delta"))
    first_stop = min(t for t, e in result.events if e["type"].endswith("speech_stopped"))
    assert first_delta < first_stop, (first_delta, first_stop)
    # The turn's first words go out from its first partial decode, without waiting for a second to agree.
    first_start = min(t for t, e in result.events if e["type"].endswith("speech_started"))
    assert first_delta - first_start < 1.4, (first_start, first_delta)


def test_manual_commit_and_beta_event_names(ws_url: str, shared_speech: Path) -> None:
    audio = load_audio(shared_speech / "ljspeech" / "LJ001-0004.wav")

    async def run() -> list[dict]:
        async with websockets.connect(ws_url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
            events = [json.loads(await ws.recv())]
            update = {"input_audio_format": "pcm16", "turn_detection": None}
            await ws.send(json.dumps({"type": "transcription_session.update", "session": update}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit", "event_id": "c0"}))  # nothing yet
            pcm = pcm16_24k(audio)
            for i in range(0, len(pcm), 96000):  # 2 s appends, as fast as the socket takes them
                chunk = base64.b64encode(pcm[i : i + 96000]).decode()
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            await ws.send(json.dumps({"type": "input_audio_buffer.clear"}))
            while not events[-1]["type"].endswith(".completed"):
                events.append(json.loads(await asyncio.wait_for(ws.recv(), 60)))
            return events

    events = asyncio.run(run())
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["session.created", "transcription_session.updated", "error"], kinds
    assert events[2]["error"]["code"] == "input_audio_buffer_commit_empty" and events[2]["error"]["event_id"] == "c0"
    assert "input_audio_buffer.speech_started" not in kinds  # no turn detection: the client cuts turns
    assert "input_audio_buffer.committed" in kinds and "input_audio_buffer.cleared" in kinds
    _validate([e for e in events if e["type"] != "transcription_session.updated"])
    assert "immediate predecessors of the true printed book" in events[-1]["transcript"]
    assert events[-1]["usage"] == {"type": "duration", "seconds": pytest.approx(5.14, abs=0.05)}


@pytest.fixture(scope="module")
def tight_url() -> Iterator[str]:
    tight = settings(api_key=KEY, realtime_sessions=1, realtime_message_bytes=20_000, realtime_session_s=3.0)
    with uvicorn_server(tight) as base:
        yield base.replace("http://", "ws://") + "/v1/realtime?intent=transcription"


def test_api_key_and_intent_are_checked_at_the_handshake(tight_url: str) -> None:
    async def run() -> None:
        with pytest.raises(websockets.InvalidStatus) as err:
            async with websockets.connect(tight_url):
                pass
        assert err.value.response.status_code == 401 and b"API key" in err.value.response.body
        with pytest.raises(websockets.InvalidStatus) as err:
            async with websockets.connect(tight_url.replace("transcription", "conversation")):
                pass
        assert err.value.response.status_code in (400, 401)
        # Browsers cannot send headers: the key may come as a subprotocol, as OpenAI accepts it.
        protocols = ["realtime", f"openai-insecure-api-key.{KEY}"]
        async with websockets.connect(tight_url, subprotocols=protocols) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
            assert ws.subprotocol == "realtime"

    asyncio.run(run())


def test_session_limits(tight_url: str) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}

    async def run() -> None:
        async with websockets.connect(tight_url, additional_headers=auth) as first:
            assert json.loads(await first.recv())["type"] == "session.created"
            async with websockets.connect(tight_url, additional_headers=auth) as second:  # over the count
                refused = json.loads(await second.recv())
                assert refused["error"]["code"] == "session_limit_reached", refused
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await second.recv()
                assert closed.value.rcvd.code == 1013
            # Bad events get an error naming what is wrong; the session goes on.
            await first.send(json.dumps({"type": "response.create"}))
            assert json.loads(await first.recv())["error"]["code"] == "unknown_event"
            await first.send(json.dumps({"type": "session.update", "session": {"input_audio_format": "g711_ulaw"}}))
            bad = json.loads(await first.recv())
            RealtimeErrorEvent.model_validate(bad)
            assert bad["error"]["param"] == "session.audio.input.format" and "pcm16" in bad["error"]["message"]
            await first.send("not json")
            assert json.loads(await first.recv())["error"]["code"] == "invalid_json"
            # The session ends at its time limit.
            expired = json.loads(await asyncio.wait_for(first.recv(), 10))
            assert expired["error"]["code"] == "session_expired", expired
            with pytest.raises(websockets.ConnectionClosed):
                await first.recv()
        async with websockets.connect(tight_url, additional_headers=auth) as ws:  # the slot is free again
            assert json.loads(await ws.recv())["type"] == "session.created"
            big = base64.b64encode(b"\0" * 30_000).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": big}))
            too_big = json.loads(await ws.recv())
            assert too_big["error"]["code"] == "message_too_large" and "20000" in too_big["error"]["message"]
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 1009

    asyncio.run(run())


def test_a_decode_cancelled_in_the_queue_frees_its_slot() -> None:
    """Realtime cancels stale speculative decodes; one cancelled while queued must not keep a slot."""
    from whisperops.serving.pool import Limiter

    async def run() -> None:
        limiter = Limiter(slots=1, max_queue=4)
        release = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def decode(fn):
            async with limiter.admit(30) as ticket:
                return await limiter.run(fn, ticket, 30)

        def hold(_cancel) -> str:
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result(10)
            return "first"

        first = asyncio.ensure_future(decode(hold))
        while limiter.running < 1:
            await asyncio.sleep(0.01)
        queued = asyncio.ensure_future(decode(lambda _c: "stale"))
        await asyncio.sleep(0.05)
        queued.cancel()
        release.set()
        assert await first == "first"
        assert await asyncio.wait_for(decode(lambda _c: "next"), 5) == "next"  # the slot came back

    asyncio.run(run())


def test_official_client_realtime_connect(ws_url: str, shared_speech: Path) -> None:
    """``AsyncOpenAI().realtime.connect`` (the client's own WebSocket code) against the endpoint."""
    from openai import AsyncOpenAI

    pcm = pcm16_24k(load_audio(shared_speech / "ljspeech" / "LJ001-0004.wav"))
    ws_base = ws_url.split("/realtime")[0]

    async def run() -> list:
        client = AsyncOpenAI(base_url="http://unused/v1", api_key=KEY, websocket_base_url=ws_base)
        events = []
        async with client.realtime.connect(model="whisper-1", extra_query={"intent": "transcription"}) as conn:
            await conn.session.update(session={"type": "transcription", "audio": {"input": {"turn_detection": None}}})
            await conn.input_audio_buffer.append(audio=base64.b64encode(pcm).decode())
            await conn.input_audio_buffer.commit()
            async for event in conn:
                events.append(event)
                if event.type.endswith(".completed"):
                    return events
        return events

    events = asyncio.run(asyncio.wait_for(run(), 60))
    assert [e.type for e in events][:3] == ["session.created", "session.updated", "input_audio_buffer.committed"]
    assert "immediate predecessors of the true printed book" in events[-1].transcript


@pytest.mark.parametrize(
    ("sent", "final", "rest"),
    [
        ("may just be", "may justly be considered", "considered"),  # a word heard differently
        ("the wood cutters of", "the woodcutters of the Netherlands", "the Netherlands"),  # one word split in two
        ("fine in form", "fine and formed.", ""),
        ("It is of the", "It is of the first importance", "first importance"),
        ("", "Hello there.", "Hello there."),
    ],
)
def test_last_delta_goes_on_where_the_sent_words_reach_in_the_final(sent: str, final: str, rest: str) -> None:
    """The completed text is the final decode; the last delta neither repeats nor skips its words."""
    from whisperops.serving.realtime import covered

    words = final.split()
    assert " ".join(words[covered(sent.split(), words) :]) == rest


@pytest.mark.parametrize(
    ("previous", "previous_whole", "current", "current_whole", "settled"),
    [
        ("", 0, "Printing there.", 1, 1),  # a turn's first decode: the words heard whole
        ("Printing there.", 1, "printing in the only", 3, 3),  # the last word before was only half heard
        ("It is of the first.", 3, "It is over the first importance", 4, 2),  # contradicts a whole word
        ("It is of the first.", 3, "It is of the first importance", 2, 5),  # agreed beyond the whole words
        ("For all those?", 1, "For although the", 1, 1),
    ],
)
def test_partial_words_settle_when_agreed_or_heard_whole(
    previous: str, previous_whole: int, current: str, current_whole: int, settled: int
) -> None:
    from whisperops.serving.realtime import settled_prefix

    assert settled_prefix(previous.split(), previous_whole, current.split(), current_whole) == settled


def test_heard_whole_counts_words_that_end_before_the_last_quarter_second() -> None:
    from whisperops.serving.realtime import heard_whole

    assert heard_whole([0.3, 0.6, 0.76, 0.98], 1.0) == 2
    assert heard_whole([0.9], 1.0) == 0 and heard_whole([], 1.0) == 0
