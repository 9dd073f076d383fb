"""Shared machinery of the reproduced experiments: cached training, cached results, timing.

* :func:`ensure_trained` trains a zoo model or reuses a cached checkpoint whose card matches
  the resolved training config (a killed training resumes from its last epoch).
* :class:`ResultCache` stores JSON results keyed by the hash of the resolved config that
  produced them, written atomically, so a killed experiment resumes and a repeated one
  recomputes nothing. ``cache.calls`` counts the computations actually run.
* :class:`TensorCache` does the same for tensors (adversarial examples), in safetensors.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from advlab._io import atomic_write_bytes, atomic_write_json
from advlab.train.checkpoint import bytes_to_state, read_card, state_to_bytes

__all__ = ["config_hash", "ensure_trained", "ResultCache", "TensorCache", "default_cache_dir",
           "jsonable"]

log = logging.getLogger(__name__)


def jsonable(obj: Any) -> Any:
    """A JSON-ready copy of configs (dataclasses, enums, tensors, paths)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        d = {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        name = getattr(obj, "name", None)
        if isinstance(name, str):
            d["name"] = name
        return d
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "value") and hasattr(obj, "name") and not isinstance(obj, (int, float)):
        return obj.value  # enums
    if callable(obj):
        return getattr(obj, "__name__", repr(obj))
    return obj


def config_hash(*parts: Any) -> str:
    """A short stable hash of JSON-able config parts."""
    text = json.dumps([jsonable(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """``$ADVLAB_CACHE`` or ``~/.cache/advlab``."""
    return Path(os.environ.get("ADVLAB_CACHE", Path.home() / ".cache" / "advlab"))


def ensure_trained(cfg: Any, cache_dir: str | os.PathLike[str], *, progress: bool = True,
                   train_fn: Callable[..., Any] | None = None) -> Path:
    """Checkpoint directory of ``cfg`` (a :class:`~advlab.train.TrainConfig`), training it
    only if no complete checkpoint with the same config is cached."""
    from advlab.train import fit

    key = config_hash(cfg.identity(), cfg.epochs)
    out = Path(cache_dir) / "checkpoints" / f"{cfg.model}-{key}"
    try:
        card = read_card(out)
        if card.get("epochs_completed") == cfg.epochs:
            log.info("reusing cached checkpoint %s", out)
            return out
    except ValueError:
        pass
    (train_fn or fit)(cfg, out, resume=True, progress=progress)
    return out


class ResultCache:
    """JSON results on disk keyed by config hash; ``get_or_compute`` runs ``fn`` only once."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.calls = 0
        self.hits = 0

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.json"

    def get_or_compute(self, kind: str, config: Any, fn: Callable[[], Any]) -> Any:
        key = config_hash(config)
        p = self.path(kind, key)
        if p.is_file():
            try:
                stored = json.loads(p.read_text())
                self.hits += 1
                return stored["result"]
            except (json.JSONDecodeError, KeyError):
                log.warning("ignoring unreadable cache entry %s", p)
        result = fn()
        self.calls += 1
        atomic_write_json(p, {"config": jsonable(config), "result": jsonable(result)})
        return jsonable(result)


class TensorCache:
    """Tensors on disk (safetensors) keyed by config hash."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.calls = 0
        self.hits = 0

    def get_or_compute(self, kind: str, config: Any,
                       fn: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        key = config_hash(config)
        p = self.root / kind / f"{key}.safetensors"
        if p.is_file():
            try:
                out = bytes_to_state(p.read_bytes(), str(p))
                self.hits += 1
                return out
            except ValueError:
                log.warning("ignoring unreadable cache entry %s", p)
        tensors = fn()
        self.calls += 1
        atomic_write_bytes(p, state_to_bytes(tensors, {"config": json.dumps(jsonable(config),
                                                                             sort_keys=True)}))
        return tensors
