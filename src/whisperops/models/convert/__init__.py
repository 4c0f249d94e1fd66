"""Convert Whisper weights between runtimes: CTranslate2, Hugging Face, openai-whisper and whisper.cpp.

CTranslate2 float16 weights are what ships offline; fine-tuning needs Hugging Face (PyTorch) weights and
deployment may want any runtime. Every converter takes a registry name or a directory. Hugging Face is
the hub format: CT2 sources go through a temporary HF copy for the openai and ggml targets.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisperops.config import setting
from whisperops.models import registry
from whisperops.models.convert.common import ConversionError, resolve_source

log = logging.getLogger(__name__)

TARGETS = ("hf", "ct2", "openai", "ggml")


@dataclass
class ConvertOptions:
    """How :func:`convert` writes and registers its result (``whisperops convert``'s options)."""

    quantization: str = setting("float16", help="ct2: float16, int8, ...; hf: float16 (as stored) or float32.")
    name: str | None = setting(None, help="Register the result under this name (default: the output folder's name).")


__all__ = [
    "QUANTIZATIONS",
    "TARGETS",
    "ConversionError",
    "ConvertOptions",
    "cached_ct2",
    "convert",
    "convert_ct2_to_hf",
    "convert_hf_to_ct2",
    "convert_to_ggml",
    "convert_to_openai",
    "resolve_source",
]


# The Hugging Face converters (numpy, and torch when they run) load on first use, so the CLI can
# import ConvertOptions for its defaults without them.
_HF_NAMES = ("QUANTIZATIONS", "cached_ct2", "convert_ct2_to_hf", "convert_hf_to_ct2")


def __getattr__(name: str) -> Any:
    if name in _HF_NAMES:
        from whisperops.models.convert import hf

        return getattr(hf, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_HF_NAMES])


def _source(model: str | Path) -> tuple[Path, str]:
    path = registry.resolve(model)
    fmt = registry.detect_format(path)
    if fmt not in ("ct2", "hf"):
        raise ConversionError(f"model {str(model)!r} at {path}: neither CTranslate2 nor Hugging Face weights")
    return path, fmt


def _with_hf(model: str | Path, work: Path) -> Path:
    """An HF directory for ``model``: itself, or a conversion of its CT2 weights into ``work``."""
    from whisperops.models.convert.hf import convert_ct2_to_hf

    path, fmt = _source(model)
    return path if fmt == "hf" else convert_ct2_to_hf(path, work / "hf")


def convert_to_openai(model: str | Path, output_dir: str | Path) -> Path:
    """openai-whisper checkpoint ``output_dir/model.pt`` (``whisper.load_model(path)``); returns the file."""
    from whisperops.models.convert.openai import convert_hf_to_openai

    with tempfile.TemporaryDirectory(prefix="whisperops-convert-") as work:
        return convert_hf_to_openai(_with_hf(model, Path(work)), Path(output_dir))


def convert_to_ggml(model: str | Path, output_dir: str | Path) -> Path:
    """whisper.cpp model ``output_dir/ggml-model.bin`` (float16 matrices); returns the file."""
    from whisperops.models.convert.ggml import convert_hf_to_ggml

    with tempfile.TemporaryDirectory(prefix="whisperops-convert-") as work:
        return convert_hf_to_ggml(_with_hf(model, Path(work)), Path(output_dir))


def convert(
    model: str | Path,
    to: str,
    output_dir: str | Path,
    quantization: str = ConvertOptions.quantization,
    name: str | None = ConvertOptions.name,
) -> Path:
    """Convert ``model`` to runtime ``to`` in ``output_dir`` and register it as ``name`` (default: the
    directory's name). Returns the directory (hf, ct2) or file (openai, ggml) written.

    ``quantization`` applies to ``--to ct2`` (float16, int8, ...); for ``--to hf`` only float16 and
    float32 are meaningful (int8 sources are dequantised to float32 unless float16 is asked for).
    """
    from whisperops.models.convert.hf import QUANTIZATIONS, convert_ct2_to_hf, convert_hf_to_ct2

    if to not in TARGETS:
        raise ConversionError(f"--to {to}: use one of {', '.join(TARGETS)}")
    if quantization not in QUANTIZATIONS:
        raise ConversionError(f"--quantization {quantization}: use one of {', '.join(QUANTIZATIONS)}")
    out = Path(output_dir)
    path, fmt = _source(model)
    if path.resolve() == out.resolve():
        raise ConversionError(f"--output {out}: is the source model itself; choose another directory")
    if to == "hf":
        if fmt == "hf":
            raise ConversionError(f"model {str(model)!r} is already in Hugging Face format")
        dtype = quantization if quantization in ("float16", "float32") else "auto"
        result = convert_ct2_to_hf(path, out, dtype="auto" if quantization == "float16" else dtype)
    elif to == "ct2":
        if fmt == "hf":
            result = convert_hf_to_ct2(path, out, quantization=quantization)
        else:
            # Re-quantising a CT2 model (e.g. float16 -> int8) goes through exact HF weights.
            with tempfile.TemporaryDirectory(prefix="whisperops-convert-") as work:
                result = convert_hf_to_ct2(convert_ct2_to_hf(path, Path(work) / "hf"), out, quantization)
    elif to == "openai":
        result = convert_to_openai(path, out)
    else:
        result = convert_to_ggml(path, out)
    reg_name = name or out.resolve().name
    try:
        registry.register(reg_name, out)
    except ValueError as err:
        raise ConversionError(f"--name {reg_name}: {err}") from err
    log.info("registered %s -> %s", reg_name, out)
    return result
