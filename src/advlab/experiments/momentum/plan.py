"""The attacks and the work units: what each table and figure attacks (:func:`_plan`) and
the chunks of images every attack is cut into (the unit of caching and resumption)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from advlab.attacks import FGSM, IFGSM, MIFGSM, Attack, create_attack
from advlab.experiments.momentum.config import BEYOND_ATTACKS, MomentumConfig
from advlab.experiments.momentum.paper import ATTACKS, FUSIONS


@dataclass(frozen=True)
class _AttackSpec:
    eps: float
    steps: int
    decay: float
    method: str = ""  # a label of BEYOND_ATTACKS (its preset), or "" for the paper's three

    @property
    def name(self) -> str:
        if self.method:
            return self.method
        if self.steps == 1:
            return "FGSM"
        return "I-FGSM" if self.decay == 0 else "MI-FGSM"

    def make(self) -> Attack:
        """The attack; alpha = eps / T always (the paper's setting)."""
        if self.method:
            return create_attack(BEYOND_ATTACKS[self.method], eps=self.eps, steps=self.steps)
        if self.steps == 1:
            return FGSM(eps=self.eps)
        if self.decay == 0:
            return IFGSM(eps=self.eps, steps=self.steps)
        return MIFGSM(eps=self.eps, steps=self.steps, decay=self.decay)

    @property
    def passes(self) -> int:
        """Forward + backward passes of the source per image (the attack's cost)."""
        a = self.make()
        per_step = a.scale_copies * max(a.admix_copies, 1) * (1 + a.variance_samples)
        return self.steps * per_step * a.eot_samples

    def key(self) -> dict[str, Any]:
        out = {"eps": round(float(self.eps), 10), "steps": self.steps,
               "decay": 0.0 if self.steps == 1 else round(float(self.decay), 10),
               "alpha": "eps/T", "norm": "linf"}
        if self.method:  # the paper's attacks keep their cache keys
            out.update(method=BEYOND_ATTACKS[self.method], seed=0)
        return out


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
    beyond: dict[tuple[str, str], _Unit]

    def units(self) -> list[_Unit]:
        out: list[_Unit] = []
        for d in (self.table1, self.table2, self.table3, self.decay, self.iters, self.eps,
                  self.beyond):
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
    beyond: dict[tuple[str, str], _Unit] = {}
    if cfg.beyond:
        for s in cfg.beyond_roles:
            for a in ("I-FGSM", "MI-FGSM"):
                beyond[(s, a)] = _Unit((s,), "", _spec(a, cfg.eps, cfg.steps, cfg.decay),
                                       cfg.n_beyond)
            for a in cfg.beyond:
                beyond[(s, a)] = _Unit((s,), "", _beyond_spec(a, cfg.eps, cfg.steps),
                                       cfg.n_beyond)
    return _Plan(t1, t2, t3, decay, iters, eps, beyond)


def _beyond_spec(label: str, eps: float, steps: int) -> _AttackSpec:
    decay = create_attack(BEYOND_ATTACKS[label], eps=float(eps)).decay
    return _AttackSpec(float(eps), steps, float(decay), label)


def _chunks_of(unit: _Unit, size: int) -> list[tuple[int, int]]:
    return [(s, min(s + size, unit.n)) for s in range(0, unit.n, size)]

