"""Only the bytes given are decoded; damage is skipped and said; odd inputs get one clear line.

Every file here is made by the test from real speech (jfk.flac); nothing is mocked.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import whisperops.audio as audio
from conftest import video_without_audio
from whisperops.audio import DecodeReport, load_audio, probe_duration, stream_audio
from whisperops.errors import AudioError, UnsupportedMediaError

SR = 16000


def _write(path: Path, samples: np.ndarray, fmt: str, codec: str, rate: int = SR) -> Path:
    """Encode ``samples`` (``(n,)`` or ``(channels, n)`` float32 at 16 kHz) with PyAV."""
    import av

    pcm = samples if samples.ndim == 2 else samples[None, :]
    layout = "mono" if pcm.shape[0] == 1 else "stereo"
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=rate, layout=layout)
        resampler = av.audio.resampler.AudioResampler(
            format=stream.codec_context.format.name,
            layout=layout,
            rate=rate,
            frame_size=stream.codec_context.frame_size or None,
        )
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm, dtype=np.float32), format="fltp", layout=layout)
        frame.sample_rate = SR
        for piece in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(piece):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def speech(jfk: Path) -> np.ndarray:
    """jfk.flac as 16 kHz mono: 11 s of real speech."""
    return load_audio(jfk)


@pytest.fixture(scope="module")
def secret(tmp_path_factory: pytest.TempPathFactory, speech: np.ndarray) -> Path:
    """A real flac that playlists point at: its samples must never come out of a decode."""
    folder = tmp_path_factory.mktemp("private")
    return _write(folder / "secret.flac", speech[: 3 * SR], "flac", "flac")


@pytest.fixture
def listener() -> Iterator[tuple[int, list[bytes]]]:
    """A loopback TCP listener that records every connection (and its first bytes)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)
    seen: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    seen.append(conn.recv(1024) or b"<connected>")
                except OSError:
                    seen.append(b"<connected>")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], seen
    stop.set()
    thread.join(2)
    server.close()


def _playlists(secret: Path, url: str) -> dict[str, str]:
    return {
        "hls.m3u8": f"#EXTM3U\n#EXT-X-TARGETDURATION:30\n#EXTINF:30.0,\n{url}\n#EXT-X-ENDLIST\n",
        "plain.m3u": f"#EXTM3U\n#EXTINF:3,secret\n{url}\n",
        "list.pls": f"[playlist]\nFile1={url}\nNumberOfEntries=1\n",
        "list.ffconcat": f"ffconcat version 1.0\nfile '{url}'\n",
        "concat.txt": f"file '{url}'\n",
        "manifest.mpd": f'<?xml version="1.0"?>\n<MPD><Period><BaseURL>{url}</BaseURL></Period></MPD>\n',
    }


def _refused(path: Path) -> UnsupportedMediaError:
    with pytest.raises(UnsupportedMediaError) as caught:
        load_audio(path)
    message = str(caught.value)
    assert "\n" not in message and "unsupported container" in message and str(path) in message
    return caught.value


def test_playlists_and_lists_never_open_what_they_name(tmp_path: Path, secret: Path, engine) -> None:
    """Each kind, under its own suffix, a misleading ``.wav`` and no suffix at all."""
    for name, text in _playlists(secret, str(secret)).items():
        for filename in (name, "upload.wav", "upload"):
            path = tmp_path / filename
            path.write_text(text)
            err = _refused(path)
            assert "send the audio file itself" in str(err)
            assert probe_duration(path) is None
    hls = tmp_path / "x.m3u8"
    hls.write_text(_playlists(secret, str(secret))["hls.m3u8"])
    assert "HLS playlist" in str(_refused(hls))
    with pytest.raises(UnsupportedMediaError):
        engine.transcribe(hls)


def test_nested_urls_make_no_connection(tmp_path: Path, secret: Path, listener) -> None:
    port, seen = listener
    for name, text in _playlists(secret, f"http://127.0.0.1:{port}/secret.flac").items():
        path = tmp_path / name
        path.write_text(text)
        _refused(path)
    assert seen == []


