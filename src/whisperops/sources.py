"""Turn what the user names (files, folders, list files, URLs, playlists) into media items.

Resolution is cheap and happens up front; downloading (:func:`fetch`) happens later, once, where
the item is transcribed. A source that cannot be resolved becomes an item carrying its error, so
one bad entry is reported with the batch instead of sinking it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from whisperops.audio import MEDIA_EXTENSIONS, is_media_path
from whisperops.errors import SourceError
from whisperops.paths import atomic_write_text, cache_dir

log = logging.getLogger(__name__)

LIST_SUFFIXES = (".txt", ".list")
METADATA_KEYS = ("title", "uploader", "duration", "id", "webpage_url", "playlist", "playlist_index")


@dataclass
class MediaItem:
    """One thing to transcribe: a local file, or a URL fetched on demand."""

    source: str  # as the user (or the list / playlist) gave it
    # Output name, unique within a batch (case-folded); may hold "/" to mirror a folder source's layout.
    name: str
    path: Path | None = None
    url: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def key(self) -> str:
        return self.url or str(self.path or self.source)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "url": self.url,
            "metadata": self.metadata,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MediaItem:
        return cls(
            data["source"],
            data["name"],
            Path(data["path"]) if data.get("path") else None,
            data.get("url"),
            dict(data.get("metadata") or {}),
            data.get("error"),
        )


def is_url(source: str) -> bool:
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source) is not None


# Room left in a 255-byte file name for a collision suffix ("-" + 6 hex) and the longest extension (".json").
MAX_NAME_BYTES = 255 - 7 - len(".json")


def _safe_name(text: str, fallback: str = "item") -> str:
    """A file-name-safe stem of at most :data:`MAX_NAME_BYTES` UTF-8 bytes (cut on a character boundary)."""
    name = re.sub(r"[^\w.-]+", "_", text, flags=re.UNICODE).strip("._")
    name = name.encode("utf-8")[:MAX_NAME_BYTES].decode("utf-8", errors="ignore").rstrip("._")
    return name or fallback


def _mirrored_name(relative: Path) -> str:
    """``sub/talk.wav`` under a folder source -> ``sub/talk``: outputs mirror the folder's layout."""
    parts = [_safe_name(part) for part in relative.parent.parts]
    return "/".join([*parts, _safe_name(relative.stem)])


def _is_hidden(relative: Path) -> bool:
    """Dot files and folders (macOS ``._x`` AppleDouble companions among them) and zip's ``__MACOSX``."""
    return any(part.startswith(".") or part == "__MACOSX" for part in relative.parts)


def _claim(name: str, key: str, taken: set[str]) -> str:
    """``name``, or if another item has it, ``name-HASH`` where HASH comes from this item's source.

    The hash (not a counter) keeps a name stable when items are added or reordered, and never lands
    on a name a later item has on its own (a counter gave ``x-2`` to one item while ``x-2.wav`` had it).
    Names are compared case-folded: on macOS and Windows ``X.txt`` and ``x.txt`` are one file.
    """
    candidate, digest = name, hashlib.sha256(key.encode()).hexdigest()
    for width in (6, 12, 64):
        if candidate.casefold() not in taken:
            break
        candidate = f"{name}-{digest[:width]}"
    n = 2
    while candidate.casefold() in taken:  # only if two items share a source key: keep both anyway
        candidate, n = f"{name}-{digest[:6]}-{n}", n + 1
    taken.add(candidate.casefold())
    return candidate


def resolve(sources: Iterable[str | Path]) -> list[MediaItem]:
    """Expand sources into unique items (duplicates dropped, output names made unique)."""
    items: list[MediaItem] = []
    for src in sources:
        items.extend(_resolve_one(str(src), depth=0))
    seen: set[str] = set()
    unique: list[MediaItem] = []
    for item in items:
        if item.error is None and item.key in seen:
            continue
        seen.add(item.key)
        unique.append(item)
    # Each base name goes first to its first holder in input order; later holders get a suffix.
    taken: set[str] = set()
    for item in unique:
        item.name = _claim(item.name, item.key, taken)
    return unique


