"""The tables of the report: ours beside the paper's, the models, the eps sweep and the
numbers behind the figures."""

from __future__ import annotations

from typing import Any

from advlab.experiments.momentum import paper
from advlab.experiments.momentum.config import MomentumConfig
from advlab.experiments.momentum.verdicts import _mean, _t2, _t3
from advlab.report import Cell, Table


def _fmt_eps(e: float) -> str:
    """``16/255`` for multiples of 1/255 that are not short decimals, else ``0.2``."""
    k = e * 255
    on_grid = abs(k - round(k)) < 1e-6 and round(k) > 0
    decimal = abs(e * 100 - round(e * 100)) < 1e-9
    return f"{round(k)}/255" if on_grid and not decimal else f"{e:g}"


_WB = "* = white-box (the target is, or is part of, the source)."


def _table1(results: dict[str, Any], cfg: MomentumConfig, labels: dict[str, str],
            metric: str) -> Table:
    normal = [s.role for s in cfg.normal]
    targets = [s.role for s in cfg.models]
    rows = []
    for s in normal:
        for a in paper.ATTACKS:
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
    for s in paper.ROLES:
        for a in paper.ATTACKS:
            vals = paper.PAPER_TABLE1[s][a]
            rows.append([s, a] + [Cell(v, "*") if t == s else v
                                  for t, v in zip(paper.ROLES + paper.ADV_ROLES, vals)])
    return Table("Table 1 (paper): success rate % on ImageNet (Dong et al. 2018)",
                 ["source", "attack"] + list(paper.ROLES + paper.ADV_ROLES), rows,
                 notes=f"{_WB} eps = 16/255, T = 10, mu = 1.0, 1000 images.",
                 float_format=".1f")


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
                row += [Cell(round(v["ensemble"][metric], 1), "*"),
                        round(v["hold_out"][metric], 1)]
            rows.append(row)
    over = "all images" if metric == "success" else "images the target classifies correctly"
    cols = ["held out", "ensemble method"] + [f"{a} {w}" for a in paper.ATTACKS
                                              for w in ("ensemble", "hold-out")]
    return Table(
        f"Table 2 (ours, {cfg.suite}): ensembles of the other normal models, over {over}",
        cols, rows,
        notes=f"{_WB} eps = {_fmt_eps(cfg.eps)}, T = {cfg.ensemble_steps}, mu = {cfg.decay:g}, "
              f"equal weights, {cfg.n_ensemble} images.", float_format=".1f")


def _paper_table2() -> Table:
    rows = []
    for h in paper.ROLES:
        for f, fname in paper.FUSIONS.items():
            row: list[Any] = [f"-{h}", fname]
            for ens, hold in paper.PAPER_TABLE2[h][f]:
                row += [Cell(ens, "*"), hold]
            rows.append(row)
    cols = ["held out", "ensemble method"] + [f"{a} {w}" for a in paper.ATTACKS
                                              for w in ("ensemble", "hold-out")]
    return Table("Table 2 (paper): ensemble of the other normal models vs the held-out one",
                 cols, rows, notes=f"{_WB} eps = 16/255, T = 20, mu = 1.0.",
                 float_format=".1f")


def _table3(results: dict[str, Any], cfg: MomentumConfig, labels: dict[str, str],
            metric: str) -> Table:
    rows = []
    t3 = _t3(results)
    for h in [s.role for s in cfg.adversarial]:
        for a in paper.ATTACKS:
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
    rows = [[f"-{h}", a, Cell(paper.PAPER_TABLE3[h][i][0], "*"), paper.PAPER_TABLE3[h][i][1]]
            for h in paper.ADV_ROLES for i, a in enumerate(paper.ATTACKS)]
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
        for a in paper.ATTACKS:
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
    cols = ["eps"] + [f"{a} {w}" for a in paper.ATTACKS for w in ("white-box", "black-box normal",
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

