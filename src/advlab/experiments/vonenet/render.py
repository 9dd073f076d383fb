"""The tables and the report of the VOneNet-FGSM reproduction: table cells with their 95 %
Wilson intervals, the seven tables (each written as ``<key>.csv`` and ``<key>.json``) and
the report (``report.md``, ``report.html``). The figures are drawn by the pipeline
(:func:`~advlab.experiments.vonenet.run.run_vonenet`) as each step's numbers come in."""

from __future__ import annotations

import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from advlab._io import jsonable
from advlab.experiments.vonenet.config import DISPLAY, PLAIN, REPORTED, VONE, VoneNetConfig
from advlab.experiments.vonenet.mechanism import rate_of
from advlab.report import Cell, Report, Table


def _cell(value: float, lo: float, hi: float) -> Cell:
    """A table cell ``value [lo, hi]`` (%)."""
    return Cell(value, f" [{lo:.1f}, {hi:.1f}]")


def _ci(r: dict[str, float] | None) -> Cell | None:
    """The cell of a rate dict (``acc``, ``lo``, ``hi``), or None."""
    return None if r is None else _cell(r["acc"], r["lo"], r["hi"])


def _ci_sound(snd: dict[str, Any], key: str) -> Cell:
    return _cell(snd[f"{key}_mean"], **snd[f"{key}_ci"])


def _ci_attack(a: dict[str, Any] | None) -> Cell | None:
    return None if a is None else _cell(a["acc_mean"], a["lo"], a["hi"])


