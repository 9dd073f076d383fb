"""The attacks and the work units: what each table and figure attacks (:func:`_plan`) and
the chunks of images every attack is cut into (the unit of caching and resumption)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from advlab.attacks import FGSM, IFGSM, MIFGSM, Attack
from advlab.experiments.momentum.config import MomentumConfig
from advlab.experiments.momentum.paper import ATTACKS, FUSIONS


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

