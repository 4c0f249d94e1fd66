"""Mono diarization with Resemblyzer's voice encoder (GE2E, 17 MB of weights in its wheel).

The wheel's own Python module needs torch, librosa and webrtcvad; only its weights are used here,
read without torch (:mod:`whisperops.diarize.checkpoint`) and run in numpy (:class:`VoiceEncoder`),
with the same 40-band power mel spectrogram computed by faster-whisper's filterbank and Silero VAD
in place of webrtcvad. Speech is cut into 1.6 s windows (the encoder's training length) every
0.8 s, embedded and clustered (average-linkage cosine, :mod:`whisperops.diarize.linkage`; the cut
estimates the count); where neighbouring windows fall in different clusters, more windows are
embedded between them, and each 0.1 s frame takes the label of the window centred nearest to it.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from whisperops.diarize import Turn
from whisperops.diarize.frames import SILENCE, smooth, speech_mask, stretches, to_turns
from whisperops.diarize.linkage import AverageLinkage
from whisperops.errors import WhisperOpsError

log = logging.getLogger(__name__)

SR = 16000
MEL_HOP = 160  # 10 ms
MEL_FFT = 400  # 25 ms
WINDOW_FRAMES = 160  # 1.6 s, the encoder's partial-utterance length
# Windows every 0.8 s; where neighbours fall in different clusters, windows are added between them
# down to 0.2 s apart (see VoiceEncoderDiarizer._place_changes).
STEP_FRAMES = 80
FINE_STEP_FRAMES = 20
HOP_S = 0.1  # resolution of the labels
# Windows embedded together (bounds the encoder's buffers) and time steps whose input projection is
# one matmul (small enough to stay in cache for the recurrence reading it).
EMBED_BATCH = 64
PROJECTION_STEPS = 8
# Batches of windows embedded at once (at most one per core), each of at least MIN_BATCH windows.
EMBED_THREADS = 2
MIN_BATCH = 8
# Average-linkage cosine distance at which two clusters are taken to be different voices.
MERGE_DISTANCE = 0.4
# Without a count given, a cluster this small (share of speech windows) is folded into its nearest.
MIN_CLUSTER_SHARE = 0.04
# Without a count given, the cut whose clusters stand furthest apart relative to their own spread
# is taken first (the best mean silhouette of the file's windows, if at least this); the fixed
# distance above only when no cut qualifies. Narrow-band (telephone) audio brings all voices closer
# together, below the fixed distance, but not closer relative to each voice's own spread.
MIN_SILHOUETTE = 0.3
# ... over at least this many windows (a few overlapping windows of one voice split into tight
# halves), into clusters of at least this share each (one odd stretch is not a speaker), and into
# at most this many (--max-speakers lowers it).
SILHOUETTE_MIN_WINDOWS = 20
SILHOUETTE_MIN_SHARE = 0.1
MAX_ESTIMATED = 8
# Silhouettes are computed on at most this many windows, evenly spread (the distances are n by n).
SILHOUETTE_WINDOWS = 1500


def weights_path() -> Path:
    """``pretrained.pt`` inside the installed resemblyzer wheel, without importing the package."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise WhisperOpsError(
            "--diarize needs the resemblyzer weights: pip install --no-deps resemblyzer (see the diarize extra)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"


