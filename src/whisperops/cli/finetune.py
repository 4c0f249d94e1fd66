"""``whisperops finetune`` (Seq2SeqTrainer here, or on Ray Train) and ``whisperops recipe banking``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from whisperops.cli.app import app, console
from whisperops.cli.options import option
from whisperops.errors import OptionError
from whisperops.training.config import FinetuneConfig

CONFIG_FIELDS = frozenset(FinetuneConfig.__dataclass_fields__)

recipe_app = typer.Typer(help="End-to-end fine-tuning recipes: data, base eval, training, export, tuned eval.")
app.add_typer(recipe_app, name="recipe")


# Each option is a FinetuneConfig field of the same name: its default and help are declared there.
# --train, --eval and --output are checked by preflight, so a missing one is the same one line everywhere.
@app.command("finetune")
def finetune_cmd(
    train: str = option(FinetuneConfig, "train", "--train"),
    eval: str = option(FinetuneConfig, "eval", "--eval"),
    output: str = option(FinetuneConfig, "output", "--output", "-o"),
    model: str = option(FinetuneConfig, "model", "--model", "-m"),
    name: str | None = option(FinetuneConfig, "name", "--name"),
    mode: str = option(FinetuneConfig, "mode", "--mode"),
    workers: int = option(FinetuneConfig, "workers", "--workers", "-w"),
    threads_per_worker: int = option(FinetuneConfig, "threads_per_worker", "--threads"),
    max_steps: int = option(FinetuneConfig, "max_steps", "--max-steps"),
    epochs: float = option(FinetuneConfig, "epochs", "--epochs"),
    learning_rate: float = option(FinetuneConfig, "learning_rate", "--learning-rate", "--lr"),
    batch_size: int = option(FinetuneConfig, "batch_size", "--batch-size"),
    gradient_accumulation_steps: int = option(FinetuneConfig, "gradient_accumulation_steps", "--grad-accum"),
    warmup_steps: int = option(FinetuneConfig, "warmup_steps", "--warmup-steps"),
    eval_steps: int = option(FinetuneConfig, "eval_steps", "--eval-steps"),
    save_total_limit: int = option(FinetuneConfig, "save_total_limit", "--keep"),
    max_failures: int = option(FinetuneConfig, "max_failures", "--max-failures"),
    resume: bool = option(FinetuneConfig, "resume", "--resume"),
    deepspeed: str | None = option(FinetuneConfig, "deepspeed", "--deepspeed"),
    lora: bool = option(FinetuneConfig, "lora", "--lora"),
    lora_rank: int = option(FinetuneConfig, "lora_rank", "--lora-rank"),
    freeze_encoder: bool = option(FinetuneConfig, "freeze_encoder", "--freeze-encoder"),
    freeze_embeddings: bool = option(FinetuneConfig, "freeze_embeddings", "--freeze-embeddings"),
    freeze_cross_kv: bool = option(FinetuneConfig, "freeze_cross_kv", "--freeze-cross-kv"),
    ray_address: str | None = option(FinetuneConfig, "ray_address", "--ray-address"),
    export: bool = option(FinetuneConfig, "export", "--export/--no-export"),
    seed: int = option(FinetuneConfig, "seed", "--seed"),
    submit: str | None = typer.Option(None, "--submit", help="Submit as a Ray job to this Jobs API address (:8265)."),
    no_wait: bool = typer.Option(False, "--no-wait", help="With --submit: return once submitted."),
) -> None:
    """Fine-tune Whisper with Seq2SeqTrainer, here or on Ray Train; export the best checkpoint (by eval WER) to CT2."""
    settings = {k: v for k, v in locals().items() if k in CONFIG_FIELDS}
    cfg = FinetuneConfig.from_dict(settings)
    if submit:
        from whisperops.training.jobs import JobError, submit_job

        if cfg.mode == "local":
            raise OptionError(f"--submit {submit}: a job trains on the cluster's Ray Train; drop --mode local")

        outcome = submit_job(cfg, submit, wait=not no_wait)
        console.print(f"job {outcome.job_id}: {outcome.status}")
        if outcome.status not in ("SUCCEEDED", "PENDING"):
            console.print(outcome.logs[-3000:], markup=False, highlight=False)
            raise JobError(f"job {outcome.job_id} {outcome.status}; see ray job logs {outcome.job_id}")
        return
    from whisperops.evaluation.metrics import pct
    from whisperops.training.run import finetune

    # soft_wrap: the command must stay copy-pasteable, not broken at the terminal width.
    console.print(
        f"TensorBoard: tensorboard --logdir {cfg.output_path.resolve() / 'run' / 'tensorboard'}", soft_wrap=True
    )
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
    real: Path | None = typer.Option(
        None, "--real", help="Real-speech manifest for the regression check (skipped when not given)."
    ),
) -> None:
    """Banking calls end to end: synthesise, evaluate tiny.en, fine-tune, export, evaluate; DIR/report.json."""
    from whisperops.training.recipe import BankingRecipe, run_banking

    recipe = BankingRecipe(output=output, workers=workers)
    if train:
        recipe.train = train
    if test:
        recipe.test = test
    if max_steps:
        recipe.training["max_steps"] = max_steps
    if name:
        recipe.name = name
    recipe.real = real
    report = run_banking(recipe, progress=lambda msg: console.print(msg))
    console.print(json.dumps(report, indent=2))
