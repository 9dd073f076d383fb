"""Checkpoints: a safetensors weights file plus a JSON card, written atomically.

A checkpoint is a directory::

    CKPT/model.safetensors   the model's state_dict (tensors only, no pickle)
    CKPT/card.json           model name and kwargs, training config, data checksum,
                             seed, metrics, advlab version, sha256 of the weights file

Loading rebuilds the model from the registry with the card's name and kwargs, then loads
the tensors; nothing is ever unpickled, so a crafted pickle is refused rather than run.

Example:
    >>> import tempfile
    >>> from advlab.models import create
    >>> from advlab.train.checkpoint import save_checkpoint, load_checkpoint
    >>> d = tempfile.mkdtemp()
    >>> _ = save_checkpoint(d, create("mnist-mlp"), "mnist-mlp", {}, {"epochs": 0})
    >>> model, card = load_checkpoint(d)
    >>> card["model"]
    'mnist-mlp'
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

import advlab
from advlab._io import atomic_write_bytes, atomic_write_json, bytes_to_state, state_to_bytes

__all__ = ["save_checkpoint", "load_checkpoint", "read_card", "CheckpointError"]

WEIGHTS = "model.safetensors"
CARD = "card.json"


class CheckpointError(ValueError):
    """The path is not a valid advlab checkpoint."""


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, name: str,
                    model_kwargs: dict[str, Any], card_extra: dict[str, Any]) -> Path:
    """Write ``model``'s weights and its card into directory ``path`` (atomically)."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    data = state_to_bytes(dict(model.state_dict()))
    atomic_write_bytes(out / WEIGHTS, data)
    card = {
        "format": "advlab-checkpoint/1",
        "advlab_version": advlab.__version__,
        "model": name,
        "model_kwargs": model_kwargs,
        "weights": WEIGHTS,
        "weights_sha256": hashlib.sha256(data).hexdigest(),
        **card_extra,
    }
    atomic_write_json(out / CARD, card)
    return out


def _resolve(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.is_dir():
        return p
    if p.is_file() and p.name in (CARD, WEIGHTS):
        return p.parent
    if p.is_file():
        raise CheckpointError(
            f"{p} is a file, not an advlab checkpoint: expected a directory holding {CARD} and "
            f"{WEIGHTS} (pickled .pt/.pth files are refused: they can run arbitrary code)")
    raise CheckpointError(f"checkpoint {p} does not exist")


def read_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON card of a checkpoint directory."""
    d = _resolve(path)
    card_path = d / CARD
    if not card_path.is_file():
        raise CheckpointError(f"{d} is not an advlab checkpoint: {CARD} is missing")
    try:
        card = json.loads(card_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{card_path} is not valid JSON: {e}") from None
    if not isinstance(card, dict) or "model" not in card:
        raise CheckpointError(f"{card_path} has no 'model' entry; not an advlab card")
    return card


def load_checkpoint(path: str | os.PathLike[str], device: str | torch.device = "cpu",
                    overrides: dict[str, Any] | None = None,
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint from its card and load its weights (eval mode).

    ``overrides`` replaces keyword arguments of the model's constructor that do not change
    its parameters, e.g. ``{"complex_cell": "safe"}`` for the finite-gradient twin of a
    student-exact VOne model (the weights must still load strictly).
    """
    from advlab.models import create

    d = _resolve(path)
    card = read_card(d)
    wpath = d / card.get("weights", WEIGHTS)
    if not wpath.is_file():
        raise CheckpointError(f"{d} is not an advlab checkpoint: {wpath.name} is missing")
    data = wpath.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if card.get("weights_sha256") and card["weights_sha256"] != digest:
        raise CheckpointError(f"{wpath} does not match its card: sha256 {digest}, card says "
                              f"{card['weights_sha256']}")
    state = bytes_to_state(data, str(wpath), CheckpointError)
    model = create(card["model"], **{**card.get("model_kwargs", {}), **(overrides or {})})
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), card
