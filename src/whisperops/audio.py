"""Decode media into 16 kHz float32 safely: only the bytes given, in real containers, losses said.

Every open goes through :func:`_open`: FFmpeg reads from a Python file object that carries no
name (so neither a path nor a client's suffix can steer the probe), only demuxers on
:data:`ALLOWED_FORMATS` may read a header (libavformat's ``format_whitelist`` is checked between
probing and ``read_header``), and any nested open a demuxer attempts is refused by PyAV's
``io_open`` hook. That is what stops HLS playlists, ffconcat lists, image sequences and the like
from reading other files or URLs.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from whisperops.errors import AudioError, UnsupportedMediaError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000

MEDIA_EXTENSIONS = frozenset(
    [
        ".wav",
        ".w64",
        ".flac",
        ".mp3",
        ".mp2",
        ".mpga",
        ".ogg",
        ".oga",
        ".ogv",
        ".opus",
        ".m4a",
        ".m4b",
        ".aac",
        ".wma",
        ".wmv",
        ".asf",
        ".aiff",
        ".aif",
        ".aifc",
        ".mp4",
        ".m4v",
        ".mkv",
        ".mka",
        ".mov",
        ".webm",
        ".weba",
        ".avi",
        ".3gp",
        ".3g2",
        ".ts",
        ".mts",
        ".m2ts",
        ".mpeg",
        ".mpg",
        ".amr",
        ".au",
        ".snd",
        ".caf",
        ".wv",
        ".ape",
        ".tta",
        ".ac3",
        ".eac3",
        ".dts",
        ".flv",
        ".rm",
        ".voc",
        ".mxf",
    ]
)

# FFmpeg demuxer name -> what users call it. A demuxer that is not here never reads a header.
ALLOWED_FORMATS: dict[str, str] = {
    "wav": "WAV",
    "w64": "Sony Wave64",
    "flac": "FLAC",
    "mp3": "MPEG audio (mp3/mp2)",
    "ogg": "Ogg (Vorbis/Opus/FLAC)",
    "matroska": "Matroska / WebM",
    "webm": "WebM",
    "mov": "MP4 / MOV / M4A / 3GP",
    "aac": "ADTS AAC",
    "loas": "LATM AAC",
    "asf": "ASF (WMA/WMV)",
    "xwma": "xWMA",
    "aiff": "AIFF",
    "avi": "AVI",
    "mpegts": "MPEG transport stream",
    "mpeg": "MPEG program stream",
    "amr": "AMR",
    "amrnb": "AMR-NB",
    "amrwb": "AMR-WB",
    "au": "Sun AU",
    "caf": "Apple CAF",
    "wv": "WavPack",
    "ape": "Monkey's Audio",
    "tta": "True Audio",
    "ac3": "AC-3",
    "eac3": "E-AC-3",
    "dts": "DTS",
    "truehd": "TrueHD",
    "flv": "FLV",
    "rm": "RealMedia",
    "voc": "Creative Voice",
    "mpc": "Musepack",
    "mpc8": "Musepack SV8",
    "oma": "Sony OpenMG",
    "qcp": "QCP",
    "sox": "SoX native",
    "ircam": "IRCAM",
    "dsf": "DSD",
    "nut": "NUT",
    "mxf": "MXF",
}
_FORMAT_WHITELIST = ",".join(ALLOWED_FORMATS)
# The io_open hook catches demuxers that open through their context (HLS); nested demuxers that
# open their own (concat) use FFmpeg's default opener, which the protocol whitelist (no protocol at
# all: the input itself is our file object) refuses. "enable_drefs" keeps MOV external references off.
_OPEN_OPTIONS = {"protocol_whitelist": "none", "enable_drefs": "0"}

# (pattern on the first bytes, what it is): named so the refusal says what was sent.
_NOT_MEDIA: tuple[tuple[re.Pattern[bytes], str], ...] = tuple(
    (re.compile(p, re.IGNORECASE | re.DOTALL), name)
    for p, name in [
        (rb"^\s*#EXTM3U.*#EXT-X-", "HLS playlist"),
        (rb"^\s*#EXT(M3U|INF)", "M3U playlist"),
        (rb"^\s*\[playlist\]", "PLS playlist"),
        (rb"^\s*ffconcat\s+version", "ffconcat list"),
        (rb"^\s*(#[^\n]*\n\s*)*file\s+['\"]?\S", "concat list"),
        (rb"^\s*(<\?xml[^>]*>\s*)?(<!--.*?-->\s*)*<MPD\b", "DASH manifest"),
        (rb"^\s*(<\?xml[^>]*>\s*)?<(asx|smil|playlist)\b", "XML playlist"),
        (rb"^\s*WEBVTT", "WebVTT subtitles"),
        (rb"^\s*\[Script Info\]", "ASS subtitles"),
        (rb"^\s*\d+\s*\r?\n\d\d:\d\d:\d\d[,.]\d+\s+-->", "SRT subtitles"),
        (rb"^\x89PNG\r\n", "PNG image"),
        (rb"^\xff\xd8\xff", "JPEG image"),
        (rb"^GIF8[79]a", "GIF image"),
        (rb"^RIFF....WEBP", "WebP image"),
        (rb"^BM.{12}[\x0c\x28\x38\x40\x6c\x7c]\x00\x00\x00", "BMP image"),
        (rb"^(II\*\x00|MM\x00\*)", "TIFF image"),
        (rb"^%PDF-", "PDF document"),
        (rb"^\s*<(!doctype html|html)\b", "HTML page"),
    ]
)

# Stereo whose mix keeps less than this share of the louder channel's energy cancelled out.
_CANCEL_RATIO = 0.01
_CANCEL_WINDOW_S = 0.5
_MIN_AUDIO_S = 0.1
_MAX_DEMUX_ERRORS = 100
_GAP_TOLERANCE_S = 0.01
_GAP_REPORT_S = 0.02
# Containers whose header stores the length (not estimated from bitrate): a shortfall means truncation.
_STORED_DURATION = frozenset({"wav", "w64", "flac", "mov", "matroska", "aiff", "caf", "asf", "au", "wv", "ape", "tta"})


class _NestedOpenRefused(Exception):
    """Raised from the ``io_open`` hook: a demuxer tried to open something besides the input."""


@dataclass
class DecodeReport:
    """What decoding one input lost or noticed; ``warnings`` are one-line, human-readable."""

    container: str = ""
    skipped_packets: int = 0
    lost_s: float = 0.0
    claimed_s: float | None = None
    decoded_s: float = 0.0
    channels: int = 0
    cancelled_s: float = 0.0
    first_loss_s: float | None = None
    warnings: list[str] = field(default_factory=list)


def is_media_path(path: Path) -> bool:
    return path.suffix.lower() in MEDIA_EXTENSIONS


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise AudioError(f"{path}: is a directory; pass the folder as a source to transcribe its media")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes); re-download or re-export it")


def load_audio(
    path: str | Path, sampling_rate: int = SAMPLE_RATE, *, mono: bool = True, report: DecodeReport | None = None
) -> np.ndarray:
    """Decode ``path`` to float32 at ``sampling_rate``; raise :class:`AudioError` in one line.

    Mono gives shape ``(n,)``; ``mono=False`` gives ``(channels, n)`` with at most 2 channels.
    """
    path = Path(path)
    _check_file(path)
    blocks = list(stream_audio(path, sampling_rate=sampling_rate, mono=mono, report=report))
    audio = np.concatenate(blocks, axis=-1) if blocks else np.empty(0, dtype=np.float32)
    if audio.size == 0:
        raise AudioError(f"{path}: contains no audio samples (zero-length clip)")
    return audio


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Content hash, so a renamed or re-downloaded file still hits the transcript cache."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class _Unnamed:
    """A read-only view of an open file with no ``name``: PyAV passes a file object's name to
    FFmpeg as the URL, whose suffix would then steer probing and anchor relative nested paths."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f

    def read(self, n: int = -1) -> bytes:
        return self._f.read(n)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def seekable(self) -> bool:
        return True


