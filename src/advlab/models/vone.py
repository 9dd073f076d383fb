"""VOneBlock: a fixed, stochastic model of primate V1 in front of a CNN (VOneNet).

Reimplemented from the description in Dapello, Marques, Schrimpf, Geiger, Cox & DiCarlo,
"Simulating a Primary Visual Cortex at the Front of CNNs Improves Robustness to Image
Perturbations" (NeurIPS 2020), adapted to 28x28 MNIST as in the "VOneNet-FGSM" student report
(stride 1, 1x1 bottleneck to 32 channels, the report's models as back-ends).

Pipeline: Gabor filter bank (fixed buffers) -> simple cells ``ReLU(q0)`` and complex cells
``sqrt(q0^2 + q1^2) / sqrt(2)`` -> times ``k_exc`` -> stochastic noise (in training *and*
evaluation mode) -> ReLU -> trainable 1x1 convolution without bias (the bottleneck).

Gabor parameters are sampled per channel from macaque V1 measurements: orientation from
De Valois, Yund & Hepler (1982); spatial frequency from De Valois, Albrecht & Thorell (1982);
receptive-field sizes ``nx, ny`` (in cycles) from Ringach (2002), with ``nx`` tied to the spatial
frequency by a Gaussian copula (correlation 0.75, after Schiller, Finlay & Volman 1976).

Because the model is randomized, an honest evaluation averages gradients over the noise
(expectation over transformation, Athalye et al. 2018) and also attacks it with the noise fixed.

Example:
    >>> import torch
    >>> from advlab.models import create
    >>> model = create("vone-mnist-cnn", preset="sound").eval()
    >>> x = torch.rand(2, 1, 28, 28)
    >>> model(x).shape
    torch.Size([2, 10])
    >>> bool((model(x) != model(x)).any())      # noise stays on in eval mode
    True
    >>> with model.frozen_noise(seed=0):
    ...     bool(torch.equal(model(x), model(x)))
    True
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from advlab.models.mnist import MNISTMLP, MNISTAlexNet, MNISTBasicCNN, MNISTConvNet
from advlab.models.registry import register

__all__ = [
    "FFT_MIN_KSIZE",
    "PRESETS",
    "GaborParams",
    "VOneBlock",
    "VOneConfig",
    "VOneNet",
    "finite_gradient_twin",
    "fraction_above_nyquist",
    "gabor_bank_stats",
    "gabor_kernels",
    "sample_gabor_params",
    "vone",
    "vonenet",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- V1 statistics
# Orientation histogram (degrees), De Valois, Yund & Hepler 1982.
ORI_BINS = (-22.5, 22.5, 67.5, 112.5, 157.5)
ORI_COUNTS = (66, 49, 77, 54)
# Peak spatial frequency histogram (cycles/degree), De Valois, Albrecht & Thorell 1982.
SF_BINS = (0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6, 8.0)
SF_COUNTS = (4, 4, 8, 25, 32, 26, 28, 12)
# Receptive-field size in cycles (Gaussian sd times frequency), Ringach 2002: joint histogram
# over log-spaced bins, rows = nx bin, columns = ny bin (counts as tabulated for VOneNet).
NXNY_BINS = tuple(np.logspace(-1, 0.2, 6).tolist())
NXNY_COUNTS = (
    (2, 0, 1, 0, 0),
    (8, 9, 4, 1, 0),
    (1, 2, 19, 17, 3),
    (0, 0, 1, 7, 4),
    (0, 0, 0, 0, 0),
)
NYQUIST = 0.5  # cycles per pixel
#: dicarlolab/vonenet's frequency table has one more bin, [8, 11.2] cycles/degree (8 cells).
DICARLOLAB_SF_BINS = (*SF_BINS, 11.2)
DICARLOLAB_SF_COUNTS = (*SF_COUNTS, 8)
#: ``convention``: how the bank is drawn and laid out. ``"advlab"``: a local
#: ``numpy.random.Generator``, exact truncation at ``sf_max``, ``x`` along columns.
#: ``"dicarlolab"``: the draw sequence of dicarlolab/vonenet's ``generate_gabor_param`` (legacy
#: ``RandomState(seed)``: phase, orientation, a bivariate normal for (nx, sf), then ny;
#: frequency bins cut at the last edge <= ``sf_max``) and its kernels (float32, ``x`` along
#: rows), which the student's code used.
CONVENTIONS = ("advlab", "dicarlolab")
#: ``complex_cell``: ``"smooth"`` = ``sqrt(q0^2 + q1^2 + 1e-8) - 1e-4`` (finite everywhere);
#: ``"exact"`` = ``sqrt(q0^2 + q1^2)`` with autograd's derivative, NaN where both responses
#: are exactly 0 (dicarlolab's and the student's code); ``"safe"`` = the same forward values
#: as ``"exact"`` with the subgradient 0 there (the finite-gradient twin of an exact model).
COMPLEX_CELLS = ("smooth", "exact", "safe")

#: ``conv_mode="auto"`` uses FFT convolution for kernels at least this large (measured on a
#: 2-core CPU with a 64+64 bank: direct and FFT cost about the same from 11x11 to 15x15, FFT
#: wins above; see :class:`VOneBlock`).
FFT_MIN_KSIZE = 15

_COMPLEX_EPS = 1e-8
_ZERO_TOL_ULPS = 4.0


def _cdf(counts) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64)
    return np.concatenate([[0.0], np.cumsum(c) / c.sum()])


def _std_normal_cdf(z: np.ndarray) -> np.ndarray:
    return torch.special.ndtr(torch.from_numpy(np.asarray(z, dtype=np.float64))).numpy()


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True, eq=False)
class GaborParams:
    """Per-channel Gabor parameters of a bank (read-only numpy arrays of equal length).

    Attributes:
        sf_cpd: peak spatial frequency in cycles per degree.
        theta_deg: orientation in degrees, [0, 180).
        phase_deg: phase in degrees, [0, 360).
        nx, ny: envelope sizes in cycles (``sigma = n / frequency``).
        ppd: pixels per degree (``image_size / visual_degrees``).
        input_channel: which input channel each filter reads.
    """

    sf_cpd: np.ndarray
    theta_deg: np.ndarray
    phase_deg: np.ndarray
    nx: np.ndarray
    ny: np.ndarray
    ppd: float
    input_channel: np.ndarray

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value.setflags(write=False)

    def __len__(self) -> int:
        return int(self.sf_cpd.shape[0])

    @property
    def sf(self) -> np.ndarray:
        """Spatial frequency in cycles per pixel (aliased where above 0.5)."""
        return self.sf_cpd / self.ppd

    @property
    def sigma_x(self) -> np.ndarray:
        """Envelope sd across the stripes, in pixels."""
        return self.nx / self.sf

    @property
    def sigma_y(self) -> np.ndarray:
        """Envelope sd along the stripes, in pixels."""
        return self.ny / self.sf


def sample_gabor_params(
    n: int,
    *,
    seed: int = 0,
    distribution: str = "neuronal",
    sf_corr: float = 0.75,
    sf_min: float = 0.0,
    sf_max: float = 5.6,
    visual_degrees: float = 8.0,
    image_size: int = 28,
    in_channels: int = 1,
    convention: str = "advlab",
) -> GaborParams:
    """Sample ``n`` Gabor parameter sets as in VOneNet (Dapello et al. 2020).

    ``distribution="neuronal"``: phase uniform on [0, 360) degrees; orientation, spatial
    frequency and ``(nx, ny)`` from the V1 histograms cited in the module docstring (uniform
    within a bin, log-uniform for frequency and sizes); ``nx`` and frequency are coupled by a
    Gaussian copula with correlation ``sf_corr``; ``ny`` is drawn from its histogram conditional
    on ``nx``'s bin. Frequency is truncated to ``[sf_min, sf_max]`` cycles/degree (exactly; the
    original code cuts at the last bin edge not above ``sf_max``, so its default ``sf_max=6`` is
    ``5.6`` here). ``distribution="uniform"`` is the paper's control: orientation uniform,
    frequency log-uniform on the truncated range, ``nx`` and ``ny`` log-uniform on
    [0.1, 10**0.2], independently.

    ``convention="dicarlolab"`` follows dicarlolab/vonenet's ``generate_gabor_param`` draw for
    draw (see :data:`CONVENTIONS`), so ``seed=0`` gives the bank the student's code built.

    Only a local generator is used: the global RNG is untouched.

    Example:
        >>> p = sample_gabor_params(512, seed=0)
        >>> len(p), round(fraction_above_nyquist(p), 2)
        (512, 0.75)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if distribution not in ("neuronal", "uniform"):
        raise ValueError(f"distribution must be 'neuronal' or 'uniform', got {distribution!r}")
    if not -1.0 <= sf_corr <= 1.0:
        raise ValueError(f"sf_corr must be in [-1, 1], got {sf_corr!r}")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    top = DICARLOLAB_SF_BINS[-1] if convention == "dicarlolab" else SF_BINS[-1]
    lo, hi = max(float(sf_min), SF_BINS[0]), min(float(sf_max), top)
    if not hi > lo:
        raise ValueError(
            f"spatial-frequency range [sf_min, sf_max] = [{sf_min}, {sf_max}] cycles/degree has "
            f"no overlap with the V1 range [{SF_BINS[0]}, {top}]"
        )
    if not visual_degrees > 0:
        raise ValueError(f"visual_degrees must be > 0, got {visual_degrees!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")

    ppd = image_size / float(visual_degrees)
    if convention == "dicarlolab":
        sf, ori, phase, nx, ny = _sample_dicarlolab(n, seed, distribution, sf_corr, sf_min,
                                                    sf_max)
        channel = np.zeros(n, dtype=np.int64)  # one input channel (checked by the block)
        return GaborParams(sf_cpd=sf, theta_deg=ori, phase_deg=phase, nx=nx, ny=ny, ppd=ppd,
                           input_channel=channel)
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0.0, 360.0, n)
    log_bins = np.log10(NXNY_BINS)
    if distribution == "neuronal":
        ori = np.interp(rng.random(n), _cdf(ORI_COUNTS), ORI_BINS)
        ori = np.where(ori < 0, ori + 180.0, ori)
        z = rng.standard_normal((2, n))
        u_nx = _std_normal_cdf(z[0])
        u_sf = _std_normal_cdf(sf_corr * z[0] + math.sqrt(max(0.0, 1.0 - sf_corr**2)) * z[1])
        joint = np.asarray(NXNY_COUNTS, dtype=np.float64)
        nx = 10.0 ** np.interp(u_nx, _cdf(joint.sum(axis=1)), log_bins)
        last_row = int(np.flatnonzero(joint.sum(axis=1))[-1])  # rows with no cells never occur
        row = np.clip(np.searchsorted(NXNY_BINS, nx, side="right") - 1, 0, last_row)
        u_ny = rng.random(n)
        ny = np.empty(n)
        for r in np.unique(row):
            sel = row == r
            ny[sel] = 10.0 ** np.interp(u_ny[sel], _cdf(joint[r]), log_bins)
        sf_cdf = _cdf(SF_COUNTS)
        log2_bins = np.log2(SF_BINS)
        f_lo, f_hi = np.interp(np.log2([lo, hi]), log2_bins, sf_cdf)
        sf = 2.0 ** np.interp(f_lo + u_sf * (f_hi - f_lo), sf_cdf, log2_bins)
    else:
        ori = rng.uniform(0.0, 180.0, n)
        sf = 2.0 ** rng.uniform(math.log2(lo), math.log2(hi), n)
        nx = 10.0 ** rng.uniform(log_bins[0], log_bins[-1], n)
        ny = 10.0 ** rng.uniform(log_bins[0], log_bins[-1], n)
    if in_channels > 1:
        channel = rng.integers(0, in_channels, n)
    else:
        channel = np.zeros(n, dtype=np.int64)
    return GaborParams(
        sf_cpd=sf,
        theta_deg=ori,
        phase_deg=phase,
        nx=nx,
        ny=ny,
        ppd=ppd,
        input_channel=channel,
    )


