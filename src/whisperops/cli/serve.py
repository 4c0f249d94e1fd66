"""``whisperops serve``: OpenAI's audio API on this machine (uvicorn), or on Ray Serve (``--ray``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer

from whisperops.cli.app import app, console, err_console


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command("serve")
def serve_cmd(
    model: list[str] = typer.Option(
        ["tiny.en"], "--model", "-m", help="Model to serve (repeat for several; the first answers whisper-1)."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; loopback unless you mean otherwise."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="WHISPEROPS_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1/*."
    ),
    max_upload_mb: float = typer.Option(100.0, "--max-upload-mb", help="Largest upload accepted (413 above)."),
    slots: int = typer.Option(1, "--slots", help="Concurrent decodes per replica."),
    max_queue: int = typer.Option(8, "--max-queue", help="Requests waiting for a slot before 429."),
    timeout: float = typer.Option(300.0, "--timeout", help="Seconds per request, queue included (504 after)."),
    idle_unload: float = typer.Option(600.0, "--idle-unload", help="Unload a model idle this long (0: never)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    compute_type: str = typer.Option("auto", "--compute-type", help="auto (int8 CPU / float16 GPU), or any CT2 type."),
    threads: int = typer.Option(0, "--threads", help="CPU threads per decode (0: CTranslate2's default)."),
    beam_size: int = typer.Option(5, "--beam-size", help="Beam width (1 = greedy, faster)."),
    ray: bool = typer.Option(False, "--ray", help="Deploy on Ray Serve instead of one uvicorn process."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Existing Ray cluster (default: start one)."),
    replicas: int = typer.Option(1, "--replicas", help="Ray: fixed number of replicas."),
    min_replicas: int | None = typer.Option(None, "--min-replicas", help="Ray: autoscale from this many..."),
    max_replicas: int | None = typer.Option(None, "--max-replicas", help="Ray: ...up to this many."),
    replica_cpus: float = typer.Option(1.0, "--replica-cpus", help="Ray: CPUs reserved per replica."),
    upload_dir: Path | None = typer.Option(
        None, "--upload-dir", help="Where uploads are spooled while decoding (default: the temp dir); always emptied."
    ),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
) -> None:
    """Serve POST /v1/audio/transcriptions and /translations, GET /v1/models, /health and /docs."""
    from whisperops.serving.settings import ServeSettings

    settings = ServeSettings(
        models=model,
        api_key=api_key,
        max_upload_bytes=int(max_upload_mb * 1e6),
        slots=slots,
        max_queue=max_queue,
        request_timeout_s=timeout,
        idle_unload_s=idle_unload,
        device=device,
        compute_type=compute_type,
        cpu_threads=threads,
        beam_size=beam_size,
        tmp_dir=upload_dir,
    )
    if not _is_loopback(host) and settings.api_key is None:
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
    import uvicorn

    from whisperops.serving.app import create_app

    application = create_app(settings)
    console.print(f"serving {', '.join(settings.models)} at {url}/v1 (docs {url}/docs); Ctrl-C stops")
    uvicorn.run(application, host=host, port=port, log_level=log_level)
