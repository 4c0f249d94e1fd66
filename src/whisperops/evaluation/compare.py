"""Evaluate N models on one dataset: accuracy (WER/CER, S/D/I, per utterance), speed and memory.

Each model runs through :class:`whisperops.engine.Engine`, by default in its own fresh process, so
that its peak memory is that process's high-water mark (``VmHWM``) and nothing leaks from the model
evaluated before it: measuring several models in one process would report the largest so far,
and RSS deltas miss memory freed and reused. The baseline (the process after importing
faster-whisper, before loading weights) is reported too, so ``model_mb`` is what the model itself
costs. Speed is audio seconds per wall second of decoding + transcribing (model load is timed
apart, as ``load_s``).

The first model is the baseline for ``wer_rel``: ``(wer - wer_first) / wer_first``; -0.31 is the
"WER difference: -31%" a fine-tuned model shows against the model it started from.
"""

from __future__ import annotations

import logging
import os
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from whisperops.data.manifest import Utterance
from whisperops.errors import WhisperOpsError
from whisperops.evaluation.metrics import CorpusScore, relative_change, score
from whisperops.evaluation.settings import EvalSettings

log = logging.getLogger(__name__)


@dataclass
class ModelSpec:
    """``NAME=PATH`` labels a model directory; otherwise the name is the spec itself."""

    name: str
    model: str

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        label, sep, target = spec.partition("=")
        if sep and label and target and "/" not in label and not Path(spec).exists():
            return cls(label, target)
        return cls(spec, spec)


@dataclass
class Hypothesis:
    id: str
    text: str
    duration: float
    wall_s: float
    language: str | None = None
    error: str | None = None


@dataclass
class RunResult:
    """What one model's run measured, before scoring (it crosses the process boundary)."""

    name: str
    model: str
    path: str
    compute_type: str
    hypotheses: list[Hypothesis]
    load_s: float
    wall_s: float
    audio_s: float
    baseline_mb: float
    peak_mb: float
    error: str | None = None


@dataclass
class ModelResult:
    """One model's scores, speed and memory on the comparison's utterances.

    Attributes:
        name: The model's label in the comparison.
        model: The model as given (name or directory).
        path: The CTranslate2 directory that ran.
        compute_type: The compute type that ran.
        wer: Corpus word error rate, ``(S + D + I) / N``; None when the model failed.
        cer: Corpus character error rate.
        substitutions: Substituted words over the corpus.
        deletions: Deleted words over the corpus.
        insertions: Inserted words over the corpus.
        hits: Correct words over the corpus.
        ref_words: Words in the references (N).
        speed_x: Audio seconds per wall second of transcription (load excluded).
        audio_s: Seconds of audio transcribed.
        wall_s: Wall seconds spent transcribing.
        load_s: Seconds spent loading the model.
        peak_mb: Peak RSS of the evaluating process, in MiB.
        model_mb: ``peak_mb`` less the process before the weights loaded.
        wer_rel: ``(wer - wer_first) / wer_first`` against the first model (None for the first).
        score: Per-utterance scores and alignments.
        error: Why the model failed, when it did.
    """

    name: str
    model: str
    path: str
    compute_type: str
    wer: float | None
    cer: float | None
    substitutions: int
    deletions: int
    insertions: int
    hits: int
    ref_words: int
    speed_x: float | None
    audio_s: float
    wall_s: float
    load_s: float
    peak_mb: float
    model_mb: float
    wer_rel: float | None = None  # vs the first model
    score: CorpusScore | None = field(default=None, repr=False)
    error: str | None = None

    def to_dict(self, alignment: bool = True) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "score"}
        data["utterances"] = [u.to_dict(alignment=alignment) for u in self.score.utterances] if self.score else []
        return data