def _resolve_one(source: str, depth: int) -> list[MediaItem]:
    if is_url(source):
        scheme = urlparse(source).scheme.lower()
        if scheme == "file":
            return _resolve_one(_file_url_path(source), depth)
        if scheme not in ("http", "https"):
            return [
                MediaItem(
                    source,
                    _safe_name(source),
                    error=(f"{source}: {scheme}:// URLs are not supported; only http and https (download it first)"),
                )
            ]
        if is_media_path(Path(urlparse(source).path)):
            # A direct media link needs no probing: the download (later, once) will tell if it is bad.
            name = _url_name(source)
            return [MediaItem(source, name, url=source, metadata={"title": name, "url": source})]
        return _expand_url(source)
    path = Path(source).expanduser()
    try:
        return _resolve_path(source, path, depth)
    except OSError as err:  # a name too long for the file system, a folder we may not list, ...
        reason = err.strerror or str(err)
        return [MediaItem(source, _safe_name(path.stem), error=f"{source}: cannot read it ({reason})")]


def _resolve_path(source: str, path: Path, depth: int) -> list[MediaItem]:
    if not path.exists():
        return [MediaItem(source, _safe_name(path.stem), error=f"{source}: no such file or directory")]
    if path.is_dir():
        media = sorted(
            p for p in path.rglob("*") if p.is_file() and is_media_path(p) and not _is_hidden(p.relative_to(path))
        )
        if not media:
            exts = " ".join(sorted(MEDIA_EXTENSIONS)[:8])
            return [
                MediaItem(
                    source,
                    _safe_name(path.name),
                    error=(f"{source}: directory has no media files (looked for {exts} ...)"),
                )
            ]
        return [MediaItem(str(p), _mirrored_name(p.relative_to(path)), path=p.resolve()) for p in media]
    if path.suffix.lower() in LIST_SUFFIXES:
        if depth > 3:
            return [MediaItem(source, _safe_name(path.stem), error=f"{source}: list files nest too deep")]
        return _expand_list(path, depth)
    return [MediaItem(source, _safe_name(path.stem), path=path.resolve())]


def _expand_list(path: Path, depth: int) -> list[MediaItem]:
    """One path or URL per line; relative paths are relative to the list.

    ``#`` starts a comment at the start of a line or after whitespace, so ``take#1.wav`` and a URL's
    ``#fragment`` stay whole while ``https://host/a.mp3  # note`` loses its note.
    """
    items: list[MediaItem] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        return [
            MediaItem(
                str(path),
                _safe_name(path.stem),
                error=(f"{path}: not a text list of paths/URLs (is it a media file with a .txt name?)"),
            )
        ]
    for line in lines:
        entry = _COMMENT.split(line, maxsplit=1)[0].strip()
        if not entry:
            continue
        if not is_url(entry) and not Path(entry).expanduser().is_absolute():
            entry = str(path.parent / entry)
        items.extend(_resolve_one(entry, depth + 1))
    if not items:
        return [MediaItem(str(path), _safe_name(path.stem), error=f"{path}: list file names no sources")]
    return items


_COMMENT = re.compile(r"(?:^|\s)#")


def _file_url_path(url: str) -> str:
    """``file:///x/a%20b.wav`` -> ``/x/a b.wav``: a local file named by URL is read as that file."""
    from urllib.request import url2pathname

    parsed = urlparse(url)
    host = "" if parsed.netloc in ("", "localhost") else f"//{parsed.netloc}"
    return host + url2pathname(unquote(parsed.path))


def _ydl(extra: dict[str, Any] | None = None):
    import yt_dlp

    opts: dict[str, Any] = {
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "socket_timeout": 20,
        "retries": 2,
        "noplaylist": False,
        "logger": _YdlLogger(),
    }
    opts.update(extra or {})
    return yt_dlp.YoutubeDL(opts)


class _YdlLogger:
    """Route yt-dlp's chatter to logging instead of stdout."""

    def debug(self, msg: str) -> None:
        log.debug(msg)

    def info(self, msg: str) -> None:
        log.debug(msg)

    def warning(self, msg: str) -> None:
        log.debug(msg)

    def error(self, msg: str) -> None:
        log.debug(msg)


def _ydl_reason(err: Exception) -> str:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    msg = re.sub(r"\x1b\[[0-9;]*m", "", msg)
    msg = re.sub(r"^ERROR:\s*(\[[\w:]+\]\s*[^:]*:\s*)?", "", msg)  # "ERROR: [generic] id: "
    msg = re.sub(r"\s*\(caused by .*$", "", msg)
    return msg[:160]


