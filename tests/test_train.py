"""Checkpoints, training with resume, adversarial fine-tuning, and the CLI flags."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from advlab import cli
from advlab.attacks import FGSM, PGD
from advlab.models import create
from advlab.train import FinetuneConfig, TrainConfig, finetune_adversarial, fit, quick_profile
from advlab.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

SMALL = dict(epochs=2, train_size=384, test_size=200, batch_size=64)


def test_checkpoint_round_trips_bit_for_bit(tmp_path):
    torch.manual_seed(0)
    model = create("mnist-cnn")
    save_checkpoint(tmp_path / "c", model, "mnist-cnn", {}, {"seed": 0})
    loaded, card = load_checkpoint(tmp_path / "c")
    assert card["model"] == "mnist-cnn" and card["advlab_version"]
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "pwned"))


def test_crafted_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned.txt"
    payload = pickle.dumps(_Evil(str(marker)))
    # 1) a pickle file given directly as a checkpoint
    (tmp_path / "model.pt").write_bytes(payload)
    with pytest.raises(CheckpointError, match="pickled .pt/.pth files are refused"):
        load_checkpoint(tmp_path / "model.pt")
    # 2) a pickle disguised as the weights of a checkpoint directory
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "card.json").write_text(json.dumps({"model": "mnist-mlp", "model_kwargs": {}}))
    (ck / "model.safetensors").write_bytes(payload)
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_checkpoint(ck)
    assert not marker.exists()


def test_tampered_weights_are_detected(tmp_path):
    save_checkpoint(tmp_path, create("mnist-mlp"), "mnist-mlp", {}, {})
    data = bytearray((tmp_path / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its card"):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize("name", ["mnist-cnn", "vone-mnist-mlp"])
def test_resume_gives_the_same_weights(tmp_path, name):
    kw = ({"preset": "sound", "simple_channels": 4, "complex_channels": 4}
          if name.startswith("vone") else {})
    cfg = TrainConfig(name, model_kwargs=kw, **SMALL)
    full = fit(cfg, tmp_path / "full", progress=False)
    first = fit(cfg, tmp_path / "cut", progress=False, stop_after=1)
    assert len(first.metrics) == 1
    with pytest.raises(FileExistsError, match="resume=True"):
        fit(cfg, tmp_path / "cut", progress=False)
    second = fit(cfg, tmp_path / "cut", progress=False, resume=True)
    assert second.resumed_from == 1 and len(second.metrics) == 2
    a, _ = load_checkpoint(tmp_path / "full")
    b, card = load_checkpoint(tmp_path / "cut")
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert card["epochs_completed"] == 2
    assert [m["test_acc"] for m in full.metrics] == [m["test_acc"] for m in second.metrics]
    with pytest.raises(ValueError, match="cannot resume"):
        fit(TrainConfig(name, model_kwargs=kw, **{**SMALL, "lr": 0.5}), tmp_path / "cut",
            resume=True, progress=False)


def test_finetune_command_draws_the_curves(tmp_path):
    fit(TrainConfig("mnist-cnn", **SMALL), tmp_path / "base", progress=False)
    assert cli.main(["finetune", str(tmp_path / "base"), "--epochs", "1", "--train-size", "128",
                     "--test-size", "64", "--out", str(tmp_path / "ft"), "--no-progress"]) == 0
    assert (tmp_path / "ft" / "curves.csv").is_file()
    assert (tmp_path / "ft" / "curves.png").stat().st_size > 5000


def test_finetune_writes_one_row_per_epoch(tmp_path):
    fit(TrainConfig("mnist-cnn", **SMALL), tmp_path / "base", progress=False)
    res = finetune_adversarial(tmp_path / "base", FGSM(eps=0.35),
                               FinetuneConfig(epochs=3, train_size=256, test_size=128),
                               tmp_path / "ft", progress=False)
    assert [r["epoch"] for r in res.metrics] == [0, 1, 2, 3]
    rows = (tmp_path / "ft" / "curves.csv").read_text().strip().splitlines()
    assert rows[0] == "epoch,clean_acc,adv_acc,train_loss,seconds" and len(rows) == 5
    assert not (tmp_path / "ft" / "curves.png").exists()  # training draws nothing
    _, card = load_checkpoint(tmp_path / "ft")
    assert card["attack"]["name"] == "fgsm" and card["attack"]["eps"] == 0.35
    assert len(card["curves"]) == 4


def test_bad_training_config():
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        TrainConfig("resnet")
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        TrainConfig("mnist-cnn", epochs=0)
    with pytest.raises(ValueError, match="lr must be a finite number > 0, got -1"):
        TrainConfig("mnist-cnn", lr=-1)
    with pytest.raises(ValueError, match="train_size must be <= 60000, got 70000"):
        fit(TrainConfig("mnist-cnn", train_size=70000, epochs=1), "/tmp/never", progress=False)


def test_every_attack_flag_reaches_the_attack():
    args = cli.build_parser().parse_args([
        "attack", "mnist-cnn", "--attack", "pgd", "--eps", "0.2", "--norm", "l2", "--steps",
        "7", "--alpha", "0.05", "--decay", "0.5", "--restarts", "3", "--loss", "cw", "--eot",
        "4", "--no-clip", "--attack-seed", "9"])
    atk = cli.attack_from_args(args)
    assert isinstance(atk, PGD)
    assert (atk.eps, atk.norm.value, atk.steps, atk.alpha, atk.decay, atk.restarts, atk.loss,
            atk.eot_samples, atk.clip, atk.seed) == (0.2, "l2", 7, 0.05, 0.5, 3, "cw", 4,
                                                      False, 9)


def test_every_train_flag_reaches_the_config(monkeypatch, tmp_path):
    seen = {}

    def fake_fit(cfg, out, resume, progress, on_epoch):
        seen.update(cfg=cfg, out=out, resume=resume, progress=progress)
        from advlab.train import TrainResult
        return TrainResult(checkpoint=Path(out), metrics=[{"test_acc": 1.0}])

    monkeypatch.setattr("advlab.train.fit", fake_fit)
    from advlab.data.mnist import locate_mnist

    data = str(locate_mnist("test")[0].parent)  # a folder that holds MNIST
    rc = cli.main(["train", "mnist-cnn", "--epochs", "3", "--batch-size", "32", "--lr", "0.01",
                   "--train-size", "100", "--test-size", "50", "--model-arg", "num_classes=10",
                   "--out", str(tmp_path / "o"), "--resume", "--device", "cpu", "--seed", "5",
                   "--data-root", data, "--no-progress"])
    assert rc == 0
    c = seen["cfg"]
    assert (c.epochs, c.batch_size, c.lr, c.train_size, c.test_size, c.seed, c.device,
            c.data_root, c.model_kwargs) == (3, 32, 0.01, 100, 50, 5, "cpu", data,
                                             {"num_classes": 10})
    assert seen["resume"] and not seen["progress"] and seen["out"] == tmp_path / "o"


def test_cli_attack_end_to_end(tmp_path, capsys):
    fit(TrainConfig("mnist-cnn", **SMALL), tmp_path / "m", progress=False)
    rc = cli.main(["attack", str(tmp_path / "m"), "--attack", "mifgsm", "--eps", "0.3",
                   "--n", "64", "--out", str(tmp_path / "a"), "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and "adversarial accuracy" in out and "success rate" in out
    res = json.loads((tmp_path / "a" / "result.json").read_text())
    assert res["n"] == 64 and res["attack"] == "mifgsm" and res["max_norm"] <= 0.3 + 1e-6
    assert (tmp_path / "a" / "grid.png").stat().st_size > 5000
    assert (tmp_path / "a" / "adversarial.safetensors").exists()


def test_cli_errors_are_clear(capsys):
    assert cli.main(["train", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["attack", "--help"])
    assert "--eps" in capsys.readouterr().out


def test_quick_training_of_the_zoo_cnn_reaches_97_percent(tmp_path, capsys):
    """The README's quick profile: `advlab train mnist-cnn --quick` (20k images, 2 epochs)."""
    assert cli.main(["train", "mnist-cnn", "--quick", "--out", str(tmp_path / "q"),
                     "--no-progress"]) == 0
    _, card = load_checkpoint(tmp_path / "q")
    assert card["train_config"]["train_size"] == 20000 and card["epochs_completed"] == 2
    assert card["metrics"][-1]["test_acc"] >= 0.97, card["metrics"]
    assert "test 9" in capsys.readouterr().out


