"""Model zoo: the student report's four MNIST models and their VOneNet versions, and MNIST
stand-ins for the four normal models of the momentum-attack paper.

Registered names: ``mnist-alexnet``, ``mnist-convnet``, ``mnist-cnn``, ``mnist-mlp`` and
``vone-mnist-alexnet``, ``vone-mnist-convnet``, ``vone-mnist-cnn``, ``vone-mnist-mlp``
(VOneBlock of Dapello et al., NeurIPS 2020, in front of each); ``mnist-inception-v3``,
``mnist-inception-v4``, ``mnist-inception-resnet-v2``, ``mnist-resnet`` (Dong et al., CVPR 2018's
Inception-v3, Inception-v4, Inception-ResNet-v2 and ResNet-152, see :mod:`.paper_zoo`). All
take ``[N, 1, 28, 28]`` pixels in [0, 1] and return logits.

Example:
    >>> import torch
    >>> from advlab.models import create, list_models, model_info
    >>> len(list_models()) >= 8
    True
    >>> model_info("vone-mnist-cnn").randomized
    True
    >>> create("mnist-cnn")(torch.rand(1, 1, 28, 28)).shape
    torch.Size([1, 10])
"""

from advlab.models.mnist import MNISTMLP, MNISTAlexNet, MNISTBasicCNN, MNISTConvNet
from advlab.models.paper_zoo import (
    MNISTInceptionResNetV2,
    MNISTInceptionV3,
    MNISTInceptionV4,
    MNISTResNet,
)
from advlab.models.registry import (
    ModelInfo,
    create,
    is_randomized,
    list_models,
    model_info,
    register,
    unregister,
)
from advlab.models.vone import (
    PRESETS,
    GaborParams,
    VOneBlock,
    VOneConfig,
    VOneNet,
    finite_gradient_twin,
    fraction_above_nyquist,
    gabor_bank_stats,
    gabor_kernels,
    sample_gabor_params,
    vonenet,
)

__all__ = [
    "MNISTMLP",
    "PRESETS",
    "GaborParams",
    "MNISTAlexNet",
    "MNISTBasicCNN",
    "MNISTConvNet",
    "MNISTInceptionResNetV2",
    "MNISTInceptionV3",
    "MNISTInceptionV4",
    "MNISTResNet",
    "ModelInfo",
    "VOneBlock",
    "VOneConfig",
    "VOneNet",
    "create",
    "finite_gradient_twin",
    "fraction_above_nyquist",
    "gabor_bank_stats",
    "gabor_kernels",
    "is_randomized",
    "list_models",
    "model_info",
    "register",
    "sample_gabor_params",
    "unregister",
    "vonenet",
]
