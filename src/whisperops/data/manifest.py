"""Evaluation and training datasets: audio files with reference transcripts, validated before use.

Three layouts load into the same list of :class:`Utterance` rows:

* **JSONL manifest** (``*.jsonl``): one JSON object a line with ``audio`` (a path relative to the
  manifest, or absolute), ``text`` and optionally ``language``, ``id`` and ``duration_s``. NeMo's
  ``audio_filepath`` and audiofolder's ``file_name`` / ``transcription`` are accepted as aliases.
* **CSV** (``*.csv``, Hugging Face audiofolder ``metadata.csv``): a header with ``file_name`` and
  ``transcription`` (or ``text``), optionally ``language``; paths relative to the CSV.
* **a folder**: its ``metadata.csv`` or ``metadata.jsonl`` if present, else every audio file with a
  same-named ``.txt`` transcript beside it (``a/b.wav`` + ``a/b.txt``), searched recursively.

Every row is checked first (the audio exists, is a non-empty file that holds an audio stream when
``probe_audio``; the transcript is not empty; ids are unique). A bad row raises
:class:`DatasetError` naming the file and line, or, with ``skip_bad=True``, is left out and
recorded in :attr:`Dataset.skipped`.

Example::

    from whisperops.data.manifest import load_dataset
    ds = load_dataset("data/speech/manifest.jsonl", skip_bad=True)
    for u in ds:                      # Dataset is a list of Utterance
        print(u.id, u.audio, u.text, u.language)
    print(len(ds), "rows;", len(ds.skipped), "skipped")
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from whisperops.audio import is_media_path
from whisperops.errors import EXIT_USAGE, WhisperOpsError

log = logging.getLogger(__name__)

AUDIO_KEYS = ("audio", "audio_filepath", "file_name", "path")
TEXT_KEYS = ("text", "transcription", "sentence")
FORMATS = ("jsonl", "csv", "folder")


class DatasetError(WhisperOpsError):
    """A dataset (manifest, CSV or folder) or one of its rows cannot be used."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Utterance:
    """One audio file and its reference transcript."""

    id: str  # unique within the dataset: the ``id`` field, else the audio path relative to the dataset
    audio: Path  # absolute
    text: str
    language: str | None = None  # ISO code; None: unknown
    duration: float | None = None  # seconds, when the dataset states it
    line: int = 0  # 1-based line of the row in its file (0 for folder layouts), for messages
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "audio": str(self.audio),
            "text": self.text,
            "language": self.language,
            "duration": self.duration,
            "line": self.line,
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Utterance:
        return cls(
            id=data["id"],
            audio=Path(data["audio"]),
            text=data["text"],
            language=data.get("language"),
            duration=data.get("duration"),
            line=data.get("line", 0),
            extra=data.get("extra", {}),
        )


@dataclass(frozen=True)
class BadRow:
    """A row left out with ``skip_bad``: where it is and why."""

    where: str  # "manifest.jsonl:12" or a file path
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


class Dataset(list):
    """A list of :class:`Utterance` plus where it came from and which rows were skipped."""

    def __init__(self, rows: list[Utterance], source: Path, format: str, skipped: list[BadRow]) -> None:
        super().__init__(rows)
        self.source = source
        self.format = format
        self.skipped = skipped

    @property
    def total_duration(self) -> float | None:
        """Sum of the stated durations, or None when any row lacks one."""
        durations = [u.duration for u in self]
        return None if any(d is None for d in durations) else float(sum(durations))

    def summary(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "format": self.format,
            "rows": len(self),
            "skipped": len(self.skipped),
            "skipped_rows": [str(b) for b in self.skipped],
            "duration_s": self.total_duration,
        }


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "folder"
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    raise DatasetError(f"{path}: unknown dataset type {suffix!r}; use a .jsonl manifest, a .csv, or a folder")


def load_dataset(
    path: str | Path,
    *,
    skip_bad: bool = False,
    probe_audio: bool = True,
    format: str | None = None,
) -> Dataset:
    """Load and validate a dataset (see the module docstring for the layouts).

    ``skip_bad``: leave bad rows out (listed in ``Dataset.skipped``) instead of raising
    :class:`DatasetError` at the first one. ``probe_audio``: open each file to check that it holds
    an audio stream (cheap: no decoding); off, only existence and size are checked.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise DatasetError(f"{path}: no such manifest, CSV or folder; check the path")
    fmt = format or detect_format(path)
    if fmt not in FORMATS:
        raise DatasetError(f"dataset format {fmt!r}: must be one of {', '.join(FORMATS)}")
    source = path
    if fmt == "folder":
        for name, inner in (("metadata.csv", "csv"), ("metadata.jsonl", "jsonl")):
            if (path / name).is_file():
                source, fmt = path / name, inner
                break
    reader = {"jsonl": _read_jsonl, "csv": _read_csv, "folder": _read_folder}[fmt]
    rows: list[Utterance] = []
    skipped: list[BadRow] = []
    seen: dict[str, str] = {}
    for where, row, error in reader(source):
        if error is None and row is not None:
            error = _check(row, probe_audio)
            if error is None and row.id in seen:
                error = f"duplicate id {row.id!r} (first at {seen[row.id]}); give each row a unique audio or id"
        if error is not None:
            if not skip_bad:
                raise DatasetError(f"{where}: {error} (or pass --skip-bad to leave bad rows out)")
            log.warning("skipping %s: %s", where, error)
            skipped.append(BadRow(where, error))
            continue
        assert row is not None
        seen[row.id] = where
        rows.append(row)
    if not rows:
        detail = f"; {len(skipped)} bad rows, first: {skipped[0]}" if skipped else ""
        raise DatasetError(f"{source}: no usable rows{detail}")
    return Dataset(rows, source, fmt, skipped)


def _check(row: Utterance, probe_audio: bool) -> str | None:
    audio = row.audio
    if not audio.exists():
        return f"audio file {audio} not found; paths are relative to the dataset file"
    if not audio.is_file():
        return f"audio {audio} is not a file"
    if audio.stat().st_size == 0:
        return f"audio file {audio} is empty (0 bytes)"
    if probe_audio:
        reason = _probe(audio)
        if reason:
            return f"audio file {audio}: {reason}"
    return None


def _probe(path: Path) -> str | None:
    """Open the container and look for an audio stream; no decoding, so it costs milliseconds."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                return "holds no audio stream"
    except (av.error.FFmpegError, ValueError, OSError) as err:
        return f"cannot be read as audio ({getattr(err, 'strerror', None) or err})"
    return None


