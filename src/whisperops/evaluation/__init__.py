"""Evaluation: Whisper text normalisation, WER/CER, model comparison and reports."""

from whisperops.evaluation.metrics import CorpusScore, UtteranceScore, cer, score, wer
from whisperops.evaluation.normalize import normalize, normalizer_for

__all__ = ["CorpusScore", "UtteranceScore", "cer", "normalize", "normalizer_for", "score", "wer"]
