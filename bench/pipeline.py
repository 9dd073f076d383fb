"""Pipeline overhead: a transfer table vs the sum of its necessary passes.

The table is ``advlab.evaluate.transfer_matrix``: every attack crafted on every source
model, then counted on every model of the zoo subset (sources included: the white-box
entries). Its necessary work is

* per (source, attack): the attack's T forward+backward passes on every batch (timed as
  plain passes, the floor of ``bench/attack_overhead.py``);
* per evaluated model: one forward pass over the clean data;
* per (source, attack, model): one forward pass over the adversarial data.

Each round times the whole table and then each necessary pass on its own (in a rotating
order); the JSON reports the median table time over the median sum of the parts, and, once,
the naive table that calls ``evaluate_attack`` per (source, attack, model) -- which crafts
every attack once per evaluated model.

    python bench/pipeline.py --threads 1 --out bench/results/pipeline.json
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from _common import (
    Timings,
    base_parser,
    finish,
    med,
    mnist_test,
    setup,
    spread,
    timed,
    trained_model,
)

from advlab.attacks import create_attack
from advlab.evaluate import evaluate_attack, transfer_matrix


def plain_passes(model, x, y, steps, batch) -> None:
    for i in range(0, x.shape[0], batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        for _ in range(steps):
            xi = xb.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xi), yb, reduction="sum"), xi)


def forward_pass(model, x, batch) -> None:
    with torch.inference_mode():
        for i in range(0, x.shape[0], batch):
            model(x[i:i + batch]).argmax(1)


def main() -> None:
    ap = base_parser(__doc__)
    ap.set_defaults(repeats=3)
    ap.add_argument("--sources", default="mnist-cnn,mnist-mlp")
    ap.add_argument("--attacks", default="fgsm,pgd,mifgsm")
    ap.add_argument("--targets", default="mnist-cnn,mnist-mlp,mnist-convnet")
    ap.add_argument("--n", type=int, default=512, help="MNIST test images")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--naive", action="store_true",
                    help="also time the naive per-entry evaluate_attack table (once)")
    args = ap.parse_args()
    record = setup(args)
    names = sorted(set(args.sources.split(",")) | set(args.targets.split(",")))
    zoo = {n: trained_model(n, args.device) for n in names}
    sources = {n: zoo[n] for n in args.sources.split(",")}
    targets = {n: zoo[n] for n in args.targets.split(",")}
    attacks = {a: create_attack(a, eps=0.2, steps=1 if a == "fgsm" else args.steps)
               for a in args.attacks.split(",")}
    x, y = mnist_test(args.n, args.device)
    # stand-in adversarial data for the timed evaluation passes (a forward pass costs the
    # same on any batch of this shape)
    g = torch.Generator().manual_seed(0)
    x_adv = (x + 0.2 * torch.randn(x.shape, generator=g).sign().to(x.device)).clamp(0, 1)

    def table():
        return transfer_matrix(sources, attacks, targets, (x, y), batch_size=args.batch,
                               progress=False)

    parts = {}
    for s, src in sources.items():
        for a, atk in attacks.items():
            parts[f"attack {s}/{a}"] = (plain_passes, src, x, y, atk.steps, args.batch)
    for m, tgt in targets.items():
        parts[f"clean {m}"] = (forward_pass, tgt, x, args.batch)
        parts[f"adv {m}"] = (forward_pass, tgt, x_adv, args.batch)
    n_adv_per_target = len(sources) * len(attacks)

    result = table()  # warm-up
    for fn, *a in parts.values():
        fn(*a)
    t = Timings()
    for r in range(args.repeats):
        keys = list(parts)
        keys = keys[r % len(keys):] + keys[:r % len(keys)]
        if r % 2:
            t.add("table", *timed(table)[:2])
        for k in keys:
            fn, *a = parts[k]
            t.add(k, *timed(fn, *a)[:2])
        if not r % 2:
            t.add("table", *timed(table)[:2])

    def sums(clock: str) -> list[float]:
        c = t.of(clock)
        return [sum(v[i] * (n_adv_per_target if k.startswith("adv ") else 1)
                    for k, v in c.items() if k != "table") for i in range(args.repeats)]

    row = {}
    for clock in ("cpu", "wall"):
        tab, nec = t.of(clock)["table"], sums(clock)
        row[clock] = {"table_s": spread(tab), "necessary_sum_s": spread(nec),
                      "table_over_necessary": med(tab) / med(nec),
                      "median_round_ratio": med([a / b for a, b in zip(tab, nec, strict=True)]),
                      "parts_median_s": {k: med(v) for k, v in t.of(clock).items()}}
    main_row = row[args.clock]
    row.update({"table_over_necessary": main_row["table_over_necessary"],
                "median_round_ratio": main_row["median_round_ratio"],
                "adv_forward_passes_per_model": n_adv_per_target, "entries": len(result),
                "success_rates": {"/".join(k): round(v.success_rate, 4)
                                  for k, v in result.items()}})
    print(f"table {main_row['table_s']['median']:.2f} s vs necessary passes "
          f"{main_row['necessary_sum_s']['median']:.2f} s ({args.clock}): ratio "
          f"{row['table_over_necessary']:.3f} (wall {row['wall']['table_over_necessary']:.3f})",
          flush=True)
    if args.naive:
        def naive_table():
            return {(s, a, m): evaluate_attack(src, atk, (x, y), eval_model=tgt,
                                               batch_size=args.batch, progress=False)
                    for s, src in sources.items() for a, atk in attacks.items()
                    for m, tgt in targets.items()}

        wall, cpu, naive = timed(naive_table)
        row["naive_table_s"] = {"cpu": cpu, "wall": wall}
        row["naive_over_table"] = (cpu if args.clock == "cpu" else wall) / \
            main_row["table_s"]["median"]
        row["naive_equals_table"] = all(
            naive[k].success_rate == result[k].success_rate
            and naive[k].robust_accuracy == result[k].robust_accuracy for k in result)
        print(f"naive per-entry evaluate_attack table {row['naive_table_s'][args.clock]:.2f} s "
              f"({row['naive_over_table']:.2f}x); same numbers: {row['naive_equals_table']}")
    record.update({"benchmark": "pipeline", "repeats": args.repeats, "n": args.n,
                   "batch": args.batch, "sources": list(sources), "attacks": list(attacks),
                   "targets": list(targets), **row})
    finish(args, record)


if __name__ == "__main__":
    main()
