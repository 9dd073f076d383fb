"""The attack's speed options: their effect on results and on speed, on a trained model.

On a zoo model trained by ``advlab.train.fit`` (one epoch on 10k MNIST images, cached under
``/tmp/advlab-bench``) and the first ``--n`` MNIST test images, for each variant of the
attack config (``fp32`` = defaults, ``bf16``, ``fp16``, ``channels_last``, ``compile``):

* sign flips: the fraction of input-gradient coordinates whose sign differs from the float32
  gradient, at the clean images and at every iterate of the float32 MI-FGSM path (all
  coordinates, and those with ``|g| > 1e-3 max|g|`` of their example);
* success rates of FGSM, PGD and MI-FGSM (``evaluate_attack``; eps ``--eps``), their change
  vs fp32 in percentage points, and the fraction of examples whose adversarial prediction
  differs from the fp32 run;
* speed: MI-FGSM on one batch, alternating rounds, time relative to fp32.

    python bench/speed_levers.py --threads 1 --out bench/results/speed_levers.json
"""

from __future__ import annotations

from functools import partial

import torch
from _common import alternate, base_parser, compare, finish, mnist_test, setup, spread
from _common import trained_model as _trained

from advlab.attacks import FGSM, MIFGSM, PGD
from advlab.evaluate import evaluate_attack

VARIANTS = {"fp32": {}, "bf16": {"amp": "bf16"}, "fp16": {"amp": "fp16"},
            "channels_last": {"channels_last": True}, "compile": {"compile": True},
            "channels_last+bf16": {"channels_last": True, "amp": "bf16"}}


def flips(g: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    differ = g.sign() != ref.sign()
    big = ref.abs() > 1e-3 * ref.abs().flatten(1).amax(1).reshape(-1, 1, 1, 1)
    return float(differ.float().mean()), float(differ[big].float().mean())


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--model", default="mnist-cnn")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--eps", type=float, default=0.15)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    record = setup(args)
    model = _trained(args.model, args.device)
    x, y = mnist_test(args.n, args.device)
    names = args.variants.split(",")
    attacks = {"fgsm": FGSM(eps=args.eps),
               "pgd": PGD(eps=args.eps, steps=args.steps, seed=0),
               "mifgsm": MIFGSM(eps=args.eps, steps=args.steps)}

    # gradients: clean points and the fp32 MI-FGSM path (first batch)
    xb, yb = x[:args.batch], y[:args.batch]
    path = [xb]
    for u in attacks["mifgsm"].run(model, xb, yb, record=True).updates[:-1]:
        path.append(path[-1] + u)
    ref_grads = [attacks["mifgsm"]._gradient(model, p, yb)[0] for p in path]

    rows = []
    per_example = {}
    for v in names:
        kw = VARIANTS[v]
        probe = attacks["mifgsm"].replace(**kw)
        grads = [probe._gradient(model, p, yb)[0] for p in path]
        clean_flip = flips(grads[0], ref_grads[0])
        path_flip = [flips(g, r) for g, r in zip(grads, ref_grads, strict=True)]
        row = {"variant": v, "options": kw,
               "sign_flip_clean": clean_flip[0], "sign_flip_clean_significant": clean_flip[1],
               "sign_flip_path": sum(f[0] for f in path_flip) / len(path_flip),
               "sign_flip_path_significant": sum(f[1] for f in path_flip) / len(path_flip)}
        for a, atk in attacks.items():
            r = evaluate_attack(model, atk.replace(**kw), (x, y), batch_size=args.batch,
                                keep_per_example=True, progress=False)
            per_example[(v, a)] = r.per_example.adv_pred
            row[f"success_{a}"] = r.success_rate
            row[f"max_norm_{a}"] = r.max_norm
            if v != "fp32" and ("fp32", a) in per_example:
                base = rows[0][f"success_{a}"]
                row[f"success_change_points_{a}"] = 100 * (r.success_rate - base)
                row[f"pred_differs_{a}"] = float(
                    (per_example[(v, a)] != per_example[("fp32", a)]).float().mean())
        rows.append(row)
        print(f"{v:20s} flips clean {row['sign_flip_clean']:.4f} path "
              f"{row['sign_flip_path']:.4f} (significant {row['sign_flip_path_significant']:.4f})"
              + "".join(f"  {a} {100 * row[f'success_{a}']:.2f}%" for a in attacks), flush=True)

    atk = attacks["mifgsm"]
    fns = {v: partial(atk.replace(**VARIANTS[v]), model, xb, yb) for v in names}
    t = alternate(fns, args.repeats, args.device)
    for row in rows:
        v = row["variant"]
        cmp = compare(t, v, "fp32", args.clock)
        row["mifgsm_batch_s"] = {"cpu": spread(t.cpu[v]), "wall": spread(t.wall[v])}
        row["time_vs_fp32"] = cmp["median_ratio"]
        row["time_vs_fp32_wall"] = cmp["wall_ratio"]["median_ratio"]
        print(f"{v:20s} MI-FGSM time vs fp32 {row['time_vs_fp32']:.3f}", flush=True)
    record.update({"benchmark": "speed_levers", "model": args.model, "n": args.n,
                   "batch": args.batch, "eps": args.eps, "steps": args.steps,
                   "repeats": args.repeats, "rows": rows})
    finish(args, record)


if __name__ == "__main__":
    main()
