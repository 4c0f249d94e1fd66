"""Transcribe a batch of media items with one loaded engine: fetch, cache, transcribe, write.

Used as-is by ``whisperops transcribe`` and by each task of the Metaflow flow, so a laptop run
and a cluster run share one code path. A failing item is recorded with its one-line error and the
batch goes on; outputs are written as each item finishes, so nothing computed is lost.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from whisperops.audio import SAMPLE_RATE, DecodeReport, file_sha256, load_audio, probe_duration
from whisperops.engine import PACK_WINDOW_S, DecodeOptions, Engine, packing_applies
from whisperops.errors import WhisperOpsError
from whisperops.paths import atomic_write_text, cache_dir
from whisperops.results import Segment, Transcript
from whisperops.sources import MediaItem, fetch, local_media
from whisperops.writers import SubtitleOptions, write_all

if TYPE_CHECKING:
    import numpy as np

    from whisperops.diarize import DiarizeSettings

log = logging.getLogger(__name__)


@dataclass
class ItemResult:
    item: MediaItem
    status: str  # ok | cached | failed
    transcript: Transcript | None = None
    error: str | None = None
    outputs: list[Path] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status != "failed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "item": self.item.to_dict(),
            "status": self.status,
            "transcript": self.transcript.to_dict() if self.transcript else None,
            "error": self.error,
            "outputs": [str(p) for p in self.outputs],
            "wall_s": self.wall_s,
        }


class Progress(Protocol):
    def item_started(self, item: MediaItem) -> None: ...
    def audio_known(self, item: MediaItem, seconds: float) -> None: ...
    def segment_done(self, item: MediaItem, segment: Segment) -> None: ...
    def item_done(self, result: ItemResult) -> None: ...


class NoProgress:
    def item_started(self, item: MediaItem) -> None:
        pass

    def audio_known(self, item: MediaItem, seconds: float) -> None:
        pass

    def segment_done(self, item: MediaItem, segment: Segment) -> None:
        pass

    def item_done(self, result: ItemResult) -> None:
        pass


class TranscriptCache:
    """Content-addressed: same audio bytes + same model weights + same options -> same transcript.

    The weights count by their content (:func:`whisperops.models.registry.weights_digest`), not
    their path: retraining into the same folder gives new transcripts.
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else cache_dir() / "transcripts"

    @staticmethod
    def key(audio_sha256: str, engine: Engine, options: DecodeOptions) -> str:
        return TranscriptCache.key_for(audio_sha256, engine.path, engine.compute_type, options)

    @staticmethod
    def key_for(audio_sha256: str, model_path: Path, compute_type: str, options: DecodeOptions) -> str:
        """The same key as :meth:`key`, without a loaded engine (a flow's planning step has none)."""
        from whisperops.models import registry

        raw = json.dumps([audio_sha256, registry.weights_digest(Path(model_path)), compute_type, options.cache_key()])
        return hashlib.sha256(raw.encode()).hexdigest()

    def lookup(self, item: MediaItem, model_path: Path, compute_type: str, options: DecodeOptions) -> Transcript | None:
        """The cached transcript of ``item`` if its media is already local; never downloads."""
        path = local_media(item)
        if path is None or not path.is_file():
            return None
        return self.get(self.key_for(file_sha256(path), model_path, compute_type, options))

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Transcript | None:
        path = self._path(key)
        if not path.exists():
            return None
        try:
            return Transcript.load(path)
        except (OSError, ValueError, TypeError, KeyError):
            log.warning("ignoring unreadable cache entry %s", path)
            return None

    def put(self, key: str, transcript: Transcript) -> None:
        """Store ``transcript``; a cache that cannot be written costs a re-decode later, not this item."""
        try:
            atomic_write_text(self._path(key), transcript.to_json(indent=None))
        except OSError as err:
            log.warning("transcript cache %s not written (%s); the item is kept", self.root, err.strerror or err)


