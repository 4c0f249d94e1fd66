"""Fine-tuning: prepared datasets, Seq2SeqTrainer in-process or on Ray Train, DeepSpeed/LoRA, export to CTranslate2.

Entry points: :func:`whisperops.training.run.finetune` (the CLI's ``whisperops finetune``),
:func:`whisperops.training.jobs.submit_job` (``--submit``) and :mod:`whisperops.training.recipe`.
Every setting is a :class:`whisperops.training.config.FinetuneConfig` field.
"""
