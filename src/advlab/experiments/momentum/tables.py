"""The tables of the report: ours with 95 % intervals, side by side with the paper's, the
paired significance of every difference the paper reports, the models, the eps rule, the eps
sweep and the numbers behind the figures."""

from __future__ import annotations

from typing import Any

import numpy as np

from advlab.experiments.momentum import paper
from advlab.experiments.momentum.config import MomentumConfig
from advlab.experiments.momentum.results import unpack_bits
from advlab.experiments.momentum.verdicts import _t2, _t3, mean_interval
from advlab.report import Cell, Estimate, Table
from advlab.stats import mcnemar_exact, verdict, wilson_interval

ALPHA = 0.05  # significance level of the per-cell McNemar tests


def _fmt_eps(e: float) -> str:
    """``16/255`` for multiples of 1/255 that are not short decimals, else ``0.2``."""
    k = e * 255
    on_grid = abs(k - round(k)) < 1e-6 and round(k) > 0
    decimal = abs(e * 100 - round(e * 100)) < 1e-9
    return f"{round(k)}/255" if on_grid and not decimal else f"{e:g}"


_WB = "* = white-box (the target is, or is part of, the source)."
_CI = ("Brackets: 95 % Wilson interval (the CSV has the bounds in '<column> lo' / "
       "'<column> hi' columns).")


def _rate(v: dict[str, Any], metric: str, mark: str = "") -> Estimate | None:
    """A table cell: the outcome's rate (``success`` or ``success_on_correct``) with its
    Wilson interval."""
    if v.get(f"{metric}_lo") is None or v[metric] != v[metric]:  # nan: no correct image
        return None
    return Estimate(v[metric], v[f"{metric}_lo"], v[f"{metric}_hi"], mark)


def _bits(results: dict[str, Any], unit: str, target: str) -> np.ndarray | None:
    u = results.get("per_image", {}).get(unit)
    if u is None or target not in u["success"]:
        return None
    return unpack_bits(u["success"][target], u["n"])


def _wilson(results: dict[str, Any], unit: str, target: str, mark: str = ""
            ) -> Estimate | None:
    b = _bits(results, unit, target)
    if b is None:
        return None
    lo, hi = wilson_interval(int(b.sum()), int(b.size))
    return Estimate(100 * float(b.mean()), 100 * lo, 100 * hi, mark)


def _over(metric: str) -> str:
    return "all images" if metric == "success" else "images the target classifies correctly"


def _roles_note(cfg: MomentumConfig) -> str:
    return "Roles played by: " + ", ".join(f"{s.role} = {s.arch}" for s in cfg.models) + "."


# -- Table 1 ------------------------------------------------------------------------------------
def _table1(results: dict[str, Any], cfg: MomentumConfig, labels: dict[str, str],
            metric: str) -> Table:
    normal = [s.role for s in cfg.normal]
    targets = [s.role for s in cfg.models]
    rows = []
    for s in normal:
        for a in paper.ATTACKS:
            v = results["table1"][f"{s}|{a}"]
            rows.append([labels[s], a] + [_rate(v[t], metric, "*" if t == s else "")
                                          for t in targets])
    return Table(
        f"Table 1 (ours, {cfg.suite}): success rate % of single-model attacks, over "
        f"{_over(metric)}", ["source", "attack"] + [labels[t] for t in targets], rows,
        notes=f"{_WB} {_CI} eps = {_fmt_eps(cfg.eps)}, T = {cfg.steps}, mu = {cfg.decay:g}, "
              f"alpha = eps/T, {cfg.n_images} images, labels = {cfg.labels}. Columns after "
              f"the normal models are the ensemble-adversarially trained targets.",
        float_format=".1f")


