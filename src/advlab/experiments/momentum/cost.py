"""What a run costs in FLOPs without running it (:func:`estimate_cost`), and the full
profile's projected time at a measured rate."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from advlab.experiments.momentum.config import MomentumConfig
from advlab.experiments.momentum.members import _OVERHEAD, _build_members
from advlab.experiments.momentum.plan import _chunks_of, _plan

log = logging.getLogger(__name__)


def _projection(cfg: MomentumConfig, rate: float, flops: dict[str, float]
                ) -> dict[str, Any] | None:
    """Projected time of the full profile of this suite at the measured GFLOP/s."""
    if not (rate > 0) or math.isnan(rate):
        return None
    try:
        full = MomentumConfig.preset("full", cfg.suite, device=cfg.device,
                                     labels=cfg.labels, eps=cfg.eps, normal=cfg.normal,
                                     adversarial=cfg.adversarial,
                                     **({} if cfg.suite == "mnist" else
                                        {"pretrained": cfg.pretrained}))
        cost = estimate_cost(full, flops=None if cfg.suite == "mnist" else flops)
    except Exception as e:  # noqa: BLE001 - a projection must never break the report
        log.warning("no projection of the full profile: %s", e)
        return None
    secs = cost["total_gflop"] / rate
    return {"full_gflop": cost["total_gflop"], "train_gflop": cost["train_gflop"],
            "attack_gflop": cost["attack_gflop"], "seconds": secs,
            "text": f"Projected time of the full profile ({cost['attack_units']} attack work "
                    f"units, {cost['total_gflop']:.0f} GFLOP of which "
                    f"{cost['train_gflop']:.0f} training) at this run's measured "
                    f"{rate:.2f} GFLOP/s: {secs / 3600:.1f} h (a FLOP-count estimate; "
                    f"conv-heavy models run at a different rate than small ones)."}


def estimate_cost(cfg: MomentumConfig, flops: dict[str, float] | None = None
                  ) -> dict[str, Any]:
    """FLOP count of a whole run without a cache (nothing is trained or attacked).

    ``flops`` maps roles to forward FLOPs per image; by default they are counted from the
    architectures (MNIST; ImageNet needs the models built, so pass them)."""
    import dataclasses

    members = {}
    rule = cfg.eps is None
    if rule:  # the cost does not depend on the eps value the rule will pick
        cfg = dataclasses.replace(cfg, eps=max(cfg.eps_grid))
    if flops is None:
        if cfg.suite != "mnist":
            raise ValueError("pass flops=... for the imagenet suite (FLOPs per forward pass)")
        members = _build_members(cfg, Path("/nonexistent-cache"))
        flops = {r: m.flops for r, m in members.items()}
    train = sum(m.train_cost for m in members.values())
    plan = _plan(cfg)
    seen = set()
    attack = 0.0
    targets = sum(flops.values()) + _OVERHEAD * len(flops)
    n_units = 0
    if rule:  # the eps rule: I-FGSM from every normal source at every eps of the grid
        for s in cfg.normal:
            src = flops[s.role] + _OVERHEAD
            n_units += len(cfg.eps_grid)
            attack += len(cfg.eps_grid) * cfg.eps_rule_images * (2 * cfg.steps + 1) * src
    for u in plan.units():
        src = sum(flops[r] for r in u.source) + _OVERHEAD * len(u.source)
        for s, e in _chunks_of(u, cfg.chunk_size):
            ident = (u.source, u.fuse, tuple(sorted(u.attack.key().items())), s, e)
            if ident in seen:
                continue
            seen.add(ident)
            n_units += 1
            attack += (e - s) * (2 * u.attack.passes * src + targets +
                                 (2 * src if len(u.source) > 1 else 0))
    return {"train_gflop": train / 1e9, "attack_gflop": attack / 1e9,
            "total_gflop": (train + attack) / 1e9, "attack_units": n_units}

