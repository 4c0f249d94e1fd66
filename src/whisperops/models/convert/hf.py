"""CTranslate2 <-> Hugging Face transformers for Whisper.

CT2 -> HF inverts ctranslate2's ``WhisperLoader`` (``converters/transformers.py``) by hand, reading
``model.bin`` with the pure-python reader, so no weights come from the network. HF -> CT2 goes through
ctranslate2's own ``TransformersConverter`` so the result is exactly what ctranslate2 would produce.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from whisperops.models import ct2
from whisperops.models.convert.common import ConversionError, quiet_transformers, resolve_source

log = logging.getLogger(__name__)

# ctranslate2.specs.common_spec.Activation: the value stored in ``decoder/activation``.
_CT2_ACTIVATIONS = {0: "relu", 1: "gelu_new", 2: "swish", 3: "gelu", 4: "gelu_fast", 5: "tanh"}
QUANTIZATIONS = ("float16", "int8", "float32", "int8_float16", "int8_float32", "bfloat16")


@dataclass
class SpecialTokens:
    """Token ids Whisper's decoding needs, read from the tokenizer's added tokens by content."""

    eot: int
    sot: int
    translate: int
    transcribe: int
    startoflm: int
    startofprev: int
    nospeech: int
    notimestamps: int
    languages: dict[str, int]  # "<|en|>" -> id
    specials: list[str]  # every non-timestamp special token, in id order

    @property
    def timestamp_begin(self) -> int:
        return self.notimestamps + 1


def read_special_tokens(tokenizer_json: Path) -> SpecialTokens:
    added = sorted(json.loads(tokenizer_json.read_text())["added_tokens"], key=lambda a: a["id"])
    by_content = {a["content"]: a["id"] for a in added}
    named = {
        "eot": "<|endoftext|>",
        "sot": "<|startoftranscript|>",
        "translate": "<|translate|>",
        "transcribe": "<|transcribe|>",
        "startoflm": "<|startoflm|>",
        "startofprev": "<|startofprev|>",
        "notimestamps": "<|notimestamps|>",
    }
    missing = [tok for tok in named.values() if tok not in by_content]
    if missing:
        raise ConversionError(f"{tokenizer_json}: not a Whisper tokenizer (no {', '.join(missing)})")
    ids = {key: by_content[tok] for key, tok in named.items()}
    # Older vocabularies call the no-speech token <|nocaptions|>.
    ids["nospeech"] = by_content.get("<|nospeech|>", by_content.get("<|nocaptions|>", ids["notimestamps"] - 1))
    non_lang = set(named.values()) | {"<|nospeech|>", "<|nocaptions|>"}
    timestamp = re.compile(r"<\|\d+\.\d+\|>")
    languages = {
        a["content"]: a["id"]
        for a in added
        if a["content"] not in non_lang and not timestamp.fullmatch(a["content"]) and a["id"] > ids["sot"]
    }
    specials = [a["content"] for a in added if a.get("special", True) and not timestamp.fullmatch(a["content"])]
    return SpecialTokens(languages=languages, specials=specials, **ids)


def _dequantize(model: ct2.CT2Model, name: str, dtype: np.dtype) -> np.ndarray:
    """Variable ``name`` (resolving aliases) as ``dtype``, int8 weights divided by their ``_scale``."""
    target = model.aliases.get(name, name)
    var = model.variables.get(target)
    if var is None or var.data is None:
        raise ConversionError(f"CTranslate2 model has no variable {name!r}")
    data = var.data
    if var.dtype == "bfloat16":
        data = (data.astype(np.uint32) << 16).view(np.float32)
    if var.dtype in ("int8", "int16"):
        # ctranslate2 quantises per output row: q = round(w * scale), so w = q / scale. An aliased
        # (tied) weight has no scale of its own: the target's applies.
        scale = model.variables.get(f"{name}_scale") or model.variables.get(f"{target}_scale")
        if scale is None or scale.data is None:
            raise ConversionError(f"CTranslate2 variable {name!r} is {var.dtype} but has no {name}_scale")
        s = scale.data.astype(np.float32)
        data = data.astype(np.float32) / (s.reshape(-1, *([1] * (data.ndim - 1))) if s.ndim else s)
    return np.ascontiguousarray(data.astype(dtype, copy=False))


def _scalar(model: ct2.CT2Model, name: str, default: int) -> int:
    var = model.variables.get(name)
    return int(var.data) if var is not None and var.data is not None else default


def _count_layers(model: ct2.CT2Model, prefix: str) -> int:
    pat = re.compile(rf"^{prefix}/layer_(\d+)/")
    return 1 + max((int(m.group(1)) for n in model.variables if (m := pat.match(n))), default=-1)


def ct2_state_dict(model: ct2.CT2Model, dtype: np.dtype) -> tuple[dict[str, np.ndarray], bool]:
    """HF ``WhisperForConditionalGeneration`` state dict from a CT2 Whisper model; and whether it is tied."""
    g = lambda name: _dequantize(model, name, dtype)  # noqa: E731
    sd: dict[str, np.ndarray] = {}

    def linear(hf: str, ct: str, bias: bool = True) -> None:
        sd[f"{hf}.weight"] = g(f"{ct}/weight")
        if bias:
            sd[f"{hf}.bias"] = g(f"{ct}/bias")

    def norm(hf: str, ct: str) -> None:
        sd[f"{hf}.weight"] = g(f"{ct}/gamma")
        sd[f"{hf}.bias"] = g(f"{ct}/beta")

    def fused(hf: str, ct: str, parts: tuple[str, ...]) -> None:
        w = g(f"{ct}/weight")
        b = g(f"{ct}/bias")
        d = w.shape[1]
        for i, part in enumerate(parts):
            sd[f"{hf}.{part}.weight"] = w[i * d : (i + 1) * d].copy()
            # HF's k_proj has no bias; ctranslate2 fills it with zeros when fusing.
            if part != "k_proj":
                sd[f"{hf}.{part}.bias"] = b[i * d : (i + 1) * d].copy()
            elif np.any(b[i * d : (i + 1) * d] != 0):
                log.warning("%s: non-zero key bias dropped (HF Whisper has none)", ct)

    for side in ("encoder", "decoder"):
        hf = f"model.{side}"
        sd[f"{hf}.embed_positions.weight"] = g(f"{side}/position_encodings/encodings")
        norm(f"{hf}.layer_norm", f"{side}/layer_norm")
        for i in range(_count_layers(model, side)):
            ct, hl = f"{side}/layer_{i}", f"{hf}.layers.{i}"
            fused(f"{hl}.self_attn", f"{ct}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj"))
            linear(f"{hl}.self_attn.out_proj", f"{ct}/self_attention/linear_1")
            norm(f"{hl}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
            if side == "decoder":
                linear(f"{hl}.encoder_attn.q_proj", f"{ct}/attention/linear_0")
                fused(f"{hl}.encoder_attn", f"{ct}/attention/linear_1", ("k_proj", "v_proj"))
                linear(f"{hl}.encoder_attn.out_proj", f"{ct}/attention/linear_2")
                norm(f"{hl}.encoder_attn_layer_norm", f"{ct}/attention/layer_norm")
            linear(f"{hl}.fc1", f"{ct}/ffn/linear_0")
            linear(f"{hl}.fc2", f"{ct}/ffn/linear_1")
            norm(f"{hl}.final_layer_norm", f"{ct}/ffn/layer_norm")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    sd["model.decoder.embed_tokens.weight"] = g("decoder/embeddings/weight")
    tied = model.aliases.get("decoder/projection/weight") == "decoder/embeddings/weight"
    if not tied:
        sd["proj_out.weight"] = g("decoder/projection/weight")
    return sd, tied


def _source_dtype(model: ct2.CT2Model) -> str:
    weight = model.variables["decoder/embeddings/weight"].dtype
    return {"float16": "float16", "bfloat16": "bfloat16", "float32": "float32"}.get(weight, "float32")


def convert_ct2_to_hf(model_name_or_dir: str | Path, output_dir: str | Path, dtype: str = "auto") -> Path:
    """Write a Hugging Face Whisper model (weights, processor, generation config) from CT2 weights.

    ``dtype`` "auto" keeps float16/float32 weights bit for bit and dequantises int8 ones to float32.
    """
    import torch
    from tokenizers import AddedToken
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    src = resolve_source(model_name_or_dir, "ct2")
    out = Path(output_dir)
    tokenizer_json = src / "tokenizer.json"
    if not tokenizer_json.exists():
        raise ConversionError(f"{src}: no tokenizer.json beside model.bin; copy the model's tokenizer.json there")
    model = ct2.read_model(src)
    if model.spec != "WhisperSpec":
        raise ConversionError(f"{src}: a CTranslate2 {model.spec}, not a Whisper model")
    ct2_config = json.loads((src / "config.json").read_text()) if (src / "config.json").exists() else {}
    tokens = read_special_tokens(tokenizer_json)

    np_dtype = np.dtype(_source_dtype(model) if dtype == "auto" else dtype)
    state, tied = ct2_state_dict(model, np_dtype)
    emb = state["model.decoder.embed_tokens.weight"]
    vocab_size, d_model = emb.shape
    n_mels = state["model.encoder.conv1.weight"].shape[1]
    multilingual = vocab_size >= 51865
    activation = _CT2_ACTIVATIONS.get(_scalar(model, "decoder/activation", 3), "gelu")
    suppress = list(ct2_config.get("suppress_ids", []))
    begin_suppress = list(ct2_config.get("suppress_ids_begin", [220, tokens.eot]))

    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=_count_layers(model, "encoder"),
        decoder_layers=_count_layers(model, "decoder"),
        encoder_attention_heads=_scalar(model, "encoder/num_heads", d_model // 64),
        decoder_attention_heads=_scalar(model, "decoder/num_heads", d_model // 64),
        encoder_ffn_dim=state["model.encoder.layers.0.fc1.weight"].shape[0],
        decoder_ffn_dim=state["model.decoder.layers.0.fc1.weight"].shape[0],
        max_source_positions=state["model.encoder.embed_positions.weight"].shape[0],
        max_target_positions=state["model.decoder.embed_positions.weight"].shape[0],
        activation_function=activation,
        scale_embedding=False,
        tie_word_embeddings=tied,
        pad_token_id=tokens.eot,
        bos_token_id=tokens.eot,
        eos_token_id=tokens.eot,
        decoder_start_token_id=tokens.sot,
        dtype=str(np_dtype),
    )
    with torch.device("meta"):
        hf_model = WhisperForConditionalGeneration(config)
    torch_state = {k: torch.from_numpy(np.array(v)) for k, v in state.items()}
    missing, unexpected = hf_model.load_state_dict(torch_state, strict=False, assign=True)
    missing = [k for k in missing if not (tied and k == "proj_out.weight")]
    if missing or unexpected:
        raise ConversionError(f"{src}: weights do not map onto Whisper (missing {missing[:3]}, extra {unexpected[:3]})")
    if tied:
        hf_model.tie_weights()
    # Buffers built on the meta device (none hold weights) are re-created for real.
    for name, buf in list(hf_model.named_buffers()):
        if buf.is_meta:
            raise ConversionError(f"{src}: buffer {name} was not initialised")

    gen: dict[str, Any] = {
        "alignment_heads": [list(h) for h in ct2_config.get("alignment_heads", [])]
        or [
            [layer, h]
            for layer in range(config.decoder_layers // 2, config.decoder_layers)
            for h in range(config.decoder_attention_heads)
        ],
        "begin_suppress_tokens": begin_suppress,
        "suppress_tokens": suppress,
        "bos_token_id": tokens.eot,
        "eos_token_id": tokens.eot,
        "pad_token_id": tokens.eot,
        "decoder_start_token_id": tokens.sot,
        "no_timestamps_token_id": tokens.notimestamps,
        "prev_sot_token_id": tokens.startofprev,
        "is_multilingual": multilingual,
        "max_initial_timestamp_index": 50,
        "max_length": config.max_target_positions,
        "return_timestamps": False,
    }
    if multilingual:
        # Language detection needs lang_to_id; an English-only model must not have it (generate would detect).
        gen["lang_to_id"] = tokens.languages
        gen["task_to_id"] = {"translate": tokens.translate, "transcribe": tokens.transcribe}
    generation_config = GenerationConfig(**gen)
    hf_model.generation_config = generation_config

    tokenizer = WhisperTokenizer(tokenizer_file=str(tokenizer_json), extra_special_tokens=tokens.specials)
    # Timestamp tokens are not in CT2's tokenizer.json. Added as plain (non-special) tokens they keep
    # ids notimestamps+1.. and all_special_ids[-1] stays <|notimestamps|>, which the HF tokenizer uses as
    # the timestamp origin in _decode_with_timestamps.
    n_timestamps = vocab_size - len(tokenizer)
    if n_timestamps > 0:
        tokenizer.add_tokens(
            [AddedToken(f"<|{i * 0.02:.2f}|>", special=False, normalized=False) for i in range(n_timestamps)]
        )
    if len(tokenizer) != vocab_size or tokenizer.convert_tokens_to_ids("<|0.00|>") != tokens.timestamp_begin:
        raise ConversionError(f"{src}: tokenizer has {len(tokenizer)} tokens but the model {vocab_size}")
    processor = WhisperProcessor(feature_extractor=WhisperFeatureExtractor(feature_size=n_mels), tokenizer=tokenizer)

    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=_parent(out)))
    try:
        with quiet_transformers():
            hf_model.save_pretrained(tmp, safe_serialization=True)
        processor.save_pretrained(tmp)
        # transformers 5 folds the feature extractor into processor_config.json; faster-whisper, the CT2
        # converter's copy list and older transformers read preprocessor_config.json.
        processor.feature_extractor.save_pretrained(tmp)
        generation_config.save_pretrained(tmp)
        _replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote Hugging Face Whisper (%s, %s) to %s", config.dtype, "tied" if tied else "untied", out)
    return out


def _parent(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out.parent


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move ``tmp`` to ``out``: a half-written model never sits under the final name."""
    # mkdtemp (and some writers) create owner-only modes; a model directory is meant to be shared.
    tmp.chmod(0o755)
    for f in tmp.rglob("*"):
        f.chmod(0o755 if f.is_dir() else 0o644)
    if out.exists():
        if not out.is_dir():
            raise ConversionError(f"--output {out}: exists and is not a directory")
        shutil.rmtree(out)
    tmp.rename(out)


