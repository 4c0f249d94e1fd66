"""What a fine-tuning experiment reports: base-vs-tuned tables, loss and WER curves, worst utterances.

Plain functions over the Trainer's log history and :class:`whisperops.evaluation.compare.Comparison`
objects, shared by ``FineTuneFlow``'s card and tests. matplotlib is imported where it is drawn.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from whisperops.evaluation.compare import Comparison
from whisperops.evaluation.metrics import pct, relative_change

TABLE_COLUMNS = (
    "set",
    "utterances",
    "base WER",
    "tuned WER",
    "WER change",
    "base CER",
    "tuned CER",
    "CER change",
)


def curves(history: Sequence[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """(step, value) series from a Trainer ``log_history``: train loss, eval loss, eval WER."""
    out: dict[str, list[tuple[int, float]]] = {"loss": [], "eval_loss": [], "eval_wer": []}
    for entry in history:
        step = entry.get("step")
        if step is None:
            continue
        for key in out:
            if entry.get(key) is not None:
                out[key].append((int(step), float(entry[key])))
    return out


def plot_history(history: Sequence[dict[str, Any]]) -> bytes:
    """PNG: training and eval loss (left) and eval WER (right) against the optimizer step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = curves(history)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=100)
    for key, label in (("loss", "train loss"), ("eval_loss", "eval loss")):
        if series[key]:
            xs, ys = zip(*series[key], strict=True)
            axes[0].plot(xs, ys, marker="o" if len(xs) < 30 else None, label=label)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("cross-entropy")
    axes[0].set_title("Loss")
    axes[0].legend()
    if series["eval_wer"]:
        xs, ys = zip(*series["eval_wer"], strict=True)
        axes[1].plot(xs, [100 * y for y in ys], marker="o", color="tab:red")
        best = min(series["eval_wer"], key=lambda p: (p[1], -p[0]))
        axes[1].annotate(
            f"best {100 * best[1]:.1f}%", (best[0], 100 * best[1]), textcoords="offset points", xytext=(4, 6)
        )
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("eval WER (%)")
    axes[1].set_title("Eval WER (picks the exported checkpoint)")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def summary(comparisons: dict[str, Comparison]) -> dict[str, dict[str, Any]]:
    """Per evaluation set: base and tuned WER/CER and their relative changes (base is the first model)."""
    out: dict[str, dict[str, Any]] = {}
    for name, comp in comparisons.items():
        base, tuned = comp.models[0], comp.models[-1]
        out[name] = {
            "utterances": comp.dataset.get("scored_rows"),
            "base_wer": base.wer,
            "tuned_wer": tuned.wer,
            "wer_relative_change": relative_change(tuned.wer, base.wer)
            if base.wer is not None and tuned.wer is not None
            else None,
            "base_cer": base.cer,
            "tuned_cer": tuned.cer,
            "cer_relative_change": relative_change(tuned.cer, base.cer)
            if base.cer is not None and tuned.cer is not None
            else None,
            "base_error": base.error,
            "tuned_error": tuned.error,
        }
    return out


def table_rows(comparisons: dict[str, Comparison]) -> list[list[str]]:
    """The base-vs-tuned table as strings (``TABLE_COLUMNS`` order), one row per evaluation set."""
    rows = []
    for name, s in summary(comparisons).items():
        rows.append(
            [
                name,
                str(s["utterances"]),
                pct(s["base_wer"]) if not s["base_error"] else f"failed: {s['base_error']}",
                pct(s["tuned_wer"]) if not s["tuned_error"] else f"failed: {s['tuned_error']}",
                pct(s["wer_relative_change"], signed=True),
                pct(s["base_cer"]),
                pct(s["tuned_cer"]),
                pct(s["cer_relative_change"], signed=True),
            ]
        )
    return rows


def worst_markdown(comp: Comparison, n: int = 5) -> str:
    """Markdown: each model's ``n`` worst utterances with aligned REF/HYP differences."""
    parts = []
    for m in comp.models:
        if m.score is None:
            continue
        bad = m.score.worst(n)
        parts.append(f"### {m.name}")
        if not bad:
            parts.append("No errors.")
        for u in bad:
            parts.append(f"**{u.id}**: WER {u.wer * 100:.0f}% ({u.substitutions} S, {u.deletions} D, {u.insertions} I)")
            parts.append("```\n" + u.diff() + "\n```")
    return "\n\n".join(parts)
