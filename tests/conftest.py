"""Shared fixtures: real weights, real recorded speech, and speech synthesised offline."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from http.server import SimpleHTTPRequestHandler
from pathlib import Path

import pytest

# The test process starts and stops Ray several times; see exit_after_pytest for why it exits hard.
pytest_plugins = ["exit_after_pytest"]

ROOT = Path(__file__).resolve().parents[1]
SHARED_SPEECH = Path(os.environ.get("WHISPEROPS_SHARED_SPEECH", ROOT.parent / "shared" / "data" / "speech"))


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests never touch the user's cache (weights joins, downloads, transcript cache, registry)."""
    if "WHISPEROPS_CACHE" not in os.environ:
        os.environ["WHISPEROPS_CACHE"] = str(tmp_path_factory.mktemp("whisperops-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Metaflow runs (TranscriptionFlow, `whisperops transcribe`) keep their datastore and cards in a
    # temp dir, never in the checkout; the user's ~/.metaflowconfig is not read.
    if "METAFLOW_DATASTORE_SYSROOT_LOCAL" not in os.environ:
        os.environ["METAFLOW_DATASTORE_SYSROOT_LOCAL"] = str(tmp_path_factory.mktemp("metaflow"))
    os.environ.setdefault("METAFLOW_HOME", str(tmp_path_factory.mktemp("metaflow-home")))


@pytest.fixture(scope="session")
def shared_speech() -> Path:
    """The real recorded speech set beside the checkout (``../shared/data/speech``)."""
    if not (SHARED_SPEECH / "manifest.jsonl").exists():
        pytest.skip(f"shared speech set absent: expected {SHARED_SPEECH}/manifest.jsonl beside the checkout")
    return SHARED_SPEECH


@pytest.fixture(scope="session")
def shared_manifest(shared_speech: Path) -> list[dict]:
    rows = [json.loads(line) for line in (shared_speech / "manifest.jsonl").read_text().splitlines() if line.strip()]
    for row in rows:
        row["path"] = shared_speech / row["audio"]
    return rows


@pytest.fixture(scope="session")
def jfk(shared_speech: Path) -> Path:
    return shared_speech / "jfk.flac"


@pytest.fixture(scope="session")
def engine():
    """tiny.en, loaded once for the session (real bundled weights)."""
    from whisperops.engine import Engine

    return Engine("tiny.en", cpu_threads=2)


@pytest.fixture(scope="session")
def piper_clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A sentence spoken by piper's neural voice, with its reference text."""
    from whisperops.data.tts import piper_speak

    text = "The quick brown fox jumps over the lazy dog near the river bank."
    path = piper_speak(text, tmp_path_factory.mktemp("speech") / "fox.wav")
    return path, text


def require_executable(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.skip(f"{name} not installed (make test installs it with apt-get where it can)")
    return exe


def video_without_audio(dst: Path, frames: int = 10) -> Path:
    """A small MPEG-4 video with no audio track (PyAV-encoded)."""
    import av
    import numpy as np

    with av.open(str(dst), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 20, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return dst


def read_flow_run(flow: str, step: str, card_id: str, fields: list[str], cwd: Path, env: dict) -> tuple[dict, str]:
    """Artifacts ``fields`` of ``flow``'s latest successful run, and the text its ``card_id`` card shows.

    Read through Metaflow's Client API in a fresh process, so the run's datastore (``env``) is what
    is read, as a user would. The card page carries its components as base64 JSON: what it shows is
    checked, not just that the page exists.
    """
    read = (
        "import json, whisperops.flows\n"
        "from metaflow import Flow, namespace\n"
        "from metaflow.cards import get_cards\n"
        "namespace(None)\n"
        f"run = Flow({flow!r}).latest_successful_run\n"
        f"card = get_cards(run[{step!r}].task, id={card_id!r})[0]\n"
        f"print(json.dumps({{'data': {{f: getattr(run.data, f) for f in {fields!r}}}, 'card': card.get()}}))\n"
    )
    out = subprocess.run([sys.executable, "-c", read], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    match = re.search(r'__MF_DATA__\["[^"]+"\] = "([A-Za-z0-9+/=]+)"', result["card"])
    assert match, "no card data in the card HTML"
    return result["data"], base64.b64decode(match.group(1)).decode()


class _CountingHandler(SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        super().do_GET()

    def do_HEAD(self) -> None:
        type(self).requests.append("HEAD " + self.path)
        super().do_HEAD()


@pytest.fixture()
def media_server(tmp_path: Path):
    """A loopback HTTP server over a temp folder: ``(base_url, folder, requests_seen)``."""
    import functools
    import threading
    from http.server import ThreadingHTTPServer

    root = tmp_path / "www"
    root.mkdir()
    handler = type("Handler", (_CountingHandler,), {"requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, handler.requests
    finally:
        server.shutdown()
        server.server_close()


def chromium_dom(page: Path, profile: Path) -> str:
    """The DOM headless Chromium renders from ``page`` (offline, scripts run), as HTML text."""
    chromium = require_executable("chromium")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    flags += [f"--user-data-dir={profile}", "--virtual-time-budget=5000"]
    out = subprocess.run([chromium, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    return out.stdout
