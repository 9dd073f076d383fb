"""Reproduced documents, one module each, behind a registry.

``EXPERIMENTS`` maps a name to the dotted path of its module; each module has a frozen
config dataclass with ``quick`` / ``full`` presets and a ``run_*`` function that returns
data and writes its report.
"""

from __future__ import annotations

EXPERIMENTS: dict[str, str] = {
    "vonenet-fgsm": "advlab.experiments.vonenet",
    "momentum": "advlab.experiments.momentum",
}

__all__ = ["EXPERIMENTS"]
