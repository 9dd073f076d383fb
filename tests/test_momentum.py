"""The momentum-paper reproduction (advlab.experiments.momentum) on a tiny configuration:
every table and figure, the cache (a second run recomputes nothing), a killed run that
resumes to identical tables, the claim checks, the config and the command-line options."""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from advlab.cli.momentum import add_arguments, config_from_args
from advlab.experiments import momentum as mm
from advlab.experiments.momentum import (
    ADV_ROLES,
    ROLES,
    ModelSpec,
    MomentumConfig,
    paper_claims,
    run_momentum,
    specs_from_names,
)
from advlab.experiments.momentum.runner import _quantize
from advlab.models import list_models, register, unregister
from conftest import run_one_and_two

TINY = "test-momentum-tiny-mlp"
TABLES = ["models", "table1", "table1_on_correct", "table2", "table2_on_correct", "table3",
          "table3_on_correct", "paper_table1", "paper_table2", "paper_table3", "eps_sweep",
          "fig_decay", "fig_iterations", "fig_cosine", "table1_side_by_side",
          "table2_side_by_side", "table3_side_by_side", "table1_differences",
          "table2_differences", "table3_differences", "beyond", "beyond_summary"]
FIGURES = ["decay.png", "iterations.png", "eps.png", "cosine.png", "examples.png",
           "beyond.png"]


def tiny_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.fixture(scope="module", autouse=True)
def tiny_model():
    """A 784-32-10 MLP in the registry: trains in a blink, attacks in milliseconds."""
    if TINY not in list_models():
        register(TINY, input_shape=(1, 28, 28), num_classes=10,
                 description="tiny MLP for the momentum tests")(tiny_mlp)
    yield
    unregister(TINY)


def tiny_cfg(**kw) -> MomentumConfig:
    normal = tuple(ModelSpec(r, TINY, seed=i) for i, r in enumerate(ROLES))
    adv = (ModelSpec("Inc-v3ens3", TINY, seed=10, adversarial=True,
                     static=("Inc-v4", "IncRes-v2")),
           ModelSpec("Inc-v3ens4", TINY, seed=11, adversarial=True,
                     static=("Inc-v3", "Inc-v4", "IncRes-v2")),
           ModelSpec("IncRes-v2ens", TINY, seed=12, adversarial=True,
                     static=("Inc-v3", "Inc-v4")))
    base = dict(normal=normal, adversarial=adv, eps=0.2, steps=3, ensemble_steps=4,
                n_images=40, ensemble_images=20, figure_images=20, chunk_size=20,
                mu_grid=(0.0, 1.0, 2.0), iter_grid=(1, 2, 4), eps_grid=(0.1, 0.3),
                train_epochs=1, train_size=256, advtrain_epochs=1, advtrain_size=256,
                train_test_size=100, batch_size=256, beyond_images=40, beyond_sources=2)
    base.update(kw)
    return MomentumConfig(**base)


def table_jsons(out: Path) -> dict[str, dict]:
    return {n: json.loads((out / "tables" / f"{n}.json").read_text()) for n in TABLES}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("momentum")
    res = run_momentum(tiny_cfg(), root / "out", cache_dir=root / "cache", progress=False,
                       threads=1)
    return root, res


