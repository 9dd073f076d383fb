"""Why the student's FGSM left VOne models at 93-95 %: the measurements behind the claim.

The student's protocol (their report's listing and public code): the gradient of the
batch-mean cross-entropy from one noise draw, ``x + eps * sign(grad)`` clipped to [0, 1], the
accuracy from another draw. Their VOne front end computes the complex cell as
``sqrt(q0^2 + q1^2)`` without an epsilon; wherever a complex unit's 25x25 window sees only
black background, ``q0 = q1 = 0`` and autograd's derivative is ``0 * inf = NaN``, which the
transposed convolution spreads over the input gradient. ``torch.sign(NaN) = 0``, so FGSM leaves
those pixels where they were. :func:`student_fgsm` reruns that protocol and measures the
mechanism on the same images: the fraction of non-finite gradient entries, the images and
pixels the attack left unchanged, and the same FGSM with finite gradients (the model's
:func:`~advlab.models.vone.finite_gradient_twin`, same weights and noise draws).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from advlab.attacks import FGSM
from advlab.evaluate import predict
from advlab.evaluate.audit import input_gradient
from advlab.models.vone import finite_gradient_twin
from advlab.stats import mcnemar_exact, wilson_interval

__all__ = ["student_fgsm", "rate", "rate_of", "nonfinite_gradient_fraction"]


def rate_of(fraction: float, n: int) -> dict[str, float]:
    """An accuracy ``fraction`` of ``n`` examples in % with its 95 % Wilson interval:
    ``{"acc", "lo", "hi", "n"}`` (a mean over noise draws may make it fractional)."""
    lo, hi = wilson_interval(fraction * n, n)
    return {"acc": 100.0 * fraction, "lo": 100.0 * lo, "hi": 100.0 * hi, "n": n}


def rate(correct: torch.Tensor) -> dict[str, float]:
    """:func:`rate_of` a boolean vector of per-example outcomes."""
    return rate_of(float(correct.float().mean()), int(correct.numel()))


def nonfinite_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                                batch: int = 256) -> tuple[float, float]:
    """(fraction of input-gradient entries, fraction of images with any entry) that are NaN or
    infinite, for the cross-entropy at the current noise draw (see
    :func:`advlab.evaluate.audit.input_gradient`)."""
    bad = ~torch.isfinite(input_gradient(model, x, y, batch).flatten(1))
    return float(bad.float().mean()), float(bad.any(dim=1).float().mean())


def student_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int,
                 reseed: Callable[[nn.Module, int], None], batch: int = 256) -> dict[str, Any]:
    """The student's FGSM on ``model`` and the measurements that explain its number.

    Noise draws (for randomised models, through ``reseed(model, seed)``): ``seed + 1`` for the
    clean accuracy, ``seed + 2`` for every gradient, ``seed + 3`` for every adversarial
    accuracy, so the clipped, unclipped and finite-gradient attacks differ only in what the
    issue is about. Returns accuracies as :func:`rate` dicts (``clean``, ``fgsm`` = as
    reported: clipped, NaN entries stepping by ``sign(NaN) = 0``; ``fgsm_unclipped``;
    ``fgsm_finite`` = the same attack with finite gradients) plus ``nonfinite_entries``,
    ``nonfinite_images``, ``unchanged_images``, ``moved_pixels`` (fractions) and the exact
    McNemar test between the as-reported and the finite-gradient attack on the same images.
    """
    def correct(xa: torch.Tensor) -> torch.Tensor:
        reseed(model, seed + 3)
        return (predict(model, xa) == y).cpu()

    def craft(attack: FGSM, source: nn.Module) -> torch.Tensor:
        reseed(source, seed + 2)
        return torch.cat([attack(source, x[i:i + batch], y[i:i + batch])
                          for i in range(0, x.shape[0], batch)])

    reseed(model, seed + 1)
    clean = (predict(model, x) == y).cpu()
    reseed(model, seed + 2)
    entries, images = nonfinite_gradient_fraction(model, x, y, batch)
    as_reported = FGSM(eps=eps, nonfinite="warn")
    xa = craft(as_reported, model)
    xu = craft(FGSM(eps=eps, clip=False, nonfinite="warn"), model)
    twin = finite_gradient_twin(model)
    if twin is not model:
        xf = craft(FGSM(eps=eps), twin)
    else:  # finite already (the same attack), or no finite version of this model exists
        xf = xa if entries == 0 else None
    delta = (xa - x).flatten(1)
    rep, fin = correct(xa), (correct(xf) if xf is not None else None)
    out: dict[str, Any] = {
        "clean": rate(clean), "fgsm": rate(rep), "fgsm_unclipped": rate(correct(xu)),
        "fgsm_finite": rate(fin) if fin is not None else None,
        "nonfinite_entries": entries, "nonfinite_images": images,
        "unchanged_images": float((delta == 0).all(dim=1).float().mean()),
        "moved_pixels": float((delta != 0).float().mean()),
        "out_of_box_unclipped": float(((xu < 0) | (xu > 1)).float().mean()),
    }
    if fin is not None:
        b, c = int((rep & ~fin).sum()), int((~rep & fin).sum())
        out["paired"] = {"reported_only": b, "finite_only": c, "mcnemar_p": mcnemar_exact(b, c)}
    return out
