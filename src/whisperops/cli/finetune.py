"""``whisperops finetune`` (Seq2SeqTrainer on Ray Train) and ``whisperops recipe banking``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from whisperops.cli.app import app, console

recipe_app = typer.Typer(help="End-to-end fine-tuning recipes: data, base eval, training, export, tuned eval.")
app.add_typer(recipe_app, name="recipe")


@app.command("finetune")
def finetune_cmd(
    train: str = typer.Option(..., "--train", help="Training set: JSONL manifest, audiofolder CSV or folder."),
    eval_set: str = typer.Option(None, "--eval", help="Held-out set for eval WER (picks the best checkpoint)."),
    output: Path = typer.Option(..., "--output", "-o", help="Run folder: checkpoints, TensorBoard, exported model."),
    model: str = typer.Option("tiny.en", "--model", "-m", help="Base model: registry name or directory."),
    name: str = typer.Option(None, "--name", help="Register the result under this name (default MODEL-OUTPUT)."),
    workers: int = typer.Option(1, "--workers", "-w", help="Ray Train workers (processes)."),
    threads: int = typer.Option(0, "--threads", help="CPU threads per worker (0: cores / workers)."),
    max_steps: int = typer.Option(-1, "--max-steps", help="Optimizer steps (wins over --epochs)."),
    epochs: float = typer.Option(3.0, "--epochs", help="Passes over the training set."),
    learning_rate: float = typer.Option(1e-5, "--learning-rate", "--lr", help="Peak learning rate."),
    batch_size: int = typer.Option(8, "--batch-size", help="Per-worker batch size."),
    grad_accum: int = typer.Option(1, "--grad-accum", help="Gradient accumulation steps."),
    warmup_steps: int = typer.Option(0, "--warmup-steps"),
    eval_steps: int = typer.Option(0, "--eval-steps", help="Evaluate + checkpoint every N steps (0: ~5 per run)."),
    keep: int = typer.Option(2, "--keep", help="Checkpoints kept (the best by eval WER)."),
    max_failures: int = typer.Option(1, "--max-failures", help="Worker failures to recover from (from checkpoint)."),
    deepspeed: str = typer.Option(None, "--deepspeed", help="zero2 | zero3 | zero3-offload (GPU)."),
    lora: bool = typer.Option(False, "--lora", help="Train LoRA adapters (merged into the weights on export)."),
    lora_rank: int = typer.Option(8, "--lora-rank"),
    freeze_encoder: bool = typer.Option(
        False, "--freeze-encoder", help="Train the decoder only, on encoder outputs computed once per clip."
    ),
    freeze_embeddings: bool = typer.Option(False, "--freeze-embeddings", help="Keep the token embeddings fixed."),
    freeze_cross_kv: bool = typer.Option(
        False, "--freeze-cross-kv", help="Keep the decoder's cross-attention key/value projections fixed."
    ),
    ray_address: str = typer.Option(None, "--ray-address", help="Join this Ray cluster (default: a local Ray)."),
    submit: str = typer.Option(None, "--submit", help="Submit as a Ray job to this Jobs API address (:8265)."),
    no_wait: bool = typer.Option(False, "--no-wait", help="With --submit: return once submitted."),
    no_export: bool = typer.Option(False, "--no-export", help="Skip the CTranslate2 export and registration."),
    seed: int = typer.Option(42, "--seed"),
) -> None:
    """Fine-tune Whisper with Seq2SeqTrainer on Ray Train; export the best checkpoint (by eval WER) to CT2."""
    from whisperops.training.config import FinetuneConfig

    cfg = FinetuneConfig(
        train=train,
        eval=eval_set or "",
        output=str(output),
        model=model,
        name=name,
        workers=workers,
        threads_per_worker=threads,
        max_steps=max_steps,
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        warmup_steps=warmup_steps,
        eval_steps=eval_steps,
        save_total_limit=keep,
        max_failures=max_failures,
        deepspeed=deepspeed,
        lora=lora,
        lora_rank=lora_rank,
        freeze_encoder=freeze_encoder,
        freeze_embeddings=freeze_embeddings,
        freeze_cross_kv=freeze_cross_kv,
        ray_address=ray_address,
        export=not no_export,
        seed=seed,
    )
    if submit:
        from whisperops.training.jobs import JobError, submit_job

        outcome = submit_job(cfg, submit, wait=not no_wait)
        console.print(f"job {outcome.job_id}: {outcome.status}")
        if outcome.status not in ("SUCCEEDED", "PENDING"):
            console.print(outcome.logs[-3000:], markup=False, highlight=False)
            raise JobError(f"job {outcome.job_id} {outcome.status}; see ray job logs {outcome.job_id}")
        return
    from whisperops.evaluation.metrics import pct
    from whisperops.training.run import finetune

    # soft_wrap: the command must stay copy-pasteable, not broken at the terminal width.
    console.print(f"TensorBoard: tensorboard --logdir {output.resolve() / 'run' / 'tensorboard'}", soft_wrap=True)
    result = finetune(cfg)
    console.print(
        f"best checkpoint: step {result.best_step}, eval WER {pct(result.best_eval_wer)} ({result.best_checkpoint})",
        soft_wrap=True,
    )
    if result.registered_name:
        console.print(
            f"registered {result.registered_name}: whisperops transcribe --model {result.registered_name}",
            soft_wrap=True,
        )
    console.print(f"wrote {result.output / 'finetune.json'} in {result.wall_s:.0f} s", soft_wrap=True)


@recipe_app.command("banking")
def recipe_banking_cmd(
    output: Path = typer.Option(..., "--output", "-o", help="Folder for data, runs, models and report.json."),
    train: int = typer.Option(0, "--train", help="Training sentences (0: the recipe's default)."),
    test: int = typer.Option(0, "--test", help="Test sentences (0: the recipe's default)."),
    max_steps: int = typer.Option(0, "--max-steps", help="Training steps (0: the recipe's default)."),
    workers: int = typer.Option(1, "--workers", "-w"),
    name: str = typer.Option(None, "--name", help="Registered name (default tiny.en-banking)."),
    real: Path = typer.Option(None, "--real", help="Real speech manifest (default ../shared/data/speech)."),
) -> None:
    """Banking calls end to end: synthesise, evaluate tiny.en, fine-tune, export, evaluate; DIR/report.json."""
    from whisperops.training.recipe import BankingRecipe, run_banking

    recipe = BankingRecipe(output=output, workers=workers)
    if train:
        recipe.train = train
    if test:
        recipe.test = test
    if max_steps:
        recipe.max_steps = max_steps
    if name:
        recipe.name = name
    if real:
        recipe.real = real
    report = run_banking(recipe, progress=lambda msg: console.print(msg))
    console.print(json.dumps(report, indent=2))
