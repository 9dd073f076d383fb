"""Reproduce Dong et al., "Boosting Adversarial Attacks with Momentum" (CVPR 2018).

What :func:`run_momentum` writes into ``out_dir`` (``report.md`` + ``report.html`` tie it up):

* **Table 1** -- every normal source model x {FGSM, I-FGSM, MI-FGSM} x every target (the
  normal models and the ensemble-adversarially trained ones): success rate %, white-box
  cells marked ``*``; over all images and over the images each target classifies correctly.
* **Table 2** -- for each normal model held out, an ensemble of the other normal models fused
  by logits / predictions / loss (Sec. 3.2): success on the ensemble (white-box) and on the
  held-out model, T = ``ensemble_steps`` (20, as in the paper).
* **Table 3** -- for each adversarially trained model held out, the logits ensemble of all
  the other models (normal and adversarially trained) against the held-out one.
* **Figures** -- success vs decay factor mu (0..2), vs iterations T (I-FGSM vs MI-FGSM,
  white-box and black-box), vs eps (the sweep that justifies the default eps), cosine
  similarity of successive perturbations (I-FGSM vs MI-FGSM), and a few adversarial images.
* Each table beside the paper's numbers (REFERENCE 1a), with a sentence stating whether the
  paper's qualitative claim held, computed from the numbers (:func:`claims`); CSV + JSON of
  every table (``tables/``), ``config.json`` (the resolved config) and ``results.json``.

Two suites:

* ``"mnist"``: the four plain zoo models play the paper's normal models (roles Inc-v3, Inc-v4,
  IncRes-v2, Res-152) and three zoo models trained with ensemble adversarial training
  (:mod:`advlab.train.advtrain`, Tramer et al. 2018) play Inc-v3ens3, Inc-v3ens4 and IncRes-v2ens.
  Everything is trained on the fly and cached.
* ``"imagenet"``: timm models (:mod:`advlab.models.imagenet`, normalisation inside the
  wrapper) on an image folder or the NIPS 2017 dev-set layout
  (:mod:`advlab.data.imagefolder`), eps = 16/255, T = 10 (alpha = 1.6/255), mu = 1.

Caching and resumption: the images are cut into chunks of ``chunk_size``; each
(source, attack, chunk) is one *work unit*, keyed by the resolved configuration (source
model identities, fusion, eps, T, mu, label mode, a hash of the chunk's pixels and labels).
Its adversarial examples are generated once, stored with :class:`TensorCache` and evaluated
on every target, whose predictions are cached too. A killed run resumes at the unit it was
in; a repeated run recomputes nothing (``attack_calls == 0`` in the returned dict). Figures
and tables share units (the decay sweep at mu = 1 *is* Table 1's MI-FGSM, T = 1 *is* FGSM).

Under ``torchrun`` (``torchrun --standalone --nproc-per-node N -m advlab reproduce momentum``)
the training units (normal models, then the adversarially trained ones) and then the clean
predictions and attack chunks are dealt to the processes, which store them in the shared
cache; rank 0 assembles the results from it and writes the same tables and figures as one
process (:meth:`_Runner.share_work`).

One progress bar covers the whole experiment (training and attack units, precomputed with
their cost in FLOPs, so the ETA weighs a 70M-parameter AlexNet step as what it is).

Profiles (``MomentumConfig.preset("quick" | "full")``): *full* follows the paper's protocol
(1000 images, T = 10 / 20, mu grid 0..2 step 0.1, T = 1..20) with models trained as in the
VOneNet-FGSM report (10 epochs, all 60k images); *quick* shrinks data (200 images, 50 for
the ensemble tables, 100 for the figures), training (one epoch on a subset) and grids, and uses
cheaper models: the 70M-parameter mnist-alexnet (Res-152's role) becomes a second mnist-mlp
and the defended models are mnist-mlps (an AlexNet gradient costs about 45x a Basic-CNN's:
348 vs 7.7 MFLOP per forward pass, and the ensemble tables take hundreds of gradients per
image). The report states the measured time and the full profile's projected time (from
its FLOP count at the rate measured in the run).

Measured on the shared 2-core CPU this was written on: ``--quick`` takes 2 min 22 s from
scratch with one torch thread (load average ~3; 2.95 TFLOP counted, 165 attack work units,
7 models trained) and 17 s when repeated (0 attack calls); with two threads on the busy
machine the same run took 7.5 min (OpenMP threads spin against each other: ``threads``).
``--full`` counts 1.18 PFLOP (0.70 of it training, mostly mnist-alexnet's 10 epochs on 60k
images; 1330 attack work units): about 14 h at the 23 GFLOP/s measured in the quick run.

Example:
    >>> from advlab.experiments.momentum import MomentumConfig
    >>> cfg = MomentumConfig.preset("quick")
    >>> cfg.steps, cfg.ensemble_steps, cfg.decay
    (10, 20, 1.0)
    >>> result = run_momentum(cfg, "runs/momentum", cache_dir="~/.cache/advlab")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks import FGSM, IFGSM, MIFGSM, Attack, Ensemble
from advlab.experiments.common import TensorCache, config_hash, default_cache_dir, jsonable
from advlab.report import Cell, Report, Table, atomic_write_json

__all__ = [
    "ATTACKS", "ROLES", "ADV_ROLES", "FUSIONS", "PAPER_TABLE1", "PAPER_TABLE2", "PAPER_TABLE3",
    "ModelSpec", "MomentumConfig", "Claim", "run_momentum", "estimate_cost", "claims",
]

log = logging.getLogger(__name__)

SUITES = ("mnist", "imagenet")
PROFILES = ("quick", "full")
ATTACKS = ("FGSM", "I-FGSM", "MI-FGSM")
#: the paper's normal models and its ensemble-adversarially trained models (Table 1 columns).
ROLES = ("Inc-v3", "Inc-v4", "IncRes-v2", "Res-152")
ADV_ROLES = ("Inc-v3ens3", "Inc-v3ens4", "IncRes-v2ens")
#: fusion -> the paper's row name in Table 2.
FUSIONS = {"logits": "Logits", "probs": "Predictions", "loss": "Loss"}

# -- the paper's numbers (REFERENCE section 1a) ---------------------------------------------
#: Table 1: source -> attack -> success % on (Inc-v3, Inc-v4, IncRes-v2, Res-152, Inc-v3ens3,
#: Inc-v3ens4, IncRes-v2ens); eps = 16/255, T = 10, mu = 1.
PAPER_TABLE1: dict[str, dict[str, tuple[float, ...]]] = {
    "Inc-v3": {"FGSM": (72.3, 28.2, 26.2, 25.3, 11.3, 10.9, 4.8),
               "I-FGSM": (100.0, 22.8, 19.9, 16.2, 7.5, 6.4, 4.1),
               "MI-FGSM": (100.0, 48.8, 48.0, 35.6, 15.1, 15.2, 7.8)},
    "Inc-v4": {"FGSM": (32.7, 61.0, 26.6, 27.2, 13.7, 11.9, 6.2),
               "I-FGSM": (35.8, 99.9, 24.7, 19.3, 7.8, 6.8, 4.9),
               "MI-FGSM": (65.6, 99.9, 54.9, 46.3, 19.8, 17.4, 9.6)},
    "IncRes-v2": {"FGSM": (32.6, 28.1, 55.3, 25.8, 13.1, 12.1, 7.5),
                  "I-FGSM": (37.8, 20.8, 99.6, 22.8, 8.9, 7.8, 5.8),
                  "MI-FGSM": (69.8, 62.1, 99.5, 50.6, 26.1, 20.9, 15.7)},
    "Res-152": {"FGSM": (35.0, 28.2, 27.5, 72.9, 14.6, 13.2, 7.5),
                "I-FGSM": (26.7, 22.7, 21.2, 98.6, 9.3, 8.9, 6.2),
                "MI-FGSM": (53.6, 48.9, 44.7, 98.5, 22.1, 21.7, 12.9)},
}
#: Table 2: held-out model -> fusion -> ((ensemble, hold-out) for FGSM, I-FGSM, MI-FGSM).
PAPER_TABLE2: dict[str, dict[str, tuple[tuple[float, float], ...]]] = {
    "Inc-v3": {"logits": ((55.7, 45.7), (99.7, 72.1), (99.6, 87.9)),
               "probs": ((52.3, 42.7), (95.1, 62.7), (97.1, 83.3)),
               "loss": ((50.5, 42.2), (93.8, 63.1), (97.0, 81.9))},
    "Inc-v4": {"logits": ((56.1, 39.9), (99.8, 61.0), (99.5, 81.2)),
               "probs": ((50.9, 36.5), (95.5, 52.4), (97.1, 77.4)),
               "loss": ((49.3, 36.2), (93.9, 50.2), (96.1, 72.5))},
    "IncRes-v2": {"logits": ((57.2, 38.8), (99.5, 54.4), (99.5, 76.5)),
                  "probs": ((52.1, 35.8), (97.1, 46.9), (98.0, 73.9)),
                  "loss": ((50.7, 35.2), (96.2, 45.9), (97.4, 70.8))},
    "Res-152": {"logits": ((53.5, 35.9), (99.6, 43.5), (99.6, 69.6)),
                "probs": ((51.9, 34.6), (99.9, 41.0), (99.8, 67.0)),
                "loss": ((50.4, 34.1), (98.2, 40.1), (98.8, 65.2))},
}
#: Table 3: held-out adversarially trained model -> ((ensemble, hold-out) per attack).
PAPER_TABLE3: dict[str, tuple[tuple[float, float], ...]] = {
    "Inc-v3ens3": ((36.1, 15.4), (99.6, 18.6), (99.6, 37.6)),
    "Inc-v3ens4": ((33.0, 15.0), (99.2, 18.7), (99.3, 40.3)),
    "IncRes-v2ens": ((36.2, 6.4), (99.5, 9.9), (99.7, 23.3)),
}


# -- configuration ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """One model of the experiment.

    Args:
        role: the paper's name for it (``"Inc-v3"``) or any label; unique in a config.
        arch: registry name (MNIST zoo) or timm name (ImageNet suite).
        seed: added to the config's seed for training / random initialisation.
        adversarial: an ensemble-adversarially trained model (a Table 1 defended column).
        static: MNIST only: roles of the (normal) static models whose FGSM examples train it.
    """

    role: str
    arch: str
    seed: int = 0
    adversarial: bool = False
    static: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.role, str) or not self.role:
            raise ValueError(f"role must be a non-empty string, got {self.role!r}")
        if not isinstance(self.arch, str) or not self.arch:
            raise ValueError(f"arch must be a non-empty model name, got {self.arch!r}")
        object.__setattr__(self, "static", tuple(self.static))


def _mnist_models(profile: str) -> tuple[tuple[ModelSpec, ...], tuple[ModelSpec, ...]]:
    """The roles on MNIST. Full: the four plain zoo models; the defended models share the
    architecture of the normal model whose role they extend (Inc-v3ens* = mnist-cnn,
    IncRes-v2ens = mnist-mlp). Quick: mnist-alexnet (70M parameters) is replaced by a second
    mnist-mlp and every defended model is an mnist-mlp, the cheapest architecture."""
    full = profile == "full"
    res152 = ModelSpec("Res-152", "mnist-alexnet") if full else \
        ModelSpec("Res-152", "mnist-mlp", seed=1)
    normal = (ModelSpec("Inc-v3", "mnist-cnn"), ModelSpec("Inc-v4", "mnist-convnet"),
              ModelSpec("IncRes-v2", "mnist-mlp"), res152)
    v3 = "mnist-cnn" if full else "mnist-mlp"
    adv = (ModelSpec("Inc-v3ens3", v3, seed=10, adversarial=True,
                     static=("Inc-v4", "IncRes-v2")),
           ModelSpec("Inc-v3ens4", v3, seed=11, adversarial=True,
                     static=("Inc-v3", "Inc-v4", "IncRes-v2")),
           ModelSpec("IncRes-v2ens", "mnist-mlp", seed=12, adversarial=True,
                     static=("Inc-v3", "Inc-v4")))
    return normal, adv


def _imagenet_models() -> tuple[tuple[ModelSpec, ...], tuple[ModelSpec, ...]]:
    from advlab.models.imagenet import PAPER_MODELS

    normal = tuple(ModelSpec(r, n) for r, n in PAPER_MODELS.items() if "adv" not in n)
    adv = tuple(ModelSpec(r, n, adversarial=True) for r, n in PAPER_MODELS.items()
                if "adv" in n)
    return normal, adv


def specs_from_names(names: Sequence[str], suite: str) -> tuple[tuple[ModelSpec, ...],
                                                                tuple[ModelSpec, ...]]:
    """Model specs from names. ImageNet: timm names, adversarially trained when the name
    contains ``adv`` (``tf_adv_in1k``, ``tf_ens_adv_in1k``) or is prefixed ``adv:``; roles
    from :data:`advlab.models.imagenet.PAPER_MODELS`, else the name. MNIST: zoo names for the
    normal roles in order (the adversarially trained models stay those of the preset)."""
    names = list(names)
    if not names:
        raise ValueError("models must name at least one model, got an empty list")
    if suite == "mnist":
        if len(names) > len(ROLES):
            raise ValueError(f"the MNIST suite takes at most {len(ROLES)} normal models "
                             f"(roles {ROLES}), got {len(names)}: {names}")
        from advlab.models import list_models

        for n in names:
            if n not in list_models():
                raise ValueError(f"unknown MNIST zoo model {n!r}; expected one of "
                                 f"{list_models()}")
        normal = tuple(ModelSpec(r, n, seed=i if names[:i].count(n) else 0)
                       for i, (r, n) in enumerate(zip(ROLES, names)))
        roles = {s.role for s in normal}
        _, adv = _mnist_models("quick")
        adv = tuple(dataclasses.replace(a, static=tuple(r for r in a.static if r in roles))
                    for a in adv)
        return normal, tuple(a for a in adv if a.static)
    from advlab.models.imagenet import PAPER_MODELS

    by_name = {v: k for k, v in PAPER_MODELS.items()}
    normal, adv = [], []
    for raw in names:
        forced = raw.startswith("adv:")
        name = raw[4:] if forced else raw
        spec = ModelSpec(by_name.get(name, name), name, adversarial=forced or "adv" in name)
        (adv if spec.adversarial else normal).append(spec)
    return tuple(normal), tuple(adv)


def _frange(lo: float, hi: float, step: float) -> tuple[float, ...]:
    n = int(round((hi - lo) / step))
    return tuple(round(lo + i * step, 6) for i in range(n + 1))


#: The default MNIST budget. The paper's regime at eps = 16/255 on ImageNet is: iterative
#: white-box attacks succeed ~100 %, black-box success stays far from 100 %. On MNIST the
#: quick profile's eps sweep (cnn source, 50 images) gave white-box I-FGSM / MI-FGSM
#: 94 / 92 % at eps 0.2 and 100 / 100 % at 0.25, with mean black-box success on the other
#: normal models 71 / 73 % at 0.2, 85 / 84 % at 0.25 and 91 % at 0.3 (0.3, the usual MNIST
#: budget, saturates). 0.25 is the smallest eps of that regime; every report re-checks it.
MNIST_EPS = 0.25
IMAGENET_EPS = 16 / 255


@dataclass(frozen=True)
class MomentumConfig:
    """Everything that determines a momentum-paper reproduction (saved as ``config.json``).

    Attack settings (the paper's): ``eps``; ``steps`` T = 10 for Table 1 and the figures;
    ``ensemble_steps`` T = 20 for Tables 2 and 3; ``decay`` mu = 1.0; the step is always
    alpha = eps / T (1.6/255 for eps = 16/255, T = 10); ``labels``: ``"true"`` attacks the
    ground truth, ``"pred"`` the source's clean prediction (the authors' code). Success is
    always counted against the ground truth.

    Data: the first ``n_images`` test images for Table 1, the first ``ensemble_images`` for
    Tables 2-3 and ``figure_images`` for the figures (None: ``n_images``), cut into chunks
    of ``chunk_size`` (the unit of caching and resumption).

    Figure grids: ``mu_grid`` (decay sweep, MI-FGSM), ``iter_grid`` (I-FGSM vs MI-FGSM),
    ``eps_grid`` (all three attacks; the config's eps is always added).

    MNIST training: normal models with :class:`advlab.train.TrainConfig` (``train_epochs``,
    ``train_size``), adversarially trained ones with :class:`advlab.train.advtrain.AdvTrainConfig`
    (``advtrain_epochs``, ``advtrain_size``, ``advtrain_eps`` -- None: the attack eps, as
    Tramer et al. trained at the budget they were attacked with -- ``advtrain_schedule``).

    ImageNet: ``data_dir`` (image folder or NIPS 2017 layout), ``pretrained`` (False: random
    init, for testing the path without weights). Adversarial examples are stored as 8-bit
    images (like the competition's PNGs), rounded inside the eps-ball.
    """

    suite: str = "mnist"
    profile: str = "quick"
    normal: tuple[ModelSpec, ...] = field(default_factory=lambda: _mnist_models("quick")[0])
    adversarial: tuple[ModelSpec, ...] = field(
        default_factory=lambda: _mnist_models("quick")[1])
    eps: float = MNIST_EPS
    steps: int = 10
    ensemble_steps: int = 20
    decay: float = 1.0
    labels: str = "true"
    n_images: int = 200
    ensemble_images: int | None = 50
    figure_images: int | None = 100
    chunk_size: int = 50
    mu_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
    iter_grid: tuple[int, ...] = (1, 2, 3, 5, 7, 10, 15, 20)
    eps_grid: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
    train_epochs: int = 1
    train_size: int | None = 8000
    advtrain_epochs: int = 1
    advtrain_size: int | None = 5000
    advtrain_eps: float | None = None
    advtrain_schedule: str = "rotate"
    train_test_size: int = 1000
    seed: int = 0
    device: str = "cpu"
    data_root: str | None = None
    data_dir: str | None = None
    pretrained: bool = True
    batch_size: int = 1000

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise ValueError(f"suite must be one of {SUITES}, got {self.suite!r}")
        if self.labels not in ("true", "pred"):
            raise ValueError(f"labels must be 'true' or 'pred', got {self.labels!r}")
        for name in ("eps",):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
                raise ValueError(f"{name} must be in (0, 1] (pixels in [0, 1]), got {v!r}")
        if self.advtrain_eps is not None and not 0 < self.advtrain_eps <= 1:
            raise ValueError(f"advtrain_eps must be in (0, 1] or None, got {self.advtrain_eps!r}")
        for name in ("steps", "ensemble_steps", "n_images", "chunk_size", "train_epochs",
                     "advtrain_epochs", "train_test_size", "batch_size"):
            _check_int(name, getattr(self, name))
        for name in ("ensemble_images", "figure_images", "train_size", "advtrain_size"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name))
        if not isinstance(self.decay, (int, float)) or self.decay < 0:
            raise ValueError(f"decay must be >= 0, got {self.decay!r}")
        object.__setattr__(self, "normal", tuple(self.normal))
        object.__setattr__(self, "adversarial", tuple(self.adversarial))
        object.__setattr__(self, "mu_grid", tuple(float(m) for m in self.mu_grid))
        object.__setattr__(self, "iter_grid", tuple(int(t) for t in self.iter_grid))
        object.__setattr__(self, "eps_grid", tuple(float(e) for e in self.eps_grid))
        if not self.normal:
            raise ValueError("normal must hold at least one model (the sources of Table 1)")
        roles = [s.role for s in self.normal + self.adversarial]
        dupes = sorted({r for r in roles if roles.count(r) > 1})
        if dupes:
            raise ValueError(f"model roles must be unique, got duplicates {dupes}")
        if any(s.adversarial for s in self.normal) or \
                not all(s.adversarial for s in self.adversarial):
            raise ValueError("normal specs must have adversarial=False and adversarial specs "
                             "adversarial=True")
        normal_roles = {s.role for s in self.normal}
        for s in self.adversarial:
            if self.suite == "mnist":
                bad = [r for r in s.static if r not in normal_roles]
                if bad:
                    raise ValueError(f"{s.role}: static roles {bad} are not normal models "
                                     f"({sorted(normal_roles)})")
        if not self.mu_grid or any(m < 0 for m in self.mu_grid):
            raise ValueError(f"mu_grid must be non-empty with values >= 0, got {self.mu_grid}")
        if not self.iter_grid or any(t < 1 for t in self.iter_grid):
            raise ValueError(f"iter_grid must be non-empty with values >= 1, got "
                             f"{self.iter_grid}")
        if not self.eps_grid or any(not 0 < e <= 1 for e in self.eps_grid):
            raise ValueError(f"eps_grid must be non-empty with values in (0, 1], got "
                             f"{self.eps_grid}")
        if self.advtrain_schedule not in ("rotate", "random"):
            raise ValueError(f"advtrain_schedule must be 'rotate' or 'random', got "
                             f"{self.advtrain_schedule!r}")
        if self.suite == "imagenet" and self.data_dir is None:
            pass  # checked when the data is loaded (so presets can be built without data)

    # -- presets -------------------------------------------------------------------------
    @classmethod
    def preset(cls, profile: str = "quick", suite: str = "mnist", **overrides: Any
               ) -> MomentumConfig:
        """The ``"quick"`` or ``"full"`` profile of a suite, with field overrides."""
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
        if suite not in SUITES:
            raise ValueError(f"suite must be one of {SUITES}, got {suite!r}")
        full = profile == "full"
        if suite == "mnist":
            normal, adv = _mnist_models(profile)
            base: dict[str, Any] = dict(suite=suite, profile=profile, normal=normal,
                                        adversarial=adv, eps=MNIST_EPS)
            if full:
                base.update(n_images=1000, ensemble_images=None, figure_images=None,
                            chunk_size=100, mu_grid=_frange(0.0, 2.0, 0.1),
                            iter_grid=tuple(range(1, 21)),
                            eps_grid=(0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4),
                            train_epochs=10, train_size=None, advtrain_epochs=10,
                            advtrain_size=None, train_test_size=10000)
        else:
            normal, adv = _imagenet_models()
            base = dict(suite=suite, profile=profile, normal=normal, adversarial=adv,
                        eps=IMAGENET_EPS, batch_size=20)
            if full:
                base.update(n_images=1000, ensemble_images=None, figure_images=None,
                            chunk_size=20, mu_grid=_frange(0.0, 2.0, 0.1),
                            iter_grid=tuple(range(1, 21)),
                            eps_grid=tuple(e / 255 for e in (1, 2, 4, 8, 12, 16, 20, 24, 28,
                                                             32, 36, 40)))
            else:
                base.update(n_images=20, ensemble_images=10, figure_images=10, chunk_size=10,
                            mu_grid=(0.0, 0.5, 1.0, 1.5, 2.0), iter_grid=(1, 5, 10, 20),
                            eps_grid=tuple(e / 255 for e in (4, 8, 16, 32)))
        base.update(overrides)
        return cls(**base)

    @classmethod
    def quick(cls, suite: str = "mnist", **overrides: Any) -> MomentumConfig:
        return cls.preset("quick", suite, **overrides)

    @classmethod
    def full(cls, suite: str = "mnist", **overrides: Any) -> MomentumConfig:
        return cls.preset("full", suite, **overrides)

    # -- derived -------------------------------------------------------------------------
    @property
    def models(self) -> tuple[ModelSpec, ...]:
        return self.normal + self.adversarial

    @property
    def n_ensemble(self) -> int:
        return self.ensemble_images or self.n_images

    @property
    def n_figure(self) -> int:
        return self.figure_images or self.n_images

    @property
    def n_total(self) -> int:
        return max(self.n_images, self.n_ensemble, self.n_figure)

    @property
    def store(self) -> str:
        """How adversarial examples are stored: ``uint8`` (ImageNet) or ``float32``."""
        return "uint8" if self.suite == "imagenet" else "float32"

    @property
    def sweep_eps(self) -> tuple[float, ...]:
        return tuple(sorted({round(e, 10) for e in self.eps_grid} | {round(self.eps, 10)}))

    def with_sizes(self, available: int) -> MomentumConfig:
        """The config with every image count capped at ``available``."""
        cap = {k: min(getattr(self, k), available) for k in
               ("n_images", "ensemble_images", "figure_images") if getattr(self, k)}
        return dataclasses.replace(self, **cap) if cap else self


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


# -- attacks and work units ------------------------------------------------------------------
@dataclass(frozen=True)
class _AttackSpec:
    eps: float
    steps: int
    decay: float

    @property
    def name(self) -> str:
        if self.steps == 1:
            return "FGSM"
        return "I-FGSM" if self.decay == 0 else "MI-FGSM"

    def make(self) -> Attack:
        """The attack; alpha = eps / T always (the paper's setting)."""
        if self.steps == 1:
            return FGSM(eps=self.eps)
        if self.decay == 0:
            return IFGSM(eps=self.eps, steps=self.steps)
        return MIFGSM(eps=self.eps, steps=self.steps, decay=self.decay)

    def key(self) -> dict[str, Any]:
        return {"eps": round(float(self.eps), 10), "steps": self.steps,
                "decay": 0.0 if self.steps == 1 else round(float(self.decay), 10),
                "alpha": "eps/T", "norm": "linf"}


def _spec(name: str, eps: float, steps: int, decay: float) -> _AttackSpec:
    if name == "FGSM":
        return _AttackSpec(float(eps), 1, 0.0)
    if name == "I-FGSM":
        return _AttackSpec(float(eps), steps, 0.0)
    return _AttackSpec(float(eps), steps, float(decay))


@dataclass(frozen=True)
class _Unit:
    """An attack from a source (one model, or an ensemble with a fusion) on the first n
    images."""

    source: tuple[str, ...]
    fuse: str
    attack: _AttackSpec
    n: int


@dataclass
class _Chunk:
    """One work unit: a (source, fusion, attack) on images [start, stop)."""

    source: tuple[str, ...]
    fuse: str
    attack: _AttackSpec
    start: int
    stop: int
    adv_cfg: dict[str, Any] | None = None
    pred_cfg: dict[str, Any] | None = None
    cost: float = 0.0
    cached: str = ""  # "" | "adv" | "pred"

    @property
    def ident(self) -> tuple:
        return (self.source, self.fuse, tuple(sorted(self.attack.key().items())), self.start,
                self.stop)

    def label(self, roles: dict[str, str]) -> str:
        src = "+".join(self.source) if len(self.source) > 1 else self.source[0]
        fuse = f" ({self.fuse})" if len(self.source) > 1 else ""
        a = self.attack
        extra = "" if a.steps == 1 else f" T={a.steps}" + (f" mu={a.decay:g}" if a.decay
                                                             else "")
        return f"{a.name}{extra} eps={_fmt_eps(a.eps)} on {src}{fuse} [{self.start}:{self.stop}]"


def _fmt_eps(e: float) -> str:
    """``16/255`` for multiples of 1/255 that are not short decimals, else ``0.2``."""
    k = e * 255
    on_grid = abs(k - round(k)) < 1e-6 and round(k) > 0
    decimal = abs(e * 100 - round(e * 100)) < 1e-9
    return f"{round(k)}/255" if on_grid and not decimal else f"{e:g}"


@dataclass
class _Plan:
    table1: dict[tuple[str, str], _Unit]
    table2: dict[tuple[str, str, str], _Unit]
    table3: dict[tuple[str, str], _Unit]
    decay: dict[float, _Unit]
    iters: dict[tuple[str, int], _Unit]
    eps: dict[tuple[str, float], _Unit]

    def units(self) -> list[_Unit]:
        out: list[_Unit] = []
        for d in (self.table1, self.table2, self.table3, self.decay, self.iters, self.eps):
            for u in d.values():
                if u not in out:
                    out.append(u)
        return out


def _plan(cfg: MomentumConfig) -> _Plan:
    normal = [s.role for s in cfg.normal]
    adv = [s.role for s in cfg.adversarial]
    src0 = normal[0]
    t1 = {(s, a): _Unit((s,), "", _spec(a, cfg.eps, cfg.steps, cfg.decay), cfg.n_images)
          for s in normal for a in ATTACKS}
    t2: dict[tuple[str, str, str], _Unit] = {}
    if len(normal) >= 3:
        for h in normal:
            members = tuple(r for r in normal if r != h)
            for f in FUSIONS:
                for a in ATTACKS:
                    t2[(h, f, a)] = _Unit(members, f, _spec(a, cfg.eps, cfg.ensemble_steps,
                                                            cfg.decay), cfg.n_ensemble)
    t3: dict[tuple[str, str], _Unit] = {}
    if adv and len(normal) + len(adv) >= 3:
        for h in adv:
            members = tuple(r for r in normal + adv if r != h)
            for a in ATTACKS:
                t3[(h, a)] = _Unit(members, "logits", _spec(a, cfg.eps, cfg.ensemble_steps,
                                                            cfg.decay), cfg.n_ensemble)
    nf = cfg.n_figure
    decay = {mu: _Unit((src0,), "", _AttackSpec(float(cfg.eps), cfg.steps, mu), nf)
             for mu in cfg.mu_grid}
    iters = {(a, t): _Unit((src0,), "", _AttackSpec(float(cfg.eps), t,
                                                    0.0 if a == "I-FGSM" else cfg.decay), nf)
             for a in ("I-FGSM", "MI-FGSM") for t in cfg.iter_grid}
    eps = {(a, e): _Unit((src0,), "", _spec(a, e, cfg.steps, cfg.decay), nf)
           for a in ATTACKS for e in cfg.sweep_eps}
    return _Plan(t1, t2, t3, decay, iters, eps)


def _chunks_of(unit: _Unit, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, unit.n)) for s in range(0, unit.n, size)]


# -- models ----------------------------------------------------------------------------------
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


def _forward_flops(make: Callable[[], nn.Module], shape: tuple[int, ...]) -> float:
    """FLOPs of one forward pass on one example (counted on the meta device when possible)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.device("meta"):
            model = make()
            x = torch.empty(1, *shape)
        with FlopCounterMode(display=False) as fc:
            model(x)
        return float(fc.get_total_flops())
    except Exception:  # noqa: BLE001 - some modules cannot run on meta: count on the CPU
        model = make()
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            model.eval()(torch.zeros(1, *shape))
        return float(fc.get_total_flops())


_OVERHEAD = 2e6  # FLOP-equivalents per model call per image (kernel launch, memory)


def _mnist_train_cfgs(cfg: MomentumConfig, cache_dir: Path) -> dict[str, Any]:
    from advlab.train import TrainConfig

    out: dict[str, Any] = {}
    for s in cfg.normal:
        out[s.role] = TrainConfig(s.arch, epochs=cfg.train_epochs, train_size=cfg.train_size,
                                  test_size=cfg.train_test_size, seed=cfg.seed + s.seed,
                                  device=cfg.device, data_root=cfg.data_root)
    return out


def _normal_checkpoint(tc: Any, cache_dir: Path) -> Path:
    # the directory advlab.experiments.common.ensure_trained uses for this config
    return cache_dir / "checkpoints" / f"{tc.model}-{config_hash(tc.identity(), tc.epochs)}"


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
        eps=float(cfg.advtrain_eps or cfg.eps), schedule=cfg.advtrain_schedule,
        epochs=cfg.advtrain_epochs, train_size=cfg.advtrain_size,
        test_size=cfg.train_test_size, seed=cfg.seed + spec.seed, device=cfg.device,
        data_root=cfg.data_root)


def _build_members(cfg: MomentumConfig, cache_dir: Path) -> dict[str, _Member]:
    """Member identities, FLOPs and (for MNIST) training configs; no training, no weights."""
    members: dict[str, _Member] = {}
    if cfg.suite == "mnist":
        from advlab.models import create

        tcs = _mnist_train_cfgs(cfg, cache_dir)
        for s in cfg.normal:
            tc = tcs[s.role]
            fl = _forward_flops(lambda a=s.arch: create(a), (1, 28, 28))
            n = tc.train_size or 60000
            ck = config_hash(tc.identity(), tc.epochs)
            members[s.role] = _Member(
                s, key=f"untrained:{s.role}:{ck}", flops=fl,
                train_cost=tc.epochs * n * (3 * fl + _OVERHEAD),
                checkpoint=_normal_checkpoint(tc, cache_dir), train_cfg=tc, config_key=ck)
        for s in cfg.adversarial:
            fl = _forward_flops(lambda a=s.arch: create(a), (1, 28, 28))
            ident = {"arch": s.arch, "static": [members[r].config_key for r in s.static],
                     "eps": float(cfg.advtrain_eps or cfg.eps), "epochs": cfg.advtrain_epochs,
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


# -- the run ---------------------------------------------------------------------------------
class _Bar:
    """One tqdm bar over the experiment's cost in GFLOP (silent without tqdm)."""

    def __init__(self, total: float, enabled: bool) -> None:
        self.bar = None
        self.left = total / 1e9
        if enabled and os.environ.get("ADVLAB_PROGRESS", "1") != "0":
            try:
                from tqdm.auto import tqdm
            except ImportError:  # pragma: no cover
                return
            self.bar = tqdm(total=total / 1e9, unit="GFLOP", desc="momentum",
                            dynamic_ncols=True, unit_scale=False,
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f}"
                                       " GFLOP [{elapsed}<{remaining}, {rate_fmt}]")

    def start(self, desc: str) -> None:
        """Show which work unit is running."""
        if self.bar is not None:
            self.bar.set_description_str(desc[:70])

    def step(self, cost: float) -> None:
        """The running unit is done: advance by its cost."""
        if self.bar is not None:
            step = min(cost / 1e9, self.left)  # float sums must not overshoot the total
            self.left -= step
            self.bar.update(step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _cache_file(cache: TensorCache, kind: str, config: Any) -> Path:
    # the path TensorCache.get_or_compute uses for (kind, config)
    return cache.root / kind / f"{config_hash(config)}.safetensors"


def _quantize(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """8-bit pixels nearest to ``x_adv`` that stay inside the eps-ball around ``x``."""
    q = torch.round(x_adv * 255)
    lo = torch.ceil((x - eps) * 255 - 1e-4).clamp(0, 255)
    hi = torch.floor((x + eps) * 255 + 1e-4).clamp(0, 255)
    return torch.minimum(torch.maximum(q, lo), hi).to(torch.uint8)


def _cosines(updates: list[torch.Tensor]) -> torch.Tensor:
    """Per example, cosine similarity of each pair of successive perturbations [N, T-1]."""
    cols = [F.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1,
                                eps=1e-12) for a, b in zip(updates[:-1], updates[1:])]
    return torch.stack(cols, dim=1).float()


class _Runner:
    def __init__(self, cfg: MomentumConfig, out_dir: Path, cache_dir: Path, progress: bool,
                 on_attack: Callable[[int], None] | None) -> None:
        self.cfg = cfg
        self.out = out_dir
        self.cache_dir = cache_dir
        self.progress = progress
        self.on_attack = on_attack
        self.cache = TensorCache(cache_dir / "momentum")
        self.attack_calls = 0
        self.trainings = 0
        self.computed_flops = 0.0
        self.compute_seconds = 0.0
        self.notes: list[str] = []
        self._ens: dict[tuple[tuple[str, ...], str], Ensemble] = {}

    # -- data ----------------------------------------------------------------------------
    def load_data(self) -> None:
        cfg = self.cfg
        if cfg.suite == "mnist":
            from advlab.train import load_split

            x, y = load_split("test", cfg.n_total, cfg.data_root, "cpu")
            self.ids = [str(i) for i in range(x.shape[0])]
            self.data_desc = f"MNIST test split, first {x.shape[0]} images"
        else:
            from advlab.data.imagefolder import (
                find_nips17_csv,
                load_image_folder,
                load_nips17,
            )

            if cfg.data_dir is None:
                raise ValueError("the imagenet suite needs data_dir: an ImageNet-style image "
                                 "folder (root/<class>/<image>) or the NIPS 2017 layout "
                                 "(images/*.png + images.csv)")
            sizes = {tuple(m.module.input_size) for m in self.members.values()}
            if len(sizes) != 1:
                raise ValueError(f"all ImageNet models must take the same input size, got "
                                 f"{sorted(sizes)}")
            size = next(iter(sizes))[1]
            try:
                find_nips17_csv(cfg.data_dir)
                loader, layout = load_nips17, "NIPS 2017 layout"
            except FileNotFoundError:
                loader, layout = load_image_folder, "image folder"
            x, y, ids = loader(cfg.data_dir, size=size, limit=cfg.n_total)
            self.ids = list(ids)
            self.data_desc = f"{cfg.data_dir} ({layout}), {x.shape[0]} images at {size}x{size}"
        if x.shape[0] < cfg.n_total:
            self.notes.append(f"only {x.shape[0]} images are available: image counts capped")
            self.cfg = cfg = cfg.with_sizes(x.shape[0])
        self.x, self.y = x, y
        self._chunk_hash: dict[tuple[int, int], str] = {}

    def chunk_hash(self, s: int, e: int) -> str:
        if (s, e) not in self._chunk_hash:
            h = hashlib.sha256()
            h.update(self.x[s:e].contiguous().numpy().tobytes())
            h.update(self.y[s:e].contiguous().numpy().tobytes())
            self._chunk_hash[(s, e)] = h.hexdigest()[:32]
        return self._chunk_hash[(s, e)]

    # -- models --------------------------------------------------------------------------
    def source(self, roles: tuple[str, ...], fuse: str) -> nn.Module:
        if len(roles) == 1:
            return self.members[roles[0]].module
        k = (roles, fuse)
        if k not in self._ens:
            self._ens[k] = Ensemble([self.members[r].module for r in roles], fuse=fuse)
        return self._ens[k]

    def _load_member(self, m: _Member) -> None:
        from advlab.train.checkpoint import load_checkpoint

        module, card = load_checkpoint(m.checkpoint, self.cfg.device)
        m.module = module.eval().requires_grad_(False)
        m.card = card

    def train_units(self) -> list[tuple[str, float, bool, Callable[[], None]]]:
        """(label, cost, cached, run) for the MNIST models, normal ones first."""
        from advlab.experiments.common import ensure_trained

        units = []
        if self.cfg.suite != "mnist":
            return units
        for s in self.cfg.normal:
            m = self.members[s.role]

            def run(m: _Member = m) -> None:
                if not _complete(m.checkpoint, m.train_cfg.epochs):
                    self.trainings += 1
                path = ensure_trained(m.train_cfg, self.cache_dir, progress=self.progress)
                if Path(path) != m.checkpoint:  # pragma: no cover - ensure_trained changed
                    m.checkpoint = Path(path)
                self._load_member(m)

            units.append((f"train {m.label}", m.train_cost,
                          _complete(m.checkpoint, m.train_cfg.epochs), run))
        for s in self.cfg.adversarial:
            m = self.members[s.role]
            cached = False
            if all(_complete(self.members[r].checkpoint, self.members[r].train_cfg.epochs)
                   for r in s.static):
                try:
                    m.train_cfg = _advtrain_cfg(self.cfg, s, self.members)
                    m.checkpoint = self._adv_path(m.train_cfg)
                    cached = _complete(m.checkpoint, m.train_cfg.epochs)
                except ValueError:
                    cached = False

            def run(m: _Member = m, s: ModelSpec = s) -> None:
                from advlab.train.advtrain import ensure_advtrained

                m.train_cfg = _advtrain_cfg(self.cfg, s, self.members)
                m.checkpoint = self._adv_path(m.train_cfg)
                if not _complete(m.checkpoint, m.train_cfg.epochs):
                    self.trainings += 1
                m.checkpoint = Path(ensure_advtrained(m.train_cfg, self.cache_dir,
                                                      progress=self.progress))
                self._load_member(m)

            units.append((f"adv-train {m.label}", m.train_cost, cached, run))
        return units

    def refresh_keys(self) -> None:
        """MNIST members: key = hash of the trained weights (from the checkpoint card) when
        the checkpoint is complete, else a provisional key that matches no cache entry."""
        from advlab.train.checkpoint import read_card

        if self.cfg.suite != "mnist":
            return
        for m in self.members.values():
            epochs = self.cfg.advtrain_epochs if m.spec.adversarial else m.train_cfg.epochs
            if _complete(m.checkpoint, epochs):
                sha = read_card(m.checkpoint)["weights_sha256"]
                m.key = f"mnist:{m.spec.arch}:{sha[:24]}"
            else:
                m.key = f"untrained:{m.spec.role}:{m.config_key}"

    def _adv_path(self, ac: Any) -> Path:
        # the directory advlab.train.advtrain.ensure_advtrained uses for this config
        return self.cache_dir / "checkpoints" / \
            f"advtrain-{ac.model}-{config_hash(ac.identity(), ac.epochs)}"

    # -- work units ----------------------------------------------------------------------
    def make_chunks(self, plan: _Plan) -> tuple[dict[_Unit, list[_Chunk]], list[_Chunk]]:
        cfg = self.cfg
        member_keys = [self.members[r].key for r in self.roles]
        by_ident: dict[tuple, _Chunk] = {}
        per_unit: dict[_Unit, list[_Chunk]] = {}
        for u in plan.units():
            lst = []
            for s, e in _chunks_of(u, cfg.chunk_size):
                ch = _Chunk(u.source, u.fuse if len(u.source) > 1 else "", u.attack, s, e)
                if ch.ident not in by_ident:
                    ch.adv_cfg = {
                        "v": 1, "suite": cfg.suite,
                        "source": [self.members[r].key for r in u.source],
                        "fuse": ch.fuse or None, "attack": u.attack.key(),
                        "labels": cfg.labels, "data": self.chunk_hash(s, e),
                        "store": cfg.store}
                    ch.pred_cfg = {"v": 1, "adv": ch.adv_cfg, "targets": member_keys}
                    src_fl = sum(self.members[r].flops for r in u.source) + \
                        _OVERHEAD * len(u.source)
                    tgt_fl = sum(self.members[r].flops + _OVERHEAD for r in self.roles)
                    n = e - s
                    attack_cost = n * (2 * u.attack.steps * src_fl +
                                       (src_fl if cfg.labels == "pred" else 0))
                    eval_cost = n * (tgt_fl + (2 * src_fl if len(u.source) > 1 else 0))
                    if _cache_file(self.cache, "pred", ch.pred_cfg).is_file():
                        ch.cached, ch.cost = "pred", 0.0
                    elif _cache_file(self.cache, "adv", ch.adv_cfg).is_file():
                        ch.cached, ch.cost = "adv", eval_cost
                    else:
                        ch.cost = attack_cost + eval_cost
                    by_ident[ch.ident] = ch
                lst.append(by_ident[ch.ident])
            per_unit[u] = lst
        return per_unit, list(by_ident.values())

    def clean_cfg(self, s: int, e: int) -> dict[str, Any]:
        return {"v": 1, "data": self.chunk_hash(s, e),
                "targets": [self.members[r].key for r in self.roles]}

    def clean_preds(self, s: int, e: int) -> dict[str, torch.Tensor]:
        from advlab.evaluate import predict

        def compute() -> dict[str, torch.Tensor]:
            x = self.x[s:e].to(self.cfg.device)
            return {self.members[r].key: predict(self.members[r].module, x,
                                                 self.cfg.batch_size).cpu()
                    for r in self.roles}

        return self.cache.get_or_compute("clean", self.clean_cfg(s, e), compute)

    def run_chunk(self, ch: _Chunk) -> dict[str, torch.Tensor]:
        """Predictions of every target on the chunk's adversarial examples (cached); the
        examples are generated (an *attack call*) only if they are not cached either."""
        from advlab.evaluate import predict

        cfg = self.cfg
        src = self.source(ch.source, ch.fuse or "logits")
        x = self.x[ch.start:ch.stop].to(cfg.device)
        y = self.y[ch.start:ch.stop].to(cfg.device)

        def attack() -> dict[str, torch.Tensor]:
            lab = y if cfg.labels == "true" else predict(src, x, cfg.batch_size)
            res = ch.attack.make().run(src, x, lab, record=ch.attack.steps > 1)
            out: dict[str, torch.Tensor] = {}
            if cfg.store == "uint8":
                out["x_adv"] = _quantize(res.x_adv, x, ch.attack.eps).cpu()
            else:
                out["x_adv"] = res.x_adv.detach().float().cpu()
            if ch.attack.steps > 1:
                out["cos"] = _cosines(res.updates).cpu()
            return out

        def evaluate() -> dict[str, torch.Tensor]:
            calls = self.cache.calls
            adv = self.cache.get_or_compute("adv", ch.adv_cfg, attack)
            if self.cache.calls > calls:
                self.attack_calls += 1
                if self.on_attack is not None:
                    self.on_attack(self.attack_calls)
            xa = adv["x_adv"]
            xa = (xa.float() / 255 if xa.dtype == torch.uint8 else xa).to(cfg.device)
            out = {self.members[r].key: predict(self.members[r].module, xa,
                                                cfg.batch_size).cpu() for r in self.roles}
            if len(ch.source) > 1:
                out["source_adv"] = predict(src, xa, cfg.batch_size).cpu()
                out["source_clean"] = predict(src, x, cfg.batch_size).cpu()
            if "cos" in adv:
                out["cos"] = adv["cos"]
            return out

        return self.cache.get_or_compute("pred", ch.pred_cfg, evaluate)

    def stored_adv(self, ch: _Chunk) -> torch.Tensor | None:
        """The chunk's stored adversarial examples as floats, or None if not on disk."""
        from advlab.train.checkpoint import bytes_to_state

        p = _cache_file(self.cache, "adv", ch.adv_cfg)
        try:
            xa = bytes_to_state(p.read_bytes(), str(p))["x_adv"]
        except (OSError, ValueError, KeyError):
            return None
        return xa.float() / 255 if xa.dtype == torch.uint8 else xa

    # -- the whole experiment ------------------------------------------------------------
    def clean_costs(self, chunks: list[_Chunk]) -> dict[tuple[int, int], float]:
        """(start, stop) of every chunk -> cost of its clean predictions (0 when cached)."""
        return {se: 0.0 if _cache_file(self.cache, "clean", self.clean_cfg(*se)).is_file()
                else (se[1] - se[0]) * sum(m.flops + _OVERHEAD for m in self.members.values())
                for se in sorted({(c.start, c.stop) for c in chunks})}

    def plan_all(self, plan: _Plan) -> tuple[list, list[_Chunk], dict[tuple[int, int], float],
                                              float]:
        """Every training and attack unit with its cost, and ``self.planned``."""
        train = self.train_units()
        # plan every work unit now, for the costs and what is cached: members that are not
        # trained yet have provisional keys, so nothing that depends on them counts as cached
        self.refresh_keys()
        _, chunks = self.make_chunks(plan)
        clean_cost = self.clean_costs(chunks)
        total = sum(c for _, c, cached, _ in train if not cached) + \
            sum(c.cost for c in chunks) + sum(clean_cost.values())
        self.planned = {"train_units": len(train), "attack_units": len(chunks),
                        "attack_units_cached": sum(c.cached == "pred" for c in chunks),
                        "gflop": total / 1e9}
        return train, chunks, clean_cost, total

    def _share(self, units: list[tuple[str, float, str, Callable[[], Any]]], bar: _Bar,
               rank: int, world: int) -> None:
        """Run this rank's units of ``units`` ((label, cost, cache key, run)), then wait for
        the other ranks. Units with the same key are one unit (no two ranks write the same
        cache entry); rank 0 deals them by cost and tells the others."""
        from advlab.evaluate.distributed import barrier, broadcast_object, deal

        first: dict[str, int] = {}
        for i, (_, _, key, _) in enumerate(units):
            first.setdefault(key, i)
        todo = list(first.values())
        owners = broadcast_object(deal([units[i][1] for i in todo], world)
                                  if rank == 0 else None)
        for i, owner in zip(todo, owners, strict=True):
            if owner != rank:
                continue
            label, cost, _, fn = units[i]
            bar.start(label)
            t0 = time.perf_counter()
            fn()
            if cost:
                self.computed_flops += cost
                self.compute_seconds += time.perf_counter() - t0
            bar.step(cost)
        barrier()

    def share_work(self, plan: _Plan) -> dict[str, Any] | None:
        """Under torchrun: compute this rank's share of every unit into the shared cache.

        Three phases, each dealt to the ranks and closed by a barrier: the normal models'
        trainings; the adversarially trained models (they need the normal ones); the clean
        predictions and attack chunks. Returns the plan as it stood before anything was
        computed on rank 0, with the counters of all ranks summed into this runner (which
        then assembles the results from the cache), and None on the other ranks."""
        from advlab.evaluate.distributed import barrier, check_shared_dir, gather_results, get_rank

        rank, world = get_rank(), self.world
        check_shared_dir(self.cache_dir)
        train, _, _, total = self.plan_all(plan)
        planned = dict(self.planned)
        barrier()  # every rank planned (reading what is cached) before any rank writes
        bar = _Bar(total / world, self.progress and rank == 0)
        try:
            n_normal = len(self.cfg.normal) if self.cfg.suite == "mnist" else 0
            # only the MNIST suite trains (ImageNet models come pretrained from timm)
            for phase in ("normal", "adversarial") if self.cfg.suite == "mnist" else ():
                units = train[:n_normal] if phase == "normal" else train[n_normal:]
                specs = self.cfg.normal if phase == "normal" else self.cfg.adversarial
                keys = [str(self.members[s.role].checkpoint) if phase == "normal" else
                        str(self._adv_path(_advtrain_cfg(self.cfg, s, self.members)))
                        for s in specs]
                self._share([(lbl, 0.0 if cached else cost, key, fn)
                             for (lbl, cost, cached, fn), key in zip(units, keys, strict=True)],
                            bar, rank, world)
                for (_, _, _, fn), s in zip(units, specs, strict=True):
                    if self.members[s.role].module is None:
                        fn()  # trained by another rank: load it from the cache
                # the adversarial units again: their static models are trained now
                train = train[:n_normal] + self.train_units()[n_normal:]
            self.refresh_keys()
            _, chunks = self.make_chunks(plan)
            labels = {r: self.members[r].label for r in self.roles}
            units = [(f"clean predictions [{s}:{e}]", cost,
                      "clean:" + config_hash(self.clean_cfg(s, e)),
                      lambda se=(s, e): self.clean_preds(*se))
                     for (s, e), cost in self.clean_costs(chunks).items()]
            units += [(ch.label(labels), ch.cost, "pred:" + config_hash(ch.pred_cfg),
                       lambda ch=ch: self.run_chunk(ch)) for ch in chunks]
            self._share(units, bar, rank, world)
        finally:
            bar.close()
        counts = gather_results((self.attack_calls, self.trainings, self.computed_flops,
                                 self.compute_seconds))
        if counts is None:
            return None
        self.attack_calls, self.trainings = (sum(c[i] for c in counts) for i in (0, 1))
        self.computed_flops, self.compute_seconds = (sum(c[i] for c in counts) for i in (2, 3))
        return planned

    def run(self) -> dict[str, Any] | None:
        """The whole experiment (None on the ranks other than 0 of a torchrun job)."""
        from advlab.evaluate.distributed import get_world_size

        t_start = time.perf_counter()
        cfg = self.cfg
        self.members = _build_members(cfg, self.cache_dir)
        self.roles = [s.role for s in cfg.models]
        if cfg.suite == "imagenet":
            _load_imagenet_members(cfg, self.members)
        self.load_data()
        cfg = self.cfg
        plan = _plan(cfg)
        self.world = get_world_size()
        shared = None
        if self.world > 1:
            shared = self.share_work(plan)
            if shared is None:
                return None
        train, chunks, clean_cost, total = self.plan_all(plan)
        n_clean = list(clean_cost)
        if shared is not None:  # what was to compute when the ranks started
            self.planned = shared
        log.info("momentum: %d training units, %d attack units (%d cached), %.1f GFLOP",
                 len(train), len(chunks), self.planned["attack_units_cached"], total / 1e9)
        bar = _Bar(total, self.progress)
        try:
            for label, cost, cached, fn in train:
                bar.start(label)
                t0 = time.perf_counter()
                fn()
                if not cached:
                    self.computed_flops += cost
                    self.compute_seconds += time.perf_counter() - t0
                bar.step(0 if cached else cost)
            # the real cache keys: the hashes of the weights just trained or loaded
            self.refresh_keys()
            per_unit, real_chunks = self.make_chunks(plan)
            self.clean: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
            for se in n_clean:
                bar.start(f"clean predictions [{se[0]}:{se[1]}]")
                t0 = time.perf_counter()
                self.clean[se] = self.clean_preds(*se)
                if clean_cost[se]:
                    self.computed_flops += clean_cost[se]
                    self.compute_seconds += time.perf_counter() - t0
                bar.step(clean_cost[se])
            self.preds: dict[tuple, dict[str, torch.Tensor]] = {}
            labels = {r: self.members[r].label for r in self.roles}
            for planned, ch in zip(chunks, real_chunks, strict=True):
                bar.start(ch.label(labels))
                t0 = time.perf_counter()
                self.preds[ch.ident] = self.run_chunk(ch)
                if planned.cost:
                    self.computed_flops += planned.cost
                    self.compute_seconds += time.perf_counter() - t0
                bar.step(planned.cost)
        finally:
            bar.close()
        results = self.aggregate(plan, per_unit)
        results["seconds"] = time.perf_counter() - t_start
        results["attack_calls"] = self.attack_calls
        results["trainings"] = self.trainings
        results["planned"] = self.planned
        results["computed_gflop"] = self.computed_flops / 1e9
        results["compute_seconds"] = self.compute_seconds
        results["cache_dir"] = str(self.cache_dir)
        return results

    # -- numbers -------------------------------------------------------------------------
    def outcome(self, chunks: list[_Chunk], target: str) -> dict[str, float]:
        """Success % of the attack over its chunks on ``target`` (a role or ``"source"``)."""
        adv, clean, ys = [], [], []
        for ch in chunks:
            p = self.preds[ch.ident]
            if target == "source":
                adv.append(p["source_adv"])
                clean.append(p["source_clean"])
            else:
                k = self.members[target].key
                adv.append(p[k])
                clean.append(self.clean[(ch.start, ch.stop)][k])
            ys.append(self.y[ch.start:ch.stop])
        a, c, y = torch.cat(adv), torch.cat(clean), torch.cat(ys)
        success = a != y
        correct = c == y
        n_ok = int(correct.sum())
        return {"success": 100 * float(success.float().mean()),
                "success_on_correct": (100 * float(success[correct].float().mean())
                                       if n_ok else float("nan")),
                "n": int(y.numel()), "n_correct": n_ok}

    def cosine(self, chunks: list[_Chunk]) -> list[float]:
        cos = torch.cat([self.preds[c.ident]["cos"] for c in chunks])
        return [float(v) for v in cos.mean(0)]

    def aggregate(self, plan: _Plan, per_unit: dict[_Unit, list[_Chunk]]) -> dict[str, Any]:
        cfg = self.cfg
        roles = self.roles
        res: dict[str, Any] = {"models": {}, "table1": {}, "table2": {}, "table3": {},
                               "decay": {}, "iterations": {}, "eps_sweep": {}, "cosine": {}}
        first = per_unit[plan.table1[(cfg.normal[0].role, "FGSM")]]
        for r in roles:
            k = self.members[r].key
            clean = torch.cat([self.clean[(c.start, c.stop)][k] for c in first])
            y = self.y[:clean.numel()]
            m = self.members[r]
            res["models"][r] = {
                "arch": m.spec.arch, "adversarial": m.spec.adversarial, "key": m.key,
                "clean_accuracy": 100 * float((clean == y).float().mean()),
                "n": int(y.numel()), "checkpoint": str(m.checkpoint) if m.checkpoint else None,
                "static": list(m.spec.static),
                "train_metrics": (m.card.get("metrics") or [None])[-1] if m.card else None}
        for (s, a), u in plan.table1.items():
            res["table1"][f"{s}|{a}"] = {t: self.outcome(per_unit[u], t) for t in roles}
        for (h, f, a), u in plan.table2.items():
            res["table2"][f"{h}|{f}|{a}"] = {"ensemble": self.outcome(per_unit[u], "source"),
                                             "hold_out": self.outcome(per_unit[u], h)}
        for (h, a), u in plan.table3.items():
            res["table3"][f"{h}|{a}"] = {"ensemble": self.outcome(per_unit[u], "source"),
                                         "hold_out": self.outcome(per_unit[u], h)}
        for mu, u in plan.decay.items():
            res["decay"][f"{mu:g}"] = {t: self.outcome(per_unit[u], t)["success"]
                                       for t in roles}
        for (a, t), u in plan.iters.items():
            res["iterations"][f"{a}|{t}"] = {r: self.outcome(per_unit[u], r)["success"]
                                             for r in roles}
        for (a, e), u in plan.eps.items():
            res["eps_sweep"][f"{a}|{e:g}"] = {r: self.outcome(per_unit[u], r)["success"]
                                              for r in roles}
        src0 = cfg.normal[0].role
        for a in ("I-FGSM", "MI-FGSM"):
            u = plan.table1[(src0, a)]
            if u.attack.steps > 1:
                res["cosine"][a] = self.cosine(per_unit[u])
        self.per_unit = per_unit
        self.plan = plan
        return res


# -- claims ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Claim:
    """A qualitative claim of the paper checked against numbers (``held`` None: not testable
    with these models)."""

    name: str
    statement: str
    held: bool | None
    evidence: str

    def sentence(self) -> str:
        verdict = {True: "HELD", False: "DID NOT HOLD", None: "NOT TESTABLE"}[self.held]
        return f"{self.statement}: {verdict}. {self.evidence}"


def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def claim_table1(t1: dict[tuple[str, str], dict[str, float]], normal: Sequence[str],
                 adv: Sequence[str]) -> list[Claim]:
    """Table 1 claims from ``t1[(source, attack)][target] -> success %``."""
    out = []
    bb = {a: _mean([t1[(s, a)][t] for s in normal for t in normal if t != s]) for a in ATTACKS}
    wb = {a: _mean([t1[(s, a)][s] for s in normal]) for a in ATTACKS}
    pairs = [(s, t) for s in normal for t in list(normal) + list(adv) if t != s]
    wins = sum(t1[(s, "MI-FGSM")][t] > t1[(s, "I-FGSM")][t] for s, t in pairs)
    if len(normal) < 2:
        out.append(Claim("mi_transfers", "MI-FGSM transfers better than I-FGSM and FGSM while "
                         "staying near 100 % white-box", None,
                         "Only one normal model: no black-box pair."))
    else:
        held = bb["MI-FGSM"] > bb["I-FGSM"] and bb["MI-FGSM"] > bb["FGSM"] and \
            wb["MI-FGSM"] >= 95.0
        out.append(Claim(
            "mi_transfers", "MI-FGSM transfers better than I-FGSM and FGSM while staying near "
            "100 % white-box", held,
            f"Mean black-box success on the normal models: MI-FGSM {bb['MI-FGSM']:.1f} %, "
            f"I-FGSM {bb['I-FGSM']:.1f} %, FGSM {bb['FGSM']:.1f} %; MI-FGSM beats I-FGSM in "
            f"{wins} of {len(pairs)} black-box source-target pairs; white-box: MI-FGSM "
            f"{wb['MI-FGSM']:.1f} %, I-FGSM {wb['I-FGSM']:.1f} %, FGSM {wb['FGSM']:.1f} % "
            f"(criterion: MI-FGSM's black-box mean above both others and white-box >= 95 %)."))
    if adv and len(normal) >= 2:
        bba = {a: _mean([t1[(s, a)][t] for s in normal for t in adv]) for a in ATTACKS}
        held = all(bba[a] < bb[a] for a in ATTACKS)
        out.append(Claim(
            "adv_harder", "Adversarially trained targets are harder to fool than normal ones",
            held, "Mean black-box success, normal vs adversarially trained targets: " +
            "; ".join(f"{a} {bb[a]:.1f} % vs {bba[a]:.1f} %" for a in ATTACKS) +
            " (criterion: lower on the adversarially trained targets for every attack)."))
    else:
        out.append(Claim("adv_harder", "Adversarially trained targets are harder to fool than "
                         "normal ones", None, "No adversarially trained target."))
    return out


def claim_table2(t2: dict[tuple[str, str, str], tuple[float, float]],
                 held_out: Sequence[str]) -> list[Claim]:
    """Table 2 claims from ``t2[(held_out, fusion, attack)] -> (ensemble %, hold-out %)``."""
    if not held_out:
        return [Claim("logits_fusion", "Fusing logits beats fusing predictions and losses",
                      None, "Table 2 needs at least three normal models.")]
    mean = {(f, a): _mean([t2[(h, f, a)][1] for h in held_out]) for f in FUSIONS
            for a in ATTACKS}
    wins = sum(t2[(h, "logits", a)][1] > max(t2[(h, "probs", a)][1], t2[(h, "loss", a)][1])
               for h in held_out for a in ATTACKS)
    held = all(mean[("logits", a)] > mean[("probs", a)] and
               mean[("logits", a)] > mean[("loss", a)] for a in ATTACKS)
    claims_ = [Claim(
        "logits_fusion", "Fusing logits beats fusing predictions and losses (hold-out success)",
        held, "Mean hold-out success logits / predictions / loss: " +
        "; ".join(f"{a} {mean[('logits', a)]:.1f} / {mean[('probs', a)]:.1f} / "
                  f"{mean[('loss', a)]:.1f} %" for a in ATTACKS) +
        f"; logits strictly best in {wins} of {len(held_out) * len(ATTACKS)} (model, attack) "
        f"cases (criterion: logits' mean above both others for every attack).")]
    mi = mean[("logits", "MI-FGSM")]
    it = mean[("logits", "I-FGSM")]
    fg = mean[("logits", "FGSM")]
    claims_.append(Claim(
        "ensemble_mi", "Against an ensemble, MI-FGSM transfers to the held-out model better "
        "than I-FGSM and FGSM", mi > it and mi > fg,
        f"Logits ensembles, mean hold-out success: MI-FGSM {mi:.1f} %, I-FGSM {it:.1f} %, "
        f"FGSM {fg:.1f} %."))
    return claims_


def claim_table3(t3: dict[tuple[str, str], tuple[float, float]],
                 held_out: Sequence[str]) -> list[Claim]:
    """Table 3 claims from ``t3[(held_out, attack)] -> (ensemble %, hold-out %)``."""
    if not held_out:
        return [Claim("ens_vs_adv", "An ensemble MI-FGSM attack transfers to adversarially "
                      "trained models better than I-FGSM and FGSM", None,
                      "No adversarially trained model.")]
    hold = {a: _mean([t3[(h, a)][1] for h in held_out]) for a in ATTACKS}
    ens = {a: _mean([t3[(h, a)][0] for h in held_out]) for a in ATTACKS}
    held = hold["MI-FGSM"] > hold["I-FGSM"] and hold["MI-FGSM"] > hold["FGSM"] and \
        ens["MI-FGSM"] >= 95.0
    return [Claim(
        "ens_vs_adv", "An ensemble MI-FGSM attack transfers to adversarially trained models "
        "better than I-FGSM and FGSM, with near 100 % success on the ensemble", held,
        "Mean hold-out success: " + "; ".join(f"{a} {hold[a]:.1f} %" for a in ATTACKS) +
        "; on the ensemble (white-box): " + "; ".join(f"{a} {ens[a]:.1f} %" for a in ATTACKS)
        + " (criterion: MI-FGSM's hold-out mean above both others, ensemble >= 95 %).")]


def claim_decay(decay: dict[float, float]) -> Claim:
    """``decay[mu] -> mean black-box success %``: does it peak near mu = 1?"""
    if not decay or all(math.isnan(v) for v in decay.values()):
        return Claim("decay_peak", "Black-box success peaks near mu = 1", None,
                     "No black-box target.")
    best = max(decay, key=lambda m: decay[m])
    held = 0.7 <= best <= 1.3
    lo = min(decay)
    return Claim("decay_peak", "Black-box success peaks near mu = 1", held,
                 f"Mean black-box success over the other normal models is highest at "
                 f"mu = {best:g} ({decay[best]:.1f} %; mu = {lo:g}: {decay[lo]:.1f} %) "
                 f"(criterion: peak within 0.7 <= mu <= 1.3).")


def claim_iterations(it: dict[str, dict[int, float]]) -> Claim:
    """``it[attack][T] -> mean black-box success %``: MI-FGSM keeps it as T grows."""
    if not it or not it.get("I-FGSM"):
        return Claim("iterations", "MI-FGSM keeps its black-box success as T grows while "
                     "I-FGSM's falls", None, "No black-box target.")
    ts = sorted(it["I-FGSM"])
    t_max = ts[-1]
    i_peak = max(it["I-FGSM"].values())
    mi_end, i_end = it["MI-FGSM"][t_max], it["I-FGSM"][t_max]
    held = mi_end > i_end and i_end < i_peak
    return Claim("iterations", "MI-FGSM keeps its black-box success as T grows while "
                 "I-FGSM's falls", held,
                 f"At T = {t_max}: MI-FGSM {mi_end:.1f} %, I-FGSM {i_end:.1f} % (I-FGSM's peak "
                 f"over T: {i_peak:.1f} %, MI-FGSM's: {max(it['MI-FGSM'].values()):.1f} %) "
                 f"(criterion: MI-FGSM above I-FGSM at the largest T and I-FGSM below its "
                 f"peak).")


def claim_cosine(cos: dict[str, list[float]]) -> Claim:
    if "MI-FGSM" not in cos or "I-FGSM" not in cos:
        return Claim("cosine", "Successive MI-FGSM perturbations are more similar than "
                     "I-FGSM's", None, "Needs T >= 2.")
    mi, i = _mean(cos["MI-FGSM"]), _mean(cos["I-FGSM"])
    return Claim("cosine", "Successive MI-FGSM perturbations are more similar than I-FGSM's",
                 mi > i, f"Mean cosine similarity of successive perturbations: MI-FGSM "
                 f"{mi:.3f}, I-FGSM {i:.3f}.")


def claims(results: dict[str, Any], cfg: MomentumConfig) -> list[Claim]:
    """Every claim, computed from the numbers of a run (see the ``claim_*`` functions)."""
    normal = [s.role for s in cfg.normal]
    adv = [s.role for s in cfg.adversarial]
    t1 = _t1(results)
    out = claim_table1(t1, normal, adv)
    t2 = {k: (v["ensemble"]["success"], v["hold_out"]["success"]) for k, v in _t2(results).items()}
    out += claim_table2(t2, sorted({k[0] for k in t2}, key=normal.index))
    t3 = {k: (v["ensemble"]["success"], v["hold_out"]["success"]) for k, v in _t3(results).items()}
    out += claim_table3(t3, [h for h in adv if (h, "FGSM") in t3])
    src0 = normal[0]
    black = [r for r in normal if r != src0]
    out.append(claim_decay({float(mu): _mean([v[t] for t in black])
                            for mu, v in results["decay"].items()} if black else {}))
    its: dict[str, dict[int, float]] = {}
    for k, v in results["iterations"].items():
        a, t = k.split("|")
        its.setdefault(a, {})[int(t)] = _mean([v[r] for r in black])
    out.append(claim_iterations(its if black else {}))
    out.append(claim_cosine(results["cosine"]))
    return out


def paper_claims() -> list[Claim]:
    """The same claims computed from the paper's own tables (a check of the criteria)."""
    t1 = {(s, a): dict(zip(ROLES + ADV_ROLES, v)) for s, d in PAPER_TABLE1.items()
          for a, v in d.items()}
    t2 = {(h, f, a): PAPER_TABLE2[h][f][i] for h in ROLES for f in FUSIONS
          for i, a in enumerate(ATTACKS)}
    t3 = {(h, a): PAPER_TABLE3[h][i] for h in ADV_ROLES for i, a in enumerate(ATTACKS)}
    return claim_table1(t1, ROLES, ADV_ROLES) + claim_table2(t2, ROLES) + \
        claim_table3(t3, ADV_ROLES)


def _t1(results: dict[str, Any]) -> dict[tuple[str, str], dict[str, float]]:
    out = {}
    for k, v in results["table1"].items():
        s, a = k.split("|")
        out[(s, a)] = {t: o["success"] for t, o in v.items()}
    return out


def _t2(results: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {tuple(k.split("|")): v for k, v in results["table2"].items()}


def _t3(results: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {tuple(k.split("|")): v for k, v in results["table3"].items()}


# -- tables ------------------------------------------------------------------------------------
_WB = "* = white-box (the target is, or is part of, the source)."


def _table1(results: dict[str, Any], cfg: MomentumConfig, labels: dict[str, str],
            metric: str) -> Table:
    normal = [s.role for s in cfg.normal]
    targets = [s.role for s in cfg.models]
    rows = []
    for s in normal:
        for a in ATTACKS:
            v = results["table1"][f"{s}|{a}"]
            rows.append([labels[s], a] + [Cell(round(v[t][metric], 1), "*") if t == s
                                          else round(v[t][metric], 1) for t in targets])
    over = "all images" if metric == "success" else "images the target classifies correctly"
    return Table(
        f"Table 1 (ours, {cfg.suite}): success rate % of single-model attacks, over {over}",
        ["source", "attack"] + [labels[t] for t in targets], rows,
        notes=f"{_WB} eps = {_fmt_eps(cfg.eps)}, T = {cfg.steps}, mu = {cfg.decay:g}, "
              f"alpha = eps/T, {cfg.n_images} images, labels = {cfg.labels}. Columns after "
              f"the normal models are the ensemble-adversarially trained targets.",
        float_format=".1f")


def _paper_table1() -> Table:
    rows = []
    for s in ROLES:
        for a in ATTACKS:
            vals = PAPER_TABLE1[s][a]
            rows.append([s, a] + [Cell(v, "*") if t == s else v
                                  for t, v in zip(ROLES + ADV_ROLES, vals)])
    return Table("Table 1 (paper): success rate % on ImageNet (Dong et al. 2018)",
                 ["source", "attack"] + list(ROLES + ADV_ROLES), rows,
                 notes=f"{_WB} eps = 16/255, T = 10, mu = 1.0, 1000 images.",
                 float_format=".1f")


def _table2(results: dict[str, Any], cfg: MomentumConfig, labels: dict[str, str],
            metric: str) -> Table:
    rows = []
    t2 = _t2(results)
    for h in [s.role for s in cfg.normal]:
        for f, fname in FUSIONS.items():
            if (h, f, "FGSM") not in t2:
                continue
            row: list[Any] = [f"-{labels[h]}", fname]
            for a in ATTACKS:
                v = t2[(h, f, a)]
                row += [Cell(round(v["ensemble"][metric], 1), "*"),
                        round(v["hold_out"][metric], 1)]
            rows.append(row)
    over = "all images" if metric == "success" else "images the target classifies correctly"
    cols = ["held out", "ensemble method"] + [f"{a} {w}" for a in ATTACKS
                                              for w in ("ensemble", "hold-out")]
    return Table(
        f"Table 2 (ours, {cfg.suite}): ensembles of the other normal models, over {over}",
        cols, rows,
        notes=f"{_WB} eps = {_fmt_eps(cfg.eps)}, T = {cfg.ensemble_steps}, mu = {cfg.decay:g}, "
              f"equal weights, {cfg.n_ensemble} images.", float_format=".1f")


def _paper_table2() -> Table:
    rows = []
    for h in ROLES:
        for f, fname in FUSIONS.items():
            row: list[Any] = [f"-{h}", fname]
            for ens, hold in PAPER_TABLE2[h][f]:
                row += [Cell(ens, "*"), hold]
            rows.append(row)
    cols = ["held out", "ensemble method"] + [f"{a} {w}" for a in ATTACKS
                                              for w in ("ensemble", "hold-out")]
    return Table("Table 2 (paper): ensemble of the other normal models vs the held-out one",
                 cols, rows, notes=f"{_WB} eps = 16/255, T = 20, mu = 1.0.",
                 float_format=".1f")


def _table3(results: dict[str, Any], cfg: MomentumConfig, labels: dict[str, str],
            metric: str) -> Table:
    rows = []
    t3 = _t3(results)
    for h in [s.role for s in cfg.adversarial]:
        for a in ATTACKS:
            if (h, a) in t3:
                v = t3[(h, a)]
                rows.append([f"-{labels[h]}", a, Cell(round(v["ensemble"][metric], 1), "*"),
                             round(v["hold_out"][metric], 1)])
    over = "all images" if metric == "success" else "images the target classifies correctly"
    return Table(
        f"Table 3 (ours, {cfg.suite}): logits ensemble of all other models vs the held-out "
        f"adversarially trained one, over {over}", ["held out", "attack", "ensemble",
                                                    "hold-out"], rows,
        notes=f"{_WB} eps = {_fmt_eps(cfg.eps)}, T = {cfg.ensemble_steps}, mu = {cfg.decay:g}, "
              f"{cfg.n_ensemble} images.", float_format=".1f")


def _paper_table3() -> Table:
    rows = [[f"-{h}", a, Cell(PAPER_TABLE3[h][i][0], "*"), PAPER_TABLE3[h][i][1]]
            for h in ADV_ROLES for i, a in enumerate(ATTACKS)]
    return Table("Table 3 (paper): ensemble of the other six models vs the held-out "
                 "adversarially trained one", ["held out", "attack", "ensemble", "hold-out"],
                 rows, notes=f"{_WB} eps = 16/255, T = 20, mu = 1.0.", float_format=".1f")


def _models_table(results: dict[str, Any], cfg: MomentumConfig) -> Table:
    rows = []
    for s in cfg.models:
        m = results["models"][s.role]
        tm = m.get("train_metrics") or {}
        extra = ""
        if s.adversarial and cfg.suite == "mnist":
            extra = (f"ensemble adv. training, eps {_fmt_eps(cfg.advtrain_eps or cfg.eps)}, "
                     f"static: {', '.join(s.static)}")
            if tm.get("test_fgsm_acc") is not None:
                extra += f"; white-box FGSM test acc. {100 * tm['test_fgsm_acc']:.1f} %"
        elif cfg.suite == "mnist":
            extra = "standard training"
        else:
            extra = "pretrained (timm)" if cfg.pretrained else "RANDOM INIT (pretrained=False)"
        rows.append([s.role, s.arch, "adversarially trained" if s.adversarial else "normal",
                     m["clean_accuracy"], extra])
    return Table(f"Models: clean accuracy % on the first {cfg.n_images} evaluation images",
                 ["role", "model", "kind", "clean acc. %", "training"], rows,
                 float_format=".1f")


def _sweep_table(results: dict[str, Any], cfg: MomentumConfig) -> tuple[Table, list[float]]:
    normal = [s.role for s in cfg.normal]
    adv = [s.role for s in cfg.adversarial]
    src0, black = normal[0], normal[1:]
    rows, informative = [], []
    for e in cfg.sweep_eps:
        default = abs(e - cfg.eps) < 1e-9
        row: list[Any] = [Cell(_fmt_eps(e), " (default)") if default else _fmt_eps(e)]
        ok = True
        for a in ATTACKS:
            v = results["eps_sweep"][f"{a}|{e:g}"]
            wb = v[src0]
            bb = _mean([v[t] for t in black])
            ba = _mean([v[t] for t in adv])
            row += [wb, bb, ba]
            if black and not 10.0 <= bb <= 90.0:
                ok = False
            if a != "FGSM" and cfg.steps > 1 and wb < 95.0:
                ok = False
        row.append("yes" if ok and black else "no")
        if ok and black:
            informative.append(e)
        rows.append(row)
    cols = ["eps"] + [f"{a} {w}" for a in ATTACKS for w in ("white-box", "black-box normal",
                                                             "black-box adv.")] + \
        ["informative"]
    return Table(f"Eps sweep: success % from {src0} (T = {cfg.steps}, {cfg.n_figure} images)",
                 cols, rows, float_format=".1f",
                 notes="black-box = mean over the other normal models / over the adversarially "
                       "trained models. informative = the paper's regime: the iterative "
                       "attacks' white-box success is >= 95 % and every attack's mean black-box "
                       "success on the normal models lies in [10, 90] % (neither floor nor "
                       "ceiling)."
                 ), informative


def _figure_tables(results: dict[str, Any], cfg: MomentumConfig, labels: dict[str, str]
                   ) -> dict[str, Table]:
    roles = [s.role for s in cfg.models]
    out = {}
    mus = sorted(results["decay"], key=float)
    out["fig_decay"] = Table("Success % of MI-FGSM vs decay factor mu",
                             ["mu"] + [labels[r] for r in roles],
                             [[float(m)] + [results["decay"][m][r] for r in roles] for m in mus],
                             float_format=".1f", formats={"mu": ".2f"})
    rows = []
    for k, v in results["iterations"].items():
        a, t = k.split("|")
        rows.append([a, int(t)] + [v[r] for r in roles])
    out["fig_iterations"] = Table("Success % vs number of iterations T",
                                  ["attack", "T"] + [labels[r] for r in roles], rows,
                                  float_format=".1f")
    cos = results["cosine"]
    if cos:
        n = len(next(iter(cos.values())))
        out["fig_cosine"] = Table(
            "Mean cosine similarity of successive perturbations",
            ["step pair"] + list(cos), [[f"{t + 1}-{t + 2}"] + [cos[a][t] for a in cos]
                                         for t in range(n)], float_format=".3f")
    return out


# -- figures -----------------------------------------------------------------------------------
def _figures(results: dict[str, Any], cfg: MomentumConfig, labels: dict[str, str],
             fig_dir: Path, runner: _Runner) -> list[tuple[Path, str]]:
    try:
        from advlab.report.figures import image_grid, line_plot, multi_line_grid
    except ImportError as e:  # matplotlib missing
        runner.notes.append(f"figures skipped: matplotlib is not importable ({e})")
        return []
    normal = [s.role for s in cfg.normal]
    adv = [s.role for s in cfg.adversarial]
    src0 = normal[0]
    black = normal[1:]
    figs = []
    mus = sorted(results["decay"], key=float)
    series = {}
    for r in normal + adv:
        tag = "white-box" if r == src0 else "black-box"
        series[f"{labels[r]} ({tag})"] = [results["decay"][m][r] for m in mus]
    p = line_plot([float(m) for m in mus], series, fig_dir / "decay.png",
                  f"MI-FGSM from {labels[src0]}: success vs decay factor",
                  "decay factor mu", "success rate", percent=True)
    figs.append((p, f"Success rate of MI-FGSM crafted on {labels[src0]} (eps = "
                    f"{_fmt_eps(cfg.eps)}, T = {cfg.steps}) vs the decay factor mu; mu = 0 is "
                    f"I-FGSM. Paper (Fig. 2 of Dong et al.): black-box success peaks near "
                    f"mu = 1."))
    panels: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for r in normal + adv:
        tag = "white-box" if r == src0 else "black-box"
        lines = {}
        for a in ("I-FGSM", "MI-FGSM"):
            ts = sorted(int(k.split("|")[1]) for k in results["iterations"]
                        if k.startswith(a + "|"))
            lines[a] = (ts, [results["iterations"][f"{a}|{t}"][r] for t in ts])
        panels[f"{labels[r]} ({tag})"] = lines
    p = multi_line_grid(panels, fig_dir / "iterations.png",
                        f"Success vs number of iterations, source {labels[src0]}", "T",
                        "success rate", percent=True, ncols=min(4, len(panels)))
    figs.append((p, f"I-FGSM vs MI-FGSM crafted on {labels[src0]} with T = 1..; alpha = eps/T. "
                    f"Paper (Fig. 3): MI-FGSM keeps its black-box success as T grows, "
                    f"I-FGSM's falls."))
    eps_list = cfg.sweep_eps
    panels = {}
    groups = [(f"{labels[src0]} (white-box)", [src0])]
    if black:
        groups.append(("normal models (black-box, mean)", black))
    if adv:
        groups.append(("adv. trained (black-box, mean)", adv))
    for title, rs in groups:
        panels[title] = {a: (list(eps_list), [_mean([results["eps_sweep"][f"{a}|{e:g}"][r]
                                                     for r in rs]) for e in eps_list])
                         for a in ATTACKS}
    p = multi_line_grid(panels, fig_dir / "eps.png",
                        f"Success vs eps, source {labels[src0]}", "eps", "success rate",
                        percent=True, ncols=len(panels))
    figs.append((p, f"FGSM, I-FGSM and MI-FGSM crafted on {labels[src0]} (T = {cfg.steps}) vs "
                    f"eps; the default eps = {_fmt_eps(cfg.eps)} is where the black-box "
                    f"numbers are informative (see the eps-sweep table)."))
    cos = results["cosine"]
    if cos:
        n = len(next(iter(cos.values())))
        p = line_plot(list(range(1, n + 1)), dict(cos), fig_dir / "cosine.png",
                      f"Cosine similarity of successive perturbations ({labels[src0]})",
                      "step pair t (perturbation t vs t+1)", "mean cosine similarity")
        figs.append((p, f"Cosine similarity of two successive perturbations x_t+1 - x_t, "
                        f"averaged over {cfg.n_images} images, for I-FGSM and MI-FGSM crafted "
                        f"on {labels[src0]} (T = {cfg.steps}). Paper: higher for MI-FGSM "
                        f"(momentum stabilises the update direction)."))
    u = runner.plan.table1.get((src0, "MI-FGSM"))
    if u is not None:
        ch = runner.per_unit[u][0]
        xa = runner.stored_adv(ch)
        if xa is not None:
            k = min(8, xa.shape[0])
            key = runner.members[src0].key
            p = image_grid(runner.x[ch.start:ch.start + k], xa[:k], fig_dir / "examples.png",
                           runner.clean[(ch.start, ch.stop)][key][:k].tolist(),
                           runner.preds[ch.ident][key][:k].tolist(),
                           runner.y[ch.start:ch.start + k].tolist(),
                           f"MI-FGSM on {labels[src0]}, eps = {_fmt_eps(cfg.eps)}",
                           show_perturbation=True)
            figs.append((p, f"The first {k} images and their MI-FGSM versions crafted on "
                            f"{labels[src0]} (white-box predictions)."))
    return figs


# -- report ------------------------------------------------------------------------------------
def _comparison_sentence(ours: list[Claim], paper: list[Claim], names: Sequence[str]) -> str:
    parts = []
    pmap = {c.name: c for c in paper}
    for c in ours:
        if c.name in names:
            p = pmap.get(c.name)
            ref = "" if p is None else f" (on the paper's own numbers: " \
                f"{'held' if p.held else 'did not hold'})"
            parts.append(c.sentence() + ref)
    return "\n".join(parts)


def _write_outputs(runner: _Runner, results: dict[str, Any], out: Path,
                   t_start: float) -> Path:
    cfg = runner.cfg
    labels = {r: runner.members[r].label for r in runner.roles}
    tables_dir = out / "tables"
    tables: dict[str, Table] = {
        "models": _models_table(results, cfg),
        "table1": _table1(results, cfg, labels, "success"),
        "table1_on_correct": _table1(results, cfg, labels, "success_on_correct"),
        "paper_table1": _paper_table1(),
    }
    if results["table2"]:
        tables["table2"] = _table2(results, cfg, labels, "success")
        tables["table2_on_correct"] = _table2(results, cfg, labels, "success_on_correct")
    tables["paper_table2"] = _paper_table2()
    if results["table3"]:
        tables["table3"] = _table3(results, cfg, labels, "success")
        tables["table3_on_correct"] = _table3(results, cfg, labels, "success_on_correct")
    tables["paper_table3"] = _paper_table3()
    sweep, informative = _sweep_table(results, cfg)
    tables["eps_sweep"] = sweep
    tables.update(_figure_tables(results, cfg, labels))
    for name, t in tables.items():
        t.to_csv(tables_dir / f"{name}.csv")
        t.to_json(tables_dir / f"{name}.json")
    ours = claims(results, cfg)
    paper = paper_claims()
    results["claims"] = [dataclasses.asdict(c) for c in ours]
    results["paper_claims"] = [dataclasses.asdict(c) for c in paper]
    results["informative_eps"] = informative
    figs = _figures(results, cfg, labels, out / "figures", runner)

    suite = "MNIST" if cfg.suite == "mnist" else "ImageNet"
    rep = Report(f"Boosting Adversarial Attacks with Momentum: reproduction on {suite}",
                 subtitle=f"Dong et al., CVPR 2018 -- profile {cfg.profile}, "
                          f"eps = {_fmt_eps(cfg.eps)}, labels = {cfg.labels}")
    rep.add_heading("Setup")
    attacked = "the ground-truth labels" if cfg.labels == "true" else \
        "the source's clean prediction (as the authors' code)"
    setup = (
        f"Data: {runner.data_desc}. Threat model: L-inf, eps = {_fmt_eps(cfg.eps)} in [0, 1] "
        f"pixel units, adversarial images clipped to [0, 1]; untargeted; attacks on the "
        f"models in eval mode. Step alpha = eps/T, T = {cfg.steps} for single models and the "
        f"figures, T = {cfg.ensemble_steps} for the ensemble tables, mu = {cfg.decay:g}. "
        f"The attack uses {attacked}; "
        f"success = the target's prediction on the adversarial image differs from the ground "
        f"truth, over all images (the paper's measure) and, in the *_on_correct tables, over "
        f"the images the target classifies correctly.")
    if cfg.suite == "mnist":
        setup += (
            "\nRoles: the paper's four normal ImageNet models are played by MNIST zoo models "
            "and its three ensemble-adversarially trained models by zoo models trained with "
            "ensemble adversarial training (advlab.train.advtrain, Tramer et al. 2018: half of "
            "each "
            "batch replaced by FGSM examples from the model itself or, in turn, from static "
            "pre-trained normal models), at the attack's eps, as Tramer et al. trained at the "
            "budget they were attacked with.")
        full_specs = {s.role: s.arch for s in sum(_mnist_models("full"), ())}
        swaps = [f"{s.role}: {s.arch} instead of {full_specs[s.role]}" for s in cfg.models
                 if s.role in full_specs and full_specs[s.role] != s.arch]
        setup += (f" Training: normal models {cfg.train_epochs} epoch(s) on "
                  f"{cfg.train_size or 60000} images, defended ones {cfg.advtrain_epochs} "
                  f"epoch(s) on {cfg.advtrain_size or 60000} images (Adam, lr 1e-3, batch 64).")
        if swaps:
            setup += (" Cheaper models than the full profile (mnist-alexnet's forward pass "
                      "costs 348 MFLOP, 45x mnist-cnn's, and the ensemble tables take "
                      "hundreds of gradients per image): " + "; ".join(swaps) + ".")
    else:
        setup += ("\nModels: timm ports of the paper's TF-slim models with input "
                  "normalisation inside the wrapper; Inc-v3ens3, Inc-v3ens4 and Res-152 are not "
                  "in timm (the adversarially trained columns are the timm ones available). "
                  "Adversarial images are stored as 8-bit images (like the competition's PNGs), "
                  "rounded inside the eps-ball.")
    rep.add_paragraph(setup)
    rep.add_table(tables["models"])
    rep.add_heading("Which of the paper's claims held")
    rep.add_paragraph("\n".join(f"• {c.sentence()}" for c in ours))

    rep.add_heading("Table 1: attacking a single model")
    rep.add_paragraph(_comparison_sentence(ours, paper, ("mi_transfers", "adv_harder")))
    rep.add_table(tables["table1"]).add_table(tables["paper_table1"])
    rep.add_table(tables["table1_on_correct"])
    rep.add_heading("Table 2: attacking an ensemble of normal models")
    if "table2" in tables:
        rep.add_paragraph(_comparison_sentence(ours, paper, ("logits_fusion", "ensemble_mi")))
        rep.add_table(tables["table2"])
    else:
        rep.add_paragraph("Not computed: it needs at least three normal models.")
    rep.add_table(tables["paper_table2"])
    if "table2" in tables:
        rep.add_table(tables["table2_on_correct"])
    rep.add_heading("Table 3: ensembles against adversarially trained models")
    if "table3" in tables:
        rep.add_paragraph(_comparison_sentence(ours, paper, ("ens_vs_adv",)))
        rep.add_table(tables["table3"])
    else:
        rep.add_paragraph("Not computed: no adversarially trained model in this run.")
    rep.add_table(tables["paper_table3"])
    if "table3" in tables:
        rep.add_table(tables["table3_on_correct"])

    rep.add_heading("Figures")
    rep.add_paragraph("\n".join(f"• {c.sentence()}" for c in ours
                                if c.name in ("decay_peak", "iterations", "cosine")))
    for p, cap in figs:
        rep.add_figure(p, cap)
    rep.add_heading("Choice of eps", level=3)
    if informative:
        verdict = ("is" if any(abs(e - cfg.eps) < 1e-9 for e in informative) else "is NOT") \
            + " informative"
    else:
        verdict = "cannot be judged informative (no eps value of the sweep is)"
    rep.add_paragraph(
        f"The default eps = {_fmt_eps(cfg.eps)} {verdict}: informative eps values in this "
        f"run: {', '.join(_fmt_eps(e) for e in informative) or 'none'}. Informative means "
        f"the paper's regime at 16/255 on ImageNet: iterative white-box attacks succeed "
        f"(>= 95 %) while black-box success is neither floor nor ceiling (10-90 %). On MNIST "
        f"a large eps (0.3, the usual MNIST budget, or more) makes every attack transfer to "
        f"nearly every normal model, so the tables would compare nothing; a small eps leaves "
        f"even the white-box attacks short of 100 %.")
    rep.add_table(tables["eps_sweep"])

    rep.add_heading("Reproducibility and cost")
    rate = results["computed_gflop"] / results["compute_seconds"] \
        if results["compute_seconds"] > 0 else float("nan")
    results["gflop_per_s"] = rate
    proj = _projection(cfg, rate, {r: m.flops for r, m in runner.members.items()})
    results["projection"] = proj
    results["total_seconds"] = time.perf_counter() - t_start
    lines = [
        f"Wall time of this run: {results['total_seconds']:.1f} s; attack calls (adversarial "
        f"chunks generated, not served from the cache): {results['attack_calls']} of "
        f"{results['planned']['attack_units']} work units; models trained: "
        f"{results['trainings']}; computed {results['computed_gflop']:.1f} GFLOP in "
        f"{results['compute_seconds']:.1f} s.",
        f"Cache: {results['cache_dir']} (adversarial examples and predictions keyed by the "
        f"resolved config; re-running recomputes nothing, a killed run resumes).",
    ]
    if proj:
        lines.append(proj["text"])
    lines += runner.notes
    rep.add_paragraph("\n".join(lines))
    rep.add_code(json.dumps(jsonable(cfg), indent=1), "json")
    atomic_write_json(out / "config.json", jsonable(cfg))
    atomic_write_json(out / "results.json", results)
    rep.write(out)
    return out / "report.html"


def _projection(cfg: MomentumConfig, rate: float, flops: dict[str, float]
                ) -> dict[str, Any] | None:
    """Projected time of the full profile of this suite at the measured GFLOP/s."""
    if not (rate > 0) or math.isnan(rate):
        return None
    try:
        full = MomentumConfig.preset("full", cfg.suite, device=cfg.device,
                                     labels=cfg.labels, eps=cfg.eps,
                                     **({} if cfg.suite == "mnist" else
                                        {"normal": cfg.normal, "adversarial": cfg.adversarial,
                                         "pretrained": cfg.pretrained}))
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
    members = {}
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
    for u in plan.units():
        src = sum(flops[r] for r in u.source) + _OVERHEAD * len(u.source)
        for s, e in _chunks_of(u, cfg.chunk_size):
            ident = (u.source, u.fuse, tuple(sorted(u.attack.key().items())), s, e)
            if ident in seen:
                continue
            seen.add(ident)
            n_units += 1
            attack += (e - s) * (2 * u.attack.steps * src + targets +
                                 (2 * src if len(u.source) > 1 else 0))
    return {"train_gflop": train / 1e9, "attack_gflop": attack / 1e9,
            "total_gflop": (train + attack) / 1e9, "attack_units": n_units}


# -- entry point -------------------------------------------------------------------------------
def run_momentum(cfg: MomentumConfig | None, out_dir: str | os.PathLike[str], *,
                 cache_dir: str | os.PathLike[str] | None = None, progress: bool = True,
                 suite: str | None = None, data_dir: str | os.PathLike[str] | None = None,
                 models: Sequence[str] | None = None,
                 on_attack: Callable[[int], None] | None = None,
                 threads: int | str | None = None) -> dict[str, Any] | None:
    """Run the reproduction and write the report; return the results (plain data).

    Under ``torchrun``, with the process group joined
    (:func:`advlab.evaluate.distributed.init_from_env`, as ``advlab reproduce momentum``
    does), the training units and the attack chunks are dealt to the ranks,
    which store them in the cache (``cache_dir`` must be the same directory for
    all ranks: checked); rank 0 then assembles the results from the cache, writes the same
    files as one process and returns the results; the other ranks write nothing in
    ``out_dir`` and return None. The counters (``attack_calls``, ``trainings``, computed
    FLOPs and seconds) are summed over the ranks.

    Args:
        cfg: the configuration (None: the quick preset of ``suite``).
        out_dir: where the report, tables, figures, ``config.json`` and ``results.json`` go.
        cache_dir: trained models, adversarial examples and predictions (default
            ``$ADVLAB_CACHE`` or ``~/.cache/advlab``).
        progress: one progress bar with an ETA over the whole experiment.
        suite, data_dir, models: overrides of ``cfg`` (``models``: see
            :func:`specs_from_names`).
        on_attack: called with the running count after each adversarial chunk is generated
            and stored (for logging, or to interrupt a run in tests).
        threads: torch intra-op threads during the run (restored afterwards); ``"auto"``:
            1 when the machine is oversubscribed (1-minute load average >= CPU count), where
            several OpenMP threads per process spin against each other (measured 5-20x
            slower on a busy 2-core machine), else torch's default; None: unchanged.

    Returns:
        A dict with the tables' numbers (``table1``, ``table2``, ``table3``, ``decay``,
        ``iterations``, ``eps_sweep``, ``cosine``), ``models``, ``claims``,
        ``attack_calls`` (adversarial chunks generated in this call: 0 when everything was
        cached), ``trainings``, timings, ``report`` (path of ``report.html``).
    """
    t_start = time.perf_counter()
    if cfg is None:
        cfg = MomentumConfig.preset("quick", suite or "mnist")
    elif suite is not None and suite != cfg.suite:
        cfg = MomentumConfig.preset(cfg.profile, suite, seed=cfg.seed, device=cfg.device,
                                    labels=cfg.labels)
    if data_dir is not None:
        cfg = dataclasses.replace(cfg, data_dir=str(data_dir))
    if models is not None:
        normal, adv = specs_from_names(models, cfg.suite)
        cfg = dataclasses.replace(cfg, normal=normal, adversarial=adv)
    from advlab.evaluate.distributed import get_rank

    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    out = Path(out_dir)
    if get_rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
    saved_threads = torch.get_num_threads()
    n_threads = _resolve_threads(threads)
    if n_threads is not None:
        torch.set_num_threads(n_threads)
    try:
        runner = _Runner(cfg, out, cache, progress, on_attack)
        results = runner.run()
        if results is None:  # another rank of a torchrun job: its share is in the cache
            return None
        results["config"] = jsonable(runner.cfg)
        results["threads"] = torch.get_num_threads()
        runner.notes.append(f"torch threads: {results['threads']} (threads={threads!r}).")
        report = _write_outputs(runner, results, out, t_start)
    finally:
        torch.set_num_threads(saved_threads)
    results["report"] = str(report)
    atomic_write_json(out / "results.json", results)
    return results


def _resolve_threads(threads: int | str | None) -> int | None:
    if threads is None:
        return None
    if threads == "auto":
        try:
            busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
        except OSError:  # pragma: no cover - no load average on this platform
            busy = False
        return 1 if busy else None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, 'auto' or None, got {threads!r}")
    return threads
