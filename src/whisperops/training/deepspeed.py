"""DeepSpeed ZeRO configs for the Hugging Face Trainer.

Batch sizes, accumulation, learning rate and precision are ``"auto"``: the Trainer fills them from
its own arguments *per run*. A fixed ``train_batch_size`` is micro batch x accumulation x world size,
so a file written for one worker breaks as soon as the run has two.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from whisperops.errors import OptionError
from whisperops.training.config import DEEPSPEED_STAGES


def zero_config(stage: str) -> dict[str, Any]:
    """ZeRO-2, ZeRO-3, or ZeRO-3 with optimizer state and parameters offloaded to CPU memory."""
    if stage not in DEEPSPEED_STAGES:
        raise OptionError(f"--deepspeed {stage}: use one of {', '.join(DEEPSPEED_STAGES)}")
    zero: dict[str, Any] = {
        "stage": 2 if stage == "zero2" else 3,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage == "zero2":
        zero.update({"allgather_partitions": True, "allgather_bucket_size": 2e8, "reduce_scatter": True})
    else:
        zero.update(
            {
                "stage3_prefetch_bucket_size": "auto",
                "stage3_param_persistence_threshold": "auto",
                "sub_group_size": 1e9,
                # Save full weights at checkpoints, so export needs no zero_to_fp32 step.
                "stage3_gather_16bit_weights_on_model_save": True,
            }
        )
    if stage == "zero3-offload":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    return {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "fp16": {"enabled": "auto"},
        "bf16": {"enabled": "auto"},
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"},
        },
        "scheduler": {
            "type": "WarmupDecayLR",
            "params": {
                "warmup_min_lr": "auto",
                "warmup_max_lr": "auto",
                "warmup_num_steps": "auto",
                "total_num_steps": "auto",
            },
        },
        "zero_optimization": zero,
        "steps_per_print": 1000000,
        "wall_clock_breakdown": False,
    }


def write_config(stage: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(zero_config(stage), indent=2))
    return path
