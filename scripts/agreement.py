"""Measure how far advlab's FGSM, BIM and MI-FGSM are from torchattacks' on a zoo model.

Trains ``mnist-cnn`` for one epoch on 10 000 MNIST images (cached in ``--cache``), then runs
both libraries with the same eps / alpha / steps / decay on the same test images and prints
the largest absolute pixel difference per attack (the acceptance bound is 1e-6).

    pip install --no-deps torchattacks==3.5.1
    python scripts/agreement.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torchattacks

from advlab.attacks import FGSM, IFGSM, MIFGSM
from advlab.train import TrainConfig, fit, load_split
from advlab.train.checkpoint import load_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=256, help="test images (default 256)")
    ap.add_argument("--eps", type=float, default=0.12)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/advlab-agreement"))
    args = ap.parse_args()
    out = args.cache / "mnist-cnn-e1-n10000"
    if not (out / "card.json").exists():
        fit(TrainConfig("mnist-cnn", epochs=1, train_size=10000), out, progress=False)
    model, _ = load_checkpoint(out, "cpu")
    model.eval()
    x, y = load_split("test", args.n, None, "cpu")
    eps, steps = args.eps, args.steps
    alpha = eps / steps
    t = (y + 4) % 10
    targeted = torchattacks.MIFGSM(model, eps=eps, alpha=alpha, steps=steps)
    targeted.set_mode_targeted_by_function(lambda images, labels: t)
    pairs = {
        "FGSM": (FGSM(eps=eps)(model, x, y), torchattacks.FGSM(model, eps=eps)(x, y)),
        "BIM": (IFGSM(eps=eps, steps=steps)(model, x, y),
                torchattacks.BIM(model, eps=eps, alpha=alpha, steps=steps)(x, y)),
        "MI-FGSM mu=1": (MIFGSM(eps=eps, steps=steps)(model, x, y),
                         torchattacks.MIFGSM(model, eps=eps, alpha=alpha, steps=steps)(x, y)),
        "MI-FGSM mu=0.5": (MIFGSM(eps=eps, steps=steps, decay=0.5)(model, x, y),
                           torchattacks.MIFGSM(model, eps=eps, alpha=alpha, steps=steps,
                                               decay=0.5)(x, y)),
        "MI-FGSM targeted": (MIFGSM(eps=eps, steps=steps)(model, x, y, target=t), targeted(x, y)),
    }
    print(f"mnist-cnn, {args.n} MNIST test images, eps {eps}, {steps} steps, alpha eps/T")
    for name, (ours, theirs) in pairs.items():
        d = float((ours - theirs).abs().max())
        print(f"{name:18s} max |advlab - torchattacks| = {d:.3g}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