def test_every_table_and_figure_is_produced(first_run):
    root, res = first_run
    out = root / "out"
    for name in ("report.md", "report.html", "config.json", "results.json"):
        assert (out / name).is_file(), name
    for n in TABLES:
        assert (out / "tables" / f"{n}.csv").is_file() and (out / "tables" / f"{n}.json").is_file()
    # every success rate carries its Wilson interval: bound columns in the CSV
    header = (out / "tables" / "table1.csv").read_text().splitlines()[0].split(",")
    assert len(header) == 2 + 3 * 7 and header[3].endswith(" lo") and header[4].endswith(" hi")
    for n in ("table1", "table2", "table3", "table1_side_by_side", "eps_sweep", "fig_decay",
              "models", "table1_on_correct"):
        text = (out / "tables" / f"{n}.csv").read_text()
        assert " lo," in text and " hi" in text, n
    for f in FIGURES:
        assert (out / "figures" / f).stat().st_size > 1000, f
    t = table_jsons(out)
    # Table 1: 4 sources x 3 attacks, 7 targets, white-box marks exactly on the diagonal
    t1 = t["table1"]
    assert len(t1["rows"]) == 12 and len(t1["columns"]) == 2 + 7
    for i, (row, marks) in enumerate(zip(t1["rows"], t1["marks"])):
        assert row[1] == mm.ATTACKS[i % 3]
        assert [j for j, m in enumerate(marks) if m == "*"] == [2 + i // 3]
        assert all(0 <= v <= 100 for v in row[2:])
        for v, (lo, hi) in zip(row[2:], t1["intervals"][i][2:]):
            assert 0 <= lo <= v <= hi <= 100 and hi - lo > 0
    # Table 2: 4 held-out models x 3 fusions; the ensemble columns are white-box
    t2 = t["table2"]
    assert len(t2["rows"]) == 12
    assert [r[1] for r in t2["rows"][:3]] == ["Logits", "Predictions", "Loss"]
    assert all(m[2] == m[4] == m[6] == "*" for m in t2["marks"])
    # Table 3: 3 held-out defended models x 3 attacks
    assert len(t["table3"]["rows"]) == 9
    assert [r[0] for r in t["table3"]["rows"][::3]] == [f"-{TINY} ({r})" for r in ADV_ROLES]
    # the paper's numbers sit next to ours
    assert t["paper_table1"]["rows"][2][2:] == [100.0, 48.8, 48.0, 35.6, 15.1, 15.2, 7.8]
    md = (out / "report.md").read_text()
    for title in ("Table 1 side by side", "Table 2 side by side", "Table 3 side by side",
                  "Table 1 (ours", "Eps sweep", "Which of the paper's claims held",
                  "Significant differences", "McNemar"):
        assert title in md
    verdicts = [c["verdict"] for c in res["claims"]]
    assert set(verdicts) <= {"HELD", "NOT HELD", "INCONCLUSIVE", "NOT TESTABLE"}
    assert all(f": {v}." in md for v in verdicts)
    # the side-by-side table pairs each of our rows with the paper's
    side = t["table1_side_by_side"]
    assert [r[2] for r in side["rows"][:2]] == ["ours", "paper"]
    assert side["rows"][5][3:] == [100.0, 48.8, 48.0, 35.6, 15.1, 15.2, 7.8]
    # the returned dict carries the numbers, the claims and the counts
    assert res["attack_calls"] == res["planned"]["attack_units"] > 0
    assert res["eps_rule"] == {"rule": tiny_cfg().eps_rule, "given": True, "chosen": 0.2}
    assert res["trainings"] == 7
    assert {c["name"] for c in res["claims"]} >= {"mi_transfers", "adv_harder", "logits_fusion",
                                                  "ens_vs_adv", "decay_peak", "iterations",
                                                  "cosine"}
    assert set(res["table1"]["Inc-v3|MI-FGSM"]) == set(ROLES + ADV_ROLES)
    o = res["table1"]["Inc-v3|FGSM"]["Inc-v4"]
    assert o["n"] == 40 and 0 <= o["n_correct"] <= 40
    assert len(res["cosine"]["MI-FGSM"]) == 2  # T = 3: two pairs of successive steps
    # shared units: T = 1 is FGSM for both attacks, mu = 1 is the MI-FGSM of the T sweep
    assert res["iterations"]["I-FGSM|1"] == res["iterations"]["MI-FGSM|1"] == \
        res["eps_sweep"]["FGSM|0.2"]
    assert res["decay"]["1"] == res["eps_sweep"]["MI-FGSM|0.2"]
    assert res["decay"]["0"] == res["eps_sweep"]["I-FGSM|0.2"]
    # beyond the paper: 2 sources x (2 baselines + 10 transfer attacks), 7 targets; on the
    # images of Table 1 the baselines are Table 1's own units (computed once)
    b = t["beyond"]
    assert len(b["rows"]) == 2 * 12 and len(b["columns"]) == 2 + 7
    assert [r[1] for r in b["rows"][:12]] == ["I-FGSM", "MI-FGSM"] + list(mm.BEYOND_ATTACKS)
    assert res["beyond"]["Inc-v4|MI-FGSM"] == res["table1"]["Inc-v4|MI-FGSM"]
    for i, marks in enumerate(b["marks"]):
        assert [j for j, m in enumerate(marks) if m == "*"] == [2 + i // 12]
    summ = t["beyond_summary"]
    assert [r[1] for r in summ["rows"]] == ["I-FGSM", "MI-FGSM"] + list(mm.BEYOND_ATTACKS)
    assert summ["rows"][1][5] == "baseline"
    assert {r[5] for r in summ["rows"][2:]} <= {"better", "worse", "undecided"}
    for row, ivs in zip(summ["rows"], summ["intervals"]):
        for v, iv in zip(row[2:4], ivs[2:4]):
            assert iv[0] <= v <= iv[1]
    assert "Beyond the paper" in md


def test_second_run_recomputes_nothing(first_run):
    root, res = first_run
    again = run_momentum(tiny_cfg(), root / "out2", cache_dir=root / "cache", progress=False,
                         threads=1)
    assert again["attack_calls"] == 0 and again["trainings"] == 0
    assert again["planned"]["attack_units_cached"] == again["planned"]["attack_units"]
    assert table_jsons(root / "out2") == table_jsons(root / "out")


def test_killed_run_resumes_with_identical_tables(first_run, tmp_path):
    root, res = first_run
    cache = tmp_path / "cache"
    # reuse the trained models; the adversarial examples start from nothing
    shutil.copytree(root / "cache" / "checkpoints", cache / "checkpoints")

    class Killed(Exception):
        pass

    def kill_after_5(n: int) -> None:
        if n == 5:
            raise Killed

    with pytest.raises(Killed):
        run_momentum(tiny_cfg(), tmp_path / "out", cache_dir=cache, progress=False,
                     on_attack=kill_after_5, threads=1)
    assert not (tmp_path / "out" / "report.md").exists()
    resumed = run_momentum(tiny_cfg(), tmp_path / "out", cache_dir=cache, progress=False,
                           threads=1)
    assert resumed["trainings"] == 0
    assert resumed["attack_calls"] == res["attack_calls"] - 5
    assert table_jsons(tmp_path / "out") == table_jsons(root / "out")


def test_changed_weights_invalidate_only_what_depends_on_them(first_run, tmp_path):
    """Cache keys hold the weights' hash, not the training config: a model retrained to
    other weights (e.g. with another thread count) must not reuse stale results."""
    from advlab.train.checkpoint import load_checkpoint, save_checkpoint

    root, res = first_run
    cache = tmp_path / "cache"
    shutil.copytree(root / "cache", cache)
    ck = cache / "checkpoints" / Path(res["models"]["Res-152"]["checkpoint"]).name
    model, card = load_checkpoint(ck)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(0)))
    keep = {k: v for k, v in card.items() if k not in ("format", "advlab_version", "model",
                                                        "model_kwargs", "weights",
                                                        "weights_sha256")}
    save_checkpoint(ck, model, card["model"], card["model_kwargs"], keep)
    again = run_momentum(tiny_cfg(), tmp_path / "out", cache_dir=cache, progress=False,
                         threads=1)
    assert again["trainings"] == 0  # Res-152 is no static model of the defended ones
    # regenerated: Res-152 as a source (3 attacks x 2 chunks), the Table-2 ensembles that
    # contain it (3 held-out models x 3 fusions x 3 attacks) and every Table-3 ensemble (9)
    assert again["attack_calls"] == 6 + 27 + 9
    assert again["models"]["Res-152"]["key"] != res["models"]["Res-152"]["key"]
    assert again["models"]["Inc-v3"]["key"] == res["models"]["Inc-v3"]["key"]


