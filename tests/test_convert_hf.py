"""CTranslate2 <-> Hugging Face conversion on the real tiny.en weights: exact, and the same decoding."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from whisperops.models import ct2, registry
from whisperops.models.convert import ConversionError, convert_ct2_to_hf, convert_hf_to_ct2

JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_ct2_to_hf("tiny.en", tmp_path_factory.mktemp("conv") / "tiny-hf")


@pytest.fixture(scope="module")
def roundtrip_dir(hf_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_hf_to_ct2(hf_dir, tmp_path_factory.mktemp("conv") / "tiny-ct2", quantization="float16")


def test_hf_dir_is_a_complete_transformers_model(hf_dir: Path) -> None:
    names = {p.name for p in hf_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= names
    assert "preprocessor_config.json" in names  # faster-whisper and the CT2 converter read this file
    gen = json.loads((hf_dir / "generation_config.json").read_text())
    assert gen["alignment_heads"] == [[1, 0], [2, 0], [2, 5], [3, 0], [3, 1], [3, 2], [3, 3], [3, 4]]
    assert gen["no_timestamps_token_id"] == 50362
    assert gen["decoder_start_token_id"] == 50257
    assert gen["is_multilingual"] is False and "lang_to_id" not in gen
    assert 50361 in gen["suppress_tokens"] and gen["begin_suppress_tokens"] == [220, 50256]
    assert registry.detect_format(hf_dir) == "hf"


def test_tokenizer_keeps_timestamp_tokens_and_special_ids(hf_dir: Path) -> None:
    from transformers import WhisperProcessor

    tok = WhisperProcessor.from_pretrained(hf_dir).tokenizer
    assert len(tok) == 51864
    assert tok.convert_tokens_to_ids("<|0.00|>") == 50363
    assert tok.convert_tokens_to_ids("<|30.00|>") == 51863
    # The HF tokenizer takes the timestamp origin from the last special id.
    assert tok.all_special_ids[-1] == 50362
    assert tok.decode([50257, 50362, 50363, 1770, 50414, 50256], skip_special_tokens=True).strip() == "Mr"
    assert tok._decode_with_timestamps([50363, 1770, 50414]) == "<|0.00|> Mr<|1.02|>"


def test_ct2_hf_ct2_round_trip_is_bit_exact(roundtrip_dir: Path) -> None:
    original = ct2.read_model(registry.resolve("tiny.en"))
    again = ct2.read_model(roundtrip_dir)
    assert again.spec == original.spec and again.aliases == original.aliases
    for name, var in original.variables.items():
        new = again.variables[name]
        assert (new.dtype, new.shape) == (var.dtype, var.shape), name
        assert new.data.tobytes() == var.data.tobytes(), f"{name} differs after CT2 -> HF -> CT2"
    # A newer ctranslate2 may add spec constants (scalars), never weights.
    for name in set(again.variables) - set(original.variables):
        assert again.variables[name].shape == (), name
    cfg_a = json.loads((registry.resolve("tiny.en") / "config.json").read_text())
    cfg_b = json.loads((roundtrip_dir / "config.json").read_text())
    for key in ("alignment_heads", "suppress_ids", "suppress_ids_begin"):
        assert cfg_a[key] == cfg_b[key], key
    assert {"tokenizer.json", "preprocessor_config.json"} <= {p.name for p in roundtrip_dir.iterdir()}


def test_hf_generate_and_faster_whisper_agree_token_for_token(hf_dir: Path, jfk: Path) -> None:
    import ctranslate2
    import torch
    from faster_whisper import WhisperModel
    from transformers import WhisperForConditionalGeneration

    from whisperops.audio import load_audio

    fw = WhisperModel(str(registry.resolve("tiny.en")), device="cpu", compute_type="float32", cpu_threads=2)
    mel = fw.feature_extractor(load_audio(jfk))[:, :3000]
    mel = np.pad(mel, ((0, 0), (0, 3000 - mel.shape[1])))[None].astype(np.float32)
    prompt = [50257, 50362]  # <|startoftranscript|><|notimestamps|>
    ct2_out = fw.model.generate(ctranslate2.StorageView.from_array(mel), [prompt], beam_size=1, max_length=448)
    ct2_tokens = ct2_out[0].sequences_ids[0]

    model = WhisperForConditionalGeneration.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        hf_tokens = model.generate(torch.from_numpy(mel), num_beams=1, do_sample=False)[0].tolist()
    hf_text_tokens = [t for t in hf_tokens if t not in prompt and t != 50256]
    assert len(ct2_tokens) > 20
    assert hf_text_tokens == ct2_tokens
    # Greedy tiny.en drops two commas; the words are the reference's.
    assert fw.hf_tokenizer.decode(ct2_tokens).strip() == JFK_TEXT.replace(",", "")


def test_int8_model_dequantises_close_to_float16(hf_dir: Path, tmp_path: Path, jfk: Path) -> None:
    from safetensors.numpy import load_file

    int8_dir = convert_hf_to_ct2(hf_dir, tmp_path / "tiny-int8", quantization="int8")
    int8 = ct2.read_model(int8_dir, load_data=False)
    assert int8.variables["decoder/embeddings/weight"].dtype == "int8"
    back = convert_ct2_to_hf(int8_dir, tmp_path / "tiny-int8-hf")
    ref = load_file(hf_dir / "model.safetensors")
    got = load_file(back / "model.safetensors")
    assert set(got) == set(ref)
    for name, w in ref.items():
        assert got[name].dtype == np.float32, name
        w = w.astype(np.float32)
        # Symmetric int8 per output channel: error at most half a step, step = max|channel| / 127.
        step = 0.0
        if w.ndim > 1:
            step = np.abs(w).reshape(w.shape[0], -1).max(axis=1).reshape(-1, *([1] * (w.ndim - 1))) / 127
        assert np.all(np.abs(got[name] - w) <= step / 2 + 1e-3), name

    from whisperops.engine import DecodeOptions, Engine

    # The Engine takes a Hugging Face directory directly (converted to CT2 once, cached).
    text = Engine(str(back), cpu_threads=2).transcribe(jfk, DecodeOptions(beam_size=1)).text
    assert words(text) == words(JFK_TEXT)


def test_wrong_input_gets_one_clear_line(tmp_path: Path, hf_dir: Path) -> None:
    with pytest.raises(ConversionError, match="in hf format, not ct2"):
        convert_ct2_to_hf(hf_dir, tmp_path / "x")
    with pytest.raises(ConversionError, match="--quantization int4"):
        convert_hf_to_ct2(hf_dir, tmp_path / "y", quantization="int4")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match="not a CTranslate2"):
        convert_ct2_to_hf(empty, tmp_path / "z")


@pytest.mark.slow
@pytest.mark.shared_data
def test_faster_whisper_text_is_identical_after_round_trip(roundtrip_dir: Path, shared_manifest: list[dict]) -> None:
    """Default decoding before and after CT2 -> HF -> CT2. CI takes 10 clips (two decodes of the whole
    480 s set cost minutes on 2 cores); WHISPEROPS_FULL_ROUNDTRIP=1 runs all 41 (identical when run)."""
    import os

    from whisperops.audio import load_audio
    from whisperops.engine import Engine

    rows = shared_manifest if os.environ.get("WHISPEROPS_FULL_ROUNDTRIP") else shared_manifest[:10]
    before = Engine("tiny.en", cpu_threads=2)
    after = Engine(str(roundtrip_dir), cpu_threads=2)
    differing = []
    for row in rows:
        audio = load_audio(row["path"])
        a, b = before.transcribe(audio).text, after.transcribe(audio).text
        assert a.strip(), row["audio"]
        if a != b:
            differing.append((row["audio"], a, b))
    assert differing == []
