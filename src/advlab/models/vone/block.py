"""VOneBlock: the fixed, stochastic V1 front end (Gabor bank, simple and complex cells,
V1-like noise, trainable 1x1 bottleneck)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advlab.models.vone.config import VOneConfig, _resolve_config
from advlab.models.vone.gabor import (
    GaborParams,
    fraction_above_nyquist,
    gabor_kernels,
    sample_gabor_params,
)
from advlab.models.vone.kernels import _FFTCorrelation, _good_fft_size, _V1Response

__all__ = ["FFT_MIN_KSIZE", "VOneBlock"]

log = logging.getLogger(__name__)

#: ``conv_mode="auto"`` uses FFT convolution for kernels at least this large (measured on a
#: 2-core CPU with a 64+64 bank: direct and FFT cost about the same from 11x11 to 15x15, FFT
#: wins above; see :class:`VOneBlock`).
FFT_MIN_KSIZE = 15

_ZERO_TOL_ULPS = 4.0


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