def _refuse_nested_open(url: str, flags: int, options: dict[str, Any]) -> IO[bytes]:
    raise _NestedOpenRefused(url)


def sniff_unsupported(head: bytes) -> str | None:
    """Name the non-media text or image these first bytes begin (a playlist, list, subtitles...)."""
    head = head.removeprefix(b"\xef\xbb\xbf")
    for pattern, name in _NOT_MEDIA:
        if pattern.search(head):
            return name
    return None


def _unsupported(path: Path, what: str) -> UnsupportedMediaError:
    return UnsupportedMediaError(f"{path}: unsupported container: {what}; send the audio file itself")


# Enough to read a container's header: FFmpeg's default probe decodes up to 5 MB to learn the
# streams, which makes a duration probe of a WAV or FLAC file an order of magnitude slower.
_HEADER_PROBE = {"probesize": "32768", "analyzeduration": "0"}


@contextmanager
def _open(path: str | Path, options: dict[str, str] | None = None) -> Iterator[Any]:
    """Open ``path`` for demuxing under the rules in the module docstring; errors are one line.

    ``options`` are FFmpeg format options added to the safe ones (which they cannot replace).
    """
    import av

    path = Path(path)
    with path.open("rb") as f:
        what = sniff_unsupported(f.read(4096))
        if what is not None:
            raise _unsupported(path, what)
        f.seek(0)
        try:
            container = av.open(
                _Unnamed(f),
                metadata_errors="ignore",
                options=(options or {}) | _OPEN_OPTIONS | {"format_whitelist": _FORMAT_WHITELIST},
                io_open=_refuse_nested_open,
            )
        except (_NestedOpenRefused, av.error.PermissionError) as err:
            # EPERM: a list demuxer's own safety check refused a path or URL written inside it.
            raise _unsupported(path, "it refers to other files or URLs") from err
        except av.error.ArgumentError as err:
            # format_whitelist refuses with EINVAL after probing, before the demuxer reads anything.
            raise _unsupported(
                path, "a format outside the audio/video allow-list (wav, flac, mp3, ogg, mp4/m4a, webm/mkv, ...)"
            ) from err
        except (av.error.InvalidDataError, av.error.EOFError) as err:
            why = "no container FFmpeg reads; damaged or not media"
            raise AudioError(f"{path}: cannot decode audio: not an audio or video file ({why})") from err
        except av.error.FFmpegError as err:
            reason = err.strerror or str(err)
            raise AudioError(f"{path}: cannot decode audio ({reason}); is it a real audio or video file?") from err
        with container:
            try:
                yield container
            except _NestedOpenRefused as err:
                raise _unsupported(path, "it refers to other files or URLs") from err