def _side1(results: dict[str, Any], cfg: MomentumConfig) -> Table:
    """Table 1 next to the paper's: for each source and attack, our row and the paper's,
    columns by role."""
    targets = [s.role for s in cfg.models]
    p_targets = paper.ROLES + paper.ADV_ROLES
    rows = []
    for s in [x.role for x in cfg.normal]:
        for a in paper.ATTACKS:
            v = results["table1"][f"{s}|{a}"]
            rows.append([s, a, "ours"] + [_rate(v[t], "success", "*" if t == s else "")
                                          for t in targets])
            pv = paper.PAPER_TABLE1.get(s, {}).get(a)
            rows.append(["", "", "paper"] + [
                None if pv is None or t not in p_targets else
                Cell(pv[p_targets.index(t)], "*" if t == s else "") for t in targets])
    return Table("Table 1 side by side: ours (MNIST analogue) and the paper's (ImageNet), "
                 "success rate %", ["source", "attack", "from"] + targets, rows,
                 notes=f"{_WB} {_CI} {_roles_note(cfg)} Ours: eps = {_fmt_eps(cfg.eps)}, "
                       f"{cfg.n_images} images; paper: eps = 16/255, 1000 images, "
                       f"no intervals published.", float_format=".1f")


# -- Table 2 ------------------------------------------------------------------------------------
_T2_COLS = ["held out", "ensemble method"] + [f"{a} {w}" for a in paper.ATTACKS
                                              for w in ("ensemble", "hold-out")]


def _table2(results: dict[str, Any], cfg: MomentumConfig, labels: dict[str, str],
            metric: str) -> Table:
    rows = []
    t2 = _t2(results)
    for h in [s.role for s in cfg.normal]:
        for f, fname in paper.FUSIONS.items():
            if (h, f, "FGSM") not in t2:
                continue
            row: list[Any] = [f"-{labels[h]}", fname]
            for a in paper.ATTACKS:
                v = t2[(h, f, a)]
                row += [_rate(v["ensemble"], metric, "*"), _rate(v["hold_out"], metric)]
            rows.append(row)
    return Table(
        f"Table 2 (ours, {cfg.suite}): ensembles of the other normal models, over "
        f"{_over(metric)}", _T2_COLS, rows,
        notes=f"{_WB} {_CI} eps = {_fmt_eps(cfg.eps)}, T = {cfg.ensemble_steps}, "
              f"mu = {cfg.decay:g}, equal weights, {cfg.n_ensemble} images.",
        float_format=".1f")


def _side2(results: dict[str, Any], cfg: MomentumConfig) -> Table:
    rows = []
    t2 = _t2(results)
    for h in [s.role for s in cfg.normal]:
        for f, fname in paper.FUSIONS.items():
            if (h, f, "FGSM") not in t2:
                continue
            row: list[Any] = [f"-{h}", fname, "ours"]
            for a in paper.ATTACKS:
                v = t2[(h, f, a)]
                row += [_rate(v["ensemble"], "success", "*"), _rate(v["hold_out"], "success")]
            rows.append(row)
            cells = paper.PAPER_TABLE2.get(h, {}).get(f)
            prow: list[Any] = ["", "", "paper"]
            for i in range(len(paper.ATTACKS)):
                prow += [None, None] if cells is None else [Cell(cells[i][0], "*"),
                                                            cells[i][1]]
            rows.append(prow)
    return Table("Table 2 side by side: ours and the paper's, success rate %",
                 _T2_COLS[:2] + ["from"] + _T2_COLS[2:], rows,
                 notes=f"{_WB} {_CI} {_roles_note(cfg)} Ours: {cfg.n_ensemble} images, "
                       f"T = {cfg.ensemble_steps}; paper: T = 20.", float_format=".1f")


# -- Table 3 ------------------------------------------------------------------------------------
def _table3(results: dict[str, Any], cfg: MomentumConfig, labels: dict[str, str],
            metric: str) -> Table:
    rows = []
    t3 = _t3(results)
    for h in [s.role for s in cfg.adversarial]:
        for a in paper.ATTACKS:
            if (h, a) in t3:
                v = t3[(h, a)]
                rows.append([f"-{labels[h]}", a, _rate(v["ensemble"], metric, "*"),
                             _rate(v["hold_out"], metric)])
    return Table(
        f"Table 3 (ours, {cfg.suite}): logits ensemble of all other models vs the held-out "
        f"adversarially trained one, over {_over(metric)}",
        ["held out", "attack", "ensemble", "hold-out"], rows,
        notes=f"{_WB} {_CI} eps = {_fmt_eps(cfg.eps)}, T = {cfg.ensemble_steps}, "
              f"mu = {cfg.decay:g}, {cfg.n_ensemble} images.", float_format=".1f")


