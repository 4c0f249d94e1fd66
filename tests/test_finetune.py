"""Fine-tuning: data preparation, collator, DeepSpeed configs, input checks, and real Ray Train runs.

The Ray runs use a randomly initialised Whisper (d_model 64, 2 layers) with tiny.en's tokenizer, so a
2-worker gloo run takes seconds of compute; the plumbing (DDP, checkpoints, failure recovery, Jobs
API, export to CTranslate2) is the same as for tiny.en.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import read_flow_run
from whisperops.data.synth import synthesize, write_wav
from whisperops.errors import WhisperOpsError
from whisperops.training.config import FinetuneConfig

CLI = [sys.executable, "-c", "from whisperops.cli import main; main()"]
TEXTS = [
    "Please freeze my debit card.",
    "My account number is 12345678.",
    "I was charged a late payment fee of $25.",
    "What is the BIC for my Fixed Rate Bond?",
    "Can you reset my PIN please?",
    "Send $120 by CHAPS to sort code 20-45-67.",
]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Whisper with tiny.en's tokenizer (real tokenizer, real config plumbing)."""
    from whisperops.training.model import make_tiny_random

    return make_tiny_random(tmp_path_factory.mktemp("tiny-random") / "model")


@pytest.fixture(scope="session")
def speech_sets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Train and eval manifests of short espeak clips (fast to make, real audio)."""
    root = tmp_path_factory.mktemp("speech-sets")
    synthesize(TEXTS, root / "train", voices=["espeak:en-us"], augment=["clean", "noise:20"])
    synthesize(TEXTS[:2], root / "eval", voices=["espeak:en-gb"])
    return root / "train" / "manifest.jsonl", root / "eval" / "manifest.jsonl"


def _cfg(tiny_model: Path, speech_sets: tuple[Path, Path], output: Path, **kw) -> FinetuneConfig:
    base = {
        "train": str(speech_sets[0]),
        "eval": str(speech_sets[1]),
        "output": str(output),
        "model": str(tiny_model),
        "workers": 2,
        "threads_per_worker": 1,
        "max_steps": 4,
        "eval_steps": 1,
        "batch_size": 2,
        "eval_batch_size": 2,
        "learning_rate": 3e-3,
        "generation_max_length": 12,
        "ray_num_cpus": 2,
        "ray_object_store_mb": 80,
        "save_total_limit": 2,
    }
    base.update(kw)
    return FinetuneConfig(**base)


# ---------------------------------------------------------------------------------------------
# Data, collator, configs (no Ray)


def test_collator_pads_labels_with_minus_100_and_does_not_repeat_the_start_token(tiny_model: Path):
    from transformers import WhisperTokenizer

    from whisperops.training.data import SpeechCollator

    tok = WhisperTokenizer.from_pretrained(tiny_model)
    sot = tok.convert_tokens_to_ids("<|startoftranscript|>")
    short, long = tok("Hi.").input_ids, tok("Freeze my debit card now please.").input_ids
    assert short[0] == sot
    feats = np.zeros((80, 3000), dtype=np.float16)
    batch = SpeechCollator(sot)([{"input_features": feats, "labels": short}, {"input_features": feats, "labels": long}])
    labels = batch["labels"].numpy()
    assert batch["input_features"].dtype.is_floating_point and tuple(batch["input_features"].shape) == (2, 80, 3000)
    assert labels.shape == (2, len(long) - 1)
    assert list(labels[0, : len(short) - 1]) == short[1:] and (labels[0, len(short) - 1 :] == -100).all()
    assert list(labels[1]) == long[1:] and sot not in labels
    # The model prepends the start token itself: shifted decoder inputs hold it exactly once.
    from transformers.models.whisper.modeling_whisper import shift_tokens_right

    dec = shift_tokens_right(batch["labels"], tok.eos_token_id, sot)
    assert dec[1, 0].item() == sot and dec[1, 1].item() != sot


def test_prepare_split_drops_long_clips_and_labels_counts_them_and_caches(
    tiny_model: Path, speech_sets: tuple[Path, Path], tmp_path: Path, caplog
):
    from whisperops.audio import load_audio
    from whisperops.data.manifest import load_dataset
    from whisperops.training.data import prepare_split

    train_dir = speech_sets[0].parent
    rows = [json.loads(line) for line in speech_sets[0].read_text().splitlines()]
    clip = load_audio(train_dir / rows[0]["audio"])
    write_wav(tmp_path / "long.wav", np.tile(clip, int(31 * 16000 / clip.size) + 1))
    rows = [
        {**rows[0], "audio": str(train_dir / rows[0]["audio"])},
        {**rows[1], "audio": str(train_dir / rows[1]["audio"]), "text": " ".join(["account"] * 30)},
        {"audio": str(tmp_path / "long.wav"), "text": "too long"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cache = tmp_path / "cache"
    with caplog.at_level(logging.WARNING, logger="whisperops.training.data"):
        split = prepare_split(load_dataset(manifest), tiny_model, "t", cache=cache, max_label_tokens=20)
    assert (split.rows, split.dropped_long_audio, split.dropped_long_labels) == (1, 1, 1)
    assert "dropped 1 clips longer than 30 s" in caplog.text and "exceed 20 tokens" in caplog.text
    import datasets

    ds = datasets.load_from_disk(str(split.path))
    assert ds[0]["text"] == rows[0]["text"] and np.asarray(ds[0]["input_features"]).shape == (80, 3000)
    t0 = time.perf_counter()
    again = prepare_split(load_dataset(manifest), tiny_model, "t", cache=cache, max_label_tokens=20)
    assert again.path == split.path and time.perf_counter() - t0 < 2.0


def test_deepspeed_configs_leave_batch_sizes_to_the_trainer(tmp_path: Path):
    from whisperops.errors import OptionError
    from whisperops.training.deepspeed import write_config, zero_config

    for stage, zstage in (("zero2", 2), ("zero3", 3), ("zero3-offload", 3)):
        cfg = json.loads(write_config(stage, tmp_path / f"{stage}.json").read_text())
        assert cfg["zero_optimization"]["stage"] == zstage
        # A number here would be wrong as soon as the worker count changes.
        assert cfg["train_batch_size"] == cfg["train_micro_batch_size_per_gpu"] == "auto"
        assert cfg["gradient_accumulation_steps"] == "auto"
    assert "offload_optimizer" in zero_config("zero3-offload")["zero_optimization"]
    assert "offload_optimizer" not in zero_config("zero3")["zero_optimization"]
    with pytest.raises(OptionError, match="zero2, zero3, zero3-offload"):
        zero_config("zero1")


def test_plan_steps():
    from whisperops.training.run import plan_steps

    cfg = FinetuneConfig(train="a", eval="b", output="c", batch_size=4, workers=2, epochs=2)
    assert plan_steps(cfg, 20) == (6, 2)  # ceil(20 / 8) * 2 steps, ~5 evaluations
    cfg.max_steps, cfg.eval_steps = 10, 4
    assert plan_steps(cfg, 20) == (10, 4)


def test_every_finetune_option_is_a_finetune_config_field_with_its_default_and_help():
    import typer.main

    from whisperops.cli.app import app
    from whisperops.config import default_of, help_of

    command = typer.main.get_command(app).commands["finetune"]
    cli_only = {"submit", "no_wait"}  # how to launch, not what to train
    fields = FinetuneConfig.__dataclass_fields__
    params = {p.name: p for p in command.params if p.name not in cli_only}
    assert set(params) <= set(fields), set(params) - set(fields)
    assert {"max_failures", "save_total_limit", "resume", "mode", "export"} <= set(params)
    for name, param in params.items():
        assert param.help == help_of(FinetuneConfig, name), name
        assert param.default == default_of(FinetuneConfig, name), (name, param.default)


def test_mode_auto_uses_ray_only_where_it_does_something():
    from whisperops.training.run import uses_ray

    def cfg(**kw) -> FinetuneConfig:
        return FinetuneConfig(train="a", eval="b", output="c", **kw)

    assert not uses_ray(cfg())  # the default: one worker, here, no retries
    assert all(uses_ray(cfg(**kw)) for kw in ({"workers": 2}, {"ray_address": "auto"}, {"max_failures": 1},
                                              {"deepspeed": "zero2"}, {"mode": "ray"}))  # fmt: skip
    assert not uses_ray(cfg(mode="local"))


def test_local_ray_processes_get_the_quiet_settings_and_a_user_value_wins(monkeypatch, tmp_path: Path):
    import ray

    from whisperops.training.run import LOCAL_RAY_ENV, init_ray

    for key in LOCAL_RAY_ENV:
        # setenv first, so that monkeypatch records the key even where it was unset: init_ray's
        # setdefault would otherwise leave the values in this process for the tests after this one.
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    monkeypatch.setenv("RAY_TRAIN_METRICS_ENABLED", "1")
    if ray.is_initialized():
        ray.shutdown()
    init_ray(FinetuneConfig(train="a", eval="b", output=str(tmp_path), ray_num_cpus=1))
    try:
        seen = ray.get(ray.remote(lambda: {k: os.environ.get(k) for k in LOCAL_RAY_ENV}).remote())
    finally:
        ray.shutdown()
    assert seen == {**LOCAL_RAY_ENV, "RAY_TRAIN_METRICS_ENABLED": "1"}  # what a Ray worker process sees


# ---------------------------------------------------------------------------------------------
# Bad input: one line each, before anything expensive


def test_bad_inputs_fail_in_one_line_before_training(tiny_model: Path, speech_sets: tuple[Path, Path], tmp_path: Path):
    from whisperops.training.run import preflight

    train = speech_sets[0]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    mismatched = tmp_path / "folder"
    mismatched.mkdir()
    shutil.copy(train.parent / json.loads(train.read_text().splitlines()[0])["audio"], mismatched / "a.wav")
    german = tmp_path / "de.jsonl"
    german.write_text(
        json.dumps({"audio": str(train.parent / json.loads(train.read_text().splitlines()[0])["audio"]),
                    "text": "Guten Tag", "language": "de"}) + "\n"
    )  # fmt: skip
    long_only = tmp_path / "long.jsonl"
    write_wav(tmp_path / "long.wav", np.zeros(16000 * 31, dtype=np.float32))
    long_only.write_text(json.dumps({"audio": str(tmp_path / "long.wav"), "text": "silence"}) + "\n")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    cases = {
        "no usable rows": {"train": str(empty)},
        "no transcript a.txt": {"train": str(mismatched)},
        "English-only": {"train": str(german)},
        "no clip is 30 s or shorter": {"train": str(long_only)},
        "--eval is required": {"eval": ""},
        "--eval /nonexistent.jsonl: no such": {"eval": "/nonexistent.jsonl"},
        "unknown model name": {"model": "no-such-model"},
        "not writable": {"output": str(blocker / "out")},
        "this machine has": {"workers": 64},
        "--mode train: use one of auto, local, ray": {"mode": "train"},
        "--workers 2 needs Ray Train workers, and --mode local": {"mode": "local", "workers": 2},
        "--max-failures 1 needs Ray Train workers": {"mode": "local", "workers": 1, "max_failures": 1},
        "--resume: no checkpoint in": {"workers": 1, "resume": True},
        "--resume: no Ray Train run with a checkpoint": {"resume": True},
    }
    for expected, change in cases.items():
        cfg = _cfg(
            tiny_model, speech_sets, Path(change.pop("output", tmp_path / "out")), **{"model": "tiny.en", **change}
        )
        t0 = time.perf_counter()
        with pytest.raises(WhisperOpsError) as err:
            preflight(cfg)
        message = str(err.value)
        assert expected in message, (expected, message)
        assert "\n" not in message
        assert time.perf_counter() - t0 < 5.0, f"{expected}: checked too slowly"


def test_a_disk_past_rays_limit_is_named_before_training(
    tiny_model: Path, speech_sets: tuple[Path, Path], tmp_path: Path, monkeypatch, caplog
):
    from whisperops.training.run import preflight

    cfg = _cfg(tiny_model, speech_sets, tmp_path / "out", model="tiny.en")
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))  # the same file system as --output: one warning
    monkeypatch.setenv("RAY_local_fs_capacity_threshold", "1.01")  # no disk is past it
    with caplog.at_level(logging.WARNING, logger="whisperops.training.run"):
        preflight(cfg)
    assert not [r for r in caplog.records if "full" in r.getMessage()]
    monkeypatch.setenv("RAY_local_fs_capacity_threshold", "0")  # every disk is past it
    with caplog.at_level(logging.WARNING, logger="whisperops.training.run"):
        preflight(cfg)
    full = [r.getMessage() for r in caplog.records if "full" in r.getMessage()]
    assert len(full) == 1, full
    assert str(tmp_path / "out") in full[0] and "RAY_TMPDIR" in full[0] and "--output" in full[0]


def test_cli_bad_worker_count_is_one_line_and_exit_2(speech_sets: tuple[Path, Path], tmp_path: Path):
    train, evaluation = speech_sets
    proc = subprocess.run(
        [*CLI, "finetune", "--train", str(train), "--eval", str(evaluation), "--output", str(tmp_path / "o"),
         "--workers", "99"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "--workers 99" in lines[0], proc.stderr
    assert not (tmp_path / "o" / "run").exists()


# ---------------------------------------------------------------------------------------------
# Real Ray Train runs (2 workers, gloo on CPU)


@pytest.fixture(autouse=True, scope="module")
def _no_ray_left_behind():
    """In-process runs (recipe, flow, CLI helpers) reuse or start a driver-side Ray and leave it up,
    as a CLI process would; the next module (Ray Serve tests) must start from none."""
    yield
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture()
def local_ray():
    # Function scope: a driver-side cluster left running confuses the Jobs API test's own head.
    import ray

    if ray.is_initialized():  # an earlier in-process run left one up
        ray.shutdown()
    ray.init(num_cpus=2, object_store_memory=80 * 1024 * 1024, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield
    ray.shutdown()


@pytest.mark.slow
def test_cli_two_worker_run_keeps_best_checkpoints_by_eval_wer_and_exports(
    tiny_model: Path, speech_sets: tuple[Path, Path], tmp_path: Path
):
    from whisperops.models import registry

    train, evaluation = speech_sets
    out = tmp_path / "run"
    proc = subprocess.run(
        [*CLI, "finetune", "--train", str(train), "--eval", str(evaluation), "--output", str(out),
         "--model", str(tiny_model), "--name", "tiny-random-ft", "--workers", "2", "--threads", "1",
         "--max-steps", "4", "--eval-steps", "1", "--batch-size", "2", "--lr", "3e-3", "--keep", "2",
         "--freeze-encoder"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "RAY_DEDUP_LOGS": "0"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    # The local Ray runs without a dashboard; Ray Train's cleaner must not warn about it every second.
    assert "Failed to query Ray Train Controller" not in proc.stderr
    assert f"tensorboard --logdir {out.resolve() / 'run' / 'tensorboard'}" in proc.stdout
    assert list((out / "run" / "tensorboard").glob("events.out.tfevents.*"))
    result = json.loads((out / "finetune.json").read_text())
    # --freeze-encoder: both workers trained the decoder on encoder outputs computed once.
    assert "/encoded-" in result["data"]["train"]["path"] and "/encoded-" in result["data"]["eval"]["path"]
    # Both workers trained (one process each, distinct pids).
    records = [json.loads(p.read_text()) for p in (out / "run" / "workers").glob("rank-*.json")]
    assert len({r["pid"] for r in records}) == 2
    # each worker's record says how fast it stepped and how much memory it took
    assert all(r["steps_per_s"] > 0 and 100 < r["peak_rss_mb"] < 3072 for r in records), records
    # Every step was evaluated; Ray kept the 2 checkpoints with the lowest eval WER.
    evals = {h["step"]: h["eval_wer"] for h in result["history"] if "eval_wer" in h}
    assert sorted(evals) == [1, 2, 3, 4]
    kept = {c["step"]: c["eval_wer"] for c in result["checkpoints"]}
    assert len(kept) == 2
    dropped = [w for s, w in evals.items() if s not in kept]
    assert max(kept.values()) <= min(dropped)
    assert result["best_eval_wer"] == min(evals.values())
    assert result["best_step"] in kept and kept[result["best_step"]] == min(kept.values())
    # Exported to CT2 float16 + int8 and registered; the engine loads it by name.
    assert registry.resolve("tiny-random-ft") == Path(result["exported"]["ct2"]["float16"])
    assert (registry.resolve("tiny-random-ft-int8") / "model.bin").exists()
    from whisperops.engine import DecodeOptions, Engine

    rows = [json.loads(line) for line in train.read_text().splitlines()]
    t = Engine("tiny-random-ft", cpu_threads=1).transcribe(
        train.parent / rows[0]["audio"], DecodeOptions(beam_size=1, vad_filter=False)
    )
    assert t.duration > 0


@pytest.mark.slow
def test_local_run_keeps_the_best_checkpoints_exports_and_resumes_after_a_crash(
    tiny_model: Path, speech_sets: tuple[Path, Path], tmp_path: Path
):
    """The default one-worker run trains in this process (no Ray); after a crash it continues with resume."""
    import ray

    from whisperops.models import registry
    from whisperops.training.run import FinetuneResult, TrainingError, finetune, preflight

    if ray.is_initialized():  # an earlier in-process run left one up
        ray.shutdown()
    out = tmp_path / "local"
    args = {"workers": 1, "max_steps": 6, "eval_steps": 2, "threads_per_worker": 0, "name": "tiny-random-local"}
    with pytest.raises(TrainingError, match=r"failed at step 3; .*continue from the last checkpoint with --resume"):
        finetune(_cfg(tiny_model, speech_sets, out, **args, extra={"fail_at_step": 3}))
    checkpoints = out / "run" / "checkpoints"
    assert [p.name for p in checkpoints.iterdir()] == ["checkpoint-2"] and not (out / "finetune.json").exists()
    # A fresh run must not train into the crashed run's checkpoints.
    with pytest.raises(WhisperOpsError, match="add --resume to continue it"):
        preflight(_cfg(tiny_model, speech_sets, out, **args))

    finetune(_cfg(tiny_model, speech_sets, out, **args, resume=True))
    assert not ray.is_initialized()  # Ray Train's local mode: no cluster, no actors
    record = json.loads((out / "run" / "workers" / "rank-0.json").read_text())
    assert record["resumed_step"] == 2 and record["steps_per_s"] > 0
    assert not (out / "ray").exists()  # no Ray Train run: the Trainer kept its own checkpoints
    result = json.loads((out / "finetune.json").read_text())
    assert set(result) == set(FinetuneResult.__dataclass_fields__)  # the same finetune.json as a Ray run
    evals = {h["step"]: h["eval_wer"] for h in result["history"] if "eval_wer" in h}
    assert sorted(evals) == [2, 4, 6]  # the history from before the crash was carried over
    kept = {c["step"]: c["eval_wer"] for c in result["checkpoints"]}
    assert sorted(p.name for p in checkpoints.iterdir()) == [f"checkpoint-{s}" for s in sorted(kept)]
    # --keep 2: the best by eval WER and the latest (to resume from) survive the Trainer's rotation.
    assert len(kept) == 2 and 6 in kept
    assert result["best_eval_wer"] == min(evals.values()) and kept[result["best_step"]] == min(evals.values())
    assert result["best_checkpoint"] == str(checkpoints / f"checkpoint-{result['best_step']}")
    assert list((out / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert registry.resolve("tiny-random-local") == Path(result["exported"]["ct2"]["float16"])


@pytest.mark.slow
def test_killed_worker_resumes_from_last_checkpoint(
    tiny_model: Path, speech_sets: tuple[Path, Path], tmp_path: Path, local_ray
):
    from whisperops.training.run import finetune

    out = tmp_path / "ft"
    cfg = _cfg(
        tiny_model, speech_sets, out, max_steps=6, eval_steps=2, max_failures=1, export=False,
        extra={"slow_step_s": 1.5},
    )  # fmt: skip
    box: dict = {}

    def run() -> None:
        try:
            box["result"] = finetune(cfg)
        except BaseException as err:  # surfaced by the assertion below
            box["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    storage = out / "ray"
    rank1 = out / "run" / "workers" / "rank-1.json"
    deadline = time.monotonic() + 400
    killed = None
    while time.monotonic() < deadline and thread.is_alive():
        # The controller writes its snapshot once a reported checkpoint is registered: from then on a
        # restarted worker group gets it from ray.train.get_checkpoint().
        if list(storage.glob("*/checkpoint_manager_snapshot.json")) and rank1.exists():
            killed = json.loads(rank1.read_text())["pid"]
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.5)
    assert killed is not None, "no checkpoint before the run ended"
    thread.join(timeout=500)
    assert "error" not in box, box.get("error")
    result = box["result"]
    restarted = json.loads(rank1.read_text())
    assert restarted["pid"] != killed
    # The new worker group resumed from the checkpoint of step 2 or 4, not from scratch, and finished.
    assert restarted["resumed_step"] in (2, 4)
    assert json.loads((out / "run" / "workers" / "rank-0.json").read_text())["resumed_step"] in (2, 4)
    assert max(h["step"] for h in result.history) == 6


@pytest.mark.slow
def test_deepspeed_zero2_runs_on_cpu(tiny_model: Path, speech_sets: tuple[Path, Path], tmp_path: Path, local_ray):
    from whisperops.training.run import finetune

    out = tmp_path / "ds"
    result = finetune(_cfg(tiny_model, speech_sets, out, max_steps=2, eval_steps=1, deepspeed="zero2", export=False))
    assert result.best_eval_wer is not None
    ds = json.loads((out / "run" / "deepspeed-zero2.json").read_text())
    assert ds["zero_optimization"]["stage"] == 2 and ds["train_batch_size"] == "auto"
    # DeepSpeed's own checkpoint layout (partitioned optimizer states) shows ZeRO really ran.
    assert list(Path(result.best_checkpoint).rglob("*optim_states.pt"))


@pytest.mark.slow
def test_job_submitted_to_a_local_head_completes(tiny_model: Path, speech_sets: tuple[Path, Path], tmp_path: Path):
    import socket

    from whisperops.training.jobs import submit_job

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    ray_exe = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    assert ray_exe, "ray CLI missing"
    temp = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths have a length limit
    dash = free_port()
    head = subprocess.Popen(
        [ray_exe, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", "--num-cpus=2", "--include-dashboard=true",
         f"--temp-dir={temp}", "--object-store-memory=100000000", "--disable-usage-stats"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        address = f"http://127.0.0.1:{dash}"
        _wait_for_jobs_api(address, head)
        cfg = _cfg(tiny_model, speech_sets, tmp_path / "job", workers=1, max_steps=2, eval_steps=1, export=False)
        outcome = submit_job(cfg, address, wait=True, timeout_s=500)
        assert outcome.status == "SUCCEEDED", outcome.logs[-3000:]
        assert json.loads((tmp_path / "job" / "finetune.json").read_text())["best_eval_wer"] is not None
    finally:
        # Only the processes this test started: the head's own process group.
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(head.pid, sig)
            except ProcessLookupError:
                break
            try:
                head.wait(timeout=20)
                break
            except subprocess.TimeoutExpired:
                continue
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_jobs_api(address: str, head: subprocess.Popen) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert head.poll() is None, "ray start --head exited"
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=2) as resp:
                if resp.status == 200:
                    return
        except urllib.error.HTTPError as err:
            if err.code == 401:  # up, with Ray's token auth on
                return
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"Ray Jobs API did not come up at {address}")


# ---------------------------------------------------------------------------------------------
# Frozen encoder: outputs computed once; the flow; the banking recipe in miniature


def test_cached_encoder_outputs_train_the_same_decoder_as_the_encoder(tiny_model: Path, speech_sets: tuple[Path, Path]):
    import datasets
    import torch

    from whisperops.data.manifest import load_dataset
    from whisperops.training.data import SpeechCollator, encode_split, prepare_split
    from whisperops.training.model import load_for_training

    split = prepare_split(load_dataset(speech_sets[0]), tiny_model, "train")
    encoded = encode_split(split, tiny_model)
    assert encode_split(split, tiny_model).path == encoded.path  # second call: from the cache
    assert encoded.rows == split.rows and encoded.path != split.path
    model = load_for_training(tiny_model, freeze_encoder=True, freeze_embeddings=True, freeze_cross_kv=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("model.encoder.") for n in trainable)
    assert not any("embed" in n or "encoder_attn.k_proj" in n or "encoder_attn.v_proj" in n for n in trainable)
    assert any("encoder_attn.q_proj" in n for n in trainable) and any("fc1" in n for n in trainable)

    collate = SpeechCollator(model.config.decoder_start_token_id)
    plain = datasets.load_from_disk(str(split.path)).with_format("numpy", columns=["input_features", "labels"])
    cached = datasets.load_from_disk(str(encoded.path)).with_format("numpy", columns=["encoder_outputs", "labels"])
    a = collate([plain[i] for i in range(3)])
    b = collate([cached[i] for i in range(3)])
    assert set(b) == {"encoder_outputs", "labels"} and torch.equal(a["labels"], b["labels"])
    model.eval()
    with torch.no_grad():
        loss_a = model(**a).loss.item()
        loss_b = model(**b).loss.item()
        gen_a = model.generate(input_features=a["input_features"], max_new_tokens=8)
        gen_b = model.generate(encoder_outputs=b["encoder_outputs"], max_new_tokens=8)
    assert abs(loss_a - loss_b) < 1e-2 * abs(loss_a)  # float16 storage of the outputs
    assert torch.equal(gen_a, gen_b)


@pytest.mark.slow
def test_finetune_flow_card_compares_base_and_tuned(tiny_model: Path, speech_sets: tuple[Path, Path], tmp_path: Path):
    train, evaluation = speech_sets
    env = {**os.environ, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(tmp_path), "RAY_DEDUP_LOGS": "0"}
    flow = Path(__file__).resolve().parents[1] / "src" / "whisperops" / "flows" / "finetune.py"
    options = {
        "threads_per_worker": 1,
        "ray_num_cpus": 2,
        "ray_object_store_mb": 80,
        "generation_max_length": 12,
        "eval_steps": 2,
        "freeze_embeddings": True,
    }
    proc = subprocess.run(
        [sys.executable, str(flow), "--quiet", "run", "--train", str(train), "--eval", str(evaluation),
         "--output", str(tmp_path / "out"), "--model", str(tiny_model), "--name", "tiny-random-flow",
         "--max-steps", "4", "--batch-size", "2", "--learning-rate", "3e-3", "--freeze-encoder", "true",
         "--beam-size", "1", "--options", json.dumps(options)],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    fields = ["summary", "history", "tuned_model", "prepared"]
    data, shown = read_flow_run("FineTuneFlow", "report", "finetune", fields, tmp_path, env)
    assert data["tuned_model"] == "tiny-random-flow"
    # The frozen-encoder run trained on encoder outputs computed once in start.
    assert all("/encoded-" in p["path"] for p in data["prepared"].values())
    test = data["summary"]["test"]
    assert test["utterances"] == 2 and test["base_wer"] is not None and test["tuned_wer"] is not None
    assert test["wer_relative_change"] == pytest.approx((test["tuned_wer"] - test["base_wer"]) / test["base_wer"])
    assert [h["step"] for h in data["history"] if "eval_wer" in h] == [2, 4]
    assert any("loss" in h for h in data["history"])
    assert "Base vs tuned" in shown and "Loss and eval WER" in shown and "Worst utterances on test" in shown
    assert "data:image/png;base64," in shown and '"type": "table"' in shown and "WER change" in shown


@pytest.mark.slow
def test_mini_banking_recipe_reduces_test_wer(tmp_path: Path, shared_manifest: list[dict]):
    """The recipe's whole path on tiny.en in miniature: synthesis, base eval, training, export, tuned eval."""
    from whisperops.training.recipe import BankingRecipe, run_banking

    real = tmp_path / "real.jsonl"
    short = sorted((r for r in shared_manifest if r.get("duration_s", 99) < 8), key=lambda r: r["duration_s"])[:2]
    real.write_text("".join(json.dumps({**r, "audio": str(r["path"]), "path": str(r["path"])}) + "\n" for r in short))
    voice = (("espeak:en-us",), ("clean",))
    from whisperops.training.recipe import BANKING_TRAINING

    training = {
        **BANKING_TRAINING,
        "max_steps": 8,
        "batch_size": 8,
        "eval_batch_size": 8,
        "learning_rate": 1e-4,
        "warmup_steps": 0,
        "eval_steps": 4,
    }
    recipe = BankingRecipe(
        output=tmp_path / "bank", name="tiny.en-mini-bank", train=24, eval=6, test=8, training=training, real=real,
        beam_size=1, voices={"train": voice, "eval": voice, "test": voice},
    )  # fmt: skip
    report = run_banking(recipe)
    on_disk = json.loads((tmp_path / "bank" / "report.json").read_text())
    assert on_disk["model"] == "tiny.en-mini-bank" == report["model"]
    for side in ("base", "tuned"):
        assert isinstance(on_disk[side]["test_wer"], float) and isinstance(on_disk[side]["real_wer"], float)
    assert on_disk["tuned"]["test_wer"] < on_disk["base"]["test_wer"]
    assert on_disk["real_check"] == f"scored on {real}"
    # One worker on this machine: trained in this process, the Trainer's own checkpoints, no Ray run.
    assert list((tmp_path / "bank" / "run" / "run" / "checkpoints").glob("checkpoint-*"))
    assert not (tmp_path / "bank" / "run" / "ray").exists()


