"""Agreement with torchattacks (an established library) on the same model and inputs.

torchattacks is installed without its dependencies (``pip install --no-deps torchattacks``;
it needs scipy and not torchvision for these attacks). Its losses use the batch mean and
its momentum divides by the mean |grad|, as advlab's does (the paper writes the L1 norm, a
positive per-example scale away: MI-FGSM's sign steps are the same either way, NI-FGSM's
look-ahead is not).
"""

from __future__ import annotations

import pytest
import torchattacks  # noqa: E402  (a hard requirement of the test suite, see .ci/run)

from advlab.attacks import FGSM, IFGSM, MIFGSM, NIFGSM
from conftest import blobs

EPS, STEPS = 0.12, 10
MAX_DIFF = 1e-6


@pytest.fixture(scope="module")
def xy():
    return blobs(128, seed=21)


def diff(a, b) -> float:
    return float((a - b).abs().max())


def test_fgsm_agrees(trained_cnn, xy):
    x, y = xy
    ours = FGSM(eps=EPS)(trained_cnn, x, y)
    theirs = torchattacks.FGSM(trained_cnn, eps=EPS)(x, y)
    assert diff(ours, theirs) <= MAX_DIFF


def test_bim_agrees(trained_cnn, xy):
    x, y = xy
    ours = IFGSM(eps=EPS, steps=STEPS)(trained_cnn, x, y)
    theirs = torchattacks.BIM(trained_cnn, eps=EPS, alpha=EPS / STEPS, steps=STEPS)(x, y)
    assert diff(ours, theirs) <= MAX_DIFF


@pytest.mark.parametrize("decay", [1.0, 0.5])
def test_mifgsm_agrees(trained_cnn, xy, decay):
    x, y = xy
    ours = MIFGSM(eps=EPS, steps=STEPS, decay=decay)(trained_cnn, x, y)
    theirs = torchattacks.MIFGSM(trained_cnn, eps=EPS, alpha=EPS / STEPS, steps=STEPS,
                                 decay=decay)(x, y)
    assert diff(ours, theirs) <= MAX_DIFF


def test_targeted_mifgsm_agrees(trained_cnn, xy):
    x, y = xy
    t = (y + 4) % 10
    ours = MIFGSM(eps=EPS, steps=STEPS)(trained_cnn, x, y, target=t)
    atk = torchattacks.MIFGSM(trained_cnn, eps=EPS, alpha=EPS / STEPS, steps=STEPS)
    atk.set_mode_targeted_by_function(lambda images, labels: t)
    assert diff(ours, atk(x, y)) <= MAX_DIFF


@pytest.mark.parametrize("decay", [1.0, 0.5])
def test_nifgsm_agrees(trained_cnn, xy, decay):
    x, y = xy
    ours = NIFGSM(eps=EPS, steps=STEPS, decay=decay)(trained_cnn, x, y)
    theirs = torchattacks.NIFGSM(trained_cnn, eps=EPS, alpha=EPS / STEPS, steps=STEPS,
                                 decay=decay)(x, y)
    assert diff(ours, theirs) <= MAX_DIFF
    # and the look-ahead matters: NI is not MI on this model
    assert diff(ours, MIFGSM(eps=EPS, steps=STEPS, decay=decay)(trained_cnn, x, y)) > 0
