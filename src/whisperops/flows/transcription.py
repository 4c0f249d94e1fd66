"""TranscriptionFlow: transcribe files, folders, lists, URLs and playlists in parallel with Metaflow.

Run it with Metaflow's own CLI (local runtime and datastore unless your Metaflow config says otherwise)::

    python -m whisperops.flows.transcription run --sources '["talks/", "https://example.com/list"]' --model base
    python -m whisperops.flows.transcription run --sources talks/ --max-workers 2   # parallel shards
    python -m whisperops.flows.transcription resume                                # after a failure
    python -m whisperops.flows.transcription card view postprocess
    python -m whisperops.flows.transcription --with retry run --sources talks/
    python -m whisperops.flows.transcription --with kubernetes run --sources https://...   # remote tasks

or through ``whisperops transcribe`` (Metaflow's Runner API). Results are versioned in the datastore:
``Flow("TranscriptionFlow").latest_successful_run.data.results`` (a pandas DataFrame).

Scheduling: ``@schedule`` takes its cron from the ``schedule`` config, read when the flow is deployed
(``--config-value schedule_config '{"cron": "0 6 * * *"}' argo-workflows create``); the sources of scheduled runs
come from ``$WHISPEROPS_SOURCES`` at deploy time (a deploy-time parameter default).

Test-only: ``WHISPEROPS_TEST_CRASH_SHARD=N`` makes the transcribe task of shard N raise, to exercise
``resume`` (it re-runs that shard only; finished shards are cloned from the failed run).
"""

# isort: split
# Sets Metaflow's environment defaults (user name) before metaflow is imported.
import whisperops.flows  # noqa: F401

# isort: split
import os

from metaflow import Config, FlowSpec, Parameter, card, config_expr, current, schedule, step

from whisperops.diarize import DiarizeSettings
from whisperops.engine import DecodeOptions
from whisperops.flows import parameter
from whisperops.writers import DEFAULT_FORMATS, FORMATS_HELP, SubtitleOptions

CRASH_ENV = "WHISPEROPS_TEST_CRASH_SHARD"
SOURCES_ENV = "WHISPEROPS_SOURCES"


def _deploy_time_sources(context) -> str:
    """Default sources of a deployed (scheduled) flow: ``$WHISPEROPS_SOURCES`` when it is deployed."""
    return os.environ.get(SOURCES_ENV, "")


