"""Which of the paper's qualitative claims held, with their uncertainty.

Every claim is made of *parts*, each a difference between two (means of) success rates
measured on the same images -- MI-FGSM minus I-FGSM on the black-box targets, logits fusion
minus predictions fusion on the held-out model, ... -- or a rate minus a level (white-box
success >= 90 %). A part's 95 % interval is a paired bootstrap over the images
(:func:`advlab.stats.paired_bootstrap`: an image carries all its columns, so the
correlation between two attacks on the same image, or between targets, is kept). A part is
HELD when its interval lies above zero, NOT HELD when it lies below, INCONCLUSIVE otherwise;
a claim is HELD when all its parts are, NOT HELD when one is (:func:`combine_verdicts`).

The same claims on the paper's own tables (:func:`paper_claims`) use its point estimates: it
gives no per-image data, so there is no interval to compute; they check the criteria.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from advlab.experiments.momentum import paper
from advlab.experiments.momentum.config import MomentumConfig
from advlab.experiments.momentum.results import unpack_bits
from advlab.stats import (
    HELD,
    NOT_HELD,
    NOT_TESTABLE,
    Interval,
    combine_verdicts,
    paired_bootstrap,
    verdict,
)

#: The white-box level the paper's "near 100 %" is read as (its white-box MI-FGSM: 98.5-100).
WHITE_BOX_LEVEL = 90.0
Col = tuple[str, str]  # (unit name, target role or "source")


@dataclass(frozen=True)
class Part:
    """One tested difference of a claim: ``interval`` (percentage points, or cosine units)
    of what ``what`` says, claimed positive; ``paper`` the paper's value of it if known."""

    what: str
    interval: Interval
    verdict: str
    paper: float | None = None

    def text(self) -> str:
        unit = "" if "cosine" in self.what else " pts"
        digits = 3 if "cosine" in self.what else 1
        ref = "" if self.paper is None else f"; paper {self.paper:+.1f}"
        return f"{self.what}: {self.interval.text(digits, unit)} -> {self.verdict}{ref}"


@dataclass(frozen=True)
class Claim:
    """A qualitative claim of the paper checked against numbers: ``verdict`` is HELD, NOT
    HELD, INCONCLUSIVE or NOT TESTABLE (not testable with these models)."""

    name: str
    statement: str
    verdict: str
    criterion: str
    evidence: str
    parts: tuple[Part, ...] = ()

    @property
    def held(self) -> bool | None:
        """True when HELD, False when NOT HELD, None otherwise."""
        return {HELD: True, NOT_HELD: False}.get(self.verdict)

    def sentence(self) -> str:
        parts = "; ".join(p.text() for p in self.parts)
        body = f" {parts}." if parts else ""
        extra = f" {self.evidence}" if self.evidence else ""
        return (f"{self.statement}: {self.verdict}.{body}{extra} (Criterion: "
                f"{self.criterion}.)")


def _claim(name: str, statement: str, criterion: str, parts: Sequence[Part],
           evidence: str = "") -> Claim:
    return Claim(name, statement, combine_verdicts([p.verdict for p in parts]), criterion,
                 evidence, tuple(parts))


def _untestable(name: str, statement: str, why: str) -> Claim:
    return Claim(name, statement, NOT_TESTABLE, "-", why)


# -- where the numbers come from ---------------------------------------------------------------
class Evidence:
    """Per-image successes of a run (``results["per_image"]``: unit name -> ``{"n": n,
    "success": {target: packed bits}}``, and ``results["cosine_per_image"]``): differences
    of column means with paired bootstrap intervals (``seed``: the resampling's)."""

    def __init__(self, results: dict[str, Any], seed: int = 0) -> None:
        self.per_image = results.get("per_image", {})
        self.cos = results.get("cosine_per_image", {})
        self.seed = seed

    def has(self, cols: Sequence[Col]) -> bool:
        return all(u in self.per_image and t in self.per_image[u]["success"] for u, t in cols)

    def _matrix(self, cols: Sequence[Col]) -> np.ndarray:
        out = []
        for u, t in cols:
            unit = self.per_image[u]
            out.append(unpack_bits(unit["success"][t], unit["n"]).astype(np.float64))
        ns = {len(c) for c in out}
        if len(ns) != 1:
            raise ValueError(f"paired columns must cover the same images, got sizes {ns}")
        return np.stack(out, axis=1)

    def diff(self, plus: Sequence[Col], minus: Sequence[Col] = (), level: float = 0.0
             ) -> Interval:
        """mean(plus) - mean(minus) - level, in percentage points, with its interval."""
        m = self._matrix(list(plus) + list(minus))
        k = len(plus)

        def stat(means: np.ndarray) -> np.ndarray:
            neg = means[:, k:].mean(1) if means.shape[1] > k else 0.0
            return means[:, :k].mean(1) - neg - level / 100

        return paired_bootstrap(m, stat, seed=self.seed).scaled(100)

    def peak_drop(self, groups: Sequence[Sequence[Col]]) -> Interval:
        """max over groups of the group mean, minus the last group's mean (points)."""
        cols = [c for g in groups for c in g]
        m = self._matrix(cols)
        bounds = np.cumsum([0] + [len(g) for g in groups])

        def stat(means: np.ndarray) -> np.ndarray:
            g = np.stack([means[:, a:b].mean(1) for a, b in zip(bounds[:-1], bounds[1:])], 1)
            return g.max(1) - g[:, -1]

        return paired_bootstrap(m, stat, seed=self.seed).scaled(100)

    def cosine(self, a: str, b: str) -> Interval:
        d = np.asarray(self.cos[a], dtype=np.float64) - np.asarray(self.cos[b], np.float64)
        return paired_bootstrap(d, seed=self.seed)


