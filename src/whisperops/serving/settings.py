"""What a server serves and how much it accepts: one dataclass shared by uvicorn and Ray Serve hosts.

Every field is declared once with :func:`whisperops.config.setting`; ``whisperops serve`` builds its
options from these fields, and the docs' settings reference reads them too.
"""

from __future__ import annotations

import ipaddress
import tempfile
from dataclasses import dataclass
from pathlib import Path

from whisperops.config import setting
from whisperops.errors import OptionError

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def is_loopback(host: str) -> bool:
    """True for ``localhost``, ``*.localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServeSettings:
    """Everything ``create_app`` needs. Plain data, so it pickles into Ray Serve replicas unchanged."""

    models: list[str] = setting(
        help="Model to serve (repeat for several; the first answers whisper-1).", factory=lambda: ["tiny.en"]
    )
    host: str = setting("127.0.0.1", help="Address to bind; loopback unless you mean otherwise.")
    port: int = setting(8000, help="TCP port.")
    api_key: str | None = setting(None, help="Require 'Authorization: Bearer KEY' on /v1/* (ASCII only).")
    max_upload_mb: float = setting(100.0, help="Largest upload accepted, in MB (413 above; OpenAI's is 25 MB).")
    max_audio_s: float = setting(
        4 * 3600.0, help="Longest audio accepted, in seconds (413 above), from the header and while decoding."
    )
    slots: int = setting(1, help="Concurrent decodes per replica (CTranslate2 workers).")
    max_queue: int = setting(
        8, help="Requests uploading or waiting for a slot, beyond the running ones, before 429 (per replica)."
    )
    request_timeout_s: float = setting(300.0, help="Seconds per request, upload and queue included (504 after).")
    body_timeout_s: float = setting(30.0, help="Seconds an upload may send nothing before it gets 408.")
    shutdown_grace_s: float = setting(
        10.0, help="On SIGINT/SIGTERM, seconds running requests get to finish before they get 503."
    )
    idle_unload_s: float = setting(600.0, help="Unload a model idle this long (0: never).")
    device: str = setting("auto", help="auto, cpu or cuda.")
    compute_type: str = setting("auto", help="auto (int8 CPU / float16 GPU), or any CTranslate2 type.")
    cpu_threads: int = setting(0, help="CPU threads per decode (0: CTranslate2's default).")
    beam_size: int = setting(5, help="Beam width (1 = greedy, faster).")
    vad_filter: bool = setting(True, help="Skip non-speech with Silero VAD.")
    tmp_dir: Path | None = setting(
        None, help="Where uploads are stored while decoding (default: the temp dir); always emptied."
    )
    allowed_hosts: list[str] = setting(
        help="Host names accepted besides loopback ones when bound to loopback (repeat; '*' accepts any).",
        factory=list,
    )
    cors_origins: list[str] = setting(
        help="Browser origins allowed to call the API (repeat; none by default, so no CORS).", factory=list
    )
    realtime_sessions: int = setting(4, help="Realtime (WebSocket) transcription sessions open at once (0: none).")
    realtime_session_s: float = setting(
        1800.0, help="Seconds a realtime session may last before it is closed (OpenAI's also end at 30 minutes)."
    )
    realtime_message_bytes: int = setting(
        15 * 1024 * 1024, help="Largest realtime message, in bytes (OpenAI's limit on one input_audio_buffer.append)."
    )

    def __post_init__(self) -> None:
        self.models = [m for m in dict.fromkeys(self.models) if m]
        if not self.models:
            raise OptionError("--model: give at least one model to serve (e.g. --model tiny.en)")
        for name, value, low in (
            ("--slots", self.slots, 1),
            ("--max-queue", self.max_queue, 0),
            ("--beam-size", self.beam_size, 1),
            ("--realtime-sessions", self.realtime_sessions, 0),
            ("--realtime-message-bytes", self.realtime_message_bytes, 1024),
        ):
            if value < low:
                raise OptionError(f"{name} {value}: must be at least {low}")
        for name, value in (
            ("--max-upload-mb", self.max_upload_mb),
            ("--max-audio-s", self.max_audio_s),
            ("--timeout", self.request_timeout_s),
            ("--body-timeout", self.body_timeout_s),
            ("--realtime-session-s", self.realtime_session_s),
        ):
            if value <= 0:
                raise OptionError(f"{name} {value:g}: must be more than 0")
        if self.shutdown_grace_s < 0:
            raise OptionError(f"--shutdown-grace {self.shutdown_grace_s:g}: must be 0 (cancel at once) or more")
        if self.idle_unload_s < 0:
            raise OptionError(f"--idle-unload {self.idle_unload_s:g}: must be 0 (never) or more seconds")
        if self.api_key == "":
            self.api_key = None
        if self.api_key is not None and not (self.api_key.isascii() and self.api_key.isprintable()):
            # HTTP headers are Latin-1 and clients send ASCII, so such a key could never match.
            raise OptionError(
                "--api-key: use printable ASCII only (letters, digits, punctuation); this one can never match"
            )
        self.allowed_hosts = [h.strip().lower() for h in self.allowed_hosts if h.strip()]

    @property
    def default_model(self) -> str:
        return self.models[0]

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1e6)

    def host_allowed(self, host: str) -> bool:
        """Whether a request's ``Host`` name (port stripped) may be answered: the DNS-rebinding guard.

        A server bound to loopback answers only loopback names (and ``allowed_hosts``): a web page
        whose own name resolves to 127.0.0.1 sends its own name, and is refused.
        """
        name = host.strip().lower().rstrip(".")
        if "*" in self.allowed_hosts or name in self.allowed_hosts:
            return True
        if is_loopback(self.host):
            return is_loopback(name)
        return not self.allowed_hosts

    def upload_dir(self) -> Path:
        path = Path(self.tmp_dir) if self.tmp_dir else Path(tempfile.gettempdir()) / "whisperops-uploads"
        path.mkdir(parents=True, exist_ok=True)
        return path
