"""What determines a run: :class:`ModelSpec`, the model roles of each suite,
:func:`specs_from_names`, the default eps and :class:`MomentumConfig` with its profiles."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from advlab.experiments.momentum.paper import ROLES

SUITES = ("mnist", "imagenet")
PROFILES = ("quick", "standard", "full")


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


#: The MNIST zoo of the paper's roles (:mod:`advlab.models.paper_zoo`): an Inception-v3-style
#: net, a deeper Inception-v4-style one, an Inception-ResNet-v2-style one and a deep
#: bottleneck ResNet (Res-152's role).
MNIST_ZOO = {"Inc-v3": "mnist-inception-v3", "Inc-v4": "mnist-inception-v4",
             "IncRes-v2": "mnist-inception-resnet-v2", "Res-152": "mnist-resnet"}
#: Defended role -> (the normal role whose architecture it shares, the static models of its
#: ensemble adversarial training). Tramer et al. (ICLR 2018) train Inc-v3ens3 / Inc-v3ens4 /
#: IncRes-v2ens with FGSM examples of the model itself and of 2 / 3 / 2 static pre-trained
#: models; which ImageNet models those were could not be checked here, so the statics are
#: the other normal roles except Res-152, which stays a black box for every defended model.
DEFENDED = {"Inc-v3ens3": ("Inc-v3", ("Inc-v4", "IncRes-v2")),
            "Inc-v3ens4": ("Inc-v3", ("Inc-v3", "Inc-v4", "IncRes-v2")),
            "IncRes-v2ens": ("IncRes-v2", ("Inc-v3", "Inc-v4"))}


def _defended(normal: Sequence[ModelSpec]) -> tuple[ModelSpec, ...]:
    """The adversarially trained roles for these normal models: each shares the architecture
    of the role it extends (dropped when that role is absent), statics cut to the roles
    present (dropped when none is left)."""
    arch = {s.role: s.arch for s in normal}
    out = []
    for i, (role, (base, static)) in enumerate(DEFENDED.items()):
        kept = tuple(r for r in static if r in arch)
        if base in arch and kept:
            out.append(ModelSpec(role, arch[base], seed=10 + i, adversarial=True, static=kept))
    return tuple(out)


def _mnist_models(profile: str = "standard") -> tuple[tuple[ModelSpec, ...],
                                                      tuple[ModelSpec, ...]]:
    """The roles on MNIST, the same in every profile: :data:`MNIST_ZOO` for the normal
    models, :data:`DEFENDED` for the adversarially trained ones (the profiles differ in
    data, training and grids)."""
    normal = tuple(ModelSpec(r, a) for r, a in MNIST_ZOO.items())
    return normal, _defended(normal)


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
    normal roles in order; each adversarially trained role takes the architecture of the
    normal role it extends (:data:`DEFENDED`), e.g. ``--models mnist-cnn mnist-convnet
    mnist-mlp mnist-alexnet`` runs the student report's four models."""
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
        return normal, _defended(normal)
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


#: The eps of the MNIST suite is not fixed: it is chosen by a declared rule on I-FGSM alone,
#: before any comparison (:attr:`MomentumConfig.eps_rule`): the smallest eps of ``eps_grid``
#: at which I-FGSM (T = ``steps``, alpha = eps/T) succeeds white-box on >= 95 % of
#: ``eps_rule_images`` held-apart test images on *every* normal source -- the paper's regime,
#: "iterative white-box ~ 100 %" (its I-FGSM white-box: 100, 99.9, 99.6, 98.6 %). ``eps``
#: given explicitly (``--eps``) overrides the rule.
EPS_RULE_SUCCESS = 95.0
IMAGENET_EPS = 16 / 255


#: "Beyond the paper": the transfer attacks that followed MI-FGSM, each with its paper's
#: defaults (:mod:`advlab.attacks.presets`), run like Table 1 (same eps, T, alpha = eps/T,
#: sources and targets): table label -> registered attack name.
BEYOND_ATTACKS: dict[str, str] = {
    "NI-FGSM": "nifgsm", "DI2-FGSM": "difgsm", "M-DI2-FGSM": "dimifgsm", "TI-FGSM": "tifgsm",
    "TI-MI-FGSM": "timifgsm", "TI-DIM": "tidimifgsm", "SI-NI-FGSM": "sinifgsm",
    "VMI-FGSM": "vmifgsm", "VNI-FGSM": "vnifgsm", "Admix": "admix"}

_FULL_GRIDS: dict[str, Any] = dict(mu_grid=_frange(0.0, 2.0, 0.1),
                                   iter_grid=tuple(range(1, 21)),
                                   eps_grid=(0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4))
