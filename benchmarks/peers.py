"""whisperops against the other Whisper runtimes on the shared English set, side by side.

Runtimes (each run in a fresh spawned process: peak memory is that process's VmHWM, so a runtime's
libraries count against it): whisperops with its default settings and batched (faster-whisper's fast path), bare
faster-whisper, openai-whisper, whisper.cpp (pywhispercpp) and the transformers ASR pipeline. The
peers read the weights that ``whisperops convert`` made from the same CTranslate2 float16 files
(openai .pt, ggml, Hugging Face), so every runtime decodes the same network. Speed is audio seconds
per wall second of transcription (model load excluded, reported apart); WER is after Whisper's
English normaliser (whisperops.evaluation), identical for all. Writes
``docs/benchmarks/results/peers.md``, which the docs' benchmarks page includes.

    flock /tmp/bench.lock .venv/bin/python benchmarks/peers.py --models tiny.en base --repeats 1

Needs the ``bench`` extra (pywhispercpp) and ``pip install --no-deps openai-whisper``; a runtime that
is not installed is reported as skipped, not an error.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import BEAM_SIZE, ROOT, SHARED_SPEECH, load_manifest, machine

# Runtime -> settings, as shown in the table.
RUNTIMES: dict[str, str] = {
    "whisperops (default)": "int8, beam 5, VAD",
    "whisperops (batched)": "int8, beam 5, VAD, batched x8",
    "faster-whisper (bare)": "int8, beam 5, no VAD",
    "openai-whisper": "fp32 PyTorch, beam 5",
    "whisper.cpp": "f16 ggml, greedy (pywhispercpp default)",
    "transformers pipeline": "fp32 PyTorch, greedy, 30 s chunks",
}


def _peak_mb() -> float:
    from whisperops.evaluation.compare import memory_mb

    return memory_mb()[1]


def _language(model: str, row: dict) -> str | None:
    return None if model.endswith(".en") else row.get("language") or "en"


def _run(load: Callable[[], Callable[[dict], str]], rows: list[dict]) -> dict:
    """Time ``load`` (the model) and then the transcription of every row, in this process."""
    t0 = time.perf_counter()
    transcribe = load()
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    hyps = [transcribe(row) for row in rows]
    return {"hyps": hyps, "wall_s": time.perf_counter() - t0, "load_s": load_s, "peak_mb": _peak_mb()}


def run_runtime(runtime: str, model: str, paths: dict[str, str], rows: list[dict], threads: int) -> dict:
    """One runtime over all rows, in a fresh process (called through a spawn pool)."""
    import torch

    torch.set_num_threads(threads)
    from whisperops.audio import load_audio

    audio = {str(r["path"]): load_audio(r["path"]) for r in rows}  # decoding is not what we compare

    if runtime.startswith("whisperops"):
        from whisperops.engine import DecodeOptions, Engine

        def load():
            engine = Engine(model, cpu_threads=threads)
            batch = 8 if runtime.endswith("(batched)") else 0
            return lambda row: (
                engine.transcribe(
                    audio[str(row["path"])], DecodeOptions(language=_language(model, row), batch_size=batch)
                ).text
            )

    elif runtime.startswith("faster-whisper"):
        from faster_whisper import WhisperModel

        def load():
            fw = WhisperModel(paths["ct2"], device="cpu", compute_type="int8", cpu_threads=threads)

            def transcribe(row: dict) -> str:
                segments, _ = fw.transcribe(
                    audio[str(row["path"])], beam_size=BEAM_SIZE, language=_language(model, row)
                )
                return " ".join(s.text.strip() for s in segments)

            return transcribe

    elif runtime == "openai-whisper":
        import whisper

        def load():
            m = whisper.load_model(paths["openai"], device="cpu")
            return lambda row: m.transcribe(
                audio[str(row["path"])], fp16=False, beam_size=BEAM_SIZE, language=_language(model, row) or "en"
            )["text"]

    elif runtime == "whisper.cpp":
        from pywhispercpp.model import Model

        def load():
            m = Model(paths["ggml"], n_threads=threads, print_progress=False, print_realtime=False)

            def transcribe(row: dict) -> str:
                segments = m.transcribe(audio[str(row["path"])], language=_language(model, row) or "en")
                return " ".join(s.text.strip() for s in segments)

            return transcribe

    elif runtime == "transformers pipeline":
        from transformers import pipeline

        def load():
            asr = pipeline("automatic-speech-recognition", model=paths["hf"], dtype=torch.float32, device="cpu")

            def transcribe(row: dict) -> str:
                kwargs = {} if model.endswith(".en") else {"language": _language(model, row), "task": "transcribe"}
                out = asr(audio[str(row["path"])].copy(), chunk_length_s=30, batch_size=1, generate_kwargs=kwargs)
                return out["text"]

            return transcribe

    else:
        raise ValueError(runtime)
    return _run(load, rows)


def available(runtime: str) -> str | None:
    """None when ``runtime`` can run here, else why not."""
    import importlib.util

    needs = {"openai-whisper": "whisper", "whisper.cpp": "pywhispercpp", "transformers pipeline": "transformers"}
    mod = needs.get(runtime)
    if mod and importlib.util.find_spec(mod) is None:
        return f"{mod} not installed"
    return None


def prepare(model: str, cache: Path) -> dict[str, str]:
    """Converted weights for every runtime, made once with ``whisperops convert``'s functions."""
    from whisperops.models import registry
    from whisperops.models.convert import convert_ct2_to_hf, convert_to_ggml, convert_to_openai

    ct2 = registry.resolve(model)
    base = cache / model
    hf = base / "hf"
    if not (hf / "model.safetensors").exists():
        convert_ct2_to_hf(ct2, hf)
    openai = base / "openai" / "model.pt"
    if not openai.exists():
        convert_to_openai(hf, openai.parent)
    ggml = base / "ggml" / "ggml-model.bin"
    if not ggml.exists():
        convert_to_ggml(hf, ggml.parent)
    return {"ct2": str(ct2), "hf": str(hf), "openai": str(openai), "ggml": str(ggml)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny.en", "base"])
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=list(RUNTIMES), metavar="RUNTIME")
    parser.add_argument("--repeats", type=int, default=1, help="runs per runtime; the table shows medians")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="first N clips only (0: all)")
    parser.add_argument("--manifest", type=Path, default=SHARED_SPEECH / "manifest.jsonl")
    parser.add_argument("--cache", type=Path, default=ROOT / "build" / "peers")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "results" / "peers.md")
    args = parser.parse_args()

    from whisperops.evaluation.metrics import score

    rows = load_manifest(args.manifest)
    if args.limit:
        rows = rows[: args.limit]
    rows = [
        {"path": str(r["path"]), "text": r["text"], "language": r.get("language"), "duration_s": r["duration_s"]}
        for r in rows
    ]
    audio_s = sum(float(r["duration_s"]) for r in rows)
    refs = [r["text"] for r in rows]

    table = []
    for model in args.models:
        paths = prepare(model, args.cache)
        baseline_speed = None
        for runtime in args.runtimes:
            why = available(runtime)
            if why:
                print(f"{model:8} {runtime:24} skipped: {why}", flush=True)
                table.append({"model": model, "runtime": runtime, "skipped": why})
                continue
            runs = []
            for _ in range(args.repeats):
                with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                    runs.append(pool.submit(run_runtime, runtime, model, paths, rows, args.threads).result())
            speed = statistics.median(audio_s / r["wall_s"] for r in runs)
            wer = score(refs, runs[-1]["hyps"], languages=[r["language"] for r in rows]).wer
            entry = {
                "model": model,
                "runtime": runtime,
                "speed_x": speed,
                "wer": wer,
                "peak_mb": statistics.median(r["peak_mb"] for r in runs),
                "load_s": statistics.median(r["load_s"] for r in runs),
            }
            baseline_speed = baseline_speed or (speed if runtime == "whisperops (default)" else None)
            entry["vs_ours"] = speed / baseline_speed if baseline_speed else None
            table.append(entry)
            print(
                f"{model:8} {runtime:24} WER {wer * 100:5.2f}%  {speed:5.1f}x real time  "
                f"peak {entry['peak_mb']:6.0f} MiB  load {entry['load_s']:.1f}s",
                flush=True,
            )

    lines = [
        "# whisperops vs other Whisper runtimes",
        "",
        f"Machine: {machine()}; {args.threads} threads per runtime; nothing else was benchmarked at the same time "
        "(`flock /tmp/bench.lock`), but the machine is shared, so compare within one table.",
        f"Data: shared English set, {len(rows)} clips, {audio_s:.0f} s of audio; WER after Whisper's English "
        f"normaliser; speed = audio s / transcription wall s (median of {args.repeats} run(s)), load excluded; "
        "peak = the runtime process's peak RSS (VmHWM).",
        "Every runtime runs the same weights: the bundled CTranslate2 float16 files, converted with "
        "`whisperops convert` for openai-whisper (.pt), whisper.cpp (ggml f16) and transformers.",
        "",
        "| model | runtime | settings | WER | speed (x real time) | vs whisperops default | peak RSS (MiB) "
        "| load (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for e in table:
        if "skipped" in e:
            lines.append(f"| {e['model']} | {e['runtime']} | {RUNTIMES[e['runtime']]} | skipped: {e['skipped']} |||||")
            continue
        vs = f"{e['vs_ours']:.2f}x" if e["vs_ours"] else "-"
        lines.append(
            f"| {e['model']} | {e['runtime']} | {RUNTIMES[e['runtime']]} | {e['wer'] * 100:.2f}% | "
            f"{e['speed_x']:.1f} | {vs} | {e['peak_mb']:.0f} | {e['load_s']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
