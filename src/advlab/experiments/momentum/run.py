"""The entry point: :func:`run_momentum` runs the reproduction and writes its report."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from advlab._io import default_cache_dir, jsonable
from advlab.experiments.momentum.config import MomentumConfig, specs_from_names
from advlab.experiments.momentum.render import _write_outputs
from advlab.experiments.momentum.runner import _Runner
from advlab.report import atomic_write_json


def run_momentum(cfg: MomentumConfig | None, out_dir: str | os.PathLike[str], *,
                 cache_dir: str | os.PathLike[str] | None = None, progress: bool = True,
                 suite: str | None = None, data_dir: str | os.PathLike[str] | None = None,
                 models: Sequence[str] | None = None,
                 on_attack: Callable[[int], None] | None = None,
                 threads: int | str | None = None) -> dict[str, Any] | None:
    """Run the reproduction and write the report; return the results (plain data).

    Under ``torchrun``, with the process group joined
    (:func:`advlab.evaluate.distributed.init_from_env`, as ``advlab reproduce momentum``
    does), the training units and the attack chunks are dealt to the ranks,
    which store them in the cache (``cache_dir`` must be the same directory for
    all ranks: checked); rank 0 then assembles the results from the cache, writes the same
    files as one process and returns the results; the other ranks write nothing in
    ``out_dir`` and return None. The counters (``attack_calls``, ``trainings``, computed
    FLOPs and seconds) are summed over the ranks.

    Args:
        cfg: the configuration (None: the quick preset of ``suite``).
        out_dir: where the report, tables, figures, ``config.json`` and ``results.json`` go.
        cache_dir: trained models, adversarial examples and predictions (default
            ``$ADVLAB_CACHE`` or ``~/.cache/advlab``).
        progress: one progress bar with an ETA over the whole experiment.
        suite, data_dir, models: overrides of ``cfg`` (``models``: see
            :func:`specs_from_names`).
        on_attack: called with the running count after each adversarial chunk is generated
            and stored (for logging, or to interrupt a run in tests).
        threads: torch intra-op threads during the run (restored afterwards); ``"auto"``:
            1 when the machine is oversubscribed (1-minute load average >= CPU count), where
            several OpenMP threads per process spin against each other (measured 5-20x
            slower on a busy 2-core machine), else torch's default; None: unchanged.

    Returns:
        A dict with the tables' numbers (``table1``, ``table2``, ``table3``, ``decay``,
        ``iterations``, ``eps_sweep``, ``cosine``), ``models``, ``claims``,
        ``attack_calls`` (adversarial chunks generated in this call: 0 when everything was
        cached), ``trainings``, timings, ``report`` (path of ``report.html``).
    """
    t_start = time.perf_counter()
    if cfg is None:
        cfg = MomentumConfig.preset("quick", suite or "mnist")
    elif suite is not None and suite != cfg.suite:
        cfg = MomentumConfig.preset(cfg.profile, suite, seed=cfg.seed, device=cfg.device,
                                    labels=cfg.labels)
    if data_dir is not None:
        cfg = dataclasses.replace(cfg, data_dir=str(data_dir))
    if models is not None:
        normal, adv = specs_from_names(models, cfg.suite)
        cfg = dataclasses.replace(cfg, normal=normal, adversarial=adv)
    from advlab.evaluate.distributed import get_rank

    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    out = Path(out_dir)
    if get_rank() == 0:
        out.mkdir(parents=True, exist_ok=True)
    saved_threads = torch.get_num_threads()
    n_threads = _resolve_threads(threads)
    if n_threads is not None:
        torch.set_num_threads(n_threads)
    try:
        runner = _Runner(cfg, out, cache, progress, on_attack)
        results = runner.run()
        if results is None:  # another rank of a torchrun job: its share is in the cache
            return None
        results["config"] = jsonable(runner.cfg)
        results["threads"] = torch.get_num_threads()
        runner.notes.append(f"torch threads: {results['threads']} (threads={threads!r}).")
        report = _write_outputs(runner, results, out, t_start)
    finally:
        torch.set_num_threads(saved_threads)
    results["report"] = str(report)
    atomic_write_json(out / "results.json", results)
    return results


def _resolve_threads(threads: int | str | None) -> int | None:
    if threads is None:
        return None
    if threads == "auto":
        try:
            busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
        except OSError:  # pragma: no cover - no load average on this platform
            busy = False
        return 1 if busy else None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, 'auto' or None, got {threads!r}")
    return threads