class PaperNumbers(Evidence):
    """The paper's tables: point estimates (degenerate intervals)."""

    def __init__(self) -> None:
        self.values: dict[Col, float] = {}
        targets = paper.ROLES + paper.ADV_ROLES
        for s, by_attack in paper.PAPER_TABLE1.items():
            for a, vals in by_attack.items():
                for t, v in zip(targets, vals):
                    self.values[(f"table1|{s}|{a}", t)] = v
        for h, by_fusion in paper.PAPER_TABLE2.items():
            for f, cells in by_fusion.items():
                for a, (ens, hold) in zip(paper.ATTACKS, cells):
                    self.values[(f"table2|{h}|{f}|{a}", "source")] = ens
                    self.values[(f"table2|{h}|{f}|{a}", h)] = hold
        for h, cells in paper.PAPER_TABLE3.items():
            for a, (ens, hold) in zip(paper.ATTACKS, cells):
                self.values[(f"table3|{h}|{a}", "source")] = ens
                self.values[(f"table3|{h}|{a}", h)] = hold

    def has(self, cols: Sequence[Col]) -> bool:
        return all(c in self.values for c in cols)

    def diff(self, plus: Sequence[Col], minus: Sequence[Col] = (), level: float = 0.0
             ) -> Interval:
        v = sum(self.values[c] for c in plus) / len(plus) - level
        if minus:
            v -= sum(self.values[c] for c in minus) / len(minus)
        return Interval(v, v, v)


def _part(ev: Evidence, what: str, plus: Sequence[Col], minus: Sequence[Col] = (),
          level: float = 0.0) -> Part:
    iv = ev.diff(plus, minus, level)
    ref = _PAPER.diff(plus, minus, level).estimate if _PAPER.has(list(plus) + list(minus)) \
        else None
    return Part(what, iv, verdict(iv), ref)


# -- the claims ------------------------------------------------------------------------------------
MI_STATEMENT = ("MI-FGSM transfers better than I-FGSM and FGSM while staying near 100 % "
                "white-box")
ADV_STATEMENT = "Adversarially trained targets are harder to fool than normal ones"


def claim_table1(ev: Evidence, normal: Sequence[str], adv: Sequence[str]) -> list[Claim]:
    """Table 1: MI-FGSM transfers better (black-box, normal targets) and stays near 100 %
    white-box; adversarially trained targets are harder to fool than normal ones."""
    out = []
    bb = {a: [(f"table1|{s}|{a}", t) for s in normal for t in normal if t != s]
          for a in paper.ATTACKS}
    if len(normal) < 2 or not ev.has(bb["MI-FGSM"] + bb["I-FGSM"] + bb["FGSM"]):
        out.append(_untestable("mi_transfers", MI_STATEMENT,
                               "Only one normal model: no black-box pair."))
    else:
        wb = [(f"table1|{s}|MI-FGSM", s) for s in normal]
        out.append(_claim(
            "mi_transfers", MI_STATEMENT,
            f"each part's 95 % paired-bootstrap interval above 0: mean black-box success on "
            f"the normal models of MI-FGSM minus I-FGSM and minus FGSM, and MI-FGSM's mean "
            f"white-box success minus {WHITE_BOX_LEVEL:g} %",
            [_part(ev, "MI-FGSM - I-FGSM, black-box on normal models", bb["MI-FGSM"],
                   bb["I-FGSM"]),
             _part(ev, "MI-FGSM - FGSM, black-box on normal models", bb["MI-FGSM"],
                   bb["FGSM"]),
             _part(ev, f"MI-FGSM white-box - {WHITE_BOX_LEVEL:g} %", wb,
                   level=WHITE_BOX_LEVEL)]))
    to_adv = {a: [(f"table1|{s}|{a}", t) for s in normal for t in adv] for a in paper.ATTACKS}
    if adv and len(normal) >= 2 and ev.has(to_adv["FGSM"]):
        out.append(_claim(
            "adv_harder", ADV_STATEMENT,
            "for every attack, the 95 % interval of mean black-box success on the normal "
            "targets minus that on the adversarially trained targets above 0",
            [_part(ev, f"{a}: normal - adv. trained targets", bb[a], to_adv[a])
             for a in paper.ATTACKS]))
    else:
        out.append(_untestable("adv_harder", ADV_STATEMENT, "No adversarially trained target."))
    return out


