"""Peak memory of ensemble attacks: plain vs ``Ensemble(..., low_memory=True)``.

Each configuration runs in its own subprocess (``--child``), which builds K copies of a zoo
model (different initialisations), runs the MI-FGSM attack once to warm up (the first call
also allocates one-time state: oneDNN primitives, the autograd engine), resets the kernel's
RSS high-water mark (``/proc/self/clear_refs``), runs the attack again and reports the peak
resident set size (``VmHWM``) and the RSS before the attack (the interpreter, torch, the
models and the data). tracemalloc does not see torch's allocations, hence the process-level
numbers. The peak RSS counts what the process holds, tensors and allocator slack alike;
with ``--allocator exact`` (the default) the children run with
``MALLOC_MMAP_THRESHOLD_=65536``, so glibc maps every tensor of 64 KiB or more on its own and
unmaps it when freed, the RSS follows the live tensors and peak minus before is the attack's
peak tensor memory; ``--allocator default`` leaves glibc's heap caching on (what a user's
process sees). The configurations: the bare model, then ensembles of 1, 3 and 6 members,
plain and low-memory; each is run ``--repeats`` times (median). The compute price of
``low_memory`` is measured in this process: plain vs low-memory attacks alternating for
``--time-repeats`` rounds. This
process also checks, for each ensemble size, that the low-memory input gradient equals the
plain ensemble's (largest absolute difference, and the relative one to ``max |grad|``).

    python bench/ensemble_memory.py --threads 1 --out bench/results/ensemble_memory.json
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from _common import alternate, base_parser, compare, finish, med, setup


def proc_status(key: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def child(args) -> None:
    from advlab.attacks import MIFGSM, Ensemble
    from advlab.models import create

    if args.threads:
        torch.set_num_threads(args.threads)
    models = []
    for s in range(max(args.k, 1)):
        torch.manual_seed(s)
        models.append(create(args.model).eval())
    target = models[0] if args.k == 0 else Ensemble(models, low_memory=args.low)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    atk = MIFGSM(eps=0.1, steps=args.steps)
    for _ in range(args.warmup):
        atk(target, x, y)
    before = proc_status("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    t0 = time.perf_counter()
    atk(target, x, y)
    seconds = time.perf_counter() - t0
    peak = proc_status("VmHWM") if reset else \
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"rss_before": before, "peak": peak, "hwm_reset": reset,
                      "seconds": seconds}))


def main() -> None:
    ap = base_parser(__doc__)
    ap.set_defaults(repeats=3)
    ap.add_argument("--model", default="mnist-cnn")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--sizes", default="1,3,6", help="ensemble sizes K")
    ap.add_argument("--time-repeats", type=int, default=7,
                    help="alternating rounds of the in-process timing (0: skip)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="attacks run in each child before the measured one (default 1)")
    ap.add_argument("--allocator", choices=("exact", "default"), default="exact",
                    help="exact: the children map every tensor >= 64 KiB on its own, so the "
                         "RSS follows the live tensors (default); default: glibc's own "
                         "heap caching")
    ap.add_argument("--child", action="store_true", help=argparse_hidden())
    ap.add_argument("--k", type=int, default=0, help=argparse_hidden())
    ap.add_argument("--low", action="store_true", help=argparse_hidden())
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    record = setup(args)
    configs = [("single model", 0, False)]
    for k in (int(v) for v in args.sizes.split(",")):
        configs += [(f"{k} members, plain", k, False), (f"{k} members, low_memory", k, True)]
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in configs}
    env = dict(os.environ)
    if args.allocator == "exact":
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    for _ in range(args.repeats):
        for name, k, low in configs:
            cmd = [sys.executable, __file__, "--child", "--k", str(k), "--model", args.model,
                   "--batch", str(args.batch), "--steps", str(args.steps),
                   "--threads", str(args.threads), "--warmup", str(args.warmup)] + \
                (["--low"] if low else [])
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    rows = []
    single = med([r["peak"] for r in runs["single model"]])
    single_work = med([r["peak"] - r["rss_before"] for r in runs["single model"]])
    for name, k, low in configs:
        rs = runs[name]
        peak = med([r["peak"] for r in rs])
        work = med([r["peak"] - r["rss_before"] for r in rs])
        row = {"config": name, "members": k, "low_memory": low,
               "peak_rss_mib": peak / 2**20, "rss_before_mib": med([r["rss_before"]
                                                                    for r in rs]) / 2**20,
               "attack_working_mib": work / 2**20, "peak_over_single": peak / single,
               "working_over_single": work / single_work,
               "attack_s": med([r["seconds"] for r in rs])}
        rows.append(row)
        print(f"{name:24s} peak RSS {row['peak_rss_mib']:8.1f} MiB ({row['peak_over_single']:.2f}x"
              f" single); attack working set {row['attack_working_mib']:7.1f} MiB "
              f"({row['working_over_single']:.2f}x); {row['attack_s']:.2f} s", flush=True)
    from advlab.attacks import MIFGSM, Ensemble
    from advlab.models import create

    timing, grads = [], []
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    atk = MIFGSM(eps=0.1, steps=args.steps)
    for k in (int(v) for v in args.sizes.split(",")):
        models = []
        for s in range(k):
            torch.manual_seed(s)
            models.append(create(args.model).eval())
        plain, low = Ensemble(models), Ensemble(models, low_memory=True)
        g_plain, g_low = atk._gradient(plain, x, y)[0], atk._gradient(low, x, y)[0]
        diff = float((g_low - g_plain).abs().max())
        grads.append({"members": k, "max_abs_diff": diff,
                      "max_abs_grad": float(g_plain.abs().max()),
                      "relative": diff / float(g_plain.abs().max()),
                      "adv_pixels_differing": float((atk(low, x, y) != atk(plain, x, y))
                                                    .float().mean())})
        print(f"{k} members: low_memory gradient vs plain, max |diff| {diff:.3g} "
              f"(max |grad| {grads[-1]['max_abs_grad']:.3g})", flush=True)
        if not args.time_repeats:
            continue
        t = alternate({"low_memory": lambda a=atk, m=low: a(m, x, y),
                       "plain": lambda a=atk, m=plain: a(m, x, y)},
                      args.time_repeats, args.device)
        row = {"members": k, **compare(t, "low_memory", "plain", args.clock)}
        timing.append(row)
        print(f"{k} members: low_memory / plain attack time {row['median_ratio']:.3f} "
              f"({args.clock}; wall {row['wall_ratio']['median_ratio']:.3f})", flush=True)
    record.update({"benchmark": "ensemble_memory", "model": args.model, "batch": args.batch,
                   "steps": args.steps, "repeats": args.repeats, "warmup": args.warmup,
                   "allocator": args.allocator,
                   "child_env": {"MALLOC_MMAP_THRESHOLD_": env.get("MALLOC_MMAP_THRESHOLD_")},
                   "hwm_reset": all(r["hwm_reset"] for rs in runs.values() for r in rs),
                   "rows": rows, "low_memory_time": timing, "gradient_check": grads})
    finish(args, record)


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
