"""``advlab reproduce vonenet-fgsm``: the VOneNet-FGSM student report, then a sound evaluation.

Part 1 reruns the report (REFERENCE §1b) faithfully: four MNIST classifiers and their VOne
versions with the student's exact front end (``preset="report"``: their bank, no epsilon in
the complex cell's sqrt), Adam lr 1e-3, batch 64; FGSM at eps 0.35 as the student ran it ("as
reported": the gradient of the batch-mean cross-entropy from one noise draw, its sign,
clipped to [0, 1], the accuracy from another draw; ``sign(NaN) = 0`` where the gradient is
NaN), adversarial fine-tuning (Adam lr 1e-4, the same FGSM regenerated each epoch against the
current model) with its curves, and grids of adversarial vs original images. The mechanism
behind the number is measured on the same images (:mod:`advlab.experiments.vonenet.mechanism`):
NaN gradient entries, unchanged images and pixels, and the same FGSM with finite gradients.

Part 2 tests the claims with the checklist of Carlini et al. (2019) / Athalye et al. (2018):
for each model (and each fine-tuned model), on a fixed subset of the test set, the
adversarial examples of several attacks -- clipped FGSM with EOT over the noise, APGD-CE and
APGD-DLR (Croce and Hein, ICML 2020) with EOT and restarts, PGD at the same budget (kept so the
two can be compared), PGD crafted with the noise fixed, transfer from the plain model, the
gradient-free Square Attack and random sign noise -- are each evaluated over several noise
draws. Student-exact models are attacked through their finite-gradient twin (same weights and
forward values). The per-example worst case over attacks is chosen on selection draws and
scored on fresh ones, and never reported above the best single attack; accuracy is reported
with a 95 % Wilson interval. An eps sweep from 0 to 0.5 and the audit flags (of the
student-exact model and of its twin) complete the evidence.

Under ``torchrun`` whole work items (one model's training, fine-tuning, as-reported, sound,
sweep or audit evaluation) are dealt to the processes and stored in the shared cache; rank 0
then runs the pipeline on the cached items and writes the same files as one process.

Modules:

* :mod:`~advlab.experiments.vonenet.config`: the models, the report's numbers,
  :class:`VoneNetConfig` and its profiles.
* :mod:`~advlab.experiments.vonenet.mechanism`: the student's FGSM and the NaN-gradient
  measurements behind its number.
* :mod:`~advlab.experiments.vonenet.sound`: the sound evaluation (attacks, worst case over
  noise draws) and the eps sweep.
* :mod:`~advlab.experiments.vonenet.units`: the cached work units (as reported, fine-tuning,
  sound, sweep, audit) and their cache keys.
* :mod:`~advlab.experiments.vonenet.run`: :func:`run_vonenet`, the pipeline, and the torchrun
  dealing of the work units.
* :mod:`~advlab.experiments.vonenet.claims`: which of the report's claims survive.
* :mod:`~advlab.experiments.vonenet.render`: the tables and the report.

Example:
    >>> from advlab.experiments.vonenet import VoneNetConfig
    >>> VoneNetConfig.preset("quick").eps
    0.35
"""

from __future__ import annotations

from advlab.experiments.vonenet.config import (
    DISPLAY,
    PLAIN,
    PROFILES,
    QUICK_MODELS,
    REPORTED,
    VONE,
    VoneNetConfig,
)
from advlab.experiments.vonenet.run import run_vonenet
from advlab.experiments.vonenet.sound import eps_sweep, sound_attacks, sound_evaluation

__all__ = ["VoneNetConfig", "run_vonenet", "REPORTED", "DISPLAY", "PLAIN", "VONE",
           "QUICK_MODELS", "PROFILES", "sound_attacks", "sound_evaluation", "eps_sweep"]
