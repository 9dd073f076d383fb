"""Training and inference speed of every zoo model, and the projected time of the report's
full protocol (the README's speed table).

For each model: training images per second (Adam step of the report's recipe, batch 64,
cross-entropy on MNIST images) and inference images per second (forward only, batch 256,
``torch.inference_mode``), medians of ``--repeats`` timed blocks of ``--batches`` batches after
one warm-up block. Derived: seconds per epoch of 60 000 training images plus one pass over the
10 000 test images, and the full protocol of the report (every model, 10 epochs) as the sum.
VOne models run with their default preset unless ``--preset`` says otherwise.

    python bench/zoo_speed.py --out bench/results/zoo_speed.json
"""

from __future__ import annotations

import time

import torch
from _common import base_parser, finish, mnist_test, setup, spread
from torch.nn import functional as F

from advlab.models import create, list_models

TRAIN, TEST, EPOCHS = 60000, 10000, 10


def _block(fn, batches: int) -> float:
    t0 = time.perf_counter()
    for _ in range(batches):
        fn()
    return time.perf_counter() - t0


def measure(name: str, x: torch.Tensor, y: torch.Tensor, args) -> dict:
    kw = {"preset": args.preset} if name.startswith("vone-") and args.preset else {}
    model = create(name, **kw).to(args.device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    xb, yb = x[:64], y[:64]
    xe = x[:256]

    def train_step() -> None:
        model.train()
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def infer() -> None:
        model.eval()
        with torch.inference_mode():
            model(xe)

    out = {}
    for key, fn, n in (("train", train_step, 64), ("infer", infer, 256)):
        _block(fn, 1)
        secs = [_block(fn, args.batches) for _ in range(args.repeats)]
        s = spread(secs)
        out[f"{key}_img_per_s"] = n * args.batches / s["median"]
        out[f"{key}_block_s"] = s
    out["epoch_s"] = TRAIN / out["train_img_per_s"] + TEST / out["infer_img_per_s"]
    out["params"] = sum(p.numel() for p in model.parameters())
    return out


def main() -> None:
    ap = base_parser(__doc__)
    ap.set_defaults(repeats=3)
    ap.add_argument("--batches", type=int, default=4, help="batches per timed block")
    ap.add_argument("--models", default="",
                    help="comma-separated zoo names (default: every MNIST model)")
    ap.add_argument("--preset", default=None, help="VOne preset (default: the model's own)")
    args = ap.parse_args()
    record = setup(args)
    names = [m for m in args.models.split(",") if m] or [
        m for m in list_models() if "mnist" in m]
    x, y = mnist_test(256, args.device)
    rows = {}
    for name in names:
        rows[name] = measure(name, x, y, args)
        r = rows[name]
        print(f"{name:22s} train {r['train_img_per_s']:8.0f} img/s  infer "
              f"{r['infer_img_per_s']:8.0f} img/s  epoch {r['epoch_s']:7.0f} s", flush=True)
    record["models"] = rows
    record["full_protocol_hours"] = sum(EPOCHS * r["epoch_s"] for r in rows.values()) / 3600
    record["settings"] = {"batches": args.batches, "repeats": args.repeats,
                          "preset": args.preset, "train": TRAIN, "test": TEST, "epochs": EPOCHS}
    finish(args, record)


if __name__ == "__main__":
    main()