def test_recipe_checks_real_and_training_settings_before_any_synthesis(tmp_path: Path):
    from whisperops.errors import OptionError
    from whisperops.training.recipe import BankingRecipe, run_banking

    with pytest.raises(OptionError, match=r"--real .*missing.jsonl: no such manifest"):
        run_banking(BankingRecipe(output=tmp_path / "a", real=tmp_path / "missing.jsonl"))
    said: list[str] = []
    with pytest.raises(OptionError, match="'max_step' is not a FinetuneConfig field"):
        run_banking(BankingRecipe(output=tmp_path / "b", training={"max_step": 3}), progress=said.append)
    assert any("real-speech regression check skipped" in line for line in said), said
    assert not (tmp_path / "a" / "data").exists() and not (tmp_path / "b" / "data").exists()


@pytest.mark.slow
def test_lora_run_merges_adapters_into_an_exported_model_the_engine_loads(
    tiny_model: Path, speech_sets: tuple[Path, Path], tmp_path: Path
):
    import torch
    from safetensors.torch import load_file

    from whisperops.engine import DecodeOptions, Engine
    from whisperops.models import registry
    from whisperops.training.run import finetune

    cfg = _cfg(
        tiny_model, speech_sets, tmp_path / "lora", workers=1, max_steps=3, eval_steps=3, lora=True, lora_rank=4,
        name="tiny-random-lora", learning_rate=5e-2,
    )  # fmt: skip
    result = finetune(cfg)  # one worker: local mode, in this process
    assert (result.best_checkpoint / "adapter_config.json").exists()  # adapters, not full weights, were trained
    merged = load_file(Path(result.exported["hf"]) / "model.safetensors")
    base = load_file(tiny_model / "model.safetensors")
    assert not any("lora" in k for k in merged)  # merged into plain Whisper weights
    key = "model.decoder.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(merged[key], base[key])  # the adapters changed the weights they wrap
    assert torch.equal(merged["model.decoder.layer_norm.weight"], base["model.decoder.layer_norm.weight"])
    assert registry.resolve("tiny-random-lora") == Path(result.exported["ct2"]["float16"])
    rows = [json.loads(line) for line in speech_sets[0].read_text().splitlines()]
    t = Engine("tiny-random-lora", cpu_threads=1).transcribe(
        speech_sets[0].parent / rows[0]["audio"], DecodeOptions(beam_size=1, vad_filter=False)
    )
    assert t.duration > 0
