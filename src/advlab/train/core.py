"""Training and adversarial fine-tuning of zoo models on MNIST, with safe resumable checkpoints.

:func:`fit` trains a registry model with the VOneNet-FGSM report's defaults (Adam, lr 1e-3,
10 epochs, batch 64, cross-entropy). After every epoch it writes, atomically and in this
order, a resume file (weights + optimizer state + epoch, one safetensors file), the weights
and the JSON card. Each epoch's randomness (shuffling, dropout, model noise) is seeded from
``(seed, epoch)``, so a run killed at any point and resumed with ``resume=True`` ends with
the same weights as an uninterrupted run.

:func:`finetune_adversarial` follows the report's protocol: before training and after each
epoch it measures clean and adversarial test accuracy, and each epoch trains on adversarial
examples regenerated against the current model (any attack of :mod:`advlab.attacks`).

Example:
    >>> from advlab.train import TrainConfig, fit
    >>> cfg = TrainConfig("mnist-mlp", epochs=1, train_size=256, test_size=256)
    >>> result = fit(cfg, "runs/doc-mlp", progress=False)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
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

from advlab._check import positive_int, positive_number
from advlab._io import atomic_write_bytes, atomic_write_text, bytes_to_state, state_to_bytes
from advlab._progress import progress as _progress
from advlab.attacks.base import Attack
from advlab.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    read_card,
    save_checkpoint,
)

__all__ = ["TrainConfig", "FinetuneConfig", "TrainResult", "fit", "finetune_adversarial",
           "load_split", "evaluate_accuracy", "QUICK", "quick_profile"]

log = logging.getLogger(__name__)

RESUME = "resume.safetensors"

#: The ``--quick`` profile: a subset of the data and fewer epochs, for smoke runs (the sizes of
#: the plain report models; heavier models declare smaller subsets, see :func:`quick_profile`).
QUICK: dict[str, Any] = {"epochs": 2, "train_size": 20000, "test_size": None}


def quick_profile(model: str, **model_kwargs: Any) -> dict[str, Any]:
    """The ``--quick`` training settings of a zoo model: two epochs on the subset its registry
    entry declares, so that the run takes under two minutes on a 2-core CPU.

    Example:
        >>> quick_profile("mnist-cnn")
        {'epochs': 2, 'train_size': 20000, 'test_size': None}
        >>> quick_profile("vone-mnist-cnn")
        {'epochs': 2, 'train_size': 6000, 'test_size': 2000}
    """
    from advlab.models import model_info

    info = model_info(model, **model_kwargs)
    return {"epochs": QUICK["epochs"], "train_size": info.quick_train_size,
            "test_size": info.quick_test_size}


def check_training_fields(cfg: Any) -> None:
    """The checks every training config shares (:class:`TrainConfig` and
    :class:`~advlab.train.advtrain.AdvTrainConfig`): a registered model, integer sizes >= 1,
    a learning rate > 0."""
    from advlab.models import list_models

    if cfg.model not in list_models():
        raise ValueError(f"unknown model {cfg.model!r}; expected one of {list_models()}")
    positive_int("epochs", cfg.epochs)
    positive_int("batch_size", cfg.batch_size)
    positive_int("eval_batch_size", cfg.eval_batch_size)
    positive_int("train_size", cfg.train_size, allow_none=True)
    positive_int("test_size", cfg.test_size, allow_none=True)
    positive_number("lr", cfg.lr)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (saved in the checkpoint card)."""

    model: str
    model_kwargs: dict[str, Any] = field(default_factory=dict)
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

    def identity(self) -> dict[str, Any]:
        """The fields that must match for a resume (device and epochs may change)."""
        d = dataclasses.asdict(self)
        for k in ("device", "epochs", "eval_batch_size", "data_root"):
            d.pop(k)
        return d


