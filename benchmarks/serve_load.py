"""Load test for ``whisperops serve``: N concurrent clients vs the engine's single-stream speed.

Loopback only, bounded in time (``--duration`` per level) and requests (``--max-requests``). In one
run it measures, side by side:

* the engine alone (``Engine.transcribe`` on the same clips, same options, one after another);
* the server (``whisperops serve`` in a subprocess) under each ``--clients`` level: throughput in
  audio-seconds per second, p50/p95 latency, 200s / 429s / other errors, and the server's RSS.

With ``--silence-hours 6`` it measures instead the peak RSS that one upload of 6 h of digital
silence (a few MB of FLAC) adds to an idle server: the bound of streaming uploads (<= 600 MB).

Targets (printed as PASS/FAIL): no errors while clients <= slots + queue, only 429s above; RSS growth
under 10 %; at 4 clients the server delivers >= 90 % of the engine's single-stream throughput.

    flock /tmp/bench.lock .venv/bin/python benchmarks/serve_load.py --duration 60 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import setting_argument

from whisperops.engine import DecodeOptions

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MANIFEST = ROOT.parent / "shared" / "data" / "speech" / "manifest.jsonl"


@dataclass
class Clip:
    path: Path
    duration: float


@dataclass
class LevelResult:
    clients: int
    ok: int = 0
    rejected: int = 0  # 429
    errors: dict[int | str, int] = field(default_factory=dict)  # anything else
    audio_s: float = 0.0
    wall_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0

    @property
    def throughput(self) -> float:
        return self.audio_s / self.wall_s if self.wall_s else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def load_clips(manifest: Path) -> list[Clip]:
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    clips = [Clip(manifest.parent / r["audio"], float(r["duration_s"])) for r in rows if r.get("language") == "en"]
    if not clips:
        sys.exit(f"{manifest}: no English clips")
    return clips


def engine_single_stream(args: argparse.Namespace, clips: list[Clip]) -> tuple[float, int]:
    """Audio-s/s of Engine.transcribe alone, clips in the same order as the clients send them."""
    from whisperops.engine import DecodeOptions, Engine

    engine = Engine(args.model, cpu_threads=args.engine_threads, num_workers=1)
    options = DecodeOptions(beam_size=args.beam_size)
    engine.transcribe(clips[0].path, options)  # warm-up, as the server gets one
    audio = 0.0
    n = 0
    start = time.perf_counter()
    for clip in itertools.cycle(clips):
        engine.transcribe(clip.path, options)
        audio += clip.duration
        n += 1
        if time.perf_counter() - start >= args.duration or n >= args.max_requests:
            break
    return audio / (time.perf_counter() - start), n


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(args: argparse.Namespace, *extra: str):
    port = free_port()
    cmd = [
        sys.executable,
        "-c",
        "from whisperops.cli import main; main()",
        "serve",
        "--model",
        args.model,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--slots",
        str(args.slots),
        "--max-queue",
        str(args.max_queue),
        "--threads",
        str(args.threads),
        "--beam-size",
        str(args.beam_size),
        "--log-level",
        "warning",
        *extra,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                sys.exit(f"server exited: {proc.stderr.read()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                sys.exit("server did not start within 120 s")
            time.sleep(0.2)
        yield base, proc.pid
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def post(http: httpx.Client, base: str, clip: Clip) -> httpx.Response:
    with clip.path.open("rb") as f:
        return http.post(
            f"{base}/v1/audio/transcriptions",
            files={"file": (clip.path.name, f)},
            data={"model": "whisper-1", "response_format": "json"},
        )


def warm_up(base: str, clips: list[Clip], clients: int) -> None:
    """Load the model, then one concurrent burst at the highest level, before RSS is first read.

    The model loads lazily, the longest clip sizes the decoder's buffers, and the first burst of
    concurrent uploads gives glibc a malloc arena per busy thread: a one-time step (it measured +10%
    on the first level, then flat), so growth after this point is what a leak would look like.
    """
    from concurrent.futures import ThreadPoolExecutor

    with httpx.Client(timeout=600) as http:
        for clip in (clips[0], max(clips, key=lambda c: c.duration)):
            assert post(http, base, clip).status_code == 200

    def one(clip: Clip) -> int:
        with httpx.Client(timeout=600) as http:
            return post(http, base, clip).status_code

    with ThreadPoolExecutor(clients) as pool:
        codes = list(pool.map(one, itertools.islice(itertools.cycle(clips), clients)))
    if any(code not in (200, 429) for code in codes):
        sys.exit(f"warm-up burst failed: {codes}")


def run_level(base: str, pid: int, clips: list[Clip], clients: int, args: argparse.Namespace) -> LevelResult:
    result = LevelResult(clients, rss_before_mb=rss_mb(pid))
    order = itertools.cycle(clips)
    lock = threading.Lock()
    sent = 0
    deadline = time.perf_counter() + args.duration

    def client() -> None:
        nonlocal sent
        with httpx.Client(timeout=600) as http:
            clip = None
            while time.perf_counter() < deadline:
                with lock:
                    if sent >= args.max_requests:
                        return
                    sent += 1
                    # After a 429 the client retries the same clip, so every level sends the same mix.
                    clip = clip or next(order)
                t0 = time.perf_counter()
                try:
                    r = post(http, base, clip)
                    status: int | str = r.status_code
                except httpx.HTTPError as err:
                    status, r = type(err).__name__, None
                latency = time.perf_counter() - t0
                with lock:
                    if status == 200:
                        result.ok += 1
                        result.audio_s += clip.duration
                        result.latencies.append(latency)
                    elif status == 429:
                        result.rejected += 1
                    else:
                        result.errors[status] = result.errors.get(status, 0) + 1
                if status != 429:
                    clip = None
                if status == 429 and r is not None:
                    # A polite client waits as told; never past the level's end.
                    wait = float(r.headers.get("retry-after", "1"))
                    time.sleep(max(0.0, min(wait, deadline - time.perf_counter())))

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result.wall_s = time.perf_counter() - start  # in-flight requests finish and count
    result.rss_after_mb = rss_mb(pid)
    return result


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def silence_flac(path: Path, hours: float) -> Path:
    """``hours`` of 16 kHz digital silence as FLAC: a few MB that decode to gigabytes of samples."""
    from whisperops.data.longform import silence, write_flac

    return write_flac(path, (silence(60) for _ in range(round(hours * 60))))


def memory_check(args: argparse.Namespace, clips: list[Clip]) -> bool:
    """Peak RSS that one long upload adds to an idle server (issue 13: <= 600 MB for 6 h of silence)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        flac = silence_flac(Path(tmp) / "silence.flac", args.silence_hours)
        print(
            f"{args.silence_hours:g} h of silence: {flac.stat().st_size / 1e6:.1f} MB FLAC, made in "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        limit_s = str(args.silence_hours * 3600 + 60)
        with server(args, "--max-audio-s", limit_s, "--timeout", "3600") as (base, pid):
            with httpx.Client(timeout=3600) as http:
                assert post(http, base, clips[0]).status_code == 200  # model loaded: "idle" includes it
                idle, idle_peak = rss_mb(pid), peak_rss_mb(pid)
                t0 = time.perf_counter()
                with flac.open("rb") as f:
                    r = http.post(
                        f"{base}/v1/audio/transcriptions",
                        files={"file": ("silence.flac", f)},
                        data={"model": "whisper-1", "response_format": "verbose_json"},
                    )
                took = time.perf_counter() - t0
            peak = peak_rss_mb(pid)
    added = peak - idle
    ok = r.status_code == 200 and added <= 600
    answer = f"duration {r.json()['duration']} s" if r.status_code == 200 else r.text[:200]
    print(
        f"upload answered {r.status_code} in {took:.0f} s ({answer}); RSS idle {idle:.0f} MB "
        f"(peak so far {idle_peak:.0f}), peak during upload {peak:.0f} MB: +{added:.0f} MB"
    )
    verdict = "PASS" if ok else "FAIL"
    print(f"{verdict}  {args.silence_hours:g} h upload adds <= 600 MB peak RSS over idle (+{added:.0f} MB)")
    return ok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny.en")
    p.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    p.add_argument("--clients", default="4,16", help="comma list of concurrency levels")
    p.add_argument("--duration", type=float, default=60.0, help="seconds per level (and for the engine alone)")
    p.add_argument("--max-requests", type=int, default=2000, help="cap per level")
    p.add_argument("--repeats", type=int, default=1, help="repeat engine + levels; medians are reported")
    p.add_argument("--slots", type=int, default=1)
    p.add_argument("--max-queue", type=int, default=8)
    p.add_argument("--threads", type=int, default=0, help="server: CPU threads per decode (0: CTranslate2's default)")
    p.add_argument("--engine-threads", type=int, default=0, help="engine alone: CPU threads (0: default, all cores)")
    setting_argument(p, DecodeOptions, "beam_size", "--beam-size", type=int)
    p.add_argument(
        "--silence-hours", type=float, default=0, help="> 0: instead, the peak RSS one upload of this much silence adds"
    )
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    clips = load_clips(args.manifest)
    if args.silence_hours > 0:
        sys.exit(0 if memory_check(args, clips) else 1)
    levels = [int(c) for c in args.clients.split(",")]
    capacity = args.slots + args.max_queue
    print(
        f"{len(clips)} clips, {sum(c.duration for c in clips):.0f} s audio; model {args.model}, "
        f"beam {args.beam_size}, slots {args.slots}, queue {args.max_queue}, threads {args.threads or 'default'} "
        f"(engine alone: {args.engine_threads or 'default'}); "
        f"{args.duration:g} s per level, {args.repeats} repeat(s); {os.cpu_count()} CPUs",
        flush=True,
    )

    engine_speeds: list[float] = []
    runs: dict[int, list[LevelResult]] = {c: [] for c in levels}
    with server(args) as (base, pid):
        warm_up(base, clips, max(levels))
        rss_start = rss_mb(pid)
        for rep in range(args.repeats):
            # Engine alone while the server idles, interleaved so both see the same machine load.
            speed, n = engine_single_stream(args, clips)
            engine_speeds.append(speed)
            print(f"[{rep + 1}] engine single-stream: {speed:.2f} audio-s/s over {n} clips", flush=True)
            for c in levels:
                r = run_level(base, pid, clips, c, args)
                runs[c].append(r)
                print(
                    f"[{rep + 1}] {c:3d} clients: {r.throughput:.2f} audio-s/s ({r.throughput / speed:.0%} of engine), "
                    f"p50 {r.pct(0.5):.2f} s, p95 {r.pct(0.95):.2f} s, ok {r.ok}, 429 {r.rejected}, "
                    f"errors {r.errors or 0}, RSS {r.rss_before_mb:.0f}->{r.rss_after_mb:.0f} MB",
                    flush=True,
                )
        rss_end = rss_mb(pid)

    engine = statistics.median(engine_speeds)
    print(f"\nmedians over {args.repeats} repeat(s); engine single-stream {engine:.2f} audio-s/s")
    header = (
        f"{'clients':>7} {'audio-s/s':>9} {'vs engine':>9} {'p50 s':>7} {'p95 s':>7} {'ok':>5} {'429':>5} {'other':>5}"
    )
    print(header)
    verdicts = []
    for c in levels:
        rs = runs[c]
        tput = statistics.median(r.throughput for r in rs)
        other = sum(sum(r.errors.values()) for r in rs)
        rejected = sum(r.rejected for r in rs)
        print(
            f"{c:>7} {tput:>9.2f} {tput / engine:>9.0%} {statistics.median(r.pct(0.5) for r in rs):>7.2f} "
            f"{statistics.median(r.pct(0.95) for r in rs):>7.2f} {sum(r.ok for r in rs):>5} {rejected:>5} {other:>5}"
        )
        if c <= capacity:
            verdicts.append((f"{c} clients (<= slots+queue {capacity}): no errors", other == 0 and rejected == 0))
        else:
            verdicts.append((f"{c} clients (> slots+queue {capacity}): only 429s", other == 0))
        if c == 4:
            verdicts.append((f"4 clients: >= 90% of engine single-stream ({tput / engine:.0%})", tput >= 0.9 * engine))
    growth = (rss_end - rss_start) / rss_start
    verdicts.append((f"server RSS {rss_start:.0f} -> {rss_end:.0f} MB ({growth:+.1%}): < 10% growth", growth < 0.10))
    for text, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")


if __name__ == "__main__":
    main()
