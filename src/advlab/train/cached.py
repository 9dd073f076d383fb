"""Train unless cached: the checkpoint of a training config, trained only once.

The checkpoint of a config lives in ``CACHE/checkpoints/PREFIXMODEL-HASH``, where ``HASH`` is
:func:`~advlab._io.config_hash` of the config's identity and epochs. A complete checkpoint
(all epochs done) is reused; a killed training resumes from its last epoch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from advlab._io import config_hash
from advlab.train.checkpoint import read_card

__all__ = ["checkpoint_dir", "ensure_checkpoint", "ensure_trained", "ensure_advtrained"]

log = logging.getLogger(__name__)


def checkpoint_dir(cfg: Any, cache_dir: str | os.PathLike[str], prefix: str = "") -> Path:
    """Where the checkpoint of ``cfg`` (a config with ``model``, ``epochs`` and
    ``identity()``) is cached."""
    key = config_hash(cfg.identity(), cfg.epochs)
    return Path(cache_dir) / "checkpoints" / f"{prefix}{cfg.model}-{key}"


def ensure_checkpoint(cfg: Any, cache_dir: str | os.PathLike[str],
                      train_fn: Callable[..., Any], *, prefix: str = "",
                      progress: bool = True) -> Path:
    """The checkpoint directory of ``cfg``, running ``train_fn(cfg, out, resume=True,
    progress=...)`` only if no complete checkpoint of the same config is cached."""
    out = checkpoint_dir(cfg, cache_dir, prefix)
    try:
        card = read_card(out)
        if card.get("epochs_completed") == cfg.epochs:
            log.info("reusing cached checkpoint %s", out)
            return out
    except ValueError:
        pass
    train_fn(cfg, out, resume=True, progress=progress)
    return out


def ensure_trained(cfg: Any, cache_dir: str | os.PathLike[str], *, progress: bool = True,
                   train_fn: Callable[..., Any] | None = None) -> Path:
    """The checkpoint of ``cfg`` (a :class:`~advlab.train.TrainConfig`), trained by
    :func:`~advlab.train.fit` (or ``train_fn``) unless cached."""
    from advlab.train.core import fit

    return ensure_checkpoint(cfg, cache_dir, train_fn or fit, progress=progress)


def ensure_advtrained(cfg: Any, cache_dir: str | os.PathLike[str], *,
                      progress: bool = True) -> Path:
    """The checkpoint of ``cfg`` (an :class:`~advlab.train.advtrain.AdvTrainConfig`, its
    static weights part of the identity), trained by ensemble adversarial training unless
    cached."""
    from advlab.train.advtrain import adv_train

    return ensure_checkpoint(cfg, cache_dir, adv_train, prefix="advtrain-", progress=progress)
