"""Read TranscriptionFlow runs back from Metaflow's datastore (Client API): for the CLI and users.

Import after :mod:`whisperops.flows` (it sets Metaflow's environment defaults on import).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import whisperops.flows
from whisperops.errors import OptionError


@dataclass
class RunInfo:
    id: str
    status: str  # successful | failed | running | interrupted
    created: str
    items: int | None = None
    failed: int | None = None
    audio_hours: float | None = None
    wall_s: float | None = None


def _flow():
    from metaflow import Flow, namespace
    from metaflow.exception import MetaflowNotFound

    namespace(None)  # runs made by any user (CI, a container running as another user) are listed
    try:
        return Flow(whisperops.flows.FLOW_NAME)
    except MetaflowNotFound as err:
        raise OptionError(
            f"no {whisperops.flows.FLOW_NAME} runs in this Metaflow datastore ({datastore_root()}); "
            "run `whisperops transcribe ...` first, or cd to where .metaflow is"
        ) from err


def datastore_root() -> str:
    return os.environ.get("METAFLOW_DATASTORE_SYSROOT_LOCAL") or "nearest .metaflow from the current directory"


def get_run(run_id: str):
    from metaflow import Run, namespace
    from metaflow.exception import MetaflowNotFound

    namespace(None)
    pathspec = run_id if "/" in run_id else f"{whisperops.flows.FLOW_NAME}/{run_id}"
    try:
        return Run(pathspec)
    except MetaflowNotFound as err:
        raise OptionError(f"run {run_id}: not found in {datastore_root()}; list runs with `whisperops runs`") from err


INTERRUPTED_TAG = "interrupted"


def mark_interrupted(run) -> None:
    """Tag ``run`` as stopped by a signal, so listings say so instead of "running" forever."""
    try:
        run.add_tag(INTERRUPTED_TAG)
    except Exception as err:  # a metadata service that refuses tags: the listing falls back to its guess
        import logging

        logging.getLogger(__name__).warning("cannot tag run %s as interrupted: %s", run.pathspec, err)


def run_status(run) -> str:
    if run.successful:
        return "successful"
    if INTERRUPTED_TAG in run.user_tags:
        return "interrupted"
    return "failed" if run.finished else "running"  # a crashed run is never "finished": see its end step


def list_runs(limit: int = 20) -> list[RunInfo]:
    infos = []
    for i, run in enumerate(_flow()):
        if i >= limit:
            break
        info = RunInfo(run.id, run_status(run), str(run.created_at)[:19])
        if run.successful:
            summary = run.data.summary
            info.items, info.failed = summary["items"], summary["failed"]
            info.audio_hours, info.wall_s = summary["audio_hours"], summary["wall_s"]
        elif info.status == "running" and _stale(run):
            info.status = "failed"
        infos.append(info)
    return infos


def _stale(run) -> bool:
    """A local run with no task still running (Metaflow marks a crashed local run as simply unfinished)."""
    try:
        return all(task.finished or task.exception is not None for step in run for task in step) and any(
            not task.successful for step in run for task in step
        )
    except Exception:  # metadata of a half-written task: leave the status as running
        return False


def item_results(run) -> list:
    """The run's items as :class:`~whisperops.pipeline.ItemResult` objects (transcripts included)."""
    from whisperops.pipeline import ItemResult
    from whisperops.results import Transcript
    from whisperops.sources import MediaItem

    data = run["postprocess"].task.data
    transcripts: dict[str, Any] = data.transcripts
    results = []
    for row in data.items:
        item = MediaItem.from_dict(row["item"])
        t = transcripts.get(item.name)
        results.append(
            ItemResult(
                item,
                row["status"],
                Transcript.from_dict(t) if t else None,
                row.get("error"),
                [Path(p) for p in row.get("outputs") or []],
                row.get("wall_s", 0.0),
            )
        )
    return results


def card_path(run) -> Path | None:
    """The postprocess card's HTML file, when the card store is on this disk (local datastore)."""
    from metaflow.cards import get_cards

    try:
        cards = get_cards(run["postprocess"].task, id="report")
    except Exception:  # no card (e.g. the step failed before rendering)
        return None
    for card in cards:
        # card.path is relative to the card store's root, which the card's datastore knows.
        root = getattr(getattr(getattr(card, "_card_ds", None), "_backend", None), "datastore_root", None)
        candidate = Path(root, card.path) if root else Path(card.path)
        if candidate.is_file():
            return candidate.resolve()
    return None
