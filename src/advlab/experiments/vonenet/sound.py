"""Part 2, the sound evaluation: the attacks of the protocol, the per-example worst case
over attacks and noise draws (:func:`sound_evaluation`) and the eps sweep
(:func:`eps_sweep`), with the noise-draw helpers the work units share."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advlab._io import Store, jsonable
from advlab.attacks import APGD, APGDDLR, FGSM, MIFGSM, PGD
from advlab.evaluate import predict
from advlab.experiments.vonenet.config import VoneNetConfig
from advlab.models.vone import finite_gradient_twin
from advlab.stats import wilson_interval


# -- helpers ----------------------------------------------------------------------------
def _is_random(model: nn.Module) -> bool:
    return bool(getattr(model, "randomized", False))


def _reseed(model: nn.Module, seed: int) -> None:
    fn = getattr(model, "reseed_noise", None)
    if callable(fn):
        fn(seed)


@torch.no_grad()
def _correct_over_draws(model: nn.Module, x: torch.Tensor, y: torch.Tensor, draws: int,
                        seed: int) -> torch.Tensor:
    """``[draws, N]`` booleans: is each example classified correctly in each noise draw.
    Draw ``d`` uses the noise seed ``seed + d`` whatever the input, so the draws are paired
    across attacks (the same network sample judges every attack)."""
    rows = []
    for d in range(draws if _is_random(model) else 1):
        _reseed(model, seed + d)
        rows.append((predict(model, x) == y).cpu())
    out = torch.stack(rows)
    return out.expand(draws, -1) if out.shape[0] == 1 else out


def _craft(attack: Any, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
           batch: int = 256) -> torch.Tensor:
    return torch.cat([attack(model, x[i:i + batch], y[i:i + batch])
                      for i in range(0, x.shape[0], batch)])


def _mean_std(t: torch.Tensor) -> tuple[float, float]:
    """Mean and standard deviation (over draws) of per-draw accuracies, in %."""
    acc = t.float().mean(dim=1) * 100
    return float(acc.mean()), float(acc.std(unbiased=False))


# -- the sound evaluation -------------------------------------------------------------------
def sound_attacks(cfg: VoneNetConfig, model: nn.Module,
                  plain: nn.Module | None) -> dict[str, tuple[Any, nn.Module, str]]:
    """The attacks of the sound protocol: name -> (attack, model it is crafted on, note)."""
    from advlab.attacks.noise import RandomSignNoise
    from advlab.attacks.square import SquareAttack

    k = cfg.eot_samples if _is_random(model) else 1
    eps = cfg.eps
    attacks: dict[str, tuple[Any, nn.Module, str]] = {
        "FGSM": (FGSM(eps=eps, eot_samples=k, seed=cfg.seed), model, "clipped, EOT"),
        "PGD": (PGD(eps=eps, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts, eot_samples=k,
                    seed=cfg.seed), model, f"{cfg.pgd_steps} steps x {cfg.pgd_restarts} "
                                           f"restarts, EOT {k}"),
        "PGD-CW": (PGD(eps=eps, steps=cfg.pgd_steps, loss="cw", eot_samples=k, seed=cfg.seed),
                   model, "margin loss, EOT"),
        "APGD-CE": (APGD(eps=eps, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts,
                         eot_samples=k, seed=cfg.seed), model,
                    f"Croce & Hein 2020, PGD's budget: {cfg.pgd_steps} steps x "
                    f"{cfg.pgd_restarts} restarts, EOT {k}"),
        "APGD-DLR": (APGDDLR(eps=eps, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts,
                             eot_samples=k, seed=cfg.seed), model, "DLR loss, EOT"),
        "Square": (SquareAttack(eps=eps, n_queries=cfg.square_queries, seed=cfg.seed), model,
                   f"gradient-free, {cfg.square_queries} queries"),
        "random noise": (RandomSignNoise(eps=eps, seed=cfg.seed), model, "+-eps signs"),
    }
    if _is_random(model) and hasattr(model, "fix_noise"):
        attacks["PGD, noise fixed"] = (
            PGD(eps=eps, steps=cfg.pgd_steps, restarts=cfg.pgd_restarts, seed=cfg.seed),
            _FixedNoise(model, cfg.seed), "crafted on one frozen draw")
    if plain is not None:
        attacks["transfer"] = (MIFGSM(eps=eps, steps=cfg.pgd_steps, seed=cfg.seed), plain,
                               "MI-FGSM on the plain model")
    return attacks


class _FixedNoise(nn.Module):
    """A view of a randomised model with its noise frozen to one draw (while it is called)."""

    def __init__(self, model: nn.Module, seed: int) -> None:
        super().__init__()
        self.model = model
        self.seed = seed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.model.frozen_noise(self.seed):
            return self.model(x)


def sound_evaluation(cfg: VoneNetConfig, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                     plain: nn.Module | None, cache: Store, key: dict[str, Any],
                     ) -> dict[str, Any]:
    """Per-attack and per-example worst-case accuracy over noise draws (mean and std, %).

    Uses :func:`advlab.evaluate.audit.worst_case_accuracy`; the adversarial examples of each attack
    are cached, and the model's noise is reseeded after each attack so that a resumed run
    sees the same evaluation draws as an uninterrupted one.
    """
    from advlab.evaluate.audit import worst_case_accuracy

    # A student-exact model is attacked (and judged) through its finite-gradient twin: the
    # same weights, noise stream and forward values, gradients without NaN.
    model = finite_gradient_twin(model)
    notes: dict[str, str] = {}
    runners: dict[str, Any] = {}
    for name, (atk, src, note) in sound_attacks(cfg, model, plain).items():
        notes[name] = note

        def run(_m, xb, yb, atk=atk, src=src, name=name):
            _reseed(model, cfg.seed + 7)
            out = cache.get_or_compute(
                "sound-adv", {**key, "attack": name, "cfg": jsonable(atk), "n": len(xb)},
                lambda: {"x_adv": _craft(atk, src, xb, yb)})["x_adv"].to(xb.device)
            _reseed(model, cfg.seed + 1000)
            return out

        runners[name] = run
    _reseed(model, cfg.seed + 1000)
    r = worst_case_accuracy(model, x, y, runners, eval_draws=cfg.noise_draws,
                            batch_size=max(1, x.shape[0]))

    def ci(acc: float) -> dict[str, float]:
        lo, hi = wilson_interval(acc * r.n, r.n)
        return {"lo": 100 * lo, "hi": 100 * hi}

    per_attack = {name: {"acc_mean": 100 * r.per_attack[name],
                         "acc_std": 100 * r.per_attack_std[name], "note": notes[name],
                         **ci(r.per_attack[name])}
                  for name in runners}
    return {"clean_mean": 100 * r.per_attack["clean"], "clean_std": 100 * r.per_attack_std["clean"],
            "clean_ci": ci(r.per_attack["clean"]),
            "worst_mean": 100 * r.accuracy, "worst_std": 100 * r.accuracy_std,
            "worst_ci": ci(r.accuracy), "estimator": r.estimator,
            "attacks": per_attack, "n": r.n, "draws": r.draws, "randomized": r.randomized}


def eps_sweep(cfg: VoneNetConfig, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              cache: Store, key: dict[str, Any]) -> list[float]:
    """APGD-CE (EOT for randomised models) accuracy in % at each eps of ``cfg.sweep``."""
    model = finite_gradient_twin(model)
    k = cfg.eot_samples if _is_random(model) else 1
    out = []
    for eps in cfg.sweep:
        if eps == 0:
            xa = x
        else:
            atk = APGD(eps=eps, steps=cfg.sweep_steps, eot_samples=k, seed=cfg.seed)
            _reseed(model, cfg.seed + 11)
            xa = cache.get_or_compute("sweep-adv", {**key, "cfg": jsonable(atk)},
                                      lambda a=atk: {"x_adv": _craft(a, model, x, y)}
                                      )["x_adv"].to(x.device)
        out.append(_mean_std(_correct_over_draws(model, xa, y, cfg.noise_draws,
                                                 cfg.seed + 1000))[0])
    return out
