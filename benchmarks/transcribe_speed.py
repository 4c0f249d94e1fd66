"""whisperops' engine vs bare faster-whisper: same audio, same settings, one process.

Prints audio-seconds per wall-second for each, their ratio (the overhead whisperops adds), WER
for each (Whisper's English normaliser), and peak RSS. Rounds alternate which engine goes first;
the table shows medians.

Then long-form: a recording of ``--long-minutes`` (default 60) built offline by looping the shared
long-form clips into a FLAC file in a temp folder, transcribed once by each engine in its own fresh
process (so each peak RSS is that engine's alone): speed, peak RSS and WER, side by side.

    python benchmarks/transcribe_speed.py --model tiny.en --rounds 3
    python benchmarks/transcribe_speed.py --rounds 0 --long-minutes 120   # the 2-hour memory check
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PeakRSS, load_manifest, machine, setting_argument

from whisperops.engine import DecodeOptions

# Each long-form run is a fresh process: ru_maxrss is then the peak of that engine alone.
LONG_FORM_CHILD = """
import json, sys, time
model_dir, path, engine, threads, compute_type, beam = sys.argv[1:7]
start = time.perf_counter()
if engine == "whisperops":
    from whisperops.engine import DecodeOptions, Engine
    e = Engine(model_dir, device="cpu", compute_type=compute_type, cpu_threads=int(threads))
    text = e.transcribe(path, DecodeOptions(beam_size=int(beam))).text
else:
    from faster_whisper import WhisperModel
    m = WhisperModel(model_dir, device="cpu", compute_type=compute_type, cpu_threads=int(threads))
    segments, _ = m.transcribe(path, beam_size=int(beam), vad_filter=False)
    text = " ".join(s.text.strip() for s in segments)
wall = time.perf_counter() - start
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec, so a child reports its parent's peak too.
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
print(json.dumps({"wall": wall, "peak_mb": peak, "text": text}))
"""


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
    parser.add_argument("--long-minutes", type=float, default=60, help="long-form recording length (0: skip)")
    parser.add_argument("--long-engines", default="whisperops,faster-whisper", help="comma list, in run order")
    args = parser.parse_args()

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
    if args.rounds > 0:
        short_set(rows, runners, refs, audio_s, args)
    if args.long_minutes > 0:
        long_form(model_dir, args)


def short_set(rows: list[dict], runners: dict, refs: list[str], audio_s: float, args: argparse.Namespace) -> None:
    from whisperops.evaluation.metrics import wer

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


def long_form(model_dir: str, args: argparse.Namespace) -> None:
    from whisperops.data.longform import looped
    from whisperops.evaluation.metrics import wer

    clips = [(r["path"], r["text"]) for r in load_manifest() if r.get("long_form")]
    with tempfile.TemporaryDirectory() as tmp:
        path, reference = looped(Path(tmp) / "long.flac", clips, args.long_minutes)
        audio_s = args.long_minutes * 60
        size_mb = path.stat().st_size / 2**20
        print(
            f"\nlong-form: {audio_s / 60:.0f} min looped from {len(clips)} shared clips "
            f"({size_mb:.0f} MB FLAC); model {args.model}, {args.compute_type}, beam {args.beam_size}, "
            f"{args.threads} threads; each engine in a fresh process, one run"
        )
        print(f"{'engine':16s} {'speed':>8s} {'wall':>8s} {'peak RSS':>9s} {'WER':>7s}")
        engines = args.long_engines.split(",")
        for name in engines:
            child = [sys.executable, "-c", LONG_FORM_CHILD, model_dir, str(path), name]
            child += [str(args.threads), args.compute_type, str(args.beam_size)]
            out = subprocess.run(child, capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{name:16s} {audio_s / r['wall']:7.2f}x {r['wall']:7.0f}s {r['peak_mb']:7.0f} MB "
                f"{100 * wer(reference, r['text']):6.2f}%",
                flush=True,
            )


if __name__ == "__main__":
    main()
