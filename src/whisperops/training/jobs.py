"""``whisperops finetune --submit ADDRESS``: the same run as a Ray job, through Ray's Jobs API.

The job's entry point is this module (``python -m whisperops.training.jobs``); the settings travel
in the job's environment as JSON, so nothing depends on the submitter's working directory. Dataset
and output paths must be visible on the cluster (one machine, or a shared file system).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass

from whisperops.errors import OptionError, WhisperOpsError
from whisperops.training.config import FinetuneConfig

log = logging.getLogger(__name__)

CONFIG_ENV = "WHISPEROPS_FINETUNE_CONFIG"
PYTHON_ENV = "WHISPEROPS_JOB_PYTHON"


class JobError(WhisperOpsError):
    """A submitted job could not be submitted, or did not succeed."""


@dataclass
class JobOutcome:
    job_id: str
    status: str
    logs: str


def _absolute(cfg: FinetuneConfig) -> FinetuneConfig:
    from pathlib import Path

    data = json.loads(cfg.to_json())
    for key in ("train", "eval", "output", "storage_path", "cache_dir"):
        if data.get(key):
            data[key] = str(Path(data[key]).expanduser().resolve())
    if Path(cfg.model).expanduser().exists():
        data["model"] = str(Path(cfg.model).expanduser().resolve())
    data["ray_address"] = "auto"  # inside the job: the cluster it runs on
    return FinetuneConfig.from_json(json.dumps(data))


def _client(address: str):
    """A Jobs API client; with Ray's token auth it sends the local token (``~/.ray/auth_token``)."""
    from pathlib import Path

    from ray.job_submission import JobSubmissionClient

    def connect():
        return JobSubmissionClient(address)

    try:
        try:
            return connect()
        except Exception as err:
            # `ray start` turns token auth on, but clients only send the token in token mode.
            token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
            has_token = "RAY_AUTH_TOKEN" in os.environ or token_file.exists()
            if "auth" not in str(err).lower() or not has_token or os.environ.get("RAY_AUTH_MODE") == "token":
                raise
            _enable_token_auth()
            return connect()
    except Exception as err:  # ConnectionError, ValueError for a bad scheme, auth errors...
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise OptionError(
            f"--submit {address}: cannot reach a Ray Jobs API there ({reason[:160]}); "
            "give the dashboard address, e.g. http://127.0.0.1:8265"
        ) from err


def _enable_token_auth() -> None:
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        # Ray caches its config at import; refresh it so this process sends the token too.
        from ray._private.authentication.authentication_token_setup import _enable_token_auth as enable

        enable()
    except ImportError:  # another Ray version: the environment variable is what it reads
        pass


def submit_job(cfg: FinetuneConfig, address: str, wait: bool = True, timeout_s: float = 24 * 3600) -> JobOutcome:
    """Submit the run to the Ray cluster at ``address`` (``http://HOST:8265``); wait for it unless told."""
    from ray.job_submission import JobStatus

    client = _client(address)
    job_cfg = _absolute(cfg)
    python = os.environ.get(PYTHON_ENV, sys.executable)
    env = {CONFIG_ENV: job_cfg.to_json()}
    for key in ("WHISPEROPS_CACHE", "HF_HUB_OFFLINE", "XDG_CACHE_HOME"):
        if key in os.environ:
            env[key] = os.environ[key]
    deadline = time.monotonic() + 180  # a loaded 2-core head takes minutes to register its agent
    while True:
        try:
            job_id = client.submit_job(
                entrypoint=f"{python} -m whisperops.training.jobs",
                runtime_env={"env_vars": env},
                metadata={"whisperops": "finetune", "output": job_cfg.output},
            )
            break
        except RuntimeError as err:
            # A head that has just started answers 500 until its job agent registers.
            if "No available agent" not in str(err) or time.monotonic() > deadline:
                raise JobError(f"--submit {address}: the cluster refused the job ({str(err)[:200]})") from err
            time.sleep(2.0)
    log.info("submitted job %s to %s", job_id, address)
    if not wait:
        return JobOutcome(job_id, "PENDING", "")
    deadline = time.monotonic() + timeout_s
    terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    status = client.get_job_status(job_id)
    while status not in terminal:
        if time.monotonic() > deadline:
            raise JobError(f"job {job_id}: still {status} after {timeout_s:.0f} s; follow it with ray job logs")
        time.sleep(2.0)
        status = client.get_job_status(job_id)
    logs = client.get_job_logs(job_id)
    return JobOutcome(job_id, str(status.value if hasattr(status, "value") else status), logs)


def main() -> None:
    """The job's entry point: run the fine-tuning described in ``$WHISPEROPS_FINETUNE_CONFIG``."""
    from whisperops.training.run import finetune

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    text = os.environ.get(CONFIG_ENV)
    if not text:
        sys.stderr.write(f"error: ${CONFIG_ENV} is not set; submit with whisperops finetune --submit ADDRESS\n")
        sys.exit(2)
    try:
        result = finetune(FinetuneConfig.from_json(text))
    except WhisperOpsError as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(2)
    sys.stdout.write(json.dumps({"registered": result.registered_name, "best_eval_wer": result.best_eval_wer}) + "\n")


if __name__ == "__main__":
    main()
