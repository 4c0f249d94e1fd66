"""The same FastAPI app on Ray Serve: one replica per process, each with its own pool and slots.

Each replica builds the app itself (``serve.ingress`` with a builder function), so models load once
per replica, inside it, and nothing unpicklable (threads, locks, engines) crosses the wire.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass
from typing import Any

from whisperops.errors import OptionError
from whisperops.serving.settings import ServeSettings

log = logging.getLogger(__name__)

APP_NAME = "whisperops"


@dataclass
class RayOptions:
    """How many replicas, and what each one gets."""

    replicas: int = 1
    min_replicas: int | None = None  # set with max_replicas to autoscale instead of a fixed count
    max_replicas: int | None = None
    target_ongoing_requests: float | None = None  # per replica; default: its slots
    replica_cpus: float = 1.0

    def __post_init__(self) -> None:
        if (self.min_replicas is None) != (self.max_replicas is None):
            raise OptionError("--min-replicas and --max-replicas: give both to autoscale, or neither")
        if self.max_replicas is not None and not 0 <= self.min_replicas <= self.max_replicas:  # type: ignore[operator]
            raise OptionError(f"--min-replicas {self.min_replicas} --max-replicas {self.max_replicas}: need min <= max")
        if self.replicas < 1:
            raise OptionError(f"--replicas {self.replicas}: must be at least 1")

    @property
    def autoscaling(self) -> bool:
        return self.max_replicas is not None


def build(settings: ServeSettings, options: RayOptions | None = None) -> Any:
    """A bound Ray Serve application (``serve.run`` it) serving :func:`create_app` (settings)."""
    from ray import serve

    options = options or RayOptions()

    def build_app():  # nested: cloudpickle ships it (and settings) by value to each replica
        from whisperops.serving.app import create_app

        return create_app(settings)

    # Let overflow reach the app, which answers 429 with Retry-After, instead of Ray's own queue.
    deployment_kwargs: dict[str, Any] = {
        "name": "WhisperOps",
        "max_ongoing_requests": settings.slots + settings.max_queue + 4,
        "ray_actor_options": {"num_cpus": options.replica_cpus},
    }
    if options.autoscaling:
        deployment_kwargs["autoscaling_config"] = {
            "min_replicas": options.min_replicas,
            "max_replicas": options.max_replicas,
            "initial_replicas": max(options.min_replicas or 0, 1),
            "target_ongoing_requests": options.target_ongoing_requests or settings.slots,
        }
    else:
        deployment_kwargs["num_replicas"] = options.replicas
    ingress = serve.ingress(build_app)()
    return serve.deployment(**deployment_kwargs)(ingress).bind()


def run(
    settings: ServeSettings,
    options: RayOptions | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    address: str | None = None,
    blocking: bool = True,
    init_kwargs: dict[str, Any] | None = None,
) -> None:
    """Connect to (``address``) or start a local Ray, then deploy the app at http://host:port/."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False}
        if address is None:
            kwargs["_node_ip_address"] = "127.0.0.1"  # a Ray we start ourselves listens on loopback only
        ray.init(address=address, **{**kwargs, **(init_kwargs or {})})
    serve.start(http_options={"host": host, "port": port})
    log.info("deploying %s on Ray Serve at http://%s:%d", APP_NAME, host, port)
    app = build(settings, options)
    if not blocking:
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
        return
    # As ``serve run`` does: Ctrl-C (or SIGTERM, as from a container stop) takes the app down with
    # it, on a cluster too, instead of leaving replicas holding models nobody can reach.
    # A signal is how a server is stopped, not a failure: both end here and the command exits 0
    # (the CLI's own handlers would report an interrupted job with 130/143).
    signal.signal(signal.SIGINT, _raise_keyboard_interrupt)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        serve.run(app, name=APP_NAME, route_prefix="/", blocking=True)
    except KeyboardInterrupt:
        log.info("stopping %s", APP_NAME)
    finally:
        serve.shutdown()
        ray.shutdown()


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
