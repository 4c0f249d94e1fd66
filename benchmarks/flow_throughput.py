"""TranscriptionFlow throughput vs bare faster-whisper, on the shared English set, in one run.

Rows (medians over --rounds, the order rotating each round):
  bare      faster-whisper, one process, sequential, --threads-bare threads (2), its defaults (no VAD):
            the reference every "vs bare" ratio divides; "+ VAD" is the same with vad_filter=True
  flow x1   TranscriptionFlow, --max-workers 1, one shard, 2 threads
  flow x2   TranscriptionFlow, --max-workers 2, shards of --shard-size items, 1 thread per task
  whisperops transcribe   the CLI with its defaults (the flow, outputs written), cache off
  (flow x2 with --batched N: the same with --batch-size N, e.g. 0 for the sequential decoder)

"flow wall" is the run's own clock from the start step to the gathered results (resolve, hash,
shard, model loads, transcription, merge). "process wall" is the whole process: Metaflow's CLI
start-up, the card (table, charts, sentence embeddings) and the end step, and for the
`whisperops transcribe` row the CLI itself: the end-to-end time a user waits.
Metaflow's per-task overhead (task wall minus the time spent inside the step body) is reported on
its own. The transcript cache is off for every flow run, so nothing is reused between rows.

    flock /tmp/bench.lock python benchmarks/flow_throughput.py --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import load_manifest, machine, setting_argument

from whisperops.engine import DecodeOptions

FLOW_MODULE = "whisperops.flows.transcription"


def _child_json(code: str, cwd: Path, env: dict) -> Any:
    """The JSON that ``code`` prints last, run in a child with ``env`` (Metaflow reads it on import)."""
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_bare(model: str, rows: list[dict], threads: int, beam_size: int, vad: bool) -> dict:
    from faster_whisper import WhisperModel

    from whisperops.models import registry

    start = time.perf_counter()
    fw = WhisperModel(str(registry.resolve(model)), device="cpu", compute_type="int8", cpu_threads=threads)
    hyps = []
    for row in rows:
        segments, _ = fw.transcribe(str(row["path"]), beam_size=beam_size, vad_filter=vad)
        hyps.append(" ".join(s.text.strip() for s in segments))
    wall = time.perf_counter() - start
    return {"flow_wall": wall, "process_wall": wall, "hyps": hyps, "overhead": []}


def run_flow(
    model: str,
    rows: list[dict],
    workers: int,
    threads: int,
    shard_size: int,
    batch: int | None,
    root: Path,
    beam: int = 0,
) -> dict:
    sysroot = root / f"mf-{time.time_ns()}"
    sysroot.mkdir(parents=True)
    env = {
        **os.environ,
        "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(sysroot),
        "WHISPEROPS_CACHE": os.environ.get("WHISPEROPS_CACHE", str(root / "cache")),
    }
    args = [
        "run",
        "--sources",
        json.dumps([str(r["path"]) for r in rows]),
        "--model",
        model,
        "--use-cache",
        "false",
        "--threads",
        str(threads),
        "--shard-size",
        str(shard_size),
        "--max-workers",
        str(workers),
        "--run-id-file",
        str(sysroot / "run_id"),
        *(["--beam-size", str(beam)] if beam else []),
        *(["--batch-size", str(batch)] if batch is not None else []),  # None: the flow's default
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", FLOW_MODULE, *args], cwd=sysroot, env=env, capture_output=True, text=True
    )
    process_wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"flow run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    run_id = (sysroot / "run_id").read_text().strip()
    # Read the run back in a child with the same environment (metaflow reads it on import).
    reader = f"""
import json
import whisperops.flows
from metaflow import Run, namespace
namespace(None)
run = Run("TranscriptionFlow/{run_id}")
df = run.data.results
over = []
for step in run:
    for task in step:
        body = task.data.task_s if step.id == "transcribe" else None
        if body is not None:
            over.append((task.finished_at - task.created_at).total_seconds() - body)
print(json.dumps({{"texts": dict(zip(df["name"], df["text"])), "summary": run.data.summary, "overhead": over,
                  "shards": len(list(run["transcribe"]))}}))
"""
    data = _child_json(reader, sysroot, env)
    names = [Path(r["path"]).stem for r in rows]
    return {
        "flow_wall": data["summary"]["wall_s"],
        "process_wall": process_wall,
        "hyps": [data["texts"].get(n, "") for n in names],
        "overhead": data["overhead"],
        "shards": data["shards"],
    }


def run_cli(model: str, rows: list[dict], root: Path) -> dict:
    """``whisperops transcribe`` with its defaults, as a user runs it: the whole process, outputs written."""
    sysroot = root / f"cli-{time.time_ns()}"
    sysroot.mkdir(parents=True)
    env = {**os.environ, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(sysroot / ".metaflow")}
    out_dir = sysroot / "out"
    cmd = [sys.executable, "-m", "whisperops", "transcribe", *(str(r["path"]) for r in rows), "-o", str(out_dir)]
    start = time.perf_counter()
    proc = subprocess.run([*cmd, "--model", model, "--no-cache"], cwd=sysroot, env=env, capture_output=True, text=True)
    process_wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"whisperops transcribe failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    run_id = next(line.split("/")[-1] for line in proc.stdout.splitlines() if line.startswith("run id:"))
    reader = f"""