def transcribe_item(
    engine: Engine,
    item: MediaItem,
    options: DecodeOptions,
    *,
    output_dir: Path | None = None,
    formats: Sequence[str] = (),
    cache: TranscriptCache | None = None,
    progress: Progress | None = None,
    diarize: DiarizeSettings | None = None,
    subtitles: SubtitleOptions | None = None,
    decoded: Transcript | None = None,
) -> ItemResult:
    """Never raises for a bad item: the error is in the result.

    With ``diarize`` (its ``diarize`` on), words are timed for the labels, and kept only when
    ``options`` asked for them. ``decoded``: the item's transcript from a packed batch (see
    :func:`transcribe_items`), cached and written like one decoded here.
    """
    progress = progress or NoProgress()
    progress.item_started(item)
    start = time.perf_counter()
    diarizing = _diarizing(diarize)
    keep_words = options.word_timestamps
    options = _decode_options(options, diarize)
    try:
        path = fetch(item)
        key = cache.key(file_sha256(path), engine, options) if cache else None
        transcript = cache.get(key) if cache and key else None
        status = "cached"
        if transcript is None:
            status = "ok"
            progress.audio_known(item, probe_duration(path) or 0.0)
            # The engine gets the path, not samples: long recordings then stream through in windows.
            transcript = decoded or engine.transcribe(
                path,
                options,
                source=item.source,
                metadata=item.metadata,
                on_segment=lambda seg: progress.segment_done(item, seg),
            )
            if cache and key:
                cache.put(key, transcript)
        else:
            progress.audio_known(item, transcript.duration)
        # The cached transcript came from the same bytes, maybe under another name or URL.
        transcript.source, transcript.metadata = item.source, {**transcript.metadata, **item.metadata}
        if diarizing:
            from whisperops.diarize import diarize_transcript

            transcript = diarize_transcript(transcript, path, diarize, keep_words=keep_words)
        if output_dir and formats:
            outputs, error = write_outputs(transcript, output_dir, item, formats, subtitles)
            result = ItemResult(item, "failed" if error else status, transcript, error, outputs)
        else:
            result = ItemResult(item, status, transcript)
    except WhisperOpsError as err:
        result = ItemResult(item, "failed", error=str(err))
    except Exception as err:  # one broken item must not sink the batch; keep the reason
        log.exception("unexpected failure on %s", item.source)
        result = ItemResult(item, "failed", error=f"{item.source}: {type(err).__name__}: {err}")
    result.wall_s = round(time.perf_counter() - start, 4)
    progress.item_done(result)
    return result


def write_outputs(
    transcript: Transcript,
    output_dir: Path,
    item: MediaItem,
    formats: Sequence[str],
    subtitles: SubtitleOptions | None = None,
) -> tuple[list[Path], str | None]:
    """Write ``item``'s files; a failure (disk full, a name the file system refuses) is returned, not raised.

    The transcript stays with the item (and in the cache), so fixing the disk and running again
    writes it without decoding again.
    """
    try:
        return write_all(transcript, output_dir, item.name, formats, subtitles), None
    except OSError as err:
        target = Path(output_dir) / f"{item.name}.*"
        return [], f"{item.source}: cannot write {target} ({err.strerror or err}); check the space and rights there"


def transcribe_items(
    engine: Engine,
    items: Sequence[MediaItem],
    options: DecodeOptions,
    *,
    output_dir: Path | None = None,
    formats: Sequence[str] = (),
    cache: TranscriptCache | None = None,
    progress: Progress | None = None,
    diarize: DiarizeSettings | None = None,
    subtitles: SubtitleOptions | None = None,
) -> list[ItemResult]:
    """Results in ``items``' order; short clips are decoded in packed batches where the options allow.

    Diarized clips pack too: a packed transcript times each word on its own clip's clock, and the
    labels are put on per item after decoding.
    """
    if packing_applies(engine, options):
        return _transcribe_packed(engine, items, options, output_dir, formats, cache, progress, subtitles, diarize)
    return [
        transcribe_item(
            engine,
            item,
            options,
            output_dir=output_dir,
            formats=formats,
            cache=cache,
            progress=progress,
            diarize=diarize,
            subtitles=subtitles,
        )
        for item in items
    ]


def _diarizing(diarize: DiarizeSettings | None) -> bool:
    return diarize is not None and diarize.diarize


def _decode_options(options: DecodeOptions, diarize: DiarizeSettings | None) -> DecodeOptions:
    """What to decode with: diarization puts its labels on words, so it needs them timed."""
    if _diarizing(diarize) and not options.word_timestamps:
        return dataclasses.replace(options, word_timestamps=True)
    return options


# --- Packed batches of short clips ---------------------------------------------------------------
# About 8 full windows of clips per group: enough for the packer to fill windows well, few enough
# that results (and their output files) come in steadily.
PACK_GROUP_S = 8 * PACK_WINDOW_S


