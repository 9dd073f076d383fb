"""Gabor filter banks of the VOneBlock: V1 parameter statistics, sampling and kernels.

Gabor parameters are sampled per channel from macaque V1 measurements: orientation from
De Valois, Yund & Hepler (1982); spatial frequency from De Valois, Albrecht & Thorell (1982);
receptive-field sizes ``nx, ny`` (in cycles) from Ringach (2002), with ``nx`` tied to the spatial
frequency by a Gaussian copula (correlation 0.75, after Schiller, Finlay & Volman 1976).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "CONVENTIONS",
    "DICARLOLAB_SF_BINS",
    "DICARLOLAB_SF_COUNTS",
    "NXNY_BINS",
    "NXNY_COUNTS",
    "NYQUIST",
    "ORI_BINS",
    "ORI_COUNTS",
    "SF_BINS",
    "SF_COUNTS",
    "GaborParams",
    "fraction_above_nyquist",
    "gabor_bank_stats",
    "gabor_kernels",
    "sample_gabor_params",
]

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


def fraction_above_nyquist(params: GaborParams | Any) -> float:
    """Fraction of filters whose peak frequency exceeds 0.5 cycles/pixel (they alias).

    Example:
        >>> fraction_above_nyquist(sample_gabor_params(128, visual_degrees=2.0))
        0.0
    """
    if not isinstance(params, GaborParams):  # a VOneBlock
        params = params.gabor_params
    return float(np.mean(params.sf > NYQUIST))


def gabor_bank_stats(params: GaborParams | Any, ksize: int | None = None) -> dict:
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
    if not isinstance(params, GaborParams):  # a VOneBlock
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
