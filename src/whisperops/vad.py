"""Silero VAD speech timestamps in bounded memory: faster-whisper's, computed a block at a time.

``faster_whisper.vad.get_speech_timestamps`` pads a copy of the whole window and then builds every
32 ms frame of it, with its context, as one more array before scoring them: for a 30-minute window
that is a third of a gigabyte at once. :func:`speech_timestamps` feeds the same frames to the same
model, carrying the LSTM state from batch to batch as faster-whisper does, so its scores and
timestamps are faster-whisper's; only one batch of frames is ever built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from faster_whisper.vad import VadOptions

WINDOW = 512  # samples a score covers (32 ms at 16 kHz)
CONTEXT = 64  # samples of the previous window each one also sees
# Windows scored per model call (64 s of audio). The LSTM state is carried from call to call, so the
# scores do not depend on it (tests/test_default_path.py checks them against faster-whisper's own).
BATCH_WINDOWS = 2000


def speech_probabilities(audio: np.ndarray) -> np.ndarray:
    """One speech probability per 512 samples of ``audio``, as faster-whisper's VAD scores them."""
    import numpy as np
    from faster_whisper.vad import get_vad_model

    session = get_vad_model().session
    # faster-whisper pads to a whole number of windows, and by a whole window when already whole.
    count = audio.shape[0] // WINDOW + 1
    h = np.zeros((1, 1, 128), dtype="float32")
    c = np.zeros((1, 1, 128), dtype="float32")
    scores = []
    for k0 in range(0, count, BATCH_WINDOWS):
        k1 = min(k0 + BATCH_WINDOWS, count)
        frames = _frames(audio, k0, k1, count)
        out, h, c = session.run(None, {"input": frames, "h": h, "c": c})
        scores.append(np.asarray(out, dtype=np.float32).reshape(-1))
    return np.concatenate(scores)


def _frames(audio: np.ndarray, k0: int, k1: int, count: int) -> np.ndarray:
    """Windows ``k0:k1`` of the zero-padded audio with their context: ``(k1 - k0, CONTEXT + WINDOW)``.

    As faster-whisper builds them: window 0's context is silence, and the last window's own last
    ``CONTEXT`` samples are zeroed (its model writes through a view of the padded audio).
    """
    import numpy as np

    lo = k0 * WINDOW - CONTEXT  # the samples k0:k1 read, context included, start here
    flat = np.zeros((k1 - k0) * WINDOW + CONTEXT, dtype=np.float32)
    a, b = max(lo, 0), min(k1 * WINDOW, audio.shape[0])
    if b > a:
        flat[a - lo : b - lo] = audio[a:b]
    if k1 == count:
        flat[-CONTEXT:] = 0.0
    frames = np.empty((k1 - k0, CONTEXT + WINDOW), dtype=np.float32)
    frames[:, CONTEXT:] = flat[CONTEXT:].reshape(-1, WINDOW)
    frames[:, :CONTEXT] = flat[:-CONTEXT].reshape(-1, WINDOW)[:, :CONTEXT]
    return frames


def speech_timestamps(audio: np.ndarray, options: VadOptions, sampling_rate: int = 16000) -> list[dict[str, int]]:
    """``faster_whisper.vad.get_speech_timestamps(audio, options)``, in bounded memory.

    Returns the same list of ``{"start", "end"}`` sample offsets: the same scores pass through the
    same rules (thresholds with hysteresis, minimum silence and speech, maximum speech length, padding).
    """
    probs = speech_probabilities(audio)
    threshold = options.threshold
    neg_threshold = options.neg_threshold if options.neg_threshold is not None else max(threshold - 0.15, 0.01)
    min_speech_samples = sampling_rate * options.min_speech_duration_ms / 1000
    speech_pad_samples = sampling_rate * options.speech_pad_ms / 1000
    max_speech_samples = sampling_rate * options.max_speech_duration_s - WINDOW - 2 * speech_pad_samples
    min_silence_samples = sampling_rate * options.min_silence_duration_ms / 1000
    min_silence_samples_at_max_speech = sampling_rate * 98 / 1000
    length = audio.shape[0]

    triggered = False
    speeches: list[dict[str, int]] = []
    current: dict[str, int] = {}
    temp_end = prev_end = next_start = 0
    for i, prob in enumerate(probs.tolist()):
        at = WINDOW * i
        if prob >= threshold and temp_end:
            temp_end = 0
            if next_start < prev_end:
                next_start = at
        if prob >= threshold and not triggered:
            triggered = True
            current["start"] = at
            continue
        if triggered and at - current["start"] > max_speech_samples:
            if prev_end:
                current["end"] = prev_end
                speeches.append(current)
                current = {}
                # previously reached silence (< neg_threshold) and is still not speech (< threshold)
                if next_start < prev_end:
                    triggered = False
                else:
                    current["start"] = next_start
                prev_end = next_start = temp_end = 0
            else:
                current["end"] = at
                speeches.append(current)
                current = {}
                prev_end = next_start = temp_end = 0
                triggered = False
                continue
        if prob < neg_threshold and triggered:
            if not temp_end:
                temp_end = at
            if at - temp_end > min_silence_samples_at_max_speech:  # not cut at a very short silence
                prev_end = temp_end
            if at - temp_end < min_silence_samples:
                continue
            current["end"] = temp_end
            if current["end"] - current["start"] > min_speech_samples:
                speeches.append(current)
            current = {}
            prev_end = next_start = temp_end = 0
            triggered = False
            continue
    if current and length - current["start"] > min_speech_samples:
        current["end"] = length
        speeches.append(current)
    return _padded(speeches, speech_pad_samples, length)


def _padded(speeches: list[dict[str, int]], pad: float, length: int) -> list[dict[str, int]]:
    """Each speech widened by ``pad`` samples, or by half the gap where two are closer than two pads."""
    for i, speech in enumerate(speeches):
        if i == 0:
            speech["start"] = int(max(0, speech["start"] - pad))
        if i != len(speeches) - 1:
            silence = speeches[i + 1]["start"] - speech["end"]
            if silence < 2 * pad:
                speech["end"] += int(silence // 2)
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - silence // 2))
            else:
                speech["end"] = int(min(length, speech["end"] + pad))
                speeches[i + 1]["start"] = int(max(0, speeches[i + 1]["start"] - pad))
        else:
            speech["end"] = int(min(length, speech["end"] + pad))
    return speeches
