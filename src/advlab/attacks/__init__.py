"""Gradient attacks (one shared loop), losses, ensembles and the attack registry.

Every attack -- the gradient attacks (the one loop's presets, the transfer family among
them), the APGD variants (:mod:`advlab.attacks.apgd`), :class:`SquareAttack` and
:class:`RandomSignNoise` --
follows one protocol: a frozen config with ``eps``, ``norm``, ``bounds``, ``seed`` and
``name``; ``attack(model, x, y, target=None)`` returns the adversarial inputs and
``attack.run(model, x, y, target=None, *, generator=None)`` a result with ``x_adv``, drawing
all randomness from ``generator`` (a ``torch.Generator`` on ``x``'s device; by default one
seeded with ``seed``). The class attribute ``accepts_generator = True`` declares the
``generator=`` keyword, so that :mod:`advlab.evaluate` seeds one generator per batch; an
attack-like object without it is called as ``attack(model, x, y, target=...)``. The input
checks every attack shares are public in :mod:`advlab.attacks.base`
(:func:`~advlab.attacks.base.check_inputs`, :func:`~advlab.attacks.base.check_labels`,
:func:`~advlab.attacks.base.check_labels_range`, :func:`~advlab.attacks.base.probe_model`).

Example:
    >>> import torch
    >>> from advlab.attacks import create_attack, list_attacks
    >>> "mifgsm" in list_attacks()
    True
    >>> atk = create_attack("pgd", eps=0.3, steps=5, restarts=2)
    >>> atk.restarts
    2
"""

from __future__ import annotations

from typing import Any

from advlab.attacks.apgd import APGD, APGDDLR, APGDT
from advlab.attacks.base import (
    Attack,
    AttackResult,
    NonFiniteGradientError,
    NonFiniteGradientWarning,
    model_mode,
)
from advlab.attacks.ensemble import Ensemble, Fusion
from advlab.attacks.losses import Goal, cross_entropy, cw_margin, get_loss
from advlab.attacks.noise import RandomSignNoise
from advlab.attacks.presets import (
    BIM,
    DIFGSM,
    DIMIFGSM,
    FGM,
    FGSM,
    IFGSM,
    MIFGM,
    MIFGSM,
    NIFGSM,
    PGD,
    SINIFGSM,
    TIDIMIFGSM,
    TIFGSM,
    TIMIFGSM,
    TRANSFER_PRESETS,
    VMIFGSM,
    VNIFGSM,
    AdmixMIFGSM,
)
from advlab.attacks.square import SquareAttack

__all__ = [
    "Attack", "AttackResult", "NonFiniteGradientError", "NonFiniteGradientWarning",
    "model_mode", "Ensemble", "Fusion",
    "Goal", "cross_entropy", "cw_margin", "get_loss", "FGSM", "FGM", "IFGSM", "BIM", "PGD",
    "MIFGSM", "MIFGM", "NIFGSM", "DIFGSM", "DIMIFGSM", "TIFGSM", "TIMIFGSM", "TIDIMIFGSM",
    "SINIFGSM", "VMIFGSM", "VNIFGSM", "AdmixMIFGSM", "TRANSFER_PRESETS",
    "ATTACKS", "GRADIENT_ATTACKS", "APGD_ATTACKS", "create_attack", "list_attacks", "SquareAttack",
    "RandomSignNoise", "APGD", "APGDDLR", "APGDT",
]

#: name -> gradient attack class (all built on the one loop of ``base.py``).
GRADIENT_ATTACKS: dict[str, type[Attack]] = {
    cls.name: cls for cls in (FGSM, IFGSM, PGD, MIFGSM, *TRANSFER_PRESETS)
}
GRADIENT_ATTACKS["bim"] = IFGSM
#: name -> APGD variant (Croce and Hein, ICML 2020): the same protocol, its own schedule.
APGD_ATTACKS: dict[str, type[Attack]] = {cls.name: cls for cls in (APGD, APGDDLR, APGDT)}

#: name -> every attack class: the gradient attacks plus the gradient-free checks.
ATTACKS: dict[str, type] = {**GRADIENT_ATTACKS, **APGD_ATTACKS, "square": SquareAttack,
                            "randomnoise": RandomSignNoise}


def list_attacks() -> list[str]:
    """Names accepted by :func:`create_attack`."""
    return sorted(ATTACKS)


def attack_class(name: str) -> type:
    """The class registered under ``name`` (case, ``-`` and ``_`` ignored)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; expected one of {list_attacks()}")
    return ATTACKS[key]


def create_attack(name: str, **kwargs: Any) -> Any:
    """Build a registered attack by name, e.g. ``create_attack("mifgsm", eps=16/255)``."""
    cls = attack_class(name)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise TypeError(f"bad arguments for attack {name!r}: {e}") from None
