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

Then the evaluation and data levers (``--skip-eval-levers`` to leave them out):

* autograd mode of the evaluation's forward passes: the clean forward over the ``--n``
  images with gradients recorded, under ``torch.no_grad`` and under ``torch.inference_mode``
  (what ``advlab.evaluate`` uses);
* reuse of clean logits: an FGSM eps sweep (three radii) as three ``evaluate_attack`` calls
  (each computes the clean logits again) and as one ``transfer_matrix`` call (clean logits once
  per batch), with a check that both give the same numbers;
* data loading: decoding the MNIST training split the first time in a process and again
  (decoding is cached), and one shuffled epoch of batches of 64 by tensor indexing (what
  ``advlab.train.fit`` does) vs a ``torch.utils.data.DataLoader`` over a ``TensorDataset``.

    python bench/speed_levers.py --threads 1 --out bench/results/speed_levers.json
"""

from __future__ import annotations

import contextlib
import time
from functools import partial

import torch
from _common import alternate, base_parser, compare, finish, mnist_test, setup, spread
from _common import trained_model as _trained
from torch.utils.data import DataLoader, TensorDataset

from advlab.attacks import FGSM, MIFGSM, PGD
from advlab.attacks.base import _channels_last_params
from advlab.evaluate import evaluate_attack, transfer_matrix

VARIANTS = {"fp32": {}, "bf16": {"amp": "bf16"}, "fp16": {"amp": "fp16"},
            "channels_last": {"channels_last": True}, "compile": {"compile": True},
            "channels_last+bf16": {"channels_last": True, "amp": "bf16"}}


def flips(g: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    differ = g.sign() != ref.sign()
    big = ref.abs() > 1e-3 * ref.abs().flatten(1).amax(1).reshape(-1, 1, 1, 1)
    return float(differ.float().mean()), float(differ[big].float().mean())


def gradients(atk, model, points, y, kw) -> list[torch.Tensor]:
    """Input gradients at each point with the options of ``kw``; with ``channels_last`` the
    weights are NHWC as in a real run of the attack."""
    layout = _channels_last_params(model) if kw.get("channels_last") else contextlib.nullcontext()
    with layout:
        return [atk._gradient(model, p, y)[0] for p in points]


def forward_modes(model, x, batch: int) -> dict[str, partial]:
    """Clean forward passes over ``x`` in three autograd modes."""
    modes = {"grad": contextlib.nullcontext, "no_grad": torch.no_grad,
             "inference_mode": torch.inference_mode}

    def run(make_ctx) -> None:
        with make_ctx():
            for i in range(0, x.shape[0], batch):
                model(x[i:i + batch]).argmax(1)

    return {k: partial(run, m) for k, m in modes.items()}


def eval_levers(model, x, y, args) -> dict:
    out: dict = {}
    t = alternate(forward_modes(model, x, args.batch), args.repeats, args.device)
    out["forward_modes"] = {
        k: {"s": spread(t.of(args.clock)[k]),
            "vs_grad": compare(t, k, "grad", args.clock)["median_ratio"]}
        for k in ("grad", "no_grad", "inference_mode")}
    print("clean forward, time vs grad recorded: " + ", ".join(
        f"{k} {v['vs_grad']:.3f}" for k, v in out["forward_modes"].items()), flush=True)

    sweep = {f"fgsm eps {e}": FGSM(eps=e) for e in (0.05, 0.1, 0.15)}
    data = (x, y)
    kw = {"batch_size": args.batch, "progress": False}

    def separate():
        return {a: evaluate_attack(model, atk, data, **kw) for a, atk in sweep.items()}

    def shared():
        return transfer_matrix({"m": model}, sweep, {"m": model}, data, **kw)

    fields = ("clean_accuracy", "robust_accuracy", "success_rate")
    sep = separate()
    same = all(getattr(sep[a], f) == getattr(r, f)
               for (_, a, _), r in shared().items() for f in fields)
    t = alternate({"separate": separate, "shared": shared}, args.repeats, args.device)
    cmp = compare(t, "shared", "separate", args.clock)
    out["clean_logit_reuse"] = {"attacks": list(sweep), "n": x.shape[0],
                                "shared_over_separate": cmp["median_ratio"],
                                "s": {k: spread(t.of(args.clock)[k])
                                      for k in ("separate", "shared")},
                                "same_numbers": same}
    print(f"FGSM eps sweep: one transfer_matrix / three evaluate_attack "
          f"{cmp['median_ratio']:.3f}; same numbers: {same}", flush=True)

    from advlab.data.mnist import load_mnist
    loads = []
    for _ in range(2):
        w0, c0 = time.perf_counter(), time.process_time()
        xt, yt = load_mnist("train")
        loads.append({"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0})
    n = xt.shape[0]

    gen = torch.Generator().manual_seed(0)

    def by_index() -> None:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, 64):
            idx = perm[i:i + 64]
            xt[idx], yt[idx]

    loader = DataLoader(TensorDataset(xt, yt), batch_size=64, shuffle=True,
                        generator=torch.Generator().manual_seed(0))

    def by_loader() -> None:
        for _ in loader:
            pass

    t = alternate({"index": by_index, "dataloader": by_loader}, args.repeats, args.device)
    c = t.of(args.clock)
    out["data_loading"] = {
        "train_images": n, "first_load": loads[0], "cached_load": loads[1],
        "epoch_batches_64": {k: {"s": spread(c[k]), "images_per_s": n / spread(c[k])["median"]}
                             for k in ("index", "dataloader")},
        "dataloader_over_index": compare(t, "dataloader", "index", args.clock)["median_ratio"]}
    print(f"MNIST train split: first load {loads[0]['wall_s']:.2f} s, cached "
          f"{loads[1]['wall_s']:.2f} s; one epoch of batches: indexing "
          f"{out['data_loading']['epoch_batches_64']['index']['images_per_s']:.0f} img/s, "
          f"DataLoader {out['data_loading']['epoch_batches_64']['dataloader']['images_per_s']:.0f}"
          f" img/s", flush=True)
    return out


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--model", default="mnist-cnn")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--eps", type=float, default=0.15)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--skip-eval-levers", action="store_true",
                    help="leave out the evaluation and data-loading levers")
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
    ref_grads = gradients(attacks["mifgsm"], model, path, yb, {})

    rows = []
    per_example = {}
    for v in names:
        kw = VARIANTS[v]
        probe = attacks["mifgsm"].replace(**kw)
        grads = gradients(probe, model, path, yb, kw)
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
    levers = {} if args.skip_eval_levers else eval_levers(model, x, y, args)
    record.update({"benchmark": "speed_levers", "model": args.model, "n": args.n,
                   "batch": args.batch, "eps": args.eps, "steps": args.steps,
                   "repeats": args.repeats, "rows": rows, **levers})
    finish(args, record)


if __name__ == "__main__":
    main()
