"""Per-example attack losses and the attack goal.

Every loss maps logits ``[N, C]`` and labels ``[N]`` to a per-example loss ``[N]`` that
is *high when the model is wrong about the label*. An untargeted attack ascends the loss
of the true label; a targeted attack descends the loss of the target label (Dong et al.,
CVPR 2018, Sec. 3.3: ``x* = x - alpha * sign(g)`` with ``g`` from ``J(x, y_target)``).

Example:
    >>> import torch
    >>> from advlab.attacks.losses import get_loss
    >>> z = torch.tensor([[2.0, 0.5, -1.0]])
    >>> float(get_loss("cw")(z, torch.tensor([0])))
    -1.5
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["Goal", "cross_entropy", "cw_margin", "get_loss", "LOSSES"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Goal(enum.Enum):
    """Untargeted: make the prediction differ from the label. Targeted: reach the target."""

    UNTARGETED = "untargeted"
    TARGETED = "targeted"

    @property
    def sign(self) -> float:
        """+1 to ascend the loss (untargeted), -1 to descend it (targeted)."""
        return 1.0 if self is Goal.UNTARGETED else -1.0


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy per example."""
    return F.cross_entropy(logits, labels, reduction="none")


def cw_margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin ``max_{j != y} z_j - z_y`` per example (Carlini & Wagner, 2017).

    Positive exactly when the model does not predict ``y``.
    """
    z_y = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf"))
    return other.amax(dim=1) - z_y


LOSSES: dict[str, LossFn] = {"ce": cross_entropy, "cw": cw_margin}


def get_loss(loss: str | LossFn) -> LossFn:
    """A loss by name (``"ce"`` or ``"cw"``) or a callable returned unchanged."""
    if callable(loss):
        return loss
    if isinstance(loss, str) and loss.lower() in LOSSES:
        return LOSSES[loss.lower()]
    raise ValueError(f"loss must be one of {sorted(LOSSES)} or a callable, got {loss!r}")
