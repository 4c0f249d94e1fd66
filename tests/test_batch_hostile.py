"""Bad and awkward inputs through the flow and ``--in-process``: each asserts the exact outcome.

One hostile batch (same-named files, AppleDouble and hidden files, a 246-byte Unicode name, damaged
and truncated audio, a video without sound, a source named like HTML, a 127.0.0.1 server whose 500
reason phrase is HTML, an HTML title) goes once through ``whisperops transcribe`` (the Metaflow
flow, filling the transcript cache) and once ``--in-process --no-cache``: the same transcript for
every good item, one line per failure, exit 1, no temp files. Its card is opened in headless
Chromium. Bad options and output folders must stop in one line, exit 2, before any run or model.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import require_executable, video_without_audio

# A payload that marks the page if it ever runs; the card must show it as text instead.
PWN = "document.body.setAttribute('data-pwned','{}')"
HOSTILE_TITLE = f'<img src=x onerror="{PWN.format("title")}">'
HOSTILE_REASON = f'<img src=x onerror="{PWN.format("http")}">'
HOSTILE_FILE = f"<img src=x onerror={PWN.format('name')}>.wav"
LONG_NAME = "é" * 121  # 242 bytes: with ".wav", a 246-byte file name

CLIPS = {  # relative path in the batch -> (shared clip, words its transcript must hold)
    "a/x.wav": ("ljspeech/LJ001-0002.wav", "comparatively modern"),
    "b/x.wav": ("ljspeech/LJ001-0008.wav", "never been surpassed"),
    "c/x-2.wav": ("ljspeech/LJ001-0013.wav", "ugly ones"),
    "album/talk.wav": ("librivox/sense_and_sensibility_01_austen_64kb-0880.wav", "young man"),
    "album/sub/talk.wav": ("librivox/sense_and_sensibility_01_austen_64kb-0930.wav", "amiable"),
    f"album/{LONG_NAME}.wav": ("ljspeech/LJ001-0002.wav", "comparatively modern"),
}


def cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250", "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "whisperops", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def one_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


class _HostileServer(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(500, HOSTILE_REASON)
        self.end_headers()

    do_HEAD = do_GET


@pytest.fixture(scope="module")
def hostile_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _HostileServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/talk.wav"
    finally:
        server.shutdown()
        server.server_close()


def _encode_mp3(src: Path, dst: Path) -> None:
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = out.add_stream("libmp3lame", rate=22050)
        stream.layout = "mono"
        for frame in inp.decode(audio=0):
            frame.pts = None
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


@pytest.fixture(scope="module")
def batch(shared_speech: Path, tmp_path_factory, hostile_url):
    """The hostile batch on disk: ``(sources, folder)``."""
    root = tmp_path_factory.mktemp("hostile")
    for rel, (clip, _) in CLIPS.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_speech / clip, root / rel)
    album = root / "album"
    (album / "._talk.wav").write_bytes(b"\0\5\26\7" + os.urandom(4000))  # macOS AppleDouble companion
    (album / ".hidden.wav").write_bytes(os.urandom(4000))
    (album / HOSTILE_FILE).write_bytes(b"not audio at all\n" * 200)
    # 2000 random bytes a third of the way into an MP3: the rest must still be transcribed.
    _encode_mp3(shared_speech / "ljspeech/LJ001-0008.wav", album / "damaged.mp3")
    data = bytearray((album / "damaged.mp3").read_bytes())
    third = len(data) // 3
    data[third : third + 2000] = os.urandom(2000)
    (album / "damaged.mp3").write_bytes(bytes(data))
    # A WAV whose header promises twice the samples it holds.
    whole = (shared_speech / "librivox/sense_and_sensibility_01_austen_64kb-0930.wav").read_bytes()
    (album / "cut.wav").write_bytes(whole[: len(whole) // 2])
    video_without_audio(album / "novideo.mp4")
    sources = [str(root / "a/x.wav"), str(root / "b/x.wav"), str(root / "c/x-2.wav"), str(album), hostile_url]
    return sources, root


GOOD = {  # output name -> words its transcript must hold
    "x": "comparatively modern",
    "x-2": "ugly ones",
    "talk": "young man",
    "sub/talk": "amiable",
    LONG_NAME: "comparatively modern",
    "damaged": "passed",  # the end, after the damage (2000 bytes also take part of a word)
    "cut": "he might",
}
FAILED = {  # a needle of the source -> what its one line must say
    "novideo.mp4": "has no audio stream",
    "onerror=document": "not an audio or video file",
    "/talk.wav": "500",
}


def _check_outcome(proc: subprocess.CompletedProcess, out: Path) -> dict[str, str]:
    """The exact outcome both paths must give; returns each good item's txt."""
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout + proc.stderr
    assert "pylint" not in text.lower()
    failures = [line for line in proc.stderr.splitlines() if line.startswith("failed:")]
    assert len(failures) == len(FAILED), failures
    for needle, reason in FAILED.items():
        assert any(needle in f and reason in f for f in failures), (needle, failures)
    txts = {p.relative_to(out).with_suffix("").as_posix(): p.read_text() for p in out.rglob("*.txt")}
    b_name = next(n for n in txts if n.startswith("x-") and n != "x-2")
    assert len(b_name) == len("x-") + 6, "b/x.wav takes a hash suffix, never x-2 (c/x-2.wav has that)"
    assert "never been surpassed" in txts.pop(b_name).lower()
    assert set(txts) == set(GOOD), sorted(txts)
    for name, words in GOOD.items():
        assert words in txts[name].lower(), (name, txts[name])
        assert json.loads((out / f"{name}.json").read_text())["text"].strip()
    assert not (out / "album").exists() and not list(out.rglob("._*")) and not list(out.rglob(".hidden*"))
    assert not list(out.rglob(".whisperops-*")), "no temp file left"
    done = len(GOOD) + 1  # with b/x.wav
    assert f"{done} of {done + len(FAILED)} items transcribed; outputs in {out}/" in proc.stdout
    # Damaged and truncated audio is transcribed and said to be incomplete, in the summary and the json.
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert any(w.startswith("warning: damaged:") and "skipped" in w for w in warnings), warnings
    assert any(w.startswith("warning: cut:") and "truncated" in w for w in warnings), warnings
    assert json.loads((out / "damaged.json").read_text())["warnings"]
    return txts