FUSION_STATEMENT = "Fusing logits beats fusing predictions and losses (hold-out success)"
ENS_MI_STATEMENT = ("Against an ensemble, MI-FGSM transfers to the held-out model better than "
                    "I-FGSM and FGSM")


def claim_table2(ev: Evidence, held_out: Sequence[str]) -> list[Claim]:
    """Table 2: logits fusion beats predictions and loss fusion on the held-out models; with
    logits fusion, MI-FGSM beats I-FGSM and FGSM on them."""
    if not held_out:
        return [_untestable("logits_fusion", FUSION_STATEMENT,
                            "Table 2 needs at least three normal models.")]

    def cols(f: str, a: str) -> list[Col]:
        return [(f"table2|{h}|{f}|{a}", h) for h in held_out]

    parts = [_part(ev, f"{a}: logits - {other}", cols("logits", a), cols(f, a))
             for a in paper.ATTACKS for f, other in (("probs", "predictions"),
                                                     ("loss", "loss"))]
    out = [_claim("logits_fusion", FUSION_STATEMENT,
                  "for every attack, the 95 % interval of mean hold-out success with logits "
                  "fusion minus predictions fusion, and minus loss fusion, above 0", parts)]
    out.append(_claim(
        "ensemble_mi", ENS_MI_STATEMENT,
        "95 % intervals of mean hold-out success (logits ensembles) of MI-FGSM minus I-FGSM "
        "and minus FGSM above 0",
        [_part(ev, "MI-FGSM - I-FGSM, hold-out", cols("logits", "MI-FGSM"),
               cols("logits", "I-FGSM")),
         _part(ev, "MI-FGSM - FGSM, hold-out", cols("logits", "MI-FGSM"),
               cols("logits", "FGSM"))]))
    return out


ENS_ADV_STATEMENT = ("An ensemble MI-FGSM attack transfers to adversarially trained models "
                     "better than I-FGSM and FGSM, with near 100 % success on the ensemble")


def claim_table3(ev: Evidence, held_out: Sequence[str]) -> list[Claim]:
    """Table 3: against held-out adversarially trained models, the ensemble MI-FGSM attack
    beats I-FGSM and FGSM, and fools the ensemble itself (white-box) near 100 %."""
    if not held_out:
        return [_untestable("ens_vs_adv", ENS_ADV_STATEMENT, "No adversarially trained model.")]

    def cols(a: str, t: str | None = None) -> list[Col]:
        return [(f"table3|{h}|{a}", t or h) for h in held_out]

    return [_claim(
        "ens_vs_adv", ENS_ADV_STATEMENT,
        f"95 % intervals above 0 of mean hold-out success of MI-FGSM minus I-FGSM and minus "
        f"FGSM, and of MI-FGSM's success on the ensembles minus {WHITE_BOX_LEVEL:g} %",
        [_part(ev, "MI-FGSM - I-FGSM, hold-out", cols("MI-FGSM"), cols("I-FGSM")),
         _part(ev, "MI-FGSM - FGSM, hold-out", cols("MI-FGSM"), cols("FGSM")),
         _part(ev, f"MI-FGSM on the ensemble - {WHITE_BOX_LEVEL:g} %",
               cols("MI-FGSM", "source"), level=WHITE_BOX_LEVEL)])]


DECAY_STATEMENT = "Black-box success peaks near mu = 1"