def _inverse_cdf(u: np.ndarray, weights: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # dicarlolab's order of operations (weights normalised by the caller, then cumsum), which
    # :func:`_cdf` does not follow to the last bit: kept apart for number-for-number sampling
    return np.interp(u, np.hstack(([0.0], weights.cumsum())), edges)


def _sample_dicarlolab(n: int, seed: int, distribution: str, sf_corr: float, sf_min: float,
                       sf_max: float) -> tuple[np.ndarray, ...]:
    """(sf, orientation, phase, nx, ny) drawn in dicarlolab/vonenet's order and arithmetic."""
    rs = np.random.RandomState(seed)
    sf_edges = np.asarray(DICARLOLAB_SF_BINS, dtype=np.float64)
    log_edges = np.log10(np.asarray(NXNY_BINS, dtype=np.float64))
    if distribution == "uniform":
        sf_w = np.ones(len(sf_edges) - 1)
        top = int(np.flatnonzero(sf_edges < sf_max)[-1])
    else:
        sf_w = np.asarray(DICARLOLAB_SF_COUNTS, dtype=np.float64)
        top = int(np.flatnonzero(sf_edges <= sf_max)[-1])
    bottom = int(np.flatnonzero(sf_edges >= sf_min)[0])
    sf_edges, sf_w = sf_edges[bottom:top + 1], sf_w[bottom:top]
    sf_w = sf_w / sf_w.sum()
    phase = _inverse_cdf(rs.rand(n), np.array([1.0]), np.array([0.0, 360.0]))
    if distribution == "uniform":
        ori = _inverse_cdf(rs.rand(n), np.array([1.0]), np.array([0.0, 180.0]))
        sf = 2.0 ** _inverse_cdf(rs.rand(n), sf_w, np.log2(sf_edges))
        nx = 10.0 ** _inverse_cdf(rs.rand(n), np.array([1.0]), log_edges[[0, -1]])
        ny = 10.0 ** _inverse_cdf(rs.rand(n), np.array([1.0]), log_edges[[0, -1]])
        return sf, ori, phase, nx, ny
    ori_w = np.asarray(ORI_COUNTS, dtype=np.float64)
    ori = _inverse_cdf(rs.rand(n), ori_w / ori_w.sum(), np.asarray(ORI_BINS))
    ori[ori < 0] = ori[ori < 0] + 180.0
    joint = np.asarray(NXNY_COUNTS, dtype=np.float64)
    joint = joint / joint.sum()
    nx_w = joint.sum(axis=1)
    nx_w = nx_w / nx_w.sum()
    with np.errstate(invalid="ignore", divide="ignore"):  # the empty last row is never used
        ny_rows = joint / joint.sum(axis=1, keepdims=True)
    z = rs.multivariate_normal([0.0, 0.0], [[1.0, sf_corr], [sf_corr, 1.0]], n)
    u = _std_normal_cdf(z)
    nx = 10.0 ** _inverse_cdf(u[:, 0], nx_w, log_edges)
    u_ny = rs.rand(n)
    ny = np.empty(n)
    edges = np.asarray(NXNY_BINS, dtype=np.float64)
    for i in range(n):
        row = int(np.flatnonzero(edges < nx[i])[-1])
        ny[i] = _inverse_cdf(u_ny[i], ny_rows[row], log_edges)
    ny = 10.0 ** ny
    sf = 2.0 ** _inverse_cdf(u[:, 1], sf_w, np.log2(sf_edges))
    return sf, ori, phase, nx, ny


def gabor_kernels(params: GaborParams, ksize: int, phase_offset_deg: float = 0.0,
                  convention: str = "advlab") -> torch.Tensor:
    """The Gabor kernels of a bank, ``[n, ksize, ksize]``.

    ``g(x, y) = exp(-(x'^2/sx^2 + y'^2/sy^2)/2) / (2 pi sx sy) * cos(2 pi f x' + phase)`` with
    ``x' = x cos(theta) + y sin(theta)``, ``y' = -x sin(theta) + y cos(theta)``, both axes
    centred on the middle tap. ``convention="advlab"``: ``x`` runs along columns and ``y``
    along rows, computed in float64. ``"dicarlolab"``: ``x`` runs along rows (``meshgrid``'s
    ``ij`` order), computed in float32 kernel by kernel in dicarlolab/vonenet's order of
    operations (angles converted as ``deg / 180 * pi``, the quadrature phase as ``+ pi/2``).

    Example:
        >>> gabor_kernels(sample_gabor_params(3), ksize=7).shape
        torch.Size([3, 7, 7])
    """
    if isinstance(ksize, bool) or not isinstance(ksize, int) or ksize < 1 or ksize % 2 == 0:
        raise ValueError(f"ksize must be a positive odd int, got {ksize!r}")
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    half = ksize // 2
    if convention == "dicarlolab":
        return _dicarlolab_kernels(params, half, phase_offset_deg)
    grid = np.arange(-half, half + 1, dtype=np.float64)
    y, x = np.meshgrid(grid, grid, indexing="ij")
    theta = np.deg2rad(params.theta_deg)[:, None, None]
    phase = np.deg2rad(params.phase_deg + phase_offset_deg)[:, None, None]
    sx = params.sigma_x[:, None, None]
    sy = params.sigma_y[:, None, None]
    f = params.sf[:, None, None]
    xr = x * np.cos(theta) + y * np.sin(theta)
    yr = -x * np.sin(theta) + y * np.cos(theta)
    envelope = np.exp(-0.5 * (xr**2 / sx**2 + yr**2 / sy**2)) / (2 * np.pi * sx * sy)
    return torch.from_numpy(envelope * np.cos(2 * np.pi * f * xr + phase))


def _dicarlolab_kernels(params: GaborParams, half: int, phase_offset_deg: float) -> torch.Tensor:
    grid = torch.arange(-half, half + 1, dtype=torch.float32)
    x, y = torch.meshgrid(grid, grid, indexing="ij")
    sf = params.sf_cpd / params.ppd
    sigx, sigy = params.nx / sf, params.ny / sf
    theta = params.theta_deg / 180 * np.pi
    phase = params.phase_deg / 180 * np.pi
    if phase_offset_deg:
        phase = phase + phase_offset_deg / 180 * np.pi
    out = torch.empty(len(params), *x.shape)
    for i in range(len(params)):
        c, s_ = float(np.cos(theta[i])), float(np.sin(theta[i]))
        rotx = x * c + y * s_
        roty = -x * s_ + y * c
        g = torch.exp(-0.5 * (rotx**2 / float(sigx[i]) ** 2 + roty**2 / float(sigy[i]) ** 2))
        g /= 2 * np.pi * float(sigx[i]) * float(sigy[i])
        g *= torch.cos(2 * np.pi * float(sf[i]) * rotx + float(phase[i]))
        out[i] = g
    return out


def fraction_above_nyquist(params: GaborParams | VOneBlock) -> float:
    """Fraction of filters whose peak frequency exceeds 0.5 cycles/pixel (they alias).

    Example:
        >>> fraction_above_nyquist(sample_gabor_params(128, visual_degrees=2.0))
        0.0
    """
    if isinstance(params, VOneBlock):
        params = params.gabor_params
    return float(np.mean(params.sf > NYQUIST))


def gabor_bank_stats(params: GaborParams | VOneBlock, ksize: int | None = None) -> dict:
    """Summary numbers of a bank: aliasing, envelope sizes and truncation by the kernel window.

    Keys: ``n``, ``fraction_above_nyquist``, ``median_sigma_x`` / ``median_sigma_y`` /
    ``max_sigma`` (pixels), ``min_odd_ksize_6sigma`` (smallest odd ksize >= 6 * max sigma) and,
    with ``ksize``, ``fraction_truncated`` (filters whose +-3 sigma envelope, 6 sigma wide, does
    not fit in ``ksize``).

    Example:
        >>> stats = gabor_bank_stats(sample_gabor_params(16), ksize=25)
        >>> sorted(stats)[:3]
        ['fraction_above_nyquist', 'fraction_truncated', 'max_sigma']
    """
    if isinstance(params, VOneBlock):
        ksize = params.config.ksize if ksize is None else ksize
        params = params.gabor_params
    sigma = np.maximum(params.sigma_x, params.sigma_y)
    need = int(math.ceil(6 * float(sigma.max())))
    stats = {
        "n": len(params),
        "fraction_above_nyquist": fraction_above_nyquist(params),
        "median_sigma_x": float(np.median(params.sigma_x)),
        "median_sigma_y": float(np.median(params.sigma_y)),
        "max_sigma": float(sigma.max()),
        "min_odd_ksize_6sigma": need + 1 - need % 2,
    }
    if ksize is not None:
        stats["fraction_truncated"] = float(np.mean(6 * sigma > ksize))
    return stats


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class VOneConfig:
    """All settings of a :class:`VOneBlock` (defaults = VOneNet's published defaults with
    stride 1 on 28-px images, i.e. ``PRESETS["aliased-28px"]``; see :data:`PRESETS` for the
    student's exact configuration).

    Attributes:
        in_channels: input image channels (1 for MNIST).
        simple_channels, complex_channels: number of simple / complex cells (256 + 256 in
            the paper and the report).
        ksize: odd Gabor kernel size in pixels; taps beyond ``2*image_size - 1`` never touch a
            ``image_size`` image ("same" padding) and are dropped.
        stride: convolution stride (4 in the paper for 224 px ImageNet, 1 in the report).
        image_size, visual_degrees: the image spans ``visual_degrees`` degrees of visual field,
            so pixels per degree = ``image_size / visual_degrees``.
        sf_min, sf_max: spatial-frequency range (cycles/degree) the filters are drawn from.
        sf_corr: copula correlation between ``nx`` and frequency.
        distribution: ``"neuronal"`` (V1 statistics) or ``"uniform"`` (control).
        gabor_seed: seed of the filter bank (a local generator).
        k_exc: gain applied to the cell responses (25).
        noise_mode: ``"neuronal"`` (Poisson-like), ``"gaussian"`` or ``"none"``.
        noise_scale, noise_level: 0.35 and 0.07 in the paper.
        noise_seed: seed of the module's own noise generator; None draws one from torch's
            global RNG at construction (like the weight initialisation), so
            ``torch.manual_seed`` before building the model makes its noise reproducible.
        bottleneck_channels: width of the trainable 1x1 convolution (no bias); None = no
            bottleneck (the block then outputs all V1 channels).
        conv_mode: ``"auto"``, ``"fft"`` or ``"direct"`` (see :class:`VOneBlock`).
        convention: ``"advlab"`` or ``"dicarlolab"``: how the bank is sampled and laid out
            (see :data:`CONVENTIONS`).
        nominal_image_size: the image size that sets pixels per degree
            (``nominal_image_size / visual_degrees``) when it differs from the input's
            ``image_size``; None = ``image_size``. The student left VOneNet's default 224
            while feeding 28-px images: 28 px per degree, the image spans 1 degree.
        complex_cell: ``"smooth"``, ``"exact"`` or ``"safe"`` (see :data:`COMPLEX_CELLS`).
            ``"exact"`` and ``"safe"`` also use torch's ``ReLU'(0) = 0`` and direct
            convolution, whose responses are exactly 0 where the kernel sees only zeros (FFT
            rounding would hide the NaN gradients of ``"exact"``).
    """

    in_channels: int = 1
    simple_channels: int = 256
    complex_channels: int = 256
    ksize: int = 25
    stride: int = 1
    image_size: int = 28
    visual_degrees: float = 8.0
    sf_min: float = 0.0
    sf_max: float = 5.6
    sf_corr: float = 0.75
    distribution: str = "neuronal"
    gabor_seed: int = 0
    k_exc: float = 25.0
    noise_mode: str = "neuronal"
    noise_scale: float = 0.35
    noise_level: float = 0.07
    noise_seed: int | None = None
    bottleneck_channels: int | None = 32
    conv_mode: str = "auto"
    convention: str = "advlab"
    nominal_image_size: int | None = None
    complex_cell: str = "smooth"

    def __post_init__(self) -> None:
        def positive_int(name: str, allow_zero: bool = False, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if allow_none and v is None:
                return
            low = 0 if allow_zero else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                kind = "a non-negative" if allow_zero else "a positive"
                raise ValueError(f"{name} must be {kind} int, got {v!r}")

        positive_int("in_channels")
        positive_int("simple_channels", allow_zero=True)
        positive_int("complex_channels", allow_zero=True)
        positive_int("stride")
        positive_int("image_size")
        positive_int("bottleneck_channels", allow_none=True)
        positive_int("nominal_image_size", allow_none=True)
        if self.simple_channels + self.complex_channels < 1:
            raise ValueError("simple_channels + complex_channels must be >= 1, got 0")
        if (
            isinstance(self.ksize, bool)
            or not isinstance(self.ksize, int)
            or self.ksize < 1
            or self.ksize % 2 == 0
        ):
            raise ValueError(f"ksize must be a positive odd int, got {self.ksize!r}")
        for name, choices in (
            ("distribution", ("neuronal", "uniform")),
            ("noise_mode", ("neuronal", "gaussian", "none")),
            ("conv_mode", ("auto", "fft", "direct")),
            ("convention", CONVENTIONS),
            ("complex_cell", COMPLEX_CELLS),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")
        if not self.noise_scale > 0:
            raise ValueError(f"noise_scale must be > 0, got {self.noise_scale!r}")
        if self.noise_seed is not None and (
            isinstance(self.noise_seed, bool) or not isinstance(self.noise_seed, int)
        ):
            raise ValueError(f"noise_seed must be an int or None, got {self.noise_seed!r}")
        if isinstance(self.gabor_seed, bool) or not isinstance(self.gabor_seed, int):
            raise ValueError(f"gabor_seed must be an int, got {self.gabor_seed!r}")
        if self.complex_cell != "smooth" and self.conv_mode == "fft":
            raise ValueError(
                f"complex_cell={self.complex_cell!r} needs the exact zeros of direct "
                f"convolution: conv_mode must be 'direct' or 'auto', got 'fft'")
        if self.convention == "dicarlolab" and self.in_channels != 1:
            raise ValueError(f"convention 'dicarlolab' is implemented for in_channels=1 (MNIST), "
                             f"got {self.in_channels}")
        # Frequency range and visual degrees are checked by sample_gabor_params.

    @property
    def v1_channels(self) -> int:
        """Number of V1 output channels (simple + complex)."""
        return self.simple_channels + self.complex_channels

    @property
    def randomized(self) -> bool:
        return self.noise_mode != "none"

    @property
    def ppd(self) -> float:
        """Pixels per degree of visual field."""
        size = self.image_size if self.nominal_image_size is None else self.nominal_image_size
        return size / float(self.visual_degrees)


#: Named configurations.
#:
#: * ``"report"``: what the student's code ran, number for number (their repository
#:   ``comeeasy/R320_VOneNet``): dicarlolab's sampling and kernels, ``image_size`` left at 224
#:   over 8 degrees while feeding 28-px images (28 px per degree: 0.02-0.2 cycles/px, no filter
#:   above Nyquist, sigmas 0.7-28 px), ksize 25, stride 1, 256 + 256 channels, k_exc 25,
#:   neuronal noise 0.35 / 0.07, the complex cell without epsilon (NaN input gradients where a
#:   complex unit sees only black background), a bias-free 1x1 bottleneck to 32 channels.
#: * ``"report-finite"``: the same bank and forward values with a finite subgradient at 0
#:   (``complex_cell="safe"``): the twin to attack a ``"report"`` checkpoint with (same
#:   ``state_dict``).
#: * ``"aliased-28px"``: VOneNet's defaults read as if the 28 px spanned 8 degrees (3.5 px
#:   per degree: 75 % of the filters above Nyquist, sub-pixel envelopes). Nobody ran it; it
#:   was advlab's reading of the report's text before the student's code was read.
#: * ``"sound"``: the same V1 statistics with the image spanning 2 degrees (no filter above
#:   Nyquist), ``ksize = 2*28 - 1`` (no envelope is cut where it could touch the image), 64 +
#:   64 channels to stay cheap on a CPU, and the smooth (finite) complex cell.
_STUDENT = VOneConfig(
    convention="dicarlolab", nominal_image_size=224, visual_degrees=8.0, ksize=25, stride=1,
    sf_max=6.0, sf_corr=0.75, complex_cell="exact", conv_mode="direct")
PRESETS: dict[str, VOneConfig] = {
    "report": _STUDENT,
    "report-finite": dataclasses.replace(_STUDENT, complex_cell="safe"),
    "aliased-28px": VOneConfig(),
    "sound": VOneConfig(
        simple_channels=64, complex_channels=64, ksize=55, visual_degrees=2.0, sf_max=5.6
    ),
}


def _resolve_config(
    config: VOneConfig | str | None, overrides: dict[str, Any], who: str
) -> VOneConfig:
    if config is None:
        config = VOneConfig()
    elif isinstance(config, str):
        if config not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {config!r}")
        config = PRESETS[config]
    elif not isinstance(config, VOneConfig):
        raise TypeError(
            f"{who}: config must be a VOneConfig, a preset name or None, got {type(config)}"
        )
    names = [f.name for f in dataclasses.fields(VOneConfig)]
    bad = [k for k in overrides if k not in names]
    if bad:
        raise TypeError(
            f"{who} got unexpected keyword argument(s) {', '.join(map(repr, bad))}; "
            f"valid: {', '.join(names)}"
        )
    return dataclasses.replace(config, **overrides)


def _good_fft_size(n: int) -> int:
    """Smallest size >= n with no prime factor above 7 (fast for FFT libraries)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


# --------------------------------------------------------------------------- the block


def _fft_image(a: torch.Tensor, pr: int, ps: int) -> torch.Tensor:
    """Spectrum of real maps ``a`` ``[..., R, S]`` zero-padded to ``[PR, PS]``, laid out as
    ``[..., PS // 2 + 1, PR]`` (contiguous)."""
    spec = torch.fft.fft(torch.fft.rfft(a, n=ps, dim=-1), n=pr, dim=-2)
    return spec.transpose(-1, -2).contiguous()


def _ifft_image(spec: torch.Tensor, ps: int, rows: int, cols: int, stride: int) -> torch.Tensor:
    """Inverse of :func:`_fft_image` keeping only outputs ``[:cols:stride, :rows:stride]``, in
    the transposed orientation ``[..., cols, rows]``: an inverse FFT along the contiguous axis,
    a crop, then a real inverse FFT (about twice as fast as ``irfft2`` and a crop)."""
    z = torch.fft.ifft(spec, dim=-1)[..., :rows:stride]
    return torch.fft.irfft(z, n=ps, dim=-2)[..., :cols:stride, :]


class _FFTCorrelation(torch.autograd.Function):
    """``F.conv2d(x, w, stride, padding=k//2)`` for a fixed bank, by FFT.

    The image is transposed first (rows = the input's columns), so the inverse transform can
    run along contiguous memory and come out in the input's orientation. Zero padding to at
    least ``size + k//2`` per axis makes the circular correlation equal the linear one on the
    kept outputs. The backward pass (gradient w.r.t. ``x`` only; the bank is fixed) is the
    adjoint correlation, also by FFT: ``sum_f FFT(grad_f) * conj(spectrum_f)``, which avoids the
    large zero-filled temporaries of autograd through the crops. First-order only.
    """

    @staticmethod
    def forward(ctx, x, spectrum, pr, ps, stride):  # noqa: D102
        height, width = x.shape[-2:]
        xf = _fft_image(x.transpose(-1, -2), pr, ps)
        if xf.shape[1] == 1:
            prod = xf * spectrum[:, 0]
        else:
            prod = torch.einsum("ncvu,fcvu->nfvu", xf, spectrum)
        ctx.save_for_backward(spectrum)
        ctx.geometry = (pr, ps, stride, height, width)
        return _ifft_image(prod, ps, width, height, stride)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # noqa: D102
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        (spectrum,) = ctx.saved_tensors
        pr, ps, stride, height, width = ctx.geometry
        if stride > 1:
            full = grad.new_zeros((*grad.shape[:2], height, width))
            full[..., ::stride, ::stride] = grad
            grad = full
        # Spectrum of the output gradient in [N, F, PR, PS//2+1] layout (no transposed copy of
        # this large tensor), against the matching layout of the bank's spectrum.
        gf = torch.fft.fft(torch.fft.rfft(grad.transpose(-1, -2), n=ps, dim=-1), n=pr, dim=-2)
        bank = spectrum.transpose(-1, -2).conj()  # [F, C, PR, PS//2+1]
        if bank.shape[1] == 1:
            acc = (gf * bank[:, 0]).sum(dim=1, keepdim=True)
        else:
            acc = (gf.unsqueeze(2) * bank).sum(dim=1)
        acc = acc.transpose(-1, -2).contiguous()  # small: one map per input channel
        return _ifft_image(acc, ps, width, height, 1), None, None, None, None


class _V1Response(torch.autograd.Function):
    """Simple and complex cells, gain, noise and ReLU in one step with a hand-written backward.

    Input ``q`` holds the Gabor responses ``[N, S + 2C, H, W]`` (phase-phi filters of the S
    simple and C complex channels, then the C quadrature filters); output ``[N, S + C, H, W]``.
    The forward pass also stores the diagonal Jacobian (one tensor shaped like ``q``), so the
    backward pass is a single multiplication. This does far fewer passes over these large maps
    than autograd through the same formula, which matters on a CPU. First-order only.
    """

    @staticmethod
    def forward(ctx, q, noise, zero_tol, n_simple, k_exc, mode, scale, level,  # noqa: D102
                complex_cell="smooth"):
        n_total = q.shape[1]
        n_complex = (n_total - n_simple) // 2
        n_v1 = n_simple + n_complex
        q0s, q0c, q1c = q[:, :n_simple], q[:, n_simple:n_v1], q[:, n_v1:]
        v = q.new_empty((q.shape[0], n_v1, *q.shape[2:]))
        # Responses within the rounding-noise floor count as 0 for the derivatives, and
        # ReLU'(0) := 1 (a valid subgradient): the two convolution paths then give the same
        # gradients, and a blank image still has a useful one.
        # zero_tol None (exact cells): torch's ReLU'(0) = 0
        pos = q0s > 0 if zero_tol is None else q0s >= -zero_tol
        torch.mul(q0s.clamp(min=0), k_exc, out=v[:, :n_simple])
        energy = q0c * q0c
        gain_c = k_exc / math.sqrt(2.0)
        if complex_cell == "smooth":
            energy.addcmul_(q1c, q1c).add_(_COMPLEX_EPS).sqrt_()
            torch.mul(energy - math.sqrt(_COMPLEX_EPS), gain_c, out=v[:, n_simple:])
        else:  # sqrt(q0^2 + q1^2) / sqrt(2), exactly 0 where both responses are 0
            energy.addcmul_(q1c, q1c).sqrt_()
            torch.mul(energy, gain_c, out=v[:, n_simple:])
        slope = None  # d out / d v, None means 1
        if mode == "neuronal":
            a = v * scale + level
            a_pos = a > 0
            sd = a.clamp_(min=0).add_(1e-4).sqrt_()
            out = (noise * sd).div_(scale).add_(v)
            if ctx.needs_input_grad[0]:
                slope = (noise * 0.5 / sd).mul_(a_pos).add_(1.0)
        elif mode == "gaussian":
            out = (noise * scale).add_(v)
            if ctx.needs_input_grad[0]:
                slope = torch.ones_like(out)
        else:
            out = v
        if mode != "none":
            if slope is not None:
                slope.mul_(out > 0)
            out.clamp_(min=0)
        if ctx.needs_input_grad[0]:
            jac = torch.empty_like(q)
            js, jc = jac[:, :n_simple], jac[:, n_simple:n_v1]
            torch.mul(pos, k_exc, out=js)
            jq1 = jac[:, n_v1:]
            torch.div(q0c, energy, out=jc).mul_(gain_c)
            torch.div(q1c, energy, out=jq1).mul_(gain_c)
            if complex_cell == "smooth":
                jc.masked_fill_(q0c.abs() <= zero_tol, 0)
                jq1.masked_fill_(q1c.abs() <= zero_tol, 0)
            elif complex_cell == "safe":  # subgradient 0 where the energy is exactly 0
                dead = energy == 0
                jc.masked_fill_(dead, 0)
                jq1.masked_fill_(dead, 0)
            # "exact": 0 / 0 = NaN there, as autograd through sqrt(q0^2 + q1^2) gives
            if slope is not None:
                js.mul_(slope[:, :n_simple])
                jc.mul_(slope[:, n_simple:])
                jac[:, n_v1:].mul_(slope[:, n_simple:])
            ctx.save_for_backward(jac)
            ctx.n_simple, ctx.n_v1 = n_simple, n_v1
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):  # noqa: D102
        (jac,) = ctx.saved_tensors
        n_simple, n_v1 = ctx.n_simple, ctx.n_v1
        grad_q = torch.empty_like(jac)
        torch.mul(grad[:, :n_simple], jac[:, :n_simple], out=grad_q[:, :n_simple])
        torch.mul(grad[:, n_simple:], jac[:, n_simple:n_v1], out=grad_q[:, n_simple:n_v1])
        torch.mul(grad[:, n_simple:], jac[:, n_v1:], out=grad_q[:, n_v1:])
        return grad_q, None, None, None, None, None, None, None, None


class VOneBlock(nn.Module):
    """VOneBlock of Dapello et al. (NeurIPS 2020): fixed Gabor bank, simple and complex cells,
    V1-like noise, then a trainable 1x1 bottleneck.

    Construct from a preset or a :class:`VOneConfig`, overriding any field by keyword:
    ``VOneBlock("sound", noise_mode="none")``. Input ``[N, in_channels, H, W]`` in [0, 1];
    output ``[N, bottleneck_channels, ceil(H/stride), ceil(W/stride)]``.

    The filters live in the buffer ``gabor_weight`` (``[simple + 2*complex, in_channels, k, k]``:
    the phase-``phi`` filters of every channel, then the phase-``phi + 90`` quadrature filters of
    the complex channels); they are saved in the ``state_dict`` but never trained. Complex cells
    use ``sqrt(q0^2 + q1^2 + 1e-8) - 1e-4`` (divided by sqrt 2), so the gradient is finite
    everywhere, 0 at exactly 0 input, and the output is exactly 0 there.

    Noise (``noise_mode``): ``"neuronal"``:
    ``x = x*scale + level; x += N(0,1) * sqrt(relu(x) + 1e-4); x = (x - level)/scale``;
    ``"gaussian"``: ``x += N(0,1) * scale``; then ReLU. Noise is on in ``train()`` *and*
    ``eval()`` mode. It is drawn from a ``torch.Generator`` owned by the module (one per device,
    seeded with ``noise_seed``), so a run is reproducible given the seed and the global RNG is
    never touched. :meth:`fix_noise` makes every forward use the same draw (per input shape);
    :meth:`frozen_noise` does so temporarily.

    Convolution (``conv_mode``): ``"direct"`` uses ``F.conv2d``; ``"fft"`` multiplies spectra
    (``torch.fft``; the kernel spectra are computed once and cached per device, dtype and input
    size; zero padding makes it equal to the direct "same" convolution, about 1e-6 relative in
    float32, and its backward pass is a hand-written adjoint FFT); ``"auto"`` uses FFT for
    ``ksize >= FFT_MIN_KSIZE`` (15). The batch is processed in chunks of about ``chunk_bytes``
    (16 MB) of Gabor maps, which avoids page-faulting huge temporaries on a CPU.
    Measured on the shared 2-core CPU this was written on, one thread, batch 64, images/s for
    forward+backward of vone-mnist-cnn (train = gradients for the weights, attack = gradient
    for the input only; the plain mnist-cnn does about 1080 / 1400 here):

    ========  ==============  ===============
    preset    FFT             direct conv2d
    ========  ==============  ===============
    report    55 / 26         48 / 26
    sound     140 / 75        58 / 28
    ========  ==============  ===============

    Simple cells treat responses within a few float ulps of 0 as 0 and use ReLU'(0) = 1 (a
    valid subgradient), so both convolution paths give the same input gradients (up to float
    rounding at kinks) and a blank image still gets a useful gradient.

    Filter-bank soundness on 28x28 images (``gabor_seed=0``, measured with
    :func:`gabor_bank_stats`; Nyquist = 0.5 cycles/pixel; "cut" = filters whose 6-sigma
    envelope is wider than ``ksize``):

    ============  =====  =======  =====  =============  ==============  =========  ======
    preset        cells  px/deg   ksize  above Nyquist  median sigma_x  max sigma  cut
    ============  =====  =======  =====  =============  ==============  =========  ======
    report        512    28       25     0 %            4.0 px          28.0 px    66 %
    aliased-28px  512    3.5      25     74.6 %         0.52 px         4.8 px     0.2 %
    sound         128    14       55     0 %            2.04 px         9.1 px     0 %
    ============  =====  =======  =====  =============  ==============  =========  ======

    The student's bank (``report``) is coarse for a 28-px digit (the image spans one degree)
    and its wide envelopes are cut by the 25-px window; the ``aliased-28px`` bank mostly
    samples frequencies a 28-px grid cannot represent. The sound preset keeps the V1
    statistics and lets the 28-px image span 2 degrees.

    Example:
        >>> import torch
        >>> block = VOneBlock("sound", noise_seed=0)
        >>> block(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 32, 28, 28])
        >>> round(fraction_above_nyquist(VOneBlock("aliased-28px").gabor_params), 3)
        0.746
    """

    def __init__(self, config: VOneConfig | str | None = None, /, **overrides: Any) -> None:
        super().__init__()
        cfg = _resolve_config(config, overrides, "VOneBlock")
        self.config = cfg
        self.gabor_params = sample_gabor_params(
            cfg.v1_channels,
            seed=cfg.gabor_seed,
            distribution=cfg.distribution,
            sf_corr=cfg.sf_corr,
            sf_min=cfg.sf_min,
            sf_max=cfg.sf_max,
            visual_degrees=cfg.visual_degrees,
            image_size=cfg.nominal_image_size or cfg.image_size,
            in_channels=cfg.in_channels,
            convention=cfg.convention,
        )
        self.register_buffer("gabor_weight", self._build_weight(cfg, self.gabor_params))
        if cfg.bottleneck_channels is None:
            self.bottleneck = None
        else:
            self.bottleneck = nn.Conv2d(
                cfg.v1_channels, cfg.bottleneck_channels, kernel_size=1, bias=False
            )
            nn.init.kaiming_normal_(self.bottleneck.weight, mode="fan_out", nonlinearity="relu")
        if cfg.noise_seed is not None:
            self.noise_seed = cfg.noise_seed
        else:  # like the weight initialisation: reproducible under torch.manual_seed
            self.noise_seed = int(torch.randint(0, 2**62, ()).item())
        self._generators: dict[str, torch.Generator] = {}
        self._fixed_noise_seed: int | None = None
        self._spectrum_cache: dict[tuple, tuple[torch.Tensor, int, int]] = {}
        #: Images per internal chunk (None: as many as keep one chunk's Gabor maps under
        #: ``chunk_bytes``). Small chunks avoid page-faulting huge temporaries on a CPU; the
        #: result does not depend on it, except for which noise value lands where.
        self.chunk_size: int | None = None
        self.chunk_bytes: int = 16 * 2**20
        log.debug(
            "VOneBlock %s: %.1f %% of filters above Nyquist",
            self.extra_repr(),
            100 * fraction_above_nyquist(self.gabor_params),
        )

    @staticmethod
    def _build_weight(cfg: VOneConfig, params: GaborParams) -> torch.Tensor:
        q0 = gabor_kernels(params, cfg.ksize, convention=cfg.convention)
        q1 = gabor_kernels(params, cfg.ksize, phase_offset_deg=90.0,
                           convention=cfg.convention)[cfg.simple_channels :]
        kernels = torch.cat([q0, q1]).to(torch.float32)
        # Taps below float32's smallest normal number (far envelope tails) become 0: they
        # cannot change a response above 1e-30, and subnormal operands slow x86 convolution
        # kernels down by orders of magnitude (measured: 10 s instead of 0.2 s for 64 images).
        kernels[kernels.abs() < torch.finfo(torch.float32).tiny] = 0.0
        channel = np.concatenate(
            [params.input_channel, params.input_channel[cfg.simple_channels :]]
        )
        weight = torch.zeros(kernels.shape[0], cfg.in_channels, cfg.ksize, cfg.ksize)
        weight[torch.arange(kernels.shape[0]), torch.from_numpy(channel)] = kernels
        return weight

    # ------------------------------------------------------------------ properties

    @property
    def randomized(self) -> bool:
        """True unless ``noise_mode == "none"``."""
        return self.config.randomized

    @property
    def noise_fixed(self) -> bool:
        return self._fixed_noise_seed is not None

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"simple={c.simple_channels}, complex={c.complex_channels}, ksize={c.ksize}, "
            f"stride={c.stride}, visual_degrees={c.visual_degrees}, noise={c.noise_mode}, "
            f"conv_mode={c.conv_mode}"
        )

    # ------------------------------------------------------------------ noise control

    def fix_noise(self, seed: int = 0) -> VOneBlock:
        """Use the same noise draw in every forward (the draw of ``seed`` for that shape)."""
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self._fixed_noise_seed = seed
        return self

    def unfix_noise(self) -> VOneBlock:
        """Go back to a fresh noise draw in every forward."""
        self._fixed_noise_seed = None
        return self

    @contextlib.contextmanager
    def frozen_noise(self, seed: int = 0) -> Iterator[VOneBlock]:
        """Context manager: noise fixed to ``seed`` inside, previous setting restored after."""
        previous = self._fixed_noise_seed
        self.fix_noise(seed)
        try:
            yield self
        finally:
            self._fixed_noise_seed = previous

    def reseed_noise(self, seed: int) -> VOneBlock:
        """Restart the noise stream from ``seed`` (on every device)."""
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.noise_seed = seed
        self._generators.clear()
        return self

    def _generator(self, device: torch.device) -> torch.Generator:
        if self._fixed_noise_seed is not None:
            gen = torch.Generator(device=device)
            gen.manual_seed(self._fixed_noise_seed)
            return gen
        key = str(device)
        gen = self._generators.get(key)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.noise_seed)
            self._generators[key] = gen
        return gen

    # ------------------------------------------------------------------ convolution

    def _use_fft(self) -> bool:
        mode = self.config.conv_mode
        if self.config.complex_cell != "smooth":
            return False  # exact zeros, see VOneConfig.complex_cell
        return mode == "fft" or (mode == "auto" and self.config.ksize >= FFT_MIN_KSIZE)

    def _cropped_weight(self, height: int, width: int) -> tuple[torch.Tensor, int, int]:
        half = self.config.ksize // 2
        hh, hw = min(half, height - 1), min(half, width - 1)
        w = self.gabor_weight[..., half - hh : half + hh + 1, half - hw : half + hw + 1]
        return w, hh, hw

    def _spectrum(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Conjugate kernel spectra for :meth:`_conv_fft`, cached (one entry) per input setup.

        The FFT runs on the transposed image (rows = the input's columns), so the kernels are
        transposed too; layout ``[F, C, PS // 2 + 1, PR]`` with the full-length axis last.
        """
        height, width = x.shape[-2:]
        w = self.gabor_weight
        key = (x.device, x.dtype, height, width, w.device, w.data_ptr(), w._version)
        hit = self._spectrum_cache.get(key)
        if hit is not None:
            return hit
        # A normal tensor even when first called under torch.inference_mode(): the cached
        # spectra are reused by later forward passes that autograd must record.
        with torch.inference_mode(False), torch.no_grad():
            kernel, hh, hw = self._cropped_weight(height, width)
            pr, ps = _good_fft_size(width + hw), _good_fft_size(height + hh)
            kt = kernel.transpose(-1, -2).to(x.device, torch.float64)
            padded = torch.zeros(*kt.shape[:2], pr, ps, dtype=torch.float64, device=x.device)
            padded[..., : 2 * hw + 1, : 2 * hh + 1] = kt
            padded = torch.roll(padded, shifts=(-hw, -hh), dims=(-2, -1))
            # Cross-correlation (what conv2d computes) = product with the conjugate spectrum.
            spectrum = torch.fft.rfft2(padded).conj().transpose(-1, -2)
            dtype = torch.promote_types(x.dtype, torch.complex64)
            spectrum = spectrum.to(dtype).contiguous()
        self._spectrum_cache.clear()  # keep one entry: the bank is large
        entry = (spectrum, pr, ps)
        self._spectrum_cache[key] = entry
        return entry

    def _conv_fft(self, x: torch.Tensor) -> torch.Tensor:
        """Same result as :meth:`_conv_direct`, by FFT with zero padding (see
        :class:`_FFTCorrelation`)."""
        spectrum, pr, ps = self._spectrum(x)
        return _FFTCorrelation.apply(x, spectrum, pr, ps, self.config.stride)

    def _conv_direct(self, x: torch.Tensor) -> torch.Tensor:
        weight, hh, hw = self._cropped_weight(*x.shape[-2:])
        weight = weight.to(device=x.device, dtype=x.dtype)
        return F.conv2d(x, weight, stride=self.config.stride, padding=(hh, hw))

    # ------------------------------------------------------------------ forward

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"VOneBlock input must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != self.config.in_channels:
            raise ValueError(
                f"VOneBlock expects input [N, {self.config.in_channels}, H, W], "
                f"got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(f"VOneBlock expects a floating-point input, got {x.dtype}")

    def _chunk_size(self, x: torch.Tensor) -> int:
        if self.chunk_size is not None:
            return max(1, int(self.chunk_size))
        c = self.config
        height, width = x.shape[-2:]
        per_map = -(-height // c.stride) * -(-width // c.stride) * x.element_size()
        if self._use_fft():
            half = min(c.ksize // 2, height - 1), min(c.ksize // 2, width - 1)
            spectrum = _good_fft_size(width + half[1]) * (_good_fft_size(height + half[0]) // 2 + 1)
            per_map = max(per_map, 2 * spectrum * x.element_size())
        per_image = (c.v1_channels + c.complex_channels) * per_map
        return max(1, self.chunk_bytes // per_image)

    def _v1_chunks(self, x: torch.Tensor, noisy: bool, project: bool) -> torch.Tensor:
        self._check_input(x)
        c = self.config
        mode = c.noise_mode if noisy else "none"
        gen = self._generator(x.device) if mode != "none" else None
        use_fft = self._use_fft()
        zero_tol = None  # exact cells: torch's own conventions, ReLU'(0) = 0, no tolerance
        if c.complex_cell == "smooth":
            with torch.no_grad():
                # Rounding-noise floor of a response: a few ulps of its Cauchy-Schwarz bound.
                kernel_norm = self.gabor_weight.flatten(1).norm(dim=1).max().to(x.dtype)
                zero_tol = x.detach().flatten(1).norm(dim=1).mul_(kernel_norm)
                zero_tol = zero_tol.mul_(_ZERO_TOL_ULPS * torch.finfo(x.dtype).eps)
                zero_tol = zero_tol[:, None, None, None]
        outputs = []
        step = self._chunk_size(x)
        for start in range(0, x.shape[0], step):
            xc = x[start : start + step]
            q = self._conv_fft(xc) if use_fft else self._conv_direct(xc)
            if c.complex_cell != "smooth":
                self._exact_zeros(xc, q)
            noise = None
            if gen is not None:
                shape = (q.shape[0], c.v1_channels, *q.shape[2:])
                noise = torch.randn(shape, generator=gen, device=q.device, dtype=q.dtype)
            v = _V1Response.apply(
                q,
                noise,
                None if zero_tol is None else zero_tol[start : start + step],
                c.simple_channels,
                c.k_exc,
                mode,
                c.noise_scale,
                c.noise_level,
                c.complex_cell,
            )
            if project and self.bottleneck is not None:
                # The 1x1 convolution as one batched matrix product (faster on a CPU than
                # conv2d's fallback path for 1x1 kernels; same numbers up to rounding).
                weight = self.bottleneck.weight.flatten(1)
                v = torch.matmul(weight, v.flatten(2)).unflatten(2, v.shape[2:])
            outputs.append(v)
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _exact_zeros(self, x: torch.Tensor, q: torch.Tensor) -> None:
        """Set responses whose window sees only zeros to exactly 0, in place.

        A direct sum of ``0 * w`` is exactly 0, but convolution libraries pick algorithms
        (Winograd, GEMM tiling) by shape, and some leave rounding residue there: the exact
        complex cell's NaN gradients would then depend on the channel count. The change is
        invisible to autograd (the convolution's backward does not read its output), so the
        gradient is the one of the exact sum."""
        _, hh, hw = self._cropped_weight(*x.shape[-2:])
        with torch.no_grad():
            seen = F.max_pool2d(x.detach().abs().amax(dim=1, keepdim=True),
                                kernel_size=(2 * hh + 1, 2 * hw + 1), stride=self.config.stride,
                                padding=(hh, hw))
            q.masked_fill_(seen == 0, 0.0)

    def gabor_responses(self, x: torch.Tensor) -> torch.Tensor:
        """Noise-free V1 responses ``k_exc * [simple, complex]``: ``[N, S + C, H', W']``."""
        return self._v1_chunks(x, noisy=False, project=False)

    def v1(self, x: torch.Tensor) -> torch.Tensor:
        """The noisy V1 map before the bottleneck, ``[N, simple+complex, H', W']``."""
        return self._v1_chunks(x, noisy=True, project=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._v1_chunks(x, noisy=True, project=True)


# --------------------------------------------------------------------------- VOneNet


class VOneNet(nn.Module):
    """A VOneBlock (with its bottleneck) in front of a back-end network (Dapello et al. 2020).

    Example:
        >>> import torch
        >>> net = vonenet("mnist-cnn", preset="sound", noise_mode="none")
        >>> net(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, vone_block: VOneBlock, backbone: nn.Module) -> None:
        super().__init__()
        if not isinstance(vone_block, VOneBlock):
            raise TypeError(f"vone_block must be a VOneBlock, got {type(vone_block).__name__}")
        self.vone_block = vone_block
        self.backbone = backbone

    @property
    def randomized(self) -> bool:
        return self.vone_block.randomized

    @property
    def noise_fixed(self) -> bool:
        return self.vone_block.noise_fixed

    def fix_noise(self, seed: int = 0) -> VOneNet:
        """See :meth:`VOneBlock.fix_noise`."""
        self.vone_block.fix_noise(seed)
        return self

    def unfix_noise(self) -> VOneNet:
        """See :meth:`VOneBlock.unfix_noise`."""
        self.vone_block.unfix_noise()
        return self

    def frozen_noise(self, seed: int = 0):
        """See :meth:`VOneBlock.frozen_noise`."""
        return self.vone_block.frozen_noise(seed)

    def reseed_noise(self, seed: int) -> VOneNet:
        """See :meth:`VOneBlock.reseed_noise`."""
        self.vone_block.reseed_noise(seed)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.vone_block(x))


def finite_gradient_twin(model: nn.Module) -> nn.Module:
    """``model`` itself, or -- when it holds a VOneBlock with ``complex_cell="exact"`` -- a
    copy whose blocks use ``"safe"``: the same weights, noise stream and forward values, with
    a finite subgradient where a complex cell's energy is exactly 0.

    Example:
        >>> import torch
        >>> exact = vonenet("mnist-mlp", preset="report", simple_channels=2, complex_channels=2)
        >>> twin = finite_gradient_twin(exact)
        >>> twin.vone_block.config.complex_cell, twin is exact
        ('safe', False)
        >>> x = torch.zeros(1, 1, 28, 28)
        >>> with exact.frozen_noise(0), twin.frozen_noise(0):
        ...     torch.equal(exact(x), twin(x))
        True
    """
    exact = [n for n, m in model.named_modules()
             if isinstance(m, VOneBlock) and m.config.complex_cell == "exact"]
    if not exact:
        return model
    twin = copy.deepcopy(model)
    for name in exact:
        block = twin.get_submodule(name)
        block.config = dataclasses.replace(block.config, complex_cell="safe")
    return twin


_BACKBONES: dict[str, type[nn.Module]] = {
    "mnist-alexnet": MNISTAlexNet,
    "mnist-convnet": MNISTConvNet,
    "mnist-cnn": MNISTBasicCNN,
    "mnist-mlp": MNISTMLP,
}


def vonenet(
    backbone: str | nn.Module,
    *,
    preset: str | VOneConfig = "sound",
    num_classes: int = 10,
    **overrides: Any,
) -> VOneNet:
    """Put a VOneBlock in front of a back-end.

    Args:
        backbone: one of the report's models by registry name (built with
            ``in_channels=bottleneck_channels``), or any module taking the bottleneck output.
        preset: ``"sound"`` (default), ``"report"`` or a :class:`VOneConfig`.
        num_classes: passed to a named back-end.
        **overrides: any :class:`VOneConfig` field.

    Example:
        >>> vonenet("mnist-mlp", preset="report").backbone.fc1.in_features   # 32 * 28 * 28
        25088
    """
    block = VOneBlock(preset, **overrides)
    cfg = block.config
    if isinstance(backbone, str):
        if backbone not in _BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(_BACKBONES)}, got {backbone!r}")
        if cfg.bottleneck_channels is None:
            raise ValueError("a named back-end needs bottleneck_channels, got None")
        if backbone != "mnist-alexnet":
            out_size = -(-cfg.image_size // cfg.stride)
            if out_size != 28:
                raise ValueError(
                    f"{backbone} needs 28x28 maps: image_size/stride must be 28, got "
                    f"image_size={cfg.image_size}, stride={cfg.stride}"
                )
        backbone = _BACKBONES[backbone](
            in_channels=cfg.bottleneck_channels, num_classes=num_classes
        )
    elif not isinstance(backbone, nn.Module):
        raise TypeError(f"backbone must be a name or an nn.Module, got {type(backbone).__name__}")
    return VOneNet(block, backbone)


#: Alias of :func:`vonenet` (the name used in the design notes). Import it from this module;
#: the package namespace only exports ``vonenet``, so ``advlab.models.vone`` stays the module.
vone = vonenet


# --------------------------------------------------------------------------- registry entries

_PRESET_FIELDS = [f.name for f in dataclasses.fields(VOneConfig)]


def _config_from_arguments(args: dict[str, Any]) -> VOneConfig:
    overrides = {k: args[k] for k in _PRESET_FIELDS if args.get(k) is not None}
    return _resolve_config(args["preset"], overrides, "vone model")


#: ``advlab train --quick`` subsets (train, test) per backbone and preset, from the training and
#: inference speeds of bench/zoo_speed.py on the 2-core CPU (2 epochs in under two minutes).
_QUICK_SIZES = {
    ("mnist-alexnet", "sound"): (1200, 1000), ("mnist-alexnet", "report"): (800, 500),
    ("mnist-mlp", "sound"): (3000, 1000), ("mnist-mlp", "report"): (2000, 1000),
}


def _quick_sizes(backbone: str, preset: str) -> tuple[int, int]:
    default = (6000, 2000) if preset == "sound" else (2000, 1000)
    return _QUICK_SIZES.get((backbone, preset), default)


def _register_vone(name: str, backbone: str, label: str) -> None:
    def factory(*, preset: str = "sound", num_classes: int = 10, **overrides: Any) -> VOneNet:
        given = {k: v for k, v in overrides.items() if v is not None}
        return vonenet(backbone, preset=preset, num_classes=num_classes, **given)

    params = [
        inspect.Parameter("preset", inspect.Parameter.KEYWORD_ONLY, default="sound"),
        inspect.Parameter("num_classes", inspect.Parameter.KEYWORD_ONLY, default=10),
    ] + [inspect.Parameter(f, inspect.Parameter.KEYWORD_ONLY, default=None) for f in _PRESET_FIELDS]
    factory.__signature__ = inspect.Signature(params)
    factory.__name__ = name.replace("-", "_")
    factory.__doc__ = (
        f"VOne{label}: VOneBlock -> 1x1 bottleneck -> the report's {label}. "
        "``preset='sound'`` (default): finite gradients, for sound evaluation; ``'report'``: "
        "the student's exact front end, whose input gradients are NaN where a complex cell's "
        "energy is exactly 0 (as in their code); ``'report-finite'``: its finite-gradient "
        "twin (same state dict); ``'aliased-28px'``: VOneNet's defaults on a 28-px image "
        "spanning 8 degrees. Any VOneConfig field may be overridden."
    )
    register(
        name,
        input_shape=lambda a: (
            _config_from_arguments(a).in_channels,
            _config_from_arguments(a).image_size,
            _config_from_arguments(a).image_size,
        ),
        num_classes=lambda a: a["num_classes"],
        description=f"VOneBlock + bottleneck + {label} (stochastic V1 front end; "
                    f"preset=report: the student's, NaN gradients)",
        randomized=lambda a: _config_from_arguments(a).randomized,
        reference="Dapello et al., NeurIPS 2020 (VOneNet); Kim & Ahn 2021 report",
        quick_train_size=lambda a: _quick_sizes(backbone, a["preset"])[0],
        quick_test_size=lambda a: _quick_sizes(backbone, a["preset"])[1],
    )(factory)


_register_vone("vone-mnist-alexnet", "mnist-alexnet", "AlexNet")
_register_vone("vone-mnist-convnet", "mnist-convnet", "ConvNet")
_register_vone("vone-mnist-cnn", "mnist-cnn", "Basic-CNN")
_register_vone("vone-mnist-mlp", "mnist-mlp", "Linear-Regression MLP")
