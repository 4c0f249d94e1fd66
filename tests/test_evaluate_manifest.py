"""Dataset loading: three layouts, validation with line numbers, --skip-bad counting."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from whisperops.data.manifest import DatasetError, Utterance, load_dataset


def _wav(path: Path, seconds: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tone = (np.sin(np.linspace(0, 440 * 2 * np.pi * seconds, int(16000 * seconds))) * 8000).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(tone.tobytes())
    return path


def _jsonl(path: Path, lines: list) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_jsonl_rows_resolve_relative_to_manifest(tmp_path: Path) -> None:
    _wav(tmp_path / "clips" / "a.wav")
    _wav(tmp_path / "b.flac.wav")
    m = _jsonl(
        tmp_path / "m.jsonl",
        [
            {"audio": "clips/a.wav", "text": " Hello there ", "language": "EN", "duration_s": 0.5, "speaker": "x"},
            "",
            {"audio_filepath": str(tmp_path / "b.flac.wav"), "transcription": "second", "id": "b"},
        ],
    )
    ds = load_dataset(m)
    assert [u.id for u in ds] == ["clips/a.wav", "b"]
    a = ds[0]
    assert a.audio == (tmp_path / "clips" / "a.wav").resolve() and a.text == "Hello there"
    assert (a.language, a.duration, a.line, a.extra) == ("en", 0.5, 1, {"speaker": "x"})
    assert ds[1].line == 3 and ds[1].language is None
    assert ds.format == "jsonl" and ds.skipped == [] and ds.total_duration is None
    assert Utterance.from_dict(a.to_dict()) == a


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    _wav(tmp_path / "a.wav")
    bad = {
        '{"audio": "a.wav", "text": "ok"}\n{"audio": "missing.wav", "text": "x"}\n': ":2: audio file",
        '{"audio": "a.wav", "text": "   "}\n': ":1: empty transcript",
        '{"audio": "a.wav", "text": "ok"}\n{not json\n': ":2: invalid JSON",
        '{"text": "no audio"}\n': ":1: no audio path field",
        '{"audio": "a.wav"}\n': ":1: no transcript field",
        '{"audio": "a.wav", "text": "x"}\n{"audio": "a.wav", "text": "y"}\n': ":2: duplicate id 'a.wav'",
        '["a.wav", "x"]\n': ":1: expected a JSON object",
    }
    for content, expected in bad.items():
        m = tmp_path / "m.jsonl"
        m.write_text(content)
        with pytest.raises(DatasetError) as err:
            load_dataset(m)
        message = str(err.value)
        assert expected in message and str(m) in message and "--skip-bad" in message, message
        assert "\n" not in message


def test_skip_bad_counts_and_keeps_the_rest(tmp_path: Path) -> None:
    _wav(tmp_path / "a.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "notaudio.wav").write_text("this is not audio")
    m = _jsonl(
        tmp_path / "m.jsonl",
        [
            {"audio": "a.wav", "text": "good"},
            {"audio": "gone.wav", "text": "x"},
            {"audio": "empty.wav", "text": "x"},
            {"audio": "notaudio.wav", "text": "x"},
            "{oops",
        ],
    )
    ds = load_dataset(m, skip_bad=True)
    assert [u.id for u in ds] == ["a.wav"]
    assert [b.where.rsplit(":", 1)[1] for b in ds.skipped] == ["2", "3", "4", "5"]
    assert "empty (0 bytes)" in ds.skipped[1].reason and "cannot be read as audio" in ds.skipped[2].reason
    assert ds.summary()["skipped"] == 4
    with pytest.raises(DatasetError, match="no usable rows; 1 bad rows"):
        load_dataset(_jsonl(tmp_path / "all_bad.jsonl", [{"audio": "gone.wav", "text": "x"}]), skip_bad=True)


def test_audiofolder_csv(tmp_path: Path) -> None:
    _wav(tmp_path / "a.wav")
    _wav(tmp_path / "sub" / "b.wav")
    csv = tmp_path / "metadata.csv"
    csv.write_text('file_name,transcription,language\na.wav,"Hello, world",en\nsub/b.wav,"two\nlines",\nc.wav,x,en\n')
    with pytest.raises(DatasetError, match=r"metadata.csv:5: audio file .*c.wav not found"):
        load_dataset(csv)  # the quoted newline makes row 3 end on line 5
    ds = load_dataset(tmp_path, skip_bad=True)  # a folder with metadata.csv uses it
    assert ds.format == "csv" and [u.text for u in ds] == ["Hello, world", "two\nlines"]
    assert ds[0].language == "en" and ds[1].language is None and len(ds.skipped) == 1
    (tmp_path / "h.csv").write_text("path_to_audio,words\na.wav,x\n")
    with pytest.raises(DatasetError, match=r"h.csv:1: header .* needs file_name and transcription"):
        load_dataset(tmp_path / "h.csv")


def test_folder_of_audio_and_txt(tmp_path: Path) -> None:
    _wav(tmp_path / "x" / "one.wav")
    (tmp_path / "x" / "one.txt").write_text("first clip\n")
    _wav(tmp_path / "two.wav")
    (tmp_path / "two.txt").write_text("second   clip")
    (tmp_path / "notes.md").write_text("ignored")
    ds = load_dataset(tmp_path)
    assert ds.format == "folder" and [(u.id, u.text) for u in ds] == [
        ("two.wav", "second clip"),
        ("x/one.wav", "first clip"),
    ]
    _wav(tmp_path / "three.wav")
    with pytest.raises(DatasetError, match=r"three.wav: no transcript three.txt beside it"):
        load_dataset(tmp_path)
    assert len(load_dataset(tmp_path, skip_bad=True).skipped) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no audio files"):
        load_dataset(empty)


def test_missing_and_unknown_inputs(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no such manifest"):
        load_dataset(tmp_path / "nope.jsonl")
    (tmp_path / "m.yaml").write_text("x")
    with pytest.raises(DatasetError, match=r"unknown dataset type '\.yaml'"):
        load_dataset(tmp_path / "m.yaml")


def test_shared_manifest_loads(shared_speech: Path) -> None:
    ds = load_dataset(shared_speech / "manifest.jsonl")
    assert len(ds) == 41 and ds.skipped == []
    assert all(u.audio.is_file() and u.language == "en" for u in ds)
    assert 470 < ds.total_duration < 490
