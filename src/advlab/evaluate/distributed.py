"""Sharded evaluation with ``torch.distributed`` for runs launched by ``torchrun``.

One process per rank evaluates a shard of the batches; rank 0 gathers the per-example rows
in the original order and builds the same :class:`~advlab.evaluate.RobustnessResult` as a
single process. The result does not depend on the number of processes: the data are cut
into the same global batches as :func:`~advlab.evaluate.evaluate_attack` (``batch_size``),
whole batches are dealt to the ranks, and the attack on the batch starting at example
``offset`` draws from ``batch_seed(attack.seed, offset)`` wherever it runs. So 1, 2 or 8
processes give exactly the single-process numbers (for models that are deterministic given
their input; a model that draws its own noise, e.g. a VOneNet, gives equal statistics only).

Launch (CPU: gloo; CUDA: nccl, one GPU per process)::

    torchrun --standalone --nproc-per-node 2 my_eval.py

    # my_eval.py
    from advlab.evaluate.distributed import init_from_env, is_main, sharded_evaluate_attack
    info = init_from_env()              # no-op when not launched by torchrun
    res = sharded_evaluate_attack(model, attack, x, y, batch_size=256)
    if is_main():
        print(res.as_dict())

Example (a single process: the same result as ``evaluate_attack``):
    >>> import torch
    >>> from advlab.attacks import PGD
    >>> from advlab.evaluate import evaluate_attack
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> x, y = torch.rand(10, 1, 2, 2), torch.randint(0, 3, (10,))
    >>> a = sharded_evaluate_attack(model, PGD(eps=0.3, steps=2), x, y, batch_size=4)
    >>> b = evaluate_attack(model, PGD(eps=0.3, steps=2), (x, y), batch_size=4, progress=False)
    >>> (a.robust_accuracy, a.mean_norm) == (b.robust_accuracy, b.mean_norm)
    True
"""

from __future__ import annotations

import datetime
import inspect
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from advlab._progress import progress as _progress
from advlab.evaluate import core

__all__ = ["DistInfo", "init_from_env", "shard_indices", "gather_results", "is_main",
           "get_rank", "get_world_size", "cleanup", "sharded_evaluate_attack", "barrier",
           "broadcast_object", "deal", "check_shared_dir"]

log = logging.getLogger(__name__)

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: its rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        """True when a process group is initialised."""
        return self.backend is not None


def _env_int(name: str) -> int:
    raw = os.environ[name]
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"environment variable {name} must be >= 0, got {value}")
    return value


