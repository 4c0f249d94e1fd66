"""whisperops: run OpenAI Whisper in production.

The package is laid out by the stage data flows through::

    sources -> audio -> engine -> results / writers -> flows -> evaluation -> training -> serving

with ``models`` (registry, formats, conversion) underneath all of them. Heavy libraries
(ctranslate2, torch, transformers, ray) are imported inside the functions that need them, so
importing this package and ``whisperops --help`` stay fast.

The names most programs need are importable from here, loaded on first use::

    from whisperops import Engine, DecodeOptions, Transcript
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it; imported on first access (PEP 562), so ``import whisperops``
# costs nothing beyond this file.
_LAZY = {
    "DecodeOptions": "whisperops.engine",
    "Engine": "whisperops.engine",
    "EngineConfig": "whisperops.engine",
    "Segment": "whisperops.results",
    "Transcript": "whisperops.results",
    "Word": "whisperops.results",
    "write_all": "whisperops.writers",
    "WhisperOpsError": "whisperops.errors",
}

if TYPE_CHECKING:
    from whisperops.engine import DecodeOptions, Engine, EngineConfig
    from whisperops.errors import WhisperOpsError
    from whisperops.results import Segment, Transcript, Word
    from whisperops.writers import write_all


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'whisperops' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "DecodeOptions",
    "Engine",
    "EngineConfig",
    "Segment",
    "Transcript",
    "WhisperOpsError",
    "Word",
    "__version__",
    "write_all",
]
