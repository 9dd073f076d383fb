"""advlab APGD vs torchattacks APGD: same model, inputs and parameters, alternating runs.

APGD-CE (Croce & Hein, ICML 2020) with the same eps, steps, one restart, no EOT, on a batch
of MNIST test images against a trained zoo model. Each round times torchattacks and every
advlab variant once, in the balanced orders of ``_common.alternate``; the JSON reports the
median of the per-round ratios advlab / torchattacks (below 1: advlab is faster; CPU time by
default, see ``--clock``) and both libraries' robust accuracy. The random starts differ (each
library draws its own), so the adversarial examples are not compared pixel by pixel.

Both libraries run one forward and one backward pass per iteration (plus one initial pass);
torchattacks also runs one clean forward pass and attacks only the examples the model gets
right, and advlab does the same.

    python bench/apgd_vs_torchattacks.py --threads 1 --batch 256 --repeats 12 \
        --out bench/results/apgd_vs_torchattacks.json
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path

import torch
import torchattacks
from _common import alternate, base_parser, compare, finish, mnist_test, setup, trained_model
from vs_torchattacks import variant_kwargs

from advlab.attacks.apgd import APGD
from advlab.stats import wilson_interval

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--model", default="mnist-cnn", help="zoo model")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--eps", type=float, default=0.3)
    ap.add_argument("--norm", choices=("Linf", "L2"), default="Linf")
    ap.add_argument("--variants", default="fp32",
                    help="advlab variants, comma-separated (see bench/vs_torchattacks.py)")
    args = ap.parse_args()
    # the MNIST files next to the repository, unless the caller names another folder
    if SHARED_MNIST.is_dir():
        os.environ.setdefault("ADVLAB_DATA", str(SHARED_MNIST))
    record = setup(args)
    model = trained_model(args.model, args.device)
    x, y = mnist_test(args.batch, args.device)
    norm = args.norm.lower()
    fns = {}
    for v in args.variants.split(","):
        ours = APGD(eps=args.eps, norm=norm, steps=args.steps, **variant_kwargs(v))
        fns[f"advlab:{v}"] = partial(ours, model, x, y)
    theirs = torchattacks.APGD(model, norm=args.norm, eps=args.eps, steps=args.steps,
                               n_restarts=1, seed=0, loss="ce", eot_iter=1)

    def run_theirs() -> torch.Tensor:
        # torchattacks seeds the global generator; keep that from leaking into the process
        with torch.random.fork_rng(devices=[]):
            return theirs(x, y)

    fns["torchattacks"] = run_theirs
    outs = {k: f() for k, f in fns.items()}
    t = alternate(fns, args.repeats, args.device)
    n = x.shape[0]
    with torch.no_grad():
        clean = int((model(x).argmax(1) == y).sum())
        robust = {k: int((model(o).argmax(1) == y).sum()) for k, o in outs.items()}
    rows = []
    for v in args.variants.split(","):
        k = f"advlab:{v}"
        row = {"model": args.model, "attack": "apgd-ce", "variant": v, "norm": args.norm,
               "batch": n, "steps": args.steps, "eps": args.eps,
               **compare(t, k, "torchattacks", args.clock),
               "clean_accuracy": clean / n,
               "robust_accuracy_advlab": robust[k] / n,
               "robust_accuracy_advlab_wilson95": wilson_interval(robust[k], n),
               "robust_accuracy_torchattacks": robust["torchattacks"] / n,
               "robust_accuracy_torchattacks_wilson95": wilson_interval(robust["torchattacks"],
                                                                        n)}
        rows.append(row)
        print(f"{args.model} apgd-ce {v:16s} advlab/torchattacks {row['median_ratio']:.3f} "
              f"(ratio of medians {row['ratio_of_medians']:.3f}; wall "
              f"{row['wall_ratio']['median_ratio']:.3f}); robust accuracy advlab "
              f"{robust[k] / n:.4f}, torchattacks {robust['torchattacks'] / n:.4f} "
              f"(clean {clean / n:.4f})", flush=True)
    record.update({"benchmark": "apgd_vs_torchattacks", "repeats": args.repeats,
                   "mnist": os.environ.get("ADVLAB_DATA", "bundled"), "rows": rows})
    finish(args, record)


if __name__ == "__main__":
    main()
