"""Attack overhead: time of a T-step attack / time of T plain forward+backward passes.

(For the transfer family, "T passes" is every pass the attack needs: see
:func:`necessary_passes`; e.g. ``--attack sinifgsm,vmifgsm,admix --model mnist-cnn
--batch 256``.)

The floor for a T-step gradient attack is T forward+backward passes of the model with
respect to the input. For every (model, batch size, attack) of the grid this script times
three contenders on the same model and batch, alternating them in one process:

* ``attack``: the advlab attack;
* ``plain``: T passes at the clean batch (the issue's definition of the floor);
* ``plain_iterates``: T passes at the very points where the attack takes its gradients
  (recorded in an untimed run). Some CPU kernels take data-dependent time (max pooling
  compares and branches), so the attack's perturbed, clamped iterates can cost more or less
  per pass than the clean batch; this floor does exactly the attack's passes.

It reports the median of the per-round ratios attack / floor (process CPU time by default,
see ``--clock``; wall time is recorded too). Lists are comma-separated; the defaults are the
issue's grid (FGSM, PGD and MI-FGSM on mnist-cnn, mnist-mlp and mnist-convnet at batch sizes
32 and 256), on untrained zoo models (seed 0) and uniform random inputs.

    python bench/attack_overhead.py --threads 1 --out bench/results/overhead.json
    python bench/attack_overhead.py --attack mifgsm --model mnist-cnn --batch 256
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from _common import alternate, base_parser, compare, finish, med, setup
from torch import nn

from advlab.attacks import create_attack
from advlab.models import create


def plain_passes(model: nn.Module, points: list[torch.Tensor], y: torch.Tensor) -> None:
    """One forward+backward pass w.r.t. the input at each point."""
    for p in points:
        xi = p.detach().requires_grad_(True)
        loss = F.cross_entropy(model(xi), y, reduction="sum")
        torch.autograd.grad(loss, xi)


def attack_points(atk, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """The inputs of the attack's gradient passes (its iterates), from one untimed run."""
    seen: list[torch.Tensor] = []
    hook = model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    try:
        atk(model, x, y)
    finally:
        hook.remove()
    points = seen[1:]  # the first forward is the attack's one-example probe
    if atk.diversity_prob > 0 and atk.resize_rate > 1:
        points = points[1:]  # and enlarging DI probes the larger size once more
    n = necessary_passes(atk)
    if len(points) != n or any(p.shape[0] != x.shape[0] for p in points):
        raise RuntimeError(f"expected {n} full-batch passes, saw "
                           f"{[tuple(p.shape) for p in seen]}")
    return points


def necessary_passes(atk) -> int:
    """Forward+backward passes a gradient attack cannot do without: per step one per input
    copy (SI's scale copies times Admix's images) for the gradient and for each of variance
    tuning's neighbours, times the EOT samples. The transfer family's floor is these passes
    at the very copies the attack feeds the model (``plain_iterates``)."""
    per_step = atk.scale_copies * max(atk.admix_copies, 1) * (1 + atk.variance_samples)
    return atk.steps * per_step * atk.eot_samples


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--attack", default="fgsm,pgd,mifgsm", help="registered attack names")
    ap.add_argument("--model", default="mnist-cnn,mnist-mlp,mnist-convnet",
                    help="zoo model names")
    ap.add_argument("--batch", default="32,256", help="batch sizes")
    ap.add_argument("--steps", type=int, default=10, help="T for the iterative attacks")
    args = ap.parse_args()
    record = setup(args)
    rows = []
    for name in args.model.split(","):
        torch.manual_seed(0)
        model = create(name).to(args.device).eval()
        for batch in (int(b) for b in args.batch.split(",")):
            g = torch.Generator().manual_seed(1)
            x = torch.rand(batch, 1, 28, 28, generator=g).to(args.device)
            y = torch.randint(0, 10, (batch,), generator=g).to(args.device)
            for atk_name in args.attack.split(","):
                steps = 1 if atk_name == "fgsm" else args.steps
                atk = create_attack(atk_name, eps=0.3, steps=steps)
                points = attack_points(atk, model, x, y)
                t = alternate({"plain": partial(plain_passes, model, [x] * len(points), y),
                               "attack": partial(atk, model, x, y),
                               "plain_iterates": partial(plain_passes, model, points, y)},
                              args.repeats, args.device)
                row = {"model": name, "batch": batch, "attack": atk_name, "steps": steps,
                       **compare(t, "attack", "plain", args.clock),
                       "vs_iterates": compare(t, "attack", "plain_iterates", args.clock)}
                rows.append(row)
                c = t.of(args.clock)
                print(f"{name:14s} batch {batch:4d} {atk_name:7s} overhead "
                      f"{row['median_ratio']:.3f} (ratio of medians "
                      f"{row['ratio_of_medians']:.3f}; at the iterates "
                      f"{row['vs_iterates']['median_ratio']:.3f}; {args.clock} s: attack "
                      f"{med(c['attack']):.3f}, plain {med(c['plain']):.3f}, iterates "
                      f"{med(c['plain_iterates']):.3f}; wall ratio "
                      f"{row['wall_ratio']['median_ratio']:.3f})", flush=True)
    record.update({"benchmark": "attack_overhead", "repeats": args.repeats, "rows": rows})
    finish(args, record)


if __name__ == "__main__":
    main()
