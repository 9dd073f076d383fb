"""The model registry: one name -> one factory function plus typed metadata.

A factory is registered with :func:`register`, built with :func:`create` and described by
:func:`model_info`. Metadata values may be constants or callables of the factory's bound
arguments (a dict with defaults applied), so that, e.g., ``randomized`` can depend on
``noise_mode``. Two fields are measured, never registered: the parameter count and the FLOPs
of one forward pass (:attr:`ModelInfo.params`, :attr:`ModelInfo.forward_flops`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from advlab.models import create, list_models, model_info, register
    >>> @register("doc-linear", input_shape=(1, 28, 28), num_classes=10,
    ...           description="a linear classifier (docstring example)")
    ... def doc_linear(*, num_classes: int = 10) -> nn.Module:
    ...     return nn.Sequential(nn.Flatten(), nn.Linear(784, num_classes))
    >>> create("doc-linear")(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> model_info("doc-linear").randomized
    False
    >>> model_info("doc-linear").params, model_info("doc-linear").forward_flops
    (7850, 15680)
    >>> unregister("doc-linear")
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = [
    "ModelInfo",
    "create",
    "is_randomized",
    "list_models",
    "model_info",
    "register",
    "unregister",
]


@dataclass(frozen=True)
class ModelInfo:
    """Typed metadata of a registered model.

    Attributes:
        name: registry name, e.g. ``"mnist-cnn"``.
        input_shape: shape of one input example (without the batch dimension), values in [0, 1].
        num_classes: number of logits the model returns.
        description: one line for tables and ``--help``.
        randomized: True if two forward passes on the same input can differ (stochastic model;
            evaluate it with expectation over transformation and many draws).
        reference: the paper or document the architecture comes from.
        quick_train_size, quick_test_size: the data subset of ``advlab train --quick`` (two
            epochs) for this model, chosen so that the smoke run takes under two minutes on a
            2-core CPU (``None`` test size: the whole test set).
        params: number of parameters of the model built with these arguments (measured by
            :func:`model_info` on the meta device, so even a 70M-parameter model costs no
            memory; ``None`` if the model cannot be built here, e.g. a missing optional
            dependency).
        forward_flops: FLOPs of one forward pass in eval mode on one example of
            ``input_shape`` (zeros), counted by ``torch.utils.flop_counter.FlopCounterMode``:
            convolutions and matrix products, a multiply-add counting 2, element-wise ops,
            normalisation and pooling free. Training costs about 3x this per image (forward
            plus backward). ``None`` if the forward pass cannot be run here.

    ``params`` and ``forward_flops`` are measured, not registered, and do not take part in
    ``==``.
    """

    name: str
    input_shape: tuple[int, ...]
    num_classes: int
    description: str
    randomized: bool = False
    reference: str = ""
    quick_train_size: int = 20000
    quick_test_size: int | None = None
    params: int | None = field(default=None, compare=False)
    forward_flops: int | None = field(default=None, compare=False)


_MEASURED_FIELDS = ("params", "forward_flops")
_METADATA_FIELDS = tuple(f.name for f in dataclasses.fields(ModelInfo)
                         if f.name != "name" and f.name not in _MEASURED_FIELDS)
_REQUIRED_METADATA = ("input_shape", "num_classes", "description")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., nn.Module]
    metadata: Mapping[str, Any]
    signature: inspect.Signature
    costs: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)


_REGISTRY: dict[str, _Entry] = {}


def register(name: str, **metadata: Any) -> Callable[[Callable[..., nn.Module]], Callable]:
    """Decorator registering a model factory under ``name``.

    Args:
        name: unique registry name.
        **metadata: the fields of :class:`ModelInfo` except ``name``: ``input_shape``,
            ``num_classes`` and ``description`` are required; ``randomized`` (default False)
            and ``reference`` are optional. A value may be a callable taking the dict of the
            factory's bound arguments and returning the field's value.

    Raises:
        ValueError: ``name`` already registered or empty.
        TypeError: an unknown or missing metadata field.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"model name must be a non-empty string, got {name!r}")
    unknown = sorted(set(metadata) - set(_METADATA_FIELDS))
    if unknown:
        raise TypeError(
            f"register({name!r}): unknown metadata field(s) {', '.join(unknown)}; "
            f"expected some of {', '.join(_METADATA_FIELDS)}"
        )
    missing = [f for f in _REQUIRED_METADATA if f not in metadata]
    if missing:
        raise TypeError(f"register({name!r}): missing metadata field(s) {', '.join(missing)}")

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = _Entry(factory, dict(metadata), inspect.signature(factory))
        return factory

    return decorator


