"""Where an advlab attack spends time besides the model's passes: the per-call and per-step
costs of the attack loop, next to torchattacks' and to one forward+backward pass.

On a trained zoo model and a batch of MNIST test images, each piece is timed on its own with
``timeit`` (the fastest of ``--repeats`` blocks of ``--number`` calls, in milliseconds per
call, on the ``--clock``; the fastest block is the one least disturbed by other load):

* per call, advlab: input validation (one ``aminmax`` pass and the device check), label
  checks, the one-example probe of the model's output, the model-mode context, the setup of
  the loop (oracle, generator, step size, the projection bounds);
* per call, torchattacks: the copies of the images and labels, ``model.eval()``;
* per step, the update after the gradient: advlab's ``sign``, ``addcmul`` and clamp into the
  precomputed bounds vs torchattacks' PGD update (six elementwise passes);
* for scale: one forward+backward pass of the model with respect to the input.

    python bench/fixed_costs.py --threads 1 --out bench/results/fixed_costs.json
"""

from __future__ import annotations

import time
import timeit

import torch
import torch.nn.functional as F
from _common import base_parser, finish, mnist_test, setup, trained_model

from advlab.attacks import PGD
from advlab.attacks.base import _Oracle, check_inputs, check_labels, model_mode, probe_model


def main() -> None:
    ap = base_parser(__doc__)
    ap.set_defaults(repeats=7)
    ap.add_argument("--model", default="mnist-cnn")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--number", type=int, default=50, help="calls per timed block")
    args = ap.parse_args()
    record = setup(args)
    model = trained_model(args.model, args.device)
    x, y = mnist_test(args.batch, args.device)
    eps, alpha = 0.3, 0.03
    atk = PGD(eps=eps, alpha=alpha, steps=10, random_start=False)
    tm = atk.threat
    step = atk.step_size(x).reshape(-1, 1, 1, 1)
    project = atk._projector(tm, x, step)
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(x.device)

    def mode() -> None:
        with model_mode(model, "eval"):
            pass

    def setup_loop() -> None:
        _Oracle(atk, model)
        torch.Generator(device=x.device).manual_seed(0)
        a = atk.step_size(x).reshape(-1, 1, 1, 1)
        atk._projector(atk.threat, x, a)

    def ta_call() -> None:
        x.clone().detach()
        y.clone().detach()
        model.eval()

    def advlab_update() -> None:
        project(torch.addcmul(x, step, tm.step_direction(g)))

    def ta_update() -> None:
        adv = x.detach() + alpha * g.sign()
        delta = torch.clamp(adv - x, min=-eps, max=eps)
        torch.clamp(x + delta, min=0, max=1).detach()

    def one_pass() -> None:
        xi = x.detach().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xi), y, reduction="sum"), xi)

    pieces = {
        "advlab: input validation": lambda: check_inputs(model, x, atk.bounds, atk.eps),
        "advlab: label checks": lambda: check_labels("y", y, x.shape[0]),
        "advlab: one-example probe": lambda: probe_model(model, x, {"y": y}),
        "advlab: model_mode": mode,
        "advlab: loop setup": setup_loop,
        "torchattacks: copies and model.eval()": ta_call,
        "advlab: update per step": advlab_update,
        "torchattacks: PGD update per step": ta_update,
        "one forward+backward pass": one_pass,
    }
    rows = {}
    for name, fn in pieces.items():
        fn()
        number = max(1, args.number // 10) if name == "one forward+backward pass" else args.number
        timer = time.process_time if args.clock == "cpu" else time.perf_counter
        best = min(timeit.repeat(fn, number=number, repeat=args.repeats, timer=timer)) / number
        rows[name] = {"ms_per_call": 1e3 * best, "number": number}
        print(f"{name:40s} {1e3 * best:9.4f} ms", flush=True)
    per_call = sum(v["ms_per_call"] for k, v in rows.items()
                   if k.startswith("advlab:") and "per step" not in k)
    record.update({"benchmark": "fixed_costs", "model": args.model, "batch": args.batch,
                   "repeats": args.repeats, "rows": rows,
                   "advlab_per_call_ms": per_call,
                   "advlab_per_call_over_one_pass": per_call / rows[
                       "one forward+backward pass"]["ms_per_call"]})
    print(f"advlab per-call costs {per_call:.3f} ms = "
          f"{100 * record['advlab_per_call_over_one_pass']:.2f}% of one pass")
    finish(args, record)


if __name__ == "__main__":
    main()
