"""Every parameter and format of POST /v1/audio/transcriptions through the official ``openai`` client.

Each response body is checked against the client's own types (``openai.types.audio.*``) with
pydantic's strict ``model_validate``: the client itself builds responses leniently, so a wrong field
would otherwise pass unnoticed. Parameters the server cannot honour must be a 400 naming them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai.types.audio import Transcription, TranscriptionVerbose

from test_serve import KEY, client, settings, uvicorn_server
from whisperops.engine import DecodeOptions

pytestmark = pytest.mark.shared_data


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    with uvicorn_server(settings(api_key=KEY)) as url:
        yield url


@pytest.fixture(scope="module")
def clip(shared_speech: Path) -> Path:
    return shared_speech / "ljspeech" / "LJ001-0004.wav"  # 5 s, one segment


def _raw(base: str, path: Path, **kw):
    with path.open("rb") as f:
        return client(base).audio.transcriptions.with_raw_response.create(model="tiny.en", file=f, **kw).http_response


def _json(base: str, path: Path, **kw) -> dict:
    r = _raw(base, path, **kw)
    assert r.status_code == 200, r.text
    return r.json()


def _refused(base: str, path: Path, param: str, **kw) -> str:
    with pytest.raises(openai.BadRequestError) as err, path.open("rb") as f:
        client(base).audio.transcriptions.create(model="tiny.en", file=f, **kw)
    body = err.value.body
    assert set(body) == {"message", "type", "param", "code"}, body
    assert body["param"] == param and param in body["message"], body
    return body["message"]


def test_json_and_text(base: str, clip: Path, jfk: Path) -> None:
    body = Transcription.model_validate(_json(base, clip))
    assert body.usage.type == "duration" and body.usage.seconds == 6  # 5.14 s, rounded up as OpenAI bills
    assert "immediate predecessors of the true printed book" in body.text
    two_segments = Transcription.model_validate(_json(base, jfk))
    text = _raw(base, jfk, response_format="text")
    assert text.headers["content-type"].startswith("text/plain")
    assert text.text == two_segments.text + "\n"  # json's text, not one segment per line


def test_verbose_json_segments_as_openai_whisper(base: str, jfk: Path, engine) -> None:
    raw = _json(base, jfk, response_format="verbose_json", timestamp_granularities=["segment", "word"])
    body = TranscriptionVerbose.model_validate(raw)
    assert body.usage.seconds == 11 and body.words and len(body.segments) >= 2
    tokenizer = engine.model.hf_tokenizer
    for seg in body.segments:
        # The decoder's own tokens: they begin and end with timestamp tokens (above the text vocabulary).
        assert seg.tokens[0] >= 50257 and seg.tokens[-1] >= 50257, seg.tokens
        text_tokens = [t for t in seg.tokens if t < 50257]
        assert tokenizer.decode(text_tokens).strip() == seg.text.strip()
    # seek is the decoding window's offset (10 ms frames): every segment of an 11 s clip is in window 0.
    assert {s.seek for s in body.segments} == {0} and body.segments[1].start > 0


def test_logprobs_in_json(base: str, clip: Path) -> None:
    body = Transcription.model_validate(_json(base, clip, include=["logprobs"]))
    assert body.logprobs and len(body.logprobs) == len(body.text.split())
    assert "".join(lp.token for lp in body.logprobs).strip() == body.text
    assert all(lp.logprob <= 0 for lp in body.logprobs)
    assert _refused(base, clip, "include[]", include=["logprobs"], response_format="verbose_json")
    assert _refused(base, clip, "include[]", include=["tokens"])


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles(base: str, clip: Path, fmt: str) -> None:
    r = _raw(base, clip, response_format=fmt)
    assert r.status_code == 200 and ("WEBVTT" in r.text) == (fmt == "vtt") and "-->" in r.text


def test_keywords_become_hotwords(base: str, shared_speech: Path) -> None:
    gutenberg = shared_speech / "ljspeech" / "LJ001-0007.wav"
    plain = _json(base, gutenberg)["text"]
    hinted = Transcription.model_validate(_json(base, gutenberg, keywords=["Gutenberg"])).text
    assert "Gutenberg" not in plain, plain  # tiny.en hears "Gudenberg" unaided
    assert "Gutenberg" in hinted, hinted


def test_chunking_strategy(base: str, clip: Path) -> None:
    auto = Transcription.model_validate(_json(base, clip, chunking_strategy="auto"))
    assert "printed book" in auto.text
    vad = {"type": "server_vad", "threshold": 0.3, "prefix_padding_ms": 400, "silence_duration_ms": 1000}
    if "vad_threshold" in DecodeOptions.__dataclass_fields__:
        tuned = Transcription.model_validate(_json(base, clip, chunking_strategy=vad))
        assert "printed book" in tuned.text
    else:  # an engine without VAD settings says so, naming the field
        _refused(base, clip, "chunking_strategy.threshold", chunking_strategy=vad)
    _refused(base, clip, "chunking_strategy.eagerness", chunking_strategy={"type": "server_vad", "eagerness": 1})
    _refused(base, clip, "chunking_strategy", chunking_strategy={"type": "semantic"})
    _refused(base, clip, "chunking_strategy.threshold", chunking_strategy={"type": "server_vad", "threshold": 2})


def test_languages(base: str, clip: Path) -> None:
    assert "printed book" in Transcription.model_validate(_json(base, clip, languages=["en"])).text
    assert "one language" in _refused(base, clip, "languages[]", languages=["en", "de"])
    _refused(base, clip, "languages[]", languages=["en"], language="de")


def test_unhonoured_parameters_are_400_naming_them(base: str, clip: Path) -> None:
    # Known speakers need diarized_json; with json they are refused, never silently dropped.
    _refused(base, clip, "known_speaker_names[]", known_speaker_names=["agent"])
    _refused(base, clip, "known_speaker_references[]", known_speaker_references=["data:audio/wav;base64,AAAA"])
    _refused(base, clip, "frobnicate", extra_body={"frobnicate": "1"})
    _refused(base, clip, "stream", extra_body={"stream": "maybe"})
