"""Ensemble adversarial training (Tramer et al., "Ensemble Adversarial Training: Attacks and
Defenses", ICLR 2018) of zoo models on MNIST, with resumable checkpoints.

Each training batch of ``m`` examples is split: a fraction ``adv_fraction`` (Tramer et al.
and Kurakin et al. 2017 use one half) is replaced by FGSM examples, the rest stays clean.
The FGSM examples are crafted from one *source* per batch: either the model being trained
(standard adversarial training) or one of several **static** pre-trained models whose
weights never change. Decoupling the adversarial examples from the model being trained is
what makes the defence hold better against transferred (black-box) attacks: the model sees
perturbations that a different model found, the kind a black-box attacker sends.

The source of each batch is chosen by ``schedule``:

* ``"rotate"`` -- the current model and the static models take turns, batch after batch
  (source index = global batch index mod number of sources), so each contributes equally;
* ``"random"`` -- drawn uniformly per batch from a generator seeded by ``(seed, epoch)``.

The loss is Kurakin et al.'s weighted mean (``k`` adversarial examples in a batch of ``m``)::

    L = (sum_clean CE + lambda * sum_adv CE) / ((m - k) + lambda * k)

with ``lambda = adv_weight`` (default 1: a plain mean over the batch; Kurakin et al. used
0.3). FGSM labels are the true labels, or with ``labels="pred"`` the source's own clean
prediction (Kurakin et al.'s remedy for *label leaking*, where an FGSM-trained model becomes
more accurate on adversarial than on clean inputs because the perturbation encodes the label).

Budget: Tramer et al. train with ``eps = 16/255`` on ImageNet, the budget the attacks are
then evaluated at. On MNIST the standard L-inf budget is ``eps = 0.3`` (Madry et al. 2018),
the default here; an experiment should train its defenders at the eps it attacks with
(the momentum experiment does), so the defence is tested inside its own threat model.

Caveat (REFERENCE section 4): FGSM-only adversarial training can mask gradients; these models
reproduce the *role* of Tramer's defended models in a transfer study, they are not
certified robust. Judge them with iterative white-box attacks before trusting them.

Everything determining a run is a frozen :class:`AdvTrainConfig`; :func:`adv_train` writes a
resume file after every epoch (each epoch's randomness seeded from ``(seed, epoch)``), so a
killed run resumed with ``resume=True`` ends with the same weights as an uninterrupted one.
The checkpoint card records the static models (path, architecture, weight hash, training
config) and the whole configuration.

Example:
    >>> from advlab.train.advtrain import AdvTrainConfig
    >>> cfg = AdvTrainConfig("mnist-cnn", static=("runs/mnist-mlp",), eps=0.3, epochs=1)
    >>> cfg.schedule, cfg.adv_fraction
    ('rotate', 0.5)
    >>> result = adv_train(cfg, "runs/mnist-cnn-ens")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab._check import pixel_budget, positive_number
from advlab._progress import progress as _progress
from advlab.attacks.presets import FGSM
from advlab.train.checkpoint import load_checkpoint, read_card, save_checkpoint
from advlab.train.core import (
    RESUME,
    TrainResult,
    check_training_fields,
    epoch_seed,
    evaluate_accuracy,
    load_split,
    read_resume,
    restore_optimizer,
    seed_everything,
    train_data_checksum,
    write_resume,
)

__all__ = ["AdvTrainConfig", "adv_train", "SCHEDULES", "METHOD"]

log = logging.getLogger(__name__)

SCHEDULES = ("rotate", "random")
METHOD = "ensemble adversarial training (Tramer et al., ICLR 2018)"
SELF = "self"


@dataclass(frozen=True)
class AdvTrainConfig:
    """Everything that determines an ensemble adversarial training run.

    Args:
        model: registry name of the architecture trained (from scratch).
        static: checkpoint directories of the static pre-trained models (may be empty: then
            it is plain FGSM adversarial training on the model itself).
        model_kwargs: keyword arguments of the architecture.
        eps: L-inf budget of the FGSM examples (pixels in [0, 1]).
        adv_fraction: fraction of each batch replaced by adversarial examples (0, 1].
        adv_weight: weight lambda of the adversarial examples in the loss (> 0).
        schedule: ``"rotate"`` or ``"random"`` choice of the source per batch.
        include_self: the current model is one of the sources (Tramer et al.: yes).
        labels: ``"true"`` or ``"pred"``: labels given to FGSM.
        epochs, batch_size, lr, seed, train_size, test_size, device, eval_batch_size,
        data_root: as in :class:`advlab.train.TrainConfig` (Adam).
    """

    model: str
    static: tuple[str, ...] = ()
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    eps: float = 0.3
    adv_fraction: float = 0.5
    adv_weight: float = 1.0
    schedule: str = "rotate"
    include_self: bool = True
    labels: str = "true"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    train_size: int | None = None
    test_size: int | None = None
    device: str = "cpu"
    eval_batch_size: int = 1000
    data_root: str | None = None

    def __post_init__(self) -> None:
        check_training_fields(self)
        if isinstance(self.static, (str, os.PathLike)):
            raise TypeError(f"static must be a sequence of checkpoint paths, got the single "
                            f"path {self.static!r}; write static=({str(self.static)!r},)")
        static = tuple(str(p) for p in self.static)
        object.__setattr__(self, "static", static)
        pixel_budget("eps", self.eps)
        if not isinstance(self.adv_fraction, (int, float)) or not (0 < self.adv_fraction <= 1):
            raise ValueError(f"adv_fraction must be in (0, 1], got {self.adv_fraction!r}")
        positive_number("adv_weight", self.adv_weight)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.labels not in ("true", "pred"):
            raise ValueError(f"labels must be 'true' or 'pred', got {self.labels!r}")
        if not self.include_self and not static:
            raise ValueError("no source of adversarial examples: give static checkpoints or "
                             "set include_self=True")

    @property
    def sources(self) -> list[str]:
        """Source names in schedule order: ``"self"`` first (if included), then the statics."""
        return ([SELF] if self.include_self else []) + list(self.static)

    def static_models(self) -> list[dict[str, Any]]:
        """What the card records about each static model (reads their cards)."""
        out = []
        for p in self.static:
            card = read_card(p)
            out.append({"path": str(p), "model": card["model"],
                        "model_kwargs": card.get("model_kwargs", {}),
                        "weights_sha256": card.get("weights_sha256"),
                        "train_config": card.get("train_config")})
        return out

    def identity(self) -> dict[str, Any]:
        """The fields that must match for a resume or a cache hit. Static models count by
        their weights (sha256), not their paths, so a moved checkpoint still matches."""
        d = dataclasses.asdict(self)
        for k in ("device", "epochs", "eval_batch_size", "data_root", "static"):
            d.pop(k)
        d["static_sha256"] = [s["weights_sha256"] for s in self.static_models()]
        return d


def _source_index(cfg: AdvTrainConfig, global_batch: int, gen: torch.Generator) -> int:
    n = len(cfg.sources)
    if cfg.schedule == "rotate":
        return global_batch % n
    return int(torch.randint(0, n, (1,), generator=gen))


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from advlab.evaluate import predict

    return predict(model, x)


def _fgsm_accuracy(target: nn.Module, source: nn.Module, attack: FGSM, x: torch.Tensor,
                   y: torch.Tensor, batch_size: int) -> float:
    """Accuracy of ``target`` on FGSM examples crafted on ``source`` (white-box if equal)."""
    correct = 0
    for i in range(0, x.shape[0], batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        xa = attack.run(source, xb, yb).x_adv
        correct += int((_predict(target, xa) == yb).sum())
    return correct / max(1, x.shape[0])


def adv_train(cfg: AdvTrainConfig, out_dir: str | os.PathLike[str], *, resume: bool = False,
              progress: bool = True, stop_after: int | None = None,
              on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``cfg.model`` from scratch with ensemble adversarial training; checkpoint into
    ``out_dir`` after every epoch (resumable like :func:`advlab.train.fit`).

    Args:
        cfg: the :class:`AdvTrainConfig`.
        out_dir: checkpoint directory (created).
        resume: continue from the last completed epoch found in ``out_dir`` (same config).
        stop_after: stop after this many epochs in this call (simulates a killed run).
        on_epoch: called with each epoch's metrics.

    Per epoch the metrics hold the training loss, clean and adversarial training accuracy,
    how many batches each source supplied, the clean test accuracy, the test accuracy under
    white-box FGSM (from the model itself) and under FGSM transferred from each static model.
    """
    from advlab.models import create

    out = Path(out_dir)
    if out.exists() and not resume and (out / RESUME).exists():
        raise FileExistsError(f"{out} already holds a training run; pass resume=True to "
                              f"continue it or choose another directory")
    statics_info = cfg.static_models()  # fails early on a bad static path
    identity = cfg.identity()
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    statics = []
    for p in cfg.static:
        m, _ = load_checkpoint(p, device)
        m.requires_grad_(False)
        statics.append(m.eval())
    torch.manual_seed(cfg.seed)
    model = create(cfg.model, **cfg.model_kwargs).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    metrics: list[dict[str, Any]] = []
    start = 0
    if resume:
        saved = read_resume(out)
        if saved is not None:
            state, meta = saved
            if json.loads(meta["identity"]) != json.loads(json.dumps(identity, sort_keys=True)):
                raise ValueError(f"cannot resume {out}: it was trained with "
                                 f"{meta['identity']}, not {json.dumps(identity)}")
            model.load_state_dict({k[6:]: v for k, v in state.items()
                                   if k.startswith("model/")})
            restore_optimizer(opt, {k: v.to(device) for k, v in state.items()},
                               meta["optimizer"])
            start = int(meta["epoch"])
            metrics = json.loads(meta["metrics"])
            log.info("resuming %s after epoch %d", out, start)

    x_tr, y_tr = load_split("train", cfg.train_size, cfg.data_root, device)
    x_te, y_te = load_split("test", cfg.test_size, cfg.data_root, device)
    fgsm = FGSM(eps=float(cfg.eps))
    sources = cfg.sources
    n = x_tr.shape[0]
    batches = range(0, n, cfg.batch_size)
    done_now = 0
    for epoch in range(start, cfg.epochs):
        if stop_after is not None and done_now >= stop_after:
            break
        es = epoch_seed(cfg.seed, epoch, "advtrain")
        seed_everything(model, es)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(es)).to(device)
        sched = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch, "advtrain-schedule"))
        model.train()
        t0 = time.perf_counter()
        tot_loss = 0.0
        clean_ok = clean_n = adv_ok = adv_n = 0
        counts = [0] * len(sources)
        for b, i in enumerate(_progress(batches, enabled=progress, total=len(batches),
                                        desc=f"advtrain {cfg.model} epoch {epoch + 1}")):
            idx = perm[i:i + cfg.batch_size]
            xb, yb = x_tr[idx], y_tr[idx]
            m = yb.shape[0]
            k = min(m, max(1, round(cfg.adv_fraction * m)))
            s = _source_index(cfg, epoch * len(batches) + b, sched)
            counts[s] += 1
            src = model if sources[s] == SELF else statics[s - int(cfg.include_self)]
            lab = yb[:k] if cfg.labels == "true" else _predict(src, xb[:k])
            x_adv = fgsm.run(src, xb[:k], lab).x_adv  # eval mode inside; mode restored
            model.train()
            opt.zero_grad(set_to_none=True)
            logits = model(torch.cat([x_adv, xb[k:]]))
            ce = F.cross_entropy(logits, yb, reduction="none")
            lam = float(cfg.adv_weight)
            loss = (lam * ce[:k].sum() + ce[k:].sum()) / (lam * k + (m - k))
            loss.backward()
            opt.step()
            pred = logits.detach().argmax(1)
            tot_loss += float(loss.detach()) * m
            adv_ok += int((pred[:k] == yb[:k]).sum())
            adv_n += k
            clean_ok += int((pred[k:] == yb[k:]).sum())
            clean_n += m - k
        seconds = time.perf_counter() - t0
        opt.zero_grad(set_to_none=True)
        model.eval()
        bs = cfg.eval_batch_size
        row = {
            "epoch": epoch + 1,
            "train_loss": tot_loss / n,
            "train_clean_acc": clean_ok / clean_n if clean_n else None,
            "train_adv_acc": adv_ok / adv_n if adv_n else None,
            "source_batches": dict(zip(sources, counts)),
            "test_acc": evaluate_accuracy(model, x_te, y_te, bs),
            "test_fgsm_acc": _fgsm_accuracy(model, model, fgsm, x_te, y_te, bs),
            "test_fgsm_from_static_acc": {
                p: _fgsm_accuracy(model, st, fgsm, x_te, y_te, bs)
                for p, st in zip(cfg.static, statics)},
            "seconds": seconds,
            "images_per_s": n / seconds,
        }
        metrics.append(row)
        log.info("advtrain epoch %d: %s", epoch + 1, row)
        if on_epoch is not None:
            on_epoch(row)
        write_resume(out, model, opt, epoch + 1, metrics, identity)
        save_checkpoint(out, model, cfg.model, cfg.model_kwargs, {
            "method": METHOD,
            "advtrain_config": dataclasses.asdict(cfg),
            "static_models": statics_info,
            "data_checksum": train_data_checksum(),
            "seed": cfg.seed,
            "epochs_completed": epoch + 1,
            "metrics": metrics,
        })
        done_now += 1
    return TrainResult(checkpoint=out, metrics=metrics, resumed_from=start)