def claim_decay(ev: Evidence, mus: Sequence[float], black: Sequence[str]) -> Claim:
    """The decay sweep: black-box success at mu = 1 above mu = 0 (I-FGSM) and above the
    largest mu of the grid."""
    mus = sorted(mus)
    if not black or 1.0 not in mus or len(mus) < 3 or mus[0] >= 1.0 or mus[-1] <= 1.0:
        return _untestable("decay_peak", DECAY_STATEMENT,
                           "Needs a black-box target and a mu grid around 1.")

    def cols(mu: float) -> list[Col]:
        return [(f"decay|{mu:g}", t) for t in black]

    lo, hi = mus[0], mus[-1]
    return _claim(
        "decay_peak", DECAY_STATEMENT,
        f"95 % intervals above 0 of mean black-box success at mu = 1 minus mu = {lo:g} and "
        f"minus mu = {hi:g}",
        [_part(ev, f"mu = 1 - mu = {lo:g}, black-box", cols(1.0), cols(lo)),
         _part(ev, f"mu = 1 - mu = {hi:g}, black-box", cols(1.0), cols(hi))])


ITER_STATEMENT = "MI-FGSM keeps its black-box success as T grows while I-FGSM's falls"


def claim_iterations(ev: Evidence, ts: Sequence[int], black: Sequence[str]) -> Claim:
    """The iteration sweep: at the largest T, MI-FGSM above I-FGSM on the black-box models,
    and I-FGSM below its own peak over T (the peak taken inside every resample)."""
    ts = sorted(ts)
    if not black or len(ts) < 2:
        return _untestable("iterations", ITER_STATEMENT, "Needs a black-box target and two T.")

    def cols(a: str, t: int) -> list[Col]:
        return [(f"iterations|{a}|{t}", r) for r in black]

    t_max = ts[-1]
    drop = ev.peak_drop([cols("I-FGSM", t) for t in ts])
    parts = [_part(ev, f"MI-FGSM - I-FGSM at T = {t_max}, black-box", cols("MI-FGSM", t_max),
                   cols("I-FGSM", t_max)),
             Part(f"I-FGSM's peak over T - I-FGSM at T = {t_max}, black-box", drop,
                  verdict(drop))]
    return _claim("iterations", ITER_STATEMENT,
                  "95 % intervals above 0 of both parts (the peak is re-chosen in every "
                  "bootstrap resample)", parts)


COSINE_STATEMENT = "Successive MI-FGSM perturbations are more similar than I-FGSM's"


def claim_cosine(ev: Evidence) -> Claim:
    if "MI-FGSM" not in ev.cos or "I-FGSM" not in ev.cos:
        return _untestable("cosine", COSINE_STATEMENT, "Needs T >= 2.")
    iv = ev.cosine("MI-FGSM", "I-FGSM")
    return _claim("cosine", COSINE_STATEMENT,
                  "95 % interval above 0 of the per-image mean cosine of MI-FGSM minus "
                  "I-FGSM's", [Part("MI-FGSM - I-FGSM, mean cosine of successive "
                                    "perturbations", iv, verdict(iv))])


def claims(results: dict[str, Any], cfg: MomentumConfig) -> list[Claim]:
    """Every claim, computed from the per-image outcomes of a run."""
    ev = Evidence(results, cfg.seed)
    normal = [s.role for s in cfg.normal]
    adv = [s.role for s in cfg.adversarial]
    out = claim_table1(ev, normal, adv)
    held2 = [h for h in normal if f"{h}|logits|FGSM" in results["table2"]]
    out += claim_table2(ev, held2)
    out += claim_table3(ev, [h for h in adv if f"{h}|FGSM" in results["table3"]])
    black = normal[1:]
    out.append(claim_decay(ev, [float(m) for m in results["decay"]], black))
    ts = sorted({int(k.split("|")[1]) for k in results["iterations"]})
    out.append(claim_iterations(ev, ts, black))
    out.append(claim_cosine(ev))
    return out


def paper_claims() -> list[Claim]:
    """The Table 1-3 claims on the paper's own numbers (point estimates: a check of the
    criteria)."""
    return claim_table1(_PAPER, paper.ROLES, paper.ADV_ROLES) + \
        claim_table2(_PAPER, paper.ROLES) + claim_table3(_PAPER, paper.ADV_ROLES)


_PAPER = PaperNumbers()


# -- plain means (tables and figures) -----------------------------------------------------------
def _mean(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def mean_interval(results: dict[str, Any], unit: str, targets: Sequence[str],
                  seed: int = 0) -> Interval | None:
    """Mean success % of ``unit`` over ``targets`` with its paired-bootstrap interval
    (None without targets or per-image data)."""
    ev = Evidence(results, seed)
    cols = [(unit, t) for t in targets]
    if not cols or not ev.has(cols):
        return None
    return ev.diff(cols)


def _t2(results: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {tuple(k.split("|")): v for k, v in results["table2"].items()}


def _t3(results: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {tuple(k.split("|")): v for k, v in results["table3"].items()}