def _transcribe_packed(
    engine: Engine,
    items: Sequence[MediaItem],
    options: DecodeOptions,
    output_dir: Path | None,
    formats: Sequence[str],
    cache: TranscriptCache | None,
    progress: Progress | None,
    subtitles: SubtitleOptions | None = None,
    diarize: DiarizeSettings | None = None,
) -> list[ItemResult]:
    """Short uncached clips go through :meth:`Engine.transcribe_packed` in groups, the rest one by one.

    The next group's audio is decoded in a thread while the model works on this one. An item that
    fails to load, or a group whose packed decode fails, falls back to :func:`transcribe_item`,
    which then reports the item's own error.
    """
    from concurrent.futures import ThreadPoolExecutor

    def finish(i: int, decoded: Transcript | None = None) -> None:
        results[i] = transcribe_item(
            engine,
            items[i],
            options,
            output_dir=output_dir,
            formats=formats,
            cache=cache,
            progress=progress,
            diarize=diarize,
            subtitles=subtitles,
            decoded=decoded,
        )

    # The clips are decoded (and cached) as transcribe_item would decode them; it labels them.
    decode_options = _decode_options(options, diarize)
    results: list[ItemResult | None] = [None] * len(items)
    groups = _pack_groups(engine, items, decode_options, cache)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisperops-audio") as pool:
        pending = pool.submit(_load_group, items, groups[0]) if groups else None
        for n, group in enumerate(groups):
            assert pending is not None
            loaded = pending.result()
            pending = pool.submit(_load_group, items, groups[n + 1]) if n + 1 < len(groups) else None
            transcripts: list[Transcript] = []
            if loaded:
                try:
                    transcripts = engine.transcribe_packed(
                        [audio for _, audio, _ in loaded],
                        decode_options,
                        sources=[items[i].source for i, _, _ in loaded],
                    )
                except Exception:  # the items' own decodes (below) say what is wrong with them
                    log.exception("packed decode of %d clips failed; decoding them one by one", len(loaded))
            decoded = {}
            for (i, _, warnings), transcript in zip(loaded, transcripts, strict=False):
                transcript.warnings = [*warnings, *transcript.warnings]
                decoded[i] = transcript
            for i in group:
                finish(i, decoded.get(i))
    for i, result in enumerate(results):
        if result is None:
            finish(i)
    return [r for r in results if r is not None]


def _pack_groups(
    engine: Engine, items: Sequence[MediaItem], options: DecodeOptions, cache: TranscriptCache | None
) -> list[list[int]]:
    """Indexes of the local, uncached items short enough to pack, in groups of about PACK_GROUP_S."""
    groups: list[list[int]] = []
    total = PACK_GROUP_S
    for i, item in enumerate(items):
        path = local_media(item)
        if path is None or not path.is_file():
            continue
        duration = _known_duration(item)
        if duration is None or duration > PACK_WINDOW_S:
            continue
        if cache and cache.get(cache.key(file_sha256(path), engine, options)) is not None:
            continue
        if total + duration > PACK_GROUP_S:
            groups.append([])
            total = 0.0
        groups[-1].append(i)
        total += duration
    return groups


def _load_group(items: Sequence[MediaItem], group: list[int]) -> list[tuple[int, np.ndarray, list[str]]]:
    """The group's audio and decoding warnings; an item that will not load is left out (its own
    decode reports why)."""
    loaded = []
    for i in group:
        path = local_media(items[i])
        report = DecodeReport()
        try:
            audio = load_audio(path, report=report) if path is not None else None
        except WhisperOpsError:
            continue
        if audio is not None and audio.size <= PACK_WINDOW_S * SAMPLE_RATE:
            loaded.append((i, audio, list(report.warnings)))
    return loaded


def plan_shards(items: Sequence[MediaItem], size: int, packed: bool = True) -> list[list[MediaItem]]:
    """Split ``items`` into ``ceil(n / size)`` shards of about equal decoding work (about ``size`` items each).

    Contiguous slices leave one worker most of the work when long and short files cluster (on the
    shared English set: 143 s of audio against 337 s), and a parallel run waits on its slowest shard.
    So the costliest item goes first onto the least-loaded shard (LPT scheduling), costed by
    :func:`decode_cost` (``packed``: whether short clips will be packed, :func:`engine.packs`).
    Lengths come from the source's metadata or the container header (no decoding, no downloads); an
    unknown length counts as the median of the known ones. Within a shard, items keep their input order.
    """
    if not items:
        return []
    count = math.ceil(len(items) / size)
    durations = [_known_duration(item) for item in items]  # None where unknown
    default = statistics.median(d for d in durations if d) if any(durations) else 30.0
    costs = [decode_cost(d, packed) for d in (d or default for d in durations)]
    shards: list[list[int]] = [[] for _ in range(count)]
    loads = [0.0] * count
    for i in sorted(range(len(items)), key=lambda i: -costs[i]):
        j = loads.index(min(loads))
        shards[j].append(i)
        loads[j] += costs[i]
    return [[items[i] for i in sorted(shard)] for shard in shards]


# Decoding work per second of audio, relative to a long file's (batched, cut at pauses): packed
# short clips also pay for the gaps between them and for the clips decoded again; a clip decoded
# alone pays a whole 30 s encoder window, about what decoding 50 s of speech costs.
PACKED_COST = 1.3
WINDOW_COST_S = 50.0


def decode_cost(duration: float, packed: bool) -> float:
    """An item's decoding work in seconds of long-form audio (fitted on tiny.en, 1 thread)."""
    if duration <= PACK_WINDOW_S:
        return PACKED_COST * duration if packed else WINDOW_COST_S + duration
    return duration


def _known_duration(item: MediaItem) -> float | None:
    duration = item.metadata.get("duration")
    if isinstance(duration, int | float) and duration > 0:
        return float(duration)
    if item.path is not None and item.path.is_file():
        return probe_duration(item.path)
    return None