def _tables(cfg: VoneNetConfig, models: Collection[str], n_eval: int,
            as_reported: dict[str, Any], sound: dict[str, Any], sweeps: dict[str, list[float]],
            curves: dict[str, list[dict[str, Any]]], audits: dict[str, Any]
            ) -> dict[str, Table]:
    """The report's seven tables by file stem, from what the pipeline measured: the
    ``models`` run, the ``n_eval`` test images of the as-reported run, ``as_reported``,
    ``sound``, ``sweeps``, the fine-tuning ``curves`` and the ``audits``."""
    rows_rep = []
    for name, r in as_reported.items():
        rc, rf = REPORTED[name]
        rows_rep.append([DISPLAY[name], rc, rf, _ci(r["clean"]), _ci(r["fgsm"]),
                         _ci(r["fgsm_unclipped"])])
    t_rep = Table(f"Clean vs FGSM (eps {cfg.eps}) accuracy, % [95 % Wilson interval] - report "
                  f"vs measured with the student's protocol",
                  ["model", "report clean", "report FGSM", "clean", "FGSM as reported",
                   "FGSM unclipped (extra)"], rows_rep,
                  notes=f"{n_eval} test images; profile {cfg.profile}. As reported: "
                  "the gradient of the batch-mean cross-entropy from one noise draw, "
                  "x + eps*sign(grad) clipped to [0, 1] (the report's listing), accuracy on "
                  "another draw; where the gradient is NaN, sign(NaN) = 0 leaves the pixel as "
                  "it was. The unclipped column is not the student's protocol."
                  + (f" Not run in this profile: {', '.join(DISPLAY[m] for m in skipped)} "
                     "(add them with --models)." if (skipped := [m for m in PLAIN + VONE
                                                                  if m not in models]) else ""))
    final_rows = []
    for label, snd in sound.items():
        base = label.replace(" (fine-tuned)", "")
        tuned = label != base
        rep_fgsm = REPORTED[base][1] if not tuned else None
        if tuned:
            n_ft = cfg.finetune_test_size or 10000
            measured = _ci(rate_of(curves[base][-1]["adv_acc"], n_ft))
            finite = None
        else:
            measured = _ci(as_reported[base]["fgsm"])
            finite = _ci(as_reported[base]["fgsm_finite"])
        final_rows.append([DISPLAY[base] + (" (fine-tuned)" if tuned else ""), rep_fgsm,
                           measured, finite, _ci_sound(snd, "clean"), snd["clean_std"],
                           _ci_sound(snd, "worst"), snd["worst_std"]])
    n_attacks = len(next(iter(sound.values()))["attacks"])
    t_final = Table("Report vs as reported (student-exact, clipped) vs finite-gradient FGSM vs "
                    f"sound worst case at eps {cfg.eps}, % [95 % Wilson interval]",
                    ["model", "report FGSM", "as reported (measured)", "FGSM, finite gradients",
                     "clean (sound subset)", "clean std", "sound worst case",
                     "worst-case std"], final_rows,
                    notes=f"As reported and finite-gradient FGSM: {n_eval} test images "
                          "(fine-tuned rows: the last fine-tuning epoch's FGSM accuracy on "
                          f"{cfg.finetune_test_size or 10000} images). Sound: per-example worst "
                          f"case over {n_attacks} attacks on {cfg.sound_size} test images, "
                          "student-exact models attacked through their finite-gradient twin; the "
                          "attack per example is chosen on selection noise draws and scored on "
                          f"{cfg.noise_draws} fresh draws (mean, std over draws), and the result "
                          "is never above the best single attack.")
    mech_rows = []
    for name, r in as_reported.items():
        snd = sound[name]
        mech_rows.append([DISPLAY[name], REPORTED[name][1], 100 * r["nonfinite_entries"],
                          100 * r["nonfinite_images"], 100 * r["unchanged_images"],
                          100 * r["moved_pixels"], _ci(r["fgsm"]), _ci(r["fgsm_finite"]),
                          r.get("paired", {}).get("mcnemar_p"), _ci_sound(snd, "worst")])
    t_mech = Table("Why the number: the student's FGSM on the student's models, %",
                   ["model", "report FGSM", "NaN/inf gradient entries", "images with NaN/inf",
                    "images left unchanged", "pixels moved", "FGSM as reported",
                    "FGSM, finite gradients", "McNemar p", "sound worst case"], mech_rows,
                   formats={"McNemar p": ".2g"},
                   notes="Input-gradient entries of the cross-entropy that are NaN or "
                         "infinite (one noise draw), images the clipped FGSM left exactly "
                         "unchanged, pixels it moved; the same FGSM with finite gradients "
                         "(the model's twin with a NaN-safe complex cell: same weights, noise "
                         "draws and forward values), judged on the same images and draws; exact "
                         "McNemar test of the two attacks (paired).")
    attack_names = sorted({a for s_ in sound.values() for a in s_["attacks"]})
    t_attacks = Table("Accuracy under each attack of the sound protocol (mean over draws), % "
                      "[95 % Wilson interval]",
                      ["model", *attack_names],
                      [[lbl, *[_ci_attack(s_["attacks"].get(a)) for a in attack_names]]
                       for lbl, s_ in sound.items()])
    t_sweep = Table("APGD-CE accuracy vs eps (EOT over the noise), % [95 % Wilson interval]",
                    ["model", *[f"eps {e:g}" for e in cfg.sweep]],
                    [[DISPLAY[n], *[_ci(rate_of(v / 100, cfg.sweep_size or cfg.sound_size))
                                     for v in vals]]
                     for n, vals in sweeps.items()])
    ft_rows = []
    for name, c in curves.items():
        last = c[-1]
        snd = sound[f"{name} (fine-tuned)"]
        it = snd["attacks"].get("APGD-CE") or snd["attacks"]["PGD"]  # results before APGD
        apgd = it["acc_mean"]
        leak = 100 * last["adv_acc"] > 100 * last["clean_acc"]
        nan = as_reported[name]["nonfinite_entries"]
        if apgd >= 100 * last["adv_acc"] - 20:
            why = "APGD agrees with FGSM"
        elif nan > 0.5:
            why = (f"APGD (finite gradients) collapses: the FGSM that fine-tuned and measured "
                   f"it stepped on NaN gradients ({100 * nan:.0f} % of entries)")
        else:
            why = "APGD collapses: not robust (FGSM overfitting / masking)"
        verdict = ("label leaking: FGSM accuracy above clean; " if leak else "") + why
        n_ft = cfg.finetune_test_size or 10000
        ft_rows.append([DISPLAY[name], _ci(rate_of(c[0]["clean_acc"], n_ft)),
                        _ci(rate_of(c[0]["adv_acc"], n_ft)),
                        _ci(rate_of(last["clean_acc"], n_ft)), _ci(rate_of(last["adv_acc"], n_ft)),
                        _ci_attack(snd["attacks"].get("APGD-CE")),
                        _ci_attack(snd["attacks"]["PGD"]), _ci_sound(snd, "worst"),
                        verdict])
    t_ft = Table("Fine-tuning: the 'crossing' curves under a sound evaluation, % [95 % Wilson "
                 "interval]",
                 ["model", "clean before", "FGSM before", "clean after", "FGSM after",
                  "APGD-CE after", "PGD after", "worst-case after", "explanation"], ft_rows,
                 notes="APGD-CE and PGD at the same budget (steps, restarts, EOT); PGD is kept "
                       "so that the two can be compared.")
    audit_rows = []
    for label, a in audits.items():
        for f in a["flags"]:
            audit_rows.append([label, f["name"], "pass" if f["passed"] else f["severity"],
                               f["evidence"]])
    t_audit = Table("Audit flags of the VOne models (student-exact and finite-gradient twin)",
                    ["model", "check", "result", "evidence"], audit_rows)
    return {"as_reported": t_rep, "mechanism": t_mech, "final": t_final, "attacks": t_attacks,
            "sweep": t_sweep, "finetune": t_ft, "audit": t_audit}


