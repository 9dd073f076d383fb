"""Ensemble adversarial training (advlab.train.advtrain): config checks, batch composition, source
schedule, checkpoint card, resume, cache."""

from __future__ import annotations

import shutil

import pytest
import torch

import advlab.train.advtrain as advtrain
from advlab.attacks import FGSM
from advlab.train import TrainConfig, fit
from advlab.train.advtrain import AdvTrainConfig, adv_train
from advlab.train.cached import ensure_advtrained
from advlab.train.checkpoint import load_checkpoint, read_card

SMALL = dict(epochs=2, train_size=256, test_size=64, batch_size=64)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a busy shared CPU, OpenMP threads spin against each other."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def statics(tmp_path_factory):
    """Two tiny static models (MLPs trained for one epoch on 256 images)."""
    root = tmp_path_factory.mktemp("static")
    paths = []
    for seed in (0, 1):
        out = root / f"mlp{seed}"
        fit(TrainConfig("mnist-mlp", epochs=1, train_size=256, test_size=64, seed=seed), out,
            progress=False)
        paths.append(str(out))
    return paths


@pytest.mark.parametrize("kw, match", [
    (dict(eps=0.0), "eps must be in"),
    (dict(eps=1.5), "eps must be in"),
    (dict(adv_fraction=0.0), "adv_fraction"),
    (dict(adv_weight=-1.0), "adv_weight"),
    (dict(schedule="cyclic"), "schedule must be one of"),
    (dict(labels="gt"), "labels must be"),
    (dict(include_self=False), "no source of adversarial examples"),
    (dict(epochs=0), "epochs must be"),
])
def test_config_rejects_bad_values(kw, match):
    with pytest.raises(ValueError, match=match):
        AdvTrainConfig("mnist-mlp", **kw)


def test_config_rejects_unknown_model_and_single_path():
    with pytest.raises(ValueError, match="unknown model"):
        AdvTrainConfig("no-such-model")
    with pytest.raises(TypeError, match="single path"):
        AdvTrainConfig("mnist-mlp", static="runs/mlp")


def test_sources_order_and_identity_uses_weights_not_paths(statics, tmp_path):
    cfg = AdvTrainConfig("mnist-mlp", static=tuple(statics))
    assert cfg.sources == ["self", *statics]
    moved = tmp_path / "moved"
    shutil.copytree(statics[0], moved)
    cfg2 = AdvTrainConfig("mnist-mlp", static=(str(moved), statics[1]))
    assert cfg.identity() == cfg2.identity()
    assert "static" not in cfg.identity() and len(cfg.identity()["static_sha256"]) == 2


def test_half_of_each_batch_is_fgsm_from_the_rotating_source(statics, tmp_path, monkeypatch):
    calls = []
    real_run = FGSM.run

    def spy(self, model, x, y, *a, **kw):
        calls.append((model, x.shape[0], float(self.eps)))
        return real_run(self, model, x, y, *a, **kw)

    monkeypatch.setattr(FGSM, "run", spy)
    cfg = AdvTrainConfig("mnist-mlp", static=tuple(statics), eps=0.25, epochs=1,
                         train_size=256, test_size=16, batch_size=64)
    res = adv_train(cfg, tmp_path / "run", progress=False)
    train_calls = calls[:4]  # 4 batches of 64; later calls are the test-set FGSM metrics
    assert [n for _, n, _ in train_calls] == [32, 32, 32, 32]
    assert all(e == 0.25 for _, _, e in train_calls)
    # rotation: self, static 0, static 1, self
    static_models = [c[0] for c in train_calls]
    assert static_models[0] is static_models[3]
    assert len({id(m) for m in static_models[:3]}) == 3
    row = res.metrics[0]
    assert row["source_batches"] == {"self": 2, statics[0]: 1, statics[1]: 1}
    assert 0 <= row["train_adv_acc"] <= 1 and 0 <= row["test_fgsm_acc"] <= 1
    assert set(row["test_fgsm_from_static_acc"]) == set(statics)


def test_random_schedule_is_seeded(statics, tmp_path):
    kw = dict(static=tuple(statics), schedule="random", epochs=1, train_size=640,
              test_size=16)
    a = adv_train(AdvTrainConfig("mnist-mlp", **kw), tmp_path / "a", progress=False)
    b = adv_train(AdvTrainConfig("mnist-mlp", **kw), tmp_path / "b", progress=False)
    assert a.metrics[0]["source_batches"] == b.metrics[0]["source_batches"]
    assert sum(a.metrics[0]["source_batches"].values()) == 10


def test_card_records_statics_config_and_method(statics, tmp_path):
    cfg = AdvTrainConfig("mnist-mlp", static=(statics[0],), eps=0.3, **SMALL)
    adv_train(cfg, tmp_path / "run", progress=False)
    card = read_card(tmp_path / "run")
    assert card["method"].startswith("ensemble adversarial training")
    assert card["advtrain_config"]["eps"] == 0.3
    assert card["advtrain_config"]["static"] == [statics[0]]
    (st,) = card["static_models"]
    assert st["path"] == statics[0] and st["model"] == "mnist-mlp"
    assert st["weights_sha256"] == read_card(statics[0])["weights_sha256"]
    assert st["train_config"]["seed"] == 0
    assert card["epochs_completed"] == 2 and len(card["metrics"]) == 2


def test_killed_run_resumes_to_identical_weights(statics, tmp_path):
    cfg = AdvTrainConfig("mnist-mlp", static=(statics[1],), **SMALL)
    full = adv_train(cfg, tmp_path / "full", progress=False)
    part = adv_train(cfg, tmp_path / "part", progress=False, stop_after=1)
    assert len(part.metrics) == 1
    with pytest.raises(FileExistsError):
        adv_train(cfg, tmp_path / "part", progress=False)
    resumed = adv_train(cfg, tmp_path / "part", progress=False, resume=True)
    assert resumed.resumed_from == 1
    a, _ = load_checkpoint(tmp_path / "full")
    b, _ = load_checkpoint(tmp_path / "part")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert [r["train_loss"] for r in full.metrics] == [r["train_loss"] for r in
                                                       resumed.metrics]
    other = AdvTrainConfig("mnist-mlp", static=(statics[1],), **{**SMALL, "seed": 5})
    with pytest.raises(ValueError, match="cannot resume"):
        adv_train(other, tmp_path / "part", progress=False, resume=True)


def test_ensure_advtrained_trains_once(statics, tmp_path, monkeypatch):
    cfg = AdvTrainConfig("mnist-mlp", static=(statics[0],), epochs=1, train_size=128,
                         test_size=16)
    first = ensure_advtrained(cfg, tmp_path, progress=False)
    assert read_card(first)["epochs_completed"] == 1

    def boom(*a, **kw):
        raise AssertionError("trained again although cached")

    monkeypatch.setattr(advtrain, "adv_train", boom)
    assert ensure_advtrained(cfg, tmp_path, progress=False) == first