def _metadata(info: dict[str, Any]) -> dict[str, Any]:
    meta = {k: info.get(k) for k in METADATA_KEYS if info.get(k) is not None}
    if "webpage_url" in meta:
        meta["url"] = meta.pop("webpage_url")
    return meta


def _url_name(url: str, info: dict[str, Any] | None = None) -> str:
    if info and info.get("title"):
        return _safe_name(str(info["title"]))
    stem = Path(unquote(urlparse(url).path)).stem
    return _safe_name(stem or urlparse(url).netloc)


def _expand_url(url: str) -> list[MediaItem]:
    """Ask yt-dlp what the URL is (no download): a playlist expands to its entries."""
    import yt_dlp

    try:
        with _ydl({"extract_flat": "in_playlist"}) as ydl:
            info = ydl.extract_info(url, download=False)
    except (yt_dlp.utils.DownloadError, yt_dlp.utils.ExtractorError) as err:
        return [
            MediaItem(
                url,
                _url_name(url),
                url=url,
                error=f"{url}: cannot read URL ({_ydl_reason(err)}); check the address and network",
            )
        ]
    if info.get("_type") == "playlist":
        items = []
        for i, entry in enumerate(info.get("entries") or [], start=1):
            entry_url = entry.get("url") or entry.get("webpage_url")
            if not entry_url:
                continue
            meta = _metadata(entry) | {"playlist": info.get("title"), "playlist_index": i}
            meta.setdefault("url", entry_url)
            items.append(MediaItem(url, _url_name(entry_url, entry), url=entry_url, metadata=meta))
        if not items:
            return [MediaItem(url, _url_name(url, info), url=url, error=f"{url}: playlist has no entries")]
        return items
    meta = _metadata(info)
    meta.setdefault("url", url)
    return [MediaItem(url, _url_name(url, info), url=url, metadata=meta)]


def download_dir(url: str) -> Path:
    return cache_dir() / "downloads" / hashlib.sha256(url.encode()).hexdigest()[:20]


def _cached_download(url: str) -> tuple[Path, dict[str, Any]] | None:
    """``(media path, metadata)`` of an earlier download of ``url``, if it finished and is still there."""
    done = download_dir(url) / "info.json"
    try:
        info = json.loads(done.read_text())
        path = Path(info["filepath"])
    except (OSError, ValueError, KeyError):
        return None
    return (path, info.get("metadata", {})) if path.exists() else None


def local_media(item: MediaItem) -> Path | None:
    """``item``'s media if it is already on disk (a local file, or a URL fetched before); never downloads."""
    if item.error:
        return None
    if item.path is not None:
        return item.path
    cached = _cached_download(item.url) if item.url else None
    return cached[0] if cached else None


def fetch(item: MediaItem) -> Path:
    """Local path of ``item``'s media, downloading URLs once (cached by URL)."""
    if item.error:
        raise SourceError(item.error)
    if item.path is not None:
        return item.path
    assert item.url is not None
    cached = _cached_download(item.url)
    if cached is not None:
        item.path, item.metadata = cached[0], cached[1] | item.metadata
        return item.path
    folder = download_dir(item.url)
    done = folder / "info.json"
    import yt_dlp

    folder.mkdir(parents=True, exist_ok=True)
    try:
        # No ffmpeg post-processing: PyAV decodes whatever container arrives.
        with _ydl({"format": "bestaudio/best", "outtmpl": str(folder / "media.%(ext)s")}) as ydl:
            info = ydl.extract_info(item.url, download=True)
    except (yt_dlp.utils.DownloadError, yt_dlp.utils.ExtractorError) as err:
        raise SourceError(f"{item.url}: download failed ({_ydl_reason(err)}); check the URL and network") from err
    if info.get("_type") == "playlist":
        raise SourceError(f"{item.url}: is a playlist; pass it as a source so it expands into its videos")
    requested = info.get("requested_downloads") or [{}]
    path = Path(requested[0].get("filepath") or ydl.prepare_filename(info))
    if not path.exists():
        raise SourceError(f"{item.url}: download finished but no media file appeared in {folder}")
    meta = _metadata(info)
    item.path, item.metadata = path, meta | item.metadata
    atomic_write_text(done, json.dumps({"url": item.url, "filepath": str(path), "metadata": meta}))
    return path
