"""Whisper's log-mel features in bounded memory: the same numbers as faster-whisper's, block by block.

faster-whisper computes the spectrogram of a whole window in one go: every 25 ms frame of it as
float32, then its complex spectrum, then the magnitudes, so a 30-minute window briefly holds
about a gigabyte of intermediates for 60 MB of features. :class:`BlockFeatureExtractor` computes
the same frames a block at a time (each block reads exactly the samples its frames cover,
centre padding included) and applies the spectrogram-wide clamp at the end, so its output equals
faster-whisper's and its extra memory is one block's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from faster_whisper.feature_extractor import FeatureExtractor

if TYPE_CHECKING:
    import numpy as np

# Frames per block: 30 s of audio, one encoder window's worth.
BLOCK_FRAMES = 3000


class BlockFeatureExtractor(FeatureExtractor):
    """A drop-in :class:`faster_whisper.feature_extractor.FeatureExtractor` for long audio."""

    def __call__(self, waveform: np.ndarray, padding: int = 160, chunk_length: int | None = None) -> np.ndarray:
        import numpy as np

        n = waveform.shape[0] + padding
        if waveform.ndim != 1 or n // self.hop_length <= BLOCK_FRAMES:
            return super().__call__(waveform, padding=padding, chunk_length=chunk_length)
        if chunk_length is not None:
            self.n_samples = chunk_length * self.sampling_rate
            self.nb_max_frames = self.n_samples // self.hop_length
        waveform = waveform.astype(np.float32, copy=False)
        window = np.hanning(self.n_fft + 1)[:-1].astype("float32")
        hop, half = self.hop_length, self.n_fft // 2
        # faster-whisper drops the last of the 1 + n // hop centred frames.
        frames = n // hop
        out = np.empty((self.mel_filters.shape[0], frames), dtype=np.float32)
        for f0 in range(0, frames, BLOCK_FRAMES):
            # The last block is a whole one too, overlapping the one before: BLAS sums a narrow
            # product in another order, which would move a feature by a rounding error.
            f0, f1 = min(f0, frames - BLOCK_FRAMES), min(f0 + BLOCK_FRAMES, frames)
            samples = _centred(waveform, n, half, f0 * hop, (f1 - 1) * hop + self.n_fft)
            spectrum = self.stft(samples, self.n_fft, hop, window=window, center=False, return_complex=True)
            magnitudes = np.abs(spectrum.astype("complex64")) ** 2
            out[:, f0:f1] = np.log10(np.clip(self.mel_filters @ magnitudes, a_min=1e-10, a_max=None))
        np.maximum(out, out.max() - 8.0, out=out)
        out += 4.0
        out /= 4.0
        return out


def _centred(waveform: np.ndarray, n: int, half: int, a: int, b: int) -> np.ndarray:
    """Samples ``a:b`` of ``waveform`` zero-padded to ``n`` samples and then reflect-padded by
    ``half`` on both sides (what ``np.pad(..., mode="reflect")`` in the STFT makes), without
    building the padded whole."""
    import numpy as np

    lo, hi = a - half, b - half  # in the zero-padded signal
    if lo >= 0 and hi <= waveform.shape[0]:
        return waveform[lo:hi]
    index = np.arange(lo, hi)
    index = np.abs(index)  # reflect at the start: x[-k] = x[k]
    index = np.where(index >= n, 2 * (n - 1) - index, index)  # and at the end
    inside = index < waveform.shape[0]
    return np.where(inside, waveform[np.minimum(index, waveform.shape[0] - 1)], 0.0).astype(np.float32)
