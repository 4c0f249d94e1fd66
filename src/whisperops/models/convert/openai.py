"""Hugging Face Whisper -> openai-whisper checkpoint (``{"dims", "model_state_dict"}``)."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisperops.models.convert.common import ConversionError

log = logging.getLogger(__name__)

# HF module names -> openai-whisper's, applied to the part after the layer index.
_LAYER_PARTS = {
    "self_attn.q_proj": "attn.query",
    "self_attn.k_proj": "attn.key",
    "self_attn.v_proj": "attn.value",
    "self_attn.out_proj": "attn.out",
    "self_attn_layer_norm": "attn_ln",
    "encoder_attn.q_proj": "cross_attn.query",
    "encoder_attn.k_proj": "cross_attn.key",
    "encoder_attn.v_proj": "cross_attn.value",
    "encoder_attn.out_proj": "cross_attn.out",
    "encoder_attn_layer_norm": "cross_attn_ln",
    "fc1": "mlp.0",
    "fc2": "mlp.2",
    "final_layer_norm": "mlp_ln",
}
_TOP = {
    "model.encoder.conv1": "encoder.conv1",
    "model.encoder.conv2": "encoder.conv2",
    "model.encoder.embed_positions.weight": "encoder.positional_embedding",
    "model.encoder.layer_norm": "encoder.ln_post",
    "model.decoder.embed_tokens.weight": "decoder.token_embedding.weight",
    "model.decoder.embed_positions.weight": "decoder.positional_embedding",
    "model.decoder.layer_norm": "decoder.ln",
}
_LAYER = re.compile(r"^model\.(encoder|decoder)\.layers\.(\d+)\.(.+)\.(weight|bias)$")


@dataclass
class HFWhisper:
    """A Hugging Face Whisper directory's weights (numpy, as stored) and config."""

    path: Path
    state: dict[str, np.ndarray]
    config: dict

    @classmethod
    def load(cls, path: Path) -> HFWhisper:
        from safetensors.numpy import load_file

        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise ConversionError(f"{path}: no *.safetensors weights (save the model with safe_serialization=True)")
        state: dict[str, np.ndarray] = {}
        for f in files:
            state.update(load_file(f))
        return cls(path, state, json.loads((path / "config.json").read_text()))

    def dims(self) -> dict[str, int]:
        c = self.config
        return {
            "n_mels": c["num_mel_bins"],
            "n_audio_ctx": c["max_source_positions"],
            "n_audio_state": c["d_model"],
            "n_audio_head": c["encoder_attention_heads"],
            "n_audio_layer": c["encoder_layers"],
            "n_vocab": c["vocab_size"],
            "n_text_ctx": c["max_target_positions"],
            "n_text_state": c["d_model"],
            "n_text_head": c["decoder_attention_heads"],
            "n_text_layer": c["decoder_layers"],
        }


def openai_state_dict(hf: HFWhisper) -> dict[str, np.ndarray]:
    """openai-whisper names for ``hf``'s weights; openai-whisper always ties the output projection."""
    out: dict[str, np.ndarray] = {}
    emb = hf.state["model.decoder.embed_tokens.weight"]
    proj = hf.state.get("proj_out.weight")
    if proj is not None and not np.array_equal(proj, emb):
        raise ConversionError(f"{hf.path}: output projection is not tied to the embeddings; openai-whisper needs tied")
    for name, value in hf.state.items():
        if name == "proj_out.weight":
            continue
        if m := _LAYER.match(name):
            side, i, part, kind = m.groups()
            if part not in _LAYER_PARTS:
                raise ConversionError(f"{hf.path}: unexpected weight {name}")
            out[f"{side}.blocks.{i}.{_LAYER_PARTS[part]}.{kind}"] = value
            continue
        for prefix, target in _TOP.items():
            if name == prefix or name.startswith(prefix + "."):
                out[target + name[len(prefix) :]] = value
                break
        else:
            raise ConversionError(f"{hf.path}: unexpected weight {name}")
    return out


def convert_hf_to_openai(hf_dir: Path, output_dir: Path, filename: str = "model.pt") -> Path:
    """Write ``output_dir/filename``, loadable with ``whisper.load_model(path)``; returns the file."""
    import torch

    hf = HFWhisper.load(hf_dir)
    state = {k: torch.from_numpy(np.array(v)) for k, v in openai_state_dict(hf).items()}
    output_dir.mkdir(parents=True, exist_ok=True)
    target = output_dir / filename
    tmp = target.with_name(f".{filename}.tmp")
    torch.save({"dims": hf.dims(), "model_state_dict": state}, tmp)
    tmp.replace(target)
    log.info("wrote openai-whisper checkpoint %s", target)
    return target