def _side3(results: dict[str, Any], cfg: MomentumConfig) -> Table:
    rows = []
    t3 = _t3(results)
    for h in [s.role for s in cfg.adversarial]:
        for i, a in enumerate(paper.ATTACKS):
            if (h, a) not in t3:
                continue
            v = t3[(h, a)]
            pc = paper.PAPER_TABLE3.get(h)
            rows.append([f"-{h}", a, _rate(v["ensemble"], "success", "*"),
                         _rate(v["hold_out"], "success"),
                         None if pc is None else Cell(pc[i][0], "*"),
                         None if pc is None else pc[i][1]])
    return Table("Table 3 side by side: ours and the paper's, success rate %",
                 ["held out", "attack", "ensemble (ours)", "hold-out (ours)",
                  "ensemble (paper)", "hold-out (paper)"], rows,
                 notes=f"{_WB} {_CI} {_roles_note(cfg)} Ours: {cfg.n_ensemble} images.",
                 float_format=".1f")


# -- the paper's tables alone (for reference) ---------------------------------------------------
def _paper_table1() -> Table:
    rows = []
    for s in paper.ROLES:
        for a in paper.ATTACKS:
            vals = paper.PAPER_TABLE1[s][a]
            rows.append([s, a] + [Cell(v, "*") if t == s else v
                                  for t, v in zip(paper.ROLES + paper.ADV_ROLES, vals)])
    return Table("Table 1 (paper): success rate % on ImageNet (Dong et al. 2018)",
                 ["source", "attack"] + list(paper.ROLES + paper.ADV_ROLES), rows,
                 notes=f"{_WB} eps = 16/255, T = 10, mu = 1.0, 1000 images.",
                 float_format=".1f")


def _paper_table2() -> Table:
    rows = []
    for h in paper.ROLES:
        for f, fname in paper.FUSIONS.items():
            row: list[Any] = [f"-{h}", fname]
            for ens, hold in paper.PAPER_TABLE2[h][f]:
                row += [Cell(ens, "*"), hold]
            rows.append(row)
    return Table("Table 2 (paper): ensemble of the other normal models vs the held-out one",
                 _T2_COLS, rows, notes=f"{_WB} eps = 16/255, T = 20, mu = 1.0.",
                 float_format=".1f")


def _paper_table3() -> Table:
    rows = [[f"-{h}", a, Cell(paper.PAPER_TABLE3[h][i][0], "*"), paper.PAPER_TABLE3[h][i][1]]
            for h in paper.ADV_ROLES for i, a in enumerate(paper.ATTACKS)]
    return Table("Table 3 (paper): ensemble of the other six models vs the held-out "
                 "adversarially trained one", ["held out", "attack", "ensemble", "hold-out"],
                 rows, notes=f"{_WB} eps = 16/255, T = 20, mu = 1.0.", float_format=".1f")


# -- paired significance of the differences the paper reports -----------------------------------
def _compare(results: dict[str, Any], plus: tuple[str, str], minus: tuple[str, str],
             paper_diff: float | None) -> list[Any] | None:
    """[diff pts, b, c, McNemar p, significant, paper diff, same sign] of two outcomes on
    the same images (``b``: plus succeeds and minus fails, ``c``: the reverse)."""
    a, b = _bits(results, *plus), _bits(results, *minus)
    if a is None or b is None or a.size != b.size:
        return None
    n_b, n_c = int((a & ~b).sum()), int((~a & b).sum())
    p = mcnemar_exact(n_b, n_c)
    diff = 100 * (n_b - n_c) / a.size
    same = None if paper_diff is None or p >= ALPHA else (diff > 0) == (paper_diff > 0)
    return [diff, n_b, n_c, p, p < ALPHA, paper_diff, same]