@dataclass(frozen=True)
class FinetuneConfig:
    """Adversarial fine-tuning settings (defaults: the report's Adam lr 1e-4)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-4
    seed: int = 0
    train_size: int | None = None
    test_size: int | None = None
    device: str = "cpu"
    eval_batch_size: int = 500
    data_root: str | None = None

    def __post_init__(self) -> None:
        positive_int("epochs", self.epochs)
        positive_int("batch_size", self.batch_size)
        positive_int("train_size", self.train_size, allow_none=True)
        positive_int("test_size", self.test_size, allow_none=True)
        positive_number("lr", self.lr)


@dataclass
class TrainResult:
    """Metrics per epoch and where the checkpoint is."""

    checkpoint: Path
    metrics: list[dict[str, Any]]
    resumed_from: int = 0


def load_split(split: str, size: int | None, root: str | None,
               device: str | torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST ``split`` (first ``size`` examples) on ``device``."""
    from advlab.data import load_mnist

    x, y = load_mnist(split, root=root)
    if size is not None:
        if size > x.shape[0]:
            raise ValueError(f"{split}_size must be <= {x.shape[0]}, got {size}")
        x, y = x[:size], y[:size]
    return x.to(device), y.to(device)


def epoch_seed(seed: int, epoch: int, salt: str = "") -> int:
    h = hashlib.sha256(f"{seed}/{epoch}/{salt}".encode()).digest()
    return int.from_bytes(h[:7], "little")


def seed_everything(model: nn.Module, seed: int) -> None:
    """Seed the global RNG (dropout) and any module noise generator for one epoch."""
    torch.manual_seed(seed)
    for m in model.modules():
        fn = getattr(m, "reseed_noise", None)
        if callable(fn):
            fn(seed)


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      batch_size: int = 1000) -> float:
    """Clean accuracy in eval mode (the mode is restored)."""
    from advlab.evaluate import predict

    return float((predict(model, x, batch_size) == y).float().mean())


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], str]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt/{pid}/{k}"] = v
            else:
                scalars.setdefault(str(pid), {})[k] = v
    meta = json.dumps({"param_groups": sd["param_groups"], "scalars": scalars})
    return tensors, meta


def restore_optimizer(opt: torch.optim.Optimizer, state: dict[str, torch.Tensor],
                       meta: str) -> None:
    info = json.loads(meta)
    st: dict[int, dict[str, Any]] = {}
    for key, v in state.items():
        if key.startswith("opt/"):
            _, pid, k = key.split("/", 2)
            st.setdefault(int(pid), {})[k] = v
    for pid, sc in info["scalars"].items():
        st.setdefault(int(pid), {}).update(sc)
    opt.load_state_dict({"state": st, "param_groups": info["param_groups"]})


def write_resume(out: Path, model: nn.Module, opt: torch.optim.Optimizer, epoch: int,
                  metrics: list[dict[str, Any]], identity: dict[str, Any]) -> None:
    tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
    opt_t, opt_meta = optimizer_tensors(opt)
    tensors.update(opt_t)
    meta = {"epoch": str(epoch), "optimizer": opt_meta, "metrics": json.dumps(metrics),
            "identity": json.dumps(identity, sort_keys=True)}
    atomic_write_bytes(out / RESUME, state_to_bytes(tensors, meta))


