"""The VOneBlock's hand-written autograd kernels (first-order only): cross-correlation with a
fixed bank by FFT (:class:`_FFTCorrelation`) and the fused simple/complex cells, gain, noise and
ReLU (:class:`_V1Response`)."""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

_COMPLEX_EPS = 1e-8


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
