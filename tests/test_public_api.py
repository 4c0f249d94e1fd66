"""The package's front door: ``from whisperops import Engine, DecodeOptions, Transcript``, loaded lazily."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env).stdout


def test_top_level_names_are_the_modules_own():
    import whisperops
    from whisperops import DecodeOptions, Engine, Transcript
    from whisperops.engine import DecodeOptions as D
    from whisperops.engine import Engine as E
    from whisperops.results import Transcript as T

    assert (Engine, DecodeOptions, Transcript) == (E, D, T)
    assert set(whisperops.__all__) <= set(dir(whisperops))
    for name in whisperops.__all__:
        assert getattr(whisperops, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Enigne'"):
        whisperops.Enigne  # noqa: B018


def test_importing_the_package_loads_no_engine_and_no_numpy():
    loaded = _run("import sys, whisperops; print(' '.join(sorted(sys.modules)))").split()
    assert "whisperops.engine" not in loaded and "numpy" not in loaded and "faster_whisper" not in loaded
    # The first use brings in the engine module, and still not faster-whisper (loaded with a model).
    loaded = _run("import sys; from whisperops import Engine; print(' '.join(sorted(sys.modules)))").split()
    assert "whisperops.engine" in loaded and "faster_whisper" not in loaded
