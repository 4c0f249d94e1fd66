"""Fine-tuning settings: one serialisable object shared by the CLI, the Ray workers and the Jobs API."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

DEEPSPEED_STAGES = ("zero2", "zero3", "zero3-offload")
MAX_AUDIO_S = 30.0
MAX_LABEL_TOKENS = 448


@dataclass
class FinetuneConfig:
    """Everything one fine-tuning run needs; ``to_json``/``from_json`` carry it to workers and jobs."""

    train: str
    eval: str
    output: str
    model: str = "tiny.en"
    name: str | None = None  # registered model name; default: "<model>-<output folder name>"
    workers: int = 1
    threads_per_worker: int = 0  # 0: the machine's cores split evenly between workers
    max_steps: int = -1  # > 0 wins over epochs
    epochs: float = 3.0
    learning_rate: float = 1e-5
    batch_size: int = 8  # per worker
    eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    warmup_steps: int = 0
    weight_decay: float = 0.0
    eval_steps: int = 0  # 0: about five evaluations over the run
    save_total_limit: int = 2  # Ray keeps this many checkpoints (best by eval WER)
    max_failures: int = 0
    deepspeed: str | None = None  # zero2 | zero3 | zero3-offload
    lora: bool = False
    lora_rank: int = 8
    freeze_encoder: bool = False
    cache_encoder: bool = True  # with freeze_encoder (no LoRA): encode each clip once, train the decoder
    # Keep the decoder's word embeddings (tied to the output layer) and its cross-attention keys/values
    # fixed: a third fewer FLOPs per decoder step, and general English moves less.
    freeze_embeddings: bool = False
    freeze_cross_kv: bool = False
    generation_max_length: int = 0  # 0: from the longest label
    generation_num_beams: int = 1
    seed: int = 42
    ray_address: str | None = None  # None: a local Ray sized to the machine
    ray_num_cpus: int = 0  # local Ray only; 0: every core
    ray_object_store_mb: int = 0  # local Ray only; 0: Ray's default
    storage_path: str | None = None  # Ray run storage; default OUTPUT/ray
    export: bool = True  # CT2 float16 + int8 and registration at the end
    quantizations: tuple[str, ...] = ("float16", "int8")
    fp16: bool | None = None  # None: on GPUs only
    language: str = "en"
    cache_dir: str | None = None  # prepared features; default whisperops cache
    extra: dict[str, Any] = field(default_factory=dict)  # test hooks and rarely used knobs

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
        data = {k: v for k, v in data.items() if k in known}
        if "quantizations" in data:
            data["quantizations"] = tuple(data["quantizations"])
        return cls(**data)
