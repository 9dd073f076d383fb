"""The pieces of the transfer-attack family that followed MI-FGSM, for the one loop.

Each piece changes *where* or *how* the loop takes its gradient, never the loop itself:

* an **input transformation** maps the (differentiable) current point ``x`` to one or more
  copies; the loop's gradient is the mean over the copies of ``grad_x J(copy(x), y)``,
  back-propagated through the transformation (the chain rule is part of the method):

  - :class:`DiverseInputs` -- DI (Xie et al., "Improving transferability of adversarial
    examples with input diversity", CVPR 2019): with probability ``p`` the batch is resized
    to a random ``rnd x rnd`` (bilinear) and zero-padded at a random offset;
  - :class:`ScaleCopies` -- SI (Lin et al., "Nesterov accelerated gradient and scale
    invariance for adversarial attacks", ICLR 2020): the copies ``x / 2^i``, i < m;
  - :class:`Admix` -- Admix (Wang, He et al., "Admix: enhancing the transferability of
    adversarial attacks", ICCV 2021): ``m2`` copies ``x + eta * x'`` with ``x'`` an image
    drawn from the batch (a constant: no gradient flows into it); combined with the scale
    copies as in the paper (``m1 * m2`` copies in all);

* a **gradient transformation** maps the gradient to another one of the same shape:

  - :class:`GaussianSmoothing` -- TI (Dong et al., "Evading defenses to transferable
    adversarial examples by translation-invariant attacks", CVPR 2019): the gradient
    convolved, channel by channel, with a normalised Gaussian kernel (zero padding, "same"
    size), which equals the gradient of the loss averaged over translated images.

Variance tuning (VMI-/VNI-FGSM; Wang and He, "Enhancing the transferability of adversarial
attacks through variance tuning", CVPR 2021) needs the loop's state (the previous step's
variance), so the loop applies it itself (:class:`~advlab.attacks.base.Attack`'s
``variance_samples``). Every random draw comes from the run's ``torch.Generator``.

Example:
    >>> import torch
    >>> from advlab.attacks.transforms import ScaleCopies, apply_input_transforms
    >>> x = torch.ones(1, 1, 2, 2)
    >>> [float(c.max()) for c in apply_input_transforms((ScaleCopies(3),), x, None)]
    [1.0, 0.5, 0.25]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from advlab._check import positive_int, positive_number

__all__ = ["InputTransform", "DiverseInputs", "ScaleCopies", "Admix", "GaussianSmoothing",
           "gaussian_kernel", "apply_input_transforms"]


class InputTransform(Protocol):
    """Maps a batch ``[N, ...]`` to a list of differentiable copies of the same batch size."""

    def __call__(self, x: torch.Tensor,
                 generator: torch.Generator | None) -> list[torch.Tensor]: ...


def _randint(low: int, high: int, generator: torch.Generator | None,
             device: torch.device) -> int:
    """An integer uniform in ``[low, high)`` (``low`` when the range is empty)."""
    if high <= low + 1:
        return low
    return int(torch.randint(low, high, (1,), generator=generator, device=device))


@dataclass(frozen=True)
class DiverseInputs:
    """DI: with probability ``prob`` resize the batch to ``rnd x rnd`` and pad it.

    ``resize_rate > 1`` is the paper's transformation (for 299-pixel ImageNet images:
    ``rnd`` uniform in ``[299, 330)``, zero-padded to 330 x 330, so the model sees a larger
    image; the rate 330/299 is about 1.1): ``rnd`` uniform in ``[W, int(W * rate))`` and the
    result is ``int(W * rate)`` pixels wide -- the model must accept that size (global
    pooling). ``resize_rate < 1`` shrinks instead (``rnd`` in ``[int(W * rate), W)``, padded
    back to ``W``; torchattacks' default 0.9), for models with a fixed input size; at least
    one pixel of room either way. One draw per batch, as in both codes. ``prob = 0`` is the
    identity.
    """

    prob: float = 0.5
    resize_rate: float = 0.9

    def __post_init__(self) -> None:
        if not isinstance(self.prob, (int, float)) or not 0.0 <= self.prob <= 1.0:
            raise ValueError(f"diversity_prob must be in [0, 1], got {self.prob!r}")
        if not isinstance(self.resize_rate, (int, float)) or not math.isfinite(self.resize_rate) \
                or self.resize_rate <= 0 or self.resize_rate == 1:
            raise ValueError(f"resize_rate must be a finite number > 0 other than 1 (the "
                             f"output size is int(width * rate)), got {self.resize_rate!r}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> list[torch.Tensor]:
        if x.ndim != 4:
            raise ValueError(f"input diversity needs image batches [N, C, H, W], got shape "
                             f"{tuple(x.shape)}")
        if self.prob == 0.0:
            return [x]
        apply = float(torch.rand((1,), generator=generator, device=x.device)) < self.prob
        if not apply:
            return [x]
        width = x.shape[-1]
        other = int(width * self.resize_rate)
        # at least one pixel of room, so that small images are transformed too
        low, out = (width, max(other, width + 1)) if self.resize_rate > 1 \
            else (max(min(other, width - 1), 1), width)
        rnd = _randint(low, out, generator, x.device)
        resized = F.interpolate(x, size=[rnd, rnd], mode="bilinear", align_corners=False)
        rem = out - rnd
        top = _randint(0, rem, generator, x.device)
        left = _randint(0, rem, generator, x.device)
        return [F.pad(resized, [left, rem - left, top, rem - top], value=0.0)]


@dataclass(frozen=True)
class ScaleCopies:
    """SI: the copies ``x / 2^i`` for ``i = 0 .. m - 1`` (the paper's ``m = 5``)."""

    m: int = 5

    def __post_init__(self) -> None:
        positive_int("scale_copies", self.m)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> list[torch.Tensor]:
        return [x if i == 0 else x / (2.0 ** i) for i in range(self.m)]


@dataclass(frozen=True)
class Admix:
    """Admix: ``copies`` images ``x + strength * x[j]``, ``j`` drawn uniformly from the
    batch for each example and copy (the paper: ``m2 = 3``, ``eta = 0.2``; its scale copies
    are :class:`ScaleCopies`, applied after this). The admixed image is a constant."""

    copies: int = 3
    strength: float = 0.2

    def __post_init__(self) -> None:
        positive_int("admix_copies", self.copies)
        if not isinstance(self.strength, (int, float)) or not math.isfinite(self.strength) \
                or self.strength < 0:
            raise ValueError(f"admix_strength must be a finite number >= 0, got "
                             f"{self.strength!r}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None) -> list[torch.Tensor]:
        n = x.shape[0]
        other = x.detach()
        out = []
        for _ in range(self.copies):
            j = torch.randint(0, n, (n,), generator=generator, device=x.device)
            out.append(x + self.strength * other[j])
        return out


def _gaussian_1d(size: int, nsig: float) -> torch.Tensor:
    """The normalised 1-D factor of :func:`gaussian_kernel` (float64)."""
    t = torch.linspace(-nsig, nsig, size, dtype=torch.float64)
    k1 = torch.exp(-0.5 * t * t)
    return k1 / k1.sum()


def gaussian_kernel(size: int, nsig: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The TI kernel ``[size, size]``: the outer product of the standard normal density at
    ``size`` points evenly spaced on ``[-nsig, nsig]``, normalised to sum 1 (computed in
    float64, then cast)."""
    k1 = _gaussian_1d(size, nsig)
    return torch.outer(k1, k1).to(dtype)


@dataclass(frozen=True)
class GaussianSmoothing:
    """TI: convolve the gradient with a ``size x size`` Gaussian kernel on ``[-nsig, nsig]``
    (the paper's ``size = 15``, ``nsig = 3``), each channel alone, zero padding."""

    size: int = 15
    nsig: float = 3.0

    def __post_init__(self) -> None:
        positive_int("kernel_size", self.size)
        positive_number("kernel_nsig", self.nsig)

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        """The 2-D convolution (zero padding, "same" size), computed as ``T_H G T_W^T``
        with ``T`` the banded matrix of the normalised 1-D density: the normalised kernel is
        the outer product of that density, so the two 1-D passes give the 2-D result (to
        rounding) as two small matrix products per image, much cheaper than ``size**2``
        products per pixel."""
        if grad.ndim != 4:
            raise ValueError(f"gradient smoothing needs image batches [N, C, H, W], got shape "
                             f"{tuple(grad.shape)}")
        k1 = _gaussian_1d(self.size, self.nsig)
        t_h = _band(k1, grad.shape[-2]).to(device=grad.device, dtype=grad.dtype)
        t_w = _band(k1, grad.shape[-1]).to(device=grad.device, dtype=grad.dtype)
        return t_h @ grad @ t_w.T


def _band(k1: torch.Tensor, n: int) -> torch.Tensor:
    """``[n, n]`` matrix of the cross-correlation with ``k1`` under zero "same" padding:
    ``out[i] = sum_j T[i, j] in[j]`` with ``T[i, j] = k1[j - i + (len(k1) - 1) // 2]``."""
    size = k1.shape[0]
    left = (size - 1) // 2
    i = torch.arange(n)
    m = i[None, :] - i[:, None] + left  # j - i + left
    inside = (m >= 0) & (m < size)
    return torch.where(inside, k1[m.clamp(0, size - 1)], torch.zeros((), dtype=k1.dtype))


def apply_input_transforms(transforms: Sequence[InputTransform], x: torch.Tensor,
                           generator: torch.Generator | None) -> list[torch.Tensor]:
    """Every copy the transformations make of ``x``, in order (each applies to every copy
    of the one before it)."""
    copies = [x]
    for t in transforms:
        copies = [c2 for c in copies for c2 in t(c, generator)]
    return copies
