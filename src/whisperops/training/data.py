"""Datasets for fine-tuning: manifests -> Hugging Face ``datasets`` with log-mel features and labels.

Rows come from :func:`whisperops.data.manifest.load_dataset` (JSONL manifest, audiofolder CSV or a
folder of audio + .txt, the same layouts ``whisperops evaluate`` reads). Each clip is decoded and
resampled to 16 kHz once; clips over 30 s (Whisper's window) and labels over 448 tokens (its
decoder length) are dropped with a count in the log. The prepared split (``input_features`` as
float16 log-mels, ``labels`` token ids) is saved under the cache, keyed by the rows, the audio files'
sizes and times and the processor, so a second run loads it in seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from whisperops.data.manifest import Dataset as Rows
from whisperops.errors import EXIT_USAGE, WhisperOpsError
from whisperops.paths import cache_dir
from whisperops.training.config import MAX_AUDIO_S, MAX_LABEL_TOKENS

log = logging.getLogger(__name__)

FEATURES_VERSION = 1  # bump when the prepared columns change


class TrainingDataError(WhisperOpsError):
    """A training or evaluation dataset cannot be used for fine-tuning."""

    exit_code = EXIT_USAGE


@dataclass
class PreparedSplit:
    path: Path  # datasets.save_to_disk folder
    rows: int
    dropped_long_audio: int
    dropped_long_labels: int
    max_label_tokens: int
    audio_s: float

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


def _fingerprint(rows: Rows, processor_dir: Path) -> str:
    h = hashlib.sha256(f"v{FEATURES_VERSION}".encode())
    for name in ("preprocessor_config.json", "tokenizer.json"):
        f = processor_dir / name
        if f.exists():
            h.update(f.read_bytes())
    for u in rows:
        st = u.audio.stat()
        h.update(json.dumps([str(u.audio), u.text, st.st_size, st.st_mtime_ns]).encode())
    return h.hexdigest()[:24]


def prepare_split(
    rows: Rows,
    processor_dir: Path,
    name: str,
    *,
    cache: Path | None = None,
    max_audio_s: float = MAX_AUDIO_S,
    max_label_tokens: int = MAX_LABEL_TOKENS,
) -> PreparedSplit:
    """Decode, resample, filter, featurise and tokenise ``rows`` once; return the saved split."""
    import datasets
    from transformers import WhisperFeatureExtractor, WhisperTokenizer

    root = (cache or cache_dir() / "training" / "features") / f"{name}-{_fingerprint(rows, processor_dir)}"
    meta_file = root / "whisperops.json"
    if meta_file.exists():
        meta = json.loads(meta_file.read_text())
        log.info("%s: %d prepared clips from cache %s", name, meta["rows"], root)
        return PreparedSplit(path=root / "data", **{k: v for k, v in meta.items() if k != "path"})

    from whisperops.audio import SAMPLE_RATE, load_audio

    extractor = WhisperFeatureExtractor.from_pretrained(processor_dir)
    tokenizer = WhisperTokenizer.from_pretrained(processor_dir)
    counts = {"long_audio": 0, "long_labels": 0, "audio_s": 0.0, "max_label": 0}

    def featurise(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"input_features": [], "labels": [], "text": [], "id": [], "duration_s": []}
        for audio_path, text, uid in zip(batch["audio"], batch["text"], batch["id"], strict=True):
            audio = load_audio(audio_path)
            duration = audio.size / SAMPLE_RATE
            if duration > max_audio_s:
                counts["long_audio"] += 1
                continue
            labels = tokenizer(text).input_ids
            if len(labels) > max_label_tokens:
                counts["long_labels"] += 1
                continue
            feats = extractor(audio, sampling_rate=SAMPLE_RATE, return_tensors="np").input_features[0]
            out["input_features"].append(feats.astype(np.float16))
            out["labels"].append(labels)
            out["text"].append(text)
            out["id"].append(uid)
            out["duration_s"].append(duration)
            counts["audio_s"] += duration
            counts["max_label"] = max(counts["max_label"], len(labels))
        return out

    source = datasets.Dataset.from_dict(
        {"audio": [str(u.audio) for u in rows], "text": [u.text for u in rows], "id": [u.id for u in rows]}
    )
    features = datasets.Features(
        {
            "input_features": datasets.Array2D(
                shape=(extractor.feature_size, extractor.nb_max_frames), dtype="float16"
            ),
            "labels": datasets.Sequence(datasets.Value("int32")),
            "text": datasets.Value("string"),
            "id": datasets.Value("string"),
            "duration_s": datasets.Value("float32"),
        }
    )
    # Batched map may return fewer rows than it gets: that is how long clips are dropped in one pass.
    prepared = source.map(
        featurise,
        batched=True,
        batch_size=16,
        remove_columns=source.column_names,
        features=features,
        load_from_cache_file=False,
        desc=f"preparing {name}",
    )
    if counts["long_audio"]:
        log.warning("%s: dropped %d clips longer than %.0f s", name, counts["long_audio"], max_audio_s)
    if counts["long_labels"]:
        log.warning("%s: dropped %d clips whose labels exceed %d tokens", name, counts["long_labels"], max_label_tokens)
    if len(prepared) == 0:
        raise TrainingDataError(
            f"{rows.source}: every clip was dropped (over {max_audio_s:.0f} s or {max_label_tokens} label tokens); "
            "cut the audio into shorter clips"
        )
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    prepared.save_to_disk(str(tmp / "data"))
    split = PreparedSplit(
        path=root / "data",
        rows=len(prepared),
        dropped_long_audio=counts["long_audio"],
        dropped_long_labels=counts["long_labels"],
        max_label_tokens=counts["max_label"],
        audio_s=round(counts["audio_s"], 3),
    )
    (tmp / "whisperops.json").write_text(json.dumps({k: v for k, v in split.to_dict().items() if k != "path"}))
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    log.info("%s: %d clips prepared (%.0f s of audio) into %s", name, split.rows, split.audio_s, root)
    return split


@dataclass
class SpeechCollator:
    """Pad a batch for Whisper: float32 log-mels, labels padded with -100 (ignored by the loss).

    The tokenizer puts ``<|startoftranscript|>`` first; the model prepends ``decoder_start_token_id``
    itself when it shifts labels right, so a leading start token is cut here rather than learned twice.
    """

    decoder_start_token_id: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        if "encoder_outputs" in features[0]:
            # Cached frozen-encoder outputs (see encode_split): the model skips its encoder.
            from transformers.modeling_outputs import BaseModelOutput

            hidden = torch.from_numpy(np.stack([np.asarray(f["encoder_outputs"], dtype=np.float32) for f in features]))
            batch: dict[str, Any] = {"encoder_outputs": BaseModelOutput(last_hidden_state=hidden)}
        else:
            inputs = torch.tensor(np.stack([np.asarray(f["input_features"], dtype=np.float32) for f in features]))
            batch = {"input_features": inputs}
        labels = [list(f["labels"]) for f in features]
        if labels and all(seq and seq[0] == self.decoder_start_token_id for seq in labels):
            labels = [seq[1:] for seq in labels]
        width = max(len(seq) for seq in labels)
        padded = torch.full((len(labels), width), -100, dtype=torch.long)
        for i, seq in enumerate(labels):
            padded[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        batch["labels"] = padded
        return batch


def _model_key(model_dir: Path) -> str:
    """Identity of the weights that encode: path, size and time of each weights file."""
    h = hashlib.sha256(str(model_dir.resolve()).encode())
    for f in sorted(model_dir.glob("*.safetensors")) + sorted(model_dir.glob("*.bin")) + [model_dir / "config.json"]:
        if f.exists():
            st = f.stat()
            h.update(f"{f.name}\x00{st.st_size}\x00{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def encode_split(
    split: PreparedSplit,
    model_dir: Path,
    *,
    batch_size: int = 8,
    threads: int = 0,
) -> PreparedSplit:
    """Run the (frozen) encoder once per clip; save ``encoder_outputs`` with the labels beside the split.

    With ``--freeze-encoder`` the encoder's output for a clip never changes during training, yet a
    plain Trainer recomputes it at every step and every evaluation: on a CPU that is most of the
    time of a step. Encoding each clip once turns every later step into decoder-only work. The
    outputs are float16 (1500 x d_model per clip: 1.1 MB for tiny.en) and keyed by the split and
    the weights, so a second run or a resumed worker reuses them.
    """
    import datasets
    import torch
    from transformers import WhisperForConditionalGeneration

    root = split.path.parent / f"encoded-{_model_key(model_dir)}"
    if (root / "whisperops.json").exists():
        log.info("encoder outputs from cache %s", root)
        return PreparedSplit(path=root / "data", **{k: v for k, v in split.to_dict().items() if k != "path"})

    if threads:
        torch.set_num_threads(threads)
    model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    encoder = model.get_encoder().eval()
    d_model = model.config.d_model
    frames = model.config.max_source_positions
    source = datasets.load_from_disk(str(split.path)).with_format(
        "numpy", columns=["input_features"], output_all_columns=True
    )

    def encode(batch: dict[str, Any]) -> dict[str, Any]:
        feats = torch.from_numpy(np.asarray(batch["input_features"], dtype=np.float32))
        with torch.inference_mode():
            hidden = encoder(feats).last_hidden_state
        return {"encoder_outputs": hidden.to(torch.float16).numpy()}

    features = datasets.Features(
        {
            "labels": datasets.Sequence(datasets.Value("int32")),
            "text": datasets.Value("string"),
            "id": datasets.Value("string"),
            "duration_s": datasets.Value("float32"),
            "encoder_outputs": datasets.Array2D(shape=(frames, d_model), dtype="float16"),
        }
    )
    started = time.perf_counter()
    encoded = source.map(
        encode,
        batched=True,
        batch_size=batch_size,
        remove_columns=["input_features"],
        features=features,
        load_from_cache_file=False,
        desc="encoding",
    )
    tmp = root.with_name(root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    encoded.save_to_disk(str(tmp / "data"))
    (tmp / "whisperops.json").write_text(json.dumps({"model_dir": str(model_dir), "rows": len(encoded)}))
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    log.info("encoded %d clips once in %.0f s into %s", len(encoded), time.perf_counter() - started, root)
    return PreparedSplit(path=root / "data", **{k: v for k, v in split.to_dict().items() if k != "path"})
