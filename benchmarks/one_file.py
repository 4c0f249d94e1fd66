"""`whisperops transcribe one.wav`: the default path against --in-process and --flow, whole process.

Each row is one `whisperops transcribe` process on the 11 s JFK clip (tiny.en defaults, cache off),
the order rotating each round; medians of --rounds.

    flock /tmp/bench.lock python benchmarks/one_file.py --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_SPEECH, machine


def run(flags: list[str], out: Path, env: dict[str, str]) -> float:
    args = [sys.executable, "-m", "whisperops", "transcribe", str(SHARED_SPEECH / "jfk.flac"), "-o", str(out)]
    start = time.perf_counter()
    proc = subprocess.run([*args, "--no-cache", *flags], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{flags} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rows = {"default": [], "--in-process": ["--in-process"], "--flow": ["--flow"]}
    names = list(rows)
    walls: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="one-file-") as tmp:
        env = {**os.environ, "METAFLOW_DATASTORE_SYSROOT_LOCAL": tmp, "COLUMNS": "200"}
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                walls[name].append(run(rows[name], Path(tmp) / "out", env))
                print(f"round {r + 1} {name}: {walls[name][-1]:.2f}s", file=sys.stderr, flush=True)
    print(f"\njfk.flac (11 s), tiny.en defaults; {os.cpu_count()} cores ({machine()}); medians of {args.rounds}")
    base = statistics.median(walls["--in-process"])
    for name in names:
        wall = statistics.median(walls[name])
        print(f"{name:14} {wall:6.2f} s  ({wall - base:+.2f} s vs --in-process)")


if __name__ == "__main__":
    main()
