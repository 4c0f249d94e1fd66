"""Exports that other runtimes load: openai-whisper's model.pt and whisper.cpp's ggml file, and the CLI."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from whisperops.models import registry
from whisperops.models.convert import ConversionError, convert, convert_to_ggml, convert_to_openai
from whisperops.models.convert.ggml import GGML_MAGIC

JFK = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"
JFK_WORDS = JFK.split(" ")


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("export")
    return {"openai": convert_to_openai("tiny.en", out / "openai"), "ggml": convert_to_ggml("tiny.en", out / "ggml")}


@pytest.mark.slow
def test_openai_whisper_loads_the_export_and_transcribes_jfk(exports: dict[str, Path], jfk: Path) -> None:
    whisper = pytest.importorskip("whisper", reason="openai-whisper not installed (pip install 'whisperops[bench]')")
    import torch

    from whisperops.audio import load_audio

    checkpoint = torch.load(exports["openai"], map_location="cpu")
    assert checkpoint["dims"] == {
        "n_mels": 80,
        "n_audio_ctx": 1500,
        "n_audio_state": 384,
        "n_audio_head": 6,
        "n_audio_layer": 4,
        "n_vocab": 51864,
        "n_text_ctx": 448,
        "n_text_state": 384,
        "n_text_head": 6,
        "n_text_layer": 4,
    }
    model = whisper.load_model(str(exports["openai"]), device="cpu")  # load_state_dict is strict
    assert set(checkpoint["model_state_dict"]) == set(model.state_dict())
    # Greedy: openai-whisper's beam search in PyTorch on 2 cores is several times slower.
    result = model.transcribe(load_audio(jfk), fp16=False, language="en", temperature=0.0)
    assert words(result["text"]) == JFK_WORDS


def test_ggml_file_has_whisper_cpp_layout(exports: dict[str, Path]) -> None:
    raw = exports["ggml"].read_bytes()
    header = struct.unpack_from("<12i", raw)
    assert header[0] == GGML_MAGIC
    assert header[1:12] == (51864, 1500, 384, 6, 4, 448, 384, 6, 4, 80, 1)
    n_mel, n_fft = struct.unpack_from("<ii", raw, 48)
    assert (n_mel, n_fft) == (80, 201)
    offset = 56 + n_mel * n_fft * 4
    filters = np.frombuffer(raw, "<f4", n_mel * n_fft, 56).reshape(n_mel, n_fft)
    assert filters.max() > 0.02 and np.all(filters >= 0)
    (n_tokens,) = struct.unpack_from("<i", raw, offset)
    assert n_tokens == 50256  # the GPT-2 BPE tokens; whisper.cpp numbers the special tokens itself
    offset += 4
    tokens = []
    for _ in range(n_tokens):
        (n,) = struct.unpack_from("<i", raw, offset)
        tokens.append(raw[offset + 4 : offset + 4 + n])
        offset += 4 + n
    assert tokens[0] == b"!" and tokens[220] == b" " and tokens[1770] == b" Mr"
    n_dims, _name_len, ftype = struct.unpack_from("<iii", raw, offset)
    assert (n_dims, ftype) in ((2, 1), (1, 0), (2, 0), (3, 1))


def test_whisper_cpp_loads_the_export_and_transcribes_jfk(exports: dict[str, Path], jfk: Path) -> None:
    pwc = pytest.importorskip(
        "pywhispercpp.model", reason="pywhispercpp not installed (pip install 'whisperops[bench]')"
    )
    from whisperops.audio import load_audio

    model = pwc.Model(str(exports["ggml"]), n_threads=2, print_progress=False, print_realtime=False)
    segments = model.transcribe(load_audio(jfk))
    assert words(" ".join(s.text for s in segments)) == JFK_WORDS


def test_cli_converts_registers_and_the_engine_runs_the_name(tmp_path: Path, jfk: Path) -> None:
    from whisperops.cli.app import app
    from whisperops.engine import DecodeOptions, Engine

    out = tmp_path / "my-tiny-hf"
    result = CliRunner().invoke(app, ["convert", "tiny.en", "--to", "hf", "--output", str(out), "--name", "my-tiny"])
    assert result.exit_code == 0, result.output
    assert "registered as my-tiny" in result.output
    assert registry.registered()["my-tiny"] == out.resolve()
    assert any(m.name == "my-tiny" and m.format == "hf" for m in registry.list_models())
    text = Engine("my-tiny", cpu_threads=2).transcribe(jfk, DecodeOptions(beam_size=1)).text
    assert words(text) == JFK_WORDS
    with pytest.raises(ConversionError, match="already in Hugging Face format"):
        convert("my-tiny", "hf", tmp_path / "again")


def test_cli_rejects_bad_targets_with_one_line(tmp_path: Path) -> None:
    from whisperops.cli.app import app

    result = CliRunner().invoke(app, ["convert", "tiny.en", "--to", "onnx", "--output", str(tmp_path / "x")])
    assert isinstance(result.exception, ConversionError)
    assert str(result.exception) == "--to onnx: use one of hf, ct2, openai, ggml"
    with pytest.raises(ConversionError, match="--quantization int3"):
        convert("tiny.en", "ct2", tmp_path / "y", quantization="int3")