class VoiceEncoder:
    """Resemblyzer's GE2E encoder (3-layer LSTM 40 -> 256, Linear 256 -> 256, ReLU, L2 norm) in numpy.

    Importing torch for this small network cost more than running it. The gates are reordered to
    (input, forget, output, cell) and kept gate-major, ``(4, batch, 256)``: each gate is one
    contiguous block for the elementwise steps, and each matmul is four 256-wide ones, which BLAS
    runs without repacking a 1024-wide weight matrix at every step when the batch is small. The
    sigmoid gates' weights are pre-scaled by 1/2, so one ``tanh`` over all four gates gives them
    all: sigmoid(x) = (tanh(x / 2) + 1) / 2. Each layer's input projection is one matmul over a
    block of time steps; only the recurrence steps through the window.
    """

    HIDDEN = 256

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        h = self.HIDDEN
        order = np.r_[0 : 2 * h, 3 * h : 4 * h, 2 * h : 3 * h]
        scale = np.r_[np.full(3 * h, 0.5), np.ones(h)].astype(np.float32)

        def by_gate(w: np.ndarray) -> np.ndarray:
            """``(4h, n)`` torch weights -> ``(4, n, h)``, reordered and scaled."""
            return _f32((w[order] * scale[:, None]).reshape(4, h, -1).transpose(0, 2, 1))

        self.layers: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        for i in range(3):
            bias = (state[f"lstm.bias_ih_l{i}"] + state[f"lstm.bias_hh_l{i}"])[order] * scale
            w_in, w_rec = state[f"lstm.weight_ih_l{i}"], state[f"lstm.weight_hh_l{i}"]
            self.layers.append((by_gate(w_in), by_gate(w_rec), _f32(bias.reshape(4, 1, h))))
        self.linear_w, self.linear_b = _f32(state["linear.weight"].T), _f32(state["linear.bias"])

    def __call__(self, mels: np.ndarray) -> np.ndarray:
        """L2-normalised embeddings of ``(batch, frames, 40)`` mel windows, ``(batch, 256)``."""
        from concurrent.futures import ThreadPoolExecutor

        from threadpoolctl import threadpool_limits

        out = np.zeros((len(mels), self.HIDDEN), np.float32)

        def embed(i: int) -> None:
            raw = np.maximum(self.last_hidden(mels[i : i + size]) @ self.linear_w + self.linear_b, 0)
            out[i : i + size] = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-12)

        # At least EMBED_THREADS batches where there are windows enough, so that a short file's windows
        # also spread over the cores; the batches depend only on the windows, so the vectors do too.
        parts = max(math.ceil(len(mels) / EMBED_BATCH), min(EMBED_THREADS, len(mels) // MIN_BATCH))
        size = max(1, math.ceil(len(mels) / max(parts, 1)))
        starts = range(0, len(mels), size)
        workers = min(EMBED_THREADS, len(starts), _cores())
        # One BLAS thread: these matmuls are small, and a BLAS thread spinning for work loses many times
        # over what it gains when the other core is busy. Batches go to Python threads instead: numpy
        # releases the GIL in its products and ufuncs, and a thread with no core simply waits its turn.
        # The batches do not depend on the cores, so neither do the embeddings.
        with threadpool_limits(1, user_api="blas"):
            if workers > 1:
                with ThreadPoolExecutor(workers, thread_name_prefix="whisperops-voice") as pool:
                    list(pool.map(embed, starts))
            else:
                for i in starts:
                    embed(i)
        return out

    def last_hidden(self, mels: np.ndarray) -> np.ndarray:
        """The top layer's hidden state after the last frame, ``(batch, 256)``."""
        h = self.HIDDEN
        batch, steps = mels.shape[:2]
        seq = np.ascontiguousarray(mels.transpose(1, 0, 2), dtype=np.float32)  # time-major
        block = min(PROJECTION_STEPS, steps)
        projected = np.empty((4, block * batch, h), np.float32)
        gates = np.empty((4, batch, h), np.float32)
        new = np.empty((batch, h), np.float32)
        # Two sequence buffers, each layer reading one and writing the other.
        buffers = [np.empty((steps, batch, h), np.float32), np.empty((steps, batch, h), np.float32)]
        for layer, (w_in, w_rec, bias) in enumerate(self.layers):
            out = buffers[layer % 2]
            hidden = np.zeros((batch, h), np.float32)
            cell = np.zeros((batch, h), np.float32)
            for t0 in range(0, steps, block):
                n = min(block, steps - t0)
                proj = projected[:, : n * batch]
                np.matmul(seq[t0 : t0 + n].reshape(n * batch, -1), w_in, out=proj)
                proj += bias
                for t in range(n):
                    np.matmul(hidden, w_rec, out=gates)
                    gates += proj[:, t * batch : (t + 1) * batch]
                    np.tanh(gates, out=gates)
                    sigmoid = gates[:3]
                    sigmoid *= 0.5
                    sigmoid += 0.5
                    np.multiply(gates[0], gates[3], out=new)
                    cell *= gates[1]
                    cell += new
                    hidden = out[t0 + t]
                    np.tanh(cell, out=hidden)
                    hidden *= gates[2]
            seq = out
        return hidden.copy()


def _cores() -> int:
    """CPU cores this process may run on."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _f32(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


class VoiceEncoderDiarizer:
    """Resemblyzer embeddings + agglomerative clustering; see the module's docstring."""

    def __init__(self) -> None:
        from faster_whisper.feature_extractor import FeatureExtractor

        from whisperops.diarize import checkpoint

        path = weights_path()
        try:
            state = checkpoint.load(path)["model_state"]
            self.encoder = VoiceEncoder(state)
        except (checkpoint.CheckpointError, KeyError, TypeError) as err:
            raise WhisperOpsError(
                f"{path}: not resemblyzer's voice encoder ({err}); reinstall it: pip install --no-deps resemblyzer"
            ) from err
        self.mel_filters = FeatureExtractor.get_mel_filters(SR, MEL_FFT, n_mels=40).astype(np.float32)

    def embed(self, mels: np.ndarray) -> np.ndarray:
        """L2-normalised embeddings of ``(batch, WINDOW_FRAMES, 40)`` mel windows."""
        return self.encoder(mels)

    def mel(self, audio: np.ndarray) -> np.ndarray:
        """Power mel spectrogram, ``(frames, 40)``, as resemblyzer's (librosa's) with centred frames."""
        # Resemblyzer normalises quiet recordings up to -30 dBFS before embedding.
        rms = float(np.sqrt(np.mean(audio**2))) if audio.size else 0.0
        if 0 < rms < 10 ** (-30 / 20):
            audio = audio * (10 ** (-30 / 20) / rms)
        padded = np.pad(audio, MEL_FFT // 2)
        n = 1 + (padded.size - MEL_FFT) // MEL_HOP
        frames = np.lib.stride_tricks.as_strided(
            padded, (n, MEL_FFT), (padded.strides[0] * MEL_HOP, padded.strides[0]), writeable=False
        )
        window = np.hanning(MEL_FFT + 1)[:-1].astype(np.float32)  # periodic Hann, as librosa
        power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
        return (power @ self.mel_filters.T).astype(np.float32)

    def voiceprint(self, audio: np.ndarray) -> np.ndarray:
        """One L2-normalised embedding for a stretch of one voice: the mean of its windows'."""
        mel = self.mel(np.asarray(audio, dtype=np.float32))
        if mel.shape[0] < WINDOW_FRAMES:
            mel = np.pad(mel, ((0, WINDOW_FRAMES - mel.shape[0]), (0, 0)))
        starts = np.arange(0, mel.shape[0] - WINDOW_FRAMES + 1, STEP_FRAMES)
        mean = self.embed(_stack(mel, starts)).mean(axis=0)
        return mean / (np.linalg.norm(mean) + 1e-9)

    def diarize(
        self,
        audio: np.ndarray,
        sr: int = SR,
        num_speakers: int | None = None,
        min_speakers: int | None = None,
        max_speakers: int | None = None,
        heard: Sequence[tuple[float, float]] = (),
    ) -> list[Turn]:
        if sr != SR:
            raise ValueError(f"sr={sr}: the voice encoder takes {SR} Hz audio")
        audio = np.asarray(audio, dtype=np.float32)
        speech = speech_mask(audio, sr, HOP_S, heard=heard)
        if not speech.any():
            return []
        mel = self.mel(audio)
        starts = _windows(speech, mel.shape[0])
        if len(starts) == 0:
            return []
        embeddings = self.embed(_stack(mel, starts))
        window_labels = cluster(embeddings, num_speakers, min_speakers, max_speakers)
        starts, window_labels = self._place_changes(mel, starts, embeddings, window_labels)
        centres = (starts + WINDOW_FRAMES / 2) * MEL_HOP / SR
        labels = np.full(speech.size, SILENCE, dtype=np.int64)
        speech_frames = np.flatnonzero(speech)
        # Each speech frame takes the label of the window centred nearest to it.
        nearest = np.abs(speech_frames[:, None] * HOP_S - centres[None, :]).argmin(axis=1)
        labels[speech_frames] = window_labels[nearest]
        return to_turns(smooth(labels, 7), HOP_S)

    def _place_changes(
        self, mel: np.ndarray, starts: np.ndarray, embeddings: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Starts and labels with windows added between neighbours of different clusters, halving the
        spacing there down to :data:`FINE_STEP_FRAMES`; each new window takes its nearest cluster.

        Only where the speaker changes does the spacing of windows matter (a frame takes its nearest
        window's label): a coarse step everywhere else halves the embeddings at the same resolution.
        """
        k = int(labels.max()) + 1
        if k < 2:
            return starts, labels
        centroids = _centroids(embeddings, labels, k)
        centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
        step = STEP_FRAMES
        while step > FINE_STEP_FRAMES:
            gap = np.diff(starts)
            pairs = np.flatnonzero((labels[:-1] != labels[1:]) & (gap <= step) & (gap > 1))
            if not pairs.size:
                break
            new = (starts[pairs] + starts[pairs + 1]) // 2
            new_labels = (self.embed(_stack(mel, new)) @ centroids.T).argmax(axis=1)
            order = np.argsort(np.concatenate([starts, new]), kind="stable")
            starts = np.concatenate([starts, new])[order]
            labels = np.concatenate([labels, new_labels])[order]
            step //= 2
        return starts, labels


def _stack(mel: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The ``(len(starts), WINDOW_FRAMES, 40)`` mel windows starting at ``starts``."""
    return np.stack([mel[s : s + WINDOW_FRAMES] for s in starts])


def _windows(speech: np.ndarray, n_mel: int) -> np.ndarray:
    """Start mel frame of each window: every STEP_FRAMES through each stretch of speech."""
    frames_per_hop = round(HOP_S * SR / MEL_HOP)
    starts: list[int] = []
    for a, b in stretches(speech):
        lo, hi = a * frames_per_hop, min(b * frames_per_hop, n_mel)
        if hi - lo <= WINDOW_FRAMES:
            # A short stretch: one window centred on it (it reaches into the pause around it).
            centre = (lo + hi) // 2
            starts.append(min(max(0, centre - WINDOW_FRAMES // 2), max(0, n_mel - WINDOW_FRAMES)))
            continue
        starts.extend(range(lo, hi - WINDOW_FRAMES + 1, STEP_FRAMES))
        if (hi - WINDOW_FRAMES - lo) % STEP_FRAMES:
            starts.append(hi - WINDOW_FRAMES)
    starts = [s for s in starts if s + WINDOW_FRAMES <= n_mel]
    return np.array(sorted(set(starts)), dtype=np.int64)


def cluster(
    embeddings: np.ndarray,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    *,
    merge_distance: float = MERGE_DISTANCE,
) -> np.ndarray:
    """A label per embedding: average-linkage cosine clustering, cut at ``merge_distance`` or at a count."""
    n = len(embeddings)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    tree = AverageLinkage(embeddings)
    if num_speakers:
        k = min(num_speakers, n)
    else:
        k = split_by_silhouette(embeddings, tree, min(max_speakers or MAX_ESTIMATED, MAX_ESTIMATED))
        if k is None:
            sizes = np.bincount(tree.cut_at(merge_distance))
            k = max(1, int((sizes >= max(2, MIN_CLUSTER_SHARE * n)).sum()))
        k = min(max(k, min_speakers or 1), max_speakers or k, n)
    return _refine(embeddings, tree.cut(k))


def split_by_silhouette(embeddings: np.ndarray, tree: AverageLinkage, most: int) -> int | None:
    """The count in ``2..most`` whose cut of ``tree`` has the best mean silhouette, or None when none
    reaches :data:`MIN_SILHOUETTE` (see there)."""
    n = len(embeddings)
    if n < SILHOUETTE_MIN_WINDOWS:
        return None
    sample = np.unique(np.linspace(0, n - 1, min(n, SILHOUETTE_WINDOWS)).astype(np.int64))
    distance = 1.0 - embeddings[sample] @ embeddings[sample].T
    best, best_score = None, MIN_SILHOUETTE
    for k in range(2, most + 1):
        labels = tree.cut(k)
        if np.bincount(labels, minlength=k).min() < SILHOUETTE_MIN_SHARE * n:
            continue
        score = silhouette(distance, labels[sample])
        if score >= best_score:
            best, best_score = k, score
    return best


def silhouette(distance: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette of ``labels`` over a square distance matrix (0 for a point alone in its cluster)."""
    k = int(labels.max()) + 1
    onehot = np.eye(k, dtype=distance.dtype)[labels]
    sizes = onehot.sum(axis=0)
    sums = distance @ onehot  # (n, k): summed distance from each point to each cluster
    own = sizes[labels]
    a = sums[np.arange(labels.size), labels] / np.maximum(own - 1, 1)
    means = sums / np.maximum(sizes, 1)
    means[np.arange(labels.size), labels] = np.inf
    means[:, sizes == 0] = np.inf
    b = means.min(axis=1)
    score = np.where(own > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-12), 0.0)
    return float(score.mean())


def _centroids(embeddings: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """The mean embedding of each of the ``k`` clusters, ``(k, dim)``."""
    return np.stack([embeddings[labels == c].mean(axis=0) for c in range(k)])


def _refine(embeddings: np.ndarray, labels: np.ndarray, rounds: int = 3) -> np.ndarray:
    """A few k-means steps from the tree's clusters (average linkage leaves stragglers at the edges)."""
    k = int(labels.max()) + 1
    for _ in range(rounds):
        new = (embeddings @ _centroids(embeddings, labels, k).T).argmax(axis=1)
        if len(np.unique(new)) < k:  # a cluster emptied: keep the tree's answer
            break
        labels = new
    return labels
