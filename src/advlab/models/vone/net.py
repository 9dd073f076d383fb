"""VOneNet: a VOneBlock in front of one of the report's back-ends, :func:`vonenet` and the
``vone-mnist-*`` registry entries."""

from __future__ import annotations

import copy
import dataclasses
import inspect
from typing import Any

import torch
from torch import nn

from advlab.models.mnist import MNISTMLP, MNISTAlexNet, MNISTBasicCNN, MNISTConvNet
from advlab.models.registry import register
from advlab.models.vone.block import VOneBlock
from advlab.models.vone.config import VOneConfig, _resolve_config

__all__ = ["VOneNet", "finite_gradient_twin", "vone", "vonenet"]


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


#: Alias of :func:`vonenet` (the name used in the design notes). Import it from
#: ``advlab.models.vone``; the ``advlab.models`` namespace only exports ``vonenet``, so
#: ``advlab.models.vone`` stays the package.
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
