"""Fine-tuning throughput and memory for tiny.en: the plain Trainer against each way whisperops trains.

Four runs side by side, the same total cores for each: the plain ``Seq2SeqTrainer`` in one process
with N threads; Ray Train's local mode (``whisperops finetune``'s default: the same Trainer in the
calling process, ``ScalingConfig(num_workers=0)``); Ray Train with 1 worker of N threads; Ray Train
with 2 workers of N/2 threads (gloo DDP, same global batch). Each run is a fresh process, so peak
RSS is its own, and the order rotates round by round. ``--extras`` adds the same 2-rank DDP under
torchrun without Ray (what DDP costs apart from Ray) and plain + LoRA (what LoRA saves).

    flock /tmp/bench.lock .venv/bin/python benchmarks/finetune_throughput.py --steps 10 --batch-size 4 --repeats 3

Prints each round, then one table of medians: steady samples/s (steps 2..N), end to end (the
Trainer's ``train_runtime``, one evaluation and one checkpoint included), the whole process's wall
time, peak RSS per worker, and each run's cost against the plain Trainer as the median of the
per-round ratios (local mode's target: within 3%).
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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine

RESULT = "finetune-bench-result "
WORKERS = 2  # DDP ranks, under Ray and under torchrun alike
RAY_CHILDREN = {"local": ("local", 1), "ray1": ("ray", 1), "ray": ("ray", WORKERS)}  # child -> (mode, workers)


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
    if args.child in RAY_CHILDREN:
        mode, workers = RAY_CHILDREN[args.child]
        for record in run_ray(args, mode, workers, Path(args.train), Path(args.eval), Path(args.out)):
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


def summarise(args: argparse.Namespace, records: list[dict], wall_s: float) -> dict:
    """One run's numbers from its process records (one, or one per DDP rank / Ray worker)."""
    runtime = max(r["train_runtime"] for r in records)
    return {
        "wall_s": wall_s,
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
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall_s = time.perf_counter() - started
    # Each run leaves ~0.5 GB of checkpoints; a full benchmark would otherwise fill a small disk.
    shutil.rmtree(out, ignore_errors=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode or not lines:
        sys.exit(f"{mode} run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return summarise(args, [json.loads(line[len(RESULT) :]) for line in lines], wall_s)


def run_ray(args: argparse.Namespace, mode: str, workers: int, train: Path, evaluation: Path, out: Path) -> list[dict]:
    """Train as ``whisperops finetune`` does; the workers' records (``rank-N.json``), as other children print theirs."""
    from whisperops.training.config import FinetuneConfig
    from whisperops.training.run import finetune

    cfg = FinetuneConfig(
        train=str(train), eval=str(evaluation), output=str(out), model=args.model, mode=mode, workers=workers,
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
    p.add_argument("--extras", action="store_true", help="also torchrun DDP (no Ray) and plain + LoRA")
    p.add_argument("--child", choices=["plain", "lora", "ddp", *RAY_CHILDREN], help=argparse.SUPPRESS)
    p.add_argument("--train", help=argparse.SUPPRESS)
    p.add_argument("--eval", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="ft-bench-") as tmp:
        compare(args, Path(tmp))


PLAIN, LOCAL, RAY1, RAY2, DDP, LORA = (
    "plain Trainer, 1 process",
    "Ray Train local mode",
    "Ray Train, 1 worker",
    "Ray Train, 2 workers",
    "torch DDP, 2 processes",
    "plain Trainer + LoRA",
)
CHILD = {PLAIN: "plain", LOCAL: "local", RAY1: "ray1", RAY2: "ray", DDP: "ddp", LORA: "lora"}
KEYS = ("steady_samples_per_s", "samples_per_s", "wall_s", "peak_rss_mb")


def compare(args: argparse.Namespace, root: Path) -> None:
    train, evaluation = make_data(root / "data", args.clips)
    # Every run includes one evaluation (generate on 4 clips) at its last step, so the comparison is fair.
    names = [PLAIN, LOCAL, RAY1, RAY2] + ([DDP, LORA] if args.extras else [])
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for rnd in range(args.repeats):
        for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
            r = run_child(CHILD[name], args, train, evaluation, root / f"{rnd}-{CHILD[name]}")
            runs[name].append(r)
            print(f"round {rnd + 1} {name}: {r['steady_samples_per_s']:.3f} samples/s steady, "
                  f"{r['samples_per_s']:.3f} end to end, {r['wall_s']:.1f} s process, "
                  f"peak {r['peak_rss_mb']:.0f} MB", flush=True)  # fmt: skip
    med = {name: {k: statistics.median(r[k] for r in rs) for k in KEYS} for name, rs in runs.items()}

    def cost(name: str, key: str) -> float:
        """Median over rounds of how much slower ``name`` ran than the plain Trainer in the same round."""
        return statistics.median(slower(r, p, key) for r, p in zip(runs[name], runs[PLAIN], strict=True))

    print(f"\n{args.model}, {args.steps} steps, global batch {args.batch_size}, {args.threads} threads in all; "
          f"{machine()}; medians of {args.repeats} round(s), the order rotating")  # fmt: skip
    print("steady = steps 2..N (no warm-up step, no final evaluation and checkpoint); end to end = train_runtime; "
          "process = the whole run's wall time, start-up and data loading included; +x% = slower than plain, "
          "median of per-round ratios")  # fmt: skip
    print(f"{'':26}{'steady samples/s':>22}{'end-to-end samples/s':>24}{'process s':>18}{'peak RSS/worker':>17}")
    for name in names:
        m = med[name]
        rel = "" if name == PLAIN else f" ({100 * cost(name, 'steady_samples_per_s'):+.1f}%)"
        rel_e2e = "" if name == PLAIN else f" ({100 * cost(name, 'samples_per_s'):+.1f}%)"
        rel_wall = "" if name == PLAIN else f" ({-100 * cost(name, 'wall_s'):+.1f}%)"
        print(f"{name:26}{m['steady_samples_per_s']:>12.3f}{rel:>10}{m['samples_per_s']:>14.3f}{rel_e2e:>10}"
              f"{m['wall_s']:>9.1f}{rel_wall:>9}{m['peak_rss_mb']:>14.0f} MB")  # fmt: skip
    for key, label in (("steady_samples_per_s", "per step"), ("samples_per_s", "end to end")):
        c = cost(LOCAL, key)
        print(f"{'PASS' if c <= 0.03 else 'FAIL'}  Ray Train local mode vs plain Trainer, {label}: {100 * c:+.1f}% "
              "(target within 3%)")  # fmt: skip
    worst = max(med[n]["peak_rss_mb"] for n in (PLAIN, LOCAL, RAY1, RAY2))
    print(f"{'PASS' if worst < 3072 else 'FAIL'}  full fine-tuning peak RSS per worker {worst:.0f} MB (target < 3 GB)")
    if args.extras:
        own = slower(med[RAY2], med[DDP])
        print(f"Ray's own cost with 2 workers (vs the same DDP under torchrun): {100 * own:+.1f}% per step; "
              f"DDP vs plain: {100 * cost(DDP, 'steady_samples_per_s'):+.1f}%")  # fmt: skip
        saved = med[PLAIN]["peak_rss_mb"] - med[LORA]["peak_rss_mb"]
        print(f"LoRA saves {saved:.0f} MB peak RSS vs full fine-tuning ({saved / med[PLAIN]['peak_rss_mb']:.0%}), "
              f"at {med[LORA]['steady_samples_per_s']:.2f} samples/s")  # fmt: skip


if __name__ == "__main__":
    main()
