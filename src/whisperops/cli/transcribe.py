"""``whisperops transcribe``: sources in, transcripts and subtitles out, one summary table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from whisperops.cli.app import app, console, deferred_signals, err_console, progress_bar, raise_if_interrupted
from whisperops.cli.options import option
from whisperops.diarize import DiarizeSettings
from whisperops.engine import DecodeOptions, EngineConfig
from whisperops.errors import OptionError
from whisperops.writers import DEFAULT_FORMATS, FORMATS_HELP, SubtitleOptions

if TYPE_CHECKING:
    import asyncio

EXIT_SOME_FAILED = 1


@app.command("transcribe")
def transcribe_cmd(
    sources: list[str] = typer.Argument(
        ..., help="Files, folders (recursive), list files (.txt, one path/URL a line) or http(s) URLs."
    ),
    model: str = option(EngineConfig, "model", "--model", "-m"),
    output_dir: Path = typer.Option(Path("transcripts"), "--output-dir", "-o", help="Where outputs go."),
    formats: str = typer.Option(",".join(DEFAULT_FORMATS), "--formats", "-f", help=FORMATS_HELP),
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
    pack: bool = option(DecodeOptions, "pack", "--pack/--no-pack"),
    initial_prompt: str | None = option(DecodeOptions, "initial_prompt", "--initial-prompt"),
    hotwords: str | None = option(DecodeOptions, "hotwords", "--hotwords"),
    device: str = option(EngineConfig, "device", "--device"),
    compute_type: str = option(EngineConfig, "compute_type", "--compute-type"),
    threads: int = option(EngineConfig, "cpu_threads", "--threads"),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Reuse transcripts of identical audio."),
    in_process: bool | None = typer.Option(
        None,
        "--in-process/--flow",
        help="Transcribe here without Metaflow, or run the versioned, resumable Metaflow flow. "
        "Default: here for one local media file, the flow for anything else.",
        show_default=False,
    ),
    workers: int = typer.Option(0, "--workers", "-w", help="Parallel transcribe tasks (0: one per CPU core)."),
    shard_size: int = typer.Option(
        0, "--shard-size", help="About this many items per task, balancing decoding work (0: spread over the workers)."
    ),
    title: str = typer.Option("Transcription run", "--title", help="Title of the run's card."),
    diarize: bool = option(DiarizeSettings, "diarize", "--diarize"),
    num_speakers: int | None = option(DiarizeSettings, "num_speakers", "--num-speakers"),
    min_speakers: int | None = option(DiarizeSettings, "min_speakers", "--min-speakers"),
    max_speakers: int | None = option(DiarizeSettings, "max_speakers", "--max-speakers"),
    channels: str = option(DiarizeSettings, "channels", "--channels"),
) -> None:
    """Transcribe media into txt/srt/vtt/tsv/json, one file per item and format.

    A batch runs the Metaflow TranscriptionFlow (parallel shards, versioned results, a card); one
    local media file runs the same pipeline here, without Metaflow. --flow / --in-process force either.
    """
    from whisperops import checks
    from whisperops.engine import DecodeOptions
    from whisperops.writers import parse_formats

    # Usage errors surface here, before any model loads, task starts or file is written (exit code 2).
    fmt_list = parse_formats(formats)
    checks.check_count("--workers", workers, "one per CPU core")
    checks.check_count("--shard-size", shard_size, "spread over the workers")
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
        pack=pack,
        initial_prompt=initial_prompt,
        hotwords=hotwords,
    )
    speakers = _diarize_settings(diarize, num_speakers, min_speakers, max_speakers, channels)
    subtitles = SubtitleOptions(max_line_width, max_line_count, max_cue_duration)
    checks.check_run(model, device, compute_type, threads, options.language, options.task)
    checks.check_output_dir(output_dir)
    if in_process is None:
        in_process = runs_in_process(sources)
    if in_process:
        results = _transcribe_here(
            sources, model, output_dir, fmt_list, options, device, compute_type, threads, cache, speakers, subtitles
        )
    else:
        results = _transcribe_with_flow(
            sources,
            output_dir,
            fmt_list,
            workers,
            {
                "model": model,
                "language": options.language or "auto",
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
                "pack": pack,
                "initial_prompt": initial_prompt or "",
                "hotwords": hotwords or "",
                "device": device,
                "compute_type": compute_type,
                "threads": threads,
                "use_cache": cache,
                "shard_size": shard_size,
                "title": title,
                **_diarize_params(speakers),
            },
        )
    print_summary(results, output_dir)
    if any(not r.ok for r in results):
        raise typer.Exit(EXIT_SOME_FAILED)


def runs_in_process(sources: list[str]) -> bool:
    """The path a run takes when neither --flow nor --in-process is given: here for one local media file.

    One file gains nothing from the flow's parallel tasks and would pay its start-up (seconds) for
    a decode that takes about one; a batch keeps the flow's versioned, resumable runs and its card.
    """
    from whisperops.audio import is_media_path
    from whisperops.sources import is_url

    if len(sources) != 1 or is_url(sources[0]):
        return False
    path = Path(sources[0]).expanduser()
    return path.is_file() and is_media_path(path)


def _diarize_settings(diarize, num_speakers, min_speakers, max_speakers, channels) -> DiarizeSettings | None:
    """The diarization settings, checked (and the engine's weights found) before any audio is decoded."""
    settings = DiarizeSettings(diarize, num_speakers, min_speakers, max_speakers, channels)
    if not diarize:
        if num_speakers or min_speakers or max_speakers:
            raise OptionError("--num-speakers/--min-speakers/--max-speakers: add --diarize to use them")
        return None
    from whisperops.diarize.voice import weights_path

    weights_path()
    return settings


def _diarize_params(settings: DiarizeSettings | None) -> dict:
    """The flow's diarization parameters; counts left out are estimated."""
    if settings is None:
        return {}
    counts = {"num_speakers": settings.num_speakers, "min_speakers": settings.min_speakers}
    counts["max_speakers"] = settings.max_speakers
    return {"diarize": True, "channels": settings.channels, **{k: v for k, v in counts.items() if v is not None}}


def _transcribe_here(
    sources, model, output_dir, fmt_list, options, device, compute_type, threads, cache, speakers, subtitles
):
    from whisperops.engine import Engine
    from whisperops.pipeline import TranscriptCache, transcribe_items
    from whisperops.sources import resolve

    items = resolve(sources)
    engine = Engine(model, device=device, compute_type=compute_type, cpu_threads=threads)
    with deferred_signals(), RichProgress(len(items)) as progress:
        return transcribe_items(
            engine,
            items,
            options,
            output_dir=output_dir,
            formats=fmt_list,
            cache=TranscriptCache() if cache else None,
            progress=progress,
            diarize=speakers,
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
        # No pylint pass: its "Running pylint... Pylint not found" would reach the user's output.
        with Runner(str(FLOW_FILE), show_output=False, cwd=runtime_cwd(), pylint=False) as runner:
            try:
                executing = await runner.async_run(max_workers=workers, **params)
            except BaseException:  # stopped before the run had an id: stop what was started
                for command in list(runner.spm.commands.values()):
                    if command.process is not None:
                        await _stop(command.process)
                raise
            err_console.print(f"Metaflow run [bold]{executing.run.pathspec}[/]", highlight=False)
            try:
                await _follow(executing)
            except BaseException:  # Ctrl-C, SIGTERM (see cli.app.Interrupted) or a crash here
                await _stop(executing.command_obj.process, executing.run)
                raise
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


async def _stop(proc: asyncio.subprocess.Process, run: Any = None) -> None:
    """Stop the Metaflow runtime ``proc`` and its tasks, and tag ``run`` ``interrupted`` for ``whisperops runs``.

    A terminal's Ctrl-C reaches the runtime too (one process group) and it stops its own tasks; a
    SIGTERM or SIGINT sent to this process alone does not, so the runtime is sent SIGINT (it then
    kills its tasks), and anything still alive after that is killed.
    """
    import asyncio
    import contextlib
    import signal
    import subprocess

    from whisperops.flows.runs import mark_interrupted

    for sig, wait_s in ((None, 3.0), (signal.SIGINT, 10.0)):
        if proc.returncode is not None:
            break
        if sig is not None:
            proc.send_signal(sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), wait_s)
    if proc.returncode is None:
        subprocess.run(["pkill", "-KILL", "-P", str(proc.pid)], check=False)
        proc.kill()
    if run is None:
        return
    mark_interrupted(run)
    err_console.print(
        f"[yellow]interrupted[/]: run {run.pathspec} stopped; the transcript cache keeps every "
        "finished item, so running the same command again transcribes only the rest",
        highlight=False,
        soft_wrap=True,
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
            await asyncio.sleep(0.1)  # how long after the run ends this command can return


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
        raise_if_interrupted()
        self._progress.update(self._audio, description=f"[dim]{item.name[:40]}", completed=0, total=None)

    def audio_known(self, item, seconds: float) -> None:
        raise_if_interrupted()
        self._progress.update(self._audio, total=round(seconds))

    def segment_done(self, item, segment) -> None:
        raise_if_interrupted()  # before the item is cached or written: it may have been cut short
        self._progress.update(self._audio, completed=round(segment.end))

    def item_done(self, result) -> None:
        task = self._progress.tasks[self._audio]
        self._progress.update(self._audio, completed=task.total or 0)
        self._progress.advance(self._items)
        raise_if_interrupted()


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
        if t.warnings:
            status += f" ({len(t.warnings)} warning{'s' if len(t.warnings) > 1 else ''})"
        if not r.ok:
            status = "[red]failed"
        speed = f"{t.speed:.1f}x" if r.status == "ok" else "cached"
        text = t.text if len(t.text) <= 60 else t.text[:57] + "..."
        table.add_row(r.item.name, status, f"{t.duration:.1f}s", t.language, speed, text)
    console.print(table)
    failed = [r for r in results if not r.ok]
    for r in results:
        for warning in r.transcript.warnings if r.transcript else []:
            err_console.print(f"[yellow]warning:[/] {r.item.name}: {warning}", highlight=False, soft_wrap=True)
    for r in failed:
        err_console.print(f"[red]failed:[/] {r.error}", highlight=False, soft_wrap=True)
    done = len(results) - len(failed)
    written = any(r.outputs for r in results)
    where = f"; outputs in {output_dir}/" if written else ""
    console.print(f"{done} of {len(results)} items transcribed{where}", highlight=False)
