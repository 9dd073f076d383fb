"""Evaluation: robust accuracy and transfer tables (``core``), the sound worst case and the
trustworthiness audit (``audit``), and the same evaluation sharded over torchrun processes
(``distributed``).

Evaluation returns data (dataclasses and rows); writing files is the caller's business.
"""

from __future__ import annotations

from advlab.evaluate.core import (
    PerExample,
    RobustnessResult,
    TargetFn,
    batch_seed,
    clean_accuracy,
    evaluate_attack,
    iterate_batches,
    predict,
    random_targets,
    summarize,
    transfer_matrix,
)

__all__ = ["RobustnessResult", "PerExample", "predict", "clean_accuracy", "evaluate_attack",
           "iterate_batches", "summarize", "batch_seed", "transfer_matrix", "random_targets",
           "TargetFn"]