def test_pred_labels_and_eps_change_the_cache_key(first_run, tmp_path):
    root, _ = first_run
    cache = tmp_path / "cache"
    shutil.copytree(root / "cache" / "checkpoints", cache / "checkpoints")
    small = dict(mu_grid=(1.0,), iter_grid=(3,), eps_grid=(0.2,), n_images=20)
    a = run_momentum(tiny_cfg(labels="pred", **small), tmp_path / "a", cache_dir=cache,
                     progress=False, threads=1)
    assert a["attack_calls"] == a["planned"]["attack_units"] > 0
    assert "clean prediction" in (tmp_path / "a" / "report.md").read_text()


def test_claim_criteria_hold_on_the_papers_own_numbers():
    got = {c.name: c.verdict for c in paper_claims()}
    assert got == {"mi_transfers": "HELD", "adv_harder": "HELD", "logits_fusion": "HELD",
                   "ensemble_mi": "HELD", "ens_vs_adv": "HELD"}


def test_eps_rule_picks_the_smallest_eps_on_i_fgsm_alone(first_run, tmp_path):
    """eps=None: the rule attacks held-apart images with I-FGSM only, picks the smallest
    grid eps where every source reaches the level, and the run uses it."""
    root, _ = first_run
    cache = tmp_path / "cache"
    shutil.copytree(root / "cache" / "checkpoints", cache / "checkpoints")
    small = dict(mu_grid=(1.0,), iter_grid=(3,), n_images=20, ensemble_images=20,
                 figure_images=20, beyond_images=20, eps_rule_images=20,
                 eps_grid=(0.02, 0.1, 0.3))
    res = run_momentum(tiny_cfg(eps=None, **small), tmp_path / "a", cache_dir=cache,
                       progress=False, threads=1)
    rule = res["eps_rule"]
    assert rule["given"] is False and rule["images"] == 20 and rule["first_image"] == 20
    meets = [e for e in ("0.02", "0.1", "0.3")
             if min(rule["success"][e].values()) >= 95.0]
    assert rule["chosen"] == (float(meets[0]) if meets else 0.3) == res["config"]["eps"]
    assert rule["met"] == bool(meets)
    for e, by_src in rule["counts"].items():  # the rates are the counts over 20 images
        assert {r: 100 * k / n for r, (k, n) in by_src.items()} == rule["success"][e]
        assert all(n == 20 for _, n in by_src.values())
    # only I-FGSM (decay 0) was run for the rule, from the normal sources
    assert res["planned"]["rule_units"] == 4 * 3
    assert f"eps = {rule['chosen']:g}" in (tmp_path / "a" / "report.md").read_text()
    table = json.loads((tmp_path / "a" / "tables" / "eps_rule.json").read_text())
    assert [m for m in table["marks"] if any(m)] and table["columns"][-1] == "meets the rule"
    # a given eps skips the rule
    given = run_momentum(tiny_cfg(**small), tmp_path / "b", cache_dir=cache, progress=False,
                         threads=1)
    assert given["eps_rule"]["given"] is True and given["planned"]["rule_units"] == 0


