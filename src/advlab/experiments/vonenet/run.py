"""The pipeline: :func:`run_vonenet` trains the models, runs each step on them (the work
units of :mod:`advlab.experiments.vonenet.units`), draws the figures and writes the tables,
the claims and the report; under torchrun :func:`_share_work` first deals the work units
out to the processes."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from advlab._io import Store, atomic_write_json, default_cache_dir, jsonable
from advlab._progress import progress as _progress
from advlab.evaluate import predict
from advlab.experiments.vonenet.claims import _claims
from advlab.experiments.vonenet.config import DISPLAY, REPORTED, VoneNetConfig
from advlab.experiments.vonenet.render import _tables, _write_report
from advlab.experiments.vonenet.sound import _reseed
from advlab.experiments.vonenet.units import (
    _as_reported,
    _audit,
    _audited,
    _finetuned,
    _sound,
    _student_protocol,
    _sweep,
)
from advlab.train import load_split
from advlab.train.cached import ensure_trained
from advlab.train.checkpoint import load_checkpoint

__all__ = ["run_vonenet"]

log = logging.getLogger(__name__)


# -- the experiment --------------------------------------------------------------------------
def run_vonenet(cfg: VoneNetConfig, out_dir: str | Path, *, cache_dir: str | Path | None = None,
                progress: bool = True, audit: bool = True) -> dict[str, Any] | None:
    """Run the whole reproduction and write the report into ``out_dir``; returns the results.

    Under ``torchrun`` (with the process group joined, e.g. by
    :func:`advlab.evaluate.distributed.init_from_env`) the work is split first: every rank computes
    whole work items of its share (one model's training, fine-tuning, as-reported, sound,
    sweep or audit evaluation) into the cache, which all ranks must share (checked), so each
    result is computed exactly as in one process; then rank 0 runs the pipeline, which finds
    everything cached, writes the same files and returns the results; the other ranks write
    nothing and return None.
    """
    from advlab.evaluate.distributed import get_rank, get_world_size
    from advlab.report.figures import bar_chart, image_grid, line_plot, multi_line_grid

    t_start = time.perf_counter()
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    shared = (0, 0)
    if get_world_size() > 1:
        shared = _share_work(cfg, cache_root, progress=progress and get_rank() == 0,
                             audit=audit)
        if get_rank() != 0:
            return None
    out = Path(out_dir)
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    results = Store(cache_root / "results")
    tensors = Store(cache_root / "tensors", "safetensors")
    # what the other ranks computed counts as computed by this run
    results.calls, tensors.calls = shared
    atomic_write_json(out / "config.json", jsonable(cfg))
    device = torch.device(cfg.device)

    # 1. train (or reuse) every model
    ckpts: dict[str, Path] = {}
    for name in _progress(cfg.models, enabled=progress, desc="train"):
        ckpts[name] = ensure_trained(cfg.train_config(name), cache_root, progress=progress)
    models = {name: load_checkpoint(p, device)[0] for name, p in ckpts.items()}

    x_eval, y_eval = load_split("test", cfg.eval_size, None, device)
    x_s, y_s = x_eval[:cfg.sound_size], y_eval[:cfg.sound_size]

    # 2. as reported: unclipped FGSM, gradient on one draw, accuracy on another
    as_reported: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        r = _as_reported(cfg, name, model, ckpts[name], x_eval, y_eval, results)
        as_reported[name] = r
    names = [DISPLAY[n] for n in models]
    fig_bar = bar_chart(names, {"clean (measured)": [as_reported[n]["clean"]["acc"]
                                                     for n in models],
                                "FGSM as reported (measured)":
                                    [as_reported[n]["fgsm"]["acc"] for n in models],
                                "FGSM (report)": [REPORTED[n][1] for n in models],
                                "FGSM, finite gradients (measured)":
                                    [(as_reported[n]["fgsm_finite"] or {}).get("acc")
                                     for n in models]},
                        figs / "accuracy_bar.png", title=f"Clean vs FGSM accuracy, eps {cfg.eps}",
                        ylabel="accuracy (%)", percent=True)

    # 3. image grids for a plain and a VOne model: what the student saw
    grid_figs = []
    for name in [n for n in ("mnist-cnn", "vone-mnist-cnn") if n in models] or list(models)[:2]:
        model = models[name]
        xs, ys = x_eval[:cfg.grid_images], y_eval[:cfg.grid_images]
        _reseed(model, cfg.seed + 2)
        with _student_protocol():
            xa = cfg.as_reported_attack()(model, xs, ys)
        _reseed(model, cfg.seed + 3)
        moved = 100 * float((xa != xs).float().mean())
        grid_figs.append(image_grid(xs.cpu(), xa.cpu(), figs / f"grid_{name}.png",
                                    orig_labels=predict(model, xs).cpu().tolist(),
                                    adv_labels=predict(model, xa).cpu().tolist(),
                                    true_labels=ys.cpu().tolist(), show_perturbation=True,
                                    title=f"{DISPLAY[name]}: the student's FGSM, eps {cfg.eps} "
                                          f"(clipped); {moved:.0f} % of pixels moved"))

    # 4. adversarial fine-tuning (the report's protocol) of every model
    ft_ckpts: dict[str, Path] = {}
    curves: dict[str, list[dict[str, Any]]] = {}
    for name in _progress(list(models), enabled=progress, desc="finetune"):
        d = _finetuned(cfg, name, ckpts[name], cache_root, progress)
        ft_ckpts[name] = d
        from advlab.train.checkpoint import read_card
        curves[name] = read_card(d)["curves"]
    panels = {DISPLAY[n]: {"clean": ([r["epoch"] for r in c], [100 * r["clean_acc"] for r in c]),
                           "FGSM": ([r["epoch"] for r in c], [100 * r["adv_acc"] for r in c])}
              for n, c in curves.items()}
    fig_ft = multi_line_grid(panels, figs / "finetune_curves.png",
                             title=f"Adversarial fine-tuning (FGSM eps {cfg.eps}, as reported)",
                             xlabel="epoch", ylabel="test accuracy (%)", percent=True)

    # 5. the sound evaluation of every base and fine-tuned model
    sound: dict[str, dict[str, Any]] = {}
    sweeps: dict[str, list[float]] = {}
    ft_models = {n: load_checkpoint(p, device)[0] for n, p in ft_ckpts.items()}
    work = [(n, False) for n in models] + [(n, True) for n in models]
    for name, tuned in _progress(work, enabled=progress, desc="sound evaluation"):
        model = ft_models[name] if tuned else models[name]
        label = f"{name}{' (fine-tuned)' if tuned else ''}"
        ck = ft_ckpts[name] if tuned else ckpts[name]
        sound[label] = _sound(cfg, name, model, ck, models, ckpts, x_s, y_s, results, tensors)
        if not tuned:
            sweeps[name] = _sweep(cfg, name, model, ck, ckpts, x_s, y_s, results, tensors)
    fig_sweep = line_plot(list(cfg.sweep), {DISPLAY[n]: v for n, v in sweeps.items()},
                          figs / "eps_sweep.png",
                          title="Accuracy under APGD-CE (EOT over the noise) vs eps",
                          xlabel="eps (Linf)", ylabel="accuracy (%)", percent=True)

    # 6. audits of the VOne models
    audits: dict[str, Any] = {}
    if audit:
        for name in _audited(cfg):
            for twin in (False, True):
                label = f"{DISPLAY[name]} ({'finite-gradient twin' if twin else 'student-exact'})"
                audits[label] = _audit(cfg, models[name], ckpts[name], x_s, y_s, results, twin)

    # 7. tables and the report
    tables = _tables(cfg, models, x_eval.shape[0], as_reported, sound, sweeps, curves, audits)
    for key, t in tables.items():
        t.to_csv(out / f"{key}.csv")
        t.to_json(out / f"{key}.json")

    verdicts = _claims(cfg, as_reported, sound, audits)
    elapsed = _write_report(cfg, out, tables, verdicts, fig_bar, grid_figs, fig_ft, fig_sweep,
                            audits, t_start)
    summary = {"as_reported": as_reported, "sound": sound, "sweeps": sweeps, "curves": curves,
               "audits": audits, "claims": verdicts, "seconds": elapsed,
               "report": str(out / "report.html"), "result_computations": results.calls,
               "tensor_computations": tensors.calls}
    atomic_write_json(out / "results.json", summary)
    return summary


def _share_work(cfg: VoneNetConfig, cache_root: Path, *, progress: bool,
                audit: bool) -> tuple[int, int]:
    """This rank's share of the work items, computed into the shared cache in three phases
    with a barrier after each: the trainings; everything that needs only the trained models
    (as-reported, fine-tuning, sound evaluation, sweep, audit); the sound evaluation of the
    fine-tuned models. Items are whole (one model's evaluation draws its noise exactly as in
    one process) and distinct (no two ranks write the same cache entry). Returns the numbers
    of results and tensors all ranks computed (on rank 0; (0, 0) elsewhere)."""
    from advlab.evaluate.distributed import (
        barrier,
        check_shared_dir,
        deal,
        gather_results,
        get_rank,
        get_world_size,
    )

    rank, world = get_rank(), get_world_size()
    check_shared_dir(cache_root)
    results = Store(cache_root / "results")
    tensors = Store(cache_root / "tensors", "safetensors")
    device = torch.device(cfg.device)

    def phase(desc: str, items: list[tuple[float, Any]]) -> None:
        owners = deal([cost for cost, _ in items], world)
        mine = [fn for (_, fn), r in zip(items, owners, strict=True) if r == rank]
        for fn in _progress(mine, enabled=progress, desc=f"{desc} (rank {rank}/{world})"):
            fn()
        barrier()

    def weight(name: str) -> float:  # rough relative cost of a model's items
        return 8.0 if name == "mnist-alexnet" or name.startswith("vone-") else 1.0

    def train(name: str) -> Path:
        return ensure_trained(cfg.train_config(name), cache_root, progress=progress)

    phase("train", [(weight(n), lambda n=n: train(n)) for n in cfg.models])
    ckpts = {n: train(n) for n in cfg.models}  # all cached now
    models = {n: load_checkpoint(p, device)[0] for n, p in ckpts.items()}
    x_eval, y_eval = load_split("test", cfg.eval_size, None, device)
    x_s, y_s = x_eval[:cfg.sound_size], y_eval[:cfg.sound_size]
    items: list[tuple[float, Any]] = []
    for n in cfg.models:
        w = weight(n)
        m, ck = models[n], ckpts[n]
        items += [
            (w, lambda n=n, m=m, ck=ck: _as_reported(cfg, n, m, ck, x_eval, y_eval, results)),
            (2 * w, lambda n=n, ck=ck: _finetuned(cfg, n, ck, cache_root, progress)),
            (4 * w, lambda n=n, m=m, ck=ck: _sound(cfg, n, m, ck, models, ckpts, x_s, y_s,
                                                   results, tensors)),
            (2 * w, lambda n=n, m=m, ck=ck: _sweep(cfg, n, m, ck, ckpts, x_s, y_s, results,
                                                   tensors))]
        if audit and n in _audited(cfg):
            items += [(4 * w, lambda m=m, ck=ck, t=t: _audit(cfg, m, ck, x_s, y_s, results, t))
                      for t in (False, True)]
    phase("evaluate", items)

    def tuned(n: str) -> None:
        ck = _finetuned(cfg, n, ckpts[n], cache_root, progress)  # cached now
        _sound(cfg, n, load_checkpoint(ck, device)[0], ck, models, ckpts, x_s, y_s, results,
               tensors)

    phase("evaluate fine-tuned", [(4 * weight(n), lambda n=n: tuned(n)) for n in cfg.models])
    counts = gather_results((results.calls, tensors.calls))
    if counts is None:
        return 0, 0
    return sum(c[0] for c in counts), sum(c[1] for c in counts)