_DIFF_COLS = ["difference (pts)", "b", "c", "McNemar p", "significant", "paper (pts)",
              "same sign as paper"]


def _diff_table(title: str, keys: list[str], rows: list[list[Any]], n: int) -> Table:
    return Table(title, keys + _DIFF_COLS, rows,
                 notes=f"Paired on the same {n} images: b = images where the first succeeds "
                       f"and the second fails, c = the reverse; difference = (b - c) / n; "
                       f"exact McNemar test, significant at p < {ALPHA:g} (unadjusted for "
                       f"the number of comparisons). 'same sign' is given for the "
                       f"significant ones.",
                 formats={"difference (pts)": "+.1f", "McNemar p": ".3g",
                          "paper (pts)": "+.1f"})


def _p1(s: str, a: str, t: str) -> float | None:
    targets = paper.ROLES + paper.ADV_ROLES
    if s not in paper.PAPER_TABLE1 or t not in targets:
        return None
    return paper.PAPER_TABLE1[s][a][targets.index(t)]


def _differences1(results: dict[str, Any], cfg: MomentumConfig) -> Table:
    rows = []
    normal = [s.role for s in cfg.normal]
    for s in normal:
        for t in [x.role for x in cfg.models if x.role != s]:
            for other in ("I-FGSM", "FGSM"):
                pm, po = _p1(s, "MI-FGSM", t), _p1(s, other, t)
                r = _compare(results, (f"table1|{s}|MI-FGSM", t), (f"table1|{s}|{other}", t),
                             None if pm is None or po is None else pm - po)
                if r is not None:
                    rows.append([s, t, f"MI-FGSM - {other}"] + r)
    return _diff_table("Table 1: is MI-FGSM's black-box advantage significant? (paired, "
                       "per source and target)", ["source", "target", "comparison"], rows,
                       cfg.n_images)


def _differences2(results: dict[str, Any], cfg: MomentumConfig) -> Table:
    rows = []
    for h in [s.role for s in cfg.normal]:
        for a_i, a in enumerate(paper.ATTACKS):
            for f in ("probs", "loss"):
                cells = paper.PAPER_TABLE2.get(h)
                pd = None if cells is None else cells["logits"][a_i][1] - cells[f][a_i][1]
                r = _compare(results, (f"table2|{h}|logits|{a}", h), (f"table2|{h}|{f}|{a}", h),
                             pd)
                if r is not None:
                    rows.append([f"-{h}", a, f"logits - {paper.FUSIONS[f].lower()}"] + r)
        for other in ("I-FGSM", "FGSM"):
            cells = paper.PAPER_TABLE2.get(h)
            pd = None if cells is None else \
                cells["logits"][2][1] - cells["logits"][paper.ATTACKS.index(other)][1]
            r = _compare(results, (f"table2|{h}|logits|MI-FGSM", h),
                         (f"table2|{h}|logits|{other}", h), pd)
            if r is not None:
                rows.append([f"-{h}", "logits", f"MI-FGSM - {other}"] + r)
    return _diff_table("Table 2: are the fusion and attack differences on the held-out model "
                       "significant? (paired)", ["held out", "attack / fusion", "comparison"],
                       rows, cfg.n_ensemble)


def _differences3(results: dict[str, Any], cfg: MomentumConfig) -> Table:
    rows = []
    for h in [s.role for s in cfg.adversarial]:
        for other in ("I-FGSM", "FGSM"):
            pc = paper.PAPER_TABLE3.get(h)
            pd = None if pc is None else pc[2][1] - pc[paper.ATTACKS.index(other)][1]
            r = _compare(results, (f"table3|{h}|MI-FGSM", h), (f"table3|{h}|{other}", h), pd)
            if r is not None:
                rows.append([f"-{h}", f"MI-FGSM - {other}"] + r)
    return _diff_table("Table 3: is MI-FGSM's advantage on the held-out adversarially trained "
                       "model significant? (paired)", ["held out", "comparison"], rows,
                       cfg.n_ensemble)


