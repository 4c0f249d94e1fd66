"""Hostile requests against a real ``whisperops serve`` process on 127.0.0.1 (issue 13).

One server for the corpus, with small limits so each is cheap to reach. Every case asserts the
status, OpenAI's error shape (``{"error": {"message", "type", "param", "code"}}``) and that nothing
leaked: the text of a private file the playlists point at never comes back, and a loopback
listener named in nested URLs sees no connection. After the corpus the server still transcribes,
holds no uploads and no more file descriptors than before. A small part runs against ``--ray``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from test_serve import cli_server, client, free_port

# Words of the JFK clip the playlists point at: they must never appear in an answer.
SECRET_WORDS = ("americans", "country", "fellow")
LIMITS = {
    "max_upload_mb": 5,
    "max_audio_s": 600,
    "request_timeout_s": 12,
    "body_timeout_s": 1.5,
    "max_queue": 2,
    "slots": 1,
}
TRANSCRIBE = "/v1/audio/transcriptions"


# ---- helpers ---------------------------------------------------------------------------------------


def multipart(
    fields: list[tuple[str, str]], file: tuple[bytes, bytes] | None, ctype: str = "application/octet-stream"
) -> tuple[bytes, str]:
    """A multipart body built by hand, so tests can send what httpx refuses to (a NUL in a name)."""
    boundary = b"hostile-boundary-7f3a"
    out = bytearray()
    for name, value in fields:
        out += b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + name.encode() + b'"\r\n\r\n'
        out += value.encode() + b"\r\n"
    if file is not None:
        filename, data = file
        out += b"--" + boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="' + filename + b'"\r\n'
        out += b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + data + b"\r\n"
    out += b"--" + boundary + b"--\r\n"
    return bytes(out), f"multipart/form-data; boundary={boundary.decode()}"


def post(base: str, body: bytes, ctype: str, path: str = TRANSCRIBE, **kw) -> httpx.Response:
    return httpx.post(f"{base}{path}", content=body, headers={"content-type": ctype, **kw}, timeout=60)


def upload(base: str, data: bytes, name: bytes = b"clip.wav", fields=(("model", "tiny.en"),), **kw) -> httpx.Response:
    body, ctype = multipart(list(fields), (name, data), kw.pop("file_type", "application/octet-stream"))
    return post(base, body, ctype, **kw)


def assert_error(r: httpx.Response, status: int, param: str | None = None, text: str = "", code: str | None = None):
    """OpenAI's error shape, the status and field expected, and no secret in the answer."""
    assert r.status_code == status, r.text[:500]
    body = r.json()
    assert list(body) == ["error"] and set(body["error"]) == {"message", "type", "param", "code"}, body
    err = body["error"]
    assert err["message"] and isinstance(err["type"], str), err
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    assert text.lower() in err["message"].lower(), err
    assert not any(w in r.text.lower() for w in SECRET_WORDS), f"leaked: {r.text[:300]}"
    return err


