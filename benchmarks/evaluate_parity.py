"""`whisperops evaluate` against bare faster-whisper on the shared English set, side by side.

Same settings on both sides (int8, beam 5, no VAD, language from the manifest, 2 threads), each run
in a fresh process (peak memory = that process's VmHWM), runs interleaved ours/bare and repeated;
WER is after Whisper's English normaliser (identical code on both sides). Prints a table and writes
``docs/benchmarks/results/evaluate.md``, which the docs' benchmarks page includes.

    flock /tmp/bench.lock .venv/bin/python benchmarks/evaluate_parity.py --models tiny.en base --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BEAM_SIZE, ROOT, SHARED_SPEECH, machine


def bare_faster_whisper(model: str, rows: list, threads: int) -> dict:
    """The peer, in its own process: faster-whisper's WhisperModel used directly."""
    from faster_whisper import WhisperModel

    from whisperops.evaluation.compare import memory_mb
    from whisperops.models import registry

    path = str(registry.resolve(model))
    t0 = time.perf_counter()
    fw = WhisperModel(path, device="cpu", compute_type="int8", cpu_threads=threads)
    load = time.perf_counter() - t0
    hyps, t0 = [], time.perf_counter()
    for row in rows:
        segments, _ = fw.transcribe(str(row.audio), beam_size=BEAM_SIZE, language=row.language)
        hyps.append(" ".join(s.text.strip() for s in segments))
    wall = time.perf_counter() - t0
    return {"hyps": hyps, "wall_s": wall, "load_s": load, "peak_mb": memory_mb()[1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--manifest", type=Path, default=SHARED_SPEECH / "manifest.jsonl")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "results" / "evaluate.md")
    args = parser.parse_args()

    from whisperops.data.manifest import load_dataset
    from whisperops.evaluation.compare import EvalSettings, compare
    from whisperops.evaluation.metrics import score

    rows = list(load_dataset(args.manifest))
    audio_s = sum(r.duration or 0 for r in rows)
    refs = [r.text for r in rows]
    settings = EvalSettings(cpu_threads=args.threads)
    table = []
    for model in args.models:
        ours_runs, bare_runs = [], []
        for i in range(args.repeats):
            result = compare([model], rows, settings).models[0]
            ours_runs.append(result)
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                bare_runs.append(pool.submit(bare_faster_whisper, model, rows, args.threads).result())
            print(
                f"{model} run {i + 1}: ours WER {result.wer * 100:.2f}% {result.speed_x:.1f}x | "
                f"bare WER {score(refs, bare_runs[-1]['hyps']).wer * 100:.2f}% "
                f"{audio_s / bare_runs[-1]['wall_s']:.1f}x",
                flush=True,
            )
        bare_score = score(refs, bare_runs[-1]["hyps"])
        ours = ours_runs[-1]
        table.append(
            {
                "model": model,
                "ours_wer": ours.wer,
                "bare_wer": bare_score.wer,
                "ours_cer": ours.cer,
                "bare_cer": bare_score.cer,
                "ours_speed": statistics.median(r.speed_x for r in ours_runs),
                "bare_speed": statistics.median(audio_s / b["wall_s"] for b in bare_runs),
                "ours_peak": statistics.median(r.peak_mb for r in ours_runs),
                "bare_peak": statistics.median(b["peak_mb"] for b in bare_runs),
                "sdi": f"{ours.substitutions}/{ours.deletions}/{ours.insertions}",
                "same_text": all(
                    [u.hypothesis for u in r.score.utterances] == b["hyps"]
                    for r, b in zip(ours_runs, bare_runs, strict=True)
                ),
            }
        )
    base_wer = table[0]["ours_wer"]
    lines = [
        f"# whisperops evaluate vs bare faster-whisper ({len(rows)} clips, {audio_s:.0f} s of English speech)",
        "",
        f"Machine: {machine()}. int8, beam 5, no VAD, {args.threads} threads; medians of {args.repeats} runs, "
        "each model in a fresh process; speed = audio s / wall s (model load excluded).",
        "",
        "| model | WER ours | WER bare | diff (points) | CER ours | S/D/I | WER vs first | speed ours | speed bare "
        "| ours/bare | peak MB ours | peak MB bare | identical text |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in table:
        rel = "baseline" if t is table[0] else f"{(t['ours_wer'] - base_wer) / base_wer * 100:+.1f}%"
        lines.append(
            f"| {t['model']} | {t['ours_wer'] * 100:.2f}% | {t['bare_wer'] * 100:.2f}% | "
            f"{(t['ours_wer'] - t['bare_wer']) * 100:+.2f} | {t['ours_cer'] * 100:.2f}% | {t['sdi']} | {rel} | "
            f"{t['ours_speed']:.1f}x | {t['bare_speed']:.1f}x | {t['ours_speed'] / t['bare_speed']:.2f} | "
            f"{t['ours_peak']:.0f} | {t['bare_peak']:.0f} | {'yes' if t['same_text'] else 'no'} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
