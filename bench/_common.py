"""Shared helpers of the benchmark scripts: alternating timing, machine and version records.

Every script times its contenders in one process, alternating them, and reports medians. The
order changes from round to round (a rotation, then the same order reversed: AB BA BA AB for
two contenders, all six orders in six rounds for three), so a load drift on a shared machine
hits all of them alike, each takes each position equally often and each runs after each other
one about equally often. The last point matters on CPU: the kernel's page faults of a call
depend on the heap the previous call left behind (glibc returns freed memory to the system
and the next large tensors fault it back in), so a fixed order would bias the comparison.

Each call is timed with two clocks, wall time and the process's CPU time, and its minor page
faults are counted. Ratios use ``--clock`` (default ``cpu``): on a shared machine the CPU time
of a one-thread run counts the work done and not the time spent waiting for a core, so it is
far less noisy; both are recorded. The JSON also records the machine, the load average before
and after, the thread count, the allocator environment and the library versions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(device: str = "cpu") -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "device": device,
    }
    if hasattr(os, "getloadavg"):
        info["loadavg_1_5_15"] = [round(v, 2) for v in os.getloadavg()]
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    # settings that change the timings: threads, the allocator, transparent huge pages
    info["env"] = {k: v for k, v in sorted(os.environ.items())
                   if k.startswith(("MALLOC_", "OMP_", "MKL_")) or k == "THP_MEM_ALLOC_ENABLE"}
    return info


def versions() -> dict[str, str]:
    import advlab

    out = {"python": platform.python_version(), "torch": torch.__version__,
           "advlab": advlab.__version__}
    try:
        import torchattacks
        out["torchattacks"] = torchattacks.__version__
    except Exception:  # optional
        pass
    return out


def base_parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7,
                    help="alternating rounds; medians are reported (default 7)")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="clock of the reported ratios: process CPU time (default; robust to "
                         "other load on a shared machine) or wall time; both are recorded")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    return ap


def setup(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        args.clock = "wall"  # the host's CPU time says nothing about GPU work
    return {"machine_start": machine(args.device), "clock": args.clock,
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class Timings:
    """Seconds per call, per contender, with both clocks (and minor page faults per call)."""

    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    faults: dict[str, list[int]] = field(default_factory=dict)

    def of(self, clock: str) -> dict[str, list[float]]:
        return self.cpu if clock == "cpu" else self.wall

    def add(self, key: str, wall: float, cpu: float, faults: int | None = None) -> None:
        self.wall.setdefault(key, []).append(wall)
        self.cpu.setdefault(key, []).append(cpu)
        if faults is not None:
            self.faults.setdefault(key, []).append(faults)


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def timed(fn: Callable[..., Any], *args: Any, device: str = "cpu",
          **kw: Any) -> tuple[float, float, Any]:
    """``(wall seconds, CPU seconds, result)`` of one call."""
    sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    sync(device)
    return time.perf_counter() - w0, time.process_time() - c0, out


def round_order(names: list[str], r: int) -> list[str]:
    """The contenders' order in round ``r``: a rotation by ``r // 2`` places, reversed in odd
    rounds (two contenders: AB BA BA AB; three: all six orders in six rounds)."""
    k = (r // 2) % len(names)
    order = names[k:] + names[:k]
    return order[::-1] if r % 2 else order


def alternate(fns: dict[str, Callable[[], Any]], repeats: int, device: str = "cpu",
              warmup: int = 1) -> Timings:
    """Time each function ``repeats`` times, one call each per round, in the balanced orders
    of :func:`round_order` (use a multiple of 4 rounds for two contenders, of 6 for three)."""
    names = list(fns)
    for _ in range(warmup):
        for k in names:
            fns[k]()
    t = Timings()
    for r in range(repeats):
        for k in round_order(names, r):
            f0 = minor_faults()
            wall, cpu, _ = timed(fns[k], device=device)
            t.add(k, wall, cpu, minor_faults() - f0)
    return t


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> dict[str, float]:
    """Median, min, max and the inter-quartile range of a list of timings (seconds)."""
    q = statistics.quantiles(xs, n=4) if len(xs) >= 2 else [xs[0]] * 3
    return {"median": med(xs), "min": min(xs), "max": max(xs), "q1": q[0], "q3": q[2]}


def paired_ratio(num: list[float], den: list[float]) -> dict[str, float]:
    """The median of the per-round ratios (rounds are paired; the headline figure), the ratio
    of the medians, the ratio of the fastest calls (noise only ever adds time) and the range
    of the per-round ratios."""
    ratios = [a / b for a, b in zip(num, den, strict=True)]
    return {"median_ratio": med(ratios), "ratio_of_medians": med(num) / med(den),
            "ratio_of_mins": min(num) / min(den), "min_ratio": min(ratios),
            "max_ratio": max(ratios)}


def compare(t: Timings, num: str, den: str, clock: str) -> dict[str, Any]:
    """Ratio ``num / den`` on the chosen clock (top level) and on both clocks (nested)."""
    out: dict[str, Any] = dict(paired_ratio(t.of(clock)[num], t.of(clock)[den]))
    for c in ("cpu", "wall"):
        out[f"{c}_s"] = {num: spread(t.of(c)[num]), den: spread(t.of(c)[den])}
        out[f"{c}_ratio"] = paired_ratio(t.of(c)[num], t.of(c)[den])
    if num in t.faults and den in t.faults:
        out["minor_faults_per_call"] = {num: med(t.faults[num]), den: med(t.faults[den])}
    return out


def finish(args: argparse.Namespace, record: dict[str, Any]) -> None:
    record["machine_end"] = machine(args.device)
    record["versions"] = versions()
    record["command"] = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    text = json.dumps(record, indent=2, default=str)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


CACHE = Path(os.environ.get("ADVLAB_BENCH_CACHE", "/tmp/advlab-bench"))


def trained_model(name: str, device: str = "cpu", epochs: int = 1,
                  train_size: int = 10000) -> torch.nn.Module:
    """A zoo model trained with ``advlab.train.fit`` (cached under ``/tmp/advlab-bench``)."""
    from advlab.train import TrainConfig, fit
    from advlab.train.checkpoint import load_checkpoint

    out = CACHE / f"{name}-e{epochs}-n{train_size}"
    if not (out / "resume.safetensors").exists():
        fit(TrainConfig(name, epochs=epochs, train_size=train_size), out, progress=False)
    model, _ = load_checkpoint(out, device)
    return model.eval()


def mnist_test(n: int, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    from advlab.train import load_split

    return load_split("test", n, None, device)
