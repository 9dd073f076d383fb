"""ImageNet classifiers from timm, wrapped so that attacks see pixels in [0, 1].

The momentum paper (Dong et al., "Boosting Adversarial Attacks with Momentum", CVPR 2018)
attacks TF-slim Inception models on 299x299 images. timm ships ports of most of them
(:data:`PAPER_MODELS`); Inc-v3ens3, Inc-v3ens4 and Res-152 (ResNet v2, TF-slim) are not in
timm (:data:`MISSING_PAPER_MODELS`).

:class:`TimmClassifier` holds the network's input normalisation *inside* the module
(``(x - mean) / std`` with the mean and std of the weights' pretrained config), so the attack's
eps is measured in [0, 1] pixel space, as in the paper (eps = 16/255). It accepts only the
input size the network was trained at (299x299 for the Inception family) and raises a clear
error on any other size, rather than resizing silently: resize when loading the data
(:func:`advlab.data.imagefolder.load_image_folder`).

Labels: timm's ImageNet heads have 1000 classes (index 0 = tench). The TF-slim models and the
NIPS 2017 adversarial competition data use 1001 classes with 0 = background, so
``label_1000 = label_1001 - 1``: see :func:`nips17_to_imagenet` / :func:`imagenet_to_nips17`.

timm is imported only when a model is built (:func:`create_timm`); importing this module (and
registering the ``timm:<name>`` entries of the model registry) needs only torch. Without timm,
building raises an ImportError that names the extra: ``pip install 'advlab[imagenet]'``.

Weights cannot be downloaded on an offline machine: ``pretrained=True`` needs the Hugging Face
hub (or its cache); ``checkpoint_path=`` loads a local state dict instead.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from advlab.models.imagenet import TimmClassifier, nips17_to_imagenet
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 1000))
    >>> model = TimmClassifier(net, mean=(0.5,) * 3, std=(0.5,) * 3, input_size=(3, 8, 8))
    >>> model(torch.rand(2, 3, 8, 8)).shape
    torch.Size([2, 1000])
    >>> nips17_to_imagenet(torch.tensor([1, 1000])).tolist()
    [0, 999]

With timm installed (``pip install 'advlab[imagenet]'``)::

    from advlab.models import create
    import advlab.models.imagenet  # registers the timm:<name> entries
    model = create("timm:inception_v3.tf_in1k")             # random init, offline
    model = create("timm:inception_v3.tf_in1k", checkpoint_path="inc_v3.safetensors")
"""

from __future__ import annotations

import difflib
import importlib
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from advlab.models.registry import list_models, register

__all__ = [
    "IMAGENET_CLASSES",
    "INSTALL_HINT",
    "MISSING_PAPER_MODELS",
    "NIPS17_CLASSES",
    "PAPER_MODELS",
    "TimmClassifier",
    "create_timm",
    "imagenet_to_nips17",
    "import_timm",
    "nips17_to_imagenet",
    "register_timm",
]

#: the install command printed when timm is missing.
INSTALL_HINT = "pip install 'advlab[imagenet]'"

#: number of classes of timm's ImageNet-1k heads (0 = tench).
IMAGENET_CLASSES = 1000
#: number of classes of the TF-slim models / NIPS 2017 labels (0 = background, 1 = tench).
NIPS17_CLASSES = 1001

#: the paper's model roles (Dong et al., CVPR 2018, Tables 1-3) -> timm model names.
PAPER_MODELS: dict[str, str] = {
    "Inc-v3": "inception_v3.tf_in1k",
    "Inc-v4": "inception_v4.tf_in1k",
    "IncRes-v2": "inception_resnet_v2.tf_in1k",
    "Inc-v3adv": "inception_v3.tf_adv_in1k",
    "IncRes-v2ens": "inception_resnet_v2.tf_ens_adv_in1k",
}

#: the paper's roles that timm does not provide, with the reason.
MISSING_PAPER_MODELS: dict[str, str] = {
    "Inc-v3ens3": "ensemble-adversarially trained Inception v3 (Tramer et al. 2018): not in timm",
    "Inc-v3ens4": "ensemble-adversarially trained Inception v3 (Tramer et al. 2018): not in timm",
    "Res-152": "TF-slim ResNet v2 152: not in timm (timm's resnetv2_152* are other weights)",
}

_PAPER_INPUT_SHAPE = (3, 299, 299)


# -- labels -------------------------------------------------------------------------------

def _check_label_range(labels: torch.Tensor | int, lo: int, hi: int, what: str) -> None:
    t = torch.as_tensor(labels)
    if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
        raise TypeError(f"{what} labels must be integers, got dtype {t.dtype}")
    if t.numel() and (int(t.min()) < lo or int(t.max()) > hi):
        raise ValueError(f"{what} labels must lie in [{lo}, {hi}], got values in "
                         f"[{int(t.min())}, {int(t.max())}]")


