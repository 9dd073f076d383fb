"""Training: supervised training and adversarial fine-tuning (``core``), ensemble adversarial
training (``advtrain``), checkpoints (``checkpoint``) and "train unless cached" (``cached``).
"""

from __future__ import annotations

from advlab.train.checkpoint import CheckpointError
from advlab.train.core import (
    QUICK,
    FinetuneConfig,
    TrainConfig,
    TrainResult,
    evaluate_accuracy,
    finetune_adversarial,
    fit,
    load_split,
    quick_profile,
)

__all__ = ["TrainConfig", "FinetuneConfig", "TrainResult", "fit", "finetune_adversarial",
           "load_split", "evaluate_accuracy", "QUICK", "quick_profile", "CheckpointError"]
