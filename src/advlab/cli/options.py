"""The options every command shares, parsed and checked in one place.

One rule per concept: an eps (``0.3`` or ``16/255``), a device, a model reference (checkpoint
directory or registry name), an output directory, ``KEY=VALUE`` model arguments, and the attack
options that build an :class:`~advlab.attacks.Attack`. Every command uses these, so a bad value
gets the same one-line message wherever it is typed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("advlab")

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


# -- shared option groups ----------------------------------------------------------------
def parse_kv(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    try:
        val = json.loads(v)
    except json.JSONDecodeError:
        val = v
    return k, val


def parse_names(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected names separated by commas, got {text!r}")
    return names


def parse_eps(text: str) -> float:
    """``0.3`` or ``16/255``: a finite number >= 0."""
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            value = float(num) / float(den)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"eps must be a number like 0.3 or 16/255, got "
                                         f"{text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"eps must be a finite number >= 0, got {text!r}")
    return value


def parse_eps_list(text: str) -> list[float]:
    return [parse_eps(t.strip()) for t in text.split(",")]


def parse_budget(text: str) -> float:
    """An eps for an experiment on [0, 1] pixels: parsed like :func:`parse_eps`, then
    :func:`advlab._check.pixel_budget` (in (0, 1])."""
    from advlab._check import pixel_budget

    try:
        return pixel_budget("eps", parse_eps(text))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_attack_options(p: argparse.ArgumentParser, default_attack: str = "fgsm",
                        default_eps: float | None = 0.35, *, multi: bool = False) -> None:
    """The attack options. ``multi=True``: ``--attack`` and ``--eps`` take comma lists and
    repeat (``args.attack`` / ``args.eps`` are then lists, None when not given)."""
    g = p.add_argument_group("attack")
    if multi:
        g.add_argument("--attack", action="append", default=None, type=parse_names,
                       metavar="NAME[,NAME...]",
                       help=f"attack names, comma-separated or repeated: {_ATTACK_NAMES} "
                            f"(default {default_attack})")
        g.add_argument("--eps", action="append", default=None, type=parse_eps_list,
                       metavar="EPS[,EPS...]",
                       help="budgets in pixel units ([0,1] images), comma-separated or "
                            f"repeated; 16/255 is accepted (default {default_eps})")
    else:
        g.add_argument("--attack", default=default_attack,
                       help=f"attack name: {_ATTACK_NAMES} (default {default_attack})")
        g.add_argument("--eps", type=parse_eps, default=default_eps,
                       help=f"perturbation budget in [0,1] pixel units (default {default_eps})")
    g.add_argument("--norm", default="linf", choices=["linf", "l2", "l1"])
    g.add_argument("--steps", type=int, default=None, help="iterations T (attack default)")
    g.add_argument("--alpha", type=float, default=None, help="step size (default eps/T)")
    g.add_argument("--decay", type=float, default=None, help="momentum mu (MI-FGSM: 1.0)")
    g.add_argument("--restarts", type=int, default=1, help="random restarts (PGD)")
    g.add_argument("--loss", default="ce", choices=["ce", "cw"])
    g.add_argument("--eot", type=int, default=1, help="EOT gradient samples per step")
    g.add_argument("--no-clip", action="store_true",
                   help="do not clip to [0,1] (only to reproduce flawed evaluations)")
    g.add_argument("--attack-seed", type=int, default=0, help="seed of random starts")
    t = p.add_argument_group("transfer-attack pieces (any gradient attack; default: the "
                             "attack's own, off for fgsm .. nifgsm)")
    t.add_argument("--diversity-prob", type=float, default=None,
                   help="DI: probability of a random resize + pad per step (difgsm: 0.5)")
    t.add_argument("--resize-rate", type=float, default=None,
                   help="DI: output size / input size (0.9 shrinks and pads back; the "
                        "paper's 1.1 enlarges and needs a model with global pooling)")
    t.add_argument("--scale-copies", type=int, default=None,
                   help="SI: gradient averaged over x / 2^i, i < m (sinifgsm: 5)")
    t.add_argument("--admix-copies", type=int, default=None,
                   help="Admix: admixed images per step (admix: 3)")
    t.add_argument("--admix-strength", type=float, default=None,
                   help="Admix: eta of x + eta * x' (0.2)")
    t.add_argument("--kernel-size", type=int, default=None,
                   help="TI: Gaussian kernel size for the gradient (tifgsm: 15; 0 off)")
    t.add_argument("--kernel-nsig", type=float, default=None,
                   help="TI: the kernel spans [-nsig, nsig] standard deviations (3)")
    t.add_argument("--variance-samples", type=int, default=None,
                   help="VMI/VNI: neighbours N of variance tuning (vmifgsm: 20; 0 off)")
    t.add_argument("--variance-beta", type=float, default=None,
                   help="VMI/VNI: neighbours drawn from U(-beta eps, beta eps) (1.5)")


_TRANSFER_OPTIONS = ("diversity_prob", "resize_rate", "scale_copies", "admix_copies",
                     "admix_strength", "kernel_size", "kernel_nsig", "variance_samples",
                     "variance_beta")
_ATTACK_NAMES = ("fgsm, ifgsm (bim), pgd, mifgsm, nifgsm, difgsm, dimifgsm, tifgsm, "
                 "timifgsm, tidimifgsm, sinifgsm, vmifgsm, vnifgsm, admix, apgd, apgddlr, "
                 "apgdt, square, randomnoise")


_OPTION_DEFAULTS: dict[str, Any] = {"restarts": 1, "loss": "ce", "eot_samples": 1, "clip": True}
_OPTION_FLAGS = {"eot_samples": "eot", "clip": "no-clip"}


def attack_from_args(args: argparse.Namespace):
    """Build the :class:`~advlab.attacks.Attack` that the attack options describe."""
    from advlab.attacks import attack_class, create_attack

    kw: dict[str, Any] = {"eps": args.eps, "norm": args.norm, "restarts": args.restarts,
                          "loss": args.loss, "eot_samples": args.eot, "clip": not args.no_clip,
                          "seed": args.attack_seed, "steps": args.steps, "alpha": args.alpha,
                          "decay": args.decay}
    kw.update({k: getattr(args, k, None) for k in _TRANSFER_OPTIONS})
    # Options an attack does not have (e.g. --restarts for the gradient-free Square Attack) are
    # dropped while they hold the command line's default, and refused when set.
    fields = {f.name for f in dataclasses.fields(attack_class(args.attack))}
    for key in [k for k in kw if k not in fields]:
        value = kw.pop(key)
        if value is not None and value != _OPTION_DEFAULTS.get(key):
            flag = _OPTION_FLAGS.get(key, key.replace("_", "-"))
            raise SystemExit(f"error: --{flag} does not apply to attack {args.attack!r} "
                             f"(got {value!r})")
    return create_attack(args.attack, **{k: v for k, v in kw.items()
                                         if v is not None or k == "seed"})


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument("--data-root", default=None, help="folder with the MNIST IDX files "
                   "(default: $ADVLAB_DATA, then the copy bundled with advlab)")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    add_progress_options(p)
    p.add_argument("-v", "--verbose", action="store_true", help="log more")


def add_progress_options(p: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress`` (default: bars only when stderr is a terminal)."""
    if "--progress" in p._option_string_actions:
        return
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", action="store_true",
                   help="show progress bars even when stderr is not a terminal")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars on? ``--progress`` forces them, ``--no-progress`` hides them, and by
    default they are drawn only when stderr is a terminal, so that the log of a redirected
    run does not fill with bar redraws."""
    if getattr(args, "progress", False):
        return True
    if getattr(args, "no_progress", False):
        return False
    return sys.stderr.isatty()


def load_model(spec: str, device: str, model_args: list[tuple[str, Any]] | None = None):
    """A checkpoint directory, or a registry name (freshly created, untrained)."""
    from advlab.models import create, list_models
    from advlab.train.checkpoint import load_checkpoint

    if Path(spec).exists():
        model, card = load_checkpoint(spec, device, dict(model_args or []))
        return model, card["model"], card
    if spec in list_models():
        log.warning("%s is a registry name: attacking a freshly created, UNTRAINED model", spec)
        import torch

        torch.manual_seed(0)
        return create(spec, **dict(model_args or [])).to(device).eval(), spec, None
    raise SystemExit(f"error: {spec!r} is neither a checkpoint directory nor a model name "
                     f"({', '.join(list_models())})")


def attack_json(atk) -> dict[str, Any]:
    d = {f.name: getattr(atk, f.name) for f in dataclasses.fields(atk)}
    d["norm"] = atk.norm.value
    d["name"] = atk.name
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in d.items()}



def check_out_dir(out: Path) -> None:
    """Fail before any work if ``out`` cannot become a directory we can write into."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is an existing file: --out must be a directory")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--out {str(out)!r}: {str(existing)!r} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"--out {str(out)!r}: cannot write into {str(existing)!r}")


