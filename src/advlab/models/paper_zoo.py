"""MNIST stand-ins for the four normal ImageNet models of Dong et al. (CVPR 2018).

The momentum-attack paper (Dong et al., "Boosting Adversarial Attacks with Momentum") attacks
Inception-v3, Inception-v4, Inception-ResNet-v2 and ResNet-152. These four small MNIST
networks keep what makes each of those a different kind of net (the block types, residual or
not, the depth ordering) at a size that trains in a minute or two on a 2-core CPU. Every model
takes ``[N, in_channels, 28, 28]`` inputs with pixels in [0, 1] (no normalisation) and returns
logits ``[N, num_classes]``. BatchNorm follows every convolution except the linear 1x1
up-projections of the residual Inception blocks; in eval mode it uses its running statistics,
so the models are deterministic and batch-independent. Every model downsamples to 14x14 with
its first layer and ends with global average pooling and one linear layer.

Params and MFLOPs (one 1x28x28 example, a multiply-add counting 2) are those that
:func:`~advlab.models.model_info` measures; "layers" counts weight layers (convolutions and
the classifier), "depth" those on the longest input-to-logits path.

==============================  ===================  ========================================
registry name                   stands for           what makes it that kind of net
==============================  ===================  ========================================
``mnist-inception-v3``          Inception-v3         BN-conv stem, 2 Inception-A (1x1 / 3x3 /
                                (Szegedy 2016)       factorised 5x5 / pool), reduction, 1
                                                     factorised 1x5 / 5x1 block. 41 182
                                                     params, 6.27 MFLOPs, 30 layers, depth 16
``mnist-inception-v4``          Inception-v4         conv/pool branching stem, 3 uniform
                                (Szegedy 2017)       Inception-A, reduction-A, 2 uniform
                                                     Inception-B (1x7 / 7x1). 48 679 params,
                                                     7.37 MFLOPs, 47 layers, depth 24
``mnist-inception-resnet-v2``   Inception-ResNet-v2  3 Inception-ResNet-A, reduction, 3
                                (Szegedy 2017)       Inception-ResNet-B: branches -> linear
                                                     1x1 -> x 0.3 -> + input -> ReLU. 44 898
                                                     params, 7.80 MFLOPs, 42 layers, depth 29
``mnist-resnet``                ResNet-152           bottleneck ResNet (1x1 / 3x3 / 1x1 x4,
                                (He 2016)            projection shortcuts), 3 + 4 + 3 blocks
                                                     at 14 / 7 / 7 pixels. 60 522 params,
                                                     6.81 MFLOPs, 34 layers, depth 32
==============================  ===================  ========================================

Training (``advlab.train.fit``, Adam lr 1e-3, batch 128, 60 000 images, 2-core CPU): each
model trains at 1 500-2 200 images/s and reaches >= 98.7 % test accuracy after 3 epochs
(1.5-2 minutes), 98.2-98.7 % after 2.

Example:
    >>> import torch
    >>> from advlab.models import create
    >>> model = create("mnist-inception-v3").eval()
    >>> model(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from advlab._check import positive_int
from advlab.models.registry import register

__all__ = [
    "MNISTInceptionResNetV2",
    "MNISTInceptionV3",
    "MNISTInceptionV4",
    "MNISTResNet",
    "IMAGE_SIZE",
]

IMAGE_SIZE = 28
ROLE = "Dong et al., Boosting Adversarial Attacks with Momentum (CVPR 2018), normal model"
INCEPTION_V3 = ("Szegedy et al., Rethinking the Inception Architecture for Computer Vision "
                "(CVPR 2016)")
INCEPTION_V4 = ("Szegedy et al., Inception-v4, Inception-ResNet and the Impact of Residual "
                "Connections on Learning (AAAI 2017)")
RESNET = "He et al., Deep Residual Learning for Image Recognition (CVPR 2016)"

# BatchNorm running statistics follow the last few batches (PyTorch's default 0.1 lags a few
# hundred Adam steps of a short run and costs up to 4 points of eval accuracy mid-training).
BN_MOMENTUM = 0.5
# Szegedy et al. (2017) scale residuals by 0.1-0.3 before the addition; with Adam a residual
# branch learns in proportion to its scale, and the top of their range trains fastest here.
RESIDUAL_SCALE = 0.3

# Widths. An Inception-A tuple is (1x1, 3x3 reduce, 3x3, 5x5 reduce, factorised 5x5, pool);
# an Inception-B tuple is (1x1, 7x7 reduce, factorised 7x7, pool); a reduction tuple is
# (3x3/2, reduce, 3x3 -> 3x3/2). Multiples of 8: narrower convolutions are no cheaper on a CPU.
V3_STEM = 24
V3_A = ((8, 6, 8, 6, 8, 8), (8, 8, 12, 6, 8, 8))
V3_RED = (32, 16, 16)
V3_B = ((32, 16, 32, 32),)
V4_STEM = 23
V4_A = (8, 6, 8, 6, 8, 8)
V4_RED = (24, 12, 16)
V4_B = (24, 12, 24, 24)
IR_STEM = 32
IR_A = (8, 8, 8)  # branch width: 1x1 / 1x1 -> 3x3 / 1x1 -> 3x3 -> 3x3
IR_RED = (24, 12, 16)
IR_B = (24, 12)  # 1x1 / 1x1 -> 1x7 -> 7x1
RESNET_STEM = 32
RESNET_STAGES = ((8, 3), (16, 4), (24, 3))  # (bottleneck width, blocks); outputs x4
# the last stage keeps the 7x7 grid: striding it to 4x4 cost 0.3-0.5 points of accuracy
RESNET_STRIDES = (1, 2, 1)


class ConvBN(nn.Sequential):
    """Conv2d (no bias, "same" padding) -> BatchNorm2d -> ReLU: Inception's BN-conv unit.

    ``kernel`` is an int or a ``(height, width)`` pair (the asymmetric 1xk / kx1 convolutions
    of Inception-v3's factorisation); ``relu=False`` leaves the ReLU out (ResNet's last
    convolution of a block, added to the shortcut before its ReLU).

    Example:
        >>> import torch
        >>> ConvBN(1, 4, (1, 5))(torch.rand(2, 1, 7, 7)).shape
        torch.Size([2, 4, 7, 7])
    """

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int] = 1,
                 stride: int = 1, relu: bool = True) -> None:
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, (kh, kw), stride=stride, padding=(kh // 2, kw // 2),
                      bias=False),
            nn.BatchNorm2d(cout, momentum=BN_MOMENTUM),
        ]
        if relu:
            layers.append(nn.ReLU())
        super().__init__(*layers)


class Branches(nn.Module):
    """Parallel branches on the same input, concatenated along channels (an Inception block).

    Example:
        >>> import torch
        >>> block = Branches(ConvBN(3, 4), nn.MaxPool2d(3, 1, 1))
        >>> block.out_channels_from(3), block(torch.rand(1, 3, 5, 5)).shape
        (7, torch.Size([1, 7, 5, 5]))
    """

    def __init__(self, *branches: nn.Module) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def out_channels_from(self, cin: int) -> int:
        """Output width for ``cin`` input channels (a pooling branch passes ``cin`` through)."""
        return sum(_width(b, cin) for b in self.branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b(x) for b in self.branches], dim=1)


def _width(module: nn.Module, cin: int) -> int:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels if convs else cin


class AvgPool3(nn.Module):
    """3x3 average pooling, stride 1, zero padding counted (``nn.AvgPool2d(3, 1, 1)``),
    computed as a fixed depthwise convolution: 2-3x faster than ``avg_pool2d`` on a CPU.

    Example:
        >>> import torch
        >>> x = torch.rand(2, 3, 7, 7)
        >>> torch.allclose(AvgPool3()(x), nn.AvgPool2d(3, 1, 1)(x), atol=1e-6)
        True
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        kernel = torch.full((c, 1, 3, 3), 1 / 9, dtype=x.dtype, device=x.device)
        return F.conv2d(x, kernel, padding=1, groups=c)


