"""Speed of the student's exact VOne front end (``preset="report"``), and what made it fast.

The bank is fixed, so every speed-up must leave the numbers as they are. Contenders, on
``vone-mnist-cnn`` at batch ``--batch`` of MNIST test digits, alternating in one process:

* ``flushed``: the preset as shipped: direct convolution, kernel taps below float32's smallest
  normal number set to 0 (they cannot change a response above 1e-30);
* ``subnormal``: the same bank with those taps kept as the student's float32 code computed them
  (subnormal operands take a slow path in x86 convolution kernels);
* ``fft``: the FFT convolution of the smooth complex cell on the same bank (not exact: rounding
  residue replaces the exact zeros that make the student's NaN gradients), for scale;
* ``aliased_flushed`` / ``aliased_subnormal``: the same pair on the ``aliased-28px`` bank
  (sub-pixel envelopes: far more subnormal taps), attack pass only.

Each is timed for the attack's pass (forward and the gradient with respect to the input, one
noise draw) and for a training step (forward, backward, Adam). The figures go to bench/README.md.

    python bench/vone_frontend.py --threads 2 --repeats 8 --out bench/results/vone_frontend.json
"""

from __future__ import annotations

import torch
from _common import alternate, base_parser, compare, finish, mnist_test, setup
from torch.nn import functional as F

from advlab.models import create
from advlab.models.vone import gabor_kernels


def build(kind: str, device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "fft":
        return create("vone-mnist-cnn", preset="report", complex_cell="smooth",
                      conv_mode="fft").to(device)
    if kind.startswith("aliased"):
        model = create("vone-mnist-cnn", preset="aliased-28px", conv_mode="direct").to(device)
    else:
        model = create("vone-mnist-cnn", preset="report").to(device)
    if kind.endswith("subnormal"):
        block = model.vone_block
        cfg, params = block.config, block.gabor_params
        q0 = gabor_kernels(params, cfg.ksize, convention=cfg.convention)
        q1 = gabor_kernels(params, cfg.ksize, 90.0, convention=cfg.convention)
        raw = torch.cat([q0, q1[cfg.simple_channels:]]).unsqueeze(1).to(device)
        with torch.no_grad():
            block.gabor_weight.copy_(raw)
    return model


def main() -> None:
    ap = base_parser(__doc__)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    record = setup(args)
    x, y = mnist_test(args.batch, args.device)
    models = {k: build(k, args.device) for k in ("flushed", "subnormal", "fft")}
    tiny = torch.finfo(torch.float32).tiny
    w = models["subnormal"].vone_block.gabor_weight
    record["subnormal_taps"] = float(((w != 0) & (w.abs() < tiny)).float().mean())

    def attack_pass(model: torch.nn.Module) -> None:
        model.eval()
        xi = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xi), y), xi)

    opts = {k: torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=1e-3)
            for k, m in models.items()}

    def train_step(key: str) -> None:
        model = models[key]
        model.train()
        loss = F.cross_entropy(model(x), y)
        opts[key].zero_grad(set_to_none=True)
        loss.backward()
        opts[key].step()

    for what, fn in (("attack_pass", lambda k: attack_pass(models[k])),
                     ("train_step", train_step)):
        t = alternate({k: (lambda k=k, fn=fn: fn(k)) for k in models}, args.repeats, args.device)
        record[what] = {
            "img_per_s": {k: args.batch / sorted(v)[len(v) // 2] for k, v in t.wall.items()},
            "subnormal_vs_flushed": compare(t, "subnormal", "flushed", args.clock),
            "fft_vs_flushed": compare(t, "fft", "flushed", args.clock),
        }
    aliased = {k: build(k, args.device) for k in ("aliased_flushed", "aliased_subnormal")}
    w = aliased["aliased_subnormal"].vone_block.gabor_weight
    record["aliased_subnormal_taps"] = float(((w != 0) & (w.abs() < tiny)).float().mean())
    t = alternate({k: (lambda m=m: attack_pass(m)) for k, m in aliased.items()},
                  max(2, args.repeats // 2), args.device)
    record["aliased_attack_pass"] = {
        "img_per_s": {k: args.batch / sorted(v)[len(v) // 2] for k, v in t.wall.items()},
        "subnormal_vs_flushed": compare(t, "aliased_subnormal", "aliased_flushed", args.clock),
    }
    finish(args, record)


if __name__ == "__main__":
    main()