def torchrun_env() -> bool:
    return all(k in os.environ for k in TORCHRUN_ENV)


def resolve_device(spec: str, distributed: bool) -> Any:
    """The device named by ``--device`` (checked); under torchrun ``cuda`` means
    ``cuda:LOCAL_RANK``, filled in by :func:`~advlab.evaluate.distributed.init_from_env`."""
    import torch

    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device must be a torch device such as cpu or cuda, got "
                         f"{spec!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {spec!r}: CUDA is not available on this machine")
    if distributed:
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"--device {spec!r}: under torchrun use cpu (gloo) or cuda "
                             f"(nccl, one GPU per process)")
        if dev.type == "cuda" and dev.index is not None:
            raise ValueError(f"--device {spec!r}: under torchrun give plain cuda; each process "
                             f"uses cuda:LOCAL_RANK (pick GPUs with CUDA_VISIBLE_DEVICES)")
    return dev


def check_data_root(root: str | None) -> None:
    """Fail before any work if the MNIST folder named by ``--data-root`` (or
    ``$ADVLAB_DATA``) does not hold the MNIST files: a folder the user names is never
    silently replaced by the bundled copy."""
    from advlab.data.mnist import MNISTNotFoundError, locate_mnist

    try:
        locate_mnist("test", root=root)
    except MNISTNotFoundError:
        where = f"--data-root {root!r}" if root is not None else \
            f"$ADVLAB_DATA={os.environ.get('ADVLAB_DATA')!r}"
        raise FileNotFoundError(
            f"{where} holds no MNIST: looked for t10k-images-idx3-ubyte[.gz] in the folder, "
            f"its mnist/ and its MNIST/raw/ (unset it to use the copy bundled with advlab)"
        ) from None