def read_resume(out: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    p = out / RESUME
    if not p.is_file():
        return None
    from safetensors import safe_open

    state = bytes_to_state(p.read_bytes(), str(p), CheckpointError)
    with safe_open(str(p), framework="pt") as f:
        meta = f.metadata()
    return state, meta


def train_data_checksum() -> str:
    from advlab.data import data_checksum

    return data_checksum("train")


def fit(cfg: TrainConfig, out_dir: str | os.PathLike[str], *, resume: bool = False,
        progress: bool = True, stop_after: int | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Train ``cfg.model`` on MNIST and checkpoint into ``out_dir`` after every epoch.

    Args:
        cfg: the :class:`TrainConfig`.
        out_dir: checkpoint directory (created).
        resume: continue from the last completed epoch found in ``out_dir``; the config must
            match the one that wrote it.
        stop_after: stop after this many epochs in this call (simulates a killed run).
        on_epoch: called with each epoch's metrics.
    """
    from advlab.models import create

    out = Path(out_dir)
    if out.exists() and not resume and (out / RESUME).exists():
        raise FileExistsError(f"{out} already holds a training run; pass resume=True to "
                              f"continue it or choose another directory")
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = create(cfg.model, **cfg.model_kwargs).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    metrics: list[dict[str, Any]] = []
    start = 0
    identity = cfg.identity()
    if resume:
        saved = read_resume(out)
        if saved is not None:
            state, meta = saved
            if json.loads(meta["identity"]) != json.loads(json.dumps(identity, sort_keys=True)):
                raise ValueError(f"cannot resume {out}: it was trained with "
                                 f"{meta['identity']}, not {json.dumps(identity)}")
            model.load_state_dict({k[6:]: v for k, v in state.items()
                                   if k.startswith("model/")})
            restore_optimizer(opt, {k: v.to(device) for k, v in state.items()}, meta["optimizer"])
            start = int(meta["epoch"])
            metrics = json.loads(meta["metrics"])
            log.info("resuming %s after epoch %d", out, start)

    x_tr, y_tr = load_split("train", cfg.train_size, cfg.data_root, device)
    x_te, y_te = load_split("test", cfg.test_size, cfg.data_root, device)
    n = x_tr.shape[0]
    done_now = 0
    for epoch in range(start, cfg.epochs):
        if stop_after is not None and done_now >= stop_after:
            break
        es = epoch_seed(cfg.seed, epoch)
        seed_everything(model, es)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(es)).to(device)
        model.train()
        t0 = time.perf_counter()
        tot_loss, tot_correct = 0.0, 0
        batches = range(0, n, cfg.batch_size)
        for i in _progress(batches, enabled=progress, desc=f"{cfg.model} epoch {epoch + 1}",
                           total=len(batches)):
            idx = perm[i:i + cfg.batch_size]
            xb, yb = x_tr[idx], y_tr[idx]
            opt.zero_grad(set_to_none=True)
            logits = model(xb)
            loss = F.cross_entropy(logits, yb)
            loss.backward()
            opt.step()
            tot_loss += float(loss.detach()) * yb.shape[0]
            tot_correct += int((logits.detach().argmax(1) == yb).sum())
        seconds = time.perf_counter() - t0
        opt.zero_grad(set_to_none=True)
        model.eval()
        row = {"epoch": epoch + 1, "train_loss": tot_loss / n, "train_acc": tot_correct / n,
               "test_acc": evaluate_accuracy(model, x_te, y_te, cfg.eval_batch_size),
               "seconds": seconds, "images_per_s": n / seconds}
        metrics.append(row)
        log.info("epoch %d: %s", epoch + 1, row)
        if on_epoch is not None:
            on_epoch(row)
        write_resume(out, model, opt, epoch + 1, metrics, identity)
        save_checkpoint(out, model, cfg.model, cfg.model_kwargs, {
            "train_config": dataclasses.asdict(cfg), "data_checksum": train_data_checksum(),
            "seed": cfg.seed, "epochs_completed": epoch + 1, "metrics": metrics,
        })
        done_now += 1
    return TrainResult(checkpoint=out, metrics=metrics, resumed_from=start)


def finetune_adversarial(checkpoint: str | os.PathLike[str], attack: Attack,
                         cfg: FinetuneConfig, out_dir: str | os.PathLike[str], *,
                         progress: bool = True, eval_attack: Attack | None = None,
                         ) -> TrainResult:
    """Fine-tune a checkpoint on adversarial examples (the VOneNet-FGSM report's protocol).

    Row 0 of the curves is the model before fine-tuning; row ``e`` is after epoch ``e``.
    Each row holds the clean and adversarial test accuracy, the adversarial examples being
    crafted by ``eval_attack`` (default ``attack``) against the current model. The curves
    are returned and written as ``curves.csv``, the model as a checkpoint (``advlab finetune``
    also draws them as ``curves.png``).
    """
    card = read_card(checkpoint)
    device = torch.device(cfg.device)
    model, _ = load_checkpoint(checkpoint, device)
    eval_attack = eval_attack or attack
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x_tr, y_tr = load_split("train", cfg.train_size, cfg.data_root, device)
    x_te, y_te = load_split("test", cfg.test_size, cfg.data_root, device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)

    def adv_acc() -> float:
        correct = 0
        for i in range(0, x_te.shape[0], cfg.eval_batch_size):
            xb, yb = x_te[i:i + cfg.eval_batch_size], y_te[i:i + cfg.eval_batch_size]
            xa = eval_attack.run(model, xb, yb, generator=gen).x_adv
            correct += int((_predict(model, xa) == yb).sum())
        return correct / x_te.shape[0]

    def row(epoch: int, train_loss: float | None, seconds: float) -> dict[str, Any]:
        return {"epoch": epoch, "clean_acc": evaluate_accuracy(model, x_te, y_te,
                                                               cfg.eval_batch_size),
                "adv_acc": adv_acc(), "train_loss": train_loss, "seconds": seconds}

    # row 0 from seeded noise too: the curves must not depend on what the process ran before
    # (a randomised model's noise seed is drawn from the global RNG when it is loaded)
    seed_everything(model, epoch_seed(cfg.seed, 0, "finetune-before"))
    curves = [row(0, None, 0.0)]
    n = x_tr.shape[0]
    for epoch in range(cfg.epochs):
        es = epoch_seed(cfg.seed, epoch, "finetune")
        seed_everything(model, es)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(es)).to(device)
        t0 = time.perf_counter()
        tot = 0.0
        batches = range(0, n, cfg.batch_size)
        for i in _progress(batches, enabled=progress, desc=f"finetune epoch {epoch + 1}",
                           total=len(batches)):
            idx = perm[i:i + cfg.batch_size]
            xb, yb = x_tr[idx], y_tr[idx]
            xa = attack.run(model, xb, yb, generator=gen).x_adv  # against the current model
            model.train()
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xa), yb)
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * yb.shape[0]
        opt.zero_grad(set_to_none=True)
        model.eval()
        curves.append(row(epoch + 1, tot / n, time.perf_counter() - t0))
        log.info("finetune epoch %d: %s", epoch + 1, curves[-1])
    header = ["epoch", "clean_acc", "adv_acc", "train_loss", "seconds"]
    lines = [",".join(header)] + [",".join("" if r[h] is None else f"{r[h]:.6g}"
                                          for h in header) for r in curves]
    atomic_write_text(out / "curves.csv", "\n".join(lines) + "\n")
    save_checkpoint(out, model, card["model"], card.get("model_kwargs", {}), {
        "finetune_config": dataclasses.asdict(cfg), "parent": str(Path(checkpoint)),
        "attack": _attack_dict(attack), "curves": curves, "seed": cfg.seed,
        "data_checksum": train_data_checksum(),
    })
    return TrainResult(checkpoint=out, metrics=curves)


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    from advlab.evaluate import predict

    return predict(model, x)


def _attack_dict(attack: Attack) -> dict[str, Any]:
    d = {f.name: getattr(attack, f.name) for f in dataclasses.fields(attack)}
    d["norm"] = attack.norm.value
    d["name"] = attack.name
    if isinstance(d["eps"], torch.Tensor):
        d["eps"] = d["eps"].tolist()
    if callable(d["loss"]):
        d["loss"] = getattr(d["loss"], "__name__", "custom")
    return d


__all__ += ["CheckpointError"]
