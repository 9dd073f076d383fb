"""The one attack loop shared by FGSM, I-FGSM, PGD, MI-FGSM and NI-FGSM.

Every gradient attack in advlab is this loop with other defaults (Dong et al., CVPR 2018,
Algorithm 1, which contains the others as special cases)::

    x_0 = x                      (or a uniform random point of the eps-ball: PGD)
    g_0 = 0
    repeat T times:
        x_look = x_t + s * alpha * mu * g_t          (only with nesterov=True: NI-FGSM)
        grad   = E_noise[ grad_x J(x_look, label) ]   (EOT: mean of k gradients)
                 (+ v_t with variance tuning; DI/SI/Admix: mean over input copies; TI: smoothed)
        g_t+1  = mu * g_t + grad / mean|grad|         (per example; zero-safe)
        x_t+1  = Proj_{ball & box}( x_t + s * alpha * dir(g_t+1) )

with ``s = +1`` for an untargeted attack (ascend the loss of the true label) and ``s = -1``
for a targeted one (descend the loss of the target label), and ``dir`` the steepest
ascent direction of the norm (``sign`` for Linf, ``g / ||g||_2`` for L2). With ``mu = 0``
the division by ``mean|grad|`` is a positive per-example scale, so the step equals
I-FGSM's ``sign(grad)`` -- which is why I-FGSM *is* MI-FGSM with ``mu = 0`` here, bit for bit.
The paper writes the normalisation as ``||grad||_1``; its authors' code (and Lin et al.'s
NI-FGSM code, and torchattacks) divide by the *mean* of ``|grad|``, i.e. ``||grad||_1 / d``.
The two give the same MI-FGSM steps (one positive scale for every term of ``g``), but only the
mean keeps ``g``'s entries of order 1, which NI-FGSM's look-ahead ``alpha * mu * g`` needs:
with the L1 norm each entry is about ``t / d`` and the look-ahead all but vanishes.

The loop never changes the caller's state: it runs the model in eval mode by default and
restores every module's mode, takes gradients only with respect to the input (no
``.grad`` on parameters), never writes into its inputs, never moves the model and draws
all randomness from a local ``torch.Generator``.

The model's loss, scores and input gradient (with the speed options ``amp``,
``channels_last`` and ``compile``, and the hooks through which an ensemble takes over the
gradient) come from :mod:`advlab.attacks.oracle`. The transfer family's input and gradient
transformations (DI, SI, Admix, TI) are pieces of :mod:`advlab.attacks.transforms` that the
loop applies around the oracle; variance tuning (VMI/VNI) is a term of the loop itself.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from advlab._check import positive_number
from advlab.attacks.losses import Goal, get_loss
from advlab.attacks.oracle import (
    _AMP_DTYPES,
    NonFiniteGradientError,
    NonFiniteGradientWarning,
    _channels_last_params,
    _Oracle,
    clear_compile_cache,
)
from advlab.attacks.transforms import (
    Admix,
    DiverseInputs,
    GaussianSmoothing,
    ScaleCopies,
    apply_input_transforms,
)
from advlab.attacks.validation import (
    check_inputs,
    check_labels,
    check_labels_range,
    check_model_device,
    prepare_run,
    probe_model,
)
from advlab.threat import Norm, ThreatModel

__all__ = ["Attack", "AttackResult", "NonFiniteGradientError", "NonFiniteGradientWarning",
           "model_mode", "check_model_device", "clear_compile_cache", "check_inputs",
           "check_labels", "check_labels_range", "probe_model"]

log = logging.getLogger(__name__)

_MODES = ("eval", "train", "keep")
_NONFINITE = ("raise", "warn")


@dataclass
class AttackResult:
    """What one attack run returns.

    Attributes:
        x_adv: adversarial examples, same shape/dtype/device as the input, no grad.
        loss: final per-example attack loss (of the label or the target), shape [N].
        logits: the model's scores on ``x_adv`` from the last evaluation (None when the run
            did not need a final forward pass).
        updates: with ``record=True``, the perturbation added at each step
            (``x_{t+1} - x_t``), a list of T tensors; used for the cosine-similarity study.
    """

    x_adv: torch.Tensor
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    updates: list[torch.Tensor] = field(default_factory=list)


@contextlib.contextmanager
def model_mode(model: nn.Module, mode: str) -> Iterator[None]:
    """Temporarily put ``model`` in ``"eval"`` or ``"train"`` mode (``"keep"``: unchanged),
    then restore the exact training flag of every submodule."""
    if mode not in _MODES:
        raise ValueError(f"model_mode must be one of {_MODES}, got {mode!r}")
    saved = [(m, m.training) for m in model.modules()]
    try:
        # Module.train() sets the flag through nn.Module.__setattr__ on every submodule; skip
        # it when the flags already say so (an attack on a model in eval mode: the usual case).
        if mode == "eval" and any(flag for _, flag in saved):
            model.eval()
        elif mode == "train" and not all(flag for _, flag in saved):
            model.train()
        yield
    finally:
        for m, flag in saved:
            if m.training != flag:  # write back only what changed (same reason)
                m.training = flag


def _mean_abs(g: torch.Tensor) -> torch.Tensor:
    """``mean |g|`` per example (``||g||_1 / d``), shaped to broadcast against ``g``; 1 where
    ``g`` is zero (so dividing by it is zero-safe). One fused reduction pass."""
    d = g[0].numel() if g.shape[0] else 1
    l1 = torch.linalg.vector_norm(g, ord=1, dim=tuple(range(1, g.ndim)), keepdim=True) / d
    return torch.where(l1 > 0, l1, torch.ones_like(l1))



@dataclass(frozen=True, eq=False)
class Attack:
    """A gradient attack: the shared loop above with a set of defaults.

    Use the presets (:class:`~advlab.attacks.FGSM`, :class:`~advlab.attacks.IFGSM`,
    :class:`~advlab.attacks.PGD`, :class:`~advlab.attacks.MIFGSM`,
    :class:`~advlab.attacks.NIFGSM`) rather than this class directly.

    Args:
        eps: radius of the threat model (float >= 0 or a per-example 1-D tensor).
        norm: :class:`~advlab.threat.Norm` or ``"linf"`` / ``"l2"`` / ``"l1"``.
        steps: number of iterations T (>= 1).
        alpha: step size; ``None`` means the preset's default (``eps / T`` for I-FGSM and
            MI-FGSM, ``eps`` for FGSM, ``2.5 * eps / T`` for PGD).
        decay: momentum decay factor mu (>= 0); 0 disables momentum.
        random_start: start from a uniform random point of the ball (PGD).
        restarts: number of runs; the worst case per example is kept (>= 1).
        nesterov: evaluate the gradient at the look-ahead point (NI-FGSM).
        loss: ``"ce"`` (default), ``"cw"`` or a callable ``(logits, labels) -> [N]``.
        eot_samples: gradients averaged per step (expectation over transformation, for
            models whose output is random; Athalye et al., ICML 2018).
        model_mode: ``"eval"`` (default), ``"train"`` or ``"keep"``; restored afterwards.
        bounds: valid pixel range (default ``(0, 1)``).
        seed: seed of the local generator for random starts (None: nondeterministic).
        nonfinite: what a NaN/inf entry of the input gradient does: ``"raise"`` (default) a
            :class:`NonFiniteGradientError` naming the count; ``"warn"`` logs a warning (once
            per run) and treats those entries as 0, which is what ``torch.sign`` does with NaN
            -- use it only to reproduce evaluations that stepped on such gradients.
        clip: clip to ``bounds`` after every step (default True). ``False`` exists only to
            reproduce flawed evaluations that forgot to clip; the eps-ball still holds.
        amp: ``None`` (default, full precision), ``"bf16"`` or ``"fp16"``: run the forward
            passes of the gradient computation under ``torch.autocast`` with that dtype.
            The sign of a low-precision gradient can differ from the float32 one; see
            ``bench/README.md`` for the measured flip rate and success-rate change.
        channels_last: run convolutions in NHWC layout (4-D parameters are swapped for NHWC
            copies during the run and restored afterwards; results equal to rounding).
        compile: run the model's forward and backward compiled by ``torch.compile``
            (compiled once per model object; the first call pays the compilation). A
            compilation failure raises a ``RuntimeError`` naming the model.
        diversity_prob, resize_rate: DI's input diversity (Xie et al., CVPR 2019): with
            probability ``diversity_prob`` the gradient is taken on a randomly resized and
            padded copy (:class:`~advlab.attacks.transforms.DiverseInputs`); 0 (default) off.
        scale_copies: SI's scale copies ``x / 2^i``, ``i < m`` (Lin et al., ICLR 2020); 1 off.
        admix_copies, admix_strength: Admix (Wang et al., ICCV 2021): the gradient is the
            mean over ``admix_copies`` images ``x + admix_strength * x'`` (each with the scale
            copies); 0 (default) off.
        kernel_size, kernel_nsig: TI (Dong et al., CVPR 2019): the gradient convolved with a
            Gaussian kernel of that size on ``[-nsig, nsig]``; 0 (default) off.
        variance_samples, variance_beta: variance tuning (VMI/VNI-FGSM; Wang and He, CVPR
            2021): each step adds the previous step's variance ``v = mean_N grad J(x_t + r)
            - grad J(x_t)``, ``r ~ U(-beta eps, beta eps)^d``, to the gradient before the
            momentum normalisation; 0 (default) off.

    The transformations are applied in the order Admix -> scale copies -> DI on the input
    (the gradient is the mean over all copies, back-propagated through them) and TI on the
    resulting gradient; EOT averages whole such gradients.
    """

    eps: float | torch.Tensor
    norm: Norm | str = Norm.LINF
    steps: int = 10
    alpha: float | None = None
    decay: float = 0.0
    random_start: bool = False
    restarts: int = 1
    nesterov: bool = False
    loss: Any = "ce"
    eot_samples: int = 1
    model_mode: str = "eval"
    bounds: tuple[float, float] = (0.0, 1.0)
    seed: int | None = 0
    clip: bool = True
    nonfinite: str = "raise"
    amp: str | None = None
    channels_last: bool = False
    compile: bool = False
    diversity_prob: float = 0.0
    resize_rate: float = 0.9
    scale_copies: int = 1
    admix_copies: int = 0
    admix_strength: float = 0.2
    kernel_size: int = 0
    kernel_nsig: float = 3.0
    variance_samples: int = 0
    variance_beta: float = 1.5

    name: ClassVar[str] = "attack"
    alpha_factor: ClassVar[float] = 1.0  # default alpha = alpha_factor * eps / steps
    #: ``run`` takes ``generator=`` (the protocol every advlab attack follows; see
    #: :mod:`advlab.attacks`).
    accepts_generator: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "norm", Norm.parse(self.norm))
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an integer >= 1, got {self.steps!r}")
        if isinstance(self.restarts, bool) or not isinstance(self.restarts, int) \
                or self.restarts < 1:
            raise ValueError(f"restarts must be an integer >= 1, got {self.restarts!r}")
        if isinstance(self.eot_samples, bool) or not isinstance(self.eot_samples, int) \
                or self.eot_samples < 1:
            raise ValueError(f"eot_samples must be an integer >= 1, got {self.eot_samples!r}")
        if not isinstance(self.decay, (int, float)) or math.isnan(self.decay) or self.decay < 0:
            raise ValueError(f"decay must be >= 0, got {self.decay!r}")
        if self.model_mode not in _MODES:
            raise ValueError(f"model_mode must be one of {_MODES}, got {self.model_mode!r}")
        if self.nonfinite not in _NONFINITE:
            raise ValueError(f"nonfinite must be one of {_NONFINITE}, got {self.nonfinite!r}")
        if not (self.amp is None or (isinstance(self.amp, str) and self.amp in _AMP_DTYPES)):
            raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {self.amp!r}")
        for flag in ("channels_last", "compile"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        get_loss(self.loss)
        self._check_transfer_options()
        # Validates eps and bounds (raises with the bad value).
        tm = ThreatModel(self.norm, self.eps, self.bounds)
        object.__setattr__(self, "eps", tm.eps)
        if self.alpha is not None:
            if not isinstance(self.alpha, (int, float)) or not (self.alpha > 0) \
                    or not math.isfinite(self.alpha):
                raise ValueError(f"alpha must be a finite number > 0, got {self.alpha!r}")
        elif isinstance(tm.eps, float) and math.isinf(tm.eps):
            raise ValueError("alpha must be given explicitly when eps is unbounded (inf)")
        elif isinstance(tm.eps, torch.Tensor) and torch.isinf(tm.eps).any():
            # the default alpha = eps * factor / steps would be inf there (NaN where 0 * inf)
            where = torch.isinf(tm.eps).nonzero().flatten()[:5].tolist()
            raise ValueError(f"alpha must be given explicitly when eps is unbounded (inf); "
                             f"eps is inf for example(s) {where}")
        if self.variance_samples and not bool(torch.isfinite(torch.as_tensor(tm.eps)).all()):
            raise ValueError("variance_samples needs a finite eps: the neighbours are drawn "
                             "from U(-beta * eps, beta * eps); got an unbounded (inf) eps")

    def _check_transfer_options(self) -> None:
        """Validate the transfer-family fields and build their pieces once."""
        for name in ("admix_copies", "kernel_size", "variance_samples"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0 (0: off), got {v!r}")
        positive_number("variance_beta", self.variance_beta)
        di = DiverseInputs(self.diversity_prob, self.resize_rate)
        si = ScaleCopies(self.scale_copies)
        mix = Admix(max(self.admix_copies, 1), self.admix_strength)
        ti = GaussianSmoothing(max(self.kernel_size, 1), self.kernel_nsig)
        pieces = tuple(t for t, on in ((mix, self.admix_copies > 0), (si, self.scale_copies > 1),
                                       (di, self.diversity_prob > 0)) if on)
        object.__setattr__(self, "_input_transforms", pieces)
        object.__setattr__(self, "_smoothing", ti if self.kernel_size else None)

    # -- public API ---------------------------------------------------------------------
    @property
    def threat(self) -> ThreatModel:
        return ThreatModel(self.norm, self.eps, self.bounds)

    @property
    def batch_independent(self) -> bool:
        """Whether attacking a batch gives what attacking its examples one by one gives.

        False with draws shaped by the batch (a random start, variance tuning's neighbours)
        and with Admix, which mixes in *other* images of the batch by design."""
        return not (self.random_start or self.variance_samples or self.admix_copies)

    def replace(self, **changes: Any) -> Attack:
        """A copy with some fields changed (configs are frozen)."""
        return dataclasses.replace(self, **changes)

    def step_size(self, x: torch.Tensor) -> torch.Tensor:
        """Per-example step size alpha, shape [N]."""
        if self.alpha is not None:
            return torch.full((x.shape[0],), float(self.alpha), device=x.device, dtype=x.dtype)
        return self.threat.eps_tensor(x) * (self.alpha_factor / self.steps)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None = None) -> torch.Tensor:
        """Adversarial examples for ``x``; untargeted on labels ``y`` unless ``target``."""
        return self.run(model, x, y, target=target).x_adv

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
            target: torch.Tensor | None = None, *, record: bool = False,
            generator: torch.Generator | None = None) -> AttackResult:
        """Run the attack and return an :class:`AttackResult`.

        Args:
            model: classifier mapping ``x`` to logits ``[N, C]``, or an
                :class:`~advlab.attacks.Ensemble`.
            x: inputs ``[N, ...]`` inside ``bounds``; never modified.
            y: true labels ``[N]`` (integers).
            target: target labels ``[N]`` for a targeted attack, else None.
            record: keep the per-step perturbation updates.
            generator: a ``torch.Generator`` on ``x``'s device (overrides ``seed``).
        """
        x, labels, goal, checks, generator = prepare_run(self, model, x, y, target, generator)

        layout = _channels_last_params(model) if self.channels_last else contextlib.nullcontext()
        with model_mode(model, self.model_mode), layout:
            probe_model(model, x, checks)
            self._probe_transforms(model, x)
            oracle = _Oracle(self, model)
            best: AttackResult | None = None
            for _ in range(self.restarts):
                res = self._run_once(oracle, x, labels, goal, generator, record)
                if self.restarts == 1:
                    return res
                res = self._final_eval(oracle, res, labels)
                best = res if best is None else self._keep_best(best, res, labels, goal)
            return best

    def _probe_transforms(self, model: nn.Module, x: torch.Tensor) -> None:
        """DI that enlarges (``resize_rate > 1``) needs a model that takes larger images:
        check it on one example at the largest size before any work."""
        if not (self.diversity_prob > 0 and self.resize_rate > 1):
            return
        if x.ndim != 4:
            raise ValueError(f"input diversity needs image batches [N, C, H, W], got shape "
                             f"{tuple(x.shape)}")
        w = x.shape[-1]
        size = max(int(w * self.resize_rate), w + 1)
        try:
            with torch.no_grad():
                model(torch.nn.functional.pad(x[:1], [0, size - w, 0, size - x.shape[-2]]))
        except Exception as e:
            raise ValueError(
                f"diversity_prob > 0 with resize_rate {self.resize_rate} feeds the model "
                f"{size}x{size} images, which it does not accept ({type(e).__name__}: "
                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}); use a "
                f"resize_rate below 1 (0.9 shrinks and pads back to {w}x{w})") from None

    # -- the loop -----------------------------------------------------------------------
    def _gradient(self, model: nn.Module | _Oracle, x_in: torch.Tensor,
                  labels: torch.Tensor, generator: torch.Generator | None = None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Input gradient of the summed loss (the mean of ``eot_samples`` draws, each over
        the input transformations' copies, then smoothed by TI) and the per-example loss."""
        oracle = model if isinstance(model, _Oracle) else _Oracle(self, model)
        draw = self._transformed_gradient if self._input_transforms else \
            (lambda o, x, lab, _gen: o.gradient(x, lab))
        grad, loss_sum = draw(oracle, x_in, labels, generator)
        for _ in range(self.eot_samples - 1):
            g, loss = draw(oracle, x_in, labels, generator)
            grad = grad + g
            loss_sum = loss_sum + loss
        if self.eot_samples > 1:
            grad = grad / self.eot_samples
            loss_sum = loss_sum / self.eot_samples
        grad = self._finite(grad, oracle)
        if self._smoothing is not None:
            grad = self._smoothing(grad)
        return grad, loss_sum

    def _transformed_gradient(self, oracle: _Oracle, x_in: torch.Tensor, labels: torch.Tensor,
                              generator: torch.Generator | None,
                              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean over the input transformations' copies of ``grad_x J(copy(x))``: each copy's
        gradient comes from the oracle (one forward + backward of the model), then one
        backward through the (cheap) transformations takes them all back to ``x``."""
        xr = x_in.detach().requires_grad_(True)
        with torch.enable_grad():
            copies = apply_input_transforms(self._input_transforms, xr, generator)
            grads, loss_sum = [], None
            for c in copies:
                g, loss = oracle.gradient(c, labels)
                grads.append(g)
                loss_sum = loss if loss_sum is None else loss_sum + loss
            (grad,) = torch.autograd.grad(copies, xr, grads)
        k = len(copies)
        return (grad / k if k > 1 else grad), (loss_sum / k if k > 1 else loss_sum)

    def _variance(self, oracle: _Oracle, x_adv: torch.Tensor, grad: torch.Tensor,
                  labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Variance tuning's ``v = mean_N grad J(x_t + r_i) - grad``, ``r_i`` uniform in the
        ``beta * eps`` cube around ``x_t`` (not clipped, as in the paper's code)."""
        radius = (self.threat.eps_tensor(x_adv) * self.variance_beta).reshape(
            -1, *([1] * (x_adv.ndim - 1)))
        total = torch.zeros_like(x_adv)
        for _ in range(self.variance_samples):
            r = torch.rand(x_adv.shape, generator=generator, device=x_adv.device,
                           dtype=x_adv.dtype).mul_(2).sub_(1).mul_(radius)
            g, _ = self._gradient(oracle, x_adv + r, labels, generator)
            total += g
        return total / self.variance_samples - grad

    def _finite(self, grad: torch.Tensor, oracle: _Oracle) -> torch.Tensor:
        """``grad`` itself when finite; else raise, or (``nonfinite="warn"``) zero the bad
        entries, warning once per run."""
        if bool(torch.isfinite(grad.sum())):  # one reduction: NaN/inf would make it so
            return grad
        bad = ~torch.isfinite(grad)
        if not bool(bad.any()):  # a finite gradient whose sum overflowed
            return grad
        err = NonFiniteGradientError(int(bad.sum()), grad.numel(), type(self).__name__)
        if self.nonfinite == "raise":
            raise err
        if not oracle.warned_nonfinite:  # one text, so Python shows it once per place
            oracle.warned_nonfinite = True
            log.debug("%s", err)
            warnings.warn(f"{type(self).__name__}: the model's input gradient has NaN/inf "
                          f"entries; nonfinite='warn' treats them as 0 (as sign(NaN) = 0 "
                          f"does)", NonFiniteGradientWarning, stacklevel=4)
        return grad.masked_fill(bad, 0.0)

    def _projector(self, tm: ThreatModel, x: torch.Tensor,
                   alpha: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """``z -> Proj_{ball & box}(z)``, for a fresh ``z`` (Linf projects it in place).

        For Linf the ball and the box are both boxes, so their intersection
        ``[max(x - eps, lo), min(x + eps, hi)]`` is computed once and each step is one clamp
        (the same values as :meth:`ThreatModel.project`: min and max are exact and ``x`` lies
        in the box). One Linf step of size ``alpha <= eps`` from ``x`` itself (FGSM) cannot
        leave the ball -- ``x + alpha * sign`` rounds to at most ``x + eps`` -- so only the box
        clamp remains."""
        if tm.norm is not Norm.LINF:
            return lambda z: tm.project(z, x)
        e = tm.eps_tensor(x).reshape(-1, *([1] * (x.ndim - 1)))
        lo, hi = tm.bounds
        if self.steps == 1 and not self.random_start and bool((alpha <= e).all()):
            return lambda z: z.clamp_(lo, hi)
        low = (x - e).clamp_min_(lo)
        high = (x + e).clamp_max_(hi)
        return lambda z: z.clamp_(low, high)

    def _run_once(self, oracle: _Oracle, x: torch.Tensor, labels: torch.Tensor, goal: Goal,
                  generator: torch.Generator, record: bool) -> AttackResult:
        tm = self.threat
        nd = x.ndim
        alpha = self.step_size(x).reshape(-1, *([1] * (nd - 1)))
        s = goal.sign
        step = s * alpha
        # no copy of x: every step builds a new tensor and nothing writes into x_adv
        x_adv = tm.random_init(x, generator) if self.random_start else x
        if not self.clip:
            # unclipped protocol: only the ball applies (reproduces flawed evaluations)
            tm = ThreatModel(self.norm, self.eps, (-1e30, 1e30))
        project = self._projector(tm, x, alpha)
        # Without momentum the normalisation is a positive per-example scale that no step
        # direction sees, so it is skipped (I-FGSM, PGD, FGSM; MI-FGSM with mu = 0 alike).
        momentum = self.decay > 0
        g = torch.zeros_like(x) if momentum else None
        v = torch.zeros_like(x) if self.variance_samples else None
        updates: list[torch.Tensor] = []
        loss = None
        look = (s * self.decay) * alpha if self.nesterov and momentum else None
        look_buf = torch.empty_like(x) if look is not None else None
        for _ in range(self.steps):
            # NI's look-ahead x_t + s mu alpha g_t, written into one buffer (a new tensor per
            # step costs page faults); the gradient pass only reads it
            x_look = x_adv if look is None else torch.addcmul(x_adv, look, g, out=look_buf)
            grad, loss = self._gradient(oracle, x_look, labels, generator)
            if v is not None:  # variance tuning: this step uses the last step's variance
                v_next = self._variance(oracle, x_adv, grad, labels, generator)
                grad = grad + v
                v = v_next
            if momentum:
                # g <- mu g + grad / mean|grad|, in place in the loop's own buffer (no new
                # tensor per step)
                if self.decay != 1:
                    g.mul_(self.decay)
                g.addcdiv_(grad, _mean_abs(grad))
            else:
                g = grad
            # x + s alpha dir(g): for Linf s alpha sign(g) is exact, so the fused form rounds
            # like the textbook one
            direction = tm.step_direction(g, at=x_adv, sign=s) if tm.norm is Norm.L1 \
                else tm.step_direction(g)
            x_new = project(torch.addcmul(x_adv, step, direction))
            if record:
                updates.append((x_new - x_adv).detach())
            x_adv = x_new
        if x_adv.ndim == 4 and not x_adv.is_contiguous() and x.is_contiguous():
            x_adv = x_adv.contiguous()  # NHWC gradients (channels_last) -> the input's layout
        return AttackResult(x_adv=x_adv.detach(), loss=loss, updates=updates)

    def _final_eval(self, oracle: _Oracle, res: AttackResult,
                    labels: torch.Tensor) -> AttackResult:
        with torch.no_grad():
            loss, scores = oracle.loss_and_scores(res.x_adv, labels)
        return dataclasses.replace(res, loss=loss, logits=scores)

    @staticmethod
    def _keep_best(best: AttackResult, new: AttackResult, labels: torch.Tensor,
                   goal: Goal) -> AttackResult:
        pred_b, pred_n = best.logits.argmax(1), new.logits.argmax(1)
        if goal is Goal.UNTARGETED:
            ok_b, ok_n = pred_b != labels, pred_n != labels
        else:
            ok_b, ok_n = pred_b == labels, pred_n == labels
        better_loss = goal.sign * new.loss > goal.sign * best.loss
        take = (ok_n & ~ok_b) | ((ok_n == ok_b) & better_loss)
        nd = best.x_adv.ndim
        sel = take.reshape(-1, *([1] * (nd - 1)))
        return AttackResult(
            x_adv=torch.where(sel, new.x_adv, best.x_adv),
            loss=torch.where(take, new.loss, best.loss),
            logits=torch.where(take[:, None], new.logits, best.logits),
            updates=new.updates if take.all() else best.updates,
        )
