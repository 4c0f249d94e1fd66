"""Diarization error rate with a forgiveness collar, split into confusion, miss and false alarm.

The same definition as pyannote.metrics' ``DiarizationErrorRate(collar=..., skip_overlap=False)``
(the collar is the total width around each reference boundary, half on each side), computed on a
10 ms grid with the optimal one-to-one speaker mapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from whisperops.diarize import Turn

STEP_S = 0.01


@dataclass
class DER:
    """Seconds of each error and of scored reference speech; rates are shares of ``speech_s``."""

    confusion_s: float
    miss_s: float
    false_alarm_s: float
    speech_s: float

    @property
    def der(self) -> float:
        return (self.confusion_s + self.miss_s + self.false_alarm_s) / self.speech_s if self.speech_s else 0.0

    def rate(self, part: str) -> float:
        return getattr(self, f"{part}_s") / self.speech_s if self.speech_s else 0.0


def _grid(turns: Sequence[Turn], n: int, names: list[str]) -> np.ndarray:
    grid = np.zeros((len(names), n), dtype=bool)
    for t in turns:
        grid[names.index(t.speaker), round(t.start / STEP_S) : round(t.end / STEP_S)] = True
    return grid


def diarization_error(reference: Sequence[Turn], hypothesis: Sequence[Turn], collar: float = 0.25) -> DER:
    """DER of ``hypothesis`` against ``reference``; frames within ``collar / 2`` of a reference edge are unscored."""
    from scipy.optimize import linear_sum_assignment

    end = max([t.end for t in (*reference, *hypothesis)], default=0.0)
    n = int(np.ceil(end / STEP_S)) + 1
    ref_names = sorted({t.speaker for t in reference})
    hyp_names = sorted({t.speaker for t in hypothesis})
    ref, hyp = _grid(reference, n, ref_names), _grid(hypothesis, n, hyp_names)
    scored = np.ones(n, dtype=bool)
    half = round(collar / 2 / STEP_S)
    for t in reference:
        for edge in (t.start, t.end):
            i = round(edge / STEP_S)
            scored[max(0, i - half) : i + half] = False
    ref, hyp = ref[:, scored], hyp[:, scored]
    n_ref, n_hyp = ref.sum(axis=0), hyp.sum(axis=0)
    correct = 0
    if ref_names and hyp_names:
        overlap = ref.astype(np.int64) @ hyp.T.astype(np.int64)
        rows, cols = linear_sum_assignment(-overlap)
        correct = int(overlap[rows, cols].sum())
    miss = np.maximum(n_ref - n_hyp, 0).sum()
    false_alarm = np.maximum(n_hyp - n_ref, 0).sum()
    confusion = np.minimum(n_ref, n_hyp).sum() - correct
    return DER(
        confusion_s=round(confusion * STEP_S, 3),
        miss_s=round(miss * STEP_S, 3),
        false_alarm_s=round(false_alarm * STEP_S, 3),
        speech_s=round(n_ref.sum() * STEP_S, 3),
    )
