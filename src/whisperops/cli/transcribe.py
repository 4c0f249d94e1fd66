"""``whisperops transcribe``: sources in, transcripts and subtitles out, one summary table."""

from __future__ import annotations

from pathlib import Path

import typer

from whisperops.cli.app import app, console, err_console, progress_bar
from whisperops.cli.options import option
from whisperops.engine import DecodeOptions, EngineConfig
from whisperops.writers import SubtitleOptions

EXIT_SOME_FAILED = 1


@app.command("transcribe")
def transcribe_cmd(
    sources: list[str] = typer.Argument(
        ..., help="Files, folders (recursive), list files (.txt, one path/URL a line) or http(s) URLs."
    ),
    model: str = option(EngineConfig, "model", "--model", "-m"),
    output_dir: Path = typer.Option(Path("transcripts"), "--output-dir", "-o", help="Where outputs go."),
    formats: str = typer.Option("txt,srt,vtt,json", "--formats", "-f", help="Comma list of txt,srt,vtt,tsv,json|all."),
    language: str = option(DecodeOptions, "language", "--language", "-l"),
    task: str = option(DecodeOptions, "task", "--task"),
    beam_size: int = option(DecodeOptions, "beam_size", "--beam-size"),
    batch_size: int = option(DecodeOptions, "batch_size", "--batch-size"),
    word_timestamps: bool = option(DecodeOptions, "word_timestamps", "--word-timestamps"),
    vad: bool = option(DecodeOptions, "vad_filter", "--vad/--no-vad"),
    vad_threshold: float = option(DecodeOptions, "vad_threshold", "--vad-threshold"),
    vad_min_silence_ms: int = option(DecodeOptions, "vad_min_silence_ms", "--vad-min-silence-ms"),
    vad_speech_pad_ms: int = option(DecodeOptions, "vad_speech_pad_ms", "--vad-speech-pad-ms"),
    vad_rescue: bool = option(DecodeOptions, "vad_rescue", "--vad-rescue/--no-vad-rescue"),
    max_line_width: int = option(SubtitleOptions, "max_line_width", "--max-line-width"),
    max_line_count: int = option(SubtitleOptions, "max_line_count", "--max-line-count"),
    max_cue_duration: float = option(SubtitleOptions, "max_cue_duration", "--max-cue-duration"),
    initial_prompt: str | None = option(DecodeOptions, "initial_prompt", "--initial-prompt"),
    hotwords: str | None = option(DecodeOptions, "hotwords", "--hotwords"),
    device: str = option(EngineConfig, "device", "--device"),
    compute_type: str = option(EngineConfig, "compute_type", "--compute-type"),
    threads: int = option(EngineConfig, "cpu_threads", "--threads"),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Reuse transcripts of identical audio."),
    in_process: bool = typer.Option(
        False, "--in-process", help="Skip Metaflow: transcribe here, one item after another (quick single files)."
    ),
    workers: int = typer.Option(0, "--workers", "-w", help="Parallel transcribe tasks (0: one per CPU core)."),
    shard_size: int = typer.Option(
        0, "--shard-size", help="About this many items per task, balancing decoding work (0: spread over the workers)."
    ),
    title: str = typer.Option("Transcription run", "--title", help="Title of the run's card."),
) -> None:
    """Transcribe media into txt/srt/vtt/tsv/json, one file per item and format.

    Runs the Metaflow TranscriptionFlow (parallel shards, versioned results, a card); --in-process
    runs the same pipeline here without Metaflow.
    """
    from whisperops.engine import DecodeOptions
    from whisperops.models import registry
    from whisperops.writers import parse_formats

    # Usage errors surface here, before anything runs or is written (exit code 2).
    fmt_list = parse_formats(formats)
    options = DecodeOptions(
        language=language,
        task=task,
        beam_size=beam_size,
        batch_size=batch_size,
        word_timestamps=word_timestamps,
        vad_filter=vad,
        vad_threshold=vad_threshold,
        vad_min_silence_ms=vad_min_silence_ms,
        vad_speech_pad_ms=vad_speech_pad_ms,
        vad_rescue=vad_rescue,
        initial_prompt=initial_prompt,
        hotwords=hotwords,
    )
    subtitles = SubtitleOptions(max_line_width, max_line_count, max_cue_duration)
    if in_process:
        results = _transcribe_here(
            sources, model, output_dir, fmt_list, options, device, compute_type, threads, cache, subtitles
        )
    else:
        registry.resolve(model)
        results = _transcribe_with_flow(
            sources,
            output_dir,
            fmt_list,
            workers,
            {
                "model": model,
                "language": language,
                "task": task,
                "beam_size": beam_size,
                "batch_size": batch_size,
                "word_timestamps": word_timestamps,
                "vad": vad,
                "vad_threshold": vad_threshold,
                "vad_min_silence_ms": vad_min_silence_ms,
                "vad_speech_pad_ms": vad_speech_pad_ms,
                "vad_rescue": vad_rescue,
                "max_line_width": max_line_width,
                "max_line_count": max_line_count,
                "max_cue_duration": max_cue_duration,
                "initial_prompt": initial_prompt or "",
                "hotwords": hotwords or "",
                "device": device,
                "compute_type": compute_type,
                "threads": threads,
                "use_cache": cache,
                "shard_size": shard_size,
                "title": title,
            },
        )
    print_summary(results, output_dir)
    if any(not r.ok for r in results):
        raise typer.Exit(EXIT_SOME_FAILED)


