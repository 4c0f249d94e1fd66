"""``whisperops runs``: the TranscriptionFlow runs in Metaflow's datastore, and their transcripts."""

from __future__ import annotations

from pathlib import Path

import typer

from whisperops.cli.app import app, console, err_console

runs_app = typer.Typer(
    help="List TranscriptionFlow runs (id, status, items, audio hours) or show one run's results.",
    invoke_without_command=True,
    no_args_is_help=False,
)
app.add_typer(runs_app, name="runs")


@runs_app.callback()
def runs_list(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", "-n", help="How many recent runs to list."),
) -> None:
    """List recent runs, newest first."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from whisperops.flows.runs import list_runs

    table = Table(title="TranscriptionFlow runs")
    table.add_column("run id", no_wrap=True)
    for col in ("status", "created", "items", "failed", "audio h", "wall s"):
        table.add_column(col)
    for r in list_runs(limit):
        table.add_row(
            r.id,
            r.status,
            r.created,
            *("-" if v is None else str(v) for v in (r.items, r.failed, r.audio_hours, r.wall_s)),
        )
    console.print(table)


@runs_app.command("show")
def runs_show(
    run_id: str = typer.Argument(..., help="Run id (or TranscriptionFlow/ID), as `whisperops runs` lists."),
    fmt: str = typer.Option("table", "--format", "-f", help="table, or a transcript format: txt,srt,vtt,tsv,json."),
    item: str | None = typer.Option(None, "--item", help="Only this item (its output name)."),
    output_dir: Path | None = typer.Option(None, "--output-dir", "-o", help="Write files here instead of printing."),
) -> None:
    """Show one run: its per-item table, or its transcripts in a subtitle/text format."""
    from whisperops.errors import OptionError
    from whisperops.flows.runs import card_path, get_run, item_results
    from whisperops.writers import WRITERS, parse_formats, write_all

    run = get_run(run_id)
    if not run.successful:
        raise OptionError(
            f"run {run_id}: did not finish successfully; resume it or pick another from `whisperops runs`"
        )
    results = item_results(run)
    if item is not None:
        results = [r for r in results if r.item.name == item]
        if not results:
            raise OptionError(f"--item {item}: not in run {run_id}; `whisperops runs show {run_id}` lists its items")
    if fmt == "table":
        from whisperops.cli.transcribe import print_summary

        summary = run.data.summary
        console.print(
            f"run {run.pathspec}: {summary['items']} items, {summary['audio_hours']:.3f} h audio, "
            f"{summary['wall_s']:.1f} s wall, {summary['speed']:.1f}x real time",
            highlight=False,
        )
        print_summary(results, Path(run.data.output_dir or "(datastore only)"))
        console.print(f"card: {card_path(run) or '(none)'}", highlight=False, soft_wrap=True)
        return
    formats = parse_formats(fmt)
    for r in results:
        if r.transcript is None:
            err_console.print(f"[red]failed:[/] {r.error}", highlight=False, soft_wrap=True)
            continue
        if output_dir is not None:
            for path in write_all(r.transcript, output_dir, r.item.name, formats):
                console.print(str(path), highlight=False)
            continue
        for f in formats:
            if len(results) > 1 or len(formats) > 1:
                typer.echo(f"==> {r.item.name}.{f} <==")
            typer.echo(WRITERS[f]().render(r.transcript))
