"""Helpers shared by the benchmark scripts: the shared speech set, RSS sampling, machine description."""

from __future__ import annotations

import argparse
import json
import os
import platform
import threading
import time
from pathlib import Path
from typing import Any

from whisperops.config import default_of, help_of
from whisperops.engine import DecodeOptions

ROOT = Path(__file__).resolve().parents[1]
SHARED_SPEECH = Path(os.environ.get("WHISPEROPS_SHARED_SPEECH", ROOT.parent / "shared" / "data" / "speech"))


# The peers run at whisperops' default beam, so a change of default moves both sides of a comparison.
BEAM_SIZE: int = default_of(DecodeOptions, "beam_size")


def setting_argument(parser: argparse.ArgumentParser, cls: type, name: str, flag: str, **kwargs: Any) -> None:
    """``--flag`` with ``cls.name``'s declared default and help: argparse's ``cli.options.option``."""
    parser.add_argument(flag, default=default_of(cls, name), help=help_of(cls, name), **kwargs)


def load_manifest(path: Path | None = None) -> list[dict]:
    path = path or SHARED_SPEECH / "manifest.jsonl"
    if not path.exists():
        raise SystemExit(f"shared speech set absent: expected {path} beside the checkout")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:
        row["path"] = path.parent / row["audio"]
    return rows


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Samples this process's RSS every 20 ms while the block runs; ``.peak_mb`` afterwards."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval, self.peak_mb, self._stop = interval, 0.0, threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, current_rss_mb())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self.start_mb = self.peak_mb = current_rss_mb()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, current_rss_mb())


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores, {cpu}, {mem:.0f} GiB RAM, Python {platform.python_version()}"
