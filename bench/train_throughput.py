"""Training throughput: advlab.train.fit vs a minimal hand-written PyTorch loop.

Both train the same zoo model from the same initialisation on the same MNIST subset with
the same recipe (Adam lr 1e-3, batch 64, cross-entropy, one shuffled epoch). Rounds
alternate the two; the JSON reports images per second of

* the hand loop (shuffle, forward, loss, backward, step -- nothing else);
* fit's training loop, as fit itself reports it (``images_per_s`` of its epoch metrics);
* fit's whole call (data loading, the loop, the test-set evaluation and the checkpoint
  written after the epoch).

fit reports its loop's wall time only, so the loop comparison is on wall time (paired
rounds); the whole-call comparison is on both clocks (process CPU time is the robust one on a
shared machine, see ``bench/_common.py``).

    python bench/train_throughput.py --threads 1 --out bench/results/train_throughput.json
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from _common import base_parser, finish, med, setup, spread, timed

from advlab.models import create
from advlab.train import TrainConfig, fit, load_split


def hand_loop(name: str, x: torch.Tensor, y: torch.Tensor, batch: int,
              seed: int) -> tuple[float, float]:
    """One epoch; returns the (wall, CPU) seconds of the loop itself."""
    torch.manual_seed(seed)
    model = create(name).to(x.device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, x.shape[0], batch):
        idx = perm[i:i + batch]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--model", default="mnist-cnn,mnist-mlp", help="zoo models")
    ap.add_argument("--train-size", type=int, default=10000)
    ap.add_argument("--test-size", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    record = setup(args)
    x, y = load_split("train", args.train_size, None, args.device)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="advlab-train-bench-"))
    try:
        for name in args.model.split(","):
            cfg = TrainConfig(name, epochs=1, batch_size=args.batch, train_size=args.train_size,
                              test_size=args.test_size, device=args.device)
            hand, hand_cpu, loop, call, call_cpu = [], [], [], [], []
            for r in range(args.repeats + 1):  # round 0 is the warm-up
                for which in (("fit", "hand") if r % 2 else ("hand", "fit")):
                    if which == "hand":
                        w, c = hand_loop(name, x, y, args.batch, seed=r)
                        if r:
                            hand.append(w)
                            hand_cpu.append(c)
                        continue
                    out = tmp / f"{name}-{r}"
                    w, c, res = timed(fit, cfg, out, progress=False)
                    if r:
                        loop.append(res.metrics[-1]["seconds"])
                        call.append(w)
                        call_cpu.append(c)
                    shutil.rmtree(out, ignore_errors=True)
            n = args.train_size
            row = {"model": name, "train_size": n, "batch": args.batch,
                   "hand_images_per_s": {"wall": n / med(hand), "cpu": n / med(hand_cpu)},
                   "fit_loop_images_per_s": {"wall": n / med(loop)},
                   "fit_call_images_per_s": {"wall": n / med(call), "cpu": n / med(call_cpu)},
                   "fit_loop_over_hand_wall": med(hand) / med(loop),
                   "fit_loop_over_hand_wall_paired": med(
                       [h / lo for h, lo in zip(hand, loop, strict=True)]),
                   "fit_call_over_hand": {"wall": med(hand) / med(call),
                                          "cpu": med(hand_cpu) / med(call_cpu)},
                   "seconds": {"hand_wall": spread(hand), "hand_cpu": spread(hand_cpu),
                               "fit_loop_wall": spread(loop), "fit_call_wall": spread(call),
                               "fit_call_cpu": spread(call_cpu)}}
            rows.append(row)
            print(f"{name}: hand loop {n / med(hand):.0f} img/s wall ({n / med(hand_cpu):.0f} "
                  f"cpu); fit loop {n / med(loop):.0f} img/s wall (x"
                  f"{row['fit_loop_over_hand_wall_paired']:.3f} of hand, paired rounds); fit "
                  f"whole call {n / med(call):.0f} img/s wall, {n / med(call_cpu):.0f} cpu",
                  flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    record.update({"benchmark": "train_throughput", "repeats": args.repeats, "rows": rows})
    finish(args, record)


if __name__ == "__main__":
    main()
