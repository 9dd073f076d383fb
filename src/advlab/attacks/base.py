"""The one attack loop shared by FGSM, I-FGSM, PGD, MI-FGSM and NI-FGSM.

Every gradient attack in advlab is this loop with other defaults (Dong et al., CVPR 2018,
Algorithm 1, which contains the others as special cases)::

    x_0 = x                      (or a uniform random point of the eps-ball: PGD)
    g_0 = 0
    repeat T times:
        x_look = x_t + s * alpha * mu * g_t          (only with nesterov=True: NI-FGSM)
        grad   = E_noise[ grad_x J(x_look, label) ]   (EOT: mean of k gradients)
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

Models may take over the gradient computation with two optional methods (the
:class:`~advlab.attacks.Ensemble` has both); the loop prefers the first one present:

* ``input_gradient(x, labels, loss_fn, *, call) -> (grad, loss, scores)``: the gradient of
  ``loss.sum()`` with respect to ``x``, the per-example loss ``[N]`` and the scores
  ``[N, C]`` (the low-memory ensemble computes it one member at a time);
* ``attack_loss(x, labels, loss_fn, *, call) -> (loss, scores)``: the per-example loss whose
  gradient the loop takes with ``torch.autograd.grad``.

``call(module, x)`` runs one (sub)module's forward with the attack's speed options (autocast
and ``torch.compile``); a hook without a ``call`` parameter is called without it.

Speed options (default off; measured effects in ``bench/README.md``): ``amp`` runs the
forward passes of the gradient computation under ``torch.autocast`` (``"bf16"`` or
``"fp16"``, the latter with a fixed loss scale and a float32 retry when a gradient
overflows); ``channels_last`` runs 4-D convolution weights and inputs in NHWC layout (the
caller's parameters are swapped back before :meth:`Attack.run` returns); ``compile`` runs the
forward (and through AOTAutograd its backward) compiled by ``torch.compile``, one compiled
function per module object, cached for the module's lifetime. The update, the projection and
the box clamp always run in the input's dtype, so every option keeps the threat model exact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from advlab.attacks.losses import Goal, get_loss
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


class NonFiniteGradientWarning(RuntimeWarning):
    """Issued (once per run) by an attack with ``nonfinite="warn"`` that met NaN/inf input
    gradient entries; filter it by this category."""


class NonFiniteGradientError(FloatingPointError):
    """The model's input gradient has NaN or infinite entries.

    Stepping on such a gradient fails silently: ``torch.sign(NaN)`` is 0, so a sign attack
    leaves those pixels unchanged and reports a robustness that is only a broken backward
    pass (e.g. ``sqrt`` at 0 without an epsilon). Attributes: ``count`` and ``total`` entries.
    """

    def __init__(self, count: int, total: int, attack: str) -> None:
        self.count, self.total = count, total
        super().__init__(
            f"{attack}: the model's input gradient has {count} NaN/inf entries out of {total} "
            f"({100 * count / total:.1f} %); a step would leave those pixels unchanged "
            f"(sign(NaN) = 0) and overstate robustness. Fix the model's backward pass (e.g. an "
            f"epsilon inside sqrt, or a finite subgradient at 0), or pass nonfinite='warn' to "
            f"proceed with those entries treated as 0")
_AMP_DTYPES: dict[str | None, torch.dtype | None] = {
    None: None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: fp16 loss scale: the logits' gradient is at most 1 in absolute value per example, so
#: 2**10 keeps small input gradients out of fp16's subnormal range without overflowing.
_FP16_LOSS_SCALE = 1024.0


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


# -- speed options ----------------------------------------------------------------------
@contextlib.contextmanager
def _channels_last_params(model: nn.Module) -> Iterator[None]:
    """Swap every 4-D parameter's data for an NHWC copy; put the caller's tensors back after.

    Only parameters are swapped (the attack never writes them); buffers, which a model in
    train mode may update in place, are left alone.
    """
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim != 4:
                    continue
                # Compare strides rather than ask is_contiguous(channels_last): a weight with
                # one input channel passes that test in NCHW strides, and then the
                # convolution keeps (and converts to) NCHW.
                nhwc = torch.empty_like(p.data, memory_format=torch.channels_last)
                if nhwc.stride() != p.data.stride():
                    saved.append((p, p.data))
                    p.data = nhwc.copy_(p.data)
        yield
    finally:
        for p, data in reversed(saved):
            p.data = data


#: torch.compile backend of ``compile=True`` (tests use the cheap ``"aot_eager"``).
_COMPILE_BACKEND = "inductor"
_COMPILED: weakref.WeakKeyDictionary[nn.Module, dict[str, Callable[[torch.Tensor], torch.Tensor]]] \
    = weakref.WeakKeyDictionary()


def clear_compile_cache() -> None:
    """Forget the ``torch.compile`` functions of ``Attack(compile=True)`` (one per module;
    an entry also disappears with its module)."""
    _COMPILED.clear()


def _compile_error(module: nn.Module, err: BaseException) -> RuntimeError:
    return RuntimeError(
        f"compile=True: torch.compile failed for {type(module).__name__} "
        f"({type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''})"
        f"; run the attack with compile=False (eager mode) instead")


def _compiled_forward(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` of ``module``'s forward, cached per module object.

    The compiled function holds only a weak reference to the module, so the cache never keeps
    a model alive; in-place weight updates are seen (parameters are graph inputs).
    """
    per_backend = _COMPILED.setdefault(module, {})
    fn = per_backend.get(_COMPILE_BACKEND)
    if fn is None:
        ref = weakref.ref(module)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return ref()(x)

        try:
            fn = torch.compile(forward, backend=_COMPILE_BACKEND)
        except Exception as e:  # e.g. no dynamo support on this platform or Python
            raise _compile_error(module, e) from e
        per_backend[_COMPILE_BACKEND] = fn
    return fn


