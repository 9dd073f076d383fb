"""The figures and the report: everything :func:`run_momentum` writes into ``out_dir``."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from advlab._io import jsonable
from advlab.experiments.momentum.config import MomentumConfig, _mnist_models
from advlab.experiments.momentum.cost import _projection
from advlab.experiments.momentum.paper import ATTACKS
from advlab.experiments.momentum.tables import (
    _figure_tables,
    _fmt_eps,
    _models_table,
    _paper_table1,
    _paper_table2,
    _paper_table3,
    _sweep_table,
    _table1,
    _table2,
    _table3,
)
from advlab.experiments.momentum.verdicts import Claim, _mean, claims, paper_claims
from advlab.report import Report, Table, atomic_write_json

if TYPE_CHECKING:
    from advlab.experiments.momentum.runner import _Runner


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

