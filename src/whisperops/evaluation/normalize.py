"""Whisper's text normalisers, so that WER counts words, not punctuation or spelling variants.

We use the ``whisper-normalizer`` package: a faithful, offline copy of openai/whisper's
``EnglishTextNormalizer`` (numbers, contractions, British -> American spelling from its bundled
``english.json``) and ``BasicTextNormalizer``. transformers has the same code but needs the spelling
map from a hub ``normalizer.json`` that the offline CTranslate2 weights do not ship.

Which normaliser: English for ``en`` (and unknown language, since the bundled models are English);
basic for every other language, split into letters for scripts written without spaces (so a WER
over "words" means a character-level error rate there, as Whisper's paper does).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

# Languages written without spaces between words: score them per grapheme.
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "km", "yue", "bo"})

_WS = re.compile(r"\s+")

Normalizer = Callable[[str], str]


@functools.cache
def english_normalizer() -> Normalizer:
    from whisper_normalizer.english import EnglishTextNormalizer

    return EnglishTextNormalizer()


@functools.cache
def basic_normalizer(split_letters: bool = False) -> Normalizer:
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer(split_letters=split_letters)


def identity_normalizer(text: str) -> str:
    """No normalisation: case and punctuation count as errors; only whitespace is tidied."""
    return _WS.sub(" ", text).strip()


def normalizer_for(language: str | None = "en", enabled: bool = True) -> Normalizer:
    """The normaliser for ``language`` (ISO code; ``None`` means English), or none when ``enabled`` is false."""
    if not enabled:
        return identity_normalizer
    lang = (language or "en").lower().split("-")[0].split("_")[0]
    if lang == "en":
        english = english_normalizer()
        return lambda text: _WS.sub(" ", english(text)).strip()
    basic = basic_normalizer(split_letters=lang in NO_SPACE_LANGUAGES)
    return lambda text: _WS.sub(" ", basic(text)).strip()


def normalize(text: str, language: str | None = "en", enabled: bool = True) -> str:
    """Normalise one transcript the way Whisper's evaluation does (see module docstring)."""
    return normalizer_for(language, enabled)(text)
