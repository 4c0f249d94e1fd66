"""The fast default paths: short clips packed into shared windows, and one file decoded in-process.

Packing puts several clips into one 30 s window, so the danger is text from one clip landing in
another. The clips below are consecutive sentences of one book (Whisper reads straight from one
into the next) plus JFK. A word may decode differently with other speech in the window, so each
packed transcript is held to the clip decoded alone where mixing would show: the same first and
last word, and no word that only another clip says.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

CLIPS = [
    "jfk.flac",
    "ljspeech/LJ001-0002.wav",
    "ljspeech/LJ001-0004.wav",
    "ljspeech/LJ001-0006.wav",
    "ljspeech/LJ001-0008.wav",
    "ljspeech/LJ001-0011.wav",
    "ljspeech/LJ001-0013.wav",
]


def normalized(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def assert_unmixed(texts: list[str], alone: list[str], references: list[str], names: list[str] = CLIPS) -> None:
    """Each of ``texts`` starts and ends with its own clip's words, and holds no other clip's own words.

    A clip's own words are those of its reference and of its decode alone (which may hear "formed"
    for "form"); what mixing adds is a word that only another clip says.
    """
    from whisperops.evaluation.metrics import wer

    own = [set(normalized(a)) | set(normalized(r)) for a, r in zip(alone, references, strict=True)]
    for i, (text, expected) in enumerate(zip(texts, alone, strict=True)):
        got = normalized(text)
        assert got and got[0] in own[i] and got[-1] in own[i], f"{names[i]}: {text!r} vs alone {expected!r}"
        foreign = {w for j, words in enumerate(own) if j != i for w in words if len(w) > 3} - own[i]
        assert not foreign & set(got), f"{names[i]} holds another clip's words {foreign & set(got)}: {text!r}"
        assert wer([expected], [text]) <= 0.3, f"{names[i]}: {text!r} vs alone {expected!r}"


@pytest.fixture(scope="module")
def references(shared_manifest) -> list[str]:
    by_audio = {row["audio"]: row["text"] for row in shared_manifest}
    return [by_audio[c] for c in CLIPS]


@pytest.fixture(scope="module")
def clips(shared_speech):
    from whisperops.audio import load_audio

    return [load_audio(shared_speech / c) for c in CLIPS]


@pytest.fixture(scope="module")
def alone(engine, clips) -> list[str]:
    """Each clip decoded by itself on the sequential path: what packing must reproduce."""
    from whisperops.engine import DecodeOptions

    return [engine.transcribe(audio, DecodeOptions(pack=False)).text for audio in clips]


def test_packed_clips_each_get_their_own_words(engine, clips, alone, references, caplog):
    from whisperops.engine import DecodeOptions

    with caplog.at_level(logging.INFO, logger="whisperops.engine"):
        packed = engine.transcribe_packed(clips, DecodeOptions(word_timestamps=True), sources=CLIPS)
    # The shared windows did the work: no clip was sent back to the sequential path.
    assert "packed 7 clips into 2 windows; 0 to decode alone, 0 skipped to pack again" in caplog.text
    assert [t.source for t in packed] == CLIPS
    assert_unmixed([t.text for t in packed], alone, references)
    for name, transcript in zip(CLIPS, packed, strict=True):
        assert transcript.segments[0].start >= 0.0 and transcript.segments[-1].end <= transcript.duration, name
        assert all(0.0 <= w.start <= w.end <= transcript.duration for w in transcript.words), name
        assert transcript.timings["packed_batch_s"] > 0
    assert packed[0].text.startswith("And so my fellow Americans")


# Two full windows in which Whisper ends early: it skips the last clip of the first and the last two
# of the second (tiny.en, int8, one or two threads).
SKIPPED = [
    "ljspeech/LJ001-0007.wav",
    "ljspeech/LJ001-0005.wav",
    "librivox/sense_and_sensibility_01_austen_64kb-0930.wav",
    "ljspeech/LJ001-0019.wav",
    "librivox/sense_and_sensibility_01_austen_64kb-0920.wav",
    "ljspeech/LJ001-0016.wav",
]


def test_skipped_clips_are_packed_again_and_their_neighbours_kept(engine, shared_speech, shared_manifest, caplog):
    """A clip Whisper skips in a full window goes into a second packed round; the window's other
    clips keep their words, so nothing is decoded alone and no clip loses or borrows words."""
    from whisperops.audio import load_audio
    from whisperops.engine import DecodeOptions

    audios = [load_audio(shared_speech / c) for c in SKIPPED]
    by_audio = {row["audio"]: row["text"] for row in shared_manifest}
    with caplog.at_level(logging.INFO, logger="whisperops.engine"):
        packed = engine.transcribe_packed(audios, DecodeOptions())
    rounds = re.findall(r"packed (\d+) clips into \d+ windows; (\d+) to decode alone, (\d+) skipped", caplog.text)
    assert rounds[0][0] == "6" and int(rounds[0][2]) > 0, caplog.text  # the case this test is about happened
    assert len(rounds) == 2 and rounds[1][0] == rounds[0][2] and rounds[1][2] == "0", caplog.text
    alone = [engine.transcribe(audio, DecodeOptions(pack=False)).text for audio in audios]
    assert_unmixed([t.text for t in packed], alone, [by_audio[c] for c in SKIPPED], SKIPPED)


def test_a_quiet_whisper_is_packed_not_dropped(engine, shared_speech, jfk):
    """Silero's stock settings hear no speech in a quiet whisper; the run's own VAD does, so it is decoded."""
    from faster_whisper.vad import VadOptions

    from whisperops.audio import load_audio
    from whisperops.vad import speech_timestamps

    whisper = load_audio(shared_speech / "hard" / "whisper.flac") * 0.25
    assert speech_timestamps(whisper, VadOptions()) == []  # what the packing trim alone would go by
    texts = [t.text.lower() for t in engine.transcribe_packed([load_audio(jfk), whisper])]
    assert "whispered" in texts[1] and "country" in texts[0], texts


def test_packing_needs_one_language_and_short_clips(engine, clips):
    import numpy as np

    from whisperops.engine import DecodeOptions, packing_applies
    from whisperops.errors import OptionError

    assert packing_applies(engine, DecodeOptions())
    assert not packing_applies(engine, DecodeOptions(pack=False))
    assert not packing_applies(engine, DecodeOptions(batch_size=1))
    with pytest.raises(OptionError, match="longer than"):
        engine.transcribe_packed([clips[1], np.zeros(16000 * 25, dtype=np.float32)], DecodeOptions())
    # Digital silence beside speech: no text for it, and the speech is still right.
    silent, speech = engine.transcribe_packed([np.zeros(16000 * 3, dtype=np.float32), clips[1]], DecodeOptions())
    assert silent.text == "" and "modern" in speech.text


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "whisperops", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.mark.slow
def test_flow_packs_a_batch_and_keeps_each_items_text(shared_speech, alone, references, tmp_path):
    """Through `whisperops transcribe` (a batch: the Metaflow flow by default), one shard packs all clips."""
    out = tmp_path / "out"
    sources = [str(shared_speech / c) for c in CLIPS]
    proc = _cli("transcribe", *sources, "-o", str(out), "--formats", "txt,json", "--shard-size", "7", "--no-cache")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "run id: TranscriptionFlow/" in proc.stdout, "a batch runs the versioned flow by default"
    stems = [Path(name).stem for name in CLIPS]
    for stem in stems:
        data = json.loads((out / f"{stem}.json").read_text())
        assert "packed_batch_s" in data["timings"], f"{stem} was not decoded in a packed window"
    assert_unmixed([(out / f"{stem}.txt").read_text() for stem in stems], alone, references)


def test_one_file_runs_in_process_by_default(jfk, tmp_path):
    proc = _cli("transcribe", str(jfk), "-o", str(tmp_path), "--formats", "txt")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "run id:" not in proc.stdout and "Metaflow run" not in proc.stderr, "one file skips the flow"
    assert (tmp_path / "jfk.txt").read_text().startswith("And so my fellow Americans ask not")


def test_the_path_rule(jfk, shared_speech, tmp_path):
    from whisperops.cli.transcribe import runs_in_process

    listing = tmp_path / "list.txt"
    listing.write_text(f"{jfk}\n")
    assert runs_in_process([str(jfk)])
    assert not runs_in_process([str(jfk), str(shared_speech / CLIPS[1])]), "a batch keeps the flow"
    assert not runs_in_process([str(shared_speech / "ljspeech")]), "a folder is a batch"
    assert not runs_in_process([str(listing)]), "a list file is a batch"
    assert not runs_in_process(["http://127.0.0.1:9/a.wav"]), "a URL goes to the flow (download, cache)"
    assert not runs_in_process([str(tmp_path / "missing.wav")]), "the flow reports what is missing"