def _claimed_duration(container: Any, stream: Any) -> float | None:
    import av

    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _wav_header_seconds(path: Path) -> float | None:
    """What a RIFF/WAVE header says the data lasts: FFmpeg trims its own figure to the file's
    size, which hides a truncated file. None for streaming writers' placeholder sizes."""
    import struct

    with path.open("rb") as f:
        head = f.read(1 << 16)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    pos, byte_rate = 12, 0
    while pos + 8 <= len(head):
        chunk, size = head[pos : pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
        if chunk == b"fmt " and pos + 16 <= len(head):
            byte_rate = struct.unpack_from("<I", head, pos + 16)[0]
        elif chunk == b"data":
            if not byte_rate or size in (0, 0xFFFFFFFF):
                return None
            return size / byte_rate
        pos += 8 + size + (size & 1)
    return None


def probe_duration(path: str | Path) -> float | None:
    """Container duration in seconds without decoding (None when the container does not say).

    The header is read first; only a container whose header does not say gets FFmpeg's full probe.
    """
    for options in (_HEADER_PROBE, None):
        try:
            with _open(path, options) as container:
                stream = next(iter(container.streams.audio), None)
                duration = _claimed_duration(container, stream) if stream is not None else None
        except (AudioError, OSError):
            duration = None
        if duration is not None:
            return duration
    return None


def _packets(container: Any, stream: Any, report: DecodeReport) -> Iterator[Any]:
    """Demux ``stream``, stepping over read errors: a damaged stretch must not end the file."""
    import av

    errors = 0
    while True:
        try:
            for packet in container.demux(stream):
                errors = 0
                yield packet
            return
        except av.error.EOFError:
            return
        except av.error.FFmpegError as err:
            errors += 1
            report.skipped_packets += 1
            log.debug("demux error after %d packets: %s", report.skipped_packets, err)
            if errors >= _MAX_DEMUX_ERRORS:
                report.warnings.append(f"gave up after {errors} consecutive unreadable packets")
                return


def _uncancel(mixed: np.ndarray, stereo: np.ndarray, sampling_rate: int, report: DecodeReport) -> None:
    """Where the stereo channels cancel in ``mixed`` (one phase-inverted), put the louder channel
    back in its place, so the speech is not averaged away to silence."""
    hop = max(1, int(_CANCEL_WINDOW_S * sampling_rate))
    for start in range(0, min(mixed.size, stereo.shape[1]), hop):
        piece = stereo[:, start : start + hop]
        energy = (piece**2).mean(axis=1)
        louder = int(np.argmax(energy))
        window = mixed[start : start + piece.shape[1]]
        if energy[louder] > 1e-7 and float((window**2).mean()) < _CANCEL_RATIO * energy[louder]:
            window[:] = piece[louder, : window.size]
            report.cancelled_s += window.size / sampling_rate


def _packet_seconds(packet: Any, fallback: float) -> float:
    if packet.duration and packet.time_base is not None:
        return float(packet.duration * packet.time_base)
    return fallback


def stream_audio(
    path: str | Path,
    block_s: float = 30.0,
    sampling_rate: int = SAMPLE_RATE,
    *,
    mono: bool = True,
    report: DecodeReport | None = None,
) -> Iterator[np.ndarray]:
    """Decode ``path`` incrementally into float32 blocks of about ``block_s`` seconds.

    Blocks are ``(n,)`` when ``mono``, else ``(channels, n)`` with at most 2 channels. Memory stays
    bounded by a block, where :func:`load_audio` holds the whole file: what makes hour-long
    recordings affordable. Damaged packets are skipped and decoding goes on; ``report`` (filled
    as decoding proceeds, complete once the iterator is exhausted) says what was lost.
    """
    import av

    path = Path(path)
    _check_file(path)
    report = report if report is not None else DecodeReport()
    block = int(block_s * sampling_rate)
    pending: list[np.ndarray] = []
    watched: list[np.ndarray] = []
    size = total = 0
    with _open(path) as container:
        report.container = container.format.name
        stream = next(iter(container.streams.audio), None)
        if stream is None:
            kinds = {s.type for s in container.streams}
            if not kinds - {"data", "attachment"}:
                raise AudioError(f"{path}: cannot decode audio: not an audio or video file (no media streams in it)")
            raise AudioError(f"{path}: has no audio stream (only {', '.join(sorted(kinds))}); nothing to transcribe")
        report.claimed_s = _claimed_duration(container, stream)
        if report.container == "wav":
            report.claimed_s = _wav_header_seconds(path) or report.claimed_s
        channels = 1 if (stream.channels or 1) == 1 else 2
        report.channels = channels
        if mono:
            # FFmpeg's own downmix, as ever; a stereo copy alongside only to spot channels that cancel.
            resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=sampling_rate)
            watcher = (
                av.audio.resampler.AudioResampler(format="fltp", layout="stereo", rate=sampling_rate)
                if channels == 2
                else None
            )
        else:
            layout = "mono" if channels == 1 else "stereo"
            resampler = av.audio.resampler.AudioResampler(format="fltp", layout=layout, rate=sampling_rate)
            watcher = None
        codec = stream.codec_context
        frame_s, next_t, packet_lost, gap_lost = 0.0, None, 0.0, 0.0
        for packet in _packets(container, stream, report):
            try:
                frames = codec.decode(packet)
            except av.error.FFmpegError as err:
                report.skipped_packets += 1
                packet_lost += _packet_seconds(packet, frame_s)
                log.debug("%s: skipped a damaged packet: %s", path, err)
                continue
            for frame in frames:
                if frame.sample_rate:
                    frame_s = frame.samples / frame.sample_rate
                # Damage a parser resyncs past silently still shows as a jump in timestamps.
                if frame.pts is not None and frame.time_base is not None:
                    t = float(frame.pts * frame.time_base)
                    if next_t is not None and t - next_t > max(_GAP_TOLERANCE_S, frame_s / 2):
                        gap_lost += t - next_t
                        if report.first_loss_s is None:
                            report.first_loss_s = next_t
                    next_t = t + frame_s
                # The resampler would otherwise try to fill those gaps itself.
                frame.pts = None
                if watcher is not None:
                    watched.extend(out.to_ndarray() for out in watcher.resample(frame))
                for out in resampler.resample(frame):
                    pending.append(_pcm(out, mono))
                    size += out.samples
                    if size >= block:
                        total += size
                        yield _joined(pending, watched, sampling_rate, report)
                        pending, size = [], 0
        if watcher is not None:
            watched.extend(out.to_ndarray() for out in watcher.resample(None))
        for out in resampler.resample(None):
            pending.append(_pcm(out, mono))
            size += out.samples
        report.lost_s = max(packet_lost, gap_lost)
    total += size
    report.decoded_s = total / sampling_rate
    last = _joined(pending, watched, sampling_rate, report) if pending else None
    _conclude(path, report)
    if last is not None:
        yield last


