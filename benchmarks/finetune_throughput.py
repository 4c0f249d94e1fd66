"""Fine-tuning throughput and memory for tiny.en: plain Trainer (one process) vs Ray Train (2 workers).

Same total cores for both: the plain Trainer gets all N threads; Ray Train runs 2 workers of N/2
threads each (gloo DDP). Each configuration runs in a fresh process so peak RSS is its own. A third
row runs the same 2-rank DDP under torchrun, without Ray, to split Ray's overhead into what DDP
costs and what Ray itself costs. A fourth runs Ray Train with 1 worker of N threads, the layout a
local `whisperops finetune` uses by default (no DDP). Also measures LoRA's memory against full
fine-tuning.

    flock /tmp/bench.lock .venv/bin/python benchmarks/finetune_throughput.py --steps 10 --batch-size 4 --repeats 3

Prints one table of medians: samples/s, Ray's overhead (target < 10%), peak RSS per worker (target
< 3 GB), and what LoRA saves.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine

RESULT = "finetune-bench-result "
WORKERS = 2  # DDP ranks, under Ray and under torchrun alike


def make_data(root: Path, n: int) -> tuple[Path, Path]:
    from whisperops.data import banking
    from whisperops.data.synth import synthesize

    utts = banking.generate(n + 4, seed=11)
    synthesize([u.line() for u in utts[:n]], root / "train", voices=["espeak:en-us"])
    synthesize([u.line() for u in utts[n:]], root / "eval", voices=["espeak:en-us"])
    return root / "train" / "manifest.jsonl", root / "eval" / "manifest.jsonl"


def child(args: argparse.Namespace) -> None:
    """One run in this process (a fresh one per run, Ray's included); prints a JSON line.

    Under torchrun ("ddp") this is one of the DDP ranks: it trains its share of the global batch on
    its share of the threads, exactly as a Ray worker does, and prints its own line.
    """
    if args.child in ("ray", "ray1"):
        workers = 1 if args.child == "ray1" else WORKERS
        for record in run_ray(args, workers, Path(args.train), Path(args.eval), Path(args.out)):
            print(RESULT + json.dumps(record), flush=True)
        return
    import torch

    from whisperops.data.manifest import load_dataset
    from whisperops.training.config import FinetuneConfig
    from whisperops.training.data import prepare_split
    from whisperops.training.model import hf_model_dir
    from whisperops.training.worker import WorkerPlan, build_trainer, peak_rss_mb, step_timer

    world = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun sets it; the Trainer joins the gloo group
    torch.set_num_threads(max(1, args.threads // world))
    model_dir = hf_model_dir(args.model)
    train = prepare_split(load_dataset(args.train), model_dir, "train")
    evaluation = prepare_split(load_dataset(args.eval), model_dir, "eval")
    cfg = FinetuneConfig(
        train=args.train, eval=args.eval, output=args.out, model=args.model, batch_size=args.batch_size // world,
        lora=args.child == "lora", learning_rate=1e-5,
    )  # fmt: skip
    plan = WorkerPlan(str(model_dir), str(train.path), str(evaluation.path), args.out, None, args.steps, args.steps, 40)
    trainer = build_trainer(cfg, plan, str(Path(args.out) / "hf"))
    timer = step_timer()  # what Ray's workers add too
    trainer.add_callback(timer)
    runtime = trainer.train().metrics["train_runtime"]  # Ray's workers report the same Trainer metric
    print(RESULT + json.dumps({"train_runtime": runtime, "steps_per_s": timer.steps_per_s(),
                               "peak_rss_mb": peak_rss_mb()}), flush=True)  # fmt: skip


def summarise(args: argparse.Namespace, records: list[dict]) -> dict:
    """One run's numbers from its process records (one, or one per DDP rank / Ray worker)."""
    runtime = max(r["train_runtime"] for r in records)
    return {
        "samples_per_s": args.steps * args.batch_size / runtime,
        "train_runtime": runtime,
        # Ranks step in lockstep (DDP): the slowest one's rate times the global batch.
        "steady_samples_per_s": min(r["steps_per_s"] for r in records) * args.batch_size,
        "peak_rss_mb": max(r["peak_rss_mb"] for r in records),
    }


def slower(run: dict, than: dict, key: str = "steady_samples_per_s") -> float:
    """How much slower ``run`` is than ``than``, as a fraction of ``than``'s rate (negative: faster)."""
    return 1 - run[key] / than[key]


def run_child(mode: str, args: argparse.Namespace, train: Path, evaluation: Path, out: Path) -> dict:
    launch = [sys.executable]
    if mode == "ddp":  # the same DDP without Ray: what Ray itself costs, apart from DDP's own cost
        launch += ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORKERS)]
    cmd = [*launch, __file__, "--child", mode, "--train", str(train), "--eval", str(evaluation),
           "--out", str(out), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--threads", str(args.threads), "--model", args.model]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    # Each run leaves ~0.5 GB of checkpoints; a full benchmark would otherwise fill a small disk.
    shutil.rmtree(out, ignore_errors=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode or not lines:
        sys.exit(f"{mode} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return summarise(args, [json.loads(line[len(RESULT) :]) for line in lines])


def run_ray(args: argparse.Namespace, workers: int, train: Path, evaluation: Path, out: Path) -> list[dict]:
    """Train with Ray; the workers' own records (``rank-N.json``), as the other children print theirs."""
    from whisperops.training.config import FinetuneConfig
    from whisperops.training.run import finetune

    cfg = FinetuneConfig(
        train=str(train), eval=str(evaluation), output=str(out), model=args.model, workers=workers,
        threads_per_worker=max(1, args.threads // workers), batch_size=args.batch_size // workers,
        max_steps=args.steps, eval_steps=args.steps, export=False, ray_num_cpus=args.threads,
        generation_max_length=40, learning_rate=1e-5,
    )  # fmt: skip
    finetune(cfg)
    return [json.loads(p.read_text()) for p in sorted((out / "run" / "workers").glob("rank-*.json"))]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=4, help="Global batch (Ray: split over 2 workers).")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3, help="rounds, the order rotating; the table shows medians")
    p.add_argument("--child", choices=["plain", "lora", "ddp", "ray", "ray1"], help=argparse.SUPPRESS)
    p.add_argument("--train", help=argparse.SUPPRESS)
    p.add_argument("--eval", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="ft-bench-") as tmp:
        compare(args, Path(tmp))


def compare(args: argparse.Namespace, root: Path) -> None:
    train, evaluation = make_data(root / "data", args.clips)
    # Every run includes one evaluation (generate on 4 clips) at its last step, so the comparison is fair.
    configs = {
        "plain Trainer, 1 process": lambda out: run_child("plain", args, train, evaluation, out),
        "torch DDP, 2 processes": lambda out: run_child("ddp", args, train, evaluation, out),
        "Ray Train, 2 workers": lambda out: run_child("ray", args, train, evaluation, out),
        "Ray Train, 1 worker": lambda out: run_child("ray1", args, train, evaluation, out),
        "plain Trainer + LoRA": lambda out: run_child("lora", args, train, evaluation, out),
    }
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    names = list(configs)
    for rnd in range(args.repeats):
        for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
            r = configs[name](root / f"{rnd}-{len(runs[name])}-{name.split()[0]}")
            runs[name].append(r)
            print(f"round {rnd + 1} {name}: {r['samples_per_s']:.2f} samples/s end to end, "
                  f"{r['steady_samples_per_s']:.2f} steady, peak {r['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
    keys = ("samples_per_s", "steady_samples_per_s", "peak_rss_mb")
    med = {name: {k: statistics.median(r[k] for r in rs) for k in keys} for name, rs in runs.items()}
    plain, ddp, ray_run, ray_one, lora = (med[n] for n in names)
    print(f"\n{args.model}, {args.steps} steps, global batch {args.batch_size}, {args.threads} threads in all; "
          f"{machine()}; medians of {args.repeats} round(s)")  # fmt: skip
    print("steady = steps 2..N (no warm-up step, no final evaluation and checkpoint); end to end = train_runtime")
    print(f"{'':28}{'steady samples/s':>18}{'end-to-end samples/s':>22}{'peak RSS/worker':>18}")
    for name in names:
        m = med[name]
        print(f"{name:28}{m['steady_samples_per_s']:>18.2f}{m['samples_per_s']:>22.2f}{m['peak_rss_mb']:>15.0f} MB")
    steady = slower(ray_run, plain)
    whole = slower(ray_run, plain, "samples_per_s")
    print(f"{'PASS' if steady < 0.10 else 'FAIL'}  Ray overhead per training step {100 * steady:+.1f}% (target < 10%); "
          f"end to end, with Ray persisting the checkpoint: {100 * whole:+.1f}%")  # fmt: skip
    print(f"      of which Ray's own (vs the same DDP under torchrun): {100 * slower(ray_run, ddp):+.1f}% per step; "
          f"DDP vs plain: {100 * slower(ddp, plain):+.1f}%")  # fmt: skip
    one = slower(ray_one, plain)
    print(f"{'PASS' if one < 0.10 else 'FAIL'}  Ray overhead per step with 1 worker of {args.threads} threads "
          f"(no DDP; the default local layout): {100 * one:+.1f}% (target < 10%)")  # fmt: skip
    worst = max(plain["peak_rss_mb"], ray_run["peak_rss_mb"], ray_one["peak_rss_mb"])
    print(f"{'PASS' if worst < 3072 else 'FAIL'}  full fine-tuning peak RSS per worker {worst:.0f} MB (target < 3 GB)")
    saved = plain["peak_rss_mb"] - lora["peak_rss_mb"]
    print(f"LoRA saves {saved:.0f} MB peak RSS vs full fine-tuning ({saved / plain['peak_rss_mb']:.0%}), "
          f"at {lora['steady_samples_per_s']:.2f} samples/s")  # fmt: skip


if __name__ == "__main__":
    main()
