"""Labelled speech made offline from text: TTS voices plus augmentations, written with a JSONL manifest.

A *voice* is what :class:`whisperops.data.tts.Speaker` accepts (``piper:joe``, ``espeak:en-us``...).
An *augmentation* is one condition applied to a clip; conditions are chained with ``+``:

* ``clean``             nothing;
* ``speed:F``           play ``F`` times faster (resampling, so pitch moves too, like ``sox speed``);
* ``noise:SNR``         white-ish noise at ``SNR`` dB below the speech;
* ``telephone``         300-3400 Hz band, 8 kHz sample rate, 8-bit mu-law, back to 16 kHz.

Clips cycle through every (voice, condition) pair in turn, so each pair gets its share of texts.
Clip names hash (text, voice, condition, seed): re-running skips what exists, and a changed text
makes a new clip rather than silently reusing an old one. Every random draw (piper's prosody, the
noise) comes from ``seed``, so the same texts and options give the same audio again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import wave
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from whisperops.data.settings import SynthOptions
from whisperops.errors import OptionError, WhisperOpsError
from whisperops.paths import atomic_write_text

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
MANIFEST = "manifest.jsonl"


class SynthError(WhisperOpsError):
    """Texts or options for synthesis are unusable."""


# ---------------------------------------------------------------------------------------------
# Augmentations: numpy/scipy only (no torchaudio on CPU-only installs).


def change_speed(audio: np.ndarray, factor: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Play ``factor`` times faster: resample to ``sr / factor`` and read it back at ``sr``."""
    from scipy.signal import resample_poly

    if factor <= 0:
        raise OptionError(f"speed:{factor}: the factor must be positive, e.g. speed:1.1")
    if abs(factor - 1.0) < 1e-6:
        return audio
    frac = Fraction(factor).limit_denominator(100)
    # Fewer output samples for factor > 1: up by the denominator, down by the numerator.
    return resample_poly(audio, frac.denominator, frac.numerator).astype(np.float32)


def active_power(audio: np.ndarray, sr: int = SAMPLE_RATE) -> float:
    """Mean power of the 20 ms frames within 30 dB of the loudest: speech, not the pauses between words."""
    x = audio.astype(np.float64)
    frame = max(sr // 50, 1)
    n = x.size // frame
    if n == 0:
        return float(np.mean(x**2)) if x.size else 0.0
    powers = np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1)
    active = powers[powers >= powers.max() * 1e-3]
    return float(active.mean())


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Add noise ``snr_db`` dB below the speech power (pauses excluded, see :func:`active_power`)."""
    if audio.size == 0:
        return audio
    noise = rng.standard_normal(audio.size)
    # A little low-pass colour (a running mean) sounds more like a line than pure white noise.
    noise = np.convolve(noise, np.ones(3) / 3.0, mode="same")
    target = active_power(audio, sr) / (10 ** (snr_db / 10.0))
    noise *= np.sqrt(target / max(float(np.mean(noise**2)), 1e-12))
    return (audio + noise).astype(np.float32)


def telephone(audio: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Narrow-band telephone line: 300-3400 Hz, 8 kHz, mu-law 8-bit, back to ``sr``."""
    from scipy.signal import butter, resample_poly, sosfiltfilt

    sos = butter(4, [300, 3400], btype="bandpass", fs=sr, output="sos")
    band = sosfiltfilt(sos, audio)
    narrow = resample_poly(band, 8000, sr)
    mu = 255.0
    peak = max(float(np.max(np.abs(narrow))), 1e-9)
    x = np.clip(narrow / peak, -1.0, 1.0)
    companded = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    quantised = np.round(companded * 127.0) / 127.0
    expanded = np.sign(quantised) * ((1.0 + mu) ** np.abs(quantised) - 1.0) / mu
    return (resample_poly(expanded * peak, sr, 8000)).astype(np.float32)