def nips17_to_imagenet(labels: torch.Tensor | int) -> torch.Tensor | int:
    """1001-class labels (0 = background, NIPS 2017 / TF-slim) -> timm's 1000-class labels.

    ``label_1000 = label_1001 - 1``; the background class 0 has no 1000-class counterpart and
    raises.

    Example:
        >>> nips17_to_imagenet(1), nips17_to_imagenet(torch.tensor([306])).tolist()
        (0, [305])
    """
    _check_label_range(labels, 1, NIPS17_CLASSES - 1,
                       "NIPS 2017 (1001-class, 0 = background, not allowed)")
    return labels - 1


def imagenet_to_nips17(labels: torch.Tensor | int) -> torch.Tensor | int:
    """timm's 1000-class labels -> 1001-class labels (0 = background): ``label + 1``.

    Example:
        >>> imagenet_to_nips17(0)
        1
    """
    _check_label_range(labels, 0, IMAGENET_CLASSES - 1, "ImageNet (1000-class)")
    return labels + 1


# -- the wrapper ---------------------------------------------------------------------------

def _as_triple(name: str, value: Any, channels: int) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of {channels} numbers, got {value!r}") \
            from None
    if len(vals) != channels:
        raise ValueError(f"{name} must have one value per channel ({channels}), got {vals}")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"{name} must be finite, got {vals}")
    return vals


class TimmClassifier(nn.Module):
    """A classifier on pixels in [0, 1]: ``logits = model((x - mean) / std)``.

    Normalisation lives inside the wrapper, so attacks work in [0, 1] pixel space (rule 5 of
    the design) and eps = 16/255 means what it means in Dong et al. (CVPR 2018).

    Args:
        model: the network (usually from ``timm.create_model``), mapping normalised images to
            logits ``[N, num_classes]``.
        mean, std: per-channel normalisation (``std > 0``), e.g. ``(0.5, 0.5, 0.5)`` for the
            TF Inception ports.
        input_size: ``(C, H, W)`` the network expects; other shapes raise ``ValueError``.
        name: a label for messages (e.g. the timm name).
        data_config: timm's resolved data config, kept for loaders (interpolation, crop_pct).

    Attributes ``mean``/``std`` are non-persistent buffers: ``state_dict()`` holds only the
    network's weights (under ``model.``). If the network returns a tuple (auxiliary heads),
    the first element is used.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 5))
        >>> m = TimmClassifier(net, (0.5,) * 3, (0.25,) * 3, input_size=(3, 2, 2))
        >>> x = torch.rand(1, 3, 2, 2)
        >>> torch.allclose(m(x), net((x - 0.5) / 0.25))
        True
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float],
                 input_size: Sequence[int] = _PAPER_INPUT_SHAPE, name: str = "",
                 data_config: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        size = tuple(int(s) for s in input_size)
        if len(size) != 3 or min(size) < 1:
            raise ValueError(f"input_size must be (C, H, W) with positive entries, got "
                             f"{tuple(input_size)}")
        channels = size[0]
        mean_t = _as_triple("mean", mean, channels)
        std_t = _as_triple("std", std, channels)
        if min(std_t) <= 0:
            raise ValueError(f"std must be > 0 for every channel, got {std_t}")
        self.model = model
        self.name = str(name)
        self.input_size: tuple[int, int, int] = size  # type: ignore[assignment]
        self.data_config: dict[str, Any] = dict(data_config or {})
        self.register_buffer("mean", torch.tensor(mean_t).reshape(1, channels, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(std_t).reshape(1, channels, 1, 1),
                             persistent=False)

    @property
    def num_classes(self) -> int:
        n = getattr(self.model, "num_classes", None)
        return int(n) if n is not None else -1

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std``, after checking the shape."""
        self._check_input(x)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(self.normalize(x))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
        c, h, w = self.input_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (c, h, w):
            who = f"{self.name} " if self.name else ""
            raise ValueError(
                f"{who}expects inputs of shape [N, {c}, {h}, {w}] with pixels in [0, 1], got "
                f"{list(x.shape)}; resize when loading (e.g. advlab.data.imagefolder."
                f"load_image_folder(root, size={h})), the wrapper does not resize")

    def extra_repr(self) -> str:
        mean = tuple(round(float(v), 4) for v in self.mean.flatten())
        std = tuple(round(float(v), 4) for v in self.std.flatten())
        return f"name={self.name!r}, input_size={self.input_size}, mean={mean}, std={std}"


# -- timm ----------------------------------------------------------------------------------

def import_timm() -> Any:
    """Import timm, or raise an ImportError naming the ``imagenet`` extra."""
    try:
        return importlib.import_module("timm")
    except ImportError as e:
        raise ImportError(f"the ImageNet models need timm (and torchvision): {INSTALL_HINT} "
                          f"(import failed: {e})") from e
    except RuntimeError as e:  # e.g. "operator torchvision::nms does not exist"
        raise ImportError(
            f"timm is installed but failed to import ({e}); this usually means torchvision "
            f"does not match torch (install the torchvision release built for torch "
            f"{torch.__version__})") from e


def _data_config(timm: Any, model: nn.Module) -> dict[str, Any]:
    data = timm.data
    if hasattr(data, "resolve_model_data_config"):  # timm >= 0.9
        cfg = data.resolve_model_data_config(model)
    else:  # pragma: no cover - old timm
        cfg = data.resolve_data_config({}, model=model)
    return dict(cfg)


