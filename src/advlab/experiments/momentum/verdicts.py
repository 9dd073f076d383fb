"""Which of the paper's qualitative claims held, computed from the numbers of a run (and,
as a check of the criteria, from the paper's own tables)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from advlab.experiments.momentum import paper
from advlab.experiments.momentum.config import MomentumConfig


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
    bb = {a: _mean([t1[(s, a)][t] for s in normal for t in normal if t != s])
          for a in paper.ATTACKS}
    wb = {a: _mean([t1[(s, a)][s] for s in normal]) for a in paper.ATTACKS}
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
        bba = {a: _mean([t1[(s, a)][t] for s in normal for t in adv]) for a in paper.ATTACKS}
        held = all(bba[a] < bb[a] for a in paper.ATTACKS)
        out.append(Claim(
            "adv_harder", "Adversarially trained targets are harder to fool than normal ones",
            held, "Mean black-box success, normal vs adversarially trained targets: " +
            "; ".join(f"{a} {bb[a]:.1f} % vs {bba[a]:.1f} %" for a in paper.ATTACKS) +
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
    mean = {(f, a): _mean([t2[(h, f, a)][1] for h in held_out]) for f in paper.FUSIONS
            for a in paper.ATTACKS}
    wins = sum(t2[(h, "logits", a)][1] > max(t2[(h, "probs", a)][1], t2[(h, "loss", a)][1])
               for h in held_out for a in paper.ATTACKS)
    held = all(mean[("logits", a)] > mean[("probs", a)] and
               mean[("logits", a)] > mean[("loss", a)] for a in paper.ATTACKS)
    claims_ = [Claim(
        "logits_fusion", "Fusing logits beats fusing predictions and losses (hold-out success)",
        held, "Mean hold-out success logits / predictions / loss: " +
        "; ".join(f"{a} {mean[('logits', a)]:.1f} / {mean[('probs', a)]:.1f} / "
                  f"{mean[('loss', a)]:.1f} %" for a in paper.ATTACKS) +
        f"; logits strictly best in {wins} of {len(held_out) * len(paper.ATTACKS)} (model, attack) "
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
    hold = {a: _mean([t3[(h, a)][1] for h in held_out]) for a in paper.ATTACKS}
    ens = {a: _mean([t3[(h, a)][0] for h in held_out]) for a in paper.ATTACKS}
    held = hold["MI-FGSM"] > hold["I-FGSM"] and hold["MI-FGSM"] > hold["FGSM"] and \
        ens["MI-FGSM"] >= 95.0
    return [Claim(
        "ens_vs_adv", "An ensemble MI-FGSM attack transfers to adversarially trained models "
        "better than I-FGSM and FGSM, with near 100 % success on the ensemble", held,
        "Mean hold-out success: " + "; ".join(f"{a} {hold[a]:.1f} %" for a in paper.ATTACKS) +
        "; on the ensemble (white-box): " + "; ".join(f"{a} {ens[a]:.1f} %" for a in paper.ATTACKS)
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
    t1 = {(s, a): dict(zip(paper.ROLES + paper.ADV_ROLES, v)) for s, d in paper.PAPER_TABLE1.items()
          for a, v in d.items()}
    t2 = {(h, f, a): paper.PAPER_TABLE2[h][f][i] for h in paper.ROLES for f in paper.FUSIONS
          for i, a in enumerate(paper.ATTACKS)}
    t3 = {(h, a): paper.PAPER_TABLE3[h][i] for h in paper.ADV_ROLES
          for i, a in enumerate(paper.ATTACKS)}
    return claim_table1(t1, paper.ROLES, paper.ADV_ROLES) + claim_table2(t2, paper.ROLES) + \
        claim_table3(t3, paper.ADV_ROLES)


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

