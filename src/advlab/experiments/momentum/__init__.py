"""Reproduce Dong et al., "Boosting Adversarial Attacks with Momentum" (CVPR 2018).

What :func:`run_momentum` writes into ``out_dir`` (``report.md`` + ``report.html`` tie it up):

* **Table 1** -- every normal source model x {FGSM, I-FGSM, MI-FGSM} x every target (the
  normal models and the ensemble-adversarially trained ones): success rate %, white-box
  cells marked ``*``; over all images and over the images each target classifies correctly.
* **Table 2** -- for each normal model held out, an ensemble of the other normal models fused
  by logits / predictions / loss (Sec. 3.2): success on the ensemble (white-box) and on the
  held-out model, T = ``ensemble_steps`` (20, as in the paper).
* **Table 3** -- for each adversarially trained model held out, the logits ensemble of all
  the other models (normal and adversarially trained) against the held-out one.
* **Figures** -- success vs decay factor mu (0..2), vs iterations T (I-FGSM vs MI-FGSM,
  white-box and black-box), vs eps (the sweep that justifies the default eps), cosine
  similarity of successive perturbations (I-FGSM vs MI-FGSM), and a few adversarial images.
* Each table beside the paper's numbers (REFERENCE 1a), with a sentence stating whether the
  paper's qualitative claim held, computed from the numbers (:func:`claims`); CSV + JSON of
  every table (``tables/``), ``config.json`` (the resolved config) and ``results.json``.

Two suites:

* ``"mnist"``: the four plain zoo models play the paper's normal models (roles Inc-v3, Inc-v4,
  IncRes-v2, Res-152) and three zoo models trained with ensemble adversarial training
  (:mod:`advlab.train.advtrain`, Tramer et al. 2018) play Inc-v3ens3, Inc-v3ens4 and IncRes-v2ens.
  Everything is trained on the fly and cached.
* ``"imagenet"``: timm models (:mod:`advlab.models.imagenet`, normalisation inside the
  wrapper) on an image folder or the NIPS 2017 dev-set layout
  (:mod:`advlab.data.imagefolder`), eps = 16/255, T = 10 (alpha = 1.6/255), mu = 1.

Caching and resumption: the images are cut into chunks of ``chunk_size``; each
(source, attack, chunk) is one *work unit*, keyed by the resolved configuration (source
model identities, fusion, eps, T, mu, label mode, a hash of the chunk's pixels and labels).
Its adversarial examples are generated once, stored with :class:`Store` and evaluated
on every target, whose predictions are cached too. A killed run resumes at the unit it was
in; a repeated run recomputes nothing (``attack_calls == 0`` in the returned dict). Figures
and tables share units (the decay sweep at mu = 1 *is* Table 1's MI-FGSM, T = 1 *is* FGSM).

Under ``torchrun`` (``torchrun --standalone --nproc-per-node N -m advlab reproduce momentum``)
the training units (normal models, then the adversarially trained ones) and then the clean
predictions and attack chunks are dealt to the processes, which store them in the shared
cache; rank 0 assembles the results from it and writes the same tables and figures as one
process (:meth:`_Runner.share_work`).

One progress bar covers the whole experiment, counting its units (trainings, clean
predictions, attack chunks); the FLOPs of every unit are counted for the report.

Profiles (``MomentumConfig.preset("quick" | "full")``): *full* follows the paper's protocol
(1000 images, T = 10 / 20, mu grid 0..2 step 0.1, T = 1..20) with models trained as in the
VOneNet-FGSM report (10 epochs, all 60k images); *quick* shrinks data (200 images, 50 for
the ensemble tables, 100 for the figures), training (one epoch on a subset) and grids, and uses
cheaper models: the 70M-parameter mnist-alexnet (Res-152's role) becomes a second mnist-mlp
and the defended models are mnist-mlps (an AlexNet gradient costs about 45x a Basic-CNN's:
348 vs 7.7 MFLOP per forward pass, and the ensemble tables take hundreds of gradients per
image). The report states the measured time and the full profile's projected time (from
its FLOP count at the rate measured in the run).

Measured on the shared 2-core CPU this was written on: ``--quick`` takes 2 min 22 s from
scratch with one torch thread (load average ~3; 2.95 TFLOP counted, 165 attack work units,
7 models trained) and 17 s when repeated (0 attack calls); with two threads on the busy
machine the same run took 7.5 min (OpenMP threads spin against each other: ``threads``).
``--full`` counts 1.18 PFLOP (0.70 of it training, mostly mnist-alexnet's 10 epochs on 60k
images; 1330 attack work units): about 14 h at the 23 GFLOP/s measured in the quick run.

Modules:

* :mod:`~advlab.experiments.momentum.paper`: the paper's attacks, model roles, fusions and
  Tables 1-3.
* :mod:`~advlab.experiments.momentum.config`: :class:`ModelSpec`, :func:`specs_from_names`,
  the default eps and :class:`MomentumConfig` with its profiles.
* :mod:`~advlab.experiments.momentum.plan`: the attacks and work units of every table and
  figure, and their chunks.
* :mod:`~advlab.experiments.momentum.members`: the models of a run, their training configs
  and FLOP counts.
* :mod:`~advlab.experiments.momentum.runner`: the run: data, trainings, cached work units,
  the torchrun dealing.
* :mod:`~advlab.experiments.momentum.results`: success rates and cosines from the cached
  predictions.
* :mod:`~advlab.experiments.momentum.verdicts`: which of the paper's claims held.
* :mod:`~advlab.experiments.momentum.tables`: our tables beside the paper's.
* :mod:`~advlab.experiments.momentum.render`: the figures and the report.
* :mod:`~advlab.experiments.momentum.cost`: the FLOP count of a run and the full profile's
  projected time.
* :mod:`~advlab.experiments.momentum.run`: :func:`run_momentum`, the entry point.

Example:
    >>> from advlab.experiments.momentum import MomentumConfig
    >>> cfg = MomentumConfig.preset("quick")
    >>> cfg.steps, cfg.ensemble_steps, cfg.decay
    (10, 20, 1.0)
    >>> result = run_momentum(cfg, "runs/momentum", cache_dir="~/.cache/advlab")  # doctest: +SKIP
"""

from __future__ import annotations

from advlab.experiments.momentum.config import (
    IMAGENET_EPS,
    MNIST_EPS,
    PROFILES,
    SUITES,
    ModelSpec,
    MomentumConfig,
    specs_from_names,
)
from advlab.experiments.momentum.cost import estimate_cost
from advlab.experiments.momentum.paper import (
    ADV_ROLES,
    ATTACKS,
    FUSIONS,
    PAPER_TABLE1,
    PAPER_TABLE2,
    PAPER_TABLE3,
    ROLES,
)
from advlab.experiments.momentum.run import run_momentum
from advlab.experiments.momentum.verdicts import (
    Claim,
    claim_cosine,
    claim_decay,
    claim_iterations,
    claim_table1,
    claim_table2,
    claim_table3,
    claims,
    paper_claims,
)

__all__ = [
    "ATTACKS", "ROLES", "ADV_ROLES", "FUSIONS", "PAPER_TABLE1", "PAPER_TABLE2", "PAPER_TABLE3",
    "ModelSpec", "MomentumConfig", "Claim", "run_momentum", "estimate_cost", "claims",
    "SUITES", "PROFILES", "MNIST_EPS", "IMAGENET_EPS", "specs_from_names", "paper_claims",
    "claim_table1", "claim_table2", "claim_table3", "claim_decay", "claim_iterations",
    "claim_cosine",
]
