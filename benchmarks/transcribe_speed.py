"""whisperops' engine vs bare faster-whisper: same audio, same settings, one process.

Prints audio-seconds per wall-second for each, their ratio (the overhead whisperops adds), WER
for each (Whisper's English normaliser), and peak RSS. Rounds alternate which engine goes first;
the table shows medians. Also reports peak memory on the longest clip (long-form audio).

    python benchmarks/transcribe_speed.py --model tiny.en --rounds 3
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakRSS, load_manifest, machine, setting_argument

from whisperops.engine import DecodeOptions


def run_bare(model_dir: str, rows: list[dict], args: argparse.Namespace) -> dict:
    from faster_whisper import WhisperModel

    model = WhisperModel(model_dir, device="cpu", compute_type=args.compute_type, cpu_threads=args.threads)
    hyps, start = [], time.perf_counter()
    with PeakRSS() as rss:
        for row in rows:
            segments, _ = model.transcribe(str(row["path"]), beam_size=args.beam_size, vad_filter=args.vad)
            hyps.append(" ".join(s.text.strip() for s in segments))
    return {"wall": time.perf_counter() - start, "hyps": hyps, "peak_mb": rss.peak_mb}


def run_ours(model: str, rows: list[dict], args: argparse.Namespace) -> dict:
    from whisperops.engine import DecodeOptions, Engine

    engine = Engine(model, device="cpu", compute_type=args.compute_type, cpu_threads=args.threads)
    options = DecodeOptions(beam_size=args.beam_size, vad_filter=args.vad)
    hyps, start = [], time.perf_counter()
    with PeakRSS() as rss:
        for row in rows:
            hyps.append(engine.transcribe(row["path"], options).text)
    return {"wall": time.perf_counter() - start, "hyps": hyps, "peak_mb": rss.peak_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    setting_argument(parser, DecodeOptions, "beam_size", "--beam-size", type=int)
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--vad", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--limit", type=int, default=0, help="first N clips only (0: all)")
    args = parser.parse_args()

    from whisperops.evaluation.metrics import wer
    from whisperops.models.registry import resolve

    rows = load_manifest()
    if args.limit:
        rows = rows[: args.limit]
    audio_s = sum(r["duration_s"] for r in rows)
    model_dir = str(resolve(args.model))
    refs = [r["text"] for r in rows]
    runners = {
        "faster-whisper": lambda: run_bare(model_dir, rows, args),
        "whisperops": lambda: run_ours(args.model, rows, args),
    }
    results: dict[str, list[dict]] = {name: [] for name in runners}
    names = list(runners)
    for k in range(args.rounds):
        for name in names if k % 2 == 0 else names[::-1]:
            results[name].append(runners[name]())
            gc.collect()
            r = results[name][-1]
            print(f"round {k + 1} {name:15s} {audio_s / r['wall']:6.2f}x real time", file=sys.stderr)

    print(
        f"\n{len(rows)} clips, {audio_s:.1f} s of audio; model {args.model}, {args.compute_type}, "
        f"beam {args.beam_size}, vad {'on' if args.vad else 'off'}, {args.threads} threads; {machine()}"
    )
    print(f"{'engine':16s} {'speed (median)':>15s} {'runs':>24s} {'WER':>7s} {'peak RSS':>9s}")
    speeds = {}
    for name, runs in results.items():
        per_run = [audio_s / r["wall"] for r in runs]
        speeds[name] = statistics.median(per_run)
        w = wer(refs, runs[0]["hyps"])
        peak = max(r["peak_mb"] for r in runs)
        print(
            f"{name:16s} {speeds[name]:14.2f}x {' '.join(f'{s:.2f}' for s in per_run):>24s} "
            f"{100 * w:6.2f}% {peak:7.0f} MB"
        )
    ratio = speeds["whisperops"] / speeds["faster-whisper"]
    print(f"whisperops / faster-whisper speed ratio: {ratio:.3f} (overhead {100 * (1 - ratio):+.1f}%)")

    longest = max(rows, key=lambda r: r["duration_s"])
    from whisperops.engine import Engine

    engine = Engine(args.model, device="cpu", compute_type=args.compute_type, cpu_threads=args.threads)
    with PeakRSS() as rss:
        engine.transcribe(longest["path"])
    print(
        f"long-form: {longest['audio']} ({longest['duration_s']:.0f} s): RSS {rss.start_mb:.0f} -> "
        f"peak {rss.peak_mb:.0f} MB (+{rss.peak_mb - rss.start_mb:.0f} MB)"
    )


if __name__ == "__main__":
    main()
