"""Does the default VAD cost accuracy? Default settings against bare faster-whisper, set by set.

Same loaded model (int8, beam 5, 2 threads) for every configuration, so only the decoding settings
differ: bare faster-whisper with no VAD (the reference point), faster-whisper with its stock VAD,
and whisperops with its defaults (plus any ``--ours`` variants, as DecodeOptions JSON). Sets: the
shared English set (41 clips), the hard clips (whispered, falsetto), and a long-form recording of
``--long-minutes`` looped offline from the shared long clips. WER after Whisper's English
normaliser, corpus-level per set; deletions shown too, since dropped speech is what VAD costs.

    flock /tmp/bench.lock .venv/bin/python benchmarks/vad_accuracy.py --long-minutes 10
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_SPEECH, load_manifest, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--long-minutes", type=float, default=10)
    parser.add_argument("--ours", action="append", default=[], help='extra variant, e.g. {"vad_min_silence_ms": 6000}')
    args = parser.parse_args()

    from whisperops.data.longform import looped
    from whisperops.engine import DecodeOptions, Engine
    from whisperops.evaluation.metrics import score

    engine = Engine(args.model, device="cpu", compute_type="int8", cpu_threads=args.threads)
    shared = [(r["path"], r["text"]) for r in load_manifest()]
    hard = [(r["path"], r["text"]) for r in load_manifest(SHARED_SPEECH / "hard" / "manifest.jsonl")]
    long_clips = [(r["path"], r["text"]) for r in load_manifest() if r.get("long_form")]

    def bare(vad: bool):
        def run(path: Path) -> str:
            segments, _ = engine.model.transcribe(str(path), beam_size=5, vad_filter=vad)
            return " ".join(s.text.strip() for s in segments)

        return run

    def ours(overrides: dict):
        options = DecodeOptions(**overrides)
        return lambda path: engine.transcribe(path, options).text

    configs = {
        "faster-whisper, no VAD": bare(False),
        "faster-whisper, stock VAD": bare(True),
        "whisperops defaults": ours({}),
    }
    for extra in args.ours:
        configs[f"whisperops {extra}"] = ours(json.loads(extra))

    with tempfile.TemporaryDirectory() as tmp:
        sets = {"shared English (41)": shared, "hard (2)": hard}
        if args.long_minutes > 0:
            path, reference = looped(Path(tmp) / "long.flac", long_clips, args.long_minutes)
            sets[f"long-form ({args.long_minutes:g} min)"] = [(path, reference)]
        table: dict[str, dict[str, tuple[float, int, float]]] = {}
        for name, run in configs.items():
            table[name] = {}
            for set_name, rows in sets.items():
                t0 = time.perf_counter()
                hyps = [run(p) for p, _ in rows]
                s = score([t for _, t in rows], hyps)
                table[name][set_name] = (s.wer, s.deletions, time.perf_counter() - t0)
                print(f"{name:28s} {set_name:22s} WER {100 * s.wer:6.2f}%  del {s.deletions}", file=sys.stderr)

    print(f"\nmodel {args.model}, int8, beam 5, {args.threads} threads; {machine()}\n")
    print("| settings | " + " | ".join(f"{s} WER (deletions)" for s in sets) + " | wall s |")
    print("|---|" + "---|" * (len(sets) + 1))
    for name, cells in table.items():
        row = " | ".join(f"{100 * w:.2f}% ({d})" for w, d, _ in cells.values())
        print(f"| {name} | {row} | {sum(t for *_, t in cells.values()):.0f} |")


if __name__ == "__main__":
    main()