def _write_report(cfg: VoneNetConfig, out: Path, tables: dict[str, Table],
                  verdicts: list[str], fig_bar: Path, grid_figs: list[Path], fig_ft: Path,
                  fig_sweep: Path, audits: dict[str, Any], t_start: float) -> float:
    """Write the report (claims, tables, figures, configuration) into ``out``; returns the
    run time in seconds since ``t_start``, which the report states."""
    t_rep, t_mech, t_final = tables["as_reported"], tables["mechanism"], tables["final"]
    t_attacks, t_sweep, t_ft, t_audit = (tables["attacks"], tables["sweep"],
                                         tables["finetune"], tables["audit"])
    rep = Report("VOneNet-FGSM: reproduction and sound evaluation",
                 subtitle=f"profile {cfg.profile}, eps {cfg.eps}, seed {cfg.seed}")
    rep.add_heading("Claims")
    for v in verdicts:
        rep.add_paragraph(v)
    rep.add_heading("1. The report's experiment, as the student ran it")
    rep.add_table(t_rep).add_figure(fig_bar, "Clean vs FGSM accuracy (bar chart)")
    rep.add_table(t_mech)
    for g in grid_figs:
        rep.add_figure(g, f"Original vs adversarial images: {g.stem[5:]}")
    rep.add_heading("2. Adversarial fine-tuning")
    rep.add_figure(fig_ft, "Clean and FGSM test accuracy per fine-tuning epoch")
    rep.add_table(t_ft)
    rep.add_heading("3. Sound evaluation")
    rep.add_table(t_final).add_table(t_attacks).add_table(t_sweep)
    rep.add_figure(fig_sweep, "Accuracy vs eps (APGD-CE with EOT)")
    if audits:
        rep.add_heading("4. Audit of the VOne models")
        rep.add_table(t_audit)
    rep.add_heading("Configuration")
    rep.add_code(_pretty(jsonable(cfg)), "json")
    elapsed = time.perf_counter() - t_start
    rep.add_paragraph(f"Run time: {elapsed:.0f} s (cached steps are not recomputed).")
    rep.write(out)
    return elapsed


def _pretty(obj: Any) -> str:
    import json

    return json.dumps(obj, indent=2, sort_keys=True)
