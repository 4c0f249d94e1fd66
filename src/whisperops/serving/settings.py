"""What a server serves and how much it accepts: one dataclass shared by uvicorn and Ray Serve hosts."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from whisperops.errors import OptionError

DEFAULT_MAX_UPLOAD_BYTES = 100 * 1000 * 1000  # 100 MB, OpenAI's limit is 25 MB; long meetings need more


@dataclass
class ServeSettings:
    """Everything ``create_app`` needs. Plain data, so it pickles into Ray Serve replicas unchanged."""

    models: list[str] = field(default_factory=lambda: ["tiny.en"])
    api_key: str | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    slots: int = 1  # concurrent decodes per replica (CTranslate2 workers)
    max_queue: int = 8  # requests waiting for a slot before 429
    request_timeout_s: float = 300.0  # queue wait + decode, then 504
    idle_unload_s: float = 600.0  # unload a model unused this long; 0 keeps models loaded
    device: str = "auto"
    compute_type: str = "auto"
    cpu_threads: int = 0
    beam_size: int = 5
    vad_filter: bool = True
    tmp_dir: Path | None = None  # where uploads are spooled for decoding; always emptied

    def __post_init__(self) -> None:
        self.models = [m for m in dict.fromkeys(self.models) if m]
        if not self.models:
            raise OptionError("--model: give at least one model to serve (e.g. --model tiny.en)")
        for name, value, low in (
            ("--slots", self.slots, 1),
            ("--max-queue", self.max_queue, 0),
            ("--beam-size", self.beam_size, 1),
            ("--max-upload-mb", self.max_upload_bytes, 1),
        ):
            if value < low:
                raise OptionError(f"{name} {value}: must be at least {low}")
        if self.request_timeout_s <= 0:
            raise OptionError(f"--timeout {self.request_timeout_s}: must be more than 0 seconds")
        if self.idle_unload_s < 0:
            raise OptionError(f"--idle-unload {self.idle_unload_s}: must be 0 (never) or more seconds")
        if self.api_key == "":
            self.api_key = None

    @property
    def default_model(self) -> str:
        return self.models[0]

    def upload_dir(self) -> Path:
        path = Path(self.tmp_dir) if self.tmp_dir else Path(tempfile.gettempdir()) / "whisperops-uploads"
        path.mkdir(parents=True, exist_ok=True)
        return path