def _compile_errors() -> tuple[type[BaseException], ...]:
    errs: list[type[BaseException]] = []
    with contextlib.suppress(Exception):
        from torch._dynamo.exc import TorchDynamoException
        errs.append(TorchDynamoException)
    with contextlib.suppress(Exception):
        from torch._inductor.exc import InductorError
        errs.append(InductorError)
    return tuple(errs)


def _accepts_call(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "call" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD
                                   for p in params.values())


class _Oracle:
    """Loss, scores and input gradient of one model for one run, with the speed options.

    Built once per :meth:`Attack.run` so that the per-step work is only the passes.
    """

    def __init__(self, attack: Attack, model: nn.Module) -> None:
        self.model = model
        self.loss_fn = get_loss(attack.loss)
        self.amp_dtype = _AMP_DTYPES[attack.amp]
        self.scale = _FP16_LOSS_SCALE if attack.amp == "fp16" else 1.0
        self.channels_last = attack.channels_last
        self.compile = attack.compile
        self.grad_hook = getattr(model, "input_gradient", None)
        self.loss_hook = getattr(model, "attack_loss", None)
        self._compile_errors = _compile_errors() if attack.compile else ()
        self._warned_overflow = False
        self.warned_nonfinite = False

    # one module's forward with the options -------------------------------------------
    def _forward(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not self.compile:
            return module(x)
        try:
            return _compiled_forward(module)(x)
        except self._compile_errors as e:
            raise _compile_error(module, e) from e

    def call_amp(self, module: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Forward under autocast; scores come back in ``x``'s dtype for the loss."""
        with torch.autocast(device_type=x.device.type, dtype=self.amp_dtype):
            out = self._forward(module, x)
        return out.to(x.dtype) if out.is_floating_point() else out

    def _hook(self, hook: Callable[..., Any], x: torch.Tensor, labels: torch.Tensor,
              loss_fn: Callable[..., torch.Tensor], call: Callable[..., torch.Tensor]) -> Any:
        if call is _plain_call:  # default options: the hook's own forward is the same
            return hook(x, labels, loss_fn)
        if _accepts_call(hook):
            return hook(x, labels, loss_fn, call=call)
        return hook(x, labels, loss_fn)

    def _call(self, amp: bool) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
        if amp and self.amp_dtype is not None:
            return self.call_amp
        return self._forward if self.compile else _plain_call

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach()
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    # what the loop needs -------------------------------------------------------------
    def loss_and_scores(self, x: torch.Tensor, labels: torch.Tensor, *, amp: bool = False,
                        loss_fn: Callable[..., torch.Tensor] | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        loss_fn = loss_fn or self.loss_fn
        call = self._call(amp)
        if self.loss_hook is not None:
            return self._hook(self.loss_hook, x, labels, loss_fn, call)
        scores = call(self.model, x)
        return loss_fn(scores, labels), scores

    def gradient(self, x: torch.Tensor, labels: torch.Tensor,
                 amp: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``(grad of loss.sum() w.r.t. x, per-example loss)``."""
        use_amp = amp and self.amp_dtype is not None
        scale = self.scale if use_amp else 1.0
        loss_fn = self.loss_fn
        if scale != 1.0:
            base = loss_fn

            def loss_fn(z: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
                return base(z, lab) * scale

        xi = self._prepare(x)
        if self.grad_hook is not None:
            with torch.enable_grad():
                g, loss, _ = self._hook(self.grad_hook, xi, labels, loss_fn,
                                        self._call(use_amp))
        else:
            xi.requires_grad_(True)
            with torch.enable_grad():
                loss, _ = self.loss_and_scores(xi, labels, amp=use_amp, loss_fn=loss_fn)
                (g,) = torch.autograd.grad(loss.sum(), xi)
        loss = loss.detach()
        if scale != 1.0:
            g, loss = g / scale, loss / scale
        if use_amp and self.amp_dtype is torch.float16 and not bool(torch.isfinite(g).all()):
            if not self._warned_overflow:
                log.warning("amp='fp16': the input gradient overflowed; retrying in %s "
                            "(further retries in this run are silent)", x.dtype)
                self._warned_overflow = True
            return self.gradient(x, labels, amp=False)
        return g, loss


def _plain_call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x)


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

    # -- public API ---------------------------------------------------------------------
    @property
    def threat(self) -> ThreatModel:
        return ThreatModel(self.norm, self.eps, self.bounds)

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
            oracle = _Oracle(self, model)
            best: AttackResult | None = None
            for _ in range(self.restarts):
                res = self._run_once(oracle, x, labels, goal, generator, record)
                if self.restarts == 1:
                    return res
                res = self._final_eval(oracle, res, labels)
                best = res if best is None else self._keep_best(best, res, labels, goal)
            return best

    # -- the loop -----------------------------------------------------------------------
    def _gradient(self, model: nn.Module | _Oracle, x_in: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Input gradient of the summed loss (the mean of ``eot_samples`` draws) and the
        per-example loss."""
        oracle = model if isinstance(model, _Oracle) else _Oracle(self, model)
        grad, loss_sum = oracle.gradient(x_in, labels)
        for _ in range(self.eot_samples - 1):
            g, loss = oracle.gradient(x_in, labels)
            grad = grad + g
            loss_sum = loss_sum + loss
        if self.eot_samples > 1:
            grad = grad / self.eot_samples
            loss_sum = loss_sum / self.eot_samples
        return self._finite(grad, oracle), loss_sum

    def _finite(self, grad: torch.Tensor, oracle: _Oracle) -> torch.Tensor:
        """``grad`` itself when finite; else raise, or (``nonfinite="warn"``) zero the bad
        entries, warning once per run."""
        bad = ~torch.isfinite(grad)
        if not bool(bad.any()):
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
        updates: list[torch.Tensor] = []
        loss = None
        for _ in range(self.steps):
            x_look = x_adv + (s * self.decay) * alpha * g if self.nesterov and momentum \
                else x_adv
            grad, loss = self._gradient(oracle, x_look, labels)
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
            x_new = project(torch.addcmul(x_adv, step, tm.step_direction(g)))
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
