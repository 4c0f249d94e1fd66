"""``whisperops evaluate``: WER/CER, speed and memory of N models on one dataset, side by side."""

from __future__ import annotations

from pathlib import Path

import typer

from whisperops.cli.app import app, console, err_console
from whisperops.cli.options import option
from whisperops.config import default_of
from whisperops.engine import EngineConfig
from whisperops.evaluation.settings import EvalSettings

EXIT_SOME_FAILED = 1


@app.command("evaluate")
def evaluate_cmd(
    manifest: Path = typer.Option(
        ..., "--manifest", "-d", help="JSONL manifest, audiofolder CSV (file_name,transcription), or a folder."
    ),
    models: list[str] = typer.Option(
        [default_of(EngineConfig, "model")],
        "--model",
        "-m",
        help="Repeat for each model; the first is the baseline. NAME=DIR labels a dir.",
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Write every number and utterance as JSON here."),
    html_out: Path | None = typer.Option(None, "--html", help="Write the trade-off report (table, plots) here."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Leave bad rows out (counted) instead of stopping."),
    normalize: bool = option(EvalSettings, "normalize", "--normalize/--no-normalize"),
    language: str | None = option(EvalSettings, "language", "--language", "-l"),
    beam_size: int = option(EvalSettings, "beam_size", "--beam-size"),
    vad: bool = option(EvalSettings, "vad_filter", "--vad/--no-vad"),
    batch_size: int = option(EvalSettings, "batch_size", "--batch-size"),
    device: str = option(EvalSettings, "device", "--device"),
    compute_type: str = option(EvalSettings, "compute_type", "--compute-type"),
    threads: int = option(EvalSettings, "cpu_threads", "--threads"),
    limit: int = typer.Option(0, "--limit", help="Only the first N rows (0: all)."),
    worst: int = typer.Option(5, "--worst", help="How many worst utterances to show per model."),
    isolate: bool = option(EvalSettings, "isolate", "--isolate/--in-process"),
) -> None:
    """Compare models on a dataset: WER, CER, S/D/I, speed (audio s per wall s), peak memory, WER vs first."""
    from whisperops.data.manifest import load_dataset
    from whisperops.engine import DecodeOptions
    from whisperops.evaluation.compare import compare

    # Validate decoding options before the dataset is probed and any model loads.
    DecodeOptions(language=language, beam_size=beam_size, batch_size=batch_size)
    dataset = load_dataset(manifest, skip_bad=skip_bad)
    rows = list(dataset)[:limit] if limit > 0 else list(dataset)
    for bad in dataset.skipped:
        err_console.print(f"[yellow]skipped:[/] {bad}", highlight=False, soft_wrap=True)
    settings = EvalSettings(
        beam_size=beam_size,
        language=language if language not in (None, "", "auto") else None,
        vad_filter=vad,
        batch_size=batch_size,
        compute_type=compute_type,
        device=device,
        cpu_threads=threads,
        normalize=normalize,
        isolate=isolate,
    )
    err_console.print(
        f"{len(rows)} utterances from {dataset.source}"
        + (f" ({len(dataset.skipped)} bad rows skipped)" if dataset.skipped else ""),
        highlight=False,
    )

    def done(run) -> None:
        status = f"[red]failed: {run.error}" if run.error else f"{run.audio_s:.0f} s of audio in {run.wall_s:.1f} s"
        err_console.print(f"  {run.name}: {status}", highlight=False, soft_wrap=True)

    summary = dataset.summary()
    summary["evaluated_rows"] = len(rows)
    result = compare(models, rows, settings, dataset=summary, on_model_done=done)
    print_table(result, worst)
    if json_out is not None:
        import json

        from whisperops.paths import atomic_write_text

        atomic_write_text(json_out, json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n")
        console.print(f"JSON written to {json_out}", highlight=False)
    if html_out is not None:
        from whisperops.evaluation.report import write_html

        write_html(result, html_out)
        console.print(f"HTML report written to {html_out}", highlight=False)
    if any(m.error for m in result.models) or result.excluded:
        raise typer.Exit(EXIT_SOME_FAILED)


def print_table(result, worst: int = 5) -> None:
    from rich.table import Table

    from whisperops.evaluation.metrics import pct

    table = Table(title=f"evaluation on {result.dataset.get('scored_rows', 0)} utterances")
    for col in ("model", "WER", "CER", "S/D/I", "WER vs first", "speed", "peak MB", "model MB", "load s"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for m in result.models:
        if m.error:
            table.add_row(m.name, "[red]failed", "", "", "", "", "", "", "")
            continue
        table.add_row(
            m.name,
            pct(m.wer),
            pct(m.cer),
            f"{m.substitutions}/{m.deletions}/{m.insertions}",
            "baseline" if m is result.models[0] else pct(m.wer_rel, signed=True),
            f"{m.speed_x:.1f}x" if m.speed_x else "-",
            f"{m.peak_mb:.0f}",
            f"{m.model_mb:.0f}",
            f"{m.load_s:.1f}",
        )
    console.print(table)
    for m in result.models:
        if m.error:
            err_console.print(f"[red]{m.name} failed:[/] {m.error}", highlight=False, soft_wrap=True)
            continue
        if worst > 0 and m.score is not None:
            for u in m.score.worst(worst):
                console.print(f"[bold]{m.name}[/] {u.id}  WER {u.wer * 100:.0f}%", highlight=False)
                console.print(u.diff(), highlight=False, markup=False)
    for ex in result.excluded:
        err_console.print(f"[yellow]not scored:[/] {ex['id']}: {ex['reason']}", highlight=False, soft_wrap=True)
