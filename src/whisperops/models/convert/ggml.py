"""Hugging Face Whisper -> whisper.cpp's ggml file, in the layout of whisper.cpp's convert-pt-to-ggml.py.

Little-endian int32 header (magic ``ggml``, the ten model dims, n_mels again... see :func:`write_ggml`),
the mel filter bank, the byte-level BPE vocabulary as raw bytes, then per tensor ``n_dims``, name
length, ftype, dims innermost first, name, data. Matrices are float16, vectors and the positional
embeddings float32, as whisper.cpp expects.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import numpy as np

from whisperops.models.convert.common import ConversionError
from whisperops.models.convert.openai import HFWhisper, openai_state_dict

log = logging.getLogger(__name__)

GGML_MAGIC = 0x67676D6C
_F32_ALWAYS = {
    "encoder.conv1.bias",
    "encoder.conv2.bias",
    "encoder.positional_embedding",
    "decoder.positional_embedding",
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte <-> printable-character table (byte-level BPE)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def vocab_bytes(tokenizer_json: Path) -> list[bytes]:
    """The BPE tokens (special tokens excluded) as raw bytes, in id order from 0."""
    data = json.loads(tokenizer_json.read_text())
    added = {a["content"] for a in data.get("added_tokens", [])}
    decoder = {c: b for b, c in _bytes_to_unicode().items()}
    vocab = sorted((i, t) for t, i in data["model"]["vocab"].items() if t not in added)
    if [i for i, _ in vocab] != list(range(len(vocab))):
        raise ConversionError(f"{tokenizer_json}: BPE ids are not contiguous from 0; not a Whisper vocabulary")
    try:
        return [bytes(decoder[c] for c in t) for _, t in vocab]
    except KeyError as err:
        raise ConversionError(f"{tokenizer_json}: not a byte-level BPE vocabulary ({err})") from err


def mel_filters(n_mels: int) -> np.ndarray:
    """Slaney-scale mel filters [n_mels, 201], the same bank as openai-whisper's mel_filters.npz."""
    from transformers import WhisperFeatureExtractor

    return np.ascontiguousarray(WhisperFeatureExtractor(feature_size=n_mels).mel_filters.T.astype(np.float32))


def write_ggml(hf: HFWhisper, target: Path, use_f16: bool = True) -> Path:
    dims = hf.dims()
    tokens = vocab_bytes(hf.path / "tokenizer.json")
    filters = mel_filters(dims["n_mels"])
    state = openai_state_dict(hf)
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("wb") as f:
        order = ("n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer")
        order += ("n_text_ctx", "n_text_state", "n_text_head", "n_text_layer", "n_mels")
        f.write(struct.pack("<i", GGML_MAGIC))
        f.write(struct.pack("<10i", *(dims[k] for k in order)))
        f.write(struct.pack("<i", int(use_f16)))
        f.write(struct.pack("<ii", *filters.shape))
        f.write(filters.astype("<f4").tobytes())
        f.write(struct.pack("<i", len(tokens)))
        for tok in tokens:
            f.write(struct.pack("<i", len(tok)))
            f.write(tok)
        for name, value in state.items():
            data = np.squeeze(value)
            if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
                data = data.reshape(data.shape[0], 1)
            f16 = use_f16 and data.ndim >= 2 and name not in _F32_ALWAYS
            data = data.astype("<f2" if f16 else "<f4")
            raw = name.encode()
            f.write(struct.pack("<iii", data.ndim, len(raw), int(f16)))
            f.write(struct.pack(f"<{data.ndim}i", *reversed(data.shape)))
            f.write(raw)
            f.write(np.ascontiguousarray(data).tobytes())
    tmp.replace(target)
    return target


def convert_hf_to_ggml(hf_dir: Path, output_dir: Path, filename: str = "ggml-model.bin") -> Path:
    """Write ``output_dir/filename`` for whisper.cpp (and pywhispercpp); returns the file."""
    output_dir.mkdir(parents=True, exist_ok=True)
    target = write_ggml(HFWhisper.load(hf_dir), output_dir / filename)
    log.info("wrote whisper.cpp model %s", target)
    return target