@dataclass(frozen=True)
class Augmentation:
    """One named condition, e.g. ``noise:10+telephone``."""

    spec: str
    steps: tuple[tuple[str, float | None], ...] = field(default=())

    def apply(self, audio: np.ndarray, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
        for name, value in self.steps:
            if name == "speed":
                audio = change_speed(audio, float(value), sr)  # type: ignore[arg-type]
            elif name == "noise":
                audio = add_noise(audio, float(value), rng, sr)  # type: ignore[arg-type]
            elif name == "telephone":
                audio = telephone(audio, sr)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        # Noise can push peaks past full scale; scale down rather than clip.
        return audio / peak * 0.95 if peak > 0.95 else audio


_DEFAULT_VALUES = {"speed": 1.1, "noise": 15.0}


def parse_augmentation(spec: str) -> Augmentation:
    """``speed:0.9+noise:10`` -> :class:`Augmentation`; raise one clear line for a bad spec."""
    spec = spec.strip()
    steps: list[tuple[str, float | None]] = []
    for part in spec.split("+"):
        name, _, value = part.strip().partition(":")
        name = name.lower()
        if name in ("clean", "none", ""):
            continue
        if name == "telephone":
            steps.append(("telephone", None))
            continue
        if name not in _DEFAULT_VALUES:
            raise OptionError(
                f"augmentation {part!r}: unknown; use clean, speed:FACTOR, noise:SNR_DB or telephone (chain with +)"
            )
        try:
            number = float(value) if value else _DEFAULT_VALUES[name]
        except ValueError as err:
            raise OptionError(f"augmentation {part!r}: {value!r} is not a number, e.g. {name}:10") from err
        if name == "speed" and not 0.5 <= number <= 2.0:
            raise OptionError(f"augmentation {part!r}: speed factor must be between 0.5 and 2.0")
        steps.append((name, number))
    return Augmentation(spec or "clean", tuple(steps))


def parse_list(value: str | Sequence[str] | None, default: Sequence[str]) -> list[str]:
    if value is None:
        return list(default)
    items = value.split(",") if isinstance(value, str) else list(value)
    return [v.strip() for v in items if v.strip()] or list(default)


# ---------------------------------------------------------------------------------------------
# Synthesis


def read_texts(path: str | Path) -> list[str]:
    """One sentence per line (``written<TAB>spoken`` when they differ); blanks and ``#`` comments skipped."""
    path = Path(path)
    if not path.is_file():
        raise SynthError(f"{path}: no such text file; pass one sentence per line with --texts")
    texts = [line.strip(" \r\n") for line in path.read_text(encoding="utf-8").splitlines()]
    texts = [t for t in texts if t and not t.startswith("#")]
    if not texts:
        raise SynthError(f"{path}: holds no sentences; write one sentence per line")
    return texts


def write_wav(path: Path, audio: np.ndarray, sr: int = SAMPLE_RATE) -> None:
    pcm = (np.clip(audio, -1.0, 1.0) * 32767.0).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with wave.open(str(tmp), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sr)
        out.writeframes(pcm.tobytes())
    tmp.replace(path)


def _clip_id(text: str, voice: str, aug: str, seed: int) -> str:
    return hashlib.sha1(f"{text}\x00{voice}\x00{aug}\x00{seed}".encode()).hexdigest()[:16]


def synthesize(
    texts: Iterable[str],
    output: str | Path,
    voices: Sequence[str] = (SynthOptions.voices,),
    augment: Sequence[str] = (SynthOptions.augment,),
    seed: int = SynthOptions.seed,
    extra: dict | None = None,
    on_clip: Callable[[int, int], None] | None = None,
) -> list[dict]:
    """Speak each text once (voices and conditions round-robin), write 16 kHz WAVs and ``manifest.jsonl``.

    A text may be ``written<TAB>spoken``: the voice reads the spoken form, the label is the written one.

    Returns the manifest rows: ``audio`` (relative to ``output``), ``text``, ``language``, ``duration_s``,
    ``voice``, ``augment`` plus ``extra``.
    """
    from whisperops.audio import load_audio
    from whisperops.data.tts import Speaker

    texts = list(texts)
    if not texts:
        raise SynthError("no texts to synthesise; pass a file with one sentence per line")
    voices = list(voices) or ["piper:joe"]
    speakers = {v: Speaker(v, seed) for v in voices}  # a bad or missing voice fails here, before any work
    augs = [parse_augmentation(a) for a in augment] or [parse_augmentation("clean")]
    output = Path(output)
    _check_writable(output)
    clips = output / "clips"
    clips.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for i, line in enumerate(texts):
        # "written<TAB>spoken": the label is the written form, the voice reads the spoken one.
        text, _, spoken = line.partition("\t")
        text, spoken = text.strip(), (spoken.strip() or text.strip())
        # Cycle through every (voice, condition) pair, so no pairing is left out when the lists have
        # a common factor (two voices and two conditions would otherwise never cross).
        k = i % (len(voices) * len(augs))
        voice, aug = voices[k % len(voices)], augs[k // len(voices)]
        cid = _clip_id(line, voice, aug.spec, seed)
        wav = clips / f"{cid}.wav"
        if not wav.exists():
            raw = clips / f".{cid}.raw.wav"
            speakers[voice](spoken, raw)
            audio = load_audio(raw)
            raw.unlink(missing_ok=True)
            rng = np.random.default_rng(int(cid[:8], 16) ^ seed)
            write_wav(wav, aug.apply(audio, rng))
        with wave.open(str(wav), "rb") as w:
            duration = w.getnframes() / w.getframerate()
        rows.append(
            {
                "audio": f"clips/{wav.name}",
                "text": text,
                "language": "en",
                "duration_s": round(duration, 3),
                "voice": voice,
                "augment": aug.spec,
                **(extra or {}),
            }
        )
        if on_clip is not None:
            on_clip(i + 1, len(texts))
    write_manifest(output / MANIFEST, rows)
    log.info("synthesised %d clips (%.0f s of speech) into %s", len(rows), sum(r["duration_s"] for r in rows), output)
    return rows


def write_manifest(path: Path, rows: Iterable[dict]) -> Path:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _check_writable(output: Path) -> None:
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = output / ".whisperops-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise SynthError(f"{output}: output folder is not writable ({err.strerror}); choose another --output") from err
