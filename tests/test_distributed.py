"""Sharded evaluation: 1 process and 2 torchrun processes give exactly the same results."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from advlab.attacks import PGD
from advlab.evaluate import evaluate_attack, random_targets
from advlab.evaluate.distributed import (
    DistInfo,
    check_shared_dir,
    deal,
    gather_results,
    get_world_size,
    init_from_env,
    is_main,
    shard_indices,
    sharded_evaluate_attack,
)
from conftest import blobs

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.parametrize("strided", [False, True])
@pytest.mark.parametrize("n, world", [(0, 1), (1, 3), (7, 3), (10, 2), (12, 4), (5, 8)])
def test_shards_are_disjoint_balanced_and_cover(n, world, strided):
    shards = [list(shard_indices(n, r, world, strided=strided)) for r in range(world)]
    flat = sorted(i for s in shards for i in s)
    assert flat == list(range(n))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    assert shards == [list(shard_indices(n, r, world, strided=strided)) for r in range(world)]
    if not strided:
        assert all(s == list(range(s[0], s[0] + len(s))) for s in shards if s)


@pytest.mark.parametrize("args, exc, pattern", [
    ((5, 2, 2), ValueError, r"rank must lie in \[0, 1\], got 2"),
    ((5, 0, 0), ValueError, "world must be >= 1, got 0"),
    ((-1, 0, 1), ValueError, "n must be >= 0, got -1"),
    ((5.0, 0, 1), TypeError, "n must be an int, got 5.0"),
])
def test_shard_indices_errors(args, exc, pattern):
    with pytest.raises(exc, match=pattern):
        shard_indices(*args)


def test_single_process_helpers_are_no_ops(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    info = init_from_env()
    assert info == DistInfo() and not info.distributed
    assert is_main() and get_world_size() == 1
    assert gather_results({"a": 1}) == [{"a": 1}]


def test_bad_environment_is_named(monkeypatch):
    monkeypatch.setenv("RANK", "one")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(ValueError, match="environment variable RANK must be an integer, "
                                         "got 'one'"):
        init_from_env()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match=r"RANK must lie in \[0, WORLD_SIZE - 1\]"):
        init_from_env()


def same(a, b) -> None:
    da, db = a.as_dict(), b.as_dict()
    assert da.keys() == db.keys()
    for k in da:
        if isinstance(da[k], float) and math.isnan(da[k]):
            assert math.isnan(db[k]), k
        else:
            assert da[k] == db[k], k
    for f in ("label", "clean_pred", "adv_pred", "target", "norm"):
        ta, tb = getattr(a.per_example, f), getattr(b.per_example, f)
        assert (ta is None) == (tb is None) and (ta is None or torch.equal(ta, tb)), f


def test_one_process_sharded_equals_evaluate_attack(trained_cnn):
    x, y = blobs(70, seed=40)
    atk = PGD(eps=0.2, steps=3, restarts=2, seed=5)
    for targets in (None, random_targets(3)):
        ref = evaluate_attack(trained_cnn, atk, (x, y), batch_size=16, keep_per_example=True,
                              progress=False, targets=targets)
        targets2 = random_targets(3) if targets is not None else None
        got = sharded_evaluate_attack(trained_cnn, atk, x, y, batch_size=16,
                                      keep_per_example=True, targets=targets2)
        same(got, ref)


def test_results_do_not_depend_on_the_partition(trained_cnn):
    """What two ranks compute: each batch's rows depend only on the batch and its offset."""
    from advlab.evaluate.core import _evaluate_batch

    x, y = blobs(40, seed=41)
    atk = PGD(eps=0.2, steps=3, seed=1)
    full = evaluate_attack(trained_cnn, atk, (x, y), batch_size=16, keep_per_example=True,
                           progress=False)
    rows = {}
    for b in reversed(range(3)):  # another order, another process: the same rows
        sl = slice(16 * b, 16 * (b + 1))
        rows[b] = _evaluate_batch(trained_cnn, atk, trained_cnn, x[sl], y[sl], 16 * b, None,
                                  None)
    adv = torch.cat([rows[b]["adv"] for b in range(3)])
    norm = torch.cat([rows[b]["norm"] for b in range(3)])
    assert torch.equal(adv, full.per_example.adv_pred)
    assert torch.equal(norm, full.per_example.norm)


