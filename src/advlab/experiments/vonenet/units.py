"""The work units of the pipeline, each cached whole: the as-reported run of a model, its
adversarial fine-tuning, its sound evaluation, its eps sweep and its audits, with the
configuration parts of their cache keys. One process runs them in the pipeline's order;
under torchrun :func:`~advlab.experiments.vonenet.run._share_work` deals them out."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab._io import Store, config_hash, jsonable
from advlab.attacks import NonFiniteGradientWarning
from advlab.experiments.vonenet.config import VoneNetConfig
from advlab.experiments.vonenet.mechanism import student_fgsm
from advlab.experiments.vonenet.sound import _reseed, eps_sweep, sound_evaluation
from advlab.models.vone import finite_gradient_twin
from advlab.train import finetune_adversarial


@contextlib.contextmanager
def _student_protocol() -> Iterator[None]:
    """The student's FGSM steps on NaN gradients by design (``nonfinite="warn"``); the
    mechanism table reports them, so their warnings are not repeated here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NonFiniteGradientWarning)
        yield


# -- work items: one process runs them in the pipeline's order; torchrun deals them out ------
def _as_reported(cfg: VoneNetConfig, name: str, model: nn.Module, ckpt: Path,
                 x_eval: torch.Tensor, y_eval: torch.Tensor,
                 results: Store) -> dict[str, Any]:
    """The student's protocol and the mechanism behind its number (see
    :func:`~advlab.experiments.vonenet.mechanism.student_fgsm`)."""
    def compute() -> dict[str, Any]:
        with _student_protocol():
            return student_fgsm(model, x_eval, y_eval, cfg.eps, cfg.seed, _reseed)

    return results.get_or_compute("as-reported", {"ckpt": config_hash(str(ckpt)),
                                                  "cfg": jsonable(cfg.train_config(name)),
                                                  "eps": cfg.eps, "n": cfg.eval_size,
                                                  "seed": cfg.seed, "protocol": "clipped-v2"},
                                  compute)


def _finetuned(cfg: VoneNetConfig, name: str, ckpt: Path, cache_root: Path,
               progress: bool) -> Path:
    """The checkpoint of ``name`` after the report's adversarial fine-tuning (cached)."""
    ft_cfg = cfg.finetune_config()
    attack = cfg.as_reported_attack()
    key = config_hash(jsonable(cfg.train_config(name)), jsonable(ft_cfg), cfg.eps,
                      jsonable(attack))
    d = cache_root / "finetuned" / f"{name}-{key}"
    if not (d / "card.json").is_file():
        with _student_protocol():
            finetune_adversarial(ckpt, attack, ft_cfg, d, progress=progress)
    return d


def _plain_of(name: str) -> str | None:
    return name[len("vone-"):] if name.startswith("vone-") else None


def _sound_key(cfg: VoneNetConfig, name: str, ck: Path, ckpts: dict[str, Path]
               ) -> dict[str, Any]:
    plain_name = _plain_of(name)
    return {"ckpt": str(ck), "weights": _weights_id(ck), "n": cfg.sound_size,
            "plain": str(ckpts.get(plain_name, "")) if plain_name else ""}


def _sound(cfg: VoneNetConfig, name: str, model: nn.Module, ck: Path,
           models: dict[str, nn.Module], ckpts: dict[str, Path], x_s: torch.Tensor,
           y_s: torch.Tensor, results: Store, tensors: Store) -> dict[str, Any]:
    """The sound evaluation of ``model`` (``name`` or its fine-tuned version at ``ck``)."""
    plain_name = _plain_of(name)
    plain = models.get(plain_name) if plain_name else None
    key = _sound_key(cfg, name, ck, ckpts)
    return results.get_or_compute(
        "sound", {**key, "cfg": _sound_cfg(cfg)},
        lambda: sound_evaluation(cfg, model, x_s, y_s, plain, tensors, key))


def _sweep(cfg: VoneNetConfig, name: str, model: nn.Module, ck: Path,
           ckpts: dict[str, Path], x_s: torch.Tensor, y_s: torch.Tensor,
           results: Store, tensors: Store) -> list[float]:
    key = _sound_key(cfg, name, ck, ckpts)
    n = cfg.sweep_size or cfg.sound_size
    return results.get_or_compute("sweep", {**key, "cfg": _sound_cfg(cfg), "sweep_n": n},
                                  lambda: eps_sweep(cfg, model, x_s[:n], y_s[:n], tensors,
                                                    {**key, "sweep_n": n}))


def _audited(cfg: VoneNetConfig) -> list[str]:
    """The VOne models whose audits run (each as the student-exact model and as its twin)."""
    vone = [n for n in cfg.models if n.startswith("vone-")]
    return vone if cfg.audit_models is None else [n for n in vone if n in cfg.audit_models]


def _audit(cfg: VoneNetConfig, model: nn.Module, ckpt: Path, x_s: torch.Tensor,
           y_s: torch.Tensor, results: Store, twin: bool = False) -> dict[str, Any]:
    """The audit of ``model`` (``twin=True``: of its finite-gradient twin)."""
    from advlab.evaluate.audit import audit as run_audit

    noise = cfg.seed + 17
    subject = finite_gradient_twin(model) if twin else model
    n = cfg.audit_size or cfg.sound_size

    def compute() -> dict[str, Any]:
        _reseed(subject, noise)  # the audit's noise draws do not depend on what ran before
        return run_audit(subject, x_s[:n], y_s[:n], cfg.eps, **_audit_kwargs(cfg)).as_dict()

    return results.get_or_compute("audit", {"ckpt": str(ckpt), "weights": _weights_id(ckpt),
                                            "cfg": _sound_cfg(cfg), "noise": noise,
                                            "twin": twin, "n": n, "version": 2}, compute)


def _weights_id(ckpt: Path) -> str:
    from advlab.train.checkpoint import read_card

    return read_card(ckpt).get("weights_sha256", "")


def _sound_cfg(cfg: VoneNetConfig) -> dict[str, Any]:
    keys = ("eps", "eot_samples", "pgd_steps", "pgd_restarts", "square_queries", "noise_draws",
            "sweep", "sweep_steps", "seed", "sound_size")
    return {k: jsonable(getattr(cfg, k)) for k in keys}


def _audit_kwargs(cfg: VoneNetConfig) -> dict[str, Any]:
    return {"eot_samples": cfg.eot_samples, "seed": cfg.seed, "quick": cfg.profile == "quick",
            "steps": cfg.pgd_steps, "restarts": cfg.pgd_restarts,
            "n_queries": cfg.square_queries, "eval_draws": cfg.noise_draws,
            "unbounded_steps": max(20, 2 * cfg.pgd_steps)}
