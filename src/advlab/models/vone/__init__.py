"""VOneBlock: a fixed, stochastic model of primate V1 in front of a CNN (VOneNet).

Reimplemented from the description in Dapello, Marques, Schrimpf, Geiger, Cox & DiCarlo,
"Simulating a Primary Visual Cortex at the Front of CNNs Improves Robustness to Image
Perturbations" (NeurIPS 2020), adapted to 28x28 MNIST as in the "VOneNet-FGSM" student report
(stride 1, 1x1 bottleneck to 32 channels, the report's models as back-ends).

Pipeline: Gabor filter bank (fixed buffers) -> simple cells ``ReLU(q0)`` and complex cells
``sqrt(q0^2 + q1^2) / sqrt(2)`` -> times ``k_exc`` -> stochastic noise (in training *and*
evaluation mode) -> ReLU -> trainable 1x1 convolution without bias (the bottleneck).

Because the model is randomized, an honest evaluation averages gradients over the noise
(expectation over transformation, Athalye et al. 2018) and also attacks it with the noise fixed.

Modules (every public name is re-exported here):

* ``gabor``: V1 parameter statistics, sampling of Gabor parameters, kernels, bank statistics.
* ``config``: :class:`VOneConfig`, the named :data:`PRESETS` and the complex-cell variants.
* ``kernels``: the hand-written autograd functions (FFT correlation, fused V1 response).
* ``block``: :class:`VOneBlock`, the V1 front end.
* ``net``: :class:`VOneNet`, :func:`vonenet` / ``vone``, :func:`finite_gradient_twin` and the
  ``vone-mnist-*`` registry entries.

Example:
    >>> import torch
    >>> from advlab.models import create
    >>> model = create("vone-mnist-cnn", preset="sound").eval()
    >>> x = torch.rand(2, 1, 28, 28)
    >>> model(x).shape
    torch.Size([2, 10])
    >>> bool((model(x) != model(x)).any())      # noise stays on in eval mode
    True
    >>> with model.frozen_noise(seed=0):
    ...     bool(torch.equal(model(x), model(x)))
    True
"""

from advlab.models.vone.block import FFT_MIN_KSIZE, VOneBlock
from advlab.models.vone.config import COMPLEX_CELLS as COMPLEX_CELLS
from advlab.models.vone.config import PRESETS, VOneConfig
from advlab.models.vone.gabor import CONVENTIONS as CONVENTIONS
from advlab.models.vone.gabor import DICARLOLAB_SF_BINS as DICARLOLAB_SF_BINS
from advlab.models.vone.gabor import DICARLOLAB_SF_COUNTS as DICARLOLAB_SF_COUNTS
from advlab.models.vone.gabor import NXNY_BINS as NXNY_BINS
from advlab.models.vone.gabor import NXNY_COUNTS as NXNY_COUNTS
from advlab.models.vone.gabor import NYQUIST as NYQUIST
from advlab.models.vone.gabor import ORI_BINS as ORI_BINS
from advlab.models.vone.gabor import ORI_COUNTS as ORI_COUNTS
from advlab.models.vone.gabor import SF_BINS as SF_BINS
from advlab.models.vone.gabor import SF_COUNTS as SF_COUNTS
from advlab.models.vone.gabor import (
    GaborParams,
    fraction_above_nyquist,
    gabor_bank_stats,
    gabor_kernels,
    sample_gabor_params,
)
from advlab.models.vone.net import VOneNet, finite_gradient_twin, vone, vonenet

__all__ = [
    "FFT_MIN_KSIZE",
    "PRESETS",
    "GaborParams",
    "VOneBlock",
    "VOneConfig",
    "VOneNet",
    "finite_gradient_twin",
    "fraction_above_nyquist",
    "gabor_bank_stats",
    "gabor_kernels",
    "sample_gabor_params",
    "vone",
    "vonenet",
]