def _pcm(frame: Any, mono: bool) -> np.ndarray:
    if mono:
        return frame.to_ndarray().reshape(-1).astype(np.float32) / 32768.0
    return frame.to_ndarray().astype(np.float32, copy=False)


def _joined(
    pending: list[np.ndarray], watched: list[np.ndarray], sampling_rate: int, report: DecodeReport
) -> np.ndarray:
    """One output block; ``watched`` (the stereo copy) is consumed up to the block's length."""
    pcm = np.concatenate(pending, axis=-1)
    if watched:
        stereo = np.concatenate(watched, axis=-1)
        watched[:] = [stereo[:, pcm.size :]] if stereo.shape[1] > pcm.size else []
        _uncancel(pcm, stereo[:, : pcm.size], sampling_rate, report)
    return pcm


def _conclude(path: Path, report: DecodeReport) -> None:
    """Turn what decoding counted into the report's warnings, and log them."""
    if report.decoded_s == 0 and report.skipped_packets:
        raise AudioError(f"{path}: cannot decode audio: not an audio or video file (every packet failed to decode)")
    shortfall = (report.claimed_s or 0.0) - report.decoded_s
    stored = bool(set(report.container.split(",")) & _STORED_DURATION)
    if report.skipped_packets > 0 or report.lost_s >= _GAP_REPORT_S:
        # Parsers that resync renumber what follows, hiding the gap; the container's total does not.
        if shortfall > 0:
            report.lost_s = shortfall if stored else max(report.lost_s, shortfall)
        where = f" from {report.first_loss_s:.1f} s" if report.first_loss_s is not None else ""
        lost = f"~{report.lost_s:.2f} s of audio lost{where}"
        if report.skipped_packets:
            report.warnings.append(f"{report.skipped_packets} damaged packets skipped ({lost})")
        else:
            report.warnings.append(f"damaged data skipped ({lost})")
    elif report.claimed_s is not None and stored and shortfall > max(0.5, 0.02 * report.claimed_s):
        report.warnings.append(f"truncated: container says {report.claimed_s:.1f} s, decoded {report.decoded_s:.1f} s")
    if 0 < report.decoded_s < _MIN_AUDIO_S:
        report.warnings.append(f"only {report.decoded_s:.3f} s of audio in it; too short to hold speech")
    if report.cancelled_s >= 1.0:
        report.warnings.append(
            f"stereo channels cancel when mixed for {report.cancelled_s:.0f} s (one is phase-inverted); kept the louder"
        )
    for warning in report.warnings:
        log.warning("%s: %s", path, warning)