def _text_of(record: dict[str, Any]) -> tuple[str | None, str | None]:
    for key in TEXT_KEYS:
        if key in record:
            value = record[key]
            if not isinstance(value, str):
                return None, f"{key!r} must be a string, got {type(value).__name__}"
            if not value.strip():
                return None, f"empty transcript in {key!r}; fill it in or remove the row"
            return value.strip(), None
    return None, f"no transcript field (one of {', '.join(TEXT_KEYS)})"


def _row_from_record(record: dict[str, Any], base: Path, line: int) -> tuple[Utterance | None, str | None]:
    audio_key = next((k for k in AUDIO_KEYS if record.get(k) not in (None, "")), None)
    if audio_key is None:
        return None, f"no audio path field (one of {', '.join(AUDIO_KEYS)})"
    raw_audio = record[audio_key]
    if not isinstance(raw_audio, str):
        return None, f"{audio_key!r} must be a path string, got {type(raw_audio).__name__}"
    text, error = _text_of(record)
    if error:
        return None, error
    language = record.get("language") or None
    if language is not None and not isinstance(language, str):
        return None, f"'language' must be a code like 'en', got {language!r}"
    duration = record.get("duration_s", record.get("duration"))
    try:
        duration = float(duration) if duration not in (None, "") else None
    except (TypeError, ValueError):
        return None, f"duration {duration!r} is not a number"
    audio = Path(raw_audio).expanduser()
    if not audio.is_absolute():
        audio = base / audio
    used = {audio_key, "id", "language", "duration_s", "duration", *TEXT_KEYS}
    return (
        Utterance(
            id=str(record.get("id") or raw_audio),
            audio=audio,
            text=text or "",
            language=language.strip().lower() if language else None,
            duration=duration,
            line=line,
            extra={k: v for k, v in record.items() if k not in used},
        ),
        None,
    )


def _read_jsonl(path: Path):
    base = path.parent.resolve()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text ({err.reason}); save the manifest as UTF-8") from err
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            yield where, None, f"invalid JSON ({err.msg} at column {err.colno})"
            continue
        if not isinstance(record, dict):
            yield where, None, f"expected a JSON object, got {type(record).__name__}"
            continue
        row, error = _row_from_record(record, base, number)
        yield where, row, error


def _read_csv(path: Path):
    base = path.parent.resolve()
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        header = reader.fieldnames or []
        if not any(k in header for k in AUDIO_KEYS) or not any(k in header for k in TEXT_KEYS):
            raise DatasetError(
                f"{path}:1: header {','.join(header) or '(empty)'} needs file_name and transcription columns "
                "(Hugging Face audiofolder layout)"
            )
        for record in reader:
            # line_num is the physical line the row ended on; quoted newlines make rows span lines.
            line = reader.line_num
            where = f"{path}:{line}"
            if None in record:
                yield where, None, f"{len(header) + len(record[None])} columns but the header has {len(header)}"
            else:
                row, error = _row_from_record({k: v for k, v in record.items() if v is not None}, base, line)
                yield where, row, error


def _read_folder(path: Path):
    base = path.resolve()
    media = sorted(p for p in base.rglob("*") if p.is_file() and is_media_path(p))
    if not media:
        raise DatasetError(f"{path}: no audio files and no metadata.csv/metadata.jsonl; nothing to evaluate")
    for audio in media:
        transcript = audio.with_suffix(".txt")
        rel = audio.relative_to(base).as_posix()
        if not transcript.is_file():
            yield str(audio), None, f"no transcript {transcript.name} beside it; add one or remove the audio"
            continue
        try:
            text = transcript.read_text(encoding="utf-8").strip()
        except UnicodeDecodeError:
            yield str(transcript), None, "transcript is not UTF-8 text"
            continue
        if not text:
            yield str(transcript), None, "empty transcript; fill it in or remove the audio"
            continue
        yield str(audio), Utterance(id=rel, audio=audio, text=" ".join(text.split()), line=0), None
