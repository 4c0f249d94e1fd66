"""How speech is synthesised: one dataclass for ``whisperops data synth`` and ``synthesize``.

Its own module, free of numpy and the voices, so that ``whisperops --help`` builds the options from
it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

from whisperops.config import setting


@dataclass
class SynthOptions:
    """Which voices and conditions :func:`synthesize` cycles through (``whisperops data synth``'s options)."""

    voices: str = setting("piper:joe", help="Comma list: piper:joe, espeak:en-us, espeak:en-gb...")
    augment: str = setting(
        "clean", help="Comma list of conditions: clean, speed:F, noise:SNR_DB, telephone; chain with +."
    )
    seed: int = setting(0, help="Seed for noise and prosody (same seed, same clips).")


__all__ = ["SynthOptions"]
