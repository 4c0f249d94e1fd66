"""``whisperops serve``: OpenAI's audio API on this machine (uvicorn), or on Ray Serve (``--ray``).

Every server option is a :class:`~whisperops.serving.settings.ServeSettings` field: its default and
help are declared there once.
"""

from __future__ import annotations

from pathlib import Path

import typer

from whisperops.cli.app import app, console, err_console
from whisperops.cli.options import option
from whisperops.serving.settings import ServeSettings, is_loopback

S = ServeSettings


@app.command("serve")
def serve_cmd(
    model: list[str] = option(S, "models", "--model", "-m"),
    host: str = option(S, "host", "--host"),
    port: int = option(S, "port", "--port"),
    api_key: str | None = option(S, "api_key", "--api-key", envvar="WHISPEROPS_API_KEY"),
    max_upload_mb: float = option(S, "max_upload_mb", "--max-upload-mb"),
    max_audio_s: float = option(S, "max_audio_s", "--max-audio-s"),
    slots: int = option(S, "slots", "--slots"),
    max_queue: int = option(S, "max_queue", "--max-queue"),
    timeout: float = option(S, "request_timeout_s", "--timeout"),
    body_timeout: float = option(S, "body_timeout_s", "--body-timeout"),
    shutdown_grace: float = option(S, "shutdown_grace_s", "--shutdown-grace"),
    idle_unload: float = option(S, "idle_unload_s", "--idle-unload"),
    device: str = option(S, "device", "--device"),
    compute_type: str = option(S, "compute_type", "--compute-type"),
    threads: int = option(S, "cpu_threads", "--threads"),
    beam_size: int = option(S, "beam_size", "--beam-size"),
    vad: bool = option(S, "vad_filter", "--vad/--no-vad"),
    upload_dir: Path | None = option(S, "tmp_dir", "--upload-dir"),
    allowed_host: list[str] = option(S, "allowed_hosts", "--allowed-host"),
    cors_origin: list[str] = option(S, "cors_origins", "--cors-origin"),
    realtime_sessions: int = option(S, "realtime_sessions", "--realtime-sessions"),
    realtime_session_s: float = option(S, "realtime_session_s", "--realtime-session-s"),
    realtime_message_bytes: int = option(S, "realtime_message_bytes", "--realtime-message-bytes"),
    ray: bool = typer.Option(False, "--ray", help="Deploy on Ray Serve instead of one uvicorn process."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Existing Ray cluster (default: start one)."),
    replicas: int = typer.Option(1, "--replicas", help="Ray: fixed number of replicas."),
    min_replicas: int | None = typer.Option(None, "--min-replicas", help="Ray: autoscale from this many..."),
    max_replicas: int | None = typer.Option(None, "--max-replicas", help="Ray: ...up to this many."),
    replica_cpus: float = typer.Option(1.0, "--replica-cpus", help="Ray: CPUs reserved per replica."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve POST /v1/audio/transcriptions and /translations, GET /v1/models, /health and /docs."""
    settings = ServeSettings(
        models=model,
        host=host,
        port=port,
        api_key=api_key,
        max_upload_mb=max_upload_mb,
        max_audio_s=max_audio_s,
        slots=slots,
        max_queue=max_queue,
        request_timeout_s=timeout,
        body_timeout_s=body_timeout,
        shutdown_grace_s=shutdown_grace,
        idle_unload_s=idle_unload,
        device=device,
        compute_type=compute_type,
        cpu_threads=threads,
        beam_size=beam_size,
        vad_filter=vad,
        tmp_dir=upload_dir,
        allowed_hosts=allowed_host,
        cors_origins=cors_origin,
        realtime_sessions=realtime_sessions,
        realtime_session_s=realtime_session_s,
        realtime_message_bytes=realtime_message_bytes,
    )
    if not is_loopback(host) and settings.api_key is None:
        err_console.print(
            f"[yellow]warning:[/] listening on {host} without --api-key: anyone who can reach it can use it"
        )
    url = f"http://{host}:{port}"
    if ray:
        from whisperops.serving.ray_app import RayOptions, run

        options = RayOptions(replicas, min_replicas, max_replicas, replica_cpus=replica_cpus)
        console.print(f"Ray Serve: {', '.join(settings.models)} at {url}/v1 (docs {url}/docs); Ctrl-C stops")
        run(settings, options, host=host, port=port, address=ray_address, blocking=True)
        return
    from whisperops.serving import local

    console.print(f"serving {', '.join(settings.models)} at {url}/v1 (docs {url}/docs); Ctrl-C stops")
    local.run(settings, log_level=log_level)