@schedule(cron=config_expr("schedule_config.get('cron')"), daily=config_expr("schedule_config.get('daily', True)"))
class TranscriptionFlow(FlowSpec):
    """Resolve sources, skip what the transcript cache knows, transcribe the rest in parallel shards,
    then write subtitles/transcripts and a card."""

    schedule_config = Config(
        "schedule_config",
        default_value={"cron": None, "daily": True},
        help="When a deployed flow runs: JSON {'cron': '0 6 * * *'} or {'daily': true} (used on deploy only).",
    )
    sources = Parameter(
        "sources",
        type=str,
        default=_deploy_time_sources,
        help="What to transcribe: a JSON list of files, folders, list files, URLs or playlists, or one "
        "such source (comma-separated also works). Defaults to $WHISPEROPS_SOURCES.",
    )
    model = Parameter("model", default="tiny.en", help="Registry name (tiny.en, base, ...) or CT2 model directory.")
    language = parameter(DecodeOptions, "language", "language")
    task = parameter(DecodeOptions, "task", "task")
    beam_size = parameter(DecodeOptions, "beam_size", "beam-size", type=int)
    batch_size = parameter(DecodeOptions, "batch_size", "batch-size", type=int)
    word_timestamps = parameter(DecodeOptions, "word_timestamps", "word-timestamps", type=bool)
    vad = Parameter("vad", type=bool, default=True, help="Skip non-speech with Silero VAD.")
    vad_threshold = parameter(DecodeOptions, "vad_threshold", "vad-threshold", type=float)
    vad_min_silence_ms = parameter(DecodeOptions, "vad_min_silence_ms", "vad-min-silence-ms", type=int)
    vad_speech_pad_ms = parameter(DecodeOptions, "vad_speech_pad_ms", "vad-speech-pad-ms", type=int)
    vad_rescue = parameter(DecodeOptions, "vad_rescue", "vad-rescue", type=bool)
    max_line_width = parameter(SubtitleOptions, "max_line_width", "max-line-width", type=int)
    max_line_count = parameter(SubtitleOptions, "max_line_count", "max-line-count", type=int)
    max_cue_duration = parameter(SubtitleOptions, "max_cue_duration", "max-cue-duration", type=float)
    pack = parameter(DecodeOptions, "pack", "pack", type=bool)
    initial_prompt = parameter(DecodeOptions, "initial_prompt", "initial-prompt")
    hotwords = parameter(DecodeOptions, "hotwords", "hotwords")
    formats = Parameter("formats", default=",".join(DEFAULT_FORMATS), help=FORMATS_HELP)
    output_dir = Parameter(
        "output-dir", default="", help="Where postprocess writes the output files (empty: datastore only)."
    )
    shard_size = Parameter(
        "shard-size",
        type=int,
        default=0,
        help="About this many items per transcribe task (shards balance decoding work); 0: one shard per CPU core.",
    )
    threads = Parameter(
        "threads", type=int, default=0, help="CPU threads per transcribe task; 0: cores divided by shards (min 1)."
    )
    device = Parameter("device", default="auto", help="auto, cpu or cuda.")
    compute_type = Parameter("compute-type", default="auto", help="auto (int8 CPU / float16 GPU) or a CT2 type.")
    use_cache = Parameter(
        "use-cache", type=bool, default=True, help="Reuse cached transcripts of identical audio (false: recompute)."
    )
    title = Parameter("title", default="Transcription run", help="Title shown on the card.")
    min_count = Parameter("min-count", type=int, default=2, help="Word map: only words said at least this often.")
    diarize = parameter(DiarizeSettings, "diarize", "diarize", type=bool)
    num_speakers = parameter(DiarizeSettings, "num_speakers", "num-speakers")
    min_speakers = parameter(DiarizeSettings, "min_speakers", "min-speakers")
    max_speakers = parameter(DiarizeSettings, "max_speakers", "max-speakers")
    channels = parameter(DiarizeSettings, "channels", "channels")

    @step
    def start(self):
        """Resolve sources into items (no downloads), answer what the transcript cache knows, shard the rest."""
        import json
        import math
        import time
        from dataclasses import asdict
        from pathlib import Path

        from whisperops import checks
        from whisperops.engine import packs
        from whisperops.models import registry
        from whisperops.pipeline import ItemResult, TranscriptCache, plan_shards
        from whisperops.sources import resolve
        from whisperops.writers import parse_formats

        self.started_at = time.time()
        self.source_list = parse_sources(self.sources)
        self.format_list = parse_formats(self.formats)
        self.options = DecodeOptions(
            language=self.language,
            task=self.task,
            beam_size=self.beam_size,
            batch_size=self.batch_size,
            word_timestamps=self.word_timestamps,
            vad_filter=self.vad,
            vad_threshold=self.vad_threshold,
            vad_min_silence_ms=self.vad_min_silence_ms,
            vad_speech_pad_ms=self.vad_speech_pad_ms,
            vad_rescue=self.vad_rescue,
            pack=self.pack,
            initial_prompt=self.initial_prompt or None,
            hotwords=self.hotwords or None,
        ).to_dict()
        self.subtitles = asdict(
            SubtitleOptions(self.max_line_width, self.max_line_count, self.max_cue_duration)
        )  # a bad layout fails here, before any decoding
        options = DecodeOptions(**self.options)
        # Every bad option fails here, once, in one line, before a transcribe task starts or a model loads.
        checks.check_count("--shard-size", self.shard_size, "one shard per CPU core")
        model_path, _, compute_type = checks.check_run(
            self.model, self.device, self.compute_type, self.threads, options.language, options.task
        )
        if self.output_dir:
            checks.check_output_dir(Path(self.output_dir))
        self.diarize_settings = diarize_settings(self)
        # A diarized item is labelled in its transcribe task, cached transcript or not.
        cache = TranscriptCache() if self.use_cache and not self.diarize_settings else None

        items = resolve(self.source_list)
        self.order = [item.name for item in items]
        self.early_results = []  # failed to resolve, or answered by the cache
        pending = []
        for item in items:
            if item.error:
                self.early_results.append(ItemResult(item, "failed", error=item.error).to_dict())
                continue
            hit = cache.lookup(item, model_path, compute_type, options) if cache else None
            if hit is not None:
                hit.source, hit.metadata = item.source, {**hit.metadata, **item.metadata}
                self.early_results.append(ItemResult(item, "cached", hit).to_dict())
            else:
                pending.append(item)

        size = self.shard_size or max(1, math.ceil(len(pending) / (os.cpu_count() or 1)))
        # Metaflow cannot foreach over nothing: one empty shard keeps the graph when all is cached.
        packed = packs(options, registry.is_multilingual(model_path))
        shards = plan_shards(pending, size, packed)
        self.shards = [[item.to_dict() for item in shard] for shard in shards] or [[]]
        print(
            f"{len(items)} items: {len(pending)} to transcribe in {len(self.shards)} shard(s), "
            f"{sum(r['status'] == 'cached' for r in self.early_results)} cached, "
            f"{sum(r['status'] == 'failed' for r in self.early_results)} failed to resolve"
        )
        print("whisperops-progress " + json.dumps({"total": len(items), "done": len(self.early_results)}))
        self.next(self.transcribe, foreach="shards")

    @step
    def transcribe(self):
        """Load the model once and transcribe this shard's items; a failing item is recorded, not raised."""
        import json
        import time
        from pathlib import Path

        from whisperops.engine import Engine
        from whisperops.pipeline import TranscriptCache, transcribe_items
        from whisperops.sources import MediaItem

        self.shard_index = self.index
        if os.environ.get(CRASH_ENV, "") == str(self.index):
            raise RuntimeError(f"{CRASH_ENV}={self.index}: injected crash (test only)")
        items = [MediaItem.from_dict(d) for d in self.input]
        self.item_results = []
        self.load_s = 0.0
        t0 = time.perf_counter()
        if items:
            threads = self.threads or max(1, (os.cpu_count() or 1) // len(self.shards))
            engine = Engine(self.model, device=self.device, compute_type=self.compute_type, cpu_threads=threads)
            self.load_s = engine.load_seconds
            results = transcribe_items(
                engine,
                items,
                DecodeOptions(**self.options),
                # Written as each item finishes (as --in-process does), so an interrupted run keeps them.
                output_dir=Path(self.output_dir) if self.output_dir else None,
                formats=self.format_list,
                cache=TranscriptCache() if self.use_cache else None,
                progress=_PrintProgress(),
                diarize=DiarizeSettings(**self.diarize_settings) if self.diarize_settings else None,
                subtitles=SubtitleOptions(**self.subtitles),
            )
            self.item_results = [r.to_dict() for r in results]
        self.task_s = time.perf_counter() - t0
        print("whisperops-progress " + json.dumps({"shard": self.index, "finished": True}))
        self.next(self.postprocess)

    @card(type="blank", id="report")
    @step
    def postprocess(self, inputs):
        """Gather all items into ``results`` (DataFrame) and ``transcripts``, write output files, render the card.

        Nothing here fails the run: a file that cannot be written fails its item, and a card that
        cannot be drawn is logged, since every transcript is already safe in the datastore.
        """
        import logging
        import time
        from pathlib import Path

        from whisperops.flows import report
        from whisperops.pipeline import write_outputs
        from whisperops.results import Transcript
        from whisperops.sources import MediaItem

        # Names are unique within a run (sources.resolve), so each row is its own item's.
        self.merge_artifacts(
            inputs, include=["started_at", "early_results", "order", "format_list", "model", "subtitles"]
        )
        by_name = {r["item"]["name"]: r for r in self.early_results}
        for inp in inputs:
            by_name.update({r["item"]["name"]: r for r in inp.item_results})
        rows = [by_name[name] for name in self.order if name in by_name]
        self.task_seconds = {inp.shard_index: round(inp.task_s, 3) for inp in inputs}

        if self.output_dir:
            for r in rows:
                done = r["outputs"] and all(Path(p).is_file() for p in r["outputs"])
                if r["transcript"] is None or done or r["status"] == "failed":
                    continue
                item = MediaItem.from_dict(r["item"])
                paths, error = write_outputs(
                    Transcript.from_dict(r["transcript"]),
                    Path(self.output_dir),
                    item,
                    self.format_list,
                    SubtitleOptions(**self.subtitles),
                )
                r["outputs"] = [str(p) for p in paths]
                if error:
                    r["status"], r["error"] = "failed", error
        self.outputs = {r["item"]["name"]: r["outputs"] for r in rows if r["outputs"]}
        self.transcripts = {r["item"]["name"]: r["transcript"] for r in rows if r["transcript"] is not None}
        # Per-item status without the (large) transcripts, for `whisperops runs show`, the CLI summary and end.
        self.items = [
            {**{k: v for k, v in r.items() if k != "transcript"}, "warnings": (r["transcript"] or {}).get("warnings")}
            for r in rows
        ]
        self.results = report.results_frame(rows)
        self.summary = report.summarize(self.results, time.time() - _run_started(self.started_at))
        try:
            report.render_card(
                current.card["report"],
                self.results,
                self.summary,
                title=self.title,
                model=self.model,
                min_count=self.min_count,
                transcripts=self.transcripts,
            )
        except Exception:  # the figures are a view of the results, which are already kept
            logging.getLogger(__name__).exception("card not rendered; the results are in the datastore")
        self.next(self.end)

    @step
    def end(self):
        """Say how many items were transcribed, cached and failed, and how to read the results."""
        import json

        s = self.summary
        print(
            f"{s['items']} items: {s['ok']} transcribed, {s['cached']} cached, {s['failed']} failed; "
            f"{s['audio_hours']:.3f} h of audio in {s['wall_s']:.1f} s ({s['speed']:.1f}x real time)"
        )
        # From ``items``, not the ``results`` DataFrame: this step need not import pandas to print lines.
        for row in self.items:
            if row.get("warnings"):
                print(f"warning: {row['item']['name']}: {'; '.join(row['warnings'])}")
        for row in self.items:
            if row["status"] == "failed":
                print(f"failed: {row['error']}")
        print(
            f"read them: Flow('{current.flow_name}')['{current.run_id}'].data.results, "
            f"`whisperops runs show {current.run_id}`, or `card view postprocess`"
        )
        print("whisperops-progress " + json.dumps({"summary": s}))


def _run_started(started_at: float) -> float:
    """When this run's work began: a resumed run counts from its resume, not from the original's start
    (``start`` is cloned on resume, ``started_at`` with it)."""
    if current.origin_run_id is None:
        return started_at
    try:
        from metaflow import Run, namespace

        namespace(None)
        created = Run(f"{current.flow_name}/{current.run_id}").created_at
        return created.timestamp() if hasattr(created, "timestamp") else started_at
    except Exception:  # no metadata to ask: the original start is the best known
        return started_at


def diarize_settings(flow) -> dict | None:
    """The run's :class:`DiarizeSettings` as a dict (checked here, in start), or None when not diarizing."""
    import dataclasses

    def count(value) -> int | None:
        return None if value in ("", None) else int(value)

    settings = DiarizeSettings(
        diarize=bool(flow.diarize),
        num_speakers=count(flow.num_speakers),
        min_speakers=count(flow.min_speakers),
        max_speakers=count(flow.max_speakers),
        channels=flow.channels,
    )
    return dataclasses.asdict(settings) if settings.diarize else None


def parse_sources(value: str) -> list[str]:
    """A JSON list of sources, or one source, or a comma-separated list of them."""
    import json

    from whisperops.errors import OptionError

    text = (value or "").strip()
    if text.startswith("["):
        try:
            sources = [str(s) for s in json.loads(text)]
        except ValueError as err:
            raise OptionError(f"--sources {text[:60]!r}: not a valid JSON list ({err})") from err
    elif os.path.exists(text) or "," not in text:
        sources = [text] if text else []
    else:
        sources = [s.strip() for s in text.split(",") if s.strip()]
    if not sources:
        raise OptionError(f"--sources is empty: name files, folders, list files or URLs (or set ${SOURCES_ENV})")
    return sources


class _PrintProgress:
    """One stdout line per finished item: Metaflow keeps it in the task log, the CLI reads it for its bar."""

    def item_started(self, item) -> None:
        pass

    def audio_known(self, item, seconds: float) -> None:
        pass

    def segment_done(self, item, segment) -> None:
        pass

    def item_done(self, result) -> None:
        import json

        line = {"item": result.item.name, "status": result.status, "error": result.error}
        print("whisperops-progress " + json.dumps(line), flush=True)


if __name__ == "__main__":
    TranscriptionFlow()
