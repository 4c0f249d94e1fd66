"""whisperops: run OpenAI Whisper in production.

The package is laid out by the stage data flows through::

    sources -> audio -> engine -> results / writers -> flows -> evaluation -> training -> serving

with ``models`` (registry, formats, conversion) underneath all of them. Heavy libraries
(ctranslate2, torch, transformers, ray) are imported inside the functions that need them, so
importing this package and ``whisperops --help`` stay fast.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