def init_from_env(backend: str | None = None, *, device: str | torch.device | None = None,
                  timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by ``torchrun``'s environment variables.

    Reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (``MASTER_ADDR``/``MASTER_PORT`` are read
    by ``torch.distributed``). Without them -- not launched by torchrun -- nothing happens and a
    single-process :class:`DistInfo` is returned. Calling it again returns the current group.

    Args:
        backend: ``"gloo"``, ``"nccl"`` or None: nccl when CUDA is available and ``device`` is
            not a CPU device, else gloo.
        device: the device this rank computes on; default ``cuda:LOCAL_RANK`` with nccl, else
            ``cpu``. With nccl the current CUDA device is set to it.
        timeout_s: collective timeout in seconds.
    """
    dev = torch.device(device) if device is not None else None
    if not all(k in os.environ for k in _ENV):
        missing = [k for k in _ENV if k not in os.environ]
        if len(missing) < len(_ENV):
            log.warning("init_from_env: %s set but %s missing; running as one process",
                        [k for k in _ENV if k in os.environ], missing)
        return DistInfo(device=dev or torch.device("cpu"))
    rank, world, local = (_env_int(k) for k in _ENV)
    if world < 1 or rank >= world:
        raise ValueError(f"RANK must lie in [0, WORLD_SIZE - 1], got RANK={rank}, "
                         f"WORLD_SIZE={world}")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and (dev is None or dev.type == "cuda") \
            else "gloo"
    if backend not in ("gloo", "nccl", "mpi"):
        raise ValueError(f"backend must be 'gloo', 'nccl' or 'mpi', got {backend!r}")
    if dev is None:
        dev = torch.device("cuda", local) if backend == "nccl" else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        kw: dict[str, Any] = {}
        # device_id binds the NCCL communicator to this rank's GPU (torch >= 2.3 only)
        if backend == "nccl" and dev.type == "cuda" and \
                "device_id" in inspect.signature(dist.init_process_group).parameters:
            kw["device_id"] = dev
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s), **kw)
        log.info("rank %d/%d joined the %s process group on %s", rank, world, backend, dev)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local,
                    backend=dist.get_backend(), device=dev)


def cleanup() -> None:
    """Leave the process group (no-op without one), after a barrier: no rank tears down its
    connections while another still completes a collective with it (a rank that returned
    right after ``gather_object`` aborted in gloo's teardown, "terminate called without an
    active exception", once in four CI runs)."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_world_size() > 1:
            dist.barrier()
        dist.destroy_process_group()


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0 and in a single process: the process that writes results."""
    return get_rank() == 0


def shard_indices(n: int, rank: int, world: int, *, strided: bool = False) -> range:
    """The items of ``range(n)`` that ``rank`` of ``world`` processes handles.

    Contiguous (default): balanced consecutive blocks, the first ``n % world`` ranks taking
    one item more. Strided: ``rank, rank + world, ...``. Deterministic; the shards of all
    ranks are disjoint and cover ``range(n)``.

    Example:
        >>> [list(shard_indices(7, r, 3)) for r in range(3)]
        [[0, 1, 2], [3, 4], [5, 6]]
        >>> list(shard_indices(7, 1, 3, strided=True))
        [1, 4]
    """
    for name, v in (("n", n), ("rank", rank), ("world", world)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must be an int, got {v!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if world < 1:
        raise ValueError(f"world must be >= 1, got {world}")
    if not 0 <= rank < world:
        raise ValueError(f"rank must lie in [0, {world - 1}], got {rank}")
    if strided:
        return range(rank, n, world)
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def gather_results(obj: Any, *, dst: int = 0, all_ranks: bool = False) -> list[Any] | None:
    """Collect one picklable object per rank, ordered by rank.

    Returns the list on rank ``dst`` (on every rank with ``all_ranks=True``) and None on the
    others; ``[obj]`` without a process group.
    """
    world = get_world_size()
    if world == 1:
        return [obj]
    if not 0 <= dst < world:
        raise ValueError(f"dst must lie in [0, {world - 1}], got {dst}")
    out: list[Any] = [None] * world
    if all_ranks:
        dist.all_gather_object(out, obj)
        return out
    dist.gather_object(obj, out if get_rank() == dst else None, dst=dst)
    return out if get_rank() == dst else None


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if get_world_size() > 1:
        dist.barrier()


def broadcast_object(obj: Any, *, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself without a process group)."""
    if get_world_size() == 1:
        return obj
    box = [obj if get_rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def deal(costs: Sequence[float], world: int) -> list[int]:
    """The rank that computes each item: the costliest first, each to the least loaded rank
    (ties: the lower rank, then the earlier item). Deterministic: every rank given the same
    costs computes the same owners.

    Example:
        >>> deal([1.0, 5.0, 2.0, 2.0], 2)
        [1, 0, 1, 1]
    """
    if isinstance(world, bool) or not isinstance(world, int) or world < 1:
        raise ValueError(f"world must be an integer >= 1, got {world!r}")
    load = [0.0] * world
    owners = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-float(costs[i]), i)):
        r = min(range(world), key=lambda r: (load[r], r))
        owners[i] = r
        load[r] += float(costs[i])
    return owners


def check_shared_dir(path: str | os.PathLike[str], *, option: str = "--cache") -> None:
    """Fail on every rank unless all ranks see the same directory ``path``.

    Rank 0 writes a token file there, every rank reads it back after a barrier. Work dealt to
    the ranks meets in such a directory (a cache that rank 0 reads at the end): on one node it
    is always shared; across nodes it must sit on a shared filesystem. No-op in one process.
    """
    if get_world_size() == 1:
        return
    import uuid

    root = Path(path)
    token = broadcast_object(uuid.uuid4().hex if get_rank() == 0 else None)
    probe = root / f".shared-check-{token}"
    if get_rank() == 0:
        root.mkdir(parents=True, exist_ok=True)
        probe.write_text(token)
    barrier()
    try:
        seen = probe.read_text() == token
    except OSError:
        seen = False
    votes = gather_results((get_rank(), seen), all_ranks=True) or []
    barrier()
    if get_rank() == 0:
        probe.unlink(missing_ok=True)
    blind = [r for r, ok in votes if not ok]
    if blind:
        raise RuntimeError(
            f"{option} {str(root)!r} is not shared by all processes: rank(s) {blind} do not "
            f"see rank 0's files there. Every rank stores its share of the work in this "
            f"directory and rank 0 assembles the results from it: on several nodes, put it on "
            f"a shared filesystem")


def sharded_evaluate_attack(model: nn.Module, attack: Any, x: torch.Tensor, y: torch.Tensor,
                            *, targets: core.TargetFn | None = None,
                            eval_model: nn.Module | None = None,
                            device: str | torch.device | None = None, batch_size: int = 256,
                            keep_per_example: bool = False, progress: bool = False,
                            label_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
                            | None = None,
                            strided: bool = False, all_ranks: bool = False,
                            ) -> core.RobustnessResult | None:
    """:func:`~advlab.evaluate.evaluate_attack` on ``(x, y)`` split across the ranks.

    Every rank passes the same full ``x`` and ``y`` (and its own copy of the models); the
    global batches of ``batch_size`` examples are dealt to the ranks with
    :func:`shard_indices` (contiguous blocks, or round-robin with ``strided=True``). The
    result equals ``evaluate_attack(model, attack, (x, y), batch_size=batch_size, ...)``
    exactly, whatever the number of processes.

    Args:
        model, attack, eval_model, label_fn, keep_per_example: as in ``evaluate_attack``
            (``label_fn`` must be a per-example function of the batch, e.g. a prediction).
        x, y: all examples ``[N, ...]`` and labels ``[N]``.
        targets: ``fn(x, y, num_classes) -> target`` for a targeted attack. Every rank calls
            it on every global batch in order (so a stateful function such as
            :func:`~advlab.evaluate.random_targets` draws the same targets as one process):
            keep it cheap.
        device: move each batch there (the models must already be there).
        progress: a progress bar on rank 0.
        all_ranks: return the result on every rank (default: rank 0 only, None elsewhere).
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise TypeError(f"x and y must be tensors, got {type(x).__name__} and "
                        f"{type(y).__name__}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} examples but y has {y.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError("data is empty: no examples to evaluate")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    n = x.shape[0]
    rank, world = get_rank(), get_world_size()
    target_model = eval_model if eval_model is not None else model
    n_batches = math.ceil(n / batch_size)

    def batch(b: int) -> tuple[torch.Tensor, torch.Tensor]:
        xb, yb = x[b * batch_size:(b + 1) * batch_size], y[b * batch_size:(b + 1) * batch_size]
        if device is not None:
            xb, yb = xb.to(device), yb.to(device)
        return xb, yb.to(xb.device).long()

    per_batch_targets: list[torch.Tensor] | None = None
    if targets is not None and attack is not None:
        num_classes = int(core._logits(target_model, batch(0)[0][:1]).shape[1])
        per_batch_targets = [targets(*batch(b), num_classes) for b in range(n_batches)]

    mine = shard_indices(n_batches, rank, world, strided=strided)
    rows = []
    for b in _progress(mine, enabled=progress and rank == 0, total=len(mine),
                       desc=f"attack (rank {rank}/{world})"):
        xb, yb = batch(b)
        tfn = None
        if per_batch_targets is not None:
            tb = per_batch_targets[b]

            def tfn(_x: torch.Tensor, _y: torch.Tensor, _c: int, tb: torch.Tensor = tb):
                return tb

        rows.append((b, core._evaluate_batch(model, attack, target_model, xb, yb, b * batch_size,
                                        tfn, label_fn)))
    gathered = gather_results(rows, all_ranks=all_ranks)
    if gathered is None:
        return None
    ordered = sorted((item for part in gathered for item in part), key=lambda t: t[0])
    got = [b for b, _ in ordered]
    if got != list(range(n_batches)):
        raise RuntimeError(f"gathered batches {got} do not cover range({n_batches}); were all "
                           f"ranks given the same data and batch_size?")
    return core._summarize_rows([r for _, r in ordered], attack, keep_per_example)