def pool_branch(cin: int, cout: int) -> nn.Sequential:
    """The pool branch, avg-pool 3x3 -> 1x1 BN-conv, with the 1x1 convolution moved before the
    pooling: both are linear and the convolution has no bias, so they commute exactly, and
    the pooling then runs on the narrower output."""
    conv = nn.Conv2d(cin, cout, 1, bias=False)
    return nn.Sequential(conv, AvgPool3(), nn.BatchNorm2d(cout, momentum=BN_MOMENTUM),
                         nn.ReLU())


def inception_a(cin: int, widths: tuple[int, ...]) -> Branches:
    """Inception-A: 1x1 / 1x1 -> 3x3 / 1x1 -> 3x3 -> 3x3 (a factorised 5x5) / avg-pool -> 1x1.

    ``widths`` = (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool projection).
    """
    b1, r3, c3, r5, c5, bp = widths
    return Branches(
        ConvBN(cin, b1, 1),
        nn.Sequential(ConvBN(cin, r3, 1), ConvBN(r3, c3, 3)),
        nn.Sequential(ConvBN(cin, r5, 1), ConvBN(r5, c5, 3), ConvBN(c5, c5, 3)),
        pool_branch(cin, bp),
    )


def reduction_a(cin: int, widths: tuple[int, int, int]) -> Branches:
    """Grid reduction (halves the grid, 14 -> 7): 3x3/2 / 1x1 -> 3x3 -> 3x3/2 / max-pool 3/2.

    Szegedy et al. (2016, section 5): strided convolutions and pooling in parallel, so the
    grid shrinks without a representational bottleneck. ``widths`` = (3x3/2, reduce, out).
    """
    n, r, m = widths
    return Branches(
        ConvBN(cin, n, 3, stride=2),
        nn.Sequential(ConvBN(cin, r, 1), ConvBN(r, m, 3), ConvBN(m, m, 3, stride=2)),
        nn.MaxPool2d(3, stride=2, padding=1),
    )


