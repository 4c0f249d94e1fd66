"""What runs in each training process: a ``Seq2SeqTrainer`` on prepared splits.

:func:`train_loop_per_worker` is Ray Train's entry point: one call per Ray worker (Ray has set up
the gloo/NCCL process group), or one call in the driver's own process in local mode
(``ScalingConfig(num_workers=0)``). :func:`build_trainer` is shared with the benchmark's plain run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisperops.training.config import CHECKPOINTS, FinetuneConfig

log = logging.getLogger(__name__)

TENSORBOARD_ENV = "TENSORBOARD_LOGGING_DIR"  # where transformers' TensorBoard callback writes


@dataclass
class WorkerPlan:
    """Paths the driver prepared; the same on every worker (one machine, or a shared file system)."""

    model_dir: str
    train_data: str
    eval_data: str
    run_dir: str
    deepspeed_config: str | None = None
    eval_steps: int = 0
    max_steps: int = -1
    generation_max_length: int = 225
    encoded: bool = False  # splits hold cached encoder_outputs instead of input_features
    local: bool = False  # Ray Train's local mode: this process, the Trainer's own checkpoints

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def compute_metrics_fn(tokenizer, language: str):
    """Eval WER with the normaliser ``whisperops evaluate`` uses, from generated token ids."""
    import numpy as np

    from whisperops.evaluation import wer

    def compute(pred) -> dict[str, float]:
        pred_ids = np.asarray(pred.predictions)
        label_ids = np.asarray(pred.label_ids).copy()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        pred_ids = np.where(pred_ids < 0, pad, pred_ids)
        label_ids = np.where(label_ids < 0, pad, label_ids)
        hyps = tokenizer.batch_decode(pred_ids, skip_special_tokens=True)
        refs = tokenizer.batch_decode(label_ids, skip_special_tokens=True)
        return {"wer": wer(refs, hyps, language=language)}

    return compute


def training_arguments(cfg: FinetuneConfig, plan: WorkerPlan, output_dir: str, report_to: list[str]):
    import torch
    from transformers import Seq2SeqTrainingArguments

    cuda = torch.cuda.is_available()
    fp16 = cfg.fp16 if cfg.fp16 is not None else cuda
    steps = plan.eval_steps
    return Seq2SeqTrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_steps=plan.max_steps,
        num_train_epochs=cfg.epochs,
        # Evaluate and save at the same steps: RayTrainReportCallback reports the metrics logged
        # last when a checkpoint is saved, so eval_wer must be fresh for every checkpoint.
        eval_strategy="steps",
        eval_steps=steps,
        save_strategy="steps",
        save_steps=steps,
        save_total_limit=cfg.save_total_limit,
        logging_strategy="steps",
        logging_steps=max(1, min(10, steps)),
        predict_with_generate=True,
        generation_max_length=plan.generation_max_length,
        generation_num_beams=cfg.generation_num_beams,
        metric_for_best_model="wer",
        greater_is_better=False,
        fp16=fp16,
        use_cpu=not cuda,
        # Under Ray the process group (gloo on CPU, NCCL on GPU) already exists; accelerate adopts it.
        ddp_backend=None,
        ddp_find_unused_parameters=False,
        remove_unused_columns=False,
        label_names=["labels"],
        dataloader_num_workers=0,
        report_to=report_to,
        disable_tqdm=True,
        seed=cfg.seed,
        deepspeed=plan.deepspeed_config,
        save_only_model=False,
        log_level="warning",
        # Per-device mean loss, averaged by DDP: the logged loss reads the same for 1 or N workers.
        average_tokens_across_devices=False,
    )


def build_trainer(cfg: FinetuneConfig, plan: WorkerPlan, output_dir: str, report_to: list[str] | None = None):
    """The ``Seq2SeqTrainer`` for this process (model, prepared splits, collator, WER metric)."""
    import datasets
    from transformers import Seq2SeqTrainer, WhisperProcessor

    from whisperops.training.data import SpeechCollator
    from whisperops.training.model import load_for_training

    processor = WhisperProcessor.from_pretrained(plan.model_dir)
    model = load_for_training(
        Path(plan.model_dir),
        lora=cfg.lora,
        lora_rank=cfg.lora_rank,
        freeze_encoder=cfg.freeze_encoder,
        freeze_embeddings=cfg.freeze_embeddings,
        freeze_cross_kv=cfg.freeze_cross_kv,
    )
    columns = ["encoder_outputs" if plan.encoded else "input_features", "labels"]
    train = datasets.load_from_disk(plan.train_data).with_format("numpy", columns=columns)
    evaluation = datasets.load_from_disk(plan.eval_data).with_format("numpy", columns=columns)
    base = model.get_base_model() if cfg.lora else model
    args = training_arguments(cfg, plan, output_dir, report_to if report_to is not None else [])
    return Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=evaluation,
        data_collator=SpeechCollator(base.config.decoder_start_token_id),
        compute_metrics=compute_metrics_fn(processor.tokenizer, cfg.language),
        processing_class=processor.feature_extractor,
    )


def step_timer():
    """A Trainer callback that notes the wall clock at the end of every optimizer step.

    Its ``steps_per_s()`` is the steady rate between the first and the last step: without the first
    step's warm-up, and without the final evaluation and checkpoint (both run after
    ``on_step_end``); evaluations at earlier steps do count.
    """
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

        def steps_per_s(self) -> float | None:
            if len(self.ends) < 3:
                return None
            return (len(self.ends) - 1) / (self.ends[-1] - self.ends[0])

    return StepTimer()


def _threads(cfg: FinetuneConfig, local_world: int) -> int:
    if cfg.threads_per_worker > 0:
        return cfg.threads_per_worker
    return max(1, (os.cpu_count() or 1) // max(1, local_world))


def train_loop_per_worker(loop_config: dict[str, Any]) -> dict[str, Any]:
    """Build the Trainer, resume from the last checkpoint where there is one, train.

    On Ray workers, checkpoints go to Ray (``RayTrainReportCallback``), which ranks them and hands
    the latest back to a restarted group. In local mode the Trainer keeps them itself, ranked by
    ``metric_for_best_model``, in ``RUN/checkpoints``, where ``--resume`` finds the latest. Returns
    the Trainer's log history (what local mode's driver reads; Ray reads its checkpoints instead).
    """
    import ray.train
    import torch

    cfg = FinetuneConfig.from_json(loop_config["config"])
    plan = WorkerPlan(**loop_config["plan"])
    ctx = ray.train.get_context()
    threads, tensorboard = torch.get_num_threads(), os.environ.get(TENSORBOARD_ENV)
    torch.set_num_threads(_threads(cfg, ctx.get_local_world_size()))
    # TensorBoard events from rank 0 only, in the run folder (`tensorboard --logdir RUN/tensorboard`).
    os.environ[TENSORBOARD_ENV] = str(Path(plan.run_dir) / "tensorboard")
    try:
        return _train(cfg, plan, ctx.get_world_rank())
    finally:
        # In local mode this is the caller's process (a notebook, a test): leave it as it was.
        torch.set_num_threads(threads)
        if tensorboard is None:
            os.environ.pop(TENSORBOARD_ENV, None)
        else:
            os.environ[TENSORBOARD_ENV] = tensorboard


def _train(cfg: FinetuneConfig, plan: WorkerPlan, rank: int) -> dict[str, Any]:
    from transformers import TrainerCallback

    run_dir = Path(plan.run_dir)
    # On Ray, one Trainer output folder per worker process: RayTrainReportCallback uploads each rank's
    # folder into one Ray checkpoint, so a shared folder would let rank 1 upload rank 0's half-written
    # files (and a restarted group must not pick up a dead attempt's checkpoints).
    work_dir = run_dir / CHECKPOINTS if plan.local else run_dir / "hf-work" / f"rank{rank}-pid{os.getpid()}"
    trainer = build_trainer(cfg, plan, str(work_dir), report_to=["tensorboard"] if rank == 0 else [])

    slow, fail_at = cfg.extra.get("slow_step_s"), cfg.extra.get("fail_at_step")
    if slow or fail_at:
        # Test hooks: slow each step down so that a test can kill a worker between two checkpoints,
        # or fail at one step (after the checkpoints before it).
        class _Hooks(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if slow:
                    time.sleep(float(slow))
                if fail_at and state.global_step == int(fail_at):
                    raise RuntimeError(f"test hook: failed at step {state.global_step}")

        trainer.add_callback(_Hooks())
    if plan.local:
        resume = _local_resume(cfg, work_dir)
    else:
        from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

        trainer.add_callback(RayTrainReportCallback())
        trainer = prepare_trainer(trainer)
        resume = _ray_resume(run_dir, rank)
    timer = step_timer()
    trainer.add_callback(timer)
    _record_worker(run_dir, rank, _checkpoint_step(resume))
    output = trainer.train(resume_from_checkpoint=resume)
    metrics = {"peak_rss_mb": peak_rss_mb(), "steps_per_s": timer.steps_per_s(), **output.metrics}
    _record_worker(run_dir, rank, _checkpoint_step(resume), metrics)
    return {"log_history": trainer.state.log_history}


def _local_resume(cfg: FinetuneConfig, work_dir: Path) -> str | None:
    if not cfg.resume:
        return None
    from whisperops.training.run import last_checkpoint

    last = last_checkpoint(work_dir)
    if last is not None:
        log.warning("resuming from %s", last)
    return str(last) if last is not None else None


def _ray_resume(run_dir: Path, rank: int) -> str | None:
    """Ray's latest checkpoint after a failure (or a resumed run), copied out of Ray's temporary view."""
    import shutil

    import ray.train
    from ray.train.huggingface.transformers import RayTrainReportCallback

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as ckpt_dir:
        # The Trainer reads it while training resumes, after Ray's view is gone.
        resume = str(run_dir / f"resume-rank{rank}")
        shutil.rmtree(resume, ignore_errors=True)
        shutil.copytree(Path(ckpt_dir) / RayTrainReportCallback.CHECKPOINT_NAME, resume)
    log.warning("worker %d resuming from %s", rank, resume)
    return resume


def peak_rss_mb() -> float:
    """This process's peak resident memory (Linux ru_maxrss is in KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _checkpoint_step(checkpoint: str | None) -> int | None:
    if checkpoint is None:
        return None
    state = Path(checkpoint) / "trainer_state.json"
    return json.loads(state.read_text()).get("global_step") if state.exists() else None


def _record_worker(run_dir: Path, rank: int, resumed_step: int | None, extra: dict | None = None) -> None:
    """``workers/rank-N.json`` (pid, host, start, resumed step; per attempt): where to look when one dies."""
    import socket

    folder = run_dir / "workers"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank-{rank}.json").write_text(
        json.dumps(
            {
                "rank": rank,
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": time.time(),
                "resumed_step": resumed_step,
                **(extra or {}),
            }
        )
    )
