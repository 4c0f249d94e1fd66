"""Fine-tuning settings: one serialisable object shared by the CLI, the flow, the recipe, the workers and jobs.

Each field's default and help text are declared here once (:func:`whisperops.config.setting`); the
``whisperops finetune`` options and ``FineTuneFlow``'s parameters are built from them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from whisperops.config import setting
from whisperops.errors import OptionError

DEEPSPEED_STAGES = ("zero2", "zero3", "zero3-offload")
MODES = ("auto", "local", "ray")
MAX_AUDIO_S = 30.0
MAX_LABEL_TOKENS = 448
CHECKPOINTS = "checkpoints"  # RUN/checkpoints: the Trainer's own, in local mode


@dataclass(kw_only=True)
class FinetuneConfig:
    """Everything one fine-tuning run needs; ``to_json``/``from_json`` carry it to workers and jobs."""

    train: str = setting("", help="Training set: JSONL manifest, audiofolder CSV or folder.")
    eval: str = setting("", help="Held-out set for eval WER (picks the best checkpoint).")
    output: str = setting("", help="Run folder: checkpoints, TensorBoard, exported model.")
    model: str = setting("tiny.en", help="Base model: registry name or directory.")
    name: str | None = setting(None, help="Register the result under this name (default MODEL-OUTPUT).")
    mode: str = setting(
        "auto",
        help="local: train in this process (Ray Train's local mode, no Ray processes); ray: Ray Train workers "
        "(retries, several workers, clusters); auto: ray for --workers 2+, --ray-address, --max-failures or "
        "--deepspeed, else local.",
    )
    workers: int = setting(1, help="Ray Train workers (processes).")
    threads_per_worker: int = setting(0, help="CPU threads per worker (0: cores / workers).")
    max_steps: int = setting(-1, help="Optimizer steps (wins over --epochs).")
    epochs: float = setting(3.0, help="Passes over the training set.")
    learning_rate: float = setting(1e-5, help="Peak learning rate.")
    batch_size: int = setting(8, help="Per-worker batch size.")
    eval_batch_size: int = setting(8, help="Per-worker batch size of the evaluations.")
    gradient_accumulation_steps: int = setting(1, help="Gradient accumulation steps.")
    warmup_steps: int = setting(0, help="Linear warm-up steps of the learning rate.")
    weight_decay: float = setting(0.0, help="AdamW weight decay.")
    eval_steps: int = setting(0, help="Evaluate + checkpoint every N steps (0: ~5 per run).")
    save_total_limit: int = setting(
        2, help="Checkpoints kept: on Ray the best by eval WER; locally the best and the latest (to resume from)."
    )
    max_failures: int = setting(
        0, help="Worker failures Ray Train recovers from, from the last checkpoint (> 0 trains on Ray Train)."
    )
    resume: bool = setting(False, help="Continue a crashed local run from the last checkpoint in --output.")
    deepspeed: str | None = setting(None, help="zero2 | zero3 | zero3-offload (GPU; runs on Ray Train).")
    lora: bool = setting(False, help="Train LoRA adapters (merged into the weights on export).")
    lora_rank: int = setting(8, help="LoRA rank.")
    freeze_encoder: bool = setting(False, help="Train the decoder only, on encoder outputs computed once per clip.")
    cache_encoder: bool = setting(
        True, help="With --freeze-encoder (no LoRA): encode each clip once, train the decoder on the outputs."
    )
    # Keep the decoder's word embeddings (tied to the output layer) and its cross-attention keys/values
    # fixed: a third fewer FLOPs per decoder step, and general English moves less.
    freeze_embeddings: bool = setting(False, help="Keep the token embeddings fixed.")
    freeze_cross_kv: bool = setting(False, help="Keep the decoder's cross-attention key/value projections fixed.")
    generation_max_length: int = setting(0, help="Tokens generated per eval clip (0: from the longest label).")
    generation_num_beams: int = setting(1, help="Beam width of the eval generations.")
    seed: int = setting(42, help="Random seed of the Trainer.")
    ray_address: str | None = setting(None, help="Join this Ray cluster (default: a local Ray).")
    ray_num_cpus: int = setting(0, help="CPUs of the local Ray (0: every core).")
    ray_object_store_mb: int = setting(0, help="Object store of the local Ray in MB (0: Ray's default).")
    storage_path: str | None = setting(None, help="Ray Train run storage (default OUTPUT/ray).")
    export: bool = setting(True, help="Export to CTranslate2 (float16 + int8) and register at the end.")
    quantizations: tuple[str, ...] = setting(("float16", "int8"), help="CTranslate2 types exported.")
    fp16: bool | None = setting(None, help="Mixed precision (default: on GPUs only).")
    language: str = setting("en", help="Language of the eval WER normaliser.")
    cache_dir: str | None = setting(None, help="Prepared features (default: the whisperops cache).")
    extra: dict[str, Any] = setting(help="Test hooks and rarely used knobs.", factory=dict)

    @property
    def output_path(self) -> Path:
        return Path(self.output)

    @property
    def run_name(self) -> str:
        return "finetune"

    @property
    def registered_name(self) -> str:
        if self.name:
            return self.name
        base = Path(self.model).name if Path(self.model).exists() else self.model
        return f"{base}-{self.output_path.resolve().name}"

    def to_json(self) -> str:
        data = asdict(self)
        data["quantizations"] = list(self.quantizations)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FinetuneConfig:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls.from_dict({k: v for k, v in data.items() if k in known})

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "fine-tuning settings") -> FinetuneConfig:
        """A config from field values; an unknown name is one line naming it (``source`` says where from)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise OptionError(f"{source}: {', '.join(map(repr, unknown))} is not a FinetuneConfig field")
        data = dict(data)
        if data.get("quantizations") is not None:
            data["quantizations"] = tuple(data["quantizations"])
        return cls(**data)


__all__ = ["CHECKPOINTS", "DEEPSPEED_STAGES", "MAX_AUDIO_S", "MAX_LABEL_TOKENS", "MODES", "FinetuneConfig"]
