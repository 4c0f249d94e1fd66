"""EvaluationFlow: compare Whisper models on one dataset, one Metaflow task per model.

Run it with Metaflow's own CLI::

    python -m whisperops.flows.evaluation run --manifest data/speech/manifest.jsonl \
        --models '["tiny.en", "base", "tuned=out/ct2"]' --max-workers 1
    python -m whisperops.flows.evaluation card view join

Each model is evaluated in its own task (a fresh process, so its peak memory is its own); ``join``
scores all of them on the same utterances and renders a card with the comparison table, WER
against speed and memory, and the worst utterances with aligned differences. Pass
``--max-workers 1`` when the speeds matter: parallel tasks share the CPU, and the card says so
when the tasks overlapped in time. Results: ``Flow("EvaluationFlow").latest_successful_run.data.comparison``
(the same dict as ``whisperops evaluate --json``).
"""

import json

# isort: split
# Sets Metaflow's environment defaults (user name) before metaflow is imported.
import whisperops.flows  # noqa: F401

# isort: split
from metaflow import FlowSpec, Parameter, card, current, step

from whisperops.config import default_of
from whisperops.engine import EngineConfig
from whisperops.evaluation.settings import EvalSettings
from whisperops.flows import parameter


class EvaluationFlow(FlowSpec):
    """Validate the dataset, evaluate every model in parallel tasks, then score and report them together."""

    manifest = Parameter("manifest", required=True, help="JSONL manifest, audiofolder CSV, or a folder.")
    models = Parameter(
        "models",
        default=json.dumps([default_of(EngineConfig, "model")]),
        help="JSON list (or comma list) of models; the first is the baseline.",
    )
    skip_bad = Parameter("skip-bad", type=bool, default=False, help="Leave bad rows out (counted) instead of failing.")
    normalize = parameter(EvalSettings, "normalize", "normalize", type=bool)
    language = parameter(EvalSettings, "language", "language")
    beam_size = parameter(EvalSettings, "beam_size", "beam-size", type=int)
    vad = parameter(EvalSettings, "vad_filter", "vad", type=bool)
    batch_size = parameter(EvalSettings, "batch_size", "batch-size", type=int)
    compute_type = parameter(EvalSettings, "compute_type", "compute-type")
    device = parameter(EvalSettings, "device", "device")
    threads = parameter(EvalSettings, "cpu_threads", "threads", type=int)
    limit = Parameter("limit", type=int, default=0, help="Only the first N rows (0: all).")
    worst = Parameter("worst", type=int, default=5, help="Worst utterances shown per model on the card.")

    @step
    def start(self):
        """Load and validate the dataset once; fan out one task per model."""
        from whisperops.data.manifest import load_dataset
        from whisperops.evaluation.compare import ModelSpec, unique_specs

        dataset = load_dataset(self.manifest, skip_bad=self.skip_bad)
        rows = list(dataset)[: self.limit] if self.limit > 0 else list(dataset)
        self.rows = [u.to_dict() for u in rows]
        self.dataset = {**dataset.summary(), "evaluated_rows": len(rows)}
        self.settings = EvalSettings(
            beam_size=self.beam_size,
            language=self.language or None,
            vad_filter=self.vad,
            batch_size=self.batch_size,
            compute_type=self.compute_type,
            device=self.device,
            cpu_threads=self.threads,
            normalize=self.normalize,
            isolate=False,  # each task is already a fresh process
        ).to_dict()
        self.specs = [(s.name, s.model) for s in unique_specs([ModelSpec.parse(m) for m in parse_models(self.models)])]
        for bad in dataset.skipped:
            print(f"skipped: {bad}")
        print(f"{len(rows)} utterances, {len(self.specs)} models: {', '.join(n for n, _ in self.specs)}")
        self.next(self.evaluate, foreach="specs")

    @step
    def evaluate(self):
        """Transcribe every row with this task's model; a failing row is recorded, never raised."""
        import time
        from dataclasses import asdict

        from whisperops.data.manifest import Utterance
        from whisperops.evaluation.compare import ModelSpec, run_model

        name, model = self.input
        self.position = self.index
        self.started, t0 = time.time(), time.perf_counter()
        run = run_model(
            ModelSpec(name, model), [Utterance.from_dict(r) for r in self.rows], EvalSettings(**self.settings)
        )
        self.ended = self.started + (time.perf_counter() - t0)
        self.run_result = asdict(run)
        print(
            f"{name}: " + (f"failed: {run.error}" if run.error else f"{run.audio_s:.0f} s audio in {run.wall_s:.1f} s")
        )
        self.next(self.join)

    @card(type="blank", id="evaluation")
    @step
    def join(self, inputs):
        """Score every model on the same utterances, store ``comparison``, render the card."""
        import itertools

        from whisperops.data.manifest import Utterance
        from whisperops.evaluation.compare import Hypothesis, RunResult, score_runs

        self.merge_artifacts(inputs, include=["rows", "dataset", "settings", "specs"])
        ordered = sorted(inputs, key=lambda i: i.position)
        runs = []
        for inp in ordered:
            data = dict(inp.run_result)
            data["hypotheses"] = [Hypothesis(**h) for h in data["hypotheses"]]
            runs.append(RunResult(**data))
        rows = [Utterance.from_dict(r) for r in self.rows]
        result = score_runs(runs, rows, EvalSettings(**self.settings), self.dataset)
        spans = sorted((inp.started, inp.ended) for inp in ordered)
        self.overlapped = any(b[0] < a[1] for a, b in itertools.pairwise(spans))
        self.comparison = result.to_dict()
        self.comparison["tasks_overlapped"] = self.overlapped
        self.wer = {m.name: m.wer for m in result.models}
        render_card(current.card["evaluation"], result, self.worst, self.overlapped)
        self.next(self.end)

    @step
    def end(self):
        """Print the table; say how to read the results."""
        for name, data in self.comparison["models"].items():
            if data.get("error"):
                print(f"{name}: failed: {data['error']}")
            else:
                print(
                    f"{name}: WER {data['wer'] * 100:.2f}% CER {data['cer'] * 100:.2f}% "
                    f"speed {data['speed_x'] or 0:.1f}x peak {data['peak_mb']:.0f} MB"
                )
        print(f"read them: Flow('{current.flow_name}')['{current.run_id}'].data.comparison, or `card view join`")


