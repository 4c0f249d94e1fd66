"""Accuracy: whisperops' engine gives bare faster-whisper's transcripts on real recorded speech."""

from __future__ import annotations

import pytest

from whisperops.engine import DecodeOptions
from whisperops.evaluation.metrics import wer


@pytest.mark.slow
@pytest.mark.shared_data
def test_shared_english_set_wer_matches_bare_faster_whisper(engine, shared_manifest):
    from faster_whisper import WhisperModel

    bare = WhisperModel(str(engine.path), device="cpu", compute_type="int8", cpu_threads=2)
    refs, ours, theirs = [], [], []
    for row in shared_manifest:
        refs.append(row["text"])
        ours.append(engine.transcribe(row["path"], DecodeOptions(beam_size=5, vad_filter=True)).text)
        segments, _ = bare.transcribe(str(row["path"]), beam_size=5, vad_filter=True)
        theirs.append(" ".join(s.text.strip() for s in segments))
    ours_wer, bare_wer = wer(refs, ours), wer(refs, theirs)
    identical = sum(a == b for a, b in zip(ours, theirs, strict=True))
    assert abs(ours_wer - bare_wer) <= 0.005, (ours_wer, bare_wer)
    assert identical >= len(refs) - 1, f"only {identical}/{len(refs)} transcripts identical"
    assert ours_wer < 0.15, f"tiny.en WER {ours_wer:.3f} on clean read speech is implausibly high"
