"""``whisperops`` as a user runs it: a real subprocess, real weights, bad input mixed with good."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import wave

import pytest

HEAVY = ("faster_whisper", "ctranslate2", "torch", "transformers", "ray", "metaflow", "numpy", "yt_dlp", "av")


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "whisperops", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def test_help_imports_no_heavy_library():
    code = f"import sys, whisperops.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "", f"`whisperops --help` would import {loaded}"
    out = run_cli("--help")
    assert out.returncode == 0 and "transcribe" in out.stdout


@pytest.fixture()
def mixed_inputs(tmp_path, jfk):
    d = tmp_path / "in"
    d.mkdir()
    shutil.copy(jfk, d / "jfk.flac")
    (d / "corrupt.mp3").write_bytes(os.urandom(4096))
    (d / "empty.wav").write_bytes(b"")
    (d / "notes.wav").write_text("this is a text file, not audio\n" * 20)
    for name, seconds in (("zero.wav", 0), ("silent.wav", 3)):
        with wave.open(str(d / name), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(b"\0\0" * 16000 * seconds)
    (tmp_path / "nomedia").mkdir()
    return d, tmp_path


def test_bad_items_are_reported_and_good_ones_written(mixed_inputs):
    d, tmp = mixed_inputs
    out = tmp / "out"
    proc = run_cli(
        "transcribe",
        str(d),
        str(tmp / "missing.mp3"),
        str(tmp / "nomedia"),
        "ftp://example.org/a.mp3",
        "http://127.0.0.1:9/unreachable.wav",
        "-o",
        str(out),
        "--formats",
        "txt,srt,json",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    # Punctuation follows where Whisper's windows fall ("And so, my fellow" is bare faster-whisper's).
    assert "and so my fellow americans" in (out / "jfk.txt").read_text().lower().replace(",", "")
    assert json.loads((out / "jfk.json").read_text())["language"] == "en"
    assert (out / "silent.txt").read_text() == "", "a silent clip gives an empty transcript, not an error"
    failures = [line for line in proc.stderr.splitlines() if line.startswith("failed:")]
    expected = {
        "corrupt.mp3": "cannot decode",
        "empty.wav": "empty file",
        "notes.wav": "cannot decode",
        "zero.wav": "no audio samples",
        "missing.mp3": "no such file",
        "nomedia": "no media files",
        "ftp://example.org/a.mp3": "only http and https",
        "unreachable.wav": "refused",
    }
    assert len(failures) == len(expected), proc.stderr
    for needle, reason in expected.items():
        line = next((f for f in failures if needle in f), None)
        assert line is not None and reason in line.lower(), (needle, failures)
    assert "no speech" in proc.stdout
    assert not list(out.glob(".*tmp"))


def test_bad_usage_exits_2_with_one_line(jfk, tmp_path):
    proc = run_cli("transcribe", str(jfk), "--formats", "txt,docx", "-o", str(tmp_path))
    assert proc.returncode == 2 and "docx" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("transcribe", str(jfk), "--model", "huge-v9", "-o", str(tmp_path))
    assert proc.returncode == 2 and "huge-v9" in proc.stderr and "tiny.en" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir()), "nothing written on bad usage"


def test_second_run_is_served_from_the_transcript_cache(jfk, tmp_path):
    first = run_cli("transcribe", str(jfk), "-o", str(tmp_path / "a"), "--formats", "txt", "--in-process")
    second = run_cli("transcribe", str(jfk), "-o", str(tmp_path / "b"), "--formats", "txt", "--in-process")
    assert first.returncode == second.returncode == 0
    assert "cached" in second.stdout
    assert (tmp_path / "a" / "jfk.txt").read_text() == (tmp_path / "b" / "jfk.txt").read_text()
