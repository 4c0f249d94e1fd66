"""TranscriptionFlow as users run it: real Metaflow runs (local runtime, temp datastore), real tiny.en.

One mixed run (good clips, a corrupt file, a missing path, an unreachable URL) is shared by most
tests; the cache, resume and scale-out tests make their own runs. The datastore lives in the temp
dir conftest points METAFLOW_DATASTORE_SYSROOT_LOCAL at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import srt

from conftest import require_executable

SHORT = ["ljspeech/LJ001-0008.wav", "ljspeech/LJ001-0002.wav", "ljspeech/LJ001-0013.wav"]
UNREACHABLE = "http://127.0.0.1:9/unreachable.wav"  # the discard port: connection refused, never leaves the host


def flow(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m whisperops.flows.transcription ARGS`` from the datastore root (see flows.runtime_cwd)."""
    from whisperops.flows import runtime_cwd

    return subprocess.run(
        [sys.executable, "-m", "whisperops.flows.transcription", *args],
        cwd=runtime_cwd(),
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "whisperops", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def run_id_of(path: Path) -> str:
    return path.read_text().strip()


@pytest.fixture(scope="module")
def mixed_run(shared_speech, tmp_path_factory):
    """One real run: 2 good clips, a corrupt file, a missing path, an unreachable URL; 2 shards, 2 workers."""
    tmp = tmp_path_factory.mktemp("flow")
    corrupt = tmp / "corrupt.wav"
    corrupt.write_bytes(os.urandom(5000))
    sources = [str(shared_speech / SHORT[0]), str(shared_speech / SHORT[1]), str(corrupt), str(tmp / "missing.mp3")]
    sources.append(UNREACHABLE)
    out = tmp / "out"
    proc = flow(
        "run",
        "--sources",
        json.dumps(sources),
        "--output-dir",
        str(out),
        "--formats",
        "txt,srt,json",
        "--shard-size",
        "2",
        "--max-workers",
        "2",
        "--min-count",
        "1",
        "--max-line-width",
        "20",
        "--run-id-file",
        str(tmp / "run_id"),
        # Its own transcript cache: other test modules may already have decoded these clips.
        env={"WHISPEROPS_CACHE": str(tmp / "cache")},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_id_of(tmp / "run_id"), out, proc


@pytest.mark.slow
def test_mixed_run_results_are_versioned_and_failures_listed(mixed_run):
    from metaflow import Flow, namespace

    run_id, out, proc = mixed_run
    namespace(None)
    run = Flow("TranscriptionFlow")[run_id]
    assert run.successful
    assert Flow("TranscriptionFlow").latest_successful_run.id == run_id
    df = run.data.results
    assert list(df["name"]) == ["LJ001-0008", "LJ001-0002", "corrupt", "missing", "unreachable"]
    by = df.set_index("name")
    assert set(df.columns) >= {"source", "title", "duration", "language", "text", "segments", "words", "speed"}
    assert by.loc["LJ001-0008", "status"] == "ok" and "surpassed" in by.loc["LJ001-0008", "text"].lower()
    assert by.loc["LJ001-0002", "language"] == "en" and by.loc["LJ001-0002", "duration"] == pytest.approx(1.9, 0.05)
    assert "cannot decode" in by.loc["corrupt", "error"]
    assert "no such file" in by.loc["missing", "error"]
    assert "refused" in by.loc["unreachable", "error"].lower()
    assert (by["status"] == "failed").sum() == 3
    # the transcripts artifact is plain JSON, and the good items were written to the output dir
    transcripts = run.data.transcripts
    assert json.loads(json.dumps(transcripts))["LJ001-0002"]["segments"]
    assert "modern" in (out / "LJ001-0002.txt").read_text()
    assert (out / "LJ001-0008.srt").read_text().startswith("1\n00:00:0")
    # the subtitle layout reached postprocess through the flow's parameters
    cues = list(srt.parse((out / "LJ001-0008.srt").read_text()))
    lines = [line for c in cues for line in c.content.splitlines()]
    assert len(lines) > len(cues) and all(len(line) <= 20 for line in lines)
    assert not (out / "corrupt.txt").exists()
    # two shards ran as two transcribe tasks; each loaded the model once
    tasks = list(run["transcribe"])
    assert len(tasks) == 2 and all(t.data.load_s > 0 for t in tasks)
    assert "2 transcribed, 0 cached, 3 failed" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_runs_cli_lists_and_shows_the_run(mixed_run):
    run_id, _, _ = mixed_run
    listing = cli("runs")
    assert listing.returncode == 0 and run_id in listing.stdout and "successful" in listing.stdout
    shown = cli("runs", "show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert "LJ001-0002" in shown.stdout and "card: " in shown.stdout and "failed:" in shown.stderr
    srt = cli("runs", "show", run_id, "--format", "srt", "--item", "LJ001-0002")
    # The first cue starts where the speech does (VAD clips), not always at 0.
    assert srt.returncode == 0 and re.match(r"1\n00:00:0\d,\d{3} --> ", srt.stdout) and "modern" in srt.stdout
    missing = cli("runs", "show", "424242")
    assert missing.returncode == 2 and "424242" in missing.stderr and len(missing.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_card_renders_and_shows_the_run(mixed_run, tmp_path):
    from whisperops.flows.runs import card_path, get_run

    run_id, _, _ = mixed_run
    path = card_path(get_run(run_id))
    assert path is not None and path.suffix == ".html"
    html = path.read_text()
    assert len(html) > 10_000 and "metaflow" in html.lower()
    # card view through Metaflow's own CLI finds the same card
    viewed = flow("card", "get", f"{run_id}/postprocess", str(tmp_path / "card.html"))
    assert viewed.returncode == 0, viewed.stderr[-2000:]
    assert (tmp_path / "card.html").read_text() == html

    chromium = require_executable("chromium")
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
    ]
    # The card is a JS app over embedded data: check what the browser renders, not the HTML source.
    dom = subprocess.run([chromium, *flags, "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    for needle in ("Failures", "unreachable", "refused", "Word map", "Transcripts by content", "LJ001-0002"):
        assert needle in dom.stdout, needle
    # Every chart is drawn by Vega in the page: the word map, the content map, languages and speed.
    assert dom.stdout.count('class="marks"') >= 4, "charts not drawn"
    assert ">modern</text>" in dom.stdout, "the word map draws the transcripts' words as text"
    assert ">LJ001-0002</text>" in dom.stdout, "the content map labels each item"
    shot = tmp_path / "card.png"
    subprocess.run(
        [chromium, *flags, "--window-size=1200,2400", f"--screenshot={shot}", path.as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert shot.exists(), "chromium wrote no screenshot"
    from PIL import Image

    img = Image.open(shot).convert("L")
    lo, hi = img.getextrema()
    assert hi - lo > 100, "blank screenshot"
    # the rendered card has content well down the page (table, word map, figures), not just a header
    lower = img.crop((0, 1200, img.width, 2400))
    assert len(lower.getcolors(maxcolors=1 << 20) or []) > 20


@pytest.mark.slow
def test_second_run_transcribes_nothing_new(shared_speech, tmp_path):
    """Through `whisperops transcribe` (Runner API): the 2nd run over the same audio is served by the cache."""
    clip = tmp_path / "renamed.wav"  # same bytes under another name still hit the content-addressed cache
    shutil.copy(shared_speech / SHORT[2], clip)
    # The in-process path and the flow share one transcript cache: fill it the quick way.
    first = cli(
        "transcribe", str(shared_speech / SHORT[2]), "-o", str(tmp_path / "a"), "--formats", "txt", "--in-process"
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert "run id:" not in first.stdout, "--in-process does not start Metaflow"
    second = cli("transcribe", str(clip), "-o", str(tmp_path / "b"), "--formats", "txt", "--flow")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "run id: TranscriptionFlow/" in second.stdout and "card: /" in second.stdout
    assert "cached" in second.stdout
    assert (tmp_path / "a" / "LJ001-0013.txt").read_text() == (tmp_path / "b" / "renamed.txt").read_text()
    from whisperops.flows.runs import get_run

    run = get_run(second.stdout.split("run id: ")[1].split()[0])
    (task,) = list(run["transcribe"])
    assert task.data.item_results == [] and task.data.load_s == 0, "no model was loaded for a cached run"


def test_usage_errors_exit_2_before_any_run(jfk, tmp_path):
    proc = cli("transcribe", str(jfk), "--formats", "txt,docx", "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "docx" in proc.stderr and "Metaflow run" not in proc.stderr
    proc = cli("transcribe", str(jfk), "--model", "huge-v9", "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "huge-v9" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_resume_reruns_only_the_crashed_shard(shared_speech, tmp_path):
    sources = json.dumps([str(shared_speech / p) for p in SHORT[:2]])
    # One worker: shard 0 finishes before shard 1 crashes (Metaflow kills tasks still running when one fails).
    common = ["--sources", sources, "--shard-size", "1", "--use-cache", "false", "--max-workers", "1"]
    crashed = flow("run", *common, "--run-id-file", str(tmp_path / "first"), env={"WHISPEROPS_TEST_CRASH_SHARD": "1"})
    assert crashed.returncode != 0
    assert "injected crash" in crashed.stdout + crashed.stderr
    first = run_id_of(tmp_path / "first")
    began = time.time()
    resumed = flow("resume", "--origin-run-id", first, "--run-id-file", str(tmp_path / "second"))
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    from whisperops.flows.runs import get_run

    run = get_run(run_id_of(tmp_path / "second"))
    assert run.successful and list(run.data.results["status"]) == ["ok", "ok"]
    # wall time (and speed) count from the resume, not from the crashed run's start
    assert 0 < run.data.summary["wall_s"] <= time.time() - began
    assert run.data.started_at < began
    tasks = {t.data.shard_index: t for t in run["transcribe"]}
    # shard 0 finished in the crashed run: cloned, not recomputed; shard 1 ran anew
    assert tasks[0].origin_pathspec is not None and tasks[0].origin_pathspec.startswith(f"TranscriptionFlow/{first}/")
    assert tasks[1].origin_pathspec is None


S3_ROOT_MISSING = "METAFLOW_DATASTORE_SYSROOT_S3"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--with", "kubernetes", "run", "--sources", "x.wav"], "@kubernetes decorator requires --datastore=s3"),
        (["--with", "batch", "run", "--sources", "x.wav"], "@batch decorator requires --datastore=s3"),
        (["--datastore", "s3", "--with", "kubernetes", "run", "--sources", "x.wav"], S3_ROOT_MISSING),
        (["--datastore", "s3", "argo-workflows", "create"], S3_ROOT_MISSING),
        (["--datastore", "s3", "step-functions", "create"], S3_ROOT_MISSING),
        (
            [
                "--config-value",
                "schedule_config",
                '{"cron": "0 6 * * *"}',
                "--datastore",
                "s3",
                "argo-workflows",
                "create",
            ],
            S3_ROOT_MISSING,
        ),
    ],
    ids=["kubernetes", "batch", "kubernetes-s3", "argo", "step-functions", "scheduled-argo"],
)
def test_scale_out_reaches_metaflows_own_configuration_check(args, needle, tmp_path):
    """Remote execution is Metaflow's: without a cloud config it stops at Metaflow's check, not in our code."""
    home = tmp_path / "mfhome"
    home.mkdir()
    # An empty Metaflow config; no AWS instance-metadata lookups from a test.
    env = {"METAFLOW_HOME": str(home), "METAFLOW_PROFILE": "", "AWS_EC2_METADATA_DISABLED": "true"}
    proc = flow(*args, env=env, timeout=120)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-2000:]
    assert needle in text, text[-2000:]
    assert "Traceback" not in text, text[-3000:]


@pytest.mark.slow
def test_url_already_fetched_is_answered_in_start_without_a_request(shared_speech, media_server, tmp_path, monkeypatch):
    """A daily run over the same links: what was downloaded and transcribed before costs no request."""
    # Its own cache: the session's is content-addressed, and other tests transcribe these clips too.
    monkeypatch.setenv("WHISPEROPS_CACHE", str(tmp_path / "cache"))
    base, www, requests = media_server
    shutil.copy(shared_speech / SHORT[0], www / "episode1.wav")
    shutil.copy(shared_speech / SHORT[1], www / "episode2.wav")
    first = cli("transcribe", f"{base}/episode1.wav", "-o", str(tmp_path / "a"), "--formats", "txt", "--in-process")
    assert first.returncode == 0, first.stdout + first.stderr
    seen = len(requests)
    assert seen >= 1
    # Next "day": the old episode plus a new one, through the flow.
    proc = flow(
        "run",
        "--sources",
        json.dumps([f"{base}/episode1.wav", f"{base}/episode2.wav"]),
        "--run-id-file",
        str(tmp_path / "run_id"),
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from whisperops.flows.runs import get_run

    run = get_run(run_id_of(tmp_path / "run_id"))
    status = dict(zip(run.data.results["name"], run.data.results["status"], strict=True))
    assert status == {"episode1": "cached", "episode2": "ok"}
    new = requests[seen:]
    assert new and all("episode2" in r for r in new), f"only the new episode is fetched: {new}"


def test_shards_balance_decoding_work_not_counts(shared_speech, shared_manifest, tmp_path):
    from whisperops.pipeline import plan_shards
    from whisperops.sources import MediaItem

    # The shared set in manifest order: contiguous halves hold 143 s and 337 s of audio.
    items = [MediaItem(str(r["path"]), Path(r["audio"]).stem, path=Path(r["path"])) for r in shared_manifest]
    total = sum(r["duration_s"] for r in shared_manifest)
    shards = plan_shards(items, 21)
    assert len(shards) == 2
    loads = [sum(r["duration_s"] for r in shared_manifest if Path(r["path"]) in {i.path for i in s}) for s in shards]
    assert max(loads) < 0.6 * total, loads  # from the container headers alone
    # packed short clips cost more per second than long files: the shard with more audio has fewer items
    assert (loads[0] > loads[1]) == (len(shards[0]) < len(shards[1])), (loads, [len(s) for s in shards])
    # A 120 s talk and twelve 10 s clips: packed, the clips share windows and the talk outweighs ten of
    # them; decoded alone (--no-pack, --batch-size 1), each clip pays a whole 30 s window.
    talk = [MediaItem("talk", "talk", metadata={"duration": 120})]
    clips = [MediaItem(f"c{i}", f"c{i}", metadata={"duration": 10}) for i in range(12)]
    assert [len(s) for s in plan_shards(talk + clips, 7)] == [2, 11]
    assert [len(s) for s in plan_shards(talk + clips, 7, packed=False)] == [6, 7]
    # every item once, input order kept within a shard; unknown lengths count as the median
    assert sorted(i.name for s in shards for i in s) == sorted(i.name for i in items)
    assert all([items.index(i) for i in s] == sorted(items.index(i) for i in s) for s in shards)
    odd = [MediaItem("u", "u", url="http://x/u")]  # unknown: the median of the known, 10 s
    odd += [MediaItem(n, n, metadata={"duration": d}) for n, d in (("a", 10), ("b", 10), ("long", 3600))]
    assert [[i.name for i in s] for s in plan_shards(odd, 2)] == [["long"], ["u", "a", "b"]]
    assert plan_shards([], 4) == []
