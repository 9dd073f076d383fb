"""The ``advlab`` command line: a thin layer over the Python API.

    advlab list                                  models and attacks
    advlab train mnist-cnn --quick               train a zoo model on MNIST
    advlab finetune runs/mnist-cnn --attack fgsm --eps 0.35 --lr 1e-4
    advlab attack runs/mnist-cnn --attack mifgsm --eps 0.3 --n 1000
    advlab evaluate runs/mnist-cnn --attack fgsm,pgd --eps 0.1,0.2,0.3 --out runs/eval
                                                 (also under torchrun: one shard per process)
    advlab reproduce vonenet-fgsm --quick        the VOneNet-FGSM report, end to end
    advlab audit runs/vone-mnist-cnn --eps 0.35  trustworthy-evaluation checklist
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from advlab.cli import evaluate as evaluate_cmd
from advlab.cli import reproduce
from advlab.cli.options import (
    add_attack_options,
    add_common,
    attack_from_args,
    attack_json,
    check_data_root,
    check_out_dir,
    load_model,
    parse_kv,
    resolve_device,
    show_progress,
    torchrun_env,
)

__all__ = ["main", "build_parser"]

log = logging.getLogger("advlab")


# -- commands ------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from advlab.attacks import list_attacks
    from advlab.models import list_models, model_info

    names = list_models()
    width = max([22, *map(len, names)])
    print("models:" + " " * (width - 5) + "params    MFLOPs  (one forward pass, one example)")
    for name in names:
        info = model_info(name)
        params = "-" if info.params is None else f"{info.params / 1e6:.3f}M"
        mflops = "-" if info.forward_flops is None else f"{info.forward_flops / 1e6:.2f}"
        print(f"  {name:{width}s} {params:>7s} {mflops:>9s}  {info.description}")
    print("attacks:", ", ".join(list_attacks()))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from advlab.train import TrainConfig, fit, quick_profile

    kw: dict[str, Any] = {}
    if args.quick:
        kw.update(quick_profile(args.model, **dict(args.model_arg or [])))
    kw.update(_training_overrides(args))
    cfg = TrainConfig(args.model, model_kwargs=dict(args.model_arg or []), seed=args.seed,
                      device=args.device, data_root=args.data_root, **kw)
    out = Path(args.out) if args.out else Path("runs") / args.model
    t0 = time.perf_counter()

    def show(row: dict[str, Any]) -> None:
        print(f"epoch {row['epoch']:3d}  loss {row['train_loss']:.4f}  train "
              f"{100 * row['train_acc']:.2f}%  test {100 * row['test_acc']:.2f}%  "
              f"{row['seconds']:.1f}s  {row['images_per_s']:.0f} img/s", flush=True)

    res = fit(cfg, out, resume=args.resume, progress=show_progress(args), on_epoch=show)
    print(f"checkpoint: {res.checkpoint}  (test accuracy "
          f"{100 * res.metrics[-1]['test_acc']:.2f}%, {time.perf_counter() - t0:.1f}s)")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from advlab.train import FinetuneConfig, finetune_adversarial

    atk = attack_from_args(args)
    kw: dict[str, Any] = {}
    if args.quick:
        kw.update({"epochs": 3, "train_size": 5000, "test_size": 1000})
    kw.update(_training_overrides(args))
    cfg = FinetuneConfig(seed=args.seed, device=args.device, data_root=args.data_root, **kw)
    out = Path(args.out) if args.out else Path(str(Path(args.checkpoint)) + f"-ft-{atk.name}")
    res = finetune_adversarial(args.checkpoint, atk, cfg, out, progress=show_progress(args))
    from advlab.report.figures import line_plot
    from advlab.train.checkpoint import read_card

    curves = res.metrics
    eps = f"{atk.eps:g}" if isinstance(atk.eps, float) else "per-example"
    line_plot([r["epoch"] for r in curves],
              {"clean": [100 * r["clean_acc"] for r in curves],
               f"adversarial ({atk.name}, eps={eps})": [100 * r["adv_acc"] for r in curves]},
              out / "curves.png", title=f"Adversarial fine-tuning of {read_card(out)['model']}",
              xlabel="epoch", ylabel="test accuracy (%)")
    for r in res.metrics:
        print(f"epoch {r['epoch']:3d}  clean {100 * r['clean_acc']:.2f}%  "
              f"{atk.name} {100 * r['adv_acc']:.2f}%")
    print(f"curves: {out / 'curves.csv'}, {out / 'curves.png'}; checkpoint: {out}")
    return 0


def cmd_attack(args: argparse.Namespace) -> int:

    from advlab._io import atomic_write_bytes, atomic_write_json, state_to_bytes
    from advlab.evaluate import evaluate_attack, predict, random_targets
    from advlab.report.figures import image_grid
    from advlab.train import load_split

    atk = attack_from_args(args)
    model, name, _ = load_model(args.model, args.device, args.model_arg)
    x, y = load_split("test", args.n, args.data_root, args.device)
    targets = random_targets(args.seed) if args.targeted else None
    res = evaluate_attack(model, atk, (x, y), targets=targets, batch_size=args.batch_size,
                          keep_per_example=True, progress=show_progress(args))
    print(f"model {name}  attack {atk.name} ({atk.norm.value}, eps={args.eps})  n={res.n}")
    print(f"clean accuracy       {100 * res.clean_accuracy:6.2f} %")
    print(f"adversarial accuracy {100 * res.robust_accuracy:6.2f} %")
    print(f"success rate         {100 * res.success_rate:6.2f} % (all), "
          f"{100 * res.success_rate_on_correct:6.2f} % (of correctly classified)")
    print(f"perturbation {atk.norm.value} norm: mean {res.mean_norm:.4f}, max {res.max_norm:.4f}")
    out = Path(args.out) if args.out else Path("runs") / f"attack-{name}-{atk.name}"
    out.mkdir(parents=True, exist_ok=True)
    k = min(args.grid, x.shape[0])
    xs, ys = x[:k], y[:k]
    tg = res.per_example.target[:k].to(x.device) if res.per_example.target is not None else None
    xa = atk(model, xs, ys, target=tg)
    atomic_write_bytes(out / "adversarial.safetensors",
                       state_to_bytes({"x": xs, "x_adv": xa, "y": ys}))
    image_grid(xs.cpu(), xa.cpu(), out / "grid.png", orig_labels=predict(model, xs).cpu(),
               adv_labels=predict(model, xa).cpu(), true_labels=ys.cpu(),
               title=f"{name}: {atk.name} eps={args.eps}")
    atomic_write_json(out / "result.json", {**res.as_dict(), "model": name,
                                            "attack_config": attack_json(atk)})
    print(f"saved {out / 'adversarial.safetensors'}, {out / 'grid.png'}, {out / 'result.json'}")
    return 0


def _training_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The training options given on the command line (they override the profile)."""
    keys = ("epochs", "batch_size", "lr", "train_size", "test_size")
    return {k: getattr(args, k) for k in keys if getattr(args, k) is not None}


