"""The fine-tuning driver: check inputs, prepare data, train, keep the best checkpoint, export.

Two ways to train, one worker function (:func:`whisperops.training.worker.train_loop_per_worker`):

* local (the default for one worker on this machine): Ray Train V2's local mode,
  ``ScalingConfig(num_workers=0)``, which calls the function in this process through
  ``LocalController``: no Ray cluster, controller or worker actors, so it steps at the plain
  ``Seq2SeqTrainer``'s speed. The Trainer keeps its own checkpoints (``metric_for_best_model`` +
  ``save_total_limit``) in ``OUTPUT/run/checkpoints``; a crashed run continues with ``resume``.
* ray: Ray Train workers (``--workers 2+``, ``--ray-address``, ``--submit``, ``--max-failures``,
  DeepSpeed): ``FailureConfig`` retries, checkpoints ranked by Ray's ``CheckpointConfig``.

Order matters for users: every check that can fail cheaply (datasets, model name, output folder,
worker count, DeepSpeed on a CPU) runs before weights are converted, features computed or Ray started.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whisperops.checks import check_output_dir
from whisperops.data.manifest import Dataset as Rows
from whisperops.data.manifest import load_dataset
from whisperops.errors import OptionError, WhisperOpsError
from whisperops.paths import atomic_write_text
from whisperops.training.config import CHECKPOINTS, DEEPSPEED_STAGES, MAX_AUDIO_S, MODES, FinetuneConfig
from whisperops.training.data import TrainingDataError, prepare_split

log = logging.getLogger(__name__)

RESULT_FILE = "finetune.json"


class TrainingError(WhisperOpsError):
    """Training ran but did not produce a usable checkpoint."""


@dataclass
class Preflight:
    train: Rows
    eval: Rows
    model_path: Path
    cpus: int


@dataclass
class FinetuneResult:
    output: Path
    registered_name: str | None
    best_checkpoint: Path
    best_eval_wer: float | None
    best_step: int | None
    history: list[dict[str, Any]]
    checkpoints: list[dict[str, Any]]
    exported: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    tensorboard: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}


# ---------------------------------------------------------------------------------------------
# Checks before any expensive work


def _clip_seconds(path: Path) -> float | None:
    import av

    try:
        with av.open(str(path)) as container:
            if container.duration is not None:
                return container.duration / 1_000_000
            stream = container.streams.audio[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
    except (av.error.FFmpegError, OSError, IndexError):
        return None
    return None


def _check_split(rows: Rows, flag: str, english_only: bool, model: str) -> None:
    if english_only:
        other = sorted({u.language for u in rows if u.language and u.language != "en"})
        if other:
            raise TrainingDataError(
                f"{flag} {rows.source}: rows in {', '.join(other)} but {model} is English-only; "
                "use a multilingual model or English data"
            )
    durations = [u.duration if u.duration is not None else _clip_seconds(u.audio) for u in rows]
    known = [d for d in durations if d is not None]
    if known and not any(d <= MAX_AUDIO_S for d in known):
        raise TrainingDataError(
            f"{flag} {rows.source}: no clip is {MAX_AUDIO_S:.0f} s or shorter (Whisper's window); "
            "cut the audio into utterances under 30 s"
        )


def _warn_if_nearly_full(paths: list[Path]) -> None:
    """Warn, once per file system, where Ray's own disk limit is already crossed.

    Past ``RAY_local_fs_capacity_threshold`` (0.95) Ray refuses to spill objects, and checkpoints of
    hundreds of MB are written to the output folder; a run that starts there can fail hours in.
    """
    threshold = float(os.environ.get("RAY_local_fs_capacity_threshold", "0.95"))  # noqa: SIM112 (Ray reads this exact name)
    seen: set[int] = set()
    for path in paths:
        if not path.exists() or (device := path.stat().st_dev) in seen:
            continue
        seen.add(device)
        usage = shutil.disk_usage(path)
        full = 1 - usage.free / usage.total
        if full >= threshold:
            log.warning(
                "%s is %.0f%% full (%.1f GB free; Ray's limit is %.0f%%): free space, or move Ray's files with "
                "RAY_TMPDIR and the run with --output",
                path, 100 * full, usage.free / 1e9, 100 * threshold,
            )  # fmt: skip


def preflight(cfg: FinetuneConfig) -> Preflight:
    """Every cheap check, in the order a user fixes them; raises one clear line."""
    from whisperops.models import registry

    if not cfg.train:
        raise OptionError("--train is required: a JSONL manifest, audiofolder CSV or folder of audio + .txt")
    if not cfg.output:
        raise OptionError("--output is required: the run folder for checkpoints, TensorBoard and the exported model")
    if not cfg.eval:
        raise OptionError(
            "--eval is required: checkpoints are chosen by eval WER; hold out a manifest, CSV or folder for it"
        )
    for flag, value in (("--train", cfg.train), ("--eval", cfg.eval)):
        if not Path(value).expanduser().exists():
            raise TrainingDataError(f"{flag} {value}: no such manifest, CSV or folder; check the path")
    if cfg.workers < 1:
        raise OptionError(f"--workers {cfg.workers}: must be at least 1")
    _check_mode(cfg)
    if cfg.deepspeed and cfg.deepspeed not in DEEPSPEED_STAGES:
        raise OptionError(f"--deepspeed {cfg.deepspeed}: use one of {', '.join(DEEPSPEED_STAGES)}")
    if cfg.max_steps <= 0 and cfg.epochs <= 0:
        raise OptionError("--epochs must be positive (or give --max-steps)")
    if cfg.learning_rate <= 0 or cfg.batch_size < 1:
        raise OptionError("--learning-rate must be positive and --batch-size at least 1")
    if cfg.lora and cfg.lora_rank < 1:
        raise OptionError(f"--lora-rank {cfg.lora_rank}: must be at least 1")
    cpus = os.cpu_count() or 1
    if uses_ray(cfg) and cfg.ray_address is None:
        per_worker = max(1, cfg.threads_per_worker)
        limit = cfg.ray_num_cpus or cpus
        if cfg.workers * per_worker > limit:
            raise OptionError(
                f"--workers {cfg.workers}: this machine has {limit} CPU cores for Ray and each worker needs "
                f"{per_worker}; use --workers {max(1, limit // per_worker)} or join a cluster with --ray-address"
            )
    if cfg.deepspeed:
        _check_deepspeed()
    model_path = registry.resolve(cfg.model)  # ModelNotFoundError: one line listing what is here
    check_output_dir(cfg.output_path, "--output")
    _check_resume(cfg)
    ray_tmp = (
        [] if cfg.ray_address or not uses_ray(cfg) else [Path(os.environ.get("RAY_TMPDIR") or tempfile.gettempdir())]
    )
    _warn_if_nearly_full([cfg.output_path, *ray_tmp])
    train = load_dataset(cfg.train)
    evaluation = load_dataset(cfg.eval)
    english_only = _english_only(model_path)
    _check_split(train, "--train", english_only, cfg.model)
    _check_split(evaluation, "--eval", english_only, cfg.model)
    if train.source.resolve() == evaluation.source.resolve():
        log.warning("--train and --eval are the same dataset: eval WER will not show over-fitting")
    return Preflight(train, evaluation, model_path, cpus)


def uses_ray(cfg: FinetuneConfig) -> bool:
    """Ray Train workers, or this process (Ray Train's local mode)? ``auto``: Ray only where it does something."""
    if cfg.mode != "auto":
        return cfg.mode == "ray"
    return cfg.workers > 1 or bool(cfg.ray_address) or cfg.max_failures > 0 or bool(cfg.deepspeed)


def _check_mode(cfg: FinetuneConfig) -> None:
    if cfg.mode not in MODES:
        raise OptionError(f"--mode {cfg.mode}: use one of {', '.join(MODES)}")
    if cfg.mode != "local":
        return
    # Each is something only Ray's controller and workers do: say which mode does it.
    for given, flag in (
        (cfg.workers > 1, f"--workers {cfg.workers}"),
        (bool(cfg.ray_address), f"--ray-address {cfg.ray_address}"),
        (cfg.max_failures > 0, f"--max-failures {cfg.max_failures}"),
        (bool(cfg.deepspeed), f"--deepspeed {cfg.deepspeed}"),
    ):
        if given:
            raise OptionError(
                f"{flag} needs Ray Train workers, and --mode local trains in this process: use --mode ray "
                "(a crashed local run continues with --resume)"
            )


def local_checkpoints(output: Path) -> Path:
    """Where a local run's Trainer writes its checkpoints (``checkpoint-STEP`` folders)."""
    return output.resolve() / "run" / CHECKPOINTS


def last_checkpoint(folder: Path) -> Path | None:
    """The Trainer's newest complete checkpoint in ``folder`` (one with its trainer_state.json)."""
    steps = []
    for path in folder.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and (path / "trainer_state.json").exists():
            steps.append((int(step), path))
    return max(steps)[1] if steps else None


def _ray_runs(storage: Path) -> list[Path]:
    """Earlier Ray Train runs in ``storage`` that registered a checkpoint, newest last."""
    return sorted(p.parent for p in storage.glob("finetune-*/checkpoint_manager_snapshot.json"))


def _storage(cfg: FinetuneConfig) -> Path:
    return Path(cfg.storage_path) if cfg.storage_path else cfg.output_path.resolve() / "ray"


def _check_resume(cfg: FinetuneConfig) -> None:
    """``--resume`` needs a checkpoint to continue from; a fresh local run must not mix with an old one's."""
    if uses_ray(cfg):
        if cfg.resume and not _ray_runs(_storage(cfg)):
            raise OptionError(
                f"--resume: no Ray Train run with a checkpoint in {_storage(cfg)}; run without --resume to start"
            )
        return
    folder = local_checkpoints(cfg.output_path)
    last = last_checkpoint(folder)
    if cfg.resume and last is None:
        raise OptionError(f"--resume: no checkpoint in {folder} to continue from; run without --resume to start")
    if not cfg.resume and last is not None:
        raise OptionError(
            f"--output {cfg.output}: holds checkpoints of an earlier run (last {last.name}); "
            "add --resume to continue it, or choose another --output"
        )


def _english_only(model_path: Path) -> bool:
    from whisperops.models import registry

    info = registry.describe_dir(registry.ModelInfo("", "local", model_path, True, "unknown"))
    return info.multilingual is False


def _check_deepspeed() -> None:
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise OptionError("--deepspeed needs the deepspeed package: pip install 'whisperops[train]'")


# ---------------------------------------------------------------------------------------------
# The run


def plan_steps(cfg: FinetuneConfig, train_rows: int) -> tuple[int, int]:
    """(max_steps, eval_steps): about five evaluations (and checkpoints) over the run unless told."""
    if cfg.max_steps > 0:
        total = cfg.max_steps
    else:
        per_step = cfg.batch_size * cfg.workers * cfg.gradient_accumulation_steps
        total = max(1, math.ceil(math.ceil(train_rows / per_step) * cfg.epochs))
    every = cfg.eval_steps if cfg.eval_steps > 0 else max(1, math.ceil(total / 5))
    return total, min(every, total)


def use_encoder_cache(cfg: FinetuneConfig) -> bool:
    """Cached encoder outputs are exact only when nothing in the encoder trains (LoRA adapts it too)."""
    return cfg.freeze_encoder and cfg.cache_encoder and not cfg.lora


# A local Ray on a laptop shares its few cores with training, and every Ray process wakes about 100
# times a second, each wake-up taking a core from a worker (Ray with 1 worker, no DDP, was as slow as
# with 2). A local run has no spot preemption to watch, no metrics scraper and no Train state to
# reconcile, so those actors and reports are off (2 cores, tiny.en: +8.6% samples/s per step, median
# of 4 rounds). A variable the user set wins; a cluster joined with --ray-address is left as its
# operators configured it.
LOCAL_RAY_ENV = {
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_METRICS_ENABLED": "0",
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
    "RAY_enable_metrics_collection": "0",
    "RAY_metrics_report_interval_ms": "60000",
    "RAY_task_events_report_interval_ms": "10000",
    # The log monitor re-globs the log folder every 0.1 s below 1000 files; at 0 it does so every
    # 0.5 s (still tailing open files every 0.1 s): 1.6% -> 0.7% of one core while training.
    "RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "0",
}


def quiet_local_workers() -> None:
    """Ray's ``worker_process_setup_hook`` for the local Ray that ``init_ray`` starts."""
    # Ray Train's placement-group cleaner asks the State API, served by the dashboard, whether the
    # controller is still alive. The local Ray runs without a dashboard (with one, steps were ~4%
    # slower here), so every ask fails and it warns once a second, ~95 lines in a 90 s run. What it
    # guards against, a dead controller's placement group outliving it, cannot happen locally: the
    # whole local cluster stops with the driver.
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


def init_ray(cfg: FinetuneConfig) -> None:
    """Join ``--ray-address``, or start a local Ray sized to this machine (loopback only)."""
    import ray

    if ray.is_initialized():
        return
    if cfg.ray_address:
        ray.init(address=cfg.ray_address, log_to_driver=True)
        return
    for key, value in LOCAL_RAY_ENV.items():
        os.environ.setdefault(key, value)  # before ray.init: its processes inherit them
    kwargs: dict[str, Any] = {
        "num_cpus": cfg.ray_num_cpus or os.cpu_count() or 1,
        "include_dashboard": False,
        "log_to_driver": True,
        "_node_ip_address": "127.0.0.1",
        "runtime_env": {"worker_process_setup_hook": f"{__name__}.quiet_local_workers"},
    }
    if cfg.ray_object_store_mb:
        kwargs["object_store_memory"] = cfg.ray_object_store_mb * 1024 * 1024
    ray.init(**kwargs)


def _check_cluster(cfg: FinetuneConfig, use_gpu: bool) -> None:
    import ray

    resources = ray.cluster_resources()
    need = cfg.workers * max(1, cfg.threads_per_worker)
    have = int(resources.get("CPU", 0))
    if need > have:
        raise OptionError(
            f"--workers {cfg.workers}: the Ray cluster has {have} CPUs and the run needs {need}; "
            f"use --workers {max(1, have // max(1, cfg.threads_per_worker))}"
        )
    if use_gpu and cfg.workers > int(resources.get("GPU", 0)):
        raise OptionError(f"--workers {cfg.workers}: the cluster has {int(resources.get('GPU', 0))} GPUs")


def _gpus_available() -> bool:
    import ray

    try:
        return ray.cluster_resources().get("GPU", 0) > 0
    except Exception:  # Ray not started: look at this machine
        import torch

        return torch.cuda.is_available()


def finetune(cfg: FinetuneConfig) -> FinetuneResult:
    """Fine-tune ``cfg.model`` on ``cfg.train`` here or on Ray Train; export and register the best checkpoint.

    Every check that can fail (datasets, model, output folder, workers, disk) runs before any
    work. The best checkpoint by eval WER is exported as Hugging Face weights and as CTranslate2
    float16 (registered as ``cfg.name``) and int8 (``NAME-int8``). One worker on this machine
    trains in this process (Ray Train's local mode, see :func:`uses_ray`); more, a cluster,
    retries or DeepSpeed train on Ray Train's workers.

    Args:
        cfg: The run: datasets, base model, output folder, Ray layout and training settings.

    Returns:
        The best checkpoint, its step and eval WER, the exported and registered models, and the
        loss and WER history (also written to ``OUTPUT/finetune.json``).

    Raises:
        TrainingError: A check failed, or training itself did (the message names the cause).
    """
    started = time.perf_counter()
    checks = preflight(cfg)
    out = cfg.output_path.resolve()
    from whisperops.training.model import hf_model_dir

    model_dir = hf_model_dir(cfg.model)
    train = prepare_split(checks.train, model_dir, "train")
    evaluation = prepare_split(checks.eval, model_dir, "eval")
    encoded = use_encoder_cache(cfg)
    if encoded:
        from whisperops.training.data import encode_split

        train = encode_split(train, model_dir)
        evaluation = encode_split(evaluation, model_dir)
    max_steps, eval_steps = plan_steps(cfg, train.rows)
    gen_len = cfg.generation_max_length or min(448, max(train.max_label_tokens, evaluation.max_label_tokens) + 16)

    distributed = uses_ray(cfg)
    use_gpu = False
    if distributed:
        init_ray(cfg)
        use_gpu = _gpus_available()
        _check_cluster(cfg, use_gpu)

    from whisperops.training.worker import WorkerPlan

    run_dir = out / "run"
    ds_config = None
    if cfg.deepspeed:
        from whisperops.training.deepspeed import write_config

        ds_config = str(write_config(cfg.deepspeed, run_dir / f"deepspeed-{cfg.deepspeed}.json"))
    plan = WorkerPlan(
        model_dir=str(model_dir),
        train_data=str(train.path),
        eval_data=str(evaluation.path),
        run_dir=str(run_dir),
        deepspeed_config=ds_config,
        eval_steps=eval_steps,
        max_steps=max_steps,
        generation_max_length=gen_len,
        encoded=encoded,
        local=not distributed,
    )
    atomic_write_text(out / "config.json", cfg.to_json())
    log.info(
        "training %s on %d clips, %s, %d steps (eval + checkpoint every %d)",
        cfg.model,
        train.rows,
        f"{cfg.workers} Ray Train workers" if distributed else "in this process (Ray Train local mode)",
        max_steps,
        eval_steps,
    )
    if distributed:
        result = _fit(cfg, plan, use_gpu)
        best_path, best_metrics, checkpoints = _best_checkpoint(result)
        history = _history(result)
        clean_work_dirs(out)
    else:
        history = _fit_local(cfg, plan)["log_history"]
        best_path, best_metrics, checkpoints = _best_local_checkpoint(run_dir / CHECKPOINTS, history)
    exported: dict[str, Any] = {}
    name = cfg.registered_name if cfg.export else None
    if cfg.export:
        from whisperops.training.model import export_checkpoint

        exported = export_checkpoint(best_path, model_dir, out / "model", cfg.registered_name, cfg.quantizations)
    res = FinetuneResult(
        output=out,
        registered_name=name,
        best_checkpoint=best_path,
        best_eval_wer=best_metrics.get("eval_wer"),
        best_step=best_metrics.get("step"),
        history=history,
        checkpoints=checkpoints,
        exported=exported,
        data={"train": train.to_dict(), "eval": evaluation.to_dict(), "max_steps": max_steps, "eval_steps": eval_steps},
        wall_s=round(time.perf_counter() - started, 1),
        tensorboard=str(run_dir / "tensorboard"),
    )
    atomic_write_text(out / RESULT_FILE, json.dumps(res.to_dict(), indent=2))
    return res


def _trainer(cfg: FinetuneConfig, plan, use_gpu: bool = False, workers: int | None = None):
    """One ``TorchTrainer`` for both modes: ``workers=0`` is Ray Train's local mode (this process)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from whisperops.training.worker import train_loop_per_worker

    storage = _storage(cfg)
    if workers != 0:
        storage.mkdir(parents=True, exist_ok=True)
    # The same name is how Ray Train V2 restores a run: its checkpoint manager reloads the snapshot.
    runs = _ray_runs(storage) if cfg.resume and workers != 0 else []
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_json(), "plan": plan.to_dict()},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=cfg.workers if workers is None else workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": max(1, cfg.threads_per_worker)},
        ),
        run_config=RunConfig(
            name=runs[-1].name if runs else f"finetune-{int(time.time())}",
            storage_path=str(storage),
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.save_total_limit,
                checkpoint_score_attribute="eval_wer",
                checkpoint_score_order="min",
            ),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
    )


def _fit(cfg: FinetuneConfig, plan, use_gpu: bool):
    try:
        return _trainer(cfg, plan, use_gpu).fit()
    except Exception as err:  # Ray wraps worker errors; surface the first line of the cause
        cause = err.__cause__ or err
        line = (str(cause).strip().splitlines() or [type(cause).__name__])[-1]
        raise TrainingError(f"training failed after {cfg.max_failures} retries: {line[:300]}") from err


def _fit_local(cfg: FinetuneConfig, plan) -> dict[str, Any]:
    """Train in this process through Ray Train's local mode; the worker returns the Trainer's log history."""
    try:
        result = _trainer(cfg, plan, workers=0).fit()
    except WhisperOpsError:
        raise
    except Exception as err:
        line = (str(err).strip().splitlines() or [type(err).__name__])[-1]
        raise TrainingError(
            f"training failed: {line[:300]}; fix the cause and continue from the last checkpoint with --resume "
            "(automatic retries need --mode ray --max-failures N)"
        ) from err
    return result.return_value


def _best_local_checkpoint(folder: Path, history: list[dict[str, Any]]) -> tuple[Path, dict[str, Any], list[dict]]:
    """The best kept checkpoint by eval WER, and every kept one, from the Trainer's own folder and log."""
    wer_at = {h["step"]: h["eval_wer"] for h in history if "eval_wer" in h}
    kept = []
    for path in folder.glob("checkpoint-*"):
        step = path.name.removeprefix("checkpoint-")
        if step.isdigit() and int(step) in wer_at:
            kept.append({"path": str(path), "step": int(step), "eval_wer": wer_at[int(step)]})
    if not kept:
        raise TrainingError("training saved no checkpoint with eval_wer; check eval_steps and the eval set")
    kept.sort(key=lambda c: c["step"])
    best = min(kept, key=lambda c: (c["eval_wer"], -c["step"]))
    return Path(best["path"]), {"eval_wer": best["eval_wer"], "step": best["step"]}, kept


def _best_checkpoint(result) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    pairs = list(getattr(result, "best_checkpoints", None) or [])
    if not pairs and result.checkpoint is not None:
        pairs = [(result.checkpoint, result.metrics or {})]
    scored = [(c, m) for c, m in pairs if m.get("eval_wer") is not None]
    if not scored:
        raise TrainingError("training reported no checkpoint with eval_wer; check eval_steps and the eval set")
    best, metrics = min(scored, key=lambda cm: (cm[1]["eval_wer"], -cm[1].get("step", 0)))
    summary = [{"path": c.path, "step": m.get("step"), "eval_wer": m.get("eval_wer")} for c, m in scored]
    from ray.train.huggingface.transformers import RayTrainReportCallback

    return Path(best.path) / RayTrainReportCallback.CHECKPOINT_NAME, dict(metrics), summary


def _history(result) -> list[dict[str, Any]]:
    """The Trainer's log history (loss, eval WER per step) from the latest checkpoint."""
    ckpt = result.checkpoint
    if ckpt is None:
        return []
    state = Path(ckpt.path) / "checkpoint" / "trainer_state.json"
    if not state.exists():
        return []
    return json.loads(state.read_text()).get("log_history", [])


def clean_work_dirs(output: Path) -> None:
    """The Trainer's local copies are only needed while training; Ray's storage keeps the checkpoints."""
    shutil.rmtree(output / "run" / "hf-work", ignore_errors=True)
