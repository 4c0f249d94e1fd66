"""Checks of a transcription run's options, made before any model loads, task starts or file is read.

``whisperops transcribe`` (both paths) and the flow's ``start`` step call these, so a bad option is
one :class:`~whisperops.errors.OptionError` line naming the option and the fix (exit 2), not a
traceback per item after the batch has run. Nothing here loads weights: what a model can do is read
from its files (:func:`whisperops.models.registry.is_multilingual`).
"""

from __future__ import annotations

import os
from pathlib import Path

from whisperops.errors import OptionError

DEVICES = ("auto", "cpu", "cuda")
# Every compute type CTranslate2 names; which of them a device supports is asked of CTranslate2.
COMPUTE_TYPES = (
    "auto",
    "default",
    "int8",
    "int8_float32",
    "int8_float16",
    "int8_bfloat16",
    "int16",
    "float16",
    "bfloat16",
    "float32",
)


def check_count(flag: str, value: int, meaning_of_zero: str) -> None:
    """A count option (``--threads``, ``--workers``, ``--shard-size``) is 0 or more."""
    if value < 0:
        raise OptionError(f"{flag} {value}: must be 0 ({meaning_of_zero}) or more")


def check_device(device: str, compute_type: str) -> tuple[str, str]:
    """``(device, compute type)`` as the engine will pick them, or the one line saying why not."""
    import ctranslate2

    from whisperops.engine import pick_compute_type, pick_device

    if device not in DEVICES:
        raise OptionError(f"--device {device}: unknown device; use {', '.join(DEVICES)}")
    if device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        raise OptionError("--device cuda: no CUDA GPU is visible here; use --device cpu (or auto)")
    if compute_type not in COMPUTE_TYPES:
        known = ", ".join(COMPUTE_TYPES[2:])
        raise OptionError(f"--compute-type {compute_type}: unknown type; use auto or one of {known}")
    picked_device = pick_device(device)
    picked_type = pick_compute_type(picked_device, compute_type)
    supported = sorted(ctranslate2.get_supported_compute_types(picked_device))
    if picked_type not in ("default", *supported):
        raise OptionError(
            f"--compute-type {compute_type}: not supported on {picked_device}; "
            f"use auto or one of {', '.join(supported)}"
        )
    return picked_device, picked_type


def check_model_task(model: str, model_path: Path, language: str | None, task: str) -> None:
    """An English-only model neither translates nor transcribes another language."""
    from whisperops.models import registry

    if language in (None, "en") and task != "translate":
        return
    if registry.is_multilingual(model_path) is not False:
        return
    if task == "translate":
        raise OptionError(
            f"--task translate: model {model!r} is English-only; use a multilingual model (e.g. --model base)"
        )
    raise OptionError(
        f"--language {language}: model {model!r} is English-only; use --language en (or auto), "
        "or a multilingual model (e.g. --model base)"
    )


def check_weights(model_path: Path) -> None:
    """CTranslate2 weights whose header reads: a damaged ``model.bin`` is one line naming it."""
    from whisperops.models import registry

    if registry.detect_format(model_path) == "ct2":
        registry.read_weights_header(model_path)


def check_output_dir(path: Path, flag: str = "--output-dir") -> None:
    """``path`` is (or can be made) a folder we can write to: checked before any item is decoded."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OptionError(f"{flag} {path}: is a file, not a folder; choose a folder for the outputs")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".whisperops-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise OptionError(
            f"{flag} {path}: not writable ({err.strerror or err}); choose a folder you can write to"
        ) from err


def check_run(
    model: str,
    device: str,
    compute_type: str,
    threads: int,
    language: str | None,
    task: str,
) -> tuple[Path, str, str]:
    """Every check a run needs before its first task: ``(model path, device, compute type)``."""
    from whisperops.models import registry

    check_count("--threads", threads, "automatic")
    picked_device, picked_type = check_device(device, compute_type)
    model_path = registry.resolve(model)
    check_weights(model_path)
    check_model_task(model, model_path, language, task)
    return model_path, picked_device, picked_type


__all__ = [
    "COMPUTE_TYPES",
    "DEVICES",
    "check_count",
    "check_device",
    "check_model_task",
    "check_output_dir",
    "check_run",
    "check_weights",
]