@pytest.fixture(scope="module")
def flow_run(batch, tmp_path_factory):
    sources, _ = batch
    out = tmp_path_factory.mktemp("flow-out") / "out"
    # One shard: short clips are packed into shared windows, and a word can decode differently with
    # other speech beside it, so the in-process run below matches only a flow that packs the same. No
    # cache either: another module's run may have cached a clip decoded beside other clips.
    proc = cli(
        "transcribe",
        *sources,
        "-o",
        str(out),
        "--formats",
        "txt,json",
        "--title",
        HOSTILE_TITLE,
        "--shard-size",
        "100",
        "--no-cache",
    )
    return proc, out


@pytest.mark.slow
def test_hostile_batch_through_the_flow(flow_run):
    proc, out = flow_run
    _check_outcome(proc, out)
    from whisperops.flows.runs import get_run

    run = get_run(proc.stdout.split("run id: ")[1].split()[0])
    df = run.data.results
    names = list(df["name"])
    assert len(names) == len(set(names)) == len(GOOD) + 1 + len(FAILED)
    by = df.set_index("name")
    # each row holds its own item's text, and the datastore holds each transcript once
    for name, words in GOOD.items():
        assert words in by.loc[name, "text"].lower() and words in run.data.transcripts[name]["text"].lower()
    assert by.loc["damaged", "warnings"] and by.loc["cut", "warnings"] and not by.loc["talk", "warnings"]