def quiet_windows(
    blocks: Iterable[np.ndarray], window_s: float, search_s: float = 20.0, sampling_rate: int = SAMPLE_RATE
) -> Iterator[tuple[int, np.ndarray]]:
    """Regroup blocks into ``(start_sample, window)`` pieces of at most ``window_s`` seconds.

    Each cut is placed at the quietest 100 ms in the window's last ``search_s`` seconds, so a cut
    rarely falls inside a word. Blocks are copied into a window only when it is yielded, and freed
    as they are copied, so memory holds one window and about one block (the caller should drop a
    window before asking for the next).
    """
    window, search, hop = int(window_s * sampling_rate), int(search_s * sampling_rate), sampling_rate // 10
    pending: deque[np.ndarray] = deque()
    size = start = 0
    for block in blocks:
        if not block.size:
            continue
        pending.append(np.asarray(block, dtype=np.float32))
        size += block.size
        while size > window:
            region = _peek(pending, max(0, window - search), window)
            frames = region[: region.size // hop * hop].reshape(-1, hop)
            quietest = int(np.argmin(np.sqrt((frames**2).mean(axis=1)))) if frames.size else 0
            cut = max(0, window - search) + quietest * hop + hop // 2
            yield start, _take(pending, cut)
            start, size = start + cut, size - cut
    if size:
        yield start, _take(pending, size)


def _peek(pending: deque[np.ndarray], a: int, b: int) -> np.ndarray:
    """A copy of samples ``a:b`` of the queued blocks, which stay queued."""
    parts, at = [], 0
    for block in pending:
        lo, hi = max(a - at, 0), min(b - at, block.size)
        if lo < hi:
            parts.append(block[lo:hi])
        at += block.size
        if at >= b:
            break
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.float32)


def _take(pending: deque[np.ndarray], n: int) -> np.ndarray:
    """The first ``n`` queued samples as one array; blocks leave the queue as they are copied."""
    out = np.empty(n, dtype=np.float32)
    at = 0
    while at < n:
        block = pending.popleft()
        k = min(block.size, n - at)
        out[at : at + k] = block[:k]
        if k < block.size:
            pending.appendleft(block[k:])
        at += k
    return out