#: The MNIST profiles' data, training and grids (the models are the same in all three).
_MNIST_PROFILES: dict[str, dict[str, Any]] = {
    "quick": dict(n_images=200, ensemble_images=100, figure_images=100, chunk_size=100,
                  eps_rule_images=100, mu_grid=(0.0, 0.5, 1.0, 1.5, 2.0),
                  iter_grid=(1, 2, 5, 10, 20), eps_grid=(0.1, 0.15, 0.2, 0.25, 0.3),
                  train_epochs=1, train_size=4000, train_batch_size=128, advtrain_epochs=1,
                  advtrain_size=3000, train_test_size=1000, beyond_images=50,
                  beyond_sources=1),
    "standard": dict(n_images=1000, ensemble_images=500, figure_images=500, chunk_size=250,
                     eps_rule_images=200, mu_grid=(0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0),
                     iter_grid=(1, 2, 3, 5, 7, 10, 15, 20),
                     eps_grid=(0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4),
                     train_epochs=3, train_size=None, train_batch_size=128,
                     advtrain_epochs=1, advtrain_size=30000, train_test_size=10000,
                     beyond_images=500, beyond_sources=None),
    "full": dict(n_images=1000, ensemble_images=None, figure_images=None, chunk_size=100,
                 eps_rule_images=500, **_FULL_GRIDS, train_epochs=10, train_size=None,
                 train_batch_size=64, advtrain_epochs=10, advtrain_size=None,
                 train_test_size=10000, beyond_images=None, beyond_sources=None),
}