def _add_training_options(p: argparse.ArgumentParser, lr_help: str) -> None:
    """The options ``train`` and ``finetune`` share (each overrides the profile's value)."""
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None, help=lr_help)
    p.add_argument("--train-size", type=int, default=None, help="first N training images")
    p.add_argument("--test-size", type=int, default=None, help="first N test images")


# -- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from advlab import __version__

    ap = argparse.ArgumentParser(prog="advlab", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"advlab {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("list", help="list the registered models and attacks")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("train", help="train a zoo model on MNIST",
                       description="Train a registry model on MNIST (report defaults: Adam, "
                                   "lr 1e-3, 10 epochs, batch 64) and write a checkpoint.")
    p.add_argument("model", help="registry name, e.g. mnist-cnn or vone-mnist-cnn")
    p.add_argument("--quick", action="store_true",
                   help="smoke profile: 2 epochs on a subset (20k images for the plain models, "
                   "fewer for AlexNet and VOne models; under 2 min each)")
    _add_training_options(p, "learning rate (default 1e-3)")
    p.add_argument("--model-arg", type=parse_kv, action="append", metavar="KEY=VALUE",
                   help="model keyword argument (repeatable), e.g. preset=report")
    p.add_argument("--out", default=None, help="checkpoint directory (default runs/MODEL)")
    p.add_argument("--resume", action="store_true", help="continue a killed run")
    add_common(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help="adversarial fine-tuning of a checkpoint",
                       description="Fine-tune on adversarial examples regenerated each epoch "
                                   "against the current model (the VOneNet-FGSM report's "
                                   "protocol); writes curves.csv and curves.png.")
    p.add_argument("checkpoint")
    p.add_argument("--quick", action="store_true", help="5k images, 3 epochs, 1k test")
    _add_training_options(p, "learning rate (default 1e-4)")
    p.add_argument("--out", default=None)
    add_attack_options(p)
    add_common(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("attack", help="attack a checkpoint or a registry model on MNIST",
                       description="Attack on the MNIST test set: prints clean/adversarial "
                                   "accuracy, success rate and norms; saves the adversarial "
                                   "examples and a PNG grid.")
    p.add_argument("model", help="checkpoint directory or registry name")
    p.add_argument("--n", type=int, default=1000, help="first N test images (default 1000)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--targeted", action="store_true", help="random wrong-class targets")
    p.add_argument("--grid", type=int, default=10, help="images in the PNG grid")
    p.add_argument("--model-arg", type=parse_kv, action="append", metavar="KEY=VALUE")
    p.add_argument("--out", default=None, help="output directory")
    add_attack_options(p, default_attack="fgsm", default_eps=0.35)
    add_common(p)
    p.set_defaults(func=cmd_attack)

    _add_extra_commands(sub)
    return ap


def _add_extra_commands(sub: Any) -> None:
    """Commands that live in the other modules of this package (evaluate, reproduce, audit)."""
    evaluate_cmd.add_command(sub, add_attack_options, add_common)
    reproduce.add_commands(sub, add_attack_options, add_common)


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else
                        logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "command", None):
        ap.print_help()
        return 0
    try:
        # the options every command shares, checked before any work
        if getattr(args, "device", None) is not None:
            resolve_device(args.device, torchrun_env())
        # the output directory is written by rank 0 alone (other machines may not see it)
        if getattr(args, "out", None) is not None and \
                (not torchrun_env() or os.environ.get("RANK") == "0"):
            check_out_dir(Path(args.out))
        if hasattr(args, "data_root") and (args.data_root is not None
                                           or os.environ.get("ADVLAB_DATA")):
            check_data_root(args.data_root)
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