def raw_exchange(port: int, data: bytes, timeout: float = 10) -> bytes:
    """Send raw bytes; return everything the server answers until it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return read_all(s, timeout)


def read_all(s: socket.socket, timeout: float) -> bytes:
    s.settimeout(timeout)
    out = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := s.recv(65536):
            out += chunk
            if b"\r\n\r\n" in out and _complete(out):
                break
    return out


def _complete(raw: bytes) -> bool:
    head, _, rest = raw.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(rest) >= int(value)
    return False


def status_of(raw: bytes) -> int:
    assert raw.startswith(b"HTTP/1.1 "), raw[:200]
    return int(raw.split()[1])


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def silence_flac(path: Path, seconds: int, claim_samples: int | None) -> Path:
    """FLAC of digital silence; its header's sample count replaced by ``claim_samples`` (a lying container)."""
    from whisperops.data.longform import silence, write_flac

    write_flac(path, (silence(60) for _ in range(seconds // 60)))
    if claim_samples is not None:
        data = bytearray(path.read_bytes())
        # STREAMINFO's 36-bit total sample count: the low 36 bits of bytes 18..25.
        value = int.from_bytes(data[18:26], "big") & ~((1 << 36) - 1) | claim_samples
        data[18:26] = value.to_bytes(8, "big")
        path.write_bytes(bytes(data))
    return path


def speech_wav(jfk: Path, path: Path, repeat: int) -> Path:
    from whisperops.audio import load_audio

    pcm = (np.tile(load_audio(jfk), repeat) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(pcm.tobytes())
    return path


def serve_args(upload_dir: Path, **limits) -> list[str]:
    flags = {
        "max_upload_mb": "--max-upload-mb",
        "max_audio_s": "--max-audio-s",
        "request_timeout_s": "--timeout",
        "body_timeout_s": "--body-timeout",
        "max_queue": "--max-queue",
        "slots": "--slots",
        "shutdown_grace_s": "--shutdown-grace",
    }
    args = ["--beam-size", "1", "--threads", "2", "--upload-dir", str(upload_dir), "--log-level", "warning"]
    for key, value in limits.items():
        args += [flags[key], str(value)]
    return args


# ---- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory, jfk: Path) -> Path:
    """A private file outside the upload dir, that no client may read through the server."""
    folder = tmp_path_factory.mktemp("private")
    path = folder / "secret.flac"
    path.write_bytes(jfk.read_bytes())
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, shared_manifest: list[dict]) -> Iterator[dict]:
    upload_dir = tmp_path_factory.mktemp("uploads")
    with cli_server(*serve_args(upload_dir, **LIMITS)) as (base, proc):
        short = min(shared_manifest, key=lambda r: r["duration_s"])["path"]
        with open(short, "rb") as f:  # load the model and start the decode thread before counting
            assert client(base, key=None).audio.transcriptions.create(model="tiny.en", file=f).text
        port = int(base.rsplit(":", 1)[1])
        info = {"base": base, "port": port, "pid": proc.pid, "dir": upload_dir, "short": short}
        info["fds"] = fd_count(proc.pid)
        info["rss"] = peak_rss_mb(proc.pid)
        yield info


# ---- what is decoded: playlists, nested opens, lies about length -------------------------------------


def playlists(secret: Path, url: str) -> dict[str, tuple[bytes, bytes, str]]:
    """Each kind of file that makes FFmpeg open another file or URL: name -> (filename, bytes, type)."""
    hls = "#EXTM3U\n#EXT-X-TARGETDURATION:30\n#EXTINF:30.0,\n{}\n#EXT-X-ENDLIST\n"
    mpegurl = "application/vnd.apple.mpegurl"
    sdp = f"v=0\no=- 0 0 IN IP4 127.0.0.1\ns=x\nc=IN IP4 127.0.0.1\nt=0 0\nm=audio {free_port()} RTP/AVP 0\n"
    return {
        "hls": (b"x.m3u8", hls.format(secret).encode(), mpegurl),
        "hls-named-wav": (b"x.wav", hls.format(secret).encode(), "audio/wav"),
        "hls-no-suffix": (b"x", hls.format(secret).encode(), "application/octet-stream"),
        "m3u": (b"x.m3u", f"#EXTM3U\n#EXTINF:11,jfk\n{secret}\n".encode(), "audio/x-mpegurl"),
        "ffconcat": (b"list.ffconcat", f"ffconcat version 1.0\nfile '{secret}'\n".encode(), "text/plain"),
        "ffconcat-named-flac": (b"a.flac", f"ffconcat version 1.0\nfile 'file:{secret}'\n".encode(), "audio/flac"),
        "hls-http": (b"y.m3u8", hls.format(f"{url}/seg0.ts").encode(), mpegurl),
        "ffconcat-http": (b"z.txt", f"ffconcat version 1.0\nfile '{url}/b.flac'\n".encode(), "text/plain"),
        "sdp": (b"s.sdp", sdp.encode(), "application/sdp"),
    }


def test_playlists_and_nested_opens_are_refused(server: dict, secret: Path, media_server, jfk: Path) -> None:
    url, root, seen = media_server
    (root / "b.flac").write_bytes(jfk.read_bytes())
    (root / "seg0.ts").write_bytes(jfk.read_bytes())
    for kind, (name, data, ctype) in playlists(secret, url).items():
        t0 = time.monotonic()
        r = upload(server["base"], data, name, file_type=ctype)
        err = assert_error(r, 400, "file")
        assert "unsupported container" in err["message"], (kind, err)
        assert str(secret) not in err["message"] and time.monotonic() - t0 < 10, kind
    assert seen == [], f"the server fetched nested URLs: {seen}"


def test_not_media_is_a_clear_400(server: dict) -> None:
    rng = np.random.default_rng(0)
    err = assert_error(upload(server["base"], rng.bytes(20_000), b"noise.mp3"), 400, "file")
    assert "not an audio or video file" in err["message"] and "noise.mp3" in err["message"]
    assert "tuple index" not in err["message"] and "upload-" not in err["message"]
    png = b"\x89PNG\r\n\x1a\n" + rng.bytes(2000)
    assert_error(upload(server["base"], png, b"img.png"), 400, "file")


def test_hours_of_silence_413_without_decoding_it_all(server: dict, tmp_path: Path) -> None:
    base = server["base"]
    six_hours = silence_flac(tmp_path / "claims-6h.flac", 1200, claim_samples=6 * 3600 * 16000)
    t0 = time.monotonic()
    err = assert_error(upload(base, six_hours.read_bytes(), b"meeting.flac"), 413, "file", code="audio_too_long")
    assert "600 s" in err["message"] and "max_audio_s" in err["message"] and time.monotonic() - t0 < 5
    # A header that says nothing (or lies) is caught while streaming, at the limit.
    from whisperops.audio import probe_duration

    unknown = silence_flac(tmp_path / "unknown-length.flac", 1200, claim_samples=0)
    assert probe_duration(unknown) is None or probe_duration(unknown) < 600
    err = assert_error(upload(base, unknown.read_bytes(), b"long.flac"), 413, "file", code="audio_too_long")
    assert "600 s" in err["message"]
    assert peak_rss_mb(server["pid"]) - server["rss"] < 600, "decoding silence grew the server by 600 MB or more"


# ---- every field checked before decoding ---------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "param", "text"),
    [
        pytest.param([("language", "xx")], "language", "not a language", id="language-xx"),
        pytest.param([("language", "de")], "language", "English-only", id="english-only"),
        pytest.param([("response_format", "mp3")], "response_format", "choose one of", id="format"),
        pytest.param([("temperature", "hot")], "temperature", "not a number", id="temperature-nan"),
        pytest.param([("temperature", "7")], "temperature", "between 0 and 1", id="temperature-7"),
        pytest.param([("timestamp_granularities[]", "word")], "timestamp_granularities[]", "verbose_json", id="grans"),
        pytest.param([("frobnicate", "1")], "frobnicate", "unknown parameter", id="unknown"),
        pytest.param([("prompt", "x" * 2_000_000)], "prompt", "KB", id="huge-prompt"),
        pytest.param([("model", "large-v9")], "model", "not served", id="model"),
    ],
)
def test_bad_fields_are_400_naming_the_field(server: dict, fields, param: str, text: str) -> None:
    # Random bytes as the file: a field checked only after decoding would answer "not an audio file".
    data = np.random.default_rng(1).bytes(5000)
    status = 404 if param == "model" else 400
    err = assert_error(upload(server["base"], data, fields=[("model", "tiny.en"), *fields]), status, param, text)
    assert "--" not in err["message"], "messages name API fields, not CLI flags"


def test_translation_needs_multilingual_model(server: dict) -> None:
    body, ctype = multipart([("model", "tiny.en")], (b"a.wav", b"RIFF...."))
    assert_error(post(server["base"], body, ctype, path="/v1/audio/translations"), 400, "model", "English-only")
    body, ctype = multipart([("language", "de")], (b"a.wav", b"RIFF...."))
    r = post(server["base"], body, ctype, path="/v1/audio/translations")
    assert_error(r, 400, "language", "unknown parameter for /v1/audio/translations")


def test_filenames_and_multipart_shapes(server: dict) -> None:
    base, data = server["base"], b"RIFF0000WAVE"
    assert_error(upload(base, data, b"a\x00b.wav"), 400, "file", "control characters")
    assert_error(upload(base, data, b"a" * 300 + b".wav"), 400, "file", "bytes long")
    assert_error(upload(base, data, b"a" * 20_000 + b".wav"), 400, "file", "multipart")
    body, ctype = multipart([("model", "tiny.en")], (b"a.wav", data))
    assert_error(post(base, body[:-30], ctype), 400, "file", "cut off")
    assert_error(post(base, b"garbage\r\n\r\nnot multipart", ctype), 400, "file")
    assert_error(post(base, body, "multipart/form-data"), 400, "file", "multipart/form-data")
    assert_error(post(base, body, "application/json"), 400, "file", "multipart/form-data")
    assert_error(post(base, multipart([("model", "tiny.en")], None)[0], ctype), 400, "file", "missing")
    assert_error(upload(base, b""), 400, "file", "empty")
    many = [("model", "tiny.en")] + [(f"f{i}", "1") for i in range(100)]
    assert_error(post(base, multipart(many, (b"a.wav", data))[0], ctype), 400, text="unknown parameter")
    many = [("timestamp_granularities[]", "segment")] * 100
    assert_error(post(base, multipart(many, (b"a.wav", data))[0], ctype), 400, "timestamp_granularities[]", "64")


def test_routes_methods_and_health(server: dict) -> None:
    base = server["base"]
    assert_error(httpx.get(f"{base}/v1/nope"), 404, "url", code="unknown_url")
    assert_error(httpx.get(f"{base}{TRANSCRIBE}"), 405, "method")
    assert_error(httpx.delete(f"{base}/health"), 405, "method")
    assert_error(httpx.get(f"{base}/v1/models/large-v9"), 404, "model")
    head = httpx.head(f"{base}/health")
    assert head.status_code == 200 and head.content == b""


# ---- connections, slow and many clients ------------------------------------------------------------


def test_a_real_bug_is_one_traceback_and_a_500_in_shape(caplog: pytest.LogCaptureFixture) -> None:
    from test_serve import settings, uvicorn_server
    from whisperops.serving.app import create_app

    app = create_app(settings())

    async def boom() -> None:
        raise RuntimeError("bug")

    app.add_api_route("/boom", boom)
    with caplog.at_level(logging.INFO), uvicorn_server(settings(), app=app) as base:
        r = httpx.get(f"{base}/boom")
    err = assert_error(r, 500, code=None)
    assert err["type"] == "server_error" and "RuntimeError" in err["message"]
    assert r.headers["connection"] == "close", "a dropped keep-alive connection must say so"
    assert sum(1 for rec in caplog.records if rec.exc_info) == 1, [rec.getMessage() for rec in caplog.records]


def test_connection_stays_usable_after_errors(server: dict) -> None:
    body, ctype = multipart([("model", "tiny.en"), ("language", "xx")], (b"a.wav", b"0" * 1000))
    with httpx.Client(base_url=server["base"], timeout=30) as http:
        for _ in range(3):  # body read to its end: the same connection answers the next request
            r = http.post(TRANSCRIBE, content=body, headers={"content-type": ctype})
            assert_error(r, 400, "language")
            assert r.headers.get("connection") != "close"
            assert http.get("/v1/models").status_code == 200


def test_413_stops_reading_and_closes(server: dict) -> None:
    _, ctype = multipart([("model", "tiny.en")], None)
    request = (
        f"POST {TRANSCRIBE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    part = b'--hostile-boundary-7f3a\r\nContent-Disposition: form-data; name="file"; filename="a.flac"\r\n\r\n'
    chunk = b"%x\r\n%s\r\n" % (1 << 20, b"\0" * (1 << 20))
    sent = 0
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=10) as s:
        answers: list[bytes] = []
        # Read while sending: once the server closes, the unread rest of the upload resets the connection.
        reader = threading.Thread(target=lambda: answers.append(read_all(s, 10)))
        s.sendall(request + b"%x\r\n%s\r\n" % (len(part), part))
        reader.start()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
            while sent < 200 << 20 and reader.is_alive():  # the server must stop us far before 200 MB
                s.sendall(chunk)
                sent += 1 << 20
        reader.join()
        answer = answers[0]
    assert status_of(answer) == 413 and b"connection: close" in answer.lower(), answer[:300]
    assert sent < 50 << 20, f"the server read {sent >> 20} MB past a 5 MB limit"
    # A declared length over the limit is refused before a byte of body is read.
    answer = raw_exchange(
        server["port"],
        f"POST {TRANSCRIBE} HTTP/1.1\r\nHost: localhost\r\nContent-Type: {ctype}\r\n"
        "Content-Length: 999999999\r\n\r\n".encode(),
    )
    assert status_of(answer) == 413 and b"connection: close" in answer.lower()


def _stalled_upload(port: int, trickle_s: float | None) -> tuple[bytes, float]:
    body, ctype = multipart([("model", "tiny.en")], (b"slow.wav", b"\0" * 100_000))
    head = f"POST {TRANSCRIBE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(head.encode() + body[:300])
        s.setblocking(False)
        answer = b""
        for byte in body[300:]:
            if trickle_s is None or time.monotonic() - t0 > 25:
                break
            with contextlib.suppress(BlockingIOError):
                answer += s.recv(65536)
            if answer:
                break
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                s.send(bytes([byte]))
            time.sleep(trickle_s)
        s.setblocking(True)
        answer += read_all(s, 25)
    return answer, time.monotonic() - t0


def test_slow_uploads_get_408_in_bounded_time(server: dict) -> None:
    answer, took = _stalled_upload(server["port"], None)  # sends part of the body, then nothing
    assert status_of(answer) == 408 and took < LIMITS["body_timeout_s"] + 3, (answer[:200], took)
    assert b'"param":"file"' in answer and b"body_timeout_s" in answer
    answer, took = _stalled_upload(server["port"], 0.5)  # a byte each 0.5 s: never idle, never done
    assert status_of(answer) == 408 and took < LIMITS["request_timeout_s"] + 3, (answer[:200], took)
    assert b"request_timeout_s" in answer


def test_flood_beyond_the_queue_is_429_before_bodies(server: dict) -> None:
    capacity = LIMITS["slots"] + LIMITS["max_queue"]
    body, ctype = multipart([("model", "tiny.en")], (b"f.wav", b"\0" * 1_000_000))
    head = (
        f"POST {TRANSCRIBE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body[:200]
    holders = []
    stop = threading.Event()

    def trickle(s: socket.socket) -> None:  # a byte now and then: never idle long enough for a 408
        with contextlib.suppress(OSError):
            while not stop.wait(0.3):
                s.send(b"\0")

    try:
        for _ in range(capacity):  # hold every admission with an upload that has barely started
            s = socket.create_connection(("127.0.0.1", server["port"]), timeout=10)
            s.sendall(head)
            holders.append(s)
            threading.Thread(target=trickle, args=(s,), daemon=True).start()
        deadline = time.monotonic() + 5
        while httpx.get(f"{server['base']}/health").json()["admitted"] < capacity:
            assert time.monotonic() < deadline, "uploads were not admitted"
            time.sleep(0.05)
        results: list[bytes] = []

        def flood() -> None:
            results.append(raw_exchange(server["port"], head, timeout=5))

        threads = [threading.Thread(target=flood) for _ in range(12)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert time.monotonic() - t0 < 5
        for answer in results:
            assert status_of(answer) == 429, answer[:300]
            assert b"retry-after:" in answer.lower() and b"connection: close" in answer.lower()
            assert b'"type":"rate_limit_error"' in answer
    finally:
        stop.set()
        for s in holders:
            s.close()
    deadline = time.monotonic() + 5
    while httpx.get(f"{server['base']}/health").json()["admitted"]:
        assert time.monotonic() < deadline, "admissions of disconnected uploads were never released"
        time.sleep(0.05)


# ---- DNS rebinding ---------------------------------------------------------------------------------


def test_foreign_host_and_origin_are_refused(server: dict) -> None:
    base = server["base"]
    data = np.random.default_rng(2).bytes(100)
    assert_error(upload(base, data, Host="attacker.example"), 400, "host", "attacker.example")
    assert_error(httpx.get(f"{base}/v1/models", headers={"Host": "attacker.example:8000"}), 400, "host")
    r = httpx.get(f"{base}/v1/models", headers={"Origin": "http://attacker.example"})
    assert_error(r, 403, "origin")
    assert "access-control-allow-origin" not in r.headers
    pre = httpx.options(f"{base}{TRANSCRIBE}", headers={"Origin": "http://attacker.example"})
    assert pre.status_code >= 400 and "access-control-allow-origin" not in pre.headers
    for host in ("localhost", "127.0.0.1", "[::1]"):
        assert httpx.get(f"{base}/health", headers={"Host": f"{host}:{server['port']}"}).status_code == 200


# ---- after the corpus ------------------------------------------------------------------------------


def test_zz_after_the_corpus_all_is_well(server: dict) -> None:
    """Last in the module: the server still transcribes, and kept no uploads and no descriptors."""
    with open(server["short"], "rb") as f:
        out = client(server["base"], key=None).audio.transcriptions.create(
            model="whisper-1", file=f, response_format="verbose_json"
        )
    assert out.text.strip() and out.segments
    assert all(s.start <= s.end <= out.duration for s in out.segments), "segment ends past the audio's end"
    assert not list(server["dir"].iterdir()), "uploads left behind"
    pid, deadline = server["pid"], time.monotonic() + 10
    while fd_count(pid) > server["fds"]:  # closed sockets take a moment to be reaped
        open_now = sorted(os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
        assert time.monotonic() < deadline, f"file descriptors leaked: {server['fds']} -> {open_now}"
        time.sleep(0.2)


# ---- start-up and shutdown -------------------------------------------------------------------------


def test_non_ascii_api_key_is_refused_at_start() -> None:
    cmd = [sys.executable, "-c", "from whisperops.cli import main; main()", "serve", "--port", str(free_port())]
    out = subprocess.run([*cmd, "--api-key", "clé-secrète"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--api-key" in out.stderr + out.stdout


def test_shutdown_cancels_after_grace_with_503_then_exits_0(tmp_path: Path, jfk: Path) -> None:
    long_clip = speech_wav(jfk, tmp_path / "long.wav", 8)  # ~90 s of speech: longer than the grace
    uploads = tmp_path / "uploads"
    with cli_server(*serve_args(uploads, shutdown_grace_s=1), "--beam-size", "5") as (base, proc):
        result: dict = {}

        def request() -> None:
            with long_clip.open("rb") as f:
                result["r"] = httpx.post(
                    f"{base}{TRANSCRIBE}", files={"file": f}, data={"model": "tiny.en"}, timeout=60
                )

        worker = threading.Thread(target=request)
        worker.start()
        deadline = time.monotonic() + 60
        while httpx.get(f"{base}/health").json()["running"] < 1:
            assert time.monotonic() < deadline and worker.is_alive()
            time.sleep(0.05)
        # Stored once: one named file, and no anonymous spool (an open, deleted temp file) beside it.
        assert len(list(uploads.iterdir())) == 1
        links = [os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{proc.pid}/fd")]
        assert not [link for link in links if link.endswith("(deleted)")], links
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        worker.join(timeout=30)
        assert_error(result["r"], 503, code="server_shutting_down")
        assert proc.wait(timeout=20) == 0 and time.monotonic() - t0 < 1 + 5, "SIGTERM: exit 0 soon after the grace"
    assert not list(uploads.iterdir())


def test_second_signal_exits_at_once(tmp_path: Path, jfk: Path) -> None:
    long_clip = speech_wav(jfk, tmp_path / "long.wav", 8)
    uploads = tmp_path / "uploads"
    port = free_port()
    cmd = [sys.executable, "-c", "from whisperops.cli import main; main()", "serve", "--port", str(port)]
    proc = subprocess.Popen([*cmd, *serve_args(uploads, shutdown_grace_s=60)], stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)

        def request() -> None:
            with contextlib.suppress(httpx.HTTPError), long_clip.open("rb") as f:
                httpx.post(f"{base}{TRANSCRIBE}", files={"file": f}, data={"model": "tiny.en"}, timeout=60)

        threading.Thread(target=request, daemon=True).start()
        while httpx.get(f"{base}/health").json()["running"] < 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.3)
        assert proc.poll() is None, "the first signal must wait for the running request (grace 60 s)"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 1 and time.monotonic() - t0 < 3
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not list(uploads.iterdir()), "a forced exit left the upload behind"


# ---- the same corpus, in part, on Ray Serve ----------------------------------------------------------


@pytest.mark.slow
def test_ray_refuses_the_same(tmp_path_factory: pytest.TempPathFactory, secret: Path) -> None:
    pytest.importorskip("ray")
    upload_dir = tmp_path_factory.mktemp("ray-uploads")
    with cli_server("--ray", "--replica-cpus", "1", *serve_args(upload_dir, max_audio_s=600)) as (base, _):
        name, data, ctype = playlists(secret, "http://127.0.0.1:9")["hls"]
        assert (
            "unsupported container" in assert_error(upload(base, data, name, file_type=ctype), 400, "file")["message"]
        )
        assert_error(upload(base, b"x" * 100, fields=[("model", "tiny.en"), ("language", "xx")]), 400, "language")
        assert_error(upload(base, b"x" * 100, Host="attacker.example"), 400, "host")
        assert_error(httpx.get(f"{base}/v1/nope"), 404, "url")
        assert not list(upload_dir.iterdir())