def parse_models(value: str) -> list[str]:
    """A JSON list of model specs, or a comma-separated list."""
    from whisperops.errors import OptionError

    text = (value or "").strip()
    if text.startswith("["):
        try:
            models = [str(m) for m in json.loads(text)]
        except ValueError as err:
            raise OptionError(f"--models {text[:60]!r}: not a valid JSON list ({err})") from err
    else:
        models = [m.strip() for m in text.split(",") if m.strip()]
    if not models:
        raise OptionError('--models is empty: name at least one model, e.g. \'["tiny.en", "base"]\'')
    return models


def render_card(card_obj, result, worst: int = 5, overlapped: bool = False) -> None:
    """Comparison table, WER-vs-speed/memory plot and worst utterances, as Metaflow card components."""
    from metaflow.cards import Image, Markdown, Table

    from whisperops.evaluation.report import COLUMNS, plot_tradeoff, table_rows

    ds = result.dataset
    card_obj.append(Markdown(f"# Model comparison\n\n{ds.get('scored_rows', 0)} utterances from `{ds.get('source')}`"))
    if ds.get("skipped"):
        card_obj.append(Markdown(f"{ds['skipped']} bad rows skipped: " + "; ".join(ds.get("skipped_rows", [])[:10])))
    if overlapped:
        card_obj.append(
            Markdown(
                "**Tasks ran at the same time and shared the CPU: speeds are not comparable** (`--max-workers 1`)."
            )
        )
    card_obj.append(Table(data=table_rows(result), headers=list(COLUMNS)))
    if any(m.wer is not None for m in result.models):
        card_obj.append(Markdown("## WER against speed and memory"))
        card_obj.append(Image(plot_tradeoff(result.models), label="WER vs speed and memory"))
    for m in result.models:
        if m.score is None:
            continue
        bad = m.score.worst(worst)
        lines = [f"## Worst utterances: {m.name}"]
        for u in bad:
            lines.append(f"**{u.id}**: WER {u.wer * 100:.0f}% ({u.substitutions} S, {u.deletions} D, {u.insertions} I)")
            lines.append("```\n" + u.diff() + "\n```")
        card_obj.append(Markdown("\n\n".join(lines) if bad else lines[0] + "\n\nNo errors."))
    for ex in result.excluded:
        card_obj.append(Markdown(f"not scored: `{ex['id']}`: {ex['reason']}"))


if __name__ == "__main__":
    EvaluationFlow()
