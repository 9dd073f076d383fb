"""The four MNIST classifiers of the "VOneNet-FGSM" student report (Kim & Ahn, 2021).

Layer for layer as the report's code (see ``REFERENCE.md`` section 1b). Every model takes
``[N, in_channels, 28, 28]`` inputs with pixels in [0, 1] (no normalisation, as in the report)
and returns logits ``[N, num_classes]``. ``in_channels`` is 1 for images and the bottleneck
width (32 in the report) when the model is the back-end of a VOneNet.

================  ==============  =====================================================
registry name     report name     layers
================  ==============  =====================================================
``mnist-alexnet`` AlexNet         torchvision-style AlexNet features (first conv 5x5/2),
                                  AdaptiveAvgPool(7x7), classifier 12544-4096-4096-10
``mnist-convnet`` ConvNet         3 convs with two MaxPool(3, 3), flatten 512, 512-512-10
``mnist-cnn``     Basic-CNN       2 conv + MaxPool(2) blocks, FC 3136 -> 10
``mnist-mlp``     Linear-Regr.    FC 784 -> 784, ReLU, FC 784 -> 10 (an MLP)
================  ==============  =====================================================

Example:
    >>> import torch
    >>> from advlab.models import create
    >>> model = create("mnist-convnet").eval()
    >>> model(torch.rand(2, 1, 28, 28)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
from torch import nn

from advlab._check import positive_int
from advlab.models.registry import register

__all__ = ["MNISTAlexNet", "MNISTBasicCNN", "MNISTConvNet", "MNISTMLP", "IMAGE_SIZE"]

IMAGE_SIZE = 28
REPORT = "Kim & Ahn, 'VOneNet-FGSM' student report (2021), MNIST models"


class MNISTAlexNet(nn.Module):
    """The report's "AlexNet": torchvision's AlexNet layout adapted to 28x28 inputs.

    Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural
    Networks" (NeurIPS 2012), torchvision layout without its 11x11 first layer: the 5x5
    192-channel convolution comes first, with stride 2. Shapes for a 28x28 input: conv 5x5/2
    -> 14x14, max-pool 3/2 -> 7x7, three 3x3 convs -> 7x7, max-pool 3/2 -> 4x4, adaptive
    average pool -> 7x7, flatten 256*7*7 = 12544. Dropout (p = 0.5) is active only in training
    mode.

    Example:
        >>> import torch
        >>> MNISTAlexNet().eval()(torch.rand(1, 1, 28, 28)).shape
        torch.Size([1, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        in_channels = positive_int("in_channels", in_channels)
        num_classes = positive_int("num_classes", num_classes)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 192, kernel_size=5, stride=2, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Dropout(p=0.5),
            nn.Linear(256 * 7 * 7, 4096),
            nn.ReLU(),
            nn.Dropout(p=0.5),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class MNISTConvNet(nn.Module):
    """The report's "ConvNet": three convolutions, two MaxPool(3, 3), three linear layers.

    Shapes for a 28x28 input: conv 3x3 -> 28, MaxPool(3, 3) -> 9, conv 3x3 -> 9,
    MaxPool(3, 3) -> 3, conv 3x3 stride 2 padding 1 -> 2 (no ReLU after it, as in the report),
    flatten 128*2*2 = 512, then 512 -> 512 -> 512 -> classes with ReLUs.

    Example:
        >>> import torch
        >>> MNISTConvNet()(torch.rand(3, 1, 28, 28)).shape
        torch.Size([3, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        in_channels = positive_int("in_channels", in_channels)
        num_classes = positive_int("num_classes", num_classes)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=3),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=3),
            nn.Conv2d(64, 128, kernel_size=3, stride=2, padding=1),
        )
        self.classifier = nn.Sequential(
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, 512),
            nn.ReLU(),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class MNISTBasicCNN(nn.Module):
    """The report's "Basic-CNN": two conv/ReLU/MaxPool(2) blocks and one linear layer.

    Shapes for a 28x28 input: 28 -> 14 -> 7, flatten 64*7*7 = 3136 -> classes.

    Example:
        >>> import torch
        >>> MNISTBasicCNN()(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        in_channels = positive_int("in_channels", in_channels)
        num_classes = positive_int("num_classes", num_classes)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(64 * 7 * 7, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


class MNISTMLP(nn.Module):
    """The report's "Linear-Regression" model, really a one-hidden-layer MLP.

    Flattens ``in_channels*28*28`` inputs -> ``hidden`` (784) -> ReLU -> classes. As the back-end
    of a VOneNet it flattens the 32x28x28 bottleneck map (25088 inputs), as the report did.

    Example:
        >>> import torch
        >>> MNISTMLP()(torch.rand(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, hidden: int = 784) -> None:
        super().__init__()
        in_channels = positive_int("in_channels", in_channels)
        num_classes = positive_int("num_classes", num_classes)
        hidden = positive_int("hidden", hidden)
        self.fc1 = nn.Linear(in_channels * IMAGE_SIZE * IMAGE_SIZE, hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def _meta(description: str, **extra) -> dict:
    return {**extra,
        "input_shape": lambda a: (a["in_channels"], IMAGE_SIZE, IMAGE_SIZE),
        "num_classes": lambda a: a["num_classes"],
        "description": description,
        "randomized": False,
        "reference": REPORT,
    }


# AlexNet trains at about 34 images/s on the 2-core CPU (bench/zoo_speed.py): its quick run
# sees 1200 images twice (a smoke run: too few steps for a useful model).
@register("mnist-alexnet", **_meta("AlexNet-style CNN for MNIST (report 'AlexNet'), 70M params",
                                   quick_train_size=1200, quick_test_size=1000))
def mnist_alexnet(*, in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """The report's AlexNet (see :class:`MNISTAlexNet`)."""
    return MNISTAlexNet(in_channels=in_channels, num_classes=num_classes)


@register("mnist-convnet", **_meta("3-conv CNN with MaxPool(3,3) (report 'ConvNet')"))
def mnist_convnet(*, in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """The report's ConvNet (see :class:`MNISTConvNet`)."""
    return MNISTConvNet(in_channels=in_channels, num_classes=num_classes)


@register("mnist-cnn", **_meta("2-conv CNN, FC 3136->10 (report 'Basic-CNN')"))
def mnist_cnn(*, in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """The report's Basic-CNN (see :class:`MNISTBasicCNN`)."""
    return MNISTBasicCNN(in_channels=in_channels, num_classes=num_classes)


@register("mnist-mlp", **_meta("MLP 784-784-10 (report 'Linear-Regression')"))
def mnist_mlp(*, in_channels: int = 1, num_classes: int = 10) -> nn.Module:
    """The report's "Linear-Regression" MLP (see :class:`MNISTMLP`)."""
    return MNISTMLP(in_channels=in_channels, num_classes=num_classes)
