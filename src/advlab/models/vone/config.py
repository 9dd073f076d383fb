"""Settings of a VOneBlock: :class:`VOneConfig`, the named :data:`PRESETS` and
:data:`COMPLEX_CELLS`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from advlab.models.vone.gabor import CONVENTIONS

__all__ = ["COMPLEX_CELLS", "PRESETS", "VOneConfig"]

#: ``complex_cell``: ``"smooth"`` = ``sqrt(q0^2 + q1^2 + 1e-8) - 1e-4`` (finite everywhere);
#: ``"exact"`` = ``sqrt(q0^2 + q1^2)`` with autograd's derivative, NaN where both responses
#: are exactly 0 (dicarlolab's and the student's code); ``"safe"`` = the same forward values
#: as ``"exact"`` with the subgradient 0 there (the finite-gradient twin of an exact model).
COMPLEX_CELLS = ("smooth", "exact", "safe")


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