import json
import whisperops.flows
from metaflow import Run, namespace
namespace(None)
print(json.dumps(Run("TranscriptionFlow/{run_id.strip()}").data.summary))
"""
    summary = _child_json(reader, sysroot, env)
    hyps = [(out_dir / f"{Path(r['path']).stem}.txt").read_text() for r in rows]
    return {"flow_wall": summary["wall_s"], "process_wall": process_wall, "hyps": hyps, "overhead": []}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit", type=int, default=0, help="Only the first N clips (0: all 41).")
    ap.add_argument("--threads-bare", type=int, default=2)
    setting_argument(ap, DecodeOptions, "beam_size", "--beam-size", type=int)
    ap.add_argument("--shard-size", type=int, default=0, help="flow x2 items per task (0: the flow's default).")
    ap.add_argument(
        "--batched", type=int, default=None, help="Also run flow x2 with this --batch-size (0: the sequential decoder)."
    )
    ap.add_argument("--flow-beam", type=int, default=0, help="Also run flow x2 with this beam (bare keeps its own).")
    args = ap.parse_args()

    import whisperops.flows  # noqa: F401  (Metaflow user defaults for the children)
    from whisperops.evaluation.metrics import wer

    rows = load_manifest()
    rows = rows[: args.limit] if args.limit else rows
    audio_s = sum(r["duration_s"] for r in rows)
    refs = [r["text"] for r in rows]
    configs = {
        "bare faster-whisper (2 threads)": lambda root: run_bare(
            args.model, rows, args.threads_bare, args.beam_size, vad=False
        ),
        "bare faster-whisper + VAD (2 threads)": lambda root: run_bare(
            args.model, rows, args.threads_bare, args.beam_size, vad=True
        ),
        "flow, 1 worker x 2 threads": lambda root: run_flow(args.model, rows, 1, 2, len(rows), None, root),
        "flow, 2 workers x 1 thread": lambda root: run_flow(args.model, rows, 2, 1, args.shard_size, None, root),
        "whisperops transcribe (defaults)": lambda root: run_cli(args.model, rows, root),
    }
    if args.batched is not None:
        configs[f"flow, 2 workers x 1 thread, batch {args.batched}"] = lambda root: run_flow(
            args.model, rows, 2, 1, args.shard_size, args.batched, root
        )
    if args.flow_beam:
        configs[f"flow, 2 workers x 1 thread, beam {args.flow_beam}"] = lambda root: run_flow(
            args.model, rows, 2, 1, args.shard_size, None, root, beam=args.flow_beam
        )
    names = list(configs)
    results: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="flow-bench-") as tmp:
        for r in range(args.rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                res = configs[name](Path(tmp))
                res["wer"] = wer(refs, res["hyps"])
                results[name].append(res)
                print(
                    f"round {r + 1} {name}: flow wall {res['flow_wall']:.1f}s process {res['process_wall']:.1f}s "
                    f"WER {100 * res['wer']:.2f}%",
                    file=sys.stderr,
                    flush=True,
                )

    print(
        f"\n{len(rows)} clips, {audio_s:.0f} s audio, model {args.model}, beam {args.beam_size}; "
        f"{os.cpu_count()} cores ({machine()}); medians of {args.rounds} rounds"
    )
    base = statistics.median(x["flow_wall"] for x in results[names[0]])
    header = f"{'':42} {'wall s':>8} {'audio s/s':>10} {'vs bare':>8} {'process s':>10} {'vs bare':>8} {'WER %':>7}"
    print(header)
    print("-" * len(header))
    for name in names:
        wall = statistics.median(x["flow_wall"] for x in results[name])
        proc = statistics.median(x["process_wall"] for x in results[name])
        w = statistics.median(x["wer"] for x in results[name])
        print(
            f"{name:42} {wall:8.1f} {audio_s / wall:10.1f} {base / wall:7.2f}x {proc:10.1f} {base / proc:7.2f}x "
            f"{100 * w:7.2f}"
        )
    over = [o for name in names[1:] for x in results[name] for o in x["overhead"]]
    if over:
        print(
            f"\nMetaflow per-task overhead (transcribe task wall minus step body), median of {len(over)} tasks: "
            f"{statistics.median(over):.2f} s (min {min(over):.2f}, max {max(over):.2f})"
        )
    same = {round(statistics.median(x["wer"] for x in results[n]), 4) for n in names}
    print("WER equal across rows: " + ("yes" if len(same) == 1 else f"no ({sorted(same)})"))


if __name__ == "__main__":
    main()
