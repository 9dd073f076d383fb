"""Evaluation helpers return data that matches a count by hand."""

from __future__ import annotations

import pytest
import torch

from advlab.attacks import FGSM, MIFGSM, PGD
from advlab.evaluate import clean_accuracy, evaluate_attack, predict, random_targets
from conftest import blobs


def test_untargeted_counts_match_by_hand(trained_cnn):
    x, y = blobs(300, seed=31)
    atk = MIFGSM(eps=0.15, steps=5)
    r = evaluate_attack(trained_cnn, atk, (x, y), batch_size=64, keep_per_example=True,
                        progress=False)
    x_adv = torch.cat([atk(trained_cnn, x[i:i + 64], y[i:i + 64]) for i in range(0, 300, 64)])
    clean = predict(trained_cnn, x)
    adv = predict(trained_cnn, x_adv)
    ok = clean == y
    assert r.n == 300 and r.n_correct == int(ok.sum())
    assert r.clean_accuracy == pytest.approx(float(ok.float().mean()))
    assert r.robust_accuracy == pytest.approx(float((adv == y).float().mean()))
    assert r.success_rate == pytest.approx(float((adv != y).float().mean()))
    assert r.success_rate_on_correct == pytest.approx(float((adv[ok] != y[ok]).float().mean()))
    assert r.robust_accuracy <= r.clean_accuracy
    assert r.max_norm == pytest.approx(0.15, abs=1e-6) and 0 < r.mean_norm <= r.max_norm + 1e-12
    assert torch.equal(r.per_example.adv_pred, adv)
    assert r.as_dict()["attack"] == "mifgsm" and "per_example" not in r.as_dict()


def test_targeted_success_counts_hits(trained_cnn):
    x, y = blobs(200, seed=32)
    r = evaluate_attack(trained_cnn, PGD(eps=0.3, steps=10), (x, y), targets=random_targets(0),
                        keep_per_example=True, progress=False)
    pe = r.per_example
    assert r.targeted and (pe.target != pe.label).all()
    assert r.success_rate == pytest.approx(float((pe.adv_pred == pe.target).float().mean()))
    assert r.success_rate > 0.8


def test_dataloader_and_transfer(trained_cnn):
    x, y = blobs(100, seed=33)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    torch.manual_seed(9)
    other = type(trained_cnn)().eval()
    white = evaluate_attack(trained_cnn, FGSM(eps=0.2), loader, progress=False)
    black = evaluate_attack(trained_cnn, FGSM(eps=0.2), loader, eval_model=other,
                            progress=False)
    assert white.n == black.n == 100
    assert black.clean_accuracy == pytest.approx(clean_accuracy(other, loader,
                                                                progress_bar=False))
    assert white.success_rate > 0.5


def test_clean_evaluation_and_empty_data(trained_cnn):
    x, y = blobs(50, seed=34)
    r = evaluate_attack(trained_cnn, None, (x, y), progress=False)
    assert r.robust_accuracy == r.clean_accuracy and r.success_rate == 1 - r.clean_accuracy
    with pytest.raises(ValueError, match="data is empty"):
        evaluate_attack(trained_cnn, None, [], progress=False)
