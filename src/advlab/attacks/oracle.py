"""The model oracle of the attack loop: loss, scores and input gradient with the speed options.

Models may take over the gradient computation with two optional methods (the
:class:`~advlab.attacks.Ensemble` has both); the oracle prefers the first one present:

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
caller's parameters are swapped back before the attack returns); ``compile`` runs the
forward (and through AOTAutograd its backward) compiled by ``torch.compile``, one compiled
function per module object, cached for the module's lifetime. The update, the projection and
the box clamp always run in the input's dtype, so every option keeps the threat model exact.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from advlab.attacks.losses import get_loss

__all__ = ["NonFiniteGradientError", "NonFiniteGradientWarning", "clear_compile_cache"]

log = logging.getLogger(__name__)

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

    def __init__(self, attack: Any, model: nn.Module) -> None:
        # ``attack``: the Attack config (loss, amp, channels_last, compile); typed loosely so
        # that this floor does not import the loop above it
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
        g, loss, _ = self.gradient_and_scores(x, labels, amp=amp)
        return g, loss

    def gradient_and_scores(self, x: torch.Tensor, labels: torch.Tensor, *, amp: bool = True,
                            loss_fn: Callable[..., torch.Tensor] | None = None,
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(grad of loss.sum() w.r.t. x, per-example loss, scores)`` from one forward and
        one backward pass; ``loss_fn`` overrides the attack's loss (APGD's objectives)."""
        use_amp = amp and self.amp_dtype is not None
        scale = self.scale if use_amp else 1.0
        base = loss_fn or self.loss_fn
        fn = base
        if scale != 1.0:
            def fn(z: torch.Tensor, lab: torch.Tensor) -> torch.Tensor:
                return base(z, lab) * scale

        xi = self._prepare(x)
        if self.grad_hook is not None:
            with torch.enable_grad():
                g, loss, scores = self._hook(self.grad_hook, xi, labels, fn, self._call(use_amp))
        else:
            xi.requires_grad_(True)
            with torch.enable_grad():
                loss, scores = self.loss_and_scores(xi, labels, amp=use_amp, loss_fn=fn)
                (g,) = torch.autograd.grad(loss.sum(), xi)
        loss, scores = loss.detach(), scores.detach()
        if scale != 1.0:
            g, loss = g / scale, loss / scale
        if use_amp and self.amp_dtype is torch.float16 and not bool(torch.isfinite(g).all()):
            if not self._warned_overflow:
                log.warning("amp='fp16': the input gradient overflowed; retrying in %s "
                            "(further retries in this run are silent)", x.dtype)
                self._warned_overflow = True
            return self.gradient_and_scores(x, labels, amp=False, loss_fn=loss_fn)
        return g, loss, scores


def _plain_call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x)