def test_quantize_stays_in_the_ball_and_the_box():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 5, 5), generator=g).float() / 255
    for eps in (16 / 255, 0.15):
        xa = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * eps).clamp(0, 1)
        q = _quantize(xa, x, eps).float() / 255
        assert float((q - x).abs().max()) <= eps + 1e-6
        assert float((q - xa).abs().max()) <= 1 / 255 + 1e-6
        assert 0 <= float(q.min()) and float(q.max()) <= 1


def test_presets_and_validation():
    q, s, f = (MomentumConfig.preset(p) for p in ("quick", "standard", "full"))
    assert (q.steps, q.ensemble_steps, q.decay) == (10, 20, 1.0)
    for c in (q, s, f):
        assert [x.role for x in c.normal] == list(ROLES)
        assert [x.role for x in c.adversarial] == list(ADV_ROLES)
        assert c.eps is None and c.eps_rule_success == 95.0  # eps from the rule
        # at least four distinct architectures among the seven roles, and every defended
        # model shares the architecture of the normal model it extends
        arch = {x.role: x.arch for x in c.models}
        assert len(set(arch.values())) >= 4
        assert arch["Inc-v3ens3"] == arch["Inc-v3ens4"] == arch["Inc-v3"]
        assert arch["IncRes-v2ens"] == arch["IncRes-v2"]
    assert s.n_images >= 1000 and s.n_ensemble >= 500 and s.n_figure >= 500
    assert f.n_images == 1000 and len(f.mu_grid) == 21 and f.iter_grid == tuple(range(1, 21))
    assert MomentumConfig.preset("quick", eps=0.25).sweep_eps == (0.1, 0.15, 0.2, 0.25, 0.3)
    i = MomentumConfig.preset("full", "imagenet")
    assert abs(i.eps - 16 / 255) < 1e-12 and i.steps == 10 and i.store == "uint8"
    with pytest.raises(ValueError, match="labels"):
        MomentumConfig(labels="gt")
    with pytest.raises(ValueError, match="eps"):
        MomentumConfig(eps=0)
    with pytest.raises(ValueError, match="unique"):
        MomentumConfig(normal=(ModelSpec("A", "mnist-mlp"), ModelSpec("A", "mnist-cnn")),
                       adversarial=())
    with pytest.raises(ValueError, match="static roles"):
        MomentumConfig(adversarial=(ModelSpec("D", "mnist-mlp", adversarial=True,
                                              static=("nope",)),))
    with pytest.raises(ValueError, match="profile"):
        MomentumConfig.preset("medium")