@dataclass
class Comparison:
    """The result of :func:`compare`: every model on the same utterances.

    Attributes:
        models: One result per model, the baseline first.
        dataset: The dataset's summary (source, format, rows, skipped, ...).
        settings: The :class:`EvalSettings` used, as a dict.
        excluded: Utterances left out of every score because they failed in some model.
    """

    models: list[ModelResult]
    dataset: dict[str, Any]
    settings: dict[str, Any]
    excluded: list[dict[str, str]] = field(default_factory=list)  # utterances that failed in some model

    @property
    def baseline(self) -> str | None:
        """The first model's name: what ``wer_rel`` is relative to."""
        return self.models[0].name if self.models else None

    def to_dict(self, alignment: bool = True) -> dict[str, Any]:
        """What ``whisperops evaluate --json`` writes; ``alignment=False`` drops the word alignments."""
        return {
            "models": {m.name: m.to_dict(alignment) for m in self.models},
            "baseline": self.baseline,
            "dataset": self.dataset,
            "settings": self.settings,
            "excluded": self.excluded,
            "machine": machine_info(),
        }


def machine_info() -> dict[str, Any]:
    import platform

    return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def memory_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB; /proc where it exists, else getrusage.

    The peak is the kernel's high-water mark (``VmHWM``), so it includes memory freed since: read it
    in a process that ran one model only.
    """
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
        return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024
    except (OSError, KeyError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak_mb = peak / 1024 / 1024 if os.uname().sysname == "Darwin" else peak / 1024
        return peak_mb, peak_mb


def run_model(
    spec: ModelSpec,
    rows: Sequence[Utterance],
    settings: EvalSettings,
    on_utterance: Callable[[Hypothesis], None] | None = None,
) -> RunResult:
    """Load one model and transcribe every row (never raises for one bad row).

    Called in a fresh process by :func:`compare` (``isolate``), or directly, e.g. by a flow step
    that is itself a fresh process.
    """
    import faster_whisper  # noqa: F401  (in the baseline: the runtime, not the model)

    from whisperops.engine import DecodeOptions, Engine

    baseline_mb, _ = memory_mb()
    try:
        engine = Engine(
            spec.model,
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
        )
    except WhisperOpsError as err:
        return RunResult(
            spec.name, spec.model, "", settings.compute_type, [], 0.0, 0.0, 0.0, baseline_mb, 0.0, str(err)
        )
    hypotheses: list[Hypothesis] = []
    wall = audio = 0.0
    for row in rows:
        language = settings.language or row.language
        if not engine.is_multilingual and language and language != "en":
            error = f"model {spec.name!r} is English-only; row {row.id} is {language}"
            hyp = Hypothesis(row.id, "", 0.0, 0.0, language, error)
        else:
            options = DecodeOptions(
                language=language,
                beam_size=settings.beam_size,
                vad_filter=settings.vad_filter,
                batch_size=settings.batch_size,
                condition_on_previous_text=settings.condition_on_previous_text,
            )
            t0 = time.perf_counter()
            try:
                t = engine.transcribe(row.audio, options, source=row.id)
            except WhisperOpsError as err:
                hyp = Hypothesis(row.id, "", 0.0, time.perf_counter() - t0, language, str(err))
            else:
                elapsed = time.perf_counter() - t0
                hyp = Hypothesis(row.id, t.text, t.duration, elapsed, t.language)
                wall += elapsed
                audio += t.duration
        hypotheses.append(hyp)
        if on_utterance is not None:
            on_utterance(hyp)
    _, peak_mb = memory_mb()
    return RunResult(
        spec.name,
        spec.model,
        str(engine.path),
        engine.compute_type,
        hypotheses,
        engine.load_seconds,
        wall,
        audio,
        baseline_mb,
        peak_mb,
    )


def _run_isolated(spec: ModelSpec, rows: Sequence[Utterance], settings: EvalSettings) -> RunResult:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    # spawn, not fork: a forked child inherits the parent's pages (and any model it loaded) in its RSS.
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(run_model, spec, list(rows), settings).result()


def score_runs(
    runs: Sequence[RunResult],
    rows: Sequence[Utterance],
    settings: EvalSettings,
    dataset: dict[str, Any] | None = None,
) -> Comparison:
    """Score every run on the same utterances: a row that failed in any model is left out of all."""
    failed: dict[str, str] = {}
    for run in runs:
        for h in run.hypotheses:
            if h.error and h.id not in failed:
                failed[h.id] = f"{run.name}: {h.error}"
    kept = [r for r in rows if r.id not in failed]
    results: list[ModelResult] = []
    for run in runs:
        if run.error:
            results.append(_failed(run))
            continue
        by_id = {h.id: h for h in run.hypotheses}
        s = score(
            [r.text for r in kept],
            [by_id[r.id].text for r in kept],
            ids=[r.id for r in kept],
            languages=[settings.language or r.language or "en" for r in kept],
            normalize=settings.normalize,
        )
        results.append(
            ModelResult(
                name=run.name,
                model=run.model,
                path=run.path,
                compute_type=run.compute_type,
                wer=s.wer,
                cer=s.cer,
                substitutions=s.substitutions,
                deletions=s.deletions,
                insertions=s.insertions,
                hits=s.hits,
                ref_words=s.ref_words,
                speed_x=run.audio_s / run.wall_s if run.wall_s > 0 else None,
                audio_s=round(run.audio_s, 3),
                wall_s=round(run.wall_s, 3),
                load_s=round(run.load_s, 3),
                peak_mb=round(run.peak_mb, 1),
                model_mb=round(max(run.peak_mb - run.baseline_mb, 0.0), 1),
                score=s,
            )
        )
    first = next((m for m in results if m.wer is not None), None)
    for m in results:
        if first is not None and m.wer is not None and first.wer is not None:
            m.wer_rel = relative_change(m.wer, first.wer)
    return Comparison(
        models=results,
        dataset={**(dataset or {}), "scored_rows": len(kept)},
        settings=settings.to_dict(),
        excluded=[{"id": k, "reason": v} for k, v in failed.items()],
    )


def _failed(run: RunResult) -> ModelResult:
    zero = dict.fromkeys(("substitutions", "deletions", "insertions", "hits", "ref_words"), 0)
    times = dict.fromkeys(("audio_s", "wall_s", "load_s", "model_mb"), 0.0)
    return ModelResult(
        run.name, run.model, run.path, run.compute_type, wer=None, cer=None, speed_x=None, peak_mb=run.peak_mb,
        error=run.error, **zero, **times,
    )  # fmt: skip


def compare(
    models: Sequence[str | ModelSpec],
    rows: Sequence[Utterance],
    settings: EvalSettings | None = None,
    *,
    dataset: dict[str, Any] | None = None,
    on_model_done: Callable[[RunResult], None] | None = None,
) -> Comparison:
    """Evaluate ``models`` one after the other on ``rows``; the first is the baseline.

    A model that fails to load, or a row that fails in any model, never stops the comparison: the
    model's result carries its ``error``, and the row is left out of every model's score (listed in
    ``Comparison.excluded``), so the WERs stay comparable.

    Args:
        models: Registry names, directories, ``NAME=DIR`` labels, or :class:`ModelSpec`; repeats
            are renamed ``NAME#2`` (:func:`unique_specs`).
        rows: The utterances, e.g. ``whisperops.data.manifest.load_dataset(path)``.
        settings: Decoding and measuring settings shared by every model (defaults when None).
        dataset: A summary of the dataset to carry into the result (``Dataset.summary()``).
        on_model_done: Called with each model's raw run as it finishes (progress).

    Returns:
        Every model's scores, speed and memory, with the first model as the baseline of ``wer_rel``.
    """
    settings = settings or EvalSettings()
    specs = unique_specs(models)
    runs: list[RunResult] = []
    for spec in specs:
        log.info("evaluating %s on %d utterances", spec.name, len(rows))
        run = _run_isolated(spec, rows, settings) if settings.isolate else run_model(spec, rows, settings)
        runs.append(run)
        if on_model_done is not None:
            on_model_done(run)
    return score_runs(runs, rows, settings, dataset)


def unique_specs(models: Sequence[str | ModelSpec]) -> list[ModelSpec]:
    """Parse ``models`` into :class:`ModelSpec`, renaming repeats ``NAME#2``, ``NAME#3`` so results never collide."""
    specs = [m if isinstance(m, ModelSpec) else ModelSpec.parse(m) for m in models]
    seen: dict[str, int] = {}
    for spec in specs:
        count = seen.get(spec.name, 0) + 1
        seen[spec.name] = count
        if count > 1:
            spec.name = f"{spec.name}#{count}"
    return specs