@pytest.mark.slow
def test_hostile_card_runs_no_script_from_inputs(flow_run, tmp_path):
    proc, _ = flow_run
    card = Path(proc.stdout.split("card: ")[1].split()[0])
    chromium = require_executable("chromium")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    flags += [f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", card.as_uri()], capture_output=True, text=True, timeout=120)
    assert "Failures" in dom.stdout and "Warnings" in dom.stdout, dom.stdout[-2000:]
    assert "data-pwned" not in dom.stdout.split("<body", 1)[1].split(">", 1)[0], "a script from an input ran"
    assert 'data-pwned="' not in dom.stdout
    # shown as text: the title, the HTML-named source and the server's reason phrase
    assert dom.stdout.count("onerror=") >= 3 and "&lt;img src=x" in dom.stdout


@pytest.mark.slow
def test_hostile_batch_in_process_matches_the_flow(batch, flow_run, tmp_path):
    sources, _ = batch
    _, flow_out = flow_run
    out = tmp_path / "out"
    proc = cli("transcribe", *sources, "-o", str(out), "--formats", "txt,json", "--in-process", "--no-cache")
    ours = _check_outcome(proc, out)
    theirs = _check_outcome(flow_run[0], flow_out)
    assert ours == theirs


def test_names_lists_and_file_urls(tmp_path, jfk):
    from whisperops.sources import MAX_NAME_BYTES, resolve

    for rel in (
        "a/x.wav",
        "b/x.wav",
        "c/x-2.wav",
        "d/X.wav",
        "e/x.wav",
        "take#1.wav",
        "f/._y.wav",
        "f/y.wav",
        "f/.git/z.wav",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(jfk, tmp_path / rel)
    names = [i.name for i in resolve([tmp_path / "a/x.wav", tmp_path / "b/x.wav", tmp_path / "c/x-2.wav"])]
    assert names[0] == "x" and names[2] == "x-2" and names[1].startswith("x-") and len(set(names)) == 3
    again = [i.name for i in resolve([tmp_path / "a/x.wav", tmp_path / "e/x.wav", tmp_path / "b/x.wav"])]
    assert again[0] == "x" and again[2] == names[1], "a collision's suffix belongs to its source, not its position"
    case = [i.name for i in resolve([tmp_path / "a/x.wav", tmp_path / "d/X.wav"])]
    assert case[0] == "x" and case[1].lower() != "x", "x.txt and X.txt are one file on macOS"
    assert [i.name for i in resolve([tmp_path / "f"])] == ["y"], "AppleDouble and hidden files are skipped"
    listing = tmp_path / "list.txt"
    listing.write_text(
        "# batch\n"
        "take#1.wav\n"
        "http://127.0.0.1:9/a.mp3   # a note\n"
        "http://127.0.0.1:9/b.mp3#t=3\n"
        f"{(tmp_path / 'a/x.wav').as_uri()}\n"
    )
    items = resolve([listing])
    assert [i.path.name if i.path else i.url for i in items] == [
        "take#1.wav",
        "http://127.0.0.1:9/a.mp3",
        "http://127.0.0.1:9/b.mp3#t=3",
        "x.wav",
    ]
    assert all(i.error is None for i in items)
    long = "語" * 100  # 300 bytes of UTF-8: over the limit, cut on a character
    (item,) = resolve([f"http://127.0.0.1:9/{long}.mp3"])
    assert len(item.name.encode()) <= MAX_NAME_BYTES and item.name == "語" * (MAX_NAME_BYTES // 3)
    (item,) = resolve([tmp_path / f"{long}.wav"])
    assert "File name too long" in item.error and "\n" not in item.error, "an item's error, not a crash"


def test_long_unicode_names_are_written(tmp_path):
    from whisperops.results import Segment, Transcript
    from whisperops.writers import write_all

    t = Transcript("s", "hello", [Segment(0, 0.0, 1.0, "hello")], "en", 1.0, 1.0)
    paths = write_all(t, tmp_path, LONG_NAME, ["txt", "json", "srt"])
    assert [p.read_text().strip()[:1] for p in paths] == ["h", "{", "1"]
    assert len(paths[1].name.encode()) == 247 and not list(tmp_path.glob(".whisperops-*"))


def test_language_names_and_exit_codes():
    from whisperops.data.manifest import DatasetError
    from whisperops.engine import DecodeOptions
    from whisperops.errors import AudioError, ModelNotFoundError, OptionError, WhisperOpsError
    from whisperops.languages import LANGUAGES
    from whisperops.training.run import TrainingError

    assert [DecodeOptions(language=v).language for v in ("EN", "english", "English", " de ", "AUTO")] == [
        "en",
        "en",
        "en",
        "de",
        None,
    ]
    assert DecodeOptions(language="castilian").language == "es"
    with pytest.raises(OptionError, match=r"--language xx: not a language"):
        DecodeOptions(language="xx")
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert set(LANGUAGES) == set(_LANGUAGE_CODES), "the same languages as the runtime"
    assert {c.exit_code for c in (OptionError, ModelNotFoundError, DatasetError)} == {2}
    assert {c.exit_code for c in (WhisperOpsError, TrainingError, AudioError)} == {1}


BAD_OPTIONS = [
    (["--device", "tpu"], "--device tpu"),
    (["--device", "cuda"], "--device cuda"),
    (["--compute-type", "int3"], "--compute-type int3"),
    (["--compute-type", "float16"], "--compute-type float16"),
    (["--threads", "-1"], "--threads -1"),
    (["--workers", "-1"], "--workers -1"),
    (["--shard-size", "-1"], "--shard-size -1"),
    (["--task", "translate"], "--task translate"),
    (["--language", "de"], "--language de"),
    (["--language", "xx"], "--language xx"),
]


def test_bad_options_and_output_dirs_stop_before_any_work(jfk, tmp_path):
    if _has_cuda():
        BAD_OPTIONS.remove((["--device", "cuda"], "--device cuda"))
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [*BAD_OPTIONS, (["-o", str(a_file)], "is a file"), (["-o", str(a_file / "sub")], "not writable")]
    cases.append((["-o", "/proc/whisperops-out"], "not writable"))
    for args, needle in cases:
        argv = ["transcribe", str(jfk), *args]
        if "-o" not in args:
            argv += ["-o", str(tmp_path / "out")]
        start = time.monotonic()
        proc = cli(*argv, timeout=120)
        line = one_line(proc)
        assert proc.returncode == 2 and needle in line, (args, proc.stderr)
        assert "Metaflow run" not in proc.stderr and time.monotonic() - start < 60
    assert not (tmp_path / "out").exists(), "nothing written on bad usage"


def _has_cuda() -> bool:
    import ctranslate2

    return ctranslate2.get_cuda_device_count() > 0


@pytest.mark.slow
def test_flow_start_refuses_bad_options_before_any_task(jfk, tmp_path):
    from whisperops.flows import runtime_cwd

    args = ["--sources", str(jfk), "--language", "de", "--run-id-file", str(tmp_path / "id")]
    proc = subprocess.run(
        [sys.executable, "-m", "whisperops.flows.transcription", "--no-pylint", "run", *args],
        cwd=runtime_cwd(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "--language de: model 'tiny.en' is English-only" in text, text[-3000:]
    from whisperops.flows.runs import get_run

    run = get_run((tmp_path / "id").read_text().strip())
    assert [step.id for step in run] == ["start"], "no transcribe task started"


def test_weights_changed_in_place_give_new_transcripts(engine, tmp_path):
    from whisperops.models import ct2, registry
    from whisperops.pipeline import TranscriptCache

    model = tmp_path / "model"
    shutil.copytree(engine.path, model)
    options = __import__("whisperops.engine", fromlist=["DecodeOptions"]).DecodeOptions()
    key = TranscriptCache.key_for("audio", model, "int8", options)
    assert TranscriptCache.key_for("audio", model, "int8", options) == key
    stamp = next(v for k, v in registry._DIGESTS.items() if k.endswith("model/model.bin"))
    weights = ct2.read_model(model)
    name = "encoder/layer_norm/gamma"
    weights.variables[name].data = weights.variables[name].data * 1.01
    size = (model / "model.bin").stat().st_size
    ct2.write_model(weights, model / "model.bin")  # retrained into the same folder, at the same size
    assert (model / "model.bin").stat().st_size == size
    assert TranscriptCache.key_for("audio", model, "int8", options) != key
    assert next(v for k, v in registry._DIGESTS.items() if k.endswith("model/model.bin")) != stamp
    # the digest is remembered on disk by path, size, mtime and inode: another process does not re-read
    registry._DIGESTS.clear()
    digests = json.loads((registry._digest_file()).read_text())
    assert any(k.endswith("model/model.bin") for k in digests)
    assert TranscriptCache.key_for("audio", model, "int8", options) != key


def test_corrupt_weights_and_lazy_listing(tmp_path, jfk, monkeypatch):
    from whisperops.models import registry

    bad = tmp_path / "broken"
    bad.mkdir()
    (bad / "model.bin").write_bytes(b"\6\0\0\0\xff\xfe" + os.urandom(5000))
    proc = cli("transcribe", str(jfk), "--model", str(bad), "-o", str(tmp_path / "o"), "--in-process")
    line = one_line(proc)
    assert proc.returncode == 2 and f"{bad}/model.bin" in line and "not a readable" in line
    monkeypatch.setenv("WHISPEROPS_CACHE", str(tmp_path / "fresh-cache"))
    base = {m.name: m for m in registry.list_models()}["base"]
    if not base.installed:
        pytest.skip("the [base] extra is not installed")
    assert base.multilingual is True and base.size_bytes > 100e6 and 70e6 < base.parameters < 80e6
    assert not (tmp_path / "fresh-cache" / "models" / "base").exists(), "a listing joins no weights"


def test_a_write_failure_fails_its_item_and_nothing_written_says_so(shared_speech, tmp_path):
    out = tmp_path / "o"
    (out / "LJ001-0002.txt").mkdir(parents=True)  # a folder where the item's file must go
    clip = shared_speech / "ljspeech/LJ001-0002.wav"
    proc = cli(
        "transcribe", str(tmp_path / "missing.wav"), str(clip), "-o", str(out), "--formats", "txt", "--in-process"
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failures = [line for line in proc.stderr.splitlines() if line.startswith("failed:")]
    assert len(failures) == 2 and "no such file" in failures[0], failures
    assert f"cannot write {out}/LJ001-0002.*" in failures[1] and "Is a directory" in failures[1]
    assert "0 of 2 items transcribed" in proc.stdout and "outputs in" not in proc.stdout
    assert sorted(p.name for p in out.iterdir()) == ["LJ001-0002.txt"], "nothing half-written"


def _wait_for(predicate, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_ctrl_c_in_process_keeps_finished_items(shared_speech, tmp_path):
    clips = [shared_speech / c for c, _ in list(CLIPS.values())[:4]]
    out, cache = tmp_path / "out", tmp_path / "cache"
    env = {**os.environ, "WHISPEROPS_CACHE": str(cache), "NO_COLOR": "1"}
    argv = [sys.executable, "-m", "whisperops", "transcribe", *map(str, clips), "-o", str(out), "--in-process"]
    # One item after another: packed, these four short clips would be decoded, and written, as one.
    argv.append("--no-pack")
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: (out / "LJ001-0002.json").exists(), 120), "the first item never finished"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert "modern" in (out / "LJ001-0002.txt").read_text() and json.loads((out / "LJ001-0002.json").read_text())
    assert not list(out.glob(".whisperops-*")), "no half-written file"
    assert not (out / f"{clips[-1].stem}.txt").exists(), "it stopped instead of finishing the batch"
    assert list((cache / "transcripts").rglob("*.json")), "the cache keeps what was finished"


@pytest.mark.slow
def test_sigterm_stops_the_flow_run_and_its_tasks(shared_speech, tmp_path):
    clips = [shared_speech / c for c, _ in CLIPS.values()][:5]
    env = {**os.environ, "NO_COLOR": "1"}
    argv = [sys.executable, "-m", "whisperops", "transcribe", *map(str, clips), "-o", str(tmp_path / "o")]
    argv += ["--no-cache", "--workers", "1", "--shard-size", "5"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        assert _wait_for(lambda: any("Metaflow run" in line for line in lines), 120), lines
        run_id = next(line for line in lines if "Metaflow run" in line).split("TranscriptionFlow/")[1].split()[0]
        # let the transcribe task start before the signal
        assert _wait_for(lambda: _processes_of(run_id, "transcribe"), 60)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
    finally:
        proc.kill()
    reader.join(5)
    assert proc.returncode == 143, lines
    assert _wait_for(lambda: not _processes_of(run_id), 20), "the run's tasks outlived it"
    listing = cli("runs")
    row = next(line for line in listing.stdout.splitlines() if run_id in line)
    assert "interrupted" in row


def _processes_of(run_id: str, step: str = "") -> list[int]:
    """Live processes whose command line names ``run_id`` (and ``step``): the run's runtime and tasks."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if run_id in cmd and step in cmd and int(proc.name) != os.getpid():
            pids.append(int(proc.name))
    return pids