def test_allow_list_and_opener_hold_without_the_sniffer(
    tmp_path: Path, secret: Path, listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the first-bytes check, FFmpeg's own gates still stop lists: the demuxer allow-list, and
    (were HLS/concat allowed) the refused nested opens and the empty protocol whitelist."""
    port, seen = listener
    monkeypatch.setattr(audio, "sniff_unsupported", lambda head: None)
    relative = tmp_path / "rel.ffconcat"
    (tmp_path / "secret.flac").write_bytes(secret.read_bytes())
    relative.write_text("ffconcat version 1.0\nfile 'secret.flac'\n")
    remote = tmp_path / "remote.ffconcat"
    remote.write_text(f"ffconcat version 1.0\nfile 'http://127.0.0.1:{port}/a.flac'\n")
    for path in (relative, remote):
        assert "allow-list" in str(_refused(path))
    monkeypatch.setattr(audio, "_FORMAT_WHITELIST", audio._FORMAT_WHITELIST + ",concat,hls")
    for path in (relative, remote):
        _refused(path)
    # A name is what lets FFmpeg's HLS probe match; given one, the io_open hook is what refuses.
    monkeypatch.setattr(audio._Unnamed, "name", "upload.m3u8", raising=False)
    for url in (str(secret), f"http://127.0.0.1:{port}/a.flac"):
        hls = tmp_path / "x.m3u8"
        hls.write_text(_playlists(secret, url)["hls.m3u8"])
        assert "refers to other files or URLs" in str(_refused(hls))
    assert seen == []


def test_images_and_subtitles_are_refused(tmp_path: Path) -> None:
    import av

    png = tmp_path / "frame001.png"
    with av.open(str(png), "w", format="image2") as out:
        stream = out.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "rgb24"
        frame = av.VideoFrame.from_ndarray(np.zeros((16, 16, 3), dtype=np.uint8), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)
    disguised = tmp_path / "frame.wav"
    disguised.write_bytes(png.read_bytes())
    for path in (png, disguised):
        assert "PNG image" in str(_refused(path))
    srt = tmp_path / "talk.srt"
    srt.write_text("1\n00:00:00,000 --> 00:00:02,000\nhello\n")
    assert "SRT subtitles" in str(_refused(srt))


def _damaged(src: Path, dst: Path, seed: int = 0) -> Path:
    data = bytearray(src.read_bytes())
    at = len(data) // 3
    data[at : at + 2000] = np.random.default_rng(seed).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize(
    ("suffix", "fmt", "codec", "rate"),
    [("mp3", "mp3", "libmp3lame", SR), ("flac", "flac", "flac", SR), ("ogg", "ogg", "libopus", 48000)],
)
def test_damaged_packets_are_skipped_and_said(tmp_path: Path, speech: np.ndarray, suffix, fmt, codec, rate) -> None:
    clean = _write(tmp_path / f"clean.{suffix}", speech, fmt, codec, rate)
    clean_report = DecodeReport()
    whole = load_audio(clean, report=clean_report)
    assert clean_report.warnings == []
    report = DecodeReport()
    damaged = load_audio(_damaged(clean, tmp_path / f"bad.{suffix}"), report=report)
    assert damaged.size >= 0.8 * whole.size, (damaged.size, whole.size)
    assert len(report.warnings) == 1 and "lost" in report.warnings[0], report.warnings
    assert report.lost_s > 0 and report.first_loss_s is not None and 2.0 < report.first_loss_s < 5.0


def test_engine_carries_decode_warnings(tmp_path: Path, speech: np.ndarray, engine) -> None:
    clean = _write(tmp_path / "clean.mp3", speech, "mp3", "libmp3lame")
    transcript = engine.transcribe(_damaged(clean, tmp_path / "bad.mp3"))
    assert "country" in transcript.text.lower()
    assert len(transcript.warnings) == 1 and "damaged packets skipped" in transcript.warnings[0]


def test_truncated_and_tiny_wav_are_noticed(tmp_path: Path, speech: np.ndarray) -> None:
    full = _write(tmp_path / "full.wav", speech, "wav", "pcm_s16le").read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full[: len(full) // 3])
    report = DecodeReport()
    load_audio(cut, report=report)
    assert report.warnings == ["truncated: container says 11.0 s, decoded 3.7 s"]
    tiny = tmp_path / "tiny.wav"
    tiny.write_bytes(full[:100])
    report = DecodeReport()
    load_audio(tiny, report=report)
    assert any(w.startswith("truncated: container says 11.0 s") for w in report.warnings)
    assert any("too short to hold speech" in w for w in report.warnings)


def test_random_bytes_and_video_without_audio(tmp_path: Path) -> None:

    noise = tmp_path / "noise.mp3"
    noise.write_bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match=r"noise\.mp3: cannot decode audio: not an audio or video file") as caught:
        load_audio(noise)
    assert "tuple index" not in str(caught.value)
    video = video_without_audio(tmp_path / "silent.mp4", frames=5)
    with pytest.raises(AudioError, match=r"silent\.mp4: has no audio stream"):
        load_audio(video)


def test_phase_inverted_stereo_is_not_silence(tmp_path: Path, speech: np.ndarray) -> None:
    clip = speech[: 4 * SR]
    inverted = _write(tmp_path / "inverted.wav", np.stack([clip, -clip]), "wav", "pcm_s16le")
    report = DecodeReport()
    mono = load_audio(inverted, report=report)
    rms = float(np.sqrt((clip**2).mean()))
    assert float(np.sqrt((mono**2).mean())) > 0.9 * rms
    assert any("phase-inverted" in w for w in report.warnings)
    apart = load_audio(inverted, mono=False)
    assert apart.shape == (2, clip.size)
    assert np.allclose(apart[0], -apart[1], atol=1e-3)
    blocks = list(stream_audio(inverted, block_s=1.0, mono=False))
    assert all(b.ndim == 2 and b.shape[0] == 2 for b in blocks)
    # One speaker per channel (a call-centre recording) mixes normally and says nothing.
    split = _write(tmp_path / "split.wav", np.stack([clip, np.zeros_like(clip)]), "wav", "pcm_s16le")
    report = DecodeReport()
    assert np.allclose(load_audio(split, report=report), clip / 2, atol=1e-3)
    assert report.warnings == []


def test_streaming_stays_bounded_by_a_block(jfk: Path) -> None:
    sizes = [b.size for b in stream_audio(jfk, block_s=2.0)]
    assert len(sizes) >= 5 and max(sizes) <= 2.2 * SR


# Extensions whose container this PyAV can also write, so each is proven to decode here.
_WRITABLE = [
    (".mpga", "mp3", "libmp3lame", SR),
    (".mp2", "mp2", "mp2", SR),
    (".mka", "matroska", "libopus", 48000),
    (".weba", "webm", "libopus", 48000),
    (".ogv", "ogg", "libopus", 48000),
    (".ts", "mpegts", "mp2", 48000),
    (".mts", "mpegts", "aac", SR),
    (".m2ts", "mpegts", "ac3", 48000),
    (".mpeg", "mpeg", "mp2", 48000),
    (".mpg", "mpeg", "mp2", 48000),
    (".amr", "amr", "libopencore_amrnb", 8000),
    (".au", "au", "pcm_s16be", SR),
    (".caf", "caf", "pcm_s16le", SR),
    (".wv", "wv", "wavpack", SR),
    (".w64", "w64", "pcm_s16le", SR),
    (".flv", "flv", "libmp3lame", 22050),
    (".m4b", "ipod", "aac", SR),
    (".3g2", "3g2", "aac", SR),
    (".aifc", "aiff", "pcm_s16be", SR),
    (".tta", "tta", "tta", SR),
    (".eac3", "eac3", "eac3", 48000),
    (".rm", "rm", "ac3", 48000),
    (".voc", "voc", "pcm_u8", SR),
]


def test_listed_extensions_decode(tmp_path: Path, speech: np.ndarray) -> None:
    clip = speech[: 2 * SR]
    for suffix, fmt, codec, rate in _WRITABLE:
        assert suffix in audio.MEDIA_EXTENSIONS
        path = _write(tmp_path / f"clip{suffix}", clip, fmt, codec, rate)
        samples = load_audio(path)
        assert abs(samples.size / SR - 2.0) < 0.15, (suffix, samples.size)
