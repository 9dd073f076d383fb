"""Attack overhead: time of an attack of T steps / time of T plain forward+backward passes.

The floor for a T-step gradient attack is T forward+backward passes of the model with
respect to the input. This script times both on the same model and batch, alternating the
two in one process, and reports the median ratio.

    python bench/attack_overhead.py --attack mifgsm --batch 256 --repeats 7 \
        --out bench/results/overhead.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import advlab
from advlab.attacks import create_attack


def zoo_cnn() -> nn.Module:
    """The report's Basic-CNN (Conv32-Pool-Conv64-Pool-FC), as in the zoo."""
    try:
        from advlab.models import create
        return create("mnist-cnn")
    except Exception:  # the zoo may be absent in a core-only install
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(3136, 10))


def plain_passes(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    for _ in range(steps):
        xi = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xi), y, reduction="sum")
        torch.autograd.grad(loss, xi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attack", default="mifgsm", help="registered attack name")
    ap.add_argument("--model", default="mnist-cnn", help="zoo model name")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=7, help="alternating runs (median)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model == "mnist-cnn":
        model = zoo_cnn()
    else:
        from advlab.models import create
        model = create(args.model)
    model = model.to(args.device).eval()
    x = torch.rand(args.batch, 1, 28, 28, device=args.device)
    y = torch.randint(0, 10, (args.batch,), device=args.device)
    steps = 1 if args.attack == "fgsm" else args.steps
    atk = create_attack(args.attack, eps=0.3, steps=steps)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    # warm-up
    atk(model, x, y)
    plain_passes(model, x, y, steps)
    t_attack, t_plain = [], []
    for _ in range(args.repeats):
        sync()
        t0 = time.perf_counter()
        plain_passes(model, x, y, steps)
        sync()
        t_plain.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        atk(model, x, y)
        sync()
        t_attack.append(time.perf_counter() - t0)
    ratios = [a / p for a, p in zip(t_attack, t_plain)]
    result = {
        "attack": args.attack, "model": args.model, "batch": args.batch, "steps": steps,
        "repeats": args.repeats, "median_attack_s": statistics.median(t_attack),
        "median_plain_s": statistics.median(t_plain),
        "ratio_of_medians": statistics.median(t_attack) / statistics.median(t_plain),
        "median_ratio": statistics.median(ratios),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "threads": torch.get_num_threads(), "device": args.device},
        "versions": {"torch": torch.__version__, "advlab": advlab.__version__,
                     "python": platform.python_version()},
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