def inception_b(cin: int, widths: tuple[int, int, int, int], k: int) -> Branches:
    """Inception-v3's factorised asymmetric block (its 17x17 "Mixed_6" modules): 1x1 /
    1x1 -> 1xk -> kx1 / 1x1 -> kx1 -> 1xk -> kx1 -> 1xk / avg-pool -> 1x1.

    ``widths`` = (1x1, reduce, out of the factorised branches, pool projection).
    """
    b1, r, c, bp = widths
    return Branches(
        ConvBN(cin, b1, 1),
        nn.Sequential(ConvBN(cin, r, 1), ConvBN(r, r, (1, k)), ConvBN(r, c, (k, 1))),
        nn.Sequential(ConvBN(cin, r, 1), ConvBN(r, r, (k, 1)), ConvBN(r, r, (1, k)),
                      ConvBN(r, r, (k, 1)), ConvBN(r, c, (1, k))),
        pool_branch(cin, bp),
    )


def _head(width: int, num_classes: int) -> nn.Sequential:
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))


def _check(in_channels: int, num_classes: int) -> tuple[int, int]:
    return positive_int("in_channels", in_channels), positive_int("num_classes", num_classes)


class MNISTInceptionV3(nn.Module):
    """The Inception-v3 analogue: BN-conv stem, two Inception-A, a reduction, one
    factorised-asymmetric (1x5 / 5x1) block, global average pooling, linear classifier.

    Szegedy et al., "Rethinking the Inception Architecture for Computer Vision" (CVPR 2016):
    5x5 convolutions factorised into two 3x3 (Inception-A, their figure 5), parallel
    conv/pool grid reduction (figure 10), nxn convolutions factorised into 1xn and nx1
    (figure 6; n = 5 on the 7x7 grid, as n = 7 on their 17x17 grid), BatchNorm after every
    convolution. Shapes for a 28x28 input: stem conv 3x3/2 -> 24x14x14, Inception-A -> 32x14x14,
    Inception-A -> 36x14x14, reduction -> 84x7x7, Inception-B -> 128x7x7, pool -> 128.

    Example:
        >>> import torch
        >>> MNISTInceptionV3().eval()(torch.rand(1, 1, 28, 28)).shape
        torch.Size([1, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        in_channels, num_classes = _check(in_channels, num_classes)
        layers: list[nn.Module] = [ConvBN(in_channels, V3_STEM, 3, stride=2)]
        width = V3_STEM
        for widths in V3_A:
            layers.append(inception_a(width, widths))
            width = layers[-1].out_channels_from(width)
        layers.append(reduction_a(width, V3_RED))
        width = layers[-1].out_channels_from(width)
        for widths in V3_B:
            layers.append(inception_b(width, widths, k=5))
            width = layers[-1].out_channels_from(width)
        self.features = nn.Sequential(*layers)
        self.classifier = _head(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class MNISTInceptionV4(nn.Module):
    """The Inception-v4 analogue: v4's branching stem, three Inception-A, reduction-A, two
    Inception-B (1x7 / 7x1), global average pooling, linear classifier.

    Szegedy et al., "Inception-v4, Inception-ResNet and the Impact of Residual Connections on
    Learning" (AAAI 2017): the same kinds of blocks as Inception-v3 but more of them and
    uniform (every Inception-A has the same output width, as every Inception-B), after a stem
    whose grid reduction is itself a conv/pool concatenation (their figure 3; here on the
    image). Shapes for a 28x28 input: [conv 3x3/2 | max-pool 2] -> 24x14x14, Inception-A x3
    -> 32x14x14, reduction-A -> 72x7x7, Inception-B x2 -> 96x7x7, pool -> 96.

    Example:
        >>> import torch
        >>> MNISTInceptionV4().eval()(torch.rand(1, 1, 28, 28)).shape
        torch.Size([1, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        in_channels, num_classes = _check(in_channels, num_classes)
        layers: list[nn.Module] = [
            Branches(ConvBN(in_channels, V4_STEM, 3, stride=2), nn.MaxPool2d(2)),
        ]
        width = V4_STEM + in_channels
        for _ in range(3):
            layers.append(inception_a(width, V4_A))
            width = layers[-1].out_channels_from(width)
        layers.append(reduction_a(width, V4_RED))
        width = layers[-1].out_channels_from(width)
        for _ in range(2):
            layers.append(inception_b(width, V4_B, k=7))
            width = layers[-1].out_channels_from(width)
        self.features = nn.Sequential(*layers)
        self.classifier = _head(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class InceptionResidual(nn.Module):
    """An Inception-ResNet block: ``relu(x + scale * up(cat(branches(x))))``.

    ``up`` is a linear 1x1 convolution (bias, no BatchNorm, no activation) back to the input
    width; ``scale`` damps the residual (Szegedy et al. 2017, section 3.3).

    Example:
        >>> import torch
        >>> block = InceptionResidual(Branches(ConvBN(4, 2), ConvBN(4, 3, 3)), 4)
        >>> block(torch.rand(1, 4, 5, 5)).shape
        torch.Size([1, 4, 5, 5])
    """

    def __init__(self, branches: Branches, width: int, scale: float | None = None) -> None:
        super().__init__()
        self.branches = branches
        self.up = nn.Conv2d(branches.out_channels_from(width), width, 1, bias=True)
        # He-normal, not PyTorch's default (2.4x smaller): no BatchNorm follows this layer, so
        # its scale sets how fast the scaled residual can grow
        nn.init.kaiming_normal_(self.up.weight, nonlinearity="relu")
        self.scale = float(RESIDUAL_SCALE if scale is None else scale)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.scale * self.up(self.branches(x)))


def inception_resnet_a(width: int) -> InceptionResidual:
    """Inception-ResNet-A: 1x1 / 1x1 -> 3x3 / 1x1 -> 3x3 -> 3x3, then the linear 1x1."""
    b1, b3, b5 = IR_A
    return InceptionResidual(Branches(
        ConvBN(width, b1, 1),
        nn.Sequential(ConvBN(width, b3, 1), ConvBN(b3, b3, 3)),
        nn.Sequential(ConvBN(width, b3, 1), ConvBN(b3, b5, 3), ConvBN(b5, b5, 3)),
    ), width)


def inception_resnet_b(width: int, k: int = 7) -> InceptionResidual:
    """Inception-ResNet-B: 1x1 / 1x1 -> 1xk -> kx1, then the linear 1x1."""
    b1, b7 = IR_B
    return InceptionResidual(Branches(
        ConvBN(width, b1, 1),
        nn.Sequential(ConvBN(width, b7, 1), ConvBN(b7, b7, (1, k)), ConvBN(b7, b7, (k, 1))),
    ), width)


class MNISTInceptionResNetV2(nn.Module):
    """The Inception-ResNet-v2 analogue: stem, three Inception-ResNet-A at 14x14, a reduction,
    three Inception-ResNet-B (1x7 / 7x1) at 7x7, global average pooling, linear classifier.

    Szegedy et al. (AAAI 2017), figures 16-18: each block's branches are concatenated,
    projected back to the block width by a linear 1x1 convolution, scaled by
    :data:`RESIDUAL_SCALE` and added to the block input, then ReLU. Shapes for a 28x28 input:
    stem conv 3x3/2 -> 32x14x14, Inception-ResNet-A x3 -> 32x14x14, reduction -> 72x7x7,
    Inception-ResNet-B x3 -> 72x7x7, pool -> 72.

    Example:
        >>> import torch
        >>> MNISTInceptionResNetV2().eval()(torch.rand(1, 1, 28, 28)).shape
        torch.Size([1, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        in_channels, num_classes = _check(in_channels, num_classes)
        layers: list[nn.Module] = [ConvBN(in_channels, IR_STEM, 3, stride=2)]
        layers += [inception_resnet_a(IR_STEM) for _ in range(3)]
        layers.append(reduction_a(IR_STEM, IR_RED))
        width = layers[-1].out_channels_from(IR_STEM)
        layers += [inception_resnet_b(width) for _ in range(3)]
        self.features = nn.Sequential(*layers)
        self.classifier = _head(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class Bottleneck(nn.Module):
    """He et al.'s bottleneck block: 1x1 reduce -> 3x3 (carries the stride) -> 1x1 expand
    (x4), BatchNorm after each; shortcut identity, or 1x1 projection + BN when the shape
    changes; ReLU after the addition.

    Example:
        >>> import torch
        >>> Bottleneck(8, 4, stride=2)(torch.rand(1, 8, 7, 7)).shape
        torch.Size([1, 16, 4, 4])
    """

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1) -> None:
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(ConvBN(cin, width, 1), ConvBN(width, width, 3, stride=stride),
                                  ConvBN(width, cout, 1, relu=False))
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = ConvBN(cin, cout, 1, stride=stride, relu=False)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class MNISTResNet(nn.Module):
    """The ResNet-152 analogue: a narrow, deep bottleneck ResNet, the deepest of the four.

    He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), the ImageNet
    bottleneck design: stem conv 3x3/2 -> 32x14x14, then stages of 3, 4 and 3 bottleneck
    blocks (widths 8 / 16 / 24, outputs x4: 32x14x14, 64x7x7, 96x7x7; the first block of
    stage 2 strides), global average pooling, linear classifier: 32 weight layers on the
    longest path, plus two projection shortcuts. Like ResNet-152 (3 + 8 + 36 + 3 blocks) it
    is the deepest of the four, with most of its blocks in the middle.

    Example:
        >>> import torch
        >>> MNISTResNet().eval()(torch.rand(1, 1, 28, 28)).shape
        torch.Size([1, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        in_channels, num_classes = _check(in_channels, num_classes)
        layers: list[nn.Module] = [ConvBN(in_channels, RESNET_STEM, 3, stride=2)]
        width = RESNET_STEM
        for stage, (mid, blocks) in enumerate(RESNET_STAGES):
            for i in range(blocks):
                stride = RESNET_STRIDES[stage] if i == 0 else 1
                layers.append(Bottleneck(width, mid, stride=stride))
                width = mid * Bottleneck.expansion
        self.features = nn.Sequential(*layers)
        self.classifier = _head(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _meta(description: str, reference: str) -> dict:
    return {
        "input_shape": lambda a: (a["in_channels"], IMAGE_SIZE, IMAGE_SIZE),
        "num_classes": lambda a: a["num_classes"],
        "description": description,
        "randomized": False,
        "reference": f"{reference}; role: {ROLE}",
    }


@register("mnist-inception-v3", **_meta(
    "Inception-v3 analogue (momentum zoo), 0.041M params", INCEPTION_V3))
def mnist_inception_v3(*, in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """The Inception-v3 analogue (see :class:`MNISTInceptionV3`)."""
    return MNISTInceptionV3(in_channels=in_channels, num_classes=num_classes)


@register("mnist-inception-v4", **_meta(
    "Inception-v4 analogue (momentum zoo), 0.049M params", INCEPTION_V4))
def mnist_inception_v4(*, in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """The Inception-v4 analogue (see :class:`MNISTInceptionV4`)."""
    return MNISTInceptionV4(in_channels=in_channels, num_classes=num_classes)


@register("mnist-inception-resnet-v2", **_meta(
    "Inception-ResNet-v2 analogue (momentum zoo), 0.045M params", INCEPTION_V4))
def mnist_inception_resnet_v2(*, in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """The Inception-ResNet-v2 analogue (see :class:`MNISTInceptionResNetV2`)."""
    return MNISTInceptionResNetV2(in_channels=in_channels, num_classes=num_classes)


@register("mnist-resnet", **_meta(
    "ResNet-152 analogue (momentum zoo), 0.061M params", RESNET))
def mnist_resnet(*, in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """The ResNet-152 analogue (see :class:`MNISTResNet`)."""
    return MNISTResNet(in_channels=in_channels, num_classes=num_classes)
