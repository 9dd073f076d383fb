"""``advlab evaluate``: one model against a grid of attacks x budgets, on one or many processes.

    advlab evaluate runs/mnist-cnn --attack fgsm,pgd --eps 0.1,0.2,0.3 --n 1000 --out runs/eval
    torchrun --standalone --nproc-per-node 4 -m advlab evaluate runs/mnist-cnn --n-images 1000 \
        ... --out runs/eval     (torchrun takes --n for its own --nnodes: write --n-images)

Output, in ``DIR``:

* ``results.json``: the configuration and one row per (attack, eps): clean and robust
  accuracy and success rates (fractions in [0, 1]), mean and max perturbation norms, and the
  attack's full configuration;
* ``results.csv`` and ``results.md``: the same rows as a table (percentages);
* ``run.json``: how this run went (wall time, number of processes, backend, versions).

``results.*`` depend on the arguments only, not on how many processes computed them: under
``torchrun`` each process evaluates a shard of the batches with
:func:`advlab.evaluate.distributed.sharded_evaluate_attack`, rank 0 gathers the rows, and only
rank 0 prints and writes, so the bytes equal a single-process run's (for models that draw no
noise of their own, with the same number of threads per process). Everything run-specific goes to
``run.json`` instead.

Files are rendered in memory after all evaluations finished, then written atomically and
together (:func:`advlab._io.atomic_open`): an interrupted run leaves an earlier run's
files exactly as they were, never half-written.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from advlab.cli import options

__all__ = ["add_command", "cmd_evaluate", "plan_attacks", "render_results", "RESULT_FILES"]

log = logging.getLogger(__name__)

DEFAULT_ATTACKS = ("fgsm", "pgd")
DEFAULT_EPS = (0.1, 0.2, 0.3)
#: the files whose bytes do not depend on the number of processes (run.json does).
RESULT_FILES = ("results.json", "results.csv", "results.md")


def add_command(sub: Any, add_attack_options: Callable, add_common: Callable) -> None:
    """Register ``evaluate`` on the ``advlab`` subcommands."""

    p = sub.add_parser(
        "evaluate", help="robust accuracy under a grid of attacks x eps (torchrun: sharded)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Evaluate a checkpoint or a registry model on the first N MNIST test\n"
                    "images under every (attack, eps) pair; write DIR/results.json,\n"
                    "results.csv and results.md (plus run.json: timings, processes).\n\n"
                    "Under torchrun the batches are dealt to the processes (gloo on CPU,\n"
                    "nccl with --device cuda, one GPU per process) and rank 0 writes the\n"
                    "same results.* files as a single process:\n\n"
                    "  torchrun --standalone --nproc-per-node 4 -m advlab evaluate MODEL \\\n"
                    "      --n-images 1000 --attack fgsm,pgd --eps 0.1,0.2,0.3 --out DIR\n\n"
                    "--steps applies to the iterative attacks (not fgsm); --attack-seed\n"
                    "defaults to --seed here.")
    p.add_argument("model", help="checkpoint directory or registry name (untrained)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--n", "--n-images", dest="n", type=int, default=1000, metavar="N",
                   help="first N test images (default 1000); under torchrun spell it "
                        "--n-images, as torchrun reads --n as an abbreviation of its --nnodes")
    p.add_argument("--batch-size", type=int, default=256,
                   help="examples per batch; the unit dealt to the processes (default 256)")
    p.add_argument("--targeted", action="store_true",
                   help="random wrong-class targets (seeded by --seed; the same for every pair)")
    p.add_argument("--model-arg", type=options.parse_kv, action="append", metavar="KEY=VALUE",
                   help="model keyword argument (repeatable), for registry names")
    add_attack_options(p, default_attack=",".join(DEFAULT_ATTACKS),
                       default_eps=",".join(f"{e:g}" for e in DEFAULT_EPS), multi=True)
    add_common(p)
    p.set_defaults(func=cmd_evaluate, attack_seed=None)


# -- validation --------------------------------------------------------------------------
def _flatten(values: list[list[Any]] | None, default: tuple[Any, ...]) -> list[Any]:
    return [v for group in values for v in group] if values else list(default)


def _attack_seed(args: argparse.Namespace) -> int:
    return args.attack_seed if args.attack_seed is not None else args.seed


def plan_attacks(args: argparse.Namespace) -> list[tuple[str, float, Any]]:
    """``(attack name, eps, attack)`` for every pair the options ask for, in order (all
    attacks first at the first eps, ...: attack-major). Raises ValueError / TypeError naming
    the bad value; builds nothing but the attack objects."""
    from advlab.attacks import create_attack
    from advlab.threat import Norm

    names = _flatten(args.attack, DEFAULT_ATTACKS)
    eps_list = _flatten(args.eps, DEFAULT_EPS)
    norm = Norm.parse(args.norm)
    for e in eps_list:
        if norm is Norm.LINF and e > 1:
            raise ValueError(f"--eps {e:g} exceeds 1, the whole [0, 1] pixel range, under the "
                             f"linf norm (did you mean {e:g}/255?)")
    seen_eps: set[float] = set()
    for e in eps_list:
        if e in seen_eps:
            raise ValueError(f"--eps lists {e:g} twice")
        seen_eps.add(e)
    seed = _attack_seed(args)
    plan: list[tuple[str, float, Any]] = []
    canonical: dict[str, str] = {}
    for name in names:
        # the canonical name ("bim" is "ifgsm"); unknown names raise here, naming the value
        probe = create_attack(name, eps=eps_list[0])
        kind = getattr(probe, "name", name)
        if kind in canonical:
            raise ValueError(f"--attack lists {name!r} twice"
                             + (f" (as {canonical[kind]!r} too)" if canonical[kind] != name
                                else ""))
        canonical[kind] = name
        for e in eps_list:
            ns = argparse.Namespace(**vars(args))
            ns.attack, ns.eps, ns.attack_seed = name, e, seed
            if kind == "fgsm":
                ns.steps = None  # single step by definition; --steps is for iterative attacks
            plan.append((kind, e, options.attack_from_args(ns)))
    return plan


def _check_args(args: argparse.Namespace) -> None:
    from advlab.models import list_models

    for opt, v in (("--n", args.n), ("--batch-size", args.batch_size)):
        if v < 1:
            raise ValueError(f"{opt} must be an integer >= 1, got {v}")
    if not Path(args.model).exists() and args.model not in list_models():
        raise ValueError(f"{args.model!r} is neither a checkpoint directory nor a model name "
                         f"({', '.join(list_models())})")


# -- rendering -------------------------------------------------------------------------
def _row(kind: str, eps: float, attack: Any, result: Any) -> dict[str, Any]:

    d = result.as_dict()
    return {"attack": kind, "norm": d.pop("norm"), "eps": eps,
            "steps": getattr(attack, "steps", None), **{k: v for k, v in d.items()
                                                        if k not in ("attack", "eps")},
            "attack_config": options.attack_json(attack)}


def _pct(v: float | None) -> float | None:
    return None if v is None else 100 * v


def render_results(config: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, str]:
    """File name -> text of ``results.json``, ``results.csv`` and ``results.md``."""
    from advlab._io import to_jsonable
    from advlab.report.tables import Table

    doc = to_jsonable({"config": config, "results": rows})
    what = "targeted" if config["targeted"] else "untargeted"
    table = Table(
        title=f"{config['model_name']}: {what} attacks on the first {config['n']} MNIST test "
              f"images",
        columns=["attack", "norm", "eps", "steps", "n", "clean %", "robust %", "success %",
                 "success on correct %", "mean norm", "max norm"],
        rows=[[r["attack"], r["norm"], r["eps"], r["steps"], r["n"],
               _pct(r["clean_accuracy"]), _pct(r["robust_accuracy"]), _pct(r["success_rate"]),
               _pct(r["success_rate_on_correct"]), r["mean_norm"], r["max_norm"]]
              for r in doc["results"]],
        notes=f"Model {config['model']}; batch size {config['batch_size']}, attack seed "
              f"{config['attack_seed']}. success on correct: among the images classified "
              f"correctly without attack. Norms: of the perturbation, in the attack's norm.",
        formats={"eps": ".4g", "mean norm": ".4f", "max norm": ".4f"},
    )
    return {
        "results.json": json.dumps(doc, indent=2, ensure_ascii=False, allow_nan=False) + "\n",
        "results.csv": table.to_csv_text(),
        "results.md": f"# advlab evaluate: {config['model_name']}\n\n{table.to_markdown()}\n",
    }


def _write_together(out: Path, files: dict[str, str]) -> None:
    """Write every file atomically and together: each goes to a temporary file first, and
    the renames over the old files happen only once all of them are written and flushed, in
    reverse order (the first file of ``files`` last). A failure while writing leaves every
    old file in place."""
    from advlab._io import atomic_open

    out.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        for name, text in files.items():
            f = stack.enter_context(atomic_open(out / name, "w"))
            f.write(text)
            f.flush()  # a full disk fails here, before any rename


# -- the command -----------------------------------------------------------------------------
def cmd_evaluate(args: argparse.Namespace) -> int:
    """Run ``advlab evaluate`` (in one process, or as one rank of a torchrun job)."""
    import torch

    from advlab import __version__
    from advlab.evaluate import random_targets
    from advlab.evaluate.distributed import cleanup, init_from_env, sharded_evaluate_attack
    from advlab.train import load_split

    t0 = time.perf_counter()
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    launched = options.torchrun_env()
    main_rank = not launched or os.environ.get("RANK") == "0"
    # 1. everything that can be checked, before any work (every rank checks the same values;
    #    the output directory, rank 0's alone, was checked by the command line's main)
    _check_args(args)
    plan = plan_attacks(args)
    dev = options.resolve_device(args.device, launched)
    out = Path(args.out)
    margs = list(args.model_arg or [])
    x, y = load_split("test", None, args.data_root, "cpu")
    if args.n > x.shape[0]:
        raise ValueError(f"--n {args.n} exceeds the {x.shape[0]} MNIST test images")
    x, y = x[:args.n], y[:args.n]
    if not main_rank:
        logging.getLogger("advlab").setLevel(logging.ERROR)  # rank 0 speaks for the job

    # 2. join the process group (a no-op without torchrun)
    import torch.distributed as dist

    owned = not (dist.is_available() and dist.is_initialized())
    if dev.type == "cuda" and launched:
        info = init_from_env("nccl")
    else:
        info = init_from_env("gloo", device=dev)
    try:
        dev = info.device
        model, name, card = options.load_model(args.model, str(dev), margs)
        config = {
            "command": "advlab evaluate", "advlab": __version__,
            "model": args.model, "model_name": name,
            "weights_sha256": card.get("weights_sha256") if card else None,
            "trained": card is not None, "model_args": dict(margs),
            "data": "MNIST test split", "data_root": args.data_root, "n": int(x.shape[0]),
            "batch_size": args.batch_size, "targeted": bool(args.targeted),
            "seed": args.seed, "attack_seed": _attack_seed(args), "norm": args.norm,
            "steps": args.steps, "device": args.device,
            "attacks": list(dict.fromkeys(k for k, _, _ in plan)),
            "eps": list(dict.fromkeys(e for _, e, _ in plan)),
        }
        if info.rank == 0:
            print(f"evaluating {name} on {x.shape[0]} MNIST test images: {len(plan)} "
                  f"attack/eps pairs, {info.world_size} process(es)"
                  + (f" ({info.backend})" if info.distributed else ""), flush=True)
        rows = []
        for kind, eps, attack in plan:
            targets = random_targets(args.seed) if args.targeted else None
            res = sharded_evaluate_attack(model, attack, x, y, targets=targets, device=dev,
                                          batch_size=args.batch_size,
                                          progress=options.show_progress(args))
            if res is None:  # not rank 0: the shard is done and handed over
                continue
            rows.append(_row(kind, eps, attack, res))
            print(f"{kind:8s} {res.norm} eps {eps:<7.4g} clean {100 * res.clean_accuracy:6.2f} %"
                  f"  robust {100 * res.robust_accuracy:6.2f} %  success "
                  f"{100 * res.success_rate:6.2f} %  norm mean {res.mean_norm:.4f} max "
                  f"{res.max_norm:.4f}", flush=True)
        if info.rank != 0:
            return 0
        run = {"started_utc": started, "seconds": round(time.perf_counter() - t0, 3),
               "world_size": info.world_size, "backend": info.backend,
               "device": str(dev), "threads_per_process": torch.get_num_threads(),
               "advlab": __version__, "torch": torch.__version__,
               "python": sys.version.split()[0]}
        # run.json first: it is renamed into place last (see _write_together)
        files = {"run.json": json.dumps(run, indent=2) + "\n", **render_results(config, rows)}
        _write_together(out, files)
        print(f"wrote {', '.join(str(out / f) for f in files)}")
        return 0
    finally:
        if owned:
            cleanup()