def significance_sentence(t: Table) -> str:
    """Which differences of a differences table are significant, in words."""
    if not t.rows:
        return "No paired comparison in this run."
    j = {c: i for i, c in enumerate(t.columns)}
    nk = len(t.columns) - len(_DIFF_COLS)
    sig = [r for r in t.rows if r[j["significant"]]]
    agree = sum(r[j["same sign as paper"]] is True for r in sig)
    against = [r for r in sig if r[j["same sign as paper"]] is False]
    out = (f"{len(sig)} of {len(t.rows)} differences are significant (exact McNemar, "
           f"p < {ALPHA:g}); {agree} of them point the paper's way")
    if against:
        out += "; against the paper's direction: " + "; ".join(
            " ".join(str(x) for x in r[:nk]) + f" ({r[j['difference (pts)']]:+.1f} pts)"
            for r in against)
    none = [r for r in t.rows if not r[j["significant"]]]
    if none and len(none) <= 12:
        out += "; not significant: " + "; ".join(
            " ".join(str(x) for x in r[:nk]) + f" ({r[j['difference (pts)']]:+.1f})"
            for r in none)
    return out + "."


# -- models, eps rule, sweep, figures -----------------------------------------------------------
def _models_table(results: dict[str, Any], cfg: MomentumConfig) -> Table:
    rows = []
    for s in cfg.models:
        m = results["models"][s.role]
        tm = m.get("train_metrics") or {}
        if s.adversarial and cfg.suite == "mnist":
            extra = (f"ensemble adv. training, eps {_fmt_eps(cfg.advtrain_eps or cfg.eps)}, "
                     f"static: {', '.join(s.static)}")
            if tm.get("test_fgsm_acc") is not None:
                extra += f"; white-box FGSM test acc. {100 * tm['test_fgsm_acc']:.1f} %"
        elif cfg.suite == "mnist":
            extra = "standard training"
        else:
            extra = "pretrained (timm)" if cfg.pretrained else "RANDOM INIT (pretrained=False)"
        if m.get("train_seconds") is not None:
            extra += f"; {m['train_seconds']:.0f} s"
        lo, hi = wilson_interval(round(m["clean_accuracy"] * m["n"] / 100), m["n"])
        rows.append([s.role, s.arch, "adversarially trained" if s.adversarial else "normal",
                     m.get("params"), m.get("mflops"),
                     Estimate(m["clean_accuracy"], 100 * lo, 100 * hi), extra])
    return Table(f"Models: clean accuracy % on the first {cfg.n_images} evaluation images",
                 ["role", "model", "kind", "params", "MFLOP / image", "clean acc. %",
                  "training"], rows, float_format=".1f", formats={"MFLOP / image": ".2f"},
                 notes=_CI + " MFLOP: one forward pass (training costs about 3x per image).")


def _eps_rule_table(results: dict[str, Any], cfg: MomentumConfig) -> Table | None:
    rule = results.get("eps_rule") or {}
    if rule.get("given", True):
        return None
    rows = []
    for e, by_src in rule["counts"].items():
        row: list[Any] = [Cell(e, " (chosen)") if abs(float(e) - rule["chosen"]) < 1e-9 else e]
        for s in cfg.normal:
            k, n = by_src[s.role]
            lo, hi = wilson_interval(k, n)
            row.append(Estimate(100 * k / n, 100 * lo, 100 * hi))
        row.append(min(100 * k / n for k, n in by_src.values()) >= cfg.eps_rule_success)
        rows.append(row)
    return Table(f"The eps rule: I-FGSM white-box success % on {rule['images']} held-apart "
                 f"images (test images {rule['first_image']}-"
                 f"{rule['first_image'] + rule['images'] - 1})",
                 ["eps"] + [s.role for s in cfg.normal] + ["meets the rule"], rows,
                 notes=f"Rule: {rule['rule']}. {_CI}", float_format=".1f")