def test_cost_estimate_counts_shared_units_once():
    cfg = tiny_cfg()
    est = mm.estimate_cost(cfg)
    # 12 Table-1 units x 2 chunks + 36 + 9 ensemble units + figure units not shared
    # (decay mu=2; T=2, T=4 for both attacks; eps 0.1 and 0.3 for three attacks) = 80, and
    # beyond the paper 2 sources x 10 transfer attacks x 2 chunks (its I-FGSM and MI-FGSM
    # baselines are Table 1's units) = 40
    assert est["attack_units"] == 24 + 36 + 9 + 1 + 4 + 6 + 40
    assert mm.estimate_cost(tiny_cfg(beyond=()))["attack_units"] == 80
    assert est["total_gflop"] > est["attack_gflop"] > 0


def test_specs_from_names():
    normal, adv = specs_from_names(["inception_v3.tf_in1k", "inception_v4.tf_in1k",
                                    "inception_resnet_v2.tf_ens_adv_in1k",
                                    "adv:resnet18.a1_in1k"], "imagenet")
    assert [s.role for s in normal] == ["Inc-v3", "Inc-v4"]
    assert [(s.role, s.arch) for s in adv] == [
        ("IncRes-v2ens", "inception_resnet_v2.tf_ens_adv_in1k"),
        ("resnet18.a1_in1k", "resnet18.a1_in1k")]
    normal, adv = specs_from_names(["mnist-cnn", "mnist-mlp"], "mnist")
    assert [(s.role, s.arch) for s in normal] == [("Inc-v3", "mnist-cnn"),
                                                  ("Inc-v4", "mnist-mlp")]
    assert all(set(a.static) <= {"Inc-v3", "Inc-v4"} for a in adv)
    # the student's four models: the defended ones take the architecture of their role
    normal, adv = specs_from_names(["mnist-cnn", "mnist-convnet", "mnist-mlp",
                                    "mnist-alexnet"], "mnist")
    assert [(a.role, a.arch) for a in adv] == [("Inc-v3ens3", "mnist-cnn"),
                                               ("Inc-v3ens4", "mnist-cnn"),
                                               ("IncRes-v2ens", "mnist-mlp")]
    with pytest.raises(ValueError, match="unknown MNIST zoo model"):
        specs_from_names(["mnist-nope"], "mnist")