def unregister(name: str) -> None:
    """Remove ``name`` from the registry (for tests and interactive use)."""
    _entry(name)
    del _REGISTRY[name]


def list_models() -> list[str]:
    """Sorted names of all registered models.

    Example:
        >>> "mnist-cnn" in list_models()
        True
    """
    return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        pass
    known = list_models()
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown model {name!r}{hint}; known models: {', '.join(known)}")


def _bind(name: str, entry: _Entry, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    params = entry.signature.parameters
    takes_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = [
        p.name
        for p in params.values()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    ]
    if not takes_var_kw:
        bad = [k for k in kwargs if k not in accepted]
        if bad:
            raise TypeError(
                f"model {name!r} got unexpected keyword argument(s) {', '.join(map(repr, bad))}; "
                f"it accepts: {', '.join(accepted) or '(none)'}"
            )
    try:
        bound = entry.signature.bind(**kwargs)
    except TypeError as exc:
        raise TypeError(f"model {name!r}: {exc}") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def model_info(name: str, **kwargs: Any) -> ModelInfo:
    """Metadata of ``name``, optionally for specific factory keyword arguments.

    Example:
        >>> model_info("mnist-cnn").input_shape
        (1, 28, 28)
        >>> model_info("vone-mnist-cnn", noise_mode="none").randomized
        False
    """
    entry = _entry(name)
    arguments = _bind(name, entry, kwargs)
    values = {k: (v(arguments) if callable(v) else v) for k, v in entry.metadata.items()}
    values["input_shape"] = tuple(int(s) for s in values["input_shape"])
    values["num_classes"] = int(values["num_classes"])
    values["randomized"] = bool(values.get("randomized", False))
    if "quick_train_size" in values:
        values["quick_train_size"] = int(values["quick_train_size"])
    values["params"], values["forward_flops"] = _costs(name, entry, arguments,
                                                       values["input_shape"])
    return ModelInfo(name=name, **values)


def _costs(name: str, entry: _Entry, arguments: Mapping[str, Any],
           input_shape: tuple[int, ...]) -> tuple[int | None, int | None]:
    """``(params, forward_flops)`` of the model built with ``arguments``, cached per entry.

    Built on the meta device (no memory, no work) when the factory allows it, else on the CPU;
    the global RNG state is restored afterwards, so measuring does not shift later draws.
    """
    key = repr(sorted(arguments.items()))
    if key not in entry.costs:
        from torch.utils.flop_counter import FlopCounterMode

        params = flops = None
        with torch.random.fork_rng(devices=[]):
            for device in ("meta", "cpu"):
                try:
                    with torch.device(device):
                        model = entry.factory(**arguments)
                    if params is None:
                        params = sum(p.numel() for p in model.parameters())
                    x = torch.zeros((1, *input_shape), device=device)
                    with FlopCounterMode(display=False) as counter, torch.no_grad():
                        model.eval()(x)
                    flops = int(counter.get_total_flops())
                    break
                except Exception as exc:  # a cost we cannot measure is unknown, not an error
                    log.debug("model_info(%r): no %s forward pass: %s", name, device, exc)
        entry.costs[key] = (params, flops)
    return entry.costs[key]


def create(name: str, **kwargs: Any) -> nn.Module:
    """Build a fresh, randomly initialised model by registry name.

    The returned module carries ``registry_name`` and ``registry_kwargs`` attributes, so a
    checkpoint card can record how to rebuild it.

    Raises:
        ValueError: unknown name (the message lists the known names), or a bad argument value.
        TypeError: an unknown keyword argument (named in the message).

    Example:
        >>> import torch
        >>> model = create("mnist-mlp")
        >>> model(torch.rand(4, 1, 28, 28)).shape
        torch.Size([4, 10])
    """
    entry = _entry(name)
    _bind(name, entry, kwargs)
    model = entry.factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"factory of {name!r} returned {type(model).__name__}, expected torch.nn.Module"
        )
    model.registry_name = name
    model.registry_kwargs = dict(kwargs)
    return model


def is_randomized(model: nn.Module) -> bool:
    """True if any submodule declares itself randomized (``randomized`` attribute is True).

    Example:
        >>> is_randomized(create("mnist-cnn")), is_randomized(create("vone-mnist-cnn"))
        (False, True)
    """
    return any(bool(getattr(m, "randomized", False)) for m in model.modules())
