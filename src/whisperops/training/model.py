"""PyTorch Whisper for training: weights from the registry, LoRA, frozen encoder, and export back to CT2."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from whisperops.errors import WhisperOpsError
from whisperops.models import registry
from whisperops.paths import cache_dir

log = logging.getLogger(__name__)

PROCESSOR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "processor_config.json",
    "preprocessor_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "normalizer.json",
)


class ExportError(WhisperOpsError):
    """A checkpoint cannot be exported to CTranslate2 or registered."""


def hf_model_dir(model: str) -> Path:
    """Hugging Face weights for ``model`` (a registry name or directory), converting CT2 ones once.

    The bundled weights are CTranslate2 float16; training needs float32 PyTorch weights, which the
    converter writes into the cache, keyed by the source's path and size so a new install converts again.
    """
    path = registry.resolve(model)
    fmt = registry.detect_format(path)
    if fmt == "hf":
        return path
    from whisperops.models.convert import convert_ct2_to_hf

    st = (path / "model.bin").stat()
    key = hashlib.sha256(f"{path.resolve()}\x00{st.st_size}\x00{st.st_mtime_ns}".encode()).hexdigest()[:16]
    out = cache_dir() / "training" / "hf" / f"{Path(str(model)).name}-{key}"
    if (out / "config.json").exists():
        return out
    log.info("converting %s to PyTorch weights in %s (once)", model, out)
    return convert_ct2_to_hf(path, out, dtype="float32")


def copy_processor(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in (*PROCESSOR_FILES, "generation_config.json"):
        if (src / name).exists() and not (dst / name).exists():
            shutil.copy2(src / name, dst / name)


def make_tiny_random(output: str | Path, base: str = "tiny.en", d_model: int = 64, layers: int = 2) -> Path:
    """A randomly initialised Whisper with ``base``'s tokenizer, processor and generation config.

    Small enough (about 3.5 M parameters, mostly the shared vocabulary embedding) that a real Ray Train
    run with two workers takes seconds on a CPU: the fixture for plumbing, failure and benchmark tests.
    """
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    src = hf_model_dir(base)
    cfg = json.loads((src / "config.json").read_text())
    config = WhisperConfig(
        vocab_size=cfg["vocab_size"],
        num_mel_bins=cfg.get("num_mel_bins", 80),
        d_model=d_model,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=d_model * 2,
        decoder_ffn_dim=d_model * 2,
        max_source_positions=cfg.get("max_source_positions", 1500),
        max_target_positions=cfg.get("max_target_positions", 448),
        pad_token_id=cfg["pad_token_id"],
        bos_token_id=cfg["bos_token_id"],
        eos_token_id=cfg["eos_token_id"],
        decoder_start_token_id=cfg["decoder_start_token_id"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config)
    out = Path(output)
    model.save_pretrained(out, safe_serialization=True)
    copy_processor(src, out)
    gen = json.loads((out / "generation_config.json").read_text())
    # The base's alignment heads name layers this model does not have.
    gen["alignment_heads"] = [[layers - 1, 0]]
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2))
    return out


def load_for_training(
    model_dir: Path,
    *,
    lora: bool = False,
    lora_rank: int = 8,
    freeze_encoder: bool = False,
    freeze_embeddings: bool = False,
    freeze_cross_kv: bool = False,
):
    """``WhisperForConditionalGeneration`` in float32, ready for the Trainer (optionally LoRA-wrapped).

    ``freeze_embeddings`` fixes the token (and output, they are tied) and position embeddings;
    ``freeze_cross_kv`` fixes the decoder's cross-attention key/value projections of the encoder
    output, the largest matrix products of a decoder step over 1500 encoder frames.
    """
    import torch
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    # The collator gives no language/task prompt: forced ids from an old config would double them.
    model.generation_config.forced_decoder_ids = None
    model.config.forced_decoder_ids = None
    if freeze_encoder:
        model.freeze_encoder()
    decoder = model.get_decoder()
    if freeze_embeddings:
        for module in (decoder.embed_tokens, decoder.embed_positions):
            module.requires_grad_(False)
    if freeze_cross_kv:
        for layer in decoder.layers:
            layer.encoder_attn.k_proj.requires_grad_(False)
            layer.encoder_attn.v_proj.requires_grad_(False)
    if lora:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora_rank,
            lora_alpha=2 * lora_rank,
            lora_dropout=0.05,
            target_modules=["q_proj", "v_proj"],
            bias="none",
        )
        model = get_peft_model(model, config)
        trainable, total = model.get_nb_trainable_parameters()
        log.info("LoRA rank %d: %d of %d parameters trainable", lora_rank, trainable, total)
    return model


def load_checkpoint(checkpoint: Path, base_dir: Path):
    """A full float32 model from a Trainer checkpoint; LoRA adapters are merged into the base weights."""
    import torch
    from transformers import WhisperForConditionalGeneration

    if (checkpoint / "adapter_config.json").exists():
        from peft import PeftModel

        base = WhisperForConditionalGeneration.from_pretrained(base_dir, dtype=torch.float32)
        return PeftModel.from_pretrained(base, checkpoint).merge_and_unload()
    return WhisperForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32)


def export_checkpoint(
    checkpoint: Path,
    base_dir: Path,
    output: Path,
    name: str,
    quantizations: tuple[str, ...] = ("float16", "int8"),
) -> dict[str, Any]:
    """Merge (LoRA), save Hugging Face weights, convert to CTranslate2 per quantisation and register.

    ``name`` is registered for the first quantisation, ``name-QUANT`` for the others.
    """
    from whisperops.models.convert import convert_hf_to_ct2

    model = load_checkpoint(checkpoint, base_dir)
    hf_dir = output / "hf"
    if hf_dir.exists():
        shutil.rmtree(hf_dir)
    model.save_pretrained(hf_dir, safe_serialization=True)
    copy_processor(base_dir, hf_dir)
    exported: dict[str, Any] = {"hf": str(hf_dir), "ct2": {}, "registered": {}}
    for i, quant in enumerate(quantizations):
        ct2_dir = convert_hf_to_ct2(hf_dir, output / f"ct2-{quant}", quantization=quant)
        reg_name = name if i == 0 else f"{name}-{quant}"
        try:
            registry.register(reg_name, ct2_dir)
        except ValueError as err:
            raise ExportError(f"--name {name}: {err}") from err
        exported["ct2"][quant] = str(ct2_dir)
        exported["registered"][reg_name] = str(ct2_dir)
        log.info("registered %s -> %s", reg_name, ct2_dir)
    return exported
