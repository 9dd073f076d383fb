"""The figures and the report: everything :func:`run_momentum` writes into ``out_dir``."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advlab._io import jsonable
from advlab.experiments.momentum.config import MomentumConfig
from advlab.experiments.momentum.cost import _projection
from advlab.experiments.momentum.paper import ATTACKS
from advlab.experiments.momentum.tables import (
    _beyond_tables,
    _differences1,
    _differences2,
    _differences3,
    _eps_rule_table,
    _figure_tables,
    _fmt_eps,
    _models_table,
    _paper_table1,
    _paper_table2,
    _paper_table3,
    _side1,
    _side2,
    _side3,
    _sweep_table,
    _table1,
    _table2,
    _table3,
    beyond_attacks,
    beyond_means,
    significance_sentence,
)
from advlab.experiments.momentum.verdicts import Claim, _mean, claims, paper_claims
from advlab.report import Report, Table, atomic_write_json

if TYPE_CHECKING:
    from advlab.experiments.momentum.runner import _Runner


def _figures(results: dict[str, Any], cfg: MomentumConfig, labels: dict[str, str],
             fig_dir: Path, runner: _Runner) -> list[tuple[Path, str]]:
    try:
        from advlab.report.figures import bar_chart, image_grid, line_plot, multi_line_grid
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
        series[f"{r} ({tag})"] = [results["decay"][m][r] for m in mus]
    p = line_plot([float(m) for m in mus], series, fig_dir / "decay.png",
                  f"MI-FGSM from {src0}: success vs decay factor",
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
        # role first, architecture on a second line: the zoo's names are too long for one
        panels[f"{r} ({tag})\n{labels[r].removesuffix(f' ({r})')}"] = lines
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
                    f"eps; the eps used, {_fmt_eps(cfg.eps)}, was chosen by the rule above "
                    f"(see the eps-sweep table)."))
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
    if results.get("beyond"):
        figs.append(_beyond_figure(results, cfg, labels, fig_dir, bar_chart))
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


def _beyond_figure(results: dict[str, Any], cfg: MomentumConfig, labels: dict[str, str],
                   fig_dir: Path, bar_chart: Any) -> tuple[Path, str]:
    attacks = beyond_attacks(results)
    means = {a: beyond_means(results, cfg, a) for a in attacks}
    series: dict[str, list[float]] = {}
    intervals: dict[str, list[tuple[float, float] | None]] = {}
    for g, name in (("normal", "normal models (black-box)"),
                    ("adversarial", "adv. trained models")):
        if all(means[a][g] is None for a in attacks):
            continue
        series[name] = [means[a][g].value if means[a][g] else float("nan") for a in attacks]
        intervals[name] = [(means[a][g].lo, means[a][g].hi) if means[a][g] else None
                           for a in attacks]
    srcs = cfg.beyond_roles
    who = labels[srcs[0]] if len(srcs) == 1 else f"{len(srcs)} normal sources"
    p = bar_chart(attacks, series, fig_dir / "beyond.png",
                  f"Black-box success of the transfer attacks, from {who}",
                  "mean success rate", percent=True, value_format=".0f", intervals=intervals,
                  figsize=(11.0, 4.8))
    return p, (f"Mean black-box success % of each attack crafted on {who} (eps = "
               f"{_fmt_eps(cfg.eps)}, T = {cfg.steps}, {cfg.n_beyond} images): on the normal "
               f"models other than the source, and on the adversarially trained ones; error "
               f"bars: 95 % paired-bootstrap intervals over the images.")


# -- report ------------------------------------------------------------------------------------
def _comparison_sentence(ours: list[Claim], paper: list[Claim], names: Sequence[str]) -> str:
    parts = []
    pmap = {c.name: c for c in paper}
    for c in ours:
        if c.name in names:
            p = pmap.get(c.name)
            ref = "" if p is None else \
                f" On the paper's own numbers (point estimates): {p.verdict}."
            parts.append(c.sentence() + ref)
    return "\n".join(parts)


def _setup_text(runner: _Runner, cfg: MomentumConfig) -> str:
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
        f"the images the target classifies correctly. Every rate carries its 95 % Wilson "
        f"interval; every comparison is paired (same images).")
    if cfg.suite == "mnist":
        setup += (
            "\nRoles: the paper's four normal ImageNet models are played by four MNIST "
            "architectures that differ the way they do (" +
            ", ".join(f"{s.role}: {s.arch}" for s in cfg.normal) + "), and its three "
            "ensemble-adversarially trained models by copies of the architecture of the model "
            "they extend, trained with ensemble adversarial training (advlab.train.advtrain, "
            "Tramer et al. 2018: half of each batch replaced by FGSM examples from the model "
            "itself or, in turn, from static pre-trained normal models: " +
            "; ".join(f"{s.role} = {s.arch}, static {', '.join(s.static)}"
                      for s in cfg.adversarial) +
            "), at the attack's eps, as Tramer et al. trained at the budget they were "
            "attacked with. Which ImageNet models Tramer et al. used as static models could "
            "not be checked here: the statics are the other normal roles except Res-152, "
            "which stays a black box for every defended model.")
        setup += (f" Training: normal models {cfg.train_epochs} epoch(s) on "
                  f"{cfg.train_size or 60000} images, defended ones {cfg.advtrain_epochs} "
                  f"epoch(s) on {cfg.advtrain_size or 60000} images (Adam, lr 1e-3, batch "
                  f"{cfg.train_batch_size}).")
    else:
        setup += ("\nModels: timm ports of the paper's TF-slim models with input "
                  "normalisation inside the wrapper; Inc-v3ens3, Inc-v3ens4 and Res-152 are not "
                  "in timm (the adversarially trained columns are the timm ones available). "
                  "Adversarial images are stored as 8-bit images (like the competition's PNGs), "
                  "rounded inside the eps-ball.")
    return setup


def _eps_text(results: dict[str, Any], cfg: MomentumConfig) -> str:
    rule = results.get("eps_rule") or {}
    if rule.get("given", True):
        return (f"eps = {_fmt_eps(cfg.eps)} was given (--eps / the config), so the rule "
                f"({cfg.eps_rule}) was not run.") if cfg.suite == "mnist" else \
            f"eps = {_fmt_eps(cfg.eps)}, the paper's budget."
    per = rule["success"][f"{rule['chosen']:g}"]
    verdict = "met" if rule["met"] else "NOT met anywhere on the grid"
    return (f"The eps of this run was chosen before any comparison, by a rule on I-FGSM "
            f"alone: {rule['rule']}. The rule was {verdict}: eps = {_fmt_eps(rule['chosen'])} "
            f"(I-FGSM white-box there: " +
            ", ".join(f"{r} {v:.1f} %" for r, v in per.items()) + "). MI-FGSM played no "
            "part in the choice; --eps overrides it.")


def _write_outputs(runner: _Runner, results: dict[str, Any], out: Path,
                   t_start: float) -> Path:
    cfg = runner.cfg
    labels = {r: runner.members[r].label for r in runner.roles}
    tables_dir = out / "tables"
    tables: dict[str, Table] = {
        "models": _models_table(results, cfg),
        "table1": _table1(results, cfg, labels, "success"),
        "table1_on_correct": _table1(results, cfg, labels, "success_on_correct"),
        "table1_side_by_side": _side1(results, cfg),
        "table1_differences": _differences1(results, cfg),
        "paper_table1": _paper_table1(),
    }
    if results["table2"]:
        tables["table2"] = _table2(results, cfg, labels, "success")
        tables["table2_on_correct"] = _table2(results, cfg, labels, "success_on_correct")
        tables["table2_side_by_side"] = _side2(results, cfg)
        tables["table2_differences"] = _differences2(results, cfg)
    tables["paper_table2"] = _paper_table2()
    if results["table3"]:
        tables["table3"] = _table3(results, cfg, labels, "success")
        tables["table3_on_correct"] = _table3(results, cfg, labels, "success_on_correct")
        tables["table3_side_by_side"] = _side3(results, cfg)
        tables["table3_differences"] = _differences3(results, cfg)
    tables["paper_table3"] = _paper_table3()
    if results.get("beyond"):
        tables["beyond"], tables["beyond_summary"] = _beyond_tables(results, cfg, labels)
    rule_table = _eps_rule_table(results, cfg)
    if rule_table is not None:
        tables["eps_rule"] = rule_table
    sweep, informative = _sweep_table(results, cfg)
    tables["eps_sweep"] = sweep
    tables.update(_figure_tables(results, cfg, labels))
    for name, t in tables.items():
        t.to_csv(tables_dir / f"{name}.csv")
        t.to_json(tables_dir / f"{name}.json")
    ours = claims(results, cfg)
    paper = paper_claims()
    results["claims"] = [_claim_dict(c) for c in ours]
    results["paper_claims"] = [_claim_dict(c) for c in paper]
    results["informative_eps"] = informative
    figs = _figures(results, cfg, labels, out / "figures", runner)

    suite = "MNIST" if cfg.suite == "mnist" else "ImageNet"
    rep = Report(f"Boosting Adversarial Attacks with Momentum: reproduction on {suite}",
                 subtitle=f"Dong et al., CVPR 2018 -- profile {cfg.profile}, "
                          f"eps = {_fmt_eps(cfg.eps)}, labels = {cfg.labels}")
    rep.add_heading("Setup")
    rep.add_paragraph(_setup_text(runner, cfg))
    rep.add_table(tables["models"])
    rep.add_heading("The eps, chosen before the comparison")
    rep.add_paragraph(_eps_text(results, cfg))
    if rule_table is not None:
        rep.add_table(rule_table)
    rep.add_heading("Which of the paper's claims held")
    rep.add_paragraph(
        "Each claim is split into paired differences with a 95 % bootstrap interval over the "
        "images (2000 resamples): HELD when every interval lies above zero, NOT HELD when one "
        "lies below, INCONCLUSIVE otherwise (the data cannot tell). 'paper' is the same "
        "difference on the paper's tables.")
    rep.add_paragraph("\n".join(f"• {c.sentence()}" for c in ours))

    for k, title in (("1", "Table 1: attacking a single model"),
                     ("2", "Table 2: attacking an ensemble of normal models"),
                     ("3", "Table 3: ensembles against adversarially trained models")):
        rep.add_heading(title)
        names = {"1": ("mi_transfers", "adv_harder"), "2": ("logits_fusion", "ensemble_mi"),
                 "3": ("ens_vs_adv",)}[k]
        if f"table{k}_side_by_side" not in tables:
            rep.add_paragraph("Not computed: it needs at least three normal models." if k == "2"
                              else "Not computed: no adversarially trained model in this run.")
            rep.add_table(tables[f"paper_table{k}"])
            continue
        rep.add_paragraph(_comparison_sentence(ours, paper, names))
        rep.add_table(tables[f"table{k}_side_by_side"])
        diff = tables[f"table{k}_differences"]
        rep.add_paragraph("Significant differences: " + significance_sentence(diff))
        rep.add_table(diff)
        rep.add_table(tables[f"table{k}_on_correct"])

    if "beyond" in tables:
        rep.add_heading("Beyond the paper: the transfer attacks that followed")
        rep.add_paragraph(
            "The same budget, sources and targets as Table 1, for the attacks the field "
            "compares against today (each with its paper's defaults). The summary ranks them "
            "by mean black-box success with paired intervals; the figure shows the same "
            "means.")
        rep.add_table(tables["beyond_summary"])
        rep.add_table(tables["beyond"])
        for p, cap in figs:
            if p.name == "beyond.png":
                rep.add_figure(p, cap)

    rep.add_heading("Figures")
    rep.add_paragraph("\n".join(f"• {c.sentence()}" for c in ours
                                if c.name in ("decay_peak", "iterations", "cosine")))
    for p, cap in figs:
        if p.name != "beyond.png":
            rep.add_figure(p, cap)
    rep.add_heading("Eps sweep", level=3)
    used = "is" if any(abs(e - cfg.eps) < 1e-9 for e in informative) else "is NOT"
    rep.add_paragraph(
        f"The eps used, {_fmt_eps(cfg.eps)}, {used} in the informative regime of this sweep "
        f"(informative: {', '.join(_fmt_eps(e) for e in informative) or 'none'}): iterative "
        f"white-box attacks succeed (>= 95 %) while black-box success is neither floor nor "
        f"ceiling (10-90 %). The sweep is shown after the fact; the eps was fixed by the rule "
        f"above.")
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
        f"chunks generated, not served from the cache): {results['attack_calls']} "
        f"({results['planned']['attack_units']} table and figure work units); models "
        f"trained: {results['trainings']}; computed {results['computed_gflop']:.1f} GFLOP in "
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


def _claim_dict(c: Claim) -> dict[str, Any]:
    d = dataclasses.asdict(c)
    d["held"] = c.held
    d["sentence"] = c.sentence()
    return d