def convert_hf_to_ct2(hf_dir: str | Path, output_dir: str | Path, quantization: str = "float16") -> Path:
    """CTranslate2 model from a Hugging Face Whisper directory, through ctranslate2's own converter."""
    from ctranslate2.converters import TransformersConverter

    if quantization not in QUANTIZATIONS:
        raise ConversionError(f"--quantization {quantization}: use one of {', '.join(QUANTIZATIONS)}")
    src = resolve_source(hf_dir, "hf")
    out = Path(output_dir)
    if not (src / "preprocessor_config.json").exists():
        # faster-whisper reads n_mels from it and falls back to the hub without it.
        from transformers import WhisperFeatureExtractor

        cfg = json.loads((src / "config.json").read_text())
        WhisperFeatureExtractor(feature_size=cfg.get("num_mel_bins", 80)).save_pretrained(src)
    copy = [f for f in ("tokenizer.json", "preprocessor_config.json") if (src / f).exists()]
    if "tokenizer.json" not in copy:
        raise ConversionError(f"{src}: no tokenizer.json; save the WhisperProcessor/tokenizer into it first")
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=_parent(out)))
    try:
        converter = TransformersConverter(str(src), copy_files=copy)
        with quiet_transformers():
            converter.convert(str(tmp / "model"), quantization=quantization, force=True)
        _replace_dir(tmp / "model", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote CTranslate2 Whisper (%s) to %s", quantization, out)
    return out


def cached_ct2(hf_dir: str | Path, quantization: str = "float16") -> Path:
    """A CTranslate2 copy of ``hf_dir``, converted once and kept in the cache until the weights change."""
    import hashlib
    import os

    from whisperops.paths import cache_dir

    src = Path(hf_dir).resolve()
    stamp = [str(src), quantization]
    for f in sorted(src.iterdir()):
        if f.is_file() and f.suffix in (".json", ".safetensors", ".bin"):
            st = f.stat()
            stamp.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    key = hashlib.sha256("\n".join(stamp).encode()).hexdigest()[:16]
    target = cache_dir() / "models" / "ct2-from-hf" / f"{src.name}-{key}"
    if (target / "model.bin").exists():
        return target
    log.info("converting %s to CTranslate2 (once) into %s", src, target)
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    convert_hf_to_ct2(src, staging, quantization=quantization)
    try:
        staging.rename(target)
    except OSError:
        # Another worker finished the same conversion first; its copy is identical.
        shutil.rmtree(staging, ignore_errors=True)
        if not (target / "model.bin").exists():
            raise
    return target
