"""Normalisers and WER/CER: exact counts on hand-checked examples, and agreement with references."""

from __future__ import annotations

import json

import pytest

from whisperops.evaluation.metrics import cer, format_alignment, relative_change, score, score_utterance, wer
from whisperops.evaluation.normalize import normalize, normalizer_for


def test_english_normaliser_folds_case_punctuation_numbers_and_spelling() -> None:
    assert normalize("Hello, World!") == "hello world"
    assert normalize("The colour of twenty-five apples.") == "the color of 25 apples"
    assert normalize("Mr. Smith won't go") == "mister smith will not go"
    assert normalize("Um, I think so") == "i think so"  # fillers dropped


def test_basic_normaliser_for_other_languages_keeps_letters() -> None:
    assert normalize("Ça va, très bien!", language="fr") == "ça va très bien"
    # English rules (numbers, spelling) do not apply to German
    assert normalize("Zwanzig Äpfel.", language="de") == "zwanzig äpfel"
    # scripts without spaces are split into graphemes
    assert normalize("你好世界", language="zh") == "你 好 世 界"


def test_normaliser_can_be_switched_off() -> None:
    assert normalize("Hello,   World!", enabled=False) == "Hello, World!"
    assert wer("Hello, world!", "hello world", normalize=False) == 1.0
    assert wer("Hello, world!", "hello world") == 0.0


def test_english_normaliser_matches_transformers_copy(shared_manifest: list[dict]) -> None:
    """whisper-normalizer and transformers hold independent copies of openai's code: same output."""
    pytest.importorskip("transformers")
    from importlib.resources import files

    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    mapping = json.loads(files("whisper_normalizer").joinpath("normalizers/english.json").read_text())
    reference = EnglishTextNormalizer(mapping)
    ours = normalizer_for("en")
    texts = [row["text"] for row in shared_manifest] + ["It's 3:30 pm, £5.50 or 10% — colour/honour, 1st & 2nd."]
    for text in texts:
        assert ours(text) == " ".join(reference(text).split()), text


def test_counts_and_alignment() -> None:
    u = score_utterance("the cat sat on the mat", "the big cat sit on mat")
    assert (u.substitutions, u.deletions, u.insertions, u.hits, u.ref_words) == (1, 1, 1, 4, 6)
    assert u.wer == pytest.approx(3 / 6)
    assert u.diff().splitlines() == [
        "REF: the *   cat sat on the mat",
        "HYP: the big cat sit on *   mat",
        "         I       S      D",
    ]
    assert [a.op for a in u.alignment].count("equal") == 4


def test_corpus_wer_is_pooled_not_averaged() -> None:
    refs = ["alpha bravo charlie delta echo fox golf hotel india juliet", "yes"]
    hyps = ["alpha bravo charlie delta echo fox golf hotel india juliet", "no"]
    s = score(refs, hyps, ids=["long", "short"])
    assert s.wer == pytest.approx(1 / 11)  # the mean of per-utterance WERs would be 0.5
    assert [u.wer for u in s.utterances] == [0.0, 1.0]
    assert s.worst(5)[0].id == "short" and len(s.worst(5)) == 1


def test_cer_and_empty_references() -> None:
    assert cer("abcd", "abxd", normalize=False) == pytest.approx(0.25)
    s = score(["", "hello"], ["something here", "hello"])
    assert s.utterances[0].insertions == 2 and s.utterances[0].wer == 1.0
    assert s.wer == pytest.approx(2 / 1)
    assert score([""], [""]).wer == 0.0


def test_relative_change() -> None:
    assert relative_change(0.069, 0.1) == pytest.approx(-0.31)
    assert relative_change(0.0, 0.0) == 0.0
    assert relative_change(0.1, 0.0) is None


def test_format_alignment_empty() -> None:
    assert format_alignment([]) == "REF:\nHYP:\n"
    assert score_utterance("", "").wer == 0.0