@dataclass(frozen=True)
class MomentumConfig:
    """Everything that determines a momentum-paper reproduction (saved as ``config.json``).

    Attack settings (the paper's): ``eps`` (None: chosen by the eps rule, below); ``steps``
    T = 10 for Table 1 and the figures; ``ensemble_steps`` T = 20 for Tables 2 and 3;
    ``decay`` mu = 1.0; the step is always alpha = eps / T (1.6/255 for eps = 16/255,
    T = 10); ``labels``: ``"true"`` attacks the ground truth, ``"pred"`` the source's
    clean prediction (the authors' code). Success is always counted against the ground
    truth.

    Data: the first ``n_images`` test images for Table 1, the first ``ensemble_images`` for
    Tables 2-3 and ``figure_images`` for the figures (None: ``n_images``), cut into chunks
    of ``chunk_size`` (the unit of caching and resumption).

    The eps rule (MNIST, ``eps`` None): the smallest value of ``eps_grid`` where I-FGSM's
    white-box success is >= ``eps_rule_success`` % on every normal source, measured on the
    ``eps_rule_images`` test images that follow the evaluation images (never on MI-FGSM,
    never on the images of the tables); :attr:`eps_rule` states it.

    Beyond the paper: ``beyond`` (labels of :data:`BEYOND_ATTACKS`; empty: no such table)
    from the first ``beyond_sources`` normal models (None: all) on the first
    ``beyond_images`` images (None: ``figure_images``), with I-FGSM and MI-FGSM on the same
    images as the baselines.

    Figure grids: ``mu_grid`` (decay sweep, MI-FGSM), ``iter_grid`` (I-FGSM vs MI-FGSM),
    ``eps_grid`` (all three attacks; the config's eps is always added).

    MNIST training: normal models with :class:`advlab.train.TrainConfig` (``train_epochs``,
    ``train_size``, ``train_batch_size`` also for the defended ones), adversarially trained
    ones with :class:`advlab.train.advtrain.AdvTrainConfig`
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
    eps: float | None = None
    steps: int = 10
    ensemble_steps: int = 20
    decay: float = 1.0
    labels: str = "true"
    n_images: int = 200
    ensemble_images: int | None = 50
    figure_images: int | None = 100
    chunk_size: int = 50
    eps_rule_images: int = 100
    eps_rule_success: float = EPS_RULE_SUCCESS
    mu_grid: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0)
    iter_grid: tuple[int, ...] = (1, 2, 3, 5, 7, 10, 15, 20)
    eps_grid: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4)
    train_epochs: int = 1
    train_size: int | None = 8000
    train_batch_size: int = 64
    advtrain_epochs: int = 1
    advtrain_size: int | None = 5000
    advtrain_eps: float | None = None
    advtrain_schedule: str = "rotate"
    train_test_size: int = 1000
    beyond: tuple[str, ...] = tuple(BEYOND_ATTACKS)
    beyond_images: int | None = 50
    beyond_sources: int | None = 1
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
        v = self.eps
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))
                              or not 0 < v <= 1):
            raise ValueError(f"eps must be in (0, 1] (pixels in [0, 1]) or None (the eps "
                             f"rule), got {v!r}")
        if self.eps is None and self.suite != "mnist":
            raise ValueError("eps=None (chosen by the eps rule) needs the mnist suite; give "
                             "the ImageNet suite an eps (the paper's: 16/255)")
        r = self.eps_rule_success
        if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 100:
            raise ValueError(f"eps_rule_success must be a percentage in (0, 100], got {r!r}")
        if self.advtrain_eps is not None and not 0 < self.advtrain_eps <= 1:
            raise ValueError(f"advtrain_eps must be in (0, 1] or None, got {self.advtrain_eps!r}")
        for name in ("steps", "ensemble_steps", "n_images", "chunk_size", "train_epochs",
                     "advtrain_epochs", "train_test_size", "batch_size", "eps_rule_images",
                     "train_batch_size"):
            _check_int(name, getattr(self, name))
        object.__setattr__(self, "beyond", tuple(self.beyond))
        unknown = [b for b in self.beyond if b not in BEYOND_ATTACKS]
        if unknown:
            raise ValueError(f"beyond: unknown attack(s) {unknown}; expected labels among "
                             f"{list(BEYOND_ATTACKS)}")
        for name in ("ensemble_images", "figure_images", "train_size", "advtrain_size",
                     "beyond_images", "beyond_sources"):
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
    def preset(cls, profile: str = "standard", suite: str = "mnist", **overrides: Any
               ) -> MomentumConfig:
        """The ``"quick"``, ``"standard"`` or ``"full"`` profile of a suite, with field
        overrides. MNIST: *quick* is the CI smoke run (minutes, small data, coarse grids:
        its verdicts are mostly INCONCLUSIVE); *standard* has the power to call a claim
        (Table 1 on 1000 images, Tables 2-3 and the figures on 500) in under 45 minutes on
        two CPU cores; *full* is the paper's protocol (1000 images everywhere, fine grids,
        10 training epochs on all 60 000 images: hours on a CPU)."""
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {profile!r}")
        if suite not in SUITES:
            raise ValueError(f"suite must be one of {SUITES}, got {suite!r}")
        full = profile == "full"
        if suite == "mnist":
            normal, adv = _mnist_models(profile)
            base: dict[str, Any] = dict(suite=suite, profile=profile, normal=normal,
                                        adversarial=adv, eps=None)
            base.update(_MNIST_PROFILES[profile])
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
            elif profile == "standard":
                base.update(n_images=100, ensemble_images=50, figure_images=50,
                            chunk_size=10, mu_grid=(0.0, 0.5, 1.0, 1.5, 2.0),
                            iter_grid=(1, 2, 5, 10, 20),
                            eps_grid=tuple(e / 255 for e in (4, 8, 16, 32)))
            else:
                base.update(n_images=20, ensemble_images=10, figure_images=10, chunk_size=10,
                            mu_grid=(0.0, 0.5, 1.0, 1.5, 2.0), iter_grid=(1, 5, 10, 20),
                            eps_grid=tuple(e / 255 for e in (4, 8, 16, 32)))
        base.update(overrides)
        return cls(**base)

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
    def n_beyond(self) -> int:
        return self.beyond_images or self.n_figure

    @property
    def beyond_roles(self) -> tuple[str, ...]:
        """The sources of the beyond-the-paper table."""
        normal = tuple(s.role for s in self.normal)
        return normal[:self.beyond_sources] if self.beyond_sources else normal

    @property
    def n_total(self) -> int:
        """Images of the tables and figures (the eps rule's images come after them)."""
        return max(self.n_images, self.n_ensemble, self.n_figure,
                   self.n_beyond if self.beyond else 0)

    @property
    def store(self) -> str:
        """How adversarial examples are stored: ``uint8`` (ImageNet) or ``float32``."""
        return "uint8" if self.suite == "imagenet" else "float32"

    @property
    def sweep_eps(self) -> tuple[float, ...]:
        given = set() if self.eps is None else {round(self.eps, 10)}
        return tuple(sorted({round(e, 10) for e in self.eps_grid} | given))

    @property
    def eps_rule(self) -> str:
        """The rule that picks eps when it is not given, in words."""
        grid = ", ".join(f"{e:g}" for e in sorted(self.eps_grid))
        return (f"the smallest eps of the grid {grid} at which I-FGSM (T = {self.steps}, "
                f"alpha = eps/T) succeeds white-box on "
                f">= {self.eps_rule_success:g} % of {self.eps_rule_images} held-apart test "
                f"images on every normal source (computed on I-FGSM alone, before any "
                f"comparison; the largest eps of the grid if none reaches it)")

    def with_sizes(self, available: int) -> MomentumConfig:
        """The config with every image count capped at ``available``."""
        cap = {k: min(getattr(self, k), available) for k in
               ("n_images", "ensemble_images", "figure_images", "beyond_images")
               if getattr(self, k)}
        return dataclasses.replace(self, **cap) if cap else self


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")

