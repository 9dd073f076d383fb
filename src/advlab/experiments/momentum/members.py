"""The models of a run (:class:`_Member`): their identities and training configs, FLOP
counts, and the ImageNet models built from timm."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab._io import config_hash
from advlab.experiments.momentum.config import ModelSpec, MomentumConfig
from advlab.train.cached import checkpoint_dir


@dataclass
class _Member:
    """A model of the run. ``key`` identifies it in every cache key: the sha256 of its
    weights once they exist (training is deterministic only for a fixed thread count, so a
    retrained model may differ and must not reuse the old predictions), a provisional
    ``untrained:...`` key before that."""

    spec: ModelSpec
    key: str
    flops: float
    train_cost: float = 0.0
    checkpoint: Path | None = None
    module: nn.Module | None = None
    card: dict[str, Any] = field(default_factory=dict)
    train_cfg: Any = None
    config_key: str = ""

    @property
    def label(self) -> str:
        return f"{self.spec.arch} ({self.spec.role})" if self.spec.arch != self.spec.role \
            else self.spec.role


def _zoo_flops(arch: str) -> float:
    """FLOPs of one forward pass of zoo model ``arch`` on one example (the registry measures
    and caches them, see :func:`advlab.models.model_info`)."""
    from advlab.models import model_info

    flops = model_info(arch).forward_flops
    if flops is None:
        raise RuntimeError(f"cannot count the FLOPs of zoo model {arch!r}: its forward pass "
                           f"fails on a zero input of its input_shape")
    return float(flops)


_OVERHEAD = 2e6  # FLOP-equivalents per model call per image (kernel launch, memory)


def _mnist_train_cfgs(cfg: MomentumConfig, cache_dir: Path) -> dict[str, Any]:
    from advlab.train import TrainConfig

    out: dict[str, Any] = {}
    for s in cfg.normal:
        out[s.role] = TrainConfig(s.arch, epochs=cfg.train_epochs, train_size=cfg.train_size,
                                  test_size=cfg.train_test_size, seed=cfg.seed + s.seed,
                                  batch_size=cfg.train_batch_size, device=cfg.device,
                                  data_root=cfg.data_root)
    return out


def _normal_checkpoint(tc: Any, cache_dir: Path) -> Path:
    return checkpoint_dir(tc, cache_dir)


def _complete(path: Path | None, epochs: int) -> bool:
    from advlab.train.checkpoint import read_card

    if path is None:
        return False
    try:
        return read_card(path).get("epochs_completed") == epochs
    except ValueError:
        return False


def _advtrain_cfg(cfg: MomentumConfig, spec: ModelSpec, members: dict[str, _Member]) -> Any:
    from advlab.train.advtrain import AdvTrainConfig

    return AdvTrainConfig(
        spec.arch, static=tuple(str(members[r].checkpoint) for r in spec.static),
        eps=float(_advtrain_eps(cfg)), schedule=cfg.advtrain_schedule,
        epochs=cfg.advtrain_epochs, train_size=cfg.advtrain_size,
        batch_size=cfg.train_batch_size,
        test_size=cfg.train_test_size, seed=cfg.seed + spec.seed, device=cfg.device,
        data_root=cfg.data_root)


def _advtrain_eps(cfg: MomentumConfig) -> float | None:
    """The eps of ensemble adversarial training: ``advtrain_eps``, else the attack's eps
    (None while the eps rule has not chosen it)."""
    return cfg.advtrain_eps or cfg.eps


def _build_members(cfg: MomentumConfig, cache_dir: Path) -> dict[str, _Member]:
    """Member identities, FLOPs and (for MNIST) training configs; no training, no weights."""
    members: dict[str, _Member] = {}
    if cfg.suite == "mnist":
        tcs = _mnist_train_cfgs(cfg, cache_dir)
        for s in cfg.normal:
            tc = tcs[s.role]
            fl = _zoo_flops(s.arch)
            n = tc.train_size or 60000
            ck = config_hash(tc.identity(), tc.epochs)
            members[s.role] = _Member(
                s, key=f"untrained:{s.role}:{ck}", flops=fl,
                train_cost=tc.epochs * n * (3 * fl + _OVERHEAD),
                checkpoint=_normal_checkpoint(tc, cache_dir), train_cfg=tc, config_key=ck)
        for s in cfg.adversarial:
            fl = _zoo_flops(s.arch)
            ident = {"arch": s.arch, "static": [members[r].config_key for r in s.static],
                     "eps": _advtrain_eps(cfg), "epochs": cfg.advtrain_epochs,
                     "batch_size": cfg.train_batch_size,
                     "train_size": cfg.advtrain_size, "test_size": cfg.train_test_size,
                     "schedule": cfg.advtrain_schedule, "seed": cfg.seed + s.seed,
                     "recipe": "advtrain-defaults-v1"}
            src = [fl] + [members[r].flops for r in s.static]
            n = cfg.advtrain_size or 60000
            ck = config_hash(ident)
            members[s.role] = _Member(
                s, key=f"untrained:{s.role}:{ck}", flops=fl, config_key=ck,
                train_cost=cfg.advtrain_epochs * n * (
                    3 * fl + 0.5 * 2 * sum(src) / len(src) + 2 * _OVERHEAD))
    else:
        for s in cfg.models:
            members[s.role] = _Member(
                s, key=f"timm:{s.arch}:" + ("pretrained" if cfg.pretrained
                                            else f"random-init-seed{cfg.seed + s.seed}"),
                flops=0.0)
    return members


def _load_imagenet_members(cfg: MomentumConfig, members: dict[str, _Member]) -> None:
    from advlab.models.imagenet import create_timm

    for m in members.values():
        torch.manual_seed(cfg.seed + m.spec.seed)
        module = create_timm(m.spec.arch, pretrained=cfg.pretrained)
        m.module = module.to(cfg.device).eval().requires_grad_(False)
        m.key = f"timm:{m.spec.arch}:{_weights_hash(m.module)}"
        shape = tuple(module.input_size)
        from torch.utils.flop_counter import FlopCounterMode

        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            m.module(torch.zeros(1, *shape, device=cfg.device))
        m.flops = float(fc.get_total_flops())


def _weights_hash(module: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]