def _sweep_table(results: dict[str, Any], cfg: MomentumConfig) -> tuple[Table, list[float]]:
    normal = [s.role for s in cfg.normal]
    adv = [s.role for s in cfg.adversarial]
    src0, black = normal[0], normal[1:]
    rows, informative = [], []
    for e in cfg.sweep_eps:
        default = abs(e - cfg.eps) < 1e-9
        row: list[Any] = [Cell(_fmt_eps(e), " (used)") if default else _fmt_eps(e)]
        ok = True
        for a in paper.ATTACKS:
            unit = f"eps_sweep|{a}|{e:g}"
            wb = _wilson(results, unit, src0)
            bb = mean_interval(results, unit, black, cfg.seed)
            ba = mean_interval(results, unit, adv, cfg.seed)
            row += [wb] + [None if iv is None else Estimate(iv.estimate, iv.lo, iv.hi)
                           for iv in (bb, ba)]
            if bb is not None and not 10.0 <= bb.estimate <= 90.0:
                ok = False
            if a != "FGSM" and cfg.steps > 1 and wb is not None and wb.value < 95.0:
                ok = False
        row.append("yes" if ok and black else "no")
        if ok and black:
            informative.append(e)
        rows.append(row)
    cols = ["eps"] + [f"{a} {w}" for a in paper.ATTACKS for w in ("white-box", "black-box normal",
                                                             "black-box adv.")] + \
        ["informative"]
    return Table(f"Eps sweep: success % from {src0} (T = {cfg.steps}, {cfg.n_figure} images)",
                 cols, rows, float_format=".1f",
                 notes="black-box = mean over the other normal models / over the adversarially "
                       "trained models, with a 95 % paired-bootstrap interval over the images; "
                       "white-box with its Wilson interval. informative = the paper's regime: "
                       "the iterative attacks' white-box success is >= 95 % and every attack's "
                       "mean black-box success on the normal models lies in [10, 90] %."
                 ), informative


def _figure_tables(results: dict[str, Any], cfg: MomentumConfig, labels: dict[str, str]
                   ) -> dict[str, Table]:
    roles = [s.role for s in cfg.models]
    out = {}
    mus = sorted(results["decay"], key=float)
    out["fig_decay"] = Table(
        "Success % of MI-FGSM vs decay factor mu", ["mu"] + [labels[r] for r in roles],
        [[float(m)] + [_wilson(results, f"decay|{m}", r) for r in roles] for m in mus],
        float_format=".1f", formats={"mu": ".2f"}, notes=_CI)
    rows = []
    for k in results["iterations"]:
        a, t = k.split("|")
        rows.append([a, int(t)] + [_wilson(results, f"iterations|{k}", r) for r in roles])
    out["fig_iterations"] = Table("Success % vs number of iterations T",
                                  ["attack", "T"] + [labels[r] for r in roles], rows,
                                  float_format=".1f", notes=_CI)
    cos = results["cosine"]
    if cos:
        n = len(next(iter(cos.values())))
        out["fig_cosine"] = Table(
            "Mean cosine similarity of successive perturbations",
            ["step pair"] + list(cos), [[f"{t + 1}-{t + 2}"] + [cos[a][t] for a in cos]
                                         for t in range(n)], float_format=".3f")
    return out


# -- beyond the paper -------------------------------------------------------------------------
def beyond_attacks(results: dict[str, Any]) -> list[str]:
    """The attacks of the beyond-the-paper table, in its order (baselines first)."""
    out: list[str] = []
    for k in results.get("beyond", {}):
        a = k.split("|", 1)[1]
        if a not in out:
            out.append(a)
    return out


