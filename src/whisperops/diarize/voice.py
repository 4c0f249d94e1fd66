"""Mono diarization with Resemblyzer's voice encoder (GE2E, 17 MB of weights in its wheel).

The wheel's own Python module needs librosa and webrtcvad; only its weights are used here, with the
same 40-band power mel spectrogram computed by faster-whisper's filterbank and Silero VAD in place of
webrtcvad. Speech is cut into overlapping 1.6 s windows (the encoder's training length), embedded,
clustered (average-linkage cosine; the cut estimates the count), and each 0.1 s frame takes the
label of the windows covering it.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from whisperops.diarize import Turn
from whisperops.diarize.frames import SILENCE, smooth, speech_mask, to_turns
from whisperops.errors import WhisperOpsError

log = logging.getLogger(__name__)

SR = 16000
MEL_HOP = 160  # 10 ms
MEL_FFT = 400  # 25 ms
WINDOW_FRAMES = 160  # 1.6 s, the encoder's partial-utterance length
STEP_FRAMES = 40  # 0.4 s between windows
HOP_S = 0.1  # resolution of the labels
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


class VoiceEncoderDiarizer:
    """Resemblyzer embeddings + agglomerative clustering; see the module's docstring."""

    def __init__(self) -> None:
        import torch
        from faster_whisper.feature_extractor import FeatureExtractor

        state = torch.load(weights_path(), map_location="cpu", weights_only=True)["model_state"]
        self.lstm = torch.nn.LSTM(40, 256, 3, batch_first=True)
        self.linear = torch.nn.Linear(256, 256)
        self.lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
        self.linear.load_state_dict({k[7:]: v for k, v in state.items() if k.startswith("linear.")})
        self.lstm.eval()
        self.mel_filters = FeatureExtractor.get_mel_filters(SR, MEL_FFT, n_mels=40).astype(np.float32)

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

    def embed(self, mels: np.ndarray) -> np.ndarray:
        """L2-normalised embeddings of ``(batch, WINDOW_FRAMES, 40)`` mel windows."""
        import torch

        out = []
        threads = torch.get_num_threads()
        # One thread: the small LSTM gains nothing from more, and loses many times over when the
        # cores are busy (the decoder's own threads, other work on the machine).
        torch.set_num_threads(1)
        try:
            with torch.inference_mode():
                for i in range(0, len(mels), 64):
                    _, (hidden, _) = self.lstm(torch.from_numpy(mels[i : i + 64]))
                    raw = torch.relu(self.linear(hidden[-1]))
                    out.append(torch.nn.functional.normalize(raw, dim=1).numpy())
        finally:
            torch.set_num_threads(threads)
        return np.concatenate(out) if out else np.zeros((0, 256), np.float32)

    def voiceprint(self, audio: np.ndarray) -> np.ndarray:
        """One L2-normalised embedding for a stretch of one voice: the mean of its windows'."""
        mel = self.mel(np.asarray(audio, dtype=np.float32))
        if mel.shape[0] < WINDOW_FRAMES:
            mel = np.pad(mel, ((0, WINDOW_FRAMES - mel.shape[0]), (0, 0)))
        starts = range(0, mel.shape[0] - WINDOW_FRAMES + 1, STEP_FRAMES)
        mean = self.embed(np.stack([mel[s : s + WINDOW_FRAMES] for s in starts])).mean(axis=0)
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
        starts, centres = _windows(speech, mel.shape[0])
        if len(starts) == 0:
            return []
        embeddings = self.embed(np.stack([mel[s : s + WINDOW_FRAMES] for s in starts]))
        window_labels = cluster(embeddings, num_speakers, min_speakers, max_speakers)
        labels = np.full(speech.size, SILENCE, dtype=np.int64)
        speech_frames = np.flatnonzero(speech)
        # Each speech frame takes the label of the window centred nearest to it.
        nearest = np.abs(speech_frames[:, None] * HOP_S - centres[None, :]).argmin(axis=1)
        labels[speech_frames] = window_labels[nearest]
        return to_turns(smooth(labels, 7), HOP_S)


def _windows(speech: np.ndarray, n_mel: int) -> tuple[np.ndarray, np.ndarray]:
    """Start mel frame and centre (seconds) of each window: every 0.4 s through each stretch of speech."""
    frames_per_hop = round(HOP_S * SR / MEL_HOP)
    starts: list[int] = []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], speech.astype(np.int8), [0]])))
    for a, b in zip(edges[::2], edges[1::2], strict=True):
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
    arr = np.array(sorted(set(starts)), dtype=np.int64)
    return arr, (arr + WINDOW_FRAMES / 2) * MEL_HOP / SR


def cluster(
    embeddings: np.ndarray,
    num_speakers: int | None = None,
    min_speakers: int | None = None,
    max_speakers: int | None = None,
    *,
    merge_distance: float = MERGE_DISTANCE,
) -> np.ndarray:
    """A label per embedding: average-linkage cosine clustering, cut at ``merge_distance`` or at a count."""
    from scipy.cluster.hierarchy import fcluster, linkage

    n = len(embeddings)
    if n == 1:
        return np.zeros(1, dtype=np.int64)
    tree = linkage(embeddings, method="average", metric="cosine")
    if num_speakers:
        k = min(num_speakers, n)
    else:
        k = split_by_silhouette(embeddings, tree, min(max_speakers or MAX_ESTIMATED, MAX_ESTIMATED))
        if k is None:
            labels = fcluster(tree, t=merge_distance, criterion="distance")
            sizes = np.bincount(labels)[1:]
            k = max(1, int((sizes >= max(2, MIN_CLUSTER_SHARE * n)).sum()))
        k = min(max(k, min_speakers or 1), max_speakers or k, n)
    labels = fcluster(tree, t=k, criterion="maxclust") - 1
    return _refine(embeddings, labels)


def split_by_silhouette(embeddings: np.ndarray, tree: np.ndarray, most: int) -> int | None:
    """The count in ``2..most`` whose cut of ``tree`` has the best mean silhouette, or None when none
    reaches :data:`MIN_SILHOUETTE` (see there)."""
    from scipy.cluster.hierarchy import fcluster

    n = len(embeddings)
    if n < SILHOUETTE_MIN_WINDOWS:
        return None
    sample = np.unique(np.linspace(0, n - 1, min(n, SILHOUETTE_WINDOWS)).astype(np.int64))
    distance = 1.0 - embeddings[sample] @ embeddings[sample].T
    best, best_score = None, MIN_SILHOUETTE
    for k in range(2, most + 1):
        labels = fcluster(tree, t=k, criterion="maxclust") - 1
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


def _refine(embeddings: np.ndarray, labels: np.ndarray, rounds: int = 3) -> np.ndarray:
    """A few k-means steps from the tree's clusters (average linkage leaves stragglers at the edges)."""
    k = int(labels.max()) + 1
    for _ in range(rounds):
        centroids = np.stack([embeddings[labels == c].mean(axis=0) for c in range(k)])
        new = (embeddings @ centroids.T).argmax(axis=1)
        if len(np.unique(new)) < k:  # a cluster emptied: keep the tree's answer
            break
        labels = new
    return labels
