"""Offline labelled speech: augmentations measured on real signals, TTS + manifest, banking splits, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from whisperops.data import banking
from whisperops.data.synth import (
    add_noise,
    change_speed,
    parse_augmentation,
    read_texts,
    synthesize,
    telephone,
)
from whisperops.errors import OptionError, WhisperOpsError

SR = 16000


def _tone(freq: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(SR * seconds)) / SR
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _band_power(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(x.size, 1 / SR)
    return float(spec[(freqs >= lo) & (freqs < hi)].sum())


def test_speed_changes_duration_by_the_factor():
    x = _tone(440, 2.0)
    assert abs(change_speed(x, 1.25).size - x.size / 1.25) <= 2
    assert abs(change_speed(x, 0.8).size - x.size / 0.8) <= 2
    assert change_speed(x, 1.0) is x


def test_noise_is_added_at_the_requested_snr():
    x = _tone(300, 2.0)
    for snr in (0.0, 10.0, 20.0):
        noisy = add_noise(x, snr, np.random.default_rng(0))
        noise = noisy - x
        measured = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
        assert abs(measured - snr) < 0.5, (snr, measured)


def test_telephone_keeps_the_voice_band_and_removes_the_rest():
    low, voice, high = _tone(100), _tone(1000), _tone(6000)
    assert _band_power(telephone(voice), 900, 1100) > 0.5 * _band_power(voice, 900, 1100)
    # 100 Hz hum and 6 kHz hiss are far outside 300-3400 Hz: at least 20 dB down.
    assert _band_power(telephone(low), 50, 150) < 0.01 * _band_power(low, 50, 150)
    assert _band_power(telephone(high), 5500, 6500) < 0.01 * _band_power(high, 5500, 6500)
    assert telephone(voice).size == voice.size


def test_augmentation_specs_parse_and_bad_ones_fail_in_one_line():
    aug = parse_augmentation("speed:0.9+noise:10+telephone")
    assert [s[0] for s in aug.steps] == ["speed", "noise", "telephone"]
    assert parse_augmentation("clean").steps == ()
    for bad in ("reverb", "noise:loud", "speed:5"):
        with pytest.raises(OptionError) as err:
            parse_augmentation(bad)
        assert "\n" not in str(err.value) and bad.split(":")[0] in str(err.value)


def test_banking_splits_share_no_sentence_and_hold_domain_content():
    splits = banking.make_splits(300, 40, 60, seed=3)
    written = {k: {u.written for u in v} for k, v in splits.items()}
    assert [len(v) for v in written.values()] == [300, 40, 60]
    assert not written["train"] & written["eval"]
    assert not written["train"] & written["test"]
    assert not written["eval"] & written["test"]
    everything = " ".join(u.written for v in splits.values() for u in v)
    for marker in ("$", "IBAN", "freeze my debit card", "fee", "sort code"):
        assert marker in everything
    # Digits are read one by one in the spoken form, and the spoken form has no digits left to guess.
    card = next(u for u in splits["train"] if u.written.startswith("My card number is"))
    assert not any(ch.isdigit() for ch in card.spoken)
    # Test voices and conditions include ones that training never uses.
    train_v, train_a = banking.RECIPE_VOICES["train"]
    test_v, test_a = banking.RECIPE_VOICES["test"]
    assert set(test_a) - set(train_a) and set(test_v) - set(train_v)
    assert banking.make_splits(5, 1, 1, seed=3) == banking.make_splits(5, 1, 1, seed=3)


def test_number_words():
    assert banking.words(1250) == "one thousand two hundred and fifty"
    assert banking.words(21622) == "twenty one thousand six hundred and twenty two"
    assert banking.words(1005) == "one thousand and five"
    assert banking.ordinal(22) == "22nd" and banking.ordinal(13) == "13th"


def test_synthesize_writes_clips_and_a_manifest_the_loader_reads(tmp_path: Path):
    from whisperops.audio import load_audio
    from whisperops.data.manifest import load_dataset

    lines = ["Please freeze my debit card.", "My balance is $12.\tMy balance is twelve dollars."]
    rows = synthesize(lines, tmp_path, voices=["espeak:en-us"], augment=["clean", "telephone+noise:15"], seed=1)
    assert [r["text"] for r in rows] == ["Please freeze my debit card.", "My balance is $12."]
    assert [r["augment"] for r in rows] == ["clean", "telephone+noise:15"]
    ds = load_dataset(tmp_path / "manifest.jsonl")
    assert [u.text for u in ds] == [r["text"] for r in rows]
    audio = load_audio(ds[1].audio)
    assert abs(audio.size / SR - rows[1]["duration_s"]) < 0.01 and np.abs(audio).max() <= 1.0
    # Re-running reuses the clips (same names, untouched files).
    mtime = (tmp_path / rows[0]["audio"]).stat().st_mtime_ns
    again = synthesize(lines, tmp_path, voices=["espeak:en-us"], augment=["clean", "telephone+noise:15"], seed=1)
    assert again == rows and (tmp_path / rows[0]["audio"]).stat().st_mtime_ns == mtime


def test_piper_speech_repeats_from_its_seed(tmp_path: Path):
    """Piper samples prosody noise inside its ONNX graph; seeded, a batch repeats even within one process."""
    lines = ["Please freeze my debit card today.", "What is my balance?"]
    first = [tmp_path / "a" / r["audio"] for r in synthesize(lines, tmp_path / "a", voices=["piper:joe"])]
    again = [tmp_path / "b" / r["audio"] for r in synthesize(lines, tmp_path / "b", voices=["piper:joe"])]
    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    # Another seed draws other noise: the seed, not a fixed output, is what repeats.
    other = synthesize(lines[:1], tmp_path / "c", voices=["piper:joe"], seed=1)
    assert (tmp_path / "c" / other[0]["audio"]).read_bytes() != first[0].read_bytes()


def test_piper_speech_is_recognised_by_tiny_en(tmp_path: Path, engine):
    from whisperops.engine import DecodeOptions
    from whisperops.evaluation import wer

    rows = synthesize(["Please freeze my debit card today."], tmp_path, voices=["piper:joe"], augment=["noise:20"])
    text = engine.transcribe(tmp_path / rows[0]["audio"], DecodeOptions(beam_size=1)).text
    assert wer(rows[0]["text"], text) <= 0.2, text


def test_bad_inputs_fail_before_synthesis(tmp_path: Path):
    with pytest.raises(WhisperOpsError, match="no such text file"):
        read_texts(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# only a comment\n\n")
    with pytest.raises(WhisperOpsError, match="holds no sentences"):
        read_texts(tmp_path / "empty.txt")
    with pytest.raises(OptionError, match="use piper:joe or espeak"):
        synthesize(["hello"], tmp_path / "out", voices=["festival:kal"])
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(WhisperOpsError, match="not writable"):
        synthesize(["hello"], blocker / "sub", voices=["espeak:en-us"])


def test_cli_data_synth_and_banking(tmp_path: Path):
    texts = tmp_path / "texts.txt"
    texts.write_text("Freeze my card.\nWhat is my balance?\n")
    cmd = [sys.executable, "-c", "from whisperops.cli import main; main()"]
    out = subprocess.run(
        [*cmd, "data", "synth", "--texts", str(texts), "--output", str(tmp_path / "ds"), "--voices", "espeak:en-us",
         "--augment", "speed:1.1,noise:10"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "wrote 2 clips" in out.stdout
    rows = [json.loads(line) for line in (tmp_path / "ds" / "manifest.jsonl").read_text().splitlines()]
    assert [r["augment"] for r in rows] == ["speed:1.1", "noise:10"]
    bad = subprocess.run(
        [*cmd, "data", "synth", "--texts", str(texts), "--output", str(tmp_path / "x"), "--augment", "reverb"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert bad.returncode == 2 and "reverb" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    out = subprocess.run(
        [*cmd, "data", "banking", "--output", str(tmp_path / "bank"), "--train", "6", "--eval", "2", "--test", "3",
         "--texts-only"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert len((tmp_path / "bank" / "texts" / "test.txt").read_text().splitlines()) == 3
