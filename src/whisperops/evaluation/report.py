"""The model-size trade-off report: one self-contained HTML page (table, plots, worst utterances).

Plots are matplotlib PNGs embedded as base64 so the page can be mailed or attached as one file;
the same pieces (``plot_tradeoff``, ``table_rows``, ``diff_html``) feed the EvaluationFlow card.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from whisperops.evaluation.compare import Comparison, ModelResult
from whisperops.evaluation.metrics import AlignedWord, UtteranceScore, pct
from whisperops.paths import atomic_write_text

COLUMNS = (
    "model",
    "WER",
    "CER",
    "subs",
    "dels",
    "ins",
    "WER vs first",
    "speed (audio s / wall s)",
    "peak MB",
    "model MB",
)


def table_rows(result: Comparison) -> list[list[str]]:
    """The comparison table as strings, one row per model (``COLUMNS`` order)."""
    rows = []
    for i, m in enumerate(result.models):
        if m.error:
            rows.append([m.name, "failed", m.error, "", "", "", "", "", "", ""])
            continue
        rows.append(
            [
                m.name,
                pct(m.wer),
                pct(m.cer),
                str(m.substitutions),
                str(m.deletions),
                str(m.insertions),
                "baseline" if i == 0 else pct(m.wer_rel, signed=True),
                f"{m.speed_x:.1f}x" if m.speed_x else "-",
                f"{m.peak_mb:.0f}",
                f"{m.model_mb:.0f}",
            ]
        )
    return rows


def plot_tradeoff(models: Sequence[ModelResult]) -> bytes:
    """PNG: WER against speed (left) and against peak memory (right), one labelled point per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [m for m in models if m.wer is not None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    for ax, attr, label in (
        (axes[0], "speed_x", "speed (audio s per wall s, higher is faster)"),
        (axes[1], "peak_mb", "peak memory (MB, process high-water mark)"),
    ):
        for m in ok:
            x = getattr(m, attr) or 0.0
            ax.scatter([x], [m.wer * 100], s=60)
            ax.annotate(m.name, (x, m.wer * 100), textcoords="offset points", xytext=(6, 4), fontsize=9)
        ax.set_xlabel(label)
        ax.set_ylabel("WER (%)")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0, top=max([m.wer * 100 for m in ok] + [1.0]) * 1.25)
        if ok:
            xs = [getattr(m, attr) or 0.0 for m in ok]
            ax.set_xlim(left=0, right=max(xs) * 1.3 or 1.0)
    axes[0].set_title("WER vs speed")
    axes[1].set_title("WER vs memory")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _word(a: AlignedWord) -> str:
    ref, hyp = html.escape(a.ref or ""), html.escape(a.hyp or "")
    if a.op == "equal":
        return ref
    if a.op == "substitute":
        return f'<del class="s">{ref}</del><ins class="s">{hyp}</ins>'
    if a.op == "delete":
        return f'<del class="d">{ref}</del>'
    return f'<ins class="i">{hyp}</ins>'


def diff_html(u: UtteranceScore) -> str:
    """One line of the aligned words: struck-out reference words, inserted hypothesis words."""
    return " ".join(_word(a) for a in u.alignment)


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}th{background:#f4f4f4}
del{background:#fdd;text-decoration:line-through}ins{background:#dfd;text-decoration:none}
del.d{background:#fbb}ins.i{background:#bfb}.diff{font-family:monospace;line-height:1.8}
.meta{color:#666;font-size:.9em}pre{background:#f8f8f8;padding:.5em;overflow-x:auto}
"""


def render_html(result: Comparison, worst: int = 10) -> str:
    e = html.escape
    ds = result.dataset
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>whisperops evaluation</title>",
        f"<style>{_CSS}</style></head><body><h1>Model comparison</h1>",
        f"<p class='meta'>dataset {e(str(ds.get('source', '')))}: {ds.get('scored_rows', 0)} utterances scored"
        f"{', ' + str(ds.get('skipped', 0)) + ' bad rows skipped' if ds.get('skipped') else ''}"
        f"{', ' + str(len(result.excluded)) + ' not scored (failed in some model)' if result.excluded else ''}. "
        f"Settings: {e(_settings_line(result.settings))}.</p>",
        "<table><tr>" + "".join(f"<th>{e(c)}</th>" for c in COLUMNS) + "</tr>",
    ]
    for row in table_rows(result):
        parts.append("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>")
    parts.append("</table>")
    parts.append(
        "<p class='meta'>WER vs first: relative change against the first model, (WER − WER<sub>first</sub>)"
        " / WER<sub>first</sub>. Peak MB: the evaluating process's high-water mark; model MB: that minus the"
        " process before the weights loaded.</p>"
    )
    if any(m.wer is not None for m in result.models):
        png = base64.b64encode(plot_tradeoff(result.models)).decode()
        parts.append(f"<h2>Trade-off</h2><img alt='WER against speed and memory' src='data:image/png;base64,{png}'>")
    for m in result.models:
        if m.score is None:
            continue
        parts.append(f"<h2>Worst utterances: {e(m.name)}</h2>")
        bad = m.score.worst(worst)
        if not bad:
            parts.append("<p>No errors.</p>")
        for u in bad:
            parts.append(
                f"<h3>{e(u.id)} <span class='meta'>WER {u.wer * 100:.0f}% "
                f"({u.substitutions} S, {u.deletions} D, {u.insertions} I of {u.ref_words} words)</span></h3>"
                f"<p class='diff'>{diff_html(u)}</p><pre>{e(u.diff())}</pre>"
            )
    for ex in result.excluded:
        parts.append(f"<p class='meta'>not scored: {e(ex['id'])}: {e(ex['reason'])}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _settings_line(settings: dict[str, Any]) -> str:
    keys = ("beam_size", "compute_type", "vad_filter", "language", "normalize", "cpu_threads")
    return ", ".join(f"{k}={settings.get(k)}" for k in keys if k in settings)


def write_html(result: Comparison, path: Path, worst: int = 10) -> Path:
    path = Path(path)
    atomic_write_text(path, render_html(result, worst))
    return path