SCRIPT = textwrap.dedent('''
    import sys
    import torch
    from torch import nn
    from advlab.attacks import MIFGSM, PGD
    from advlab.evaluate.distributed import cleanup, init_from_env, is_main, sharded_evaluate_attack
    from advlab.evaluate import random_targets

    info = init_from_env()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 10)).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(70, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (70,), generator=g)
    out = {"world": info.world_size}
    runs = {
        "pgd": dict(attack=PGD(eps=0.1, steps=3, restarts=2, seed=4)),
        "pgd_targeted_strided": dict(attack=PGD(eps=0.1, steps=3, seed=4),
                                     targets=random_targets(2), strided=True),
        "mifgsm": dict(attack=MIFGSM(eps=0.1, steps=3)),
    }
    for key, kw in runs.items():
        attack = kw.pop("attack")
        res = sharded_evaluate_attack(model, attack, x, y, batch_size=16, keep_per_example=True,
                                      **kw)
        if is_main():
            out[key] = res
        else:
            assert res is None
    if is_main():
        torch.save(out, sys.argv[1])
    cleanup()
''')


def run(cmd: list[str], cwd: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(SRC), ADVLAB_PROGRESS="0")
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_torchrun_two_processes_equal_one(tmp_path):
    script = tmp_path / "shard_eval.py"
    script.write_text(SCRIPT)
    run([sys.executable, str(script), str(tmp_path / "one.pt")], tmp_path)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script), str(tmp_path / "two.pt")], tmp_path)
    one = torch.load(tmp_path / "one.pt", weights_only=False)
    two = torch.load(tmp_path / "two.pt", weights_only=False)
    assert one.pop("world") == 1 and two.pop("world") == 2
    assert one.keys() == two.keys() == {"pgd", "pgd_targeted_strided", "mifgsm"}
    for key in one:
        same(two[key], one[key])
        assert one[key].n == 70
    assert one["pgd_targeted_strided"].targeted


@pytest.mark.parametrize("costs, world", [([], 3), ([1.0], 2), ([3, 1, 4, 1, 5, 9, 2, 6], 3),
                                          ([1.0] * 7, 2), ([0.0, 0.0, 5.0], 4)])
def test_deal_covers_every_item_and_balances_the_cost(costs, world):
    owners = deal(costs, world)
    assert len(owners) == len(costs) and all(0 <= r < world for r in owners)
    assert owners == deal(list(costs), world)  # every rank computes the same owners
    load = [sum(c for c, r in zip(costs, owners) if r == k) for k in range(world)]
    # greedy, costliest first: no rank carries more than the lightest one plus one item
    assert max(load) - min(load) <= max(costs, default=0)
    if len(costs) >= world and len(set(costs)) == 1:
        assert max(load) - min(load) <= costs[0]


def test_deal_errors():
    with pytest.raises(ValueError, match="world must be an integer >= 1, got 0"):
        deal([1.0], 0)


def test_check_shared_dir_is_a_no_op_in_one_process(tmp_path, monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    check_shared_dir(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


SHARED_SCRIPT = textwrap.dedent('''
    import sys
    from pathlib import Path
    from advlab.evaluate.distributed import (barrier, check_shared_dir, cleanup, get_rank,
                                             init_from_env)

    init_from_env()
    root = Path(sys.argv[1])
    check_shared_dir(root / "shared")  # the same directory on every rank: passes
    barrier()
    if get_rank() == 0:
        assert list((root / "shared").iterdir()) == []  # the probe is gone
    try:  # another directory on each rank, as on two nodes without a shared filesystem
        check_shared_dir(root / f"rank{get_rank()}", option="--cache")
    except RuntimeError as e:
        (root / f"error{get_rank()}.txt").write_text(str(e))
    cleanup()
''')


def test_check_shared_dir_names_the_ranks_that_do_not_share_it(tmp_path):
    script = tmp_path / "shared.py"
    script.write_text(SHARED_SCRIPT)
    run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script), str(tmp_path)], tmp_path)
    for r in (0, 1):  # every rank fails, with the same diagnosis
        msg = (tmp_path / f"error{r}.txt").read_text()
        assert "is not shared by all processes: rank(s) [1] do not see rank 0's files" in msg
        assert msg.startswith(f"--cache '{tmp_path / f'rank{r}'}'")
