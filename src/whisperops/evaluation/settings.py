"""What an evaluation decodes and measures with: one dataclass for the CLI, the flow and ``compare``.

Its own module, free of the dataset and scoring code, so that ``whisperops --help`` can build the
``evaluate`` options from it cheaply (as ``serving.settings`` does for ``serve``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from whisperops.config import same_as, setting
from whisperops.engine import DecodeOptions, EngineConfig


@dataclass
class EvalSettings:
    """Decoding and measuring settings shared by every model in a comparison.

    Decoding settings repeat :class:`~whisperops.engine.DecodeOptions` and
    :class:`~whisperops.engine.EngineConfig` except where an evaluation differs on purpose: VAD is
    off and windows are decoded one at a time, as in bare faster-whisper, so the numbers compare with it.
    """

    beam_size: int = same_as(DecodeOptions, "beam_size")
    language: str | None = setting(None, help="Force a language (default: each row's, else detected).")
    vad_filter: bool = setting(False, help="Silero VAD before decoding (off, like bare faster-whisper).")
    batch_size: int = setting(
        0, help="0: one window at a time, as bare faster-whisper decodes (so the numbers compare); > 1: batched."
    )
    compute_type: str = same_as(EngineConfig, "compute_type")
    device: str = same_as(EngineConfig, "device")
    cpu_threads: int = same_as(EngineConfig, "cpu_threads")
    normalize: bool = setting(True, help="Whisper's text normaliser before scoring.")
    isolate: bool = setting(True, help="Each model in a fresh process, so its peak memory is its own.")
    condition_on_previous_text: bool = same_as(DecodeOptions, "condition_on_previous_text")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


__all__ = ["EvalSettings"]