@pytest.mark.parametrize("model, args, sizes", [
    ("mnist-cnn", [], (20000, None)),
    ("mnist-alexnet", [], (1200, 1000)),
    ("vone-mnist-cnn", [], (6000, 2000)),
    ("vone-mnist-cnn", ["--model-arg", "preset=report"], (2000, 1000)),
    ("vone-mnist-alexnet", ["--model-arg", "preset=report"], (800, 500)),
])
def test_quick_profile_is_per_model_and_flags_override_it(monkeypatch, tmp_path, model, args,
                                                          sizes):
    seen = {}

    def fake_fit(cfg, out, resume, progress, on_epoch):
        seen["cfg"] = cfg
        from advlab.train import TrainResult
        return TrainResult(checkpoint=Path(out), metrics=[{"test_acc": 1.0}])

    monkeypatch.setattr("advlab.train.fit", fake_fit)
    base = ["train", model, "--quick", *args, "--out", str(tmp_path / "o"), "--no-progress"]
    assert cli.main(base) == 0
    c = seen["cfg"]
    assert (c.epochs, c.train_size, c.test_size) == (2, *sizes)
    assert quick_profile(model, **dict(a.split("=") for a in args[1::2])) == {
        "epochs": 2, "train_size": sizes[0], "test_size": sizes[1]}
    assert cli.main(base + ["--train-size", "77", "--epochs", "1"]) == 0
    assert (seen["cfg"].epochs, seen["cfg"].train_size) == (1, 77)


def test_cli_gradient_free_attacks_take_only_their_options(tmp_path, capsys):
    rc = cli.main(["attack", "mnist-mlp", "--attack", "square", "--eps", "0.1", "--n", "8",
                   "--out", str(tmp_path / "s"), "--no-progress"])
    assert rc == 0
    assert json.loads((tmp_path / "s" / "result.json").read_text())["max_norm"] <= 0.1 + 1e-6
    with pytest.raises(SystemExit, match=r"--restarts does not apply to attack 'square' \(got 3\)"):
        cli.main(["attack", "mnist-mlp", "--attack", "square", "--eps", "0.1", "--restarts", "3",
                  "--out", str(tmp_path / "t")])
    with pytest.raises(SystemExit, match="--steps does not apply to attack 'randomnoise'"):
        cli.main(["attack", "mnist-mlp", "--attack", "randomnoise", "--eps", "0.1", "--steps",
                  "5", "--out", str(tmp_path / "u")])
    assert not (tmp_path / "t").exists() and not (tmp_path / "u").exists()