def test_every_cli_flag_reaches_the_config(tmp_path):
    p = add_arguments(argparse.ArgumentParser())
    args = p.parse_args(["--full", "--eps", "16/255", "--labels", "pred", "--suite", "imagenet",
                         "--data", str(tmp_path), "--models", "inception_v3.tf_in1k",
                         "inception_v4.tf_in1k", "inception_resnet_v2.tf_in1k",
                         "--device", "cpu", "--seed", "3", "--n-images", "7",
                         "--random-init", "--out", "o", "--cache", "c", "--no-progress"])
    cfg = config_from_args(args)
    assert cfg.profile == "full" and cfg.suite == "imagenet"
    assert abs(cfg.eps - 16 / 255) < 1e-12 and cfg.labels == "pred"
    assert cfg.data_dir == str(tmp_path) and cfg.seed == 3 and cfg.n_images == 7
    assert cfg.pretrained is False and cfg.adversarial == ()
    assert [s.arch for s in cfg.normal][0] == "inception_v3.tf_in1k"
    assert args.out == "o" and args.cache == "c" and args.no_progress
    mn = config_from_args(p.parse_args(["--data", str(tmp_path), "--eps", "0.1"]))
    assert mn.suite == "mnist" and mn.profile == "standard" and mn.data_root == str(tmp_path)
    assert mn.eps == 0.1
    with pytest.raises(SystemExit):
        p.parse_args(["--quick", "--full"])
    with pytest.raises(SystemExit):
        p.parse_args(["--eps", "2"])


def test_add_arguments_keeps_options_the_parser_already_has():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda")
    p.add_argument("--seed", type=int, default=7)
    add_arguments(p)
    args = p.parse_args([])
    assert args.device == "cuda" and args.seed == 7 and args.profile == "standard"


# -- torchrun ----------------------------------------------------------------------------------
#: ``advlab reproduce momentum`` on the tiny configuration (the CLI, the tiny model registered)
CLI_SCRIPT = textwrap.dedent('''
    import sys
    import advlab.cli
    import test_momentum as tm
    from advlab.cli import momentum
    from advlab.models import register

    register(tm.TINY, input_shape=(1, 28, 28), num_classes=10, description="tiny")(tm.tiny_mlp)
    momentum.config_from_args = lambda args: tm.tiny_cfg(eps=None, eps_rule_images=20)
    sys.exit(advlab.cli.main(["reproduce", "momentum", "--out", "out", "--cache", "cache",
                              "--no-progress", "--threads", "1"]))
''')
#: results.json entries that measure the run rather than the experiment
RUN_KEYS = ("seconds", "total_seconds", "compute_seconds", "computed_gflop", "gflop_per_s",
            "projection")


def without_run_lines(text: bytes) -> list[str]:
    """The report without the lines that state how long the run took."""
    return [line for line in text.decode().splitlines()
            if "Wall time of this run" not in line and "Projected time" not in line]


def test_torchrun_two_processes_write_the_same_files(tmp_path):
    """``torchrun --nproc-per-node 2 -m advlab reproduce momentum`` deals the units to the
    ranks and writes the same tables, figures and config as one process (separate caches, so
    both compute everything; the same relative paths, so the files name the same places)."""
    out1, out2, a, b = run_one_and_two(tmp_path, CLI_SCRIPT)
    assert sorted(a) == sorted(b)
    assert {f"tables/{n}.csv" for n in TABLES} <= set(a)
    exact = [n for n in a if n not in ("results.json", "report.md", "report.html")]
    assert [n for n in exact if a[n] != b[n]] == []  # tables, figures, config.json
    for name in ("report.md", "report.html"):
        assert without_run_lines(a[name]) == without_run_lines(b[name]), name
    r1, r2 = json.loads(a["results.json"]), json.loads(b["results.json"])
    # the same work, counted on two ranks: equal FLOPs, summed in another order
    assert r1["computed_gflop"] == pytest.approx(r2["computed_gflop"], rel=1e-9)
    for r in (r1, r2):
        for k in RUN_KEYS:
            r.pop(k)
        for m in r["models"].values():  # how fast each model trained
            m["train_metrics"].pop("seconds")
            m["train_metrics"].pop("images_per_s")
    assert r1 == r2  # counters summed over the ranks: every unit computed exactly once
    assert r2["attack_calls"] == r2["planned"]["attack_units"] + r2["planned"]["rule_units"]
    assert r2["planned"]["rule_units"] == 4 * 2 and r2["trainings"] == 7
    assert r2["eps_rule"]["given"] is False and r2["config"]["eps"] == r2["eps_rule"]["chosen"]
    # only rank 0 prints, and nothing lands outside out/ and the cache
    assert out2.count("report: ") == 1 and out1.count("report: ") == 1
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["cache", "out"]