def beyond_means(results: dict[str, Any], cfg: MomentumConfig, attack: str
                 ) -> dict[str, Estimate | None]:
    """Mean black-box success % of ``attack`` over its sources, on the normal targets (each
    source's others) and on the adversarially trained ones, with paired-bootstrap
    intervals over the images."""
    from advlab.experiments.momentum.verdicts import Evidence

    ev = Evidence(results)
    normal = [s.role for s in cfg.normal]
    adv = [s.role for s in cfg.adversarial]
    sources = [s for s in cfg.beyond_roles if f"{s}|{attack}" in results["beyond"]]
    groups = {"normal": [(f"beyond|{s}|{attack}", t) for s in sources for t in normal
                         if t != s],
              "adversarial": [(f"beyond|{s}|{attack}", t) for s in sources for t in adv]}
    out: dict[str, Estimate | None] = {}
    for g, cols in groups.items():
        if cols and ev.has(cols):
            iv = ev.diff(cols)
            out[g] = Estimate(iv.estimate, iv.lo, iv.hi)
        else:
            out[g] = None
    return out


def _beyond_vs_mi(results: dict[str, Any], cfg: MomentumConfig, attack: str
                  ) -> tuple[Estimate | None, str]:
    """``attack`` minus MI-FGSM in mean black-box success on the normal targets (paired
    bootstrap over the images) and whether it is better, worse or undecided."""
    from advlab.experiments.momentum.verdicts import Evidence

    ev = Evidence(results)
    normal = [s.role for s in cfg.normal]
    sources = list(cfg.beyond_roles)
    plus = [(f"beyond|{s}|{attack}", t) for s in sources for t in normal if t != s]
    minus = [(f"beyond|{s}|MI-FGSM", t) for s in sources for t in normal if t != s]
    if not plus or not ev.has(plus + minus):
        return None, "n/a"
    iv = ev.diff(plus, minus)
    v = verdict(iv)
    word = {"HELD": "better", "NOT HELD": "worse"}.get(v, "undecided")
    return Estimate(iv.estimate, iv.lo, iv.hi), word


def _beyond_tables(results: dict[str, Any], cfg: MomentumConfig, labels: dict[str, str]
                   ) -> tuple[Table, Table]:
    """The beyond-the-paper table (every source and target) and its summary (means and the
    paired difference to MI-FGSM)."""
    targets = [s.role for s in cfg.models]
    rows = []
    attacks = beyond_attacks(results)
    for s in cfg.beyond_roles:
        for a in attacks:
            v = results["beyond"].get(f"{s}|{a}")
            if v is None:
                continue
            rows.append([labels[s], a] + [_rate(v[t], "success", "*" if t == s else "")
                                          for t in targets])
    means = {a: beyond_means(results, cfg, a) for a in attacks}
    summary = []
    for a in attacks:
        d, word = (None, "baseline") if a == "MI-FGSM" else _beyond_vs_mi(results, cfg, a)
        summary.append(["all sources" if len(cfg.beyond_roles) > 1 else
                        labels[cfg.beyond_roles[0]], a, means[a]["normal"],
                        means[a]["adversarial"], d, word])
    cols = ["source", "attack"] + [labels[t] for t in targets]
    table = Table(
        f"Beyond the paper: the transfer attacks that followed MI-FGSM, success rate % "
        f"(eps = {_fmt_eps(cfg.eps)}, T = {cfg.steps}, alpha = eps/T, {cfg.n_beyond} images)",
        cols, rows,
        notes=f"{_WB} {_CI} Each attack with its paper's defaults (advlab.attacks presets: "
              f"DI p = 0.5 with resize rate 0.9, TI kernel 15 x 15 on [-3, 3] sigma, SI 5 "
              f"scale copies, VMI/VNI N = 20 and beta = 1.5, Admix 3 x 5 copies and eta = "
              f"0.2), the same sources, eps, T and targets as Table 1; I-FGSM and MI-FGSM are "
              f"run again on these images as the baselines.",
        float_format=".1f")
    return table, Table(
        "Beyond the paper, summary: mean black-box success % and the difference to MI-FGSM",
        ["sources", "attack", "black-box normal (mean)", "adv. trained (mean)",
         "minus MI-FGSM, black-box normal (pts)", "vs MI-FGSM"], summary,
        notes="Means over the sources and their black-box targets, with 95 % paired-"
              "bootstrap intervals over the images (2000 resamples); 'better' / 'worse' when "
              "the interval of the difference to MI-FGSM (same images, same sources) "
              "excludes 0, else 'undecided'.", float_format=".1f")
