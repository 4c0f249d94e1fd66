"""The transcription engine: faster-whisper (CTranslate2) behind a small, typed API.

``Engine`` loads a model once and transcribes many inputs. ``Engine.segments`` is lazy like
faster-whisper's own generator; ``Engine.transcribe`` drains it into a :class:`Transcript`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whisperops.config import setting
from whisperops.errors import ModelNotFoundError, OptionError
from whisperops.languages import language_code
from whisperops.models import registry
from whisperops.results import Segment, Transcript, Word

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

TASKS = ("transcribe", "translate")
# Longer files stream through in windows of this length cut at quiet moments: memory is bounded by
# one window (audio, features and faster-whisper's copies of both). Shorter windows bound memory
# tighter but cost accuracy against bare faster-whisper, so the default keeps a recording of up to
# 30 minutes whole; see docs/design/long-form.md.
LONG_FORM_WINDOW_S = 1800.0
# The batched pipeline decodes each clip as one 30 s encoder window, so clips may not be longer.
BATCH_CLIP_S = 30.0
# A region the VAD rejected is decoded again when some of it stands this far above the window's
# noise floor (and above an absolute floor, so dither in digital silence never qualifies).
RESCUE_ABOVE_FLOOR_DB = 15.0
RESCUE_MIN_LOUD_S = 0.3
# Speech rises and falls with its syllables; a tone, a hum or steady noise does not, and decoding
# those only buys hallucinations (and temperature fallbacks): skip regions this steady (dB std).
RESCUE_MIN_MODULATION_DB = 4.0
# ...and what Whisper writes there is kept only when it is sure it heard speech.
RESCUE_MAX_NO_SPEECH_PROB = 0.4
RESCUE_MIN_AVG_LOGPROB = -1.0


@dataclass
class DecodeOptions:
    """How to decode. Defaults match faster-whisper's, except that VAD is on (no text from silence).

    Raises:
        OptionError: A task, beam size or batch size out of range (one line naming the option).
    """

    language: str | None = setting("auto", help="Language code, or auto to detect it (None detects too).")
    task: str = setting("transcribe", help="transcribe, or translate (to English; multilingual models).")
    beam_size: int = setting(5, help="Beam width (1 = greedy).")
    vad_filter: bool = setting(True, help="Skip long non-speech with Silero VAD.")
    vad_threshold: float = setting(
        0.25, help="VAD speech probability above which audio is speech (Silero's own default, 0.5, drops whispers)."
    )
    vad_min_silence_ms: int = setting(
        6000, help="Only silences at least this long (ms) are skipped; shorter pauses stay in the decoded audio."
    )
    vad_speech_pad_ms: int = setting(1000, help="Speech kept on each side of what the VAD found (ms).")
    vad_rescue: bool = setting(
        True,
        help="Decode skipped regions that carry energy too, keeping only text Whisper is sure is speech.",
    )
    word_timestamps: bool = setting(False, help="Time every word.")
    initial_prompt: str | None = setting(None, help="Text to prime the decoder.")
    hotwords: str | None = setting(None, help="Words to bias decoding towards.")
    batch_size: int = setting(
        2,
        help="Speech chunks of up to 30 s decoded at once (faster-whisper's BatchedInferencePipeline; a chunk "
        "it doubts is decoded again with temperature fallback); more is faster on a GPU, not on a CPU, and "
        "costs memory. 0: one window at a time, faster-whisper's sequential decoder; 1: that, and no packing.",
    )
    pack: bool = setting(
        True,
        help="Decode short clips several to one 30 s window, in batches (a doubtful window's clips are decoded "
        "one by one).",
    )
    condition_on_previous_text: bool = setting(True, help="Feed each window the previous window's text.")
    temperature: tuple[float, ...] = setting(
        (0.0, 0.2, 0.4, 0.6, 0.8, 1.0), help="Sampling temperatures, tried in turn when a window fails."
    )

    def __post_init__(self) -> None:
        if self.language is not None and self.language.strip().lower() in ("", "auto"):
            self.language = None
        if self.language is not None:
            self.language = language_code(self.language)
        if self.task not in TASKS:
            raise OptionError(f"--task {self.task!r}: must be one of {', '.join(TASKS)}")
        if self.beam_size < 1:
            raise OptionError(f"--beam-size {self.beam_size}: must be at least 1")
        if self.batch_size < 0:
            raise OptionError(f"--batch-size {self.batch_size}: must be 0 (sequential) or more")
        if isinstance(self.temperature, (int, float)):
            self.temperature = (float(self.temperature),)
        self.temperature = tuple(self.temperature)
        self._check_vad()

    def _check_vad(self) -> None:
        if not 0.0 < self.vad_threshold < 1.0:
            raise OptionError(f"--vad-threshold {self.vad_threshold}: must be between 0 and 1 (e.g. 0.25)")
        for flag, value in (
            ("--vad-min-silence-ms", self.vad_min_silence_ms),
            ("--vad-speech-pad-ms", self.vad_speech_pad_ms),
        ):
            if value < 0:
                raise OptionError(f"{flag} {value}: must be 0 or more milliseconds")

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-ready data (what ``Transcript.options`` holds)."""
        data = asdict(self)
        data["temperature"] = list(self.temperature)  # JSON has no tuples; keep one canonical form
        return data

    def cache_key(self) -> str:
        """Stable digest of every option that changes the text (for the transcript cache)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class EngineConfig:
    """Which model runs where: what :class:`Engine` is built from."""

    model: str = setting("tiny.en", help="Registry name, local directory or hub id.")
    device: str = setting("auto", help="auto, cpu or cuda.")
    compute_type: str = setting("auto", help="auto (int8 on CPU, float16 on CUDA), or any CTranslate2 type.")
    cpu_threads: int = setting(0, help="CPU threads for decoding (0: CTranslate2's default).")
    num_workers: int = setting(1, help="Decodes that may run at once on this model (CTranslate2 workers).")
    extra: dict[str, Any] = setting(help="Extra WhisperModel keyword arguments.", factory=dict)


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


def pick_compute_type(device: str, compute_type: str) -> str:
    if compute_type != "auto":
        return compute_type
    return "float16" if device == "cuda" else "int8"


class Engine:
    """A loaded Whisper model. Create once, call :meth:`transcribe` many times.

    Args:
        model: A registry name (``tiny.en``, ``base``, a name ``convert`` or ``finetune``
            registered), a CTranslate2 or Hugging Face directory (converted to CTranslate2 once and
            cached), or a hub id where a network exists. See ``whisperops models``.
        device: ``auto`` (CUDA when CTranslate2 sees a GPU, else CPU), ``cpu`` or ``cuda``.
        compute_type: ``auto`` (int8 on CPU, float16 on CUDA) or any CTranslate2 compute type.
        cpu_threads: Threads per decode on CPU; 0 leaves it to CTranslate2.
        num_workers: Decodes that may run at once on this model (the server's slots).

    Raises:
        ModelNotFoundError: The model is not installed or known, or is an export for another runtime
            (openai-whisper, whisper.cpp); the message says what is available.

    Attributes:
        model_name: The model as asked for.
        path: The CTranslate2 directory loaded.
        device: The device chosen.
        compute_type: The compute type chosen.
        load_seconds: How long loading took.
    """

    def __init__(
        self,
        model: str = EngineConfig.model,
        device: str = EngineConfig.device,
        compute_type: str = EngineConfig.compute_type,
        cpu_threads: int = EngineConfig.cpu_threads,
        num_workers: int = EngineConfig.num_workers,
    ) -> None:
        from faster_whisper import WhisperModel

        self.model_name = str(model)
        self.path = registry.resolve(model)
        fmt = registry.detect_format(self.path)
        if fmt == "hf":
            # Fine-tuned and converted Hugging Face models run through a CTranslate2 copy made once.
            from whisperops.models.convert import cached_ct2

            self.path = cached_ct2(self.path)
        elif fmt != "ct2":
            raise ModelNotFoundError(
                f"model {model!r} at {self.path} is a {fmt} export for another runtime; transcribe with the "
                "CTranslate2 or Hugging Face model it was exported from"
            )
        self.device = pick_device(device)
        self.compute_type = pick_compute_type(self.device, compute_type)
        start = time.perf_counter()
        self.model = WhisperModel(
            str(self.path),
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=cpu_threads,
            num_workers=num_workers,
        )
        # Long windows: the same features, computed a block at a time (see whisperops.features).
        from whisperops.features import BlockFeatureExtractor

        self.model.feature_extractor = BlockFeatureExtractor(**self.model.feat_kwargs)
        self.load_seconds = time.perf_counter() - start
        self._batched = None
        log.info("loaded %s (%s, %s) in %.2fs", self.model_name, self.device, self.compute_type, self.load_seconds)

    @classmethod
    def from_config(cls, config: EngineConfig) -> Engine:
        """An engine built from an :class:`EngineConfig`."""
        return cls(config.model, config.device, config.compute_type, config.cpu_threads, config.num_workers)

    @property
    def is_multilingual(self) -> bool:
        """Whether the model can detect languages and translate (``base``: yes; ``tiny.en``: no)."""
        return bool(self.model.model.is_multilingual)

    def segments(self, audio: np.ndarray, options: DecodeOptions | None = None) -> tuple[Iterator[Segment], Any]:
        """Lazily decode ``audio``, segment by segment, like faster-whisper's ``transcribe``.

        Decoding runs clip by clip over what :func:`speech_clips` keeps, so no segment spans skipped
        non-speech and every time is relative to ``audio``'s first sample.

        Args:
            audio: 16 kHz mono float32 samples (``whisperops.audio.load_audio`` makes them).
            options: How to decode; the defaults of :class:`DecodeOptions` when None.

        Returns:
            A ``(segments, info)`` pair: an iterator that decodes as it is consumed, and
            faster-whisper's ``TranscriptionInfo`` (language, its probability), with
            ``duration_after_vad`` the seconds of audio actually decoded.

        Raises:
            OptionError: The options ask an English-only model to translate or to use another language.
        """
        from whisperops.audio import SAMPLE_RATE

        options = options or DecodeOptions()
        if options.task == "translate" and not self.is_multilingual:
            raise OptionError(f"--task translate: model {self.model_name!r} is English-only; use a multilingual one")
        language = options.language
        if language and not self.is_multilingual and language != "en":
            raise OptionError(f"--language {language}: model {self.model_name!r} is English-only")
        batched = options.batch_size > 1
        # A batched clip comes back as one segment of up to 30 s: its words cut it into sentences.
        timed = options.word_timestamps or batched
        clips = speech_clips(audio, options, max_clip_s=BATCH_CLIP_S if batched else None)
        kept_s = sum(c.end - c.start for c in clips)
        if not clips:
            return iter(()), _NoSpeech(language, audio.size / SAMPLE_RATE)
        common: dict[str, Any] = dict(
            task=options.task,
            beam_size=options.beam_size,
            vad_filter=False,
            word_timestamps=timed,
            initial_prompt=options.initial_prompt,
            hotwords=options.hotwords,
            condition_on_previous_text=options.condition_on_previous_text,
            temperature=list(options.temperature),
        )
        if batched:
            raw, info = self._batched_segments(audio, clips, options.batch_size, language, common)
        elif options.vad_filter:
            raw, info = self.model.transcribe(
                audio, language=language, clip_timestamps=[t for c in clips for t in (c.start, c.end)], **common
            )
        else:  # the whole window is one clip: faster-whisper's own default, so --no-vad is bare faster-whisper
            raw, info = self.model.transcribe(audio, language=language, **common)
        length = round(audio.size / SAMPLE_RATE, 3)
        rescued = [c for c in clips if c.rescued]
        kept = (s for s in raw if not rescued or _confident_or_outside(s, rescued))
        converted = (_clamped(_convert(i, s), length) for i, s in enumerate(kept))
        if batched:
            converted = _numbered(p for seg in converted for p in _sentences(seg, options.word_timestamps))
        return converted, _Info(info, kept_s)

    def batched_pipeline(self) -> Any:
        """faster-whisper's ``BatchedInferencePipeline`` on this engine's model, made once."""
        if self._batched is None:
            from faster_whisper import BatchedInferencePipeline

            self._batched = BatchedInferencePipeline(model=self.model)
        return self._batched

    def _batched_segments(
        self, audio: np.ndarray, clips: list[Clip], size: int, language: str | None, common: dict[str, Any]
    ) -> tuple[Iterator[Any], Any]:
        """The batched pipeline over ``clips``, ``size`` at a time, with a clip it doubts decoded again.

        One pipeline call per batch, so it holds the audio copies and features of one batch, not of
        the window; the language found first is kept. A clip whose decode faster-whisper's sequential
        decoder would have retried at a higher temperature (:func:`_doubtful`) is decoded again by
        that decoder, fallback and all: the batched pipeline samples at the first temperature only.
        """
        import itertools

        def call(batch: list[Clip], language: str | None) -> tuple[Iterable[Any], Any]:
            timestamps = [{"start": c.start, "end": c.end} for c in batch]
            return self.batched_pipeline().transcribe(
                audio, language=language, clip_timestamps=timestamps, batch_size=size, **common
            )

        first, info = call(clips[:size], language)
        # One clip, as the batched decode had it: no previous text to condition on.
        alone = {**common, "condition_on_previous_text": False}
        starts = [round(c.start * 100) for c in clips]  # faster-whisper's seek: the clip's start in frames

        def batches() -> Iterator[Any]:  # a batch is read (and its features made) only once reached
            yield from first
            for k in range(size, len(clips), size):
                yield from call(clips[k : k + size], info.language)[0]

        def segments() -> Iterator[Any]:
            for seek, group in itertools.groupby(batches(), key=lambda s: s.seek):
                decoded = list(group)
                if not any(_doubtful(s) for s in decoded):
                    yield from decoded
                    continue
                clip = clips[min(range(len(clips)), key=lambda i: abs(starts[i] - seek))]
                log.info("batched decode of %.1f-%.1f s looks doubtful; decoding it again alone", clip.start, clip.end)
                yield from self.model.transcribe(
                    audio, language=info.language, clip_timestamps=[clip.start, clip.end], **alone
                )[0]

        return segments(), info

    def transcribe(
        self,
        audio: str | Path | np.ndarray | Iterable[np.ndarray],
        options: DecodeOptions | None = None,
        *,
        source: str | None = None,
        metadata: dict[str, Any] | None = None,
        on_segment: Callable[[Segment], None] | None = None,
        window_s: float = LONG_FORM_WINDOW_S,
    ) -> Transcript:
        """Transcribe a file, an array or an iterable of blocks into a :class:`~whisperops.results.Transcript`.

        Blocks (16 kHz mono float32, e.g. from :func:`~whisperops.audio.stream_audio`) let a caller
        bound or cancel the decode itself, as the server does with its uploads.

        Files longer than ``window_s`` stream through in windows cut at quiet moments, so memory
        is bounded by one window whatever the recording's length. The language found first is kept
        for the rest; each window starts with a fresh prompt (the previous window's text as prompt
        cost accuracy on long recordings, see docs/design/long-form.md).

        Args:
            audio: A path to anything PyAV decodes, 16 kHz mono float32 samples, or an iterable of
                such sample blocks.
            options: How to decode; the defaults of :class:`DecodeOptions` when None.
            source: What ``Transcript.source`` says (default: the path, ``<array>`` or ``<stream>``).
            metadata: Copied into ``Transcript.metadata`` (a title, a URL, ...).
            on_segment: Called with each segment as soon as it is decoded (progress, streaming).
            window_s: Length of the windows long files are cut into, in seconds.

        Returns:
            The transcript, with its timings (``decode_audio_s``, ``transcribe_s``).

        Raises:
            AudioError: The file is missing, empty, or holds no decodable audio.
            OptionError: The options do not fit the model (see :meth:`segments`).
        """
        # Here, not at the top: the settings above are imported by every CLI command, numpy by none.
        import numpy as np

        from whisperops.audio import SAMPLE_RATE, DecodeReport, load_audio, probe_duration, quiet_windows, stream_audio

        options = options or DecodeOptions()
        report = DecodeReport()
        if isinstance(audio, np.ndarray):
            source = source or "<array>"
            windows: Iterator[tuple[int, np.ndarray]] = iter([(0, audio)])
        elif not isinstance(audio, (str, Path)):
            source = source or "<stream>"
            windows = quiet_windows(audio, window_s)
        else:
            source = source or str(audio)
            duration = probe_duration(audio)
            if duration is not None and duration > window_s:
                windows = quiet_windows(stream_audio(audio, report=report), window_s)
            else:
                windows = iter([(0, load_audio(audio, report=report))])
        segments: list[Segment] = []
        language, probability, after_vad, total, decode_s, run_s = options.language, 0.0, 0.0, 0, 0.0, 0.0
        detected = False
        while True:
            samples = iterator = None  # the last window is freed before the next one is read
            t0 = time.perf_counter()
            start_sample, samples = next(windows, (0, None))
            t1 = time.perf_counter()
            decode_s += t1 - t0
            if samples is None:
                break
            total = start_sample + samples.size
            if _is_digital_silence(samples):
                # Whisper hallucinates ("You", "Thank you.") on pure silence when VAD is off.
                continue
            window_options = replace(options, language=language) if language != options.language else options
            iterator, info = self.segments(samples, window_options)
            offset = start_sample / SAMPLE_RATE
            for seg in iterator:
                if offset or segments:
                    seg = _shifted(seg, offset, len(segments))
                segments.append(seg)
                if on_segment is not None:
                    on_segment(seg)
            if not detected and info.language is not None:
                language, probability, detected = info.language, float(info.language_probability), True
            after_vad += float(info.duration_after_vad)
            run_s += time.perf_counter() - t1
        length = round(total / SAMPLE_RATE, 3)
        # Rounding window offsets can push the last times a millisecond past the end.
        segments = [_clamped(s, length) for s in segments]
        return Transcript(
            source=source,
            text=" ".join(s.text.strip() for s in segments if s.text.strip()),
            segments=segments,
            language=language or "en",
            language_probability=round(probability, 4),
            duration=length,
            duration_after_vad=round(after_vad, 3),
            model=self.model_name,
            options=options.to_dict(),
            metadata=dict(metadata or {}),
            timings={"decode_audio_s": round(decode_s, 4), "transcribe_s": round(run_s, 4)},
            warnings=list(report.warnings),
        )

    # --- Many short clips at once (see "Packed short clips" below) ---------------------------------
    def transcribe_packed(
        self, audios: list[np.ndarray], options: DecodeOptions | None = None, *, sources: list[str] | None = None
    ) -> list[Transcript]:
        """Transcribe clips of up to ``PACK_WINDOW_S`` each (16 kHz arrays) as one batch, in order.

        Each transcript holds only its own clip's words, timed from its clip's start; a clip whose
        shared decode looks doubtful is decoded again alone by :meth:`transcribe`.
        """
        from whisperops.audio import SAMPLE_RATE

        options = options or DecodeOptions()
        if not packing_applies(self, options):
            raise OptionError("packed decoding needs --language with a multilingual model, and --pack")
        too_long = [i for i, a in enumerate(audios) if a.size > PACK_WINDOW_S * SAMPLE_RATE]
        if too_long:
            raise OptionError(f"clips {too_long} are longer than {PACK_WINDOW_S:g} s: transcribe them one by one")
        sources = sources or [f"<array {i}>" for i in range(len(audios))]
        start = time.perf_counter()
        decoder = _PackedDecoder(self, options)
        decoded = decoder.run(audios)
        batch_s = time.perf_counter() - start
        share = batch_s / max(1, sum(a.size for a in audios))
        transcripts = []
        for i, (audio, source, segments) in enumerate(zip(audios, sources, decoded, strict=True)):
            if segments is None:
                transcripts.append(self.transcribe(audio, options, source=source))
                continue
            transcripts.append(
                Transcript(
                    source=source,
                    text=" ".join(s.text.strip() for s in segments if s.text.strip()),
                    segments=segments,
                    language=options.language or "en",
                    language_probability=1.0,
                    duration=round(audio.size / SAMPLE_RATE, 3),
                    duration_after_vad=round(decoder.kept.get(i, 0) / SAMPLE_RATE, 3),
                    model=self.model_name,
                    options=options.to_dict(),
                    # The batch's time, shared out by length: what each clip cost of it.
                    timings={
                        "decode_audio_s": 0.0,
                        "transcribe_s": round(share * audio.size, 4),
                        "packed_batch_s": round(batch_s, 4),
                    },
                )
            )
        return transcripts


@dataclass(frozen=True)
class Clip:
    """A stretch of a window to decode, in seconds; ``rescued``: the VAD rejected it, energy did not."""

    start: float
    end: float
    rescued: bool = False


def speech_clips(audio: np.ndarray, options: DecodeOptions, max_clip_s: float | None = None) -> list[Clip]:
    """What of ``audio`` to decode: the VAD's speech, widely padded, plus rejected regions with energy.

    The VAD only skips long non-speech (``vad_min_silence_ms``) and a rejected region is decoded again
    when it is much louder than the window's noise floor, because Silero scores whispered, hoarse and
    distant speech low; the text found there is kept only when Whisper is confident (see
    :func:`_confident_or_outside`). ``max_clip_s`` splits longer clips at their quietest moments.
    """
    from whisperops.audio import SAMPLE_RATE, quiet_windows

    length = audio.size
    if length == 0 or _is_digital_silence(audio):
        return []
    if not options.vad_filter:
        spans = [(0, length, False)]
    else:
        from faster_whisper.vad import VadOptions

        from whisperops.vad import speech_timestamps

        vad = VadOptions(
            threshold=options.vad_threshold,
            min_silence_duration_ms=options.vad_min_silence_ms,
            speech_pad_ms=options.vad_speech_pad_ms,
        )
        speech = [(c["start"], min(c["end"], length)) for c in speech_timestamps(audio, vad)]
        spans = [(a, b, False) for a, b in speech]
        if options.vad_rescue:
            spans = sorted(spans + [(a, b, True) for a, b in _loud_gaps(audio, speech)])
    clips = []
    for a, b, rescued in spans:
        if max_clip_s is None or (b - a) <= max_clip_s * SAMPLE_RATE:
            clips.append(_clip(a, b, rescued))
            continue
        for start, piece in quiet_windows([audio[a:b]], max_clip_s, search_s=min(10.0, max_clip_s / 2)):
            clips.append(_clip(a + start, a + start + piece.size, rescued))
    return [c for c in clips if c.end > c.start]


def _clip(a: int, b: int, rescued: bool) -> Clip:
    """Samples ``a:b`` in milliseconds; the end rounded down, so it never reaches past sample ``b``
    (faster-whisper's batched decoder asserts that its clips fit in the audio)."""
    from whisperops.audio import SAMPLE_RATE

    return Clip(round(a / SAMPLE_RATE, 3), math.floor(b * 1000 / SAMPLE_RATE) / 1000, rescued)


def _loud_gaps(audio: np.ndarray, speech: list[tuple[int, int]], hop: int = 320) -> list[tuple[int, int]]:
    """The stretches between ``speech`` spans (samples) with energy well above the noise floor."""
    import numpy as np

    from whisperops.audio import SAMPLE_RATE

    frames = audio[: audio.size // hop * hop].reshape(-1, hop)
    if not frames.size:
        return []
    # Block by block: a float64 copy of a long window would cost eight bytes a sample at once.
    power, step = np.empty(frames.shape[0]), 3000  # frames per block: a minute of audio
    for i in range(0, frames.shape[0], step):
        block = frames[i : i + step].astype(np.float64)
        power[i : i + step] = np.mean(block * block, axis=1)
    db = 10.0 * np.log10(power + 1e-10)
    # Digital silence has no floor to speak of: judge against a quiet room instead.
    floor = max(float(np.percentile(db, 10)), -70.0)
    loud = db > floor + RESCUE_ABOVE_FLOOR_DB
    bounds = [0, *(x for span in speech for x in span), audio.size]
    gaps = []
    min_loud = int(RESCUE_MIN_LOUD_S * SAMPLE_RATE / hop)
    for a, b in zip(bounds[::2], bounds[1::2], strict=True):
        fa, fb = a // hop, min(b // hop, loud.size)
        hits = np.flatnonzero(loud[fa:fb])
        if hits.size < min_loud:
            continue
        if float(np.std(db[fa + int(hits[0]) : fa + int(hits[-1]) + 1])) < RESCUE_MIN_MODULATION_DB:
            continue
        pad = SAMPLE_RATE // 5
        start = max(a, (fa + int(hits[0])) * hop - pad)
        end = min(b, (fa + int(hits[-1]) + 1) * hop + pad)
        gaps.append((start, end))
    return gaps


# faster-whisper's own thresholds for trying the next temperature (compression_ratio_threshold,
# log_prob_threshold, and no_speech_threshold, under which a low log-probability is just silence).
RETRY_MAX_COMPRESSION = 2.4
RETRY_MIN_AVG_LOGPROB = -1.0
RETRY_SILENCE_NO_SPEECH_PROB = 0.6


def _doubtful(seg: Any) -> bool:
    """Whether faster-whisper's sequential decoder would have decoded ``seg``'s window again, hotter."""
    if seg.compression_ratio > RETRY_MAX_COMPRESSION:
        return True
    return seg.avg_logprob < RETRY_MIN_AVG_LOGPROB and seg.no_speech_prob <= RETRY_SILENCE_NO_SPEECH_PROB


def _confident_or_outside(seg: Any, rescued: list[Clip]) -> bool:
    """Keep a segment unless it comes from a rescued clip and Whisper doubts it heard speech."""
    mid = (seg.start + seg.end) / 2
    if not any(c.start <= mid <= c.end for c in rescued):
        return True
    return seg.no_speech_prob < RESCUE_MAX_NO_SPEECH_PROB and seg.avg_logprob > RESCUE_MIN_AVG_LOGPROB


class _Info:
    """faster-whisper's info, with the audio we chose to decode as ``duration_after_vad``."""

    def __init__(self, info: Any, after_vad: float) -> None:
        self._info, self.duration_after_vad = info, after_vad

    def __getattr__(self, name: str) -> Any:
        return getattr(self._info, name)


@dataclass
class _NoSpeech:
    """The info of a window with nothing to decode: no language heard."""

    language: str | None
    duration: float
    language_probability: float = 0.0
    duration_after_vad: float = 0.0


# Where a batched or packed segment (one per clip) is cut: after a word that ends a sentence, and
# at a pause between words at least this long, as Whisper's own timestamps cut sequential ones.
SENTENCE_ENDS = (".", "?", "!")
SENTENCE_PAUSE_S = 1.0


def _sentences(seg: Segment, keep_words: bool) -> list[Segment]:
    """``seg`` cut at its sentence ends and pauses (by its words); its words kept only if asked for."""
    if not seg.words:
        return [seg if keep_words else replace(seg, words=None)]
    runs: list[list[Word]] = [[]]
    for word, following in zip(seg.words, [*seg.words[1:], None], strict=True):
        runs[-1].append(word)
        if following is not None and (
            word.word.rstrip().endswith(SENTENCE_ENDS) or following.start - word.end >= SENTENCE_PAUSE_S
        ):
            runs.append([])
    return seg.split(runs, keep_words=keep_words)


def _numbered(segments: Iterable[Segment]) -> Iterator[Segment]:
    return (replace(seg, id=i) for i, seg in enumerate(segments))


def _clamped(seg: Segment, length: float) -> Segment:
    """Times inside ``[0, length]``: Whisper's last timestamp can run past the end of the audio."""
    if 0.0 <= seg.start <= seg.end <= length and all(0.0 <= w.start <= w.end <= length for w in seg.words or ()):
        return seg

    def fit(a: float, b: float) -> tuple[float, float]:
        a = min(max(a, 0.0), length)
        return a, min(max(b, a), length)

    words = None
    if seg.words is not None:
        words = [replace(w, start=fit(w.start, w.end)[0], end=fit(w.start, w.end)[1]) for w in seg.words]
    start, end = fit(seg.start, seg.end)
    return replace(seg, start=start, end=end, words=words)


def _shifted(seg: Segment, offset: float, index: int) -> Segment:
    """``seg`` moved ``offset`` seconds later and renumbered: windows' times become the file's."""
    words = None
    if seg.words is not None:
        words = [replace(w, start=round(w.start + offset, 3), end=round(w.end + offset, 3)) for w in seg.words]
    return replace(
        seg,
        id=index,
        start=round(seg.start + offset, 3),
        end=round(seg.end + offset, 3),
        words=words,
        seek=seg.seek + round(offset * 100),
    )


def _is_digital_silence(samples: np.ndarray, peak: float = 1e-4) -> bool:
    import numpy as np

    return samples.size == 0 or float(np.max(np.abs(samples))) < peak


def _convert(index: int, s: Any) -> Segment:
    words = None
    if s.words is not None:
        words = [Word(round(w.start, 3), round(w.end, 3), w.word, round(w.probability, 4)) for w in s.words]
    return Segment(
        id=index,
        start=round(s.start, 3),
        end=round(s.end, 3),
        text=s.text,
        avg_logprob=round(s.avg_logprob, 4),
        no_speech_prob=round(s.no_speech_prob, 4),
        compression_ratio=round(s.compression_ratio, 4),
        temperature=s.temperature,
        words=words,
        seek=int(s.seek),
        tokens=list(s.tokens),
    )


# --- Packed short clips ------------------------------------------------------------------------
# Whisper's encoder always reads a 30 s window, so a 3 s clip decoded alone pays for ten times its
# audio. Clips up to PACK_WINDOW_S are laid end to end, PACK_GAP_S of silence apart, into shared
# windows that BatchedInferencePipeline decodes several at once; every word then goes back to the
# clip its time falls in. Whisper reads straight across the gaps (one segment can hold the end of
# one clip and the start of the next), which is why words, not segments, are what is split.
# Windows are filled to PACK_WINDOW_S, not 30 s: in fuller windows Whisper skips sentences more
# often, and each skip sends the window's clips back to the sequential path.
PACK_WINDOW_S = 22.0
PACK_GAP_S = 1.0
# Windows decoded at once: --batch-size, and at least this (with --batch-size 0 too). On a CPU more
# windows per batch cost memory (every beam holds its own copy of the window's encoding), not time.
PACK_BATCH_SIZE = 2
# A window whose decode looks like one faster-whisper would retry at a higher temperature (the
# batched pipeline never retries, see _doubtful) has its clips decoded again one by one, by the
# sequential path.
# A clip that got too few words, or none near its start or end (see _covered), was mostly skipped
# (Whisper ends a full window early) rather than given to a neighbour, whose own words stay: it is
# packed again with the other skipped clips, and decoded alone only if it is skipped PACK_ROUNDS times.
PACK_MIN_WORDS_PER_S = 1.0
PACK_MAX_UNHEARD_S = 2.0
PACK_ROUNDS = 2


@dataclass(frozen=True)
class _Piece:
    """One clip's audio inside the packed array: ``at`` (samples) holds the clip's ``offset``."""

    clip: int
    at: int
    length: int
    offset: int


def packing_applies(engine: Engine, options: DecodeOptions) -> bool:
    """Whether :meth:`Engine.transcribe_packed` may decode these options: one language for all clips."""
    return packs(options, engine.is_multilingual)


def packs(options: DecodeOptions, multilingual: bool | None) -> bool:
    """:func:`packing_applies` before a model is loaded (``multilingual``: None when unknown).

    Clips packed together share one language detection, so a multilingual model must be told the
    language; a ``batch_size`` of 1 asks for the plain sequential decoder, and so does ``pack``.
    """
    return options.pack and options.batch_size != 1 and (options.language is not None or multilingual is False)


def _speech_span(audio: np.ndarray, options: DecodeOptions) -> tuple[int, int] | None:
    """The part of a clip worth decoding (samples), or None when it holds no speech.

    Only leading and trailing non-speech is cut: pauses inside a short clip cost little window. The
    cut follows Silero's stock settings, tighter than the run's (less window per clip; a clip whose
    speech it cut short gets too few words and is decoded again alone). Where they find no speech at
    all, the run's own settings decide (rescue included), so a whispered clip is never dropped unheard.
    """
    from faster_whisper.vad import VadOptions

    from whisperops.audio import SAMPLE_RATE
    from whisperops.vad import speech_timestamps

    if _is_digital_silence(audio):
        return None
    if not options.vad_filter:
        return 0, audio.size
    speech = speech_timestamps(audio, VadOptions())
    if speech:
        return int(speech[0]["start"]), min(int(speech[-1]["end"]), audio.size)
    clips = speech_clips(audio, options)
    if not clips:
        return None
    return int(clips[0].start * SAMPLE_RATE), min(round(clips[-1].end * SAMPLE_RATE), audio.size)


def _pack(spans: list[tuple[int, int, int]]) -> list[list[tuple[int, int, int]]]:
    """Spans (clip, start, end) into windows of at most PACK_WINDOW_S, gaps included (first fit)."""
    from whisperops.audio import SAMPLE_RATE

    limit, gap = int(PACK_WINDOW_S * SAMPLE_RATE), int(PACK_GAP_S * SAMPLE_RATE)
    windows: list[list[tuple[int, int, int]]] = []
    used: list[int] = []
    for span in sorted(spans, key=lambda s: s[1] - s[2]):
        need = span[2] - span[1]
        j = next((j for j, u in enumerate(used) if u + gap + need <= limit), None)
        if j is None:
            windows.append([span])
            used.append(need)
        else:
            windows[j].append(span)
            used[j] += gap + need
    return windows


def _covered(piece: _Piece, found: list[tuple[Any, Any]]) -> bool:
    """Whether the words given to ``piece`` plausibly are all of it: dense enough, start to end.

    Whisper sometimes skips a sentence of a full window, or ends the window early; the VAD has
    trimmed the piece to its speech, so a long unheard stretch at either end means words are missing.
    """
    from whisperops.audio import SAMPLE_RATE

    seconds = piece.length / SAMPLE_RATE
    if not found or len(found) < PACK_MIN_WORDS_PER_S * seconds:
        return False
    start, end = piece.at / SAMPLE_RATE, (piece.at + piece.length) / SAMPLE_RATE
    return found[0][0].start - start <= PACK_MAX_UNHEARD_S and end - found[-1][0].end <= PACK_MAX_UNHEARD_S


class _PackedDecoder:
    """Decodes many short clips through shared windows; see the block comment above."""

    def __init__(self, engine: Engine, options: DecodeOptions) -> None:
        self.engine, self.options = engine, options
        self.kept: dict[int, int] = {}  # samples of each clip that were decoded (after the VAD's trim)

    def run(self, audios: list[np.ndarray]) -> list[list[Segment] | None]:
        """Per clip: its segments (times in the clip), or None where it must be decoded alone."""
        result: list[list[Segment] | None] = [[] for _ in audios]
        spans = []
        for i, audio in enumerate(audios):
            span = _speech_span(audio, self.options)
            if span is not None:
                spans.append((i, *span))
                self.kept[i] = span[1] - span[0]
        for _ in range(PACK_ROUNDS):
            if not spans:
                break
            spans = self._round(audios, spans, result)
        for i, _, _ in spans:  # still skipped after every round
            result[i] = None
        return result

    def _round(
        self, audios: list[np.ndarray], spans: list[tuple[int, int, int]], result: list[list[Segment] | None]
    ) -> list[tuple[int, int, int]]:
        """Decode ``spans`` packed; fill ``result``; return the spans of clips Whisper skipped."""
        import numpy as np

        from whisperops.audio import SAMPLE_RATE

        windows = _pack(spans)
        gap = int(PACK_GAP_S * SAMPLE_RATE)
        parts, pieces, clip_timestamps, at = [], [], [], 0
        for window in windows:
            start = at
            for n, (i, a, b) in enumerate(window):
                if n:
                    parts.append(np.zeros(gap, dtype=np.float32))
                    at += gap
                parts.append(audios[i][a:b])
                pieces.append(_Piece(i, at, b - a, a))
                at += b - a
            clip_timestamps.append({"start": start / SAMPLE_RATE, "end": at / SAMPLE_RATE})
        words, suspect = self._decode(np.concatenate(parts), clip_timestamps, pieces)
        # A doubtful decode may have put wrong words into any clip of its window: all of them go alone.
        alone = {i for window in windows if any(c in suspect for c, _, _ in window) for i, _, _ in window}
        skipped = {p.clip for p in pieces if p.clip not in alone and not _covered(p, words.get(p.clip, []))}
        log.info(
            "packed %d clips into %d windows; %d to decode alone, %d skipped to pack again",
            len(pieces),
            len(windows),
            len(alone),
            len(skipped),
        )
        for piece in pieces:
            if piece.clip in alone:
                result[piece.clip] = None
            elif piece.clip not in skipped:
                result[piece.clip] = self._segments(words.get(piece.clip, []), piece)
        return [span for span in spans if span[0] in skipped]

    def _decode(
        self, audio: np.ndarray, clip_timestamps: list[dict[str, float]], pieces: list[_Piece]
    ) -> tuple[dict[int, list[tuple[Any, Any]]], set[int]]:
        """Words per clip (word, its segment), and the clips of windows to decode again."""

        from whisperops.audio import SAMPLE_RATE

        options = self.options
        raw, _ = self.engine.batched_pipeline().transcribe(
            audio,
            language=options.language or "en",
            task=options.task,
            beam_size=options.beam_size,
            word_timestamps=True,
            without_timestamps=True,
            initial_prompt=options.initial_prompt,
            hotwords=options.hotwords,
            clip_timestamps=clip_timestamps,
            batch_size=max(options.batch_size, PACK_BATCH_SIZE),
        )
        half_gap = PACK_GAP_S * SAMPLE_RATE / 2
        words: dict[int, list[tuple[Any, Any]]] = {}
        retry: set[int] = set()
        for seg in raw:
            suspect = _doubtful(seg)
            for word in seg.words or ():
                mid = (word.start + word.end) / 2 * SAMPLE_RATE
                piece = min(pieces, key=lambda p: max(p.at - mid, mid - (p.at + p.length), 0.0))
                if max(piece.at - mid, mid - (piece.at + piece.length)) > half_gap:
                    continue  # a word in no clip's reach: nothing to give it to
                words.setdefault(piece.clip, []).append((word, seg))
                if suspect:
                    retry.add(piece.clip)
        return words, retry

    def _segments(self, found: list[tuple[Any, Any]], piece: _Piece) -> list[Segment]:
        """The clip's words, grouped as Whisper grouped them, timed from the clip's first sample."""
        from whisperops.audio import SAMPLE_RATE

        length = (piece.offset + piece.length) / SAMPLE_RATE
        shift = (piece.offset - piece.at) / SAMPLE_RATE

        def moved(t: float) -> float:
            return round(min(max(float(t) + shift, 0.0), length), 3)

        groups: dict[int, tuple[Any, list[Any]]] = {}
        for word, seg in found:
            groups.setdefault(id(seg), (seg, []))[1].append(word)
        segments = []
        for seg, ws in groups.values():
            timed = [Word(moved(w.start), moved(w.end), w.word, round(float(w.probability), 4)) for w in ws]
            whole = Segment(
                id=0,
                start=timed[0].start,
                end=timed[-1].end,
                text="".join(w.word for w in ws),
                avg_logprob=round(seg.avg_logprob, 4),
                no_speech_prob=round(seg.no_speech_prob, 4),
                compression_ratio=round(seg.compression_ratio, 4),
                temperature=seg.temperature,
                words=timed,
            )
            segments.extend(_sentences(whole, self.options.word_timestamps))
        return list(_numbered(segments))
