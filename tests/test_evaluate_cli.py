"""``advlab evaluate``: 2 torchrun processes write the same bytes as 1; bad arguments fail early
with the bad value named; an interrupted run leaves an earlier run's files intact."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import advlab._io
import advlab.cli
import advlab.cli.options
import advlab.evaluate.distributed
from advlab.cli import main
from advlab.cli.evaluate import RESULT_FILES
from advlab.evaluate.distributed import DistInfo

SRC = Path(__file__).resolve().parents[1] / "src"
DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
            "MASTER_PORT", "TORCHELASTIC_RUN_ID")
# 64 images in batches of 16: 4 batches dealt to the ranks; targeted, so the random targets
# of every batch must also come out the same on every rank
ARGS = ["evaluate", "mnist-mlp", "--attack", "pgd", "--attack", "mifgsm", "--eps", "0.01,0.03",
        "--steps", "3", "--n-images", "64", "--batch-size", "16", "--targeted", "--seed", "3"]


@pytest.fixture(autouse=True)
def _one_process(monkeypatch):
    for k in DIST_ENV:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ADVLAB_PROGRESS", "0")


@contextlib.contextmanager
def threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def test_torchrun_two_processes_write_the_same_files(tmp_path, capsys):
    one, two = tmp_path / "one", tmp_path / "two"
    with threads(1):  # torchrun workers run with OMP_NUM_THREADS=1: compare like with like
        assert main([*ARGS, "--out", str(one)]) == 0
    single_out = capsys.readouterr().out
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(SRC), ADVLAB_PROGRESS="0")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "advlab", *ARGS, "--out", str(two)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    a, b = snapshot(one), snapshot(two)
    assert sorted(a) == sorted(b) == sorted([*RESULT_FILES, "run.json"])  # no stray files
    for name in RESULT_FILES:
        assert a[name] == b[name], name
    run1, run2 = json.loads(a["run.json"]), json.loads(b["run.json"])
    assert (run1["world_size"], run2["world_size"]) == (1, 2)
    assert run2["backend"] == "gloo"

    doc = json.loads(a["results.json"])
    assert [(r["attack"], r["eps"]) for r in doc["results"]] == [
        ("pgd", 0.01), ("pgd", 0.03), ("mifgsm", 0.01), ("mifgsm", 0.03)]
    assert all(r["n"] == 64 and r["targeted"] for r in doc["results"])
    assert doc["config"]["attack_seed"] == 3 and doc["config"]["model_name"] == "mnist-mlp"
    # the numbers are not trivial (0 % or 100 % everywhere would hide a sharding bug)
    assert len({r["success_rate"] for r in doc["results"]}) > 1
    # only rank 0 prints: each line of the single-process output appears once
    for line in single_out.splitlines()[1:-1]:
        assert proc.stdout.count(line) == 1, (line, proc.stdout)
    assert proc.stdout.count("wrote ") == 1


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse errors
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--eps", "-1"], "eps must be a finite number >= 0, got '-1'"),
    (["--eps", "0.1,abc"], "eps must be a number like 0.3 or 16/255, got 'abc'"),
    (["--eps", "8"], "--eps 8 exceeds 1, the whole [0, 1] pixel range"),
    (["--eps", "0.1,0.1"], "--eps lists 0.1 twice"),
    (["--attack", "fgsm,nope"], "unknown attack 'nope'"),
    (["--attack", "pgd", "--attack", "pgd"], "--attack lists 'pgd' twice"),
    (["--attack", "bim,ifgsm"], "--attack lists 'ifgsm' twice (as 'bim' too)"),
    (["--attack", "fgsm,", "--eps", "0.1"], "expected names separated by commas, got 'fgsm,'"),
    (["--steps", "0"], "steps must be an integer >= 1, got 0"),
    (["--n", "0"], "--n must be an integer >= 1, got 0"),
    (["--n", "20000"], "--n 20000 exceeds the 10000 MNIST test images"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["--device", "potato"], "--device must be a torch device such as cpu or cuda, got 'potato'"),
])
def test_bad_arguments_fail_before_any_work(tmp_path, capsys, monkeypatch, extra, message):
    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(advlab.cli.options, "load_model", no_model)
    out = tmp_path / "out"
    code, err = run_main(["evaluate", "mnist-mlp", "--out", str(out), *extra], capsys)
    assert code == 2
    assert message in err, err
    assert not out.exists()


def test_bad_model_and_out_are_named(tmp_path, capsys):
    code, err = run_main(["evaluate", "no-such-model", "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "'no-such-model' is neither a checkpoint directory" in err
    f = tmp_path / "file"
    f.write_text("x")
    code, err = run_main(["evaluate", "mnist-mlp", "--out", str(f)], capsys)
    assert code == 2 and "--out must be a directory" in err
    if not torch.cuda.is_available():
        code, err = run_main(["evaluate", "mnist-mlp", "--device", "cuda", "--out",
                              str(tmp_path / "o")], capsys)
        assert code == 2 and "CUDA is not available" in err


QUICK = ["evaluate", "mnist-mlp", "--attack", "fgsm", "--n", "32", "--batch-size", "16"]


def test_an_interrupted_run_leaves_the_earlier_files_intact(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert main([*QUICK, "--eps", "0.1", "--out", str(out)]) == 0
    before = snapshot(out)
    assert sorted(before) == sorted([*RESULT_FILES, "run.json"])

    # killed during the evaluation: nothing is written
    real = advlab.evaluate.distributed.sharded_evaluate_attack
    calls = []

    def dies_on_second_pair(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(advlab.evaluate.distributed, "sharded_evaluate_attack", dies_on_second_pair)
    with pytest.raises(KeyboardInterrupt):
        main([*QUICK, "--eps", "0.2,0.3", "--out", str(out)])
    assert snapshot(out) == before
    monkeypatch.setattr(advlab.evaluate.distributed, "sharded_evaluate_attack", real)

    # a write fails (disk full) after the others were written: no file is replaced
    real_open = advlab._io.atomic_open

    @contextlib.contextmanager
    def full_disk(path, mode="w", **kw):
        with real_open(path, mode, **kw) as f:
            yield f
            if Path(path).name == "results.md":
                raise OSError(28, "No space left on device")

    monkeypatch.setattr(advlab._io, "atomic_open", full_disk)
    with pytest.raises(OSError, match="No space left"):
        main([*QUICK, "--eps", "0.2", "--out", str(out)])
    assert snapshot(out) == before  # old bytes, and no temporary files left behind
    monkeypatch.setattr(advlab._io, "atomic_open", real_open)

    capsys.readouterr()
    assert main([*QUICK, "--eps", "0.2", "--out", str(out)]) == 0
    after = snapshot(out)
    assert after["results.json"] != before["results.json"]
    assert json.loads(after["results.json"])["config"]["eps"] == [0.2]


def test_other_ranks_compute_but_neither_write_nor_print(tmp_path, monkeypatch, capsys):
    """Rank 1 of 2: evaluates its shards (None comes back) and returns without output."""
    for k, v in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(advlab.evaluate.distributed, "init_from_env",
                        lambda *a, **k: DistInfo(rank=1, world_size=2, local_rank=1,
                                                 backend="gloo"))
    calls = []
    monkeypatch.setattr(advlab.evaluate.distributed, "sharded_evaluate_attack",
                        lambda *a, **k: calls.append(1))
    out = tmp_path / "out"
    assert main([*QUICK, "--eps", "0.1,0.2", "--out", str(out)]) == 0
    assert len(calls) == 2
    assert not out.exists()
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("experiment, module, fn", [
    ("vonenet-fgsm", "advlab.experiments.vonenet", "run_vonenet"),
    ("momentum", "advlab.cli.momentum", "run_momentum"),
])
def test_reproduce_runs_as_one_rank_of_a_torchrun_job(tmp_path, monkeypatch, capsys,
                                                      experiment, module, fn):
    """Under torchrun, reproduce joins the process group (gloo on CPU), runs the experiment
    (which deals its work to the ranks; rank 1 gets None back), prints nothing on rank 1 and
    leaves the group."""
    import importlib
    import logging

    for k, v in (("RANK", "1"), ("WORLD_SIZE", "2"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(k, v)
    calls = []

    def init(backend=None, **kw):
        calls.append(("init", backend, str(kw.get("device"))))
        return DistInfo(rank=1, world_size=2, local_rank=1, backend="gloo")

    monkeypatch.setattr(advlab.evaluate.distributed, "init_from_env", init)
    monkeypatch.setattr(advlab.evaluate.distributed, "cleanup", lambda: calls.append(("cleanup",)))
    monkeypatch.setattr(importlib.import_module(module), fn,
                        lambda *a, **k: calls.append(("run", k["cache_dir"])))
    level = logging.getLogger("advlab").level
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(["reproduce", experiment, "--quick", "--out", str(out), "--cache",
                 str(cache)]) == 0
    assert calls == [("init", "gloo", "cpu"), ("run", str(cache)), ("cleanup",)]
    assert capsys.readouterr().out == "" and not out.exists()
    assert logging.getLogger("advlab").level == level  # restored for whatever runs next
