"""``advlab reproduce momentum``: the options of the momentum reproduction and its entry point."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from advlab.cli.options import add_progress_options, parse_budget, show_progress
from advlab.experiments.momentum import (
    SUITES,
    MomentumConfig,
    run_momentum,
    specs_from_names,
)
from advlab.report import Table

__all__ = ["add_arguments", "config_from_args", "main_momentum"]


def _threads_value(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"threads must be an integer >= 1 or 'auto', got "
                                         f"{text!r}")
    return n


def _add(parser: argparse.ArgumentParser, *flags: str, **kw: Any) -> None:
    # skip options the caller's parser already defines (e.g. shared --device / --seed)
    if any(f in parser._option_string_actions for f in flags):
        return
    parser.add_argument(*flags, **kw)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``reproduce momentum`` options to ``parser`` (options it already has are
    kept as they are)."""
    if "--quick" not in parser._option_string_actions:
        prof = parser.add_mutually_exclusive_group()
        prof.add_argument("--quick", dest="profile", action="store_const", const="quick",
                          help="CI smoke run: small data, short training, coarse grids "
                               "(minutes; most verdicts INCONCLUSIVE)")
        prof.add_argument("--standard", dest="profile", action="store_const",
                          const="standard",
                          help="enough images to call a claim: Table 1 on 1000, Tables 2-3 "
                               "and the figures on 500 (default; < 45 min on 2 CPU cores)")
        prof.add_argument("--full", dest="profile", action="store_const", const="full",
                          help="the paper's protocol (1000 images, full grids; hours)")
        parser.set_defaults(profile="standard")
    _add(parser, "--suite", choices=SUITES, default="mnist",
         help="mnist (zoo models, trained and cached) or imagenet (timm models)")
    _add(parser, "--eps", type=parse_budget, default=None,
         help="L-inf budget in [0, 1] pixel units, e.g. 0.2 or 16/255 (default: MNIST: "
              "chosen by the eps rule -- the smallest eps of the grid where I-FGSM succeeds "
              "white-box on >= 95 %% of held-apart images on every source; ImageNet: 16/255)")
    _add(parser, "--out", default=None, metavar="DIR",
         help="output directory (default runs/momentum-<suite>-<profile>)")
    _add(parser, "--cache", default=None, metavar="DIR",
         help="cache of models, adversarial examples and predictions (default "
              "$ADVLAB_CACHE or ~/.cache/advlab)")
    _add(parser, "--labels", choices=["true", "pred"], default=None,
         help="attack the ground truth (true, default) or the source's clean prediction "
              "(pred, as the authors' code)")
    _add(parser, "--data", default=None, metavar="DIR",
         help="MNIST: folder with the IDX files; ImageNet: image folder or NIPS 2017 layout")
    _add(parser, "--models", nargs="+", default=None, metavar="NAME",
         help="MNIST: zoo models for the normal roles in order; ImageNet: timm names "
              "(names containing 'adv', or prefixed 'adv:', are adversarially trained)")
    _add(parser, "--n-images", type=int, default=None, metavar="N",
         help="images for Table 1 (default: the profile's)")
    _add(parser, "--random-init", action="store_true",
         help="ImageNet: random-init timm models (tests the pipeline without weights)")
    _add(parser, "--threads", default="auto", type=_threads_value, metavar="N",
         help="torch threads during the run: a number, or auto (default: 1 when the "
              "machine is oversubscribed, where OpenMP threads spin against each other)")
    _add(parser, "--device", default="cpu", help="torch device (default cpu)")
    _add(parser, "--seed", type=int, default=0, help="seed (default 0)")
    add_progress_options(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> MomentumConfig:
    """The :class:`MomentumConfig` that the command-line options describe."""
    suite = getattr(args, "suite", None) or "mnist"
    over: dict[str, Any] = {"seed": getattr(args, "seed", 0) or 0,
                            "device": getattr(args, "device", None) or "cpu"}
    if getattr(args, "eps", None) is not None:
        over["eps"] = float(args.eps)
    if getattr(args, "labels", None):
        over["labels"] = args.labels
    data = getattr(args, "data", None) or getattr(args, "data_root", None)
    if data:
        over["data_root" if suite == "mnist" else "data_dir"] = str(data)
    if getattr(args, "n_images", None):
        over["n_images"] = args.n_images
    if getattr(args, "random_init", False):
        over["pretrained"] = False
    if getattr(args, "models", None):
        over["normal"], over["adversarial"] = specs_from_names(args.models, suite)
    return MomentumConfig.preset(getattr(args, "profile", None) or "standard", suite, **over)


def main_momentum(args: argparse.Namespace) -> int:
    """Run ``advlab reproduce momentum``; print the tables, the claims and the report path."""
    cfg = config_from_args(args)
    out = Path(args.out) if getattr(args, "out", None) else \
        Path("runs") / f"momentum-{cfg.suite}-{cfg.profile}"
    t0 = time.perf_counter()
    res = run_momentum(cfg, out, cache_dir=getattr(args, "cache", None),
                       progress=show_progress(args),
                       threads=getattr(args, "threads", "auto"))
    if res is None:  # another rank of a torchrun job: rank 0 prints and writes
        return 0
    rule = res.get("eps_rule") or {}
    if not rule.get("given", True):
        per = rule["success"][f"{rule['chosen']:g}"]
        print(f"eps rule: {rule['rule']}\n  -> eps = {rule['chosen']:g} (I-FGSM white-box: "
              + ", ".join(f"{r} {v:.1f} %" for r, v in per.items()) + ")\n")
    for name in ("table1_side_by_side", "table2_side_by_side", "table3_side_by_side"):
        p = out / "tables" / f"{name}.json"
        if p.is_file():
            t = json.loads(p.read_text())
            print(Table(t["title"], t["columns"], t["formatted"]).to_markdown())
            print()
    for c in res["claims"]:
        print(f"- {c['sentence']}")
    print(f"\n{res['attack_calls']} attack calls, {time.perf_counter() - t0:.1f} s")
    print(f"report: {res['report']}")
    print(f"        {Path(res['report']).with_suffix('.md')}")
    return 0