def _transcribe_here(sources, model, output_dir, fmt_list, options, device, compute_type, threads, cache, subtitles):
    from whisperops.engine import Engine
    from whisperops.pipeline import TranscriptCache, transcribe_items
    from whisperops.sources import resolve

    items = resolve(sources)
    engine = Engine(model, device=device, compute_type=compute_type, cpu_threads=threads)
    with RichProgress(len(items)) as progress:
        return transcribe_items(
            engine,
            items,
            options,
            output_dir=output_dir,
            formats=fmt_list,
            cache=TranscriptCache() if cache else None,
            progress=progress,
            subtitles=subtitles,
        )


def _transcribe_with_flow(sources, output_dir: Path, fmt_list, workers: int, params: dict):
    """Run TranscriptionFlow through Metaflow's Runner API, with a progress bar fed by the task logs."""
    import asyncio
    import json
    import os

    from whisperops.flows import FLOW_FILE, runtime_cwd
    from whisperops.flows.runs import card_path, item_results

    # isort: split
    # After whisperops.flows: it sets the environment metaflow reads on import.
    from metaflow import Runner

    cores = os.cpu_count() or 1
    workers = workers or cores
    params = {
        **params,
        # Split the cores between the parallel tasks instead of oversubscribing them.
        "threads": params["threads"] or max(1, cores // workers),
        # Tasks may run elsewhere (another cwd, a container): pass absolute paths.
        "sources": json.dumps([_absolute(s) for s in sources]),
        "output_dir": str(output_dir.resolve()),
        "formats": ",".join(fmt_list),
    }

    async def go():
        with Runner(str(FLOW_FILE), show_output=False, cwd=runtime_cwd()) as runner:
            executing = await runner.async_run(max_workers=workers, **params)
            err_console.print(f"Metaflow run [bold]{executing.run.pathspec}[/]", highlight=False)
            await _follow(executing)
            # Read the logs before the Runner's cleanup removes them.
            lines = (executing.stdout + executing.stderr).strip().splitlines()
            errors = [line for line in lines if "Error" in line or "failed" in line.lower()]
            tail = "\n".join(dict.fromkeys(errors[-6:] + lines[-4:]))
            return executing.status, executing.run, tail

    status, run, tail = asyncio.run(go())
    if status != "successful":
        err_console.print(tail, highlight=False, markup=False)
        err_console.print(
            f"[red]run {run.pathspec} failed[/]; finished shards are kept: "
            f"python -m whisperops.flows.transcription resume --origin-run-id {run.id}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(EXIT_SOME_FAILED)
    console.print(f"run id: {run.pathspec}", highlight=False)
    path = card_path(run)
    console.print(f"card: {path or '(none)'}", highlight=False, soft_wrap=True)
    return item_results(run)


def _absolute(source: str) -> str:
    from whisperops.sources import is_url

    return (
        source if is_url(source) or not Path(source).expanduser().exists() else str(Path(source).expanduser().resolve())
    )


async def _follow(executing) -> None:
    """Advance an items bar on each ``whisperops-progress`` line the tasks print."""
    import asyncio
    import json

    bar = progress_bar()
    items = bar.add_task("items", total=None)
    done, position = 0, 0
    with bar:
        while True:
            finished = executing.returncode is not None
            with open(executing.command_obj.log_files["stdout"], encoding="utf-8") as f:
                f.seek(position)
                chunk = f.read()
            complete, newline, _ = chunk.rpartition("\n")
            position += len(complete.encode()) + len(newline)
            for line in complete.splitlines():
                marker = line.find("whisperops-progress ")
                if marker < 0:
                    continue
                try:
                    event = json.loads(line[marker + len("whisperops-progress ") :])
                except ValueError:
                    continue
                if "total" in event:
                    done += event.get("done", 0)
                    bar.update(items, total=event["total"], completed=done)
                elif "item" in event:
                    done += 1
                    bar.update(items, completed=done, description=f"items [dim]{event['item'][:30]}")
                elif "summary" in event:
                    bar.update(items, description="items [dim]writing outputs and card")
            if finished:
                return
            await asyncio.sleep(0.3)


class RichProgress:
    """Two bars: items done, and audio seconds of the current item."""

    def __init__(self, total_items: int) -> None:
        self._progress = progress_bar()
        self._items = self._progress.add_task("items", total=total_items)
        self._audio = self._progress.add_task("audio s", total=None)

    def __enter__(self) -> RichProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def item_started(self, item) -> None:
        self._progress.update(self._audio, description=f"[dim]{item.name[:40]}", completed=0, total=None)

    def audio_known(self, item, seconds: float) -> None:
        self._progress.update(self._audio, total=round(seconds))

    def segment_done(self, item, segment) -> None:
        self._progress.update(self._audio, completed=round(segment.end))

    def item_done(self, result) -> None:
        task = self._progress.tasks[self._audio]
        self._progress.update(self._audio, completed=task.total or 0)
        self._progress.advance(self._items)


def print_summary(results, output_dir: Path) -> None:
    from rich.table import Table

    table = Table(title="transcription summary")
    for col in ("item", "status", "duration", "language", "speed", "text"):
        table.add_column(col, overflow="fold")
    for r in results:
        t = r.transcript
        if t is None:
            table.add_row(r.item.name, "[red]failed", "-", "-", "-", "")
            continue
        status = r.status if t.text else f"{r.status} (no speech)"
        speed = f"{t.speed:.1f}x" if r.status == "ok" else "cached"
        text = t.text if len(t.text) <= 60 else t.text[:57] + "..."
        table.add_row(r.item.name, status, f"{t.duration:.1f}s", t.language, speed, text)
    console.print(table)
    failed = [r for r in results if not r.ok]
    for r in failed:
        err_console.print(f"[red]failed:[/] {r.error}", highlight=False, soft_wrap=True)
    done = len(results) - len(failed)
    console.print(f"{done} of {len(results)} items transcribed; outputs in {output_dir}/", highlight=False)
