"""What runs in each training process: a ``Seq2SeqTrainer`` on prepared splits.

:func:`train_loop_per_worker` is Ray Train's entry point (one call per worker; Ray has set up the
gloo/NCCL process group); :func:`build_trainer` is shared with the single-process benchmark.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisperops.training.config import FinetuneConfig

log = logging.getLogger(__name__)


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


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train worker: build the Trainer, resume from Ray's latest checkpoint after a failure, train."""
    import ray.train
    import torch
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer
    from transformers import TrainerCallback

    cfg = FinetuneConfig.from_json(loop_config["config"])
    plan = WorkerPlan(**loop_config["plan"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.set_num_threads(_threads(cfg, ctx.get_local_world_size()))
    run_dir = Path(plan.run_dir)

    # TensorBoard events from rank 0 only, in the run folder (`tensorboard --logdir RUN/tensorboard`).
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run_dir / "tensorboard")
    # One Trainer output folder per worker process: RayTrainReportCallback uploads each rank's folder
    # into one Ray checkpoint, so a shared folder would let rank 1 upload rank 0's half-written files
    # (and a restarted group must not pick up a dead attempt's checkpoints).
    work_dir = run_dir / "hf-work" / f"rank{rank}-pid{os.getpid()}"
    trainer = build_trainer(cfg, plan, str(work_dir), report_to=["tensorboard"] if rank == 0 else [])
    trainer.add_callback(RayTrainReportCallback())

    hook = cfg.extra.get("slow_step_s")
    if hook:
        # Test hook: slow each step down so that a test can kill a worker between two checkpoints.
        class _Slow(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                time.sleep(float(hook))

        trainer.add_callback(_Slow())
    trainer = prepare_trainer(trainer)
    timer = step_timer()
    trainer.add_callback(timer)

    checkpoint = ray.train.get_checkpoint()
    resume = None
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            # Copy out of Ray's temporary view: the Trainer reads it while training resumes.
            resume = str(run_dir / f"resume-rank{rank}")
            import shutil

            shutil.rmtree(resume, ignore_errors=True)
            shutil.copytree(Path(ckpt_dir) / RayTrainReportCallback.CHECKPOINT_NAME, resume)
        log.warning("worker %d resuming from %s", rank, resume)
    _record_worker(run_dir, rank, _checkpoint_step(resume))
    output = trainer.train(resume_from_checkpoint=resume)
    metrics = {"peak_rss_mb": peak_rss_mb(), "steps_per_s": timer.steps_per_s(), **output.metrics}
    _record_worker(run_dir, rank, _checkpoint_step(resume), metrics)


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
