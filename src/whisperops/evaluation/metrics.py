"""Word and character error rates with jiwer: corpus totals, per-utterance scores, aligned diffs.

Corpus WER is ``(S + D + I) / N`` summed over utterances (what jiwer computes for lists, and what
papers report), never the mean of per-utterance WERs, which over-weights short clips.

Quick use::

    from whisperops.evaluation.metrics import wer, cer, score
    wer(["Hello, world!"], ["hello world"])          # 0.0 after Whisper's English normaliser
    s = score(refs, hyps, ids=ids)                    # CorpusScore with S/D/I and utterances
    print(s.worst(5)[0].diff())                       # REF/HYP/ops lines for the worst utterance
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from whisperops.evaluation.normalize import normalizer_for


@dataclass
class AlignedWord:
    """One step of the word alignment: ``op`` is ``equal``, ``substitute``, ``delete`` or ``insert``."""

    op: str
    ref: str | None
    hyp: str | None


@dataclass
class UtteranceScore:
    id: str
    reference: str  # as given
    hypothesis: str  # as given
    ref_norm: str  # after normalisation: what was scored
    hyp_norm: str
    wer: float  # errors / reference words; an empty reference scores 0.0 if the hypothesis is empty too, else 1.0
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    ref_words: int
    char_errors: int
    ref_chars: int
    alignment: list[AlignedWord] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    def diff(self) -> str:
        """Three aligned lines, ``REF:``, ``HYP:`` and the op under each column (S, D, I)."""
        return format_alignment(self.alignment)

    def to_dict(self, alignment: bool = False) -> dict[str, Any]:
        data = asdict(self)
        data.pop("alignment")
        data["errors"] = self.errors
        if alignment:
            data["alignment"] = [asdict(a) for a in self.alignment]
            data["diff"] = self.diff()
        return data


@dataclass
class CorpusScore:
    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    ref_words: int
    char_errors: int
    ref_chars: int
    utterances: list[UtteranceScore]

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    def worst(self, n: int = 10) -> list[UtteranceScore]:
        """The ``n`` utterances with the most word errors (ties: higher WER first)."""
        ranked = sorted(self.utterances, key=lambda u: (u.errors, u.wer), reverse=True)
        return [u for u in ranked[:n] if u.errors > 0]

    def summary(self) -> dict[str, Any]:
        """Totals only (no utterances)."""
        data = {k: v for k, v in asdict(self).items() if k != "utterances"}
        data["errors"] = self.errors
        return data


def _rate(errors: int, total: int) -> float:
    if total == 0:
        return 0.0 if errors == 0 else 1.0
    return errors / total


def align_words(ref_words: Sequence[str], hyp_words: Sequence[str], chunks: Sequence[Any]) -> list[AlignedWord]:
    """Expand jiwer's alignment chunks into one entry per word."""
    out: list[AlignedWord] = []
    for c in chunks:
        refs = list(ref_words[c.ref_start_idx : c.ref_end_idx])
        hyps = list(hyp_words[c.hyp_start_idx : c.hyp_end_idx])
        if c.type == "equal" or c.type == "substitute":
            out.extend(AlignedWord(c.type, r, h) for r, h in zip(refs, hyps, strict=True))
        elif c.type == "delete":
            out.extend(AlignedWord("delete", r, None) for r in refs)
        else:
            out.extend(AlignedWord("insert", None, h) for h in hyps)
    return out


_OP_MARK = {"equal": " ", "substitute": "S", "delete": "D", "insert": "I"}


def format_alignment(alignment: Sequence[AlignedWord]) -> str:
    """``REF:``/``HYP:`` lines padded column by column, ``*`` for a missing word, ops underneath."""
    ref_line, hyp_line, op_line = ["REF:"], ["HYP:"], ["    "]
    for a in alignment:
        ref, hyp = a.ref if a.ref is not None else "*", a.hyp if a.hyp is not None else "*"
        width = max(len(ref), len(hyp))
        ref_line.append(ref.ljust(width))
        hyp_line.append(hyp.ljust(width))
        op_line.append(_OP_MARK[a.op].ljust(width))
    return "\n".join(" ".join(line).rstrip() for line in (ref_line, hyp_line, op_line))


