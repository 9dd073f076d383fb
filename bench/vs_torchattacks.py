"""advlab vs torchattacks: the same attack, model, inputs and parameters, alternating runs.

For FGSM, PGD (random start off in both, so the outputs can be compared too) and MI-FGSM,
each round times torchattacks and every advlab variant on the same batch of MNIST test
images against a trained zoo model; the JSON reports the median of the per-round ratios
advlab / torchattacks (below 1: advlab is faster; CPU time by default, see ``--clock``) and
the largest difference between the two libraries' adversarial examples.

Variants (comma-separated ``--variants``): ``fp32`` (advlab's defaults), ``channels_last``,
``bf16``, ``fp16``, ``compile`` and combinations joined with ``+`` (``channels_last+bf16``).

    python bench/vs_torchattacks.py --threads 1 --variants fp32,channels_last \
        --out bench/results/vs_torchattacks.json
"""

from __future__ import annotations

from functools import partial

import torch
import torchattacks
from _common import alternate, base_parser, compare, finish, mnist_test, setup, trained_model

from advlab.attacks import FGSM, MIFGSM, PGD

EPS = 0.3


def variant_kwargs(variant: str) -> dict:
    kw: dict = {}
    for part in variant.split("+"):
        if part == "fp32":
            continue
        if part in ("bf16", "fp16"):
            kw["amp"] = part
        elif part == "channels_last":
            kw["channels_last"] = True
        elif part == "compile":
            kw["compile"] = True
        else:
            raise SystemExit(f"unknown variant part {part!r}; expected fp32, channels_last, "
                             f"bf16, fp16 or compile")
    return kw


def pair(name: str, model: torch.nn.Module, steps: int, kw: dict):
    alpha = EPS / steps
    if name == "fgsm":
        return FGSM(eps=EPS, **kw), torchattacks.FGSM(model, eps=EPS)
    if name == "pgd":
        return (PGD(eps=EPS, alpha=alpha, steps=steps, random_start=False, **kw),
                torchattacks.PGD(model, eps=EPS, alpha=alpha, steps=steps, random_start=False))
    if name == "mifgsm":
        return (MIFGSM(eps=EPS, alpha=alpha, steps=steps, **kw),
                torchattacks.MIFGSM(model, eps=EPS, alpha=alpha, steps=steps, decay=1.0))
    raise SystemExit(f"unknown attack {name!r}")


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--attack", default="fgsm,pgd,mifgsm")
    ap.add_argument("--model", default="mnist-cnn", help="zoo models (comma-separated)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--variants", default="fp32,channels_last")
    args = ap.parse_args()
    record = setup(args)
    rows = []
    for model_name in args.model.split(","):
        model = trained_model(model_name, args.device)
        x, y = mnist_test(args.batch, args.device)
        for atk_name in args.attack.split(","):
            steps = 1 if atk_name == "fgsm" else args.steps
            fns = {}
            outs = {}
            for v in args.variants.split(","):
                ours, theirs = pair(atk_name, model, steps, variant_kwargs(v))
                fns[f"advlab:{v}"] = partial(ours, model, x, y)
            fns["torchattacks"] = partial(theirs, x, y)
            for k, f in fns.items():
                outs[k] = f()
            t = alternate(fns, args.repeats, args.device)
            ref = outs["torchattacks"]
            with torch.no_grad():
                succ = {k: float((model(o).argmax(1) != y).float().mean())
                        for k, o in outs.items()}
            for v in args.variants.split(","):
                k = f"advlab:{v}"
                row = {"model": model_name, "attack": atk_name, "variant": v,
                       "batch": args.batch, "steps": steps,
                       **compare(t, k, "torchattacks", args.clock),
                       "max_abs_diff_vs_torchattacks": float((outs[k] - ref).abs().max()),
                       "frac_pixels_differing": float((outs[k] != ref).float().mean()),
                       "success_advlab": succ[k], "success_torchattacks": succ["torchattacks"]}
                rows.append(row)
                print(f"{model_name} {atk_name:7s} {v:22s} advlab/torchattacks "
                      f"{row['median_ratio']:.3f} (ratio of medians "
                      f"{row['ratio_of_medians']:.3f}; wall "
                      f"{row['wall_ratio']['median_ratio']:.3f}); max |diff| "
                      f"{row['max_abs_diff_vs_torchattacks']:.2g}", flush=True)
    record.update({"benchmark": "vs_torchattacks", "repeats": args.repeats, "eps": EPS,
                   "rows": rows})
    finish(args, record)


if __name__ == "__main__":
    main()