def _unknown_model_error(timm: Any, name: str) -> ValueError:
    known = list(timm.list_pretrained()) + list(timm.list_models())
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
    return ValueError(f"timm has no model {name!r}{hint}")


def create_timm(name: str, pretrained: bool = False, *,
                checkpoint_path: str | os.PathLike[str] | None = None,
                **kwargs: Any) -> TimmClassifier:
    """Build a timm model wrapped in :class:`TimmClassifier` (normalisation inside, eval mode).

    Mean, std and input size come from the model's pretrained config (``timm.data.
    resolve_model_data_config``), which timm attaches to the model even when
    ``pretrained=False``: a random-init ``inception_v3.tf_in1k`` gets mean = std = 0.5 and
    299x299 input, exactly like the real weights.

    Args:
        name: timm name with its pretrained tag, e.g. ``"inception_v3.tf_in1k"``
            (see :data:`PAPER_MODELS`).
        pretrained: download the weights (needs the Hugging Face hub or its cache; this fails
            offline: use ``checkpoint_path``).
        checkpoint_path: a local state dict (``.pth`` / ``.safetensors``) to load.
        **kwargs: passed to ``timm.create_model`` (e.g. ``num_classes``).

    Raises:
        ImportError: timm is not installed (the message names ``advlab[imagenet]``).
        ValueError: timm has no such model (the message suggests close names).
        RuntimeError: the pretrained weights could not be fetched or loaded.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty timm model name, got {name!r}")
    if not isinstance(pretrained, bool):
        raise TypeError(f"pretrained must be True or False, got {pretrained!r}")
    if checkpoint_path is not None:
        checkpoint_path = os.fspath(checkpoint_path)
        if not os.path.isfile(checkpoint_path):
            raise FileNotFoundError(f"checkpoint_path {checkpoint_path!r} is not a file")
    timm = import_timm()
    arch, _, tag = name.partition(".")
    if not timm.is_model(arch) or (tag and name not in timm.list_pretrained(f"{arch}.*")):
        raise _unknown_model_error(timm, name)
    try:
        net = timm.create_model(name, pretrained=pretrained,
                                checkpoint_path=checkpoint_path or "", **kwargs)
    except (TypeError, ValueError):
        raise
    except Exception as e:
        if checkpoint_path:
            raise RuntimeError(f"could not load checkpoint {checkpoint_path!r} into {name!r}: "
                               f"{type(e).__name__}: {e}") from e
        if pretrained:
            raise RuntimeError(
                f"could not load pretrained weights for {name!r}: {type(e).__name__}: {e}. "
                f"Weights cannot be downloaded offline: fetch them on another machine and "
                f"pass checkpoint_path=..., or point HF_HUB_CACHE at a cache that holds them"
            ) from e
        raise
    cfg = _data_config(timm, net)
    model = TimmClassifier(net, mean=cfg["mean"], std=cfg["std"],
                           input_size=cfg["input_size"], name=name, data_config=cfg)
    return model.eval()


# -- registry ------------------------------------------------------------------------------

def _timm_factory(name: str):
    def factory(*, pretrained: bool = False, checkpoint_path: str | None = None) -> nn.Module:
        return create_timm(name, pretrained=pretrained, checkpoint_path=checkpoint_path)

    factory.__name__ = f"timm_{name.replace('.', '_')}"
    factory.__doc__ = f"timm {name!r} in a TimmClassifier (see advlab.models.imagenet)."
    return factory


def register_timm(name: str, *, input_shape: Sequence[int] | None = None,
                  num_classes: int = IMAGENET_CLASSES, description: str = "",
                  reference: str = "timm (R. Wightman)") -> str:
    """Register timm model ``name`` as ``"timm:<name>"`` in the advlab registry; return that.

    Lazy: timm is imported when the model is created, not here, unless ``input_shape`` is
    None (then timm is imported to read it from the pretrained config). Registering a name
    twice is a no-op.

    Example:
        >>> register_timm("inception_v3.tf_in1k", input_shape=(3, 299, 299))
        'timm:inception_v3.tf_in1k'
    """
    key = f"timm:{name}"
    if key in list_models():
        return key
    if input_shape is None:
        timm = import_timm()
        cfg = timm.get_pretrained_cfg(name) if "." in name else None
        if cfg is None:
            raise ValueError(f"no pretrained config for timm model {name!r}; pass input_shape")
        input_shape = tuple(cfg.input_size)
        num_classes = int(cfg.num_classes or num_classes)
    register(key, input_shape=tuple(int(s) for s in input_shape), num_classes=num_classes,
             description=description or f"timm {name}, inputs in [0, 1]",
             reference=reference)(_timm_factory(name))
    return key


for _role, _name in PAPER_MODELS.items():
    register_timm(
        _name, input_shape=_PAPER_INPUT_SHAPE, num_classes=IMAGENET_CLASSES,
        description=f"{_role} of Dong et al. (timm {_name}), 299x299 inputs in [0, 1]",
        reference="Dong et al., Boosting Adversarial Attacks with Momentum, CVPR 2018; timm")
del _role, _name