def score_utterance(
    reference: str,
    hypothesis: str,
    *,
    id: str = "",
    language: str | None = "en",
    normalize: bool = True,
) -> UtteranceScore:
    """Score one utterance after the normaliser for ``language`` (see :mod:`.normalize`)."""
    import jiwer

    norm = normalizer_for(language, normalize)
    ref_n, hyp_n = norm(reference), norm(hypothesis)
    ref_w, hyp_w = ref_n.split(), hyp_n.split()
    if ref_w:
        w = jiwer.process_words(ref_n, hyp_n if hyp_w else "")
        s, d, i, h = w.substitutions, w.deletions, w.insertions, w.hits
        alignment = align_words(w.references[0], w.hypotheses[0], w.alignments[0])
    else:
        # jiwer versions disagree on empty references: every hypothesis word is an insertion.
        s, d, i, h = 0, 0, len(hyp_w), 0
        alignment = [AlignedWord("insert", None, x) for x in hyp_w]
    if ref_n:
        c = jiwer.process_characters(ref_n, hyp_n)
        char_errors = c.substitutions + c.deletions + c.insertions
    else:
        char_errors = len(hyp_n)
    return UtteranceScore(
        id=id,
        reference=reference,
        hypothesis=hypothesis,
        ref_norm=ref_n,
        hyp_norm=hyp_n,
        wer=_rate(s + d + i, len(ref_w)),
        cer=_rate(char_errors, len(ref_n)),
        substitutions=s,
        deletions=d,
        insertions=i,
        hits=h,
        ref_words=len(ref_w),
        char_errors=char_errors,
        ref_chars=len(ref_n),
        alignment=alignment,
    )


def score(
    references: Sequence[str],
    hypotheses: Sequence[str],
    *,
    ids: Sequence[str] | None = None,
    languages: Sequence[str | None] | str | None = "en",
    normalize: bool = True,
) -> CorpusScore:
    """Corpus WER/CER plus per-utterance scores. ``languages``: one code for all, or one per utterance."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    n = len(references)
    ids = list(ids) if ids is not None else [str(k) for k in range(n)]
    langs = [languages] * n if languages is None or isinstance(languages, str) else list(languages)
    utts = [
        score_utterance(r, h, id=i, language=lang, normalize=normalize)
        for r, h, i, lang in zip(references, hypotheses, ids, langs, strict=True)
    ]
    s = sum(u.substitutions for u in utts)
    d = sum(u.deletions for u in utts)
    i = sum(u.insertions for u in utts)
    ref_words = sum(u.ref_words for u in utts)
    char_errors = sum(u.char_errors for u in utts)
    ref_chars = sum(u.ref_chars for u in utts)
    return CorpusScore(
        wer=_rate(s + d + i, ref_words),
        cer=_rate(char_errors, ref_chars),
        substitutions=s,
        deletions=d,
        insertions=i,
        hits=sum(u.hits for u in utts),
        ref_words=ref_words,
        char_errors=char_errors,
        ref_chars=ref_chars,
        utterances=utts,
    )


def wer(
    references: Sequence[str] | str,
    hypotheses: Sequence[str] | str,
    *,
    language: str | None = "en",
    normalize: bool = True,
) -> float:
    """Corpus word error rate (a fraction: 0.081 is 8.1%) after Whisper's normaliser for ``language``."""
    return _score_texts(references, hypotheses, language, normalize).wer


def cer(
    references: Sequence[str] | str,
    hypotheses: Sequence[str] | str,
    *,
    language: str | None = "en",
    normalize: bool = True,
) -> float:
    """Corpus character error rate (spaces count as characters, as in jiwer) after normalisation."""
    return _score_texts(references, hypotheses, language, normalize).cer


def _score_texts(
    references: Sequence[str] | str, hypotheses: Sequence[str] | str, language: str | None, normalize: bool
) -> CorpusScore:
    """:func:`score` that also takes one reference/hypothesis pair as plain strings."""
    refs = [references] if isinstance(references, str) else references
    hyps = [hypotheses] if isinstance(hypotheses, str) else hypotheses
    return score(refs, hyps, languages=language, normalize=normalize)


def relative_change(value: float, baseline: float) -> float | None:
    """``(value - baseline) / baseline``: -0.31 reads "WER difference: -31%". None when the baseline is 0."""
    if baseline == 0:
        return None if value != 0 else 0.0
    return (value - baseline) / baseline


def pct(value: float | None, signed: bool = False) -> str:
    """A rate as a percentage for tables: ``0.0797`` -> ``7.97%``.

    ``signed`` formats a change (``-43.0%``); None (no value, e.g. a failed model) is ``-``.
    """
    if value is None:
        return "-"
    return f"{value * 100:+.1f}%" if signed else f"{value * 100:.2f}%"
