"""The ``reproduce`` and ``audit`` commands (``reproduce momentum`` takes its options from
``advlab.cli.momentum``)."""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from advlab.cli import momentum
from advlab.cli.options import load_model, parse_budget, parse_kv, resolve_device, show_progress

__all__ = ["add_commands"]


def add_commands(sub: Any, add_attack_options: Callable, add_common: Callable) -> None:
    rp = sub.add_parser("reproduce", help="rerun a source document's experiments end to end",
                        description="Reproduce a document: vonenet-fgsm (the VOneNet-FGSM "
                                    "student report + a sound evaluation) or momentum (Dong et "
                                    "al., CVPR 2018). Under torchrun the work units are dealt "
                                    "to the processes through the shared --cache and rank 0 "
                                    "writes the same files as one process.")
    exp = rp.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)

    p = exp.add_parser("vonenet-fgsm", help="the VOneNet-FGSM report, then a sound evaluation",
                       description="Train the 4 report models and their VOne versions, rerun "
                                   "FGSM as reported, fine-tune, then evaluate soundly (EOT, "
                                   "PGD, Square, transfer, eps sweep, audit).")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true",
                   help="smoke test: small subsets and budgets (under 10 minutes on 2 cores)")
    g.add_argument("--standard", action="store_true",
                   help="the student's exact models on training subsets, sound evaluation on "
                        "200 images (under 45 minutes on 2 cores)")
    g.add_argument("--full", action="store_true", help="the report's protocol (default)")
    p.add_argument("--out", default="runs/vonenet-fgsm", help="output directory")
    p.add_argument("--cache", default=None,
                   help="cache of checkpoints and results (default $ADVLAB_CACHE or "
                        "~/.cache/advlab)")
    p.add_argument("--eps", type=parse_budget, default=None,
                   help="FGSM eps in (0, 1], e.g. 0.35 or 90/255 (default 0.35)")
    p.add_argument("--eot", type=int, default=None, help="EOT samples of the sound protocol")
    p.add_argument("--models", nargs="+", default=None,
                   help="subset of the 8 models (default: all 8; --quick leaves out the two "
                        "AlexNets, too slow to train usefully in minutes on a CPU)")
    p.add_argument("--no-audit", action="store_true", help="skip the audit of the VOne models")
    add_common(p)
    p.set_defaults(func=_torchrun_aware(_reproduce_vonenet))

    p = exp.add_parser("momentum", help="Dong et al. (CVPR 2018) tables and figures",
                       description="Tables 1-3 and the figures of the momentum paper on "
                                   "an MNIST zoo, or on timm ImageNet models.")
    momentum.add_arguments(p)
    p.set_defaults(func=_torchrun_aware(momentum.main_momentum))

    p = sub.add_parser("audit", help="trustworthy-evaluation checklist for a model",
                       description="Run the checklist (randomness/EOT, iterative >= single "
                                   "step, white-box >= transfer, gradient-free <= gradient, "
                                   "eps sweep, unbounded attack, gradients, convergence) and "
                                   "print each flag with its evidence. Exit code 1 when the "
                                   "evaluation cannot be trusted.")
    p.add_argument("model", help="checkpoint directory or registry name")
    p.add_argument("--eps", type=parse_budget, default=0.3,
                   help="Linf eps in (0, 1], e.g. 0.3 or 8/255 (default 0.3)")
    p.add_argument("--n", type=int, default=200, help="test images (default 200)")
    p.add_argument("--eot", type=int, default=8, help="EOT samples for randomised models")
    p.add_argument("--quick", action="store_true", help="fewer steps/queries")
    p.add_argument("--json", default=None, help="also write the flags as JSON here")
    p.add_argument("--model-arg", action="append", default=None, metavar="KEY=VALUE")
    add_common(p)
    p.set_defaults(func=_audit)


def _torchrun_aware(fn: Callable[[argparse.Namespace], int]
                    ) -> Callable[[argparse.Namespace], int]:
    """``fn``, run as one process or as one rank of a torchrun job.

    Under torchrun (``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set) this process joins the
    process group first -- gloo on CPU, nccl with ``--device cuda`` (each rank on
    ``cuda:LOCAL_RANK``) -- and leaves it afterwards. The experiment deals its work units to
    the ranks through the shared ``--cache`` and rank 0 writes the files; the other ranks
    only log errors.
    """

    def run(args: argparse.Namespace) -> int:
        import logging

        if not all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
            return fn(args)
        import torch.distributed as dist

        from advlab.evaluate.distributed import cleanup, init_from_env

        dev = resolve_device(getattr(args, "device", "cpu") or "cpu", True)
        owned = not (dist.is_available() and dist.is_initialized())
        info = init_from_env("nccl") if dev.type == "cuda" else \
            init_from_env("gloo", device=dev)
        logger = logging.getLogger("advlab")
        level = logger.level
        if info.rank != 0:
            logger.setLevel(logging.ERROR)  # rank 0 speaks for the job
        try:
            return fn(args)
        finally:
            logger.setLevel(level)
            if owned:
                cleanup()

    run.__name__ = getattr(fn, "__name__", "run")
    run.__doc__ = fn.__doc__
    return run


def _reproduce_vonenet(args: argparse.Namespace) -> int:
    from advlab.experiments.vonenet import VoneNetConfig, run_vonenet

    over: dict[str, Any] = {"seed": args.seed, "device": args.device}
    if args.eps is not None:
        over["eps"] = args.eps
    if args.eot is not None:
        over["eot_samples"] = args.eot
    if args.models:
        over["models"] = tuple(args.models)
    profile = "quick" if args.quick else "standard" if args.standard else "full"
    cfg = VoneNetConfig.preset(profile, **over)
    t0 = time.perf_counter()
    res = run_vonenet(cfg, args.out, cache_dir=args.cache, progress=show_progress(args),
                      audit=not args.no_audit)
    if res is None:  # another rank of a torchrun job: its share is in the cache
        return 0
    for line in res["claims"]:
        print(line)
    print(f"done in {time.perf_counter() - t0:.0f} s")
    print(f"report: {Path(args.out) / 'report.html'} (and report.md, CSV/JSON tables, figures/)")
    return 0


def _audit(args: argparse.Namespace) -> int:
    from advlab.evaluate.audit import audit
    from advlab.train import load_split

    margs = [parse_kv(a) for a in (args.model_arg or [])]
    model, name, _ = load_model(args.model, args.device, margs)
    x, y = load_split("test", args.n, args.data_root, args.device)
    rep = audit(model, x, y, args.eps, eot_samples=args.eot, seed=args.seed, quick=args.quick)
    print(f"audit of {name} at Linf eps {args.eps} on {x.shape[0]} test images")
    for f in rep.flags:
        status = "PASS" if f.passed else f.severity.upper()
        print(f"[{status:4s}] {f.name}: {f.evidence}")
    verdict = "trustworthy" if rep.trustworthy else "NOT trustworthy"
    print(f"verdict: the evaluation is {verdict}")
    if args.json:
        Path(args.json).write_text(json.dumps(rep.as_dict(), indent=2, default=str))
    return 0 if rep.trustworthy else 1
