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
  white-box and black-box), vs eps, cosine similarity of successive perturbations (I-FGSM
  vs MI-FGSM), and a few adversarial images.
* **Uncertainty** -- every success rate with its 95 % Wilson interval (CSV columns
  ``<column> lo`` / ``<column> hi``); each of Tables 1-3 side by side with the paper's
  (same roles in rows and columns) and with a table of paired differences (exact McNemar
  test per cell) naming the significant ones; every claim of the paper (:func:`claims`)
  split into paired differences with bootstrap intervals over the images and called HELD,
  NOT HELD or INCONCLUSIVE (:mod:`advlab.stats`).
* **The eps rule** -- on MNIST, eps is chosen before any comparison by a declared rule on
  I-FGSM alone (:attr:`MomentumConfig.eps_rule`: the smallest eps of the grid where I-FGSM
  succeeds white-box on >= 95 % of held-apart images on every normal source); ``eps``
  given overrides it.
* CSV + JSON of every table (``tables/``), ``config.json`` (the resolved config, with each
  role's architecture) and ``results.json`` (with the per-image outcomes).

Two suites:

* ``"mnist"``: four MNIST architectures that differ the way the paper's do
  (:data:`MNIST_ZOO`, :mod:`advlab.models.paper_zoo`: Inception-v3-, Inception-v4- and
  Inception-ResNet-v2-style nets and a deep bottleneck ResNet) play the normal models, and
  copies of the Inc-v3 and IncRes-v2 analogues trained with ensemble adversarial training
  (:mod:`advlab.train.advtrain`, Tramer et al. 2018) play Inc-v3ens3, Inc-v3ens4 and
  IncRes-v2ens. ``models=[...]`` (``--models``) puts other zoo models, e.g. the student
  report's four, in the normal roles. Everything is trained on the fly and cached.
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
the work is dealt to the processes in phases: the normal models' trainings, the eps rule's
attacks (every process then applies the rule to the same cached numbers), the adversarially
trained models, the clean predictions and attack chunks; the processes store them in the
shared cache; rank 0 assembles the results from it and writes the same tables and figures as one
process (:meth:`_Runner.share_work`).

Beyond the paper: the transfer attacks that followed MI-FGSM (NI, DI2 / M-DI2, TI / TI-MI /
TI-DIM, SI-NI, VMI, VNI, Admix; :data:`BEYOND_ATTACKS`), each with its paper's defaults, from
the same sources and with the same eps and T as Table 1, against the same targets, with
I-FGSM and MI-FGSM re-run on the same images as the baselines: a table with Wilson
intervals, a summary of mean black-box success with paired-bootstrap intervals and the
paired difference to MI-FGSM, and a bar chart (``figures/beyond.png``). *quick* runs it
from the first source on 50 images; *standard* from every source on 500; *full* on 1000.

A progress bar per stage (normal models, eps rule, adversarially trained models, attacks)
counts its units; the FLOPs of every unit are counted for the report.

Profiles (``MomentumConfig.preset("quick" | "standard" | "full")``, the same seven models
in each): *quick* is the CI smoke run (200 images, 100 for the ensemble tables and figures,
small training; its verdicts are mostly INCONCLUSIVE: too few images to call a claim);
*standard* (the command line's default) has the power to call one: Table 1 on 1000 images,
Tables 2-3 and the sweeps on 500, one training epoch on all 60 000 images, in under 45 min on
two CPU cores; *full* is the paper's protocol (1000 images everywhere, mu grid 0..2 step 0.1,
T = 1..20, 10 training epochs). The README records the measured times.

Modules:

* :mod:`~advlab.experiments.momentum.paper`: the paper's attacks, model roles, fusions and
  Tables 1-3.
* :mod:`~advlab.experiments.momentum.config`: :class:`ModelSpec`, :func:`specs_from_names`,
  the MNIST zoo of the roles and :class:`MomentumConfig` with its profiles and eps rule.
* :mod:`~advlab.experiments.momentum.plan`: the attacks and work units of every table and
  figure, and their chunks.
* :mod:`~advlab.experiments.momentum.members`: the models of a run, their training configs
  and FLOP counts.
* :mod:`~advlab.experiments.momentum.runner`: the run: data, trainings, the eps rule,
  cached work units, the torchrun dealing.
* :mod:`~advlab.experiments.momentum.results`: success rates and cosines from the cached
  predictions.
* :mod:`~advlab.experiments.momentum.verdicts`: which of the paper's claims held, with
  paired bootstrap intervals.
* :mod:`~advlab.experiments.momentum.tables`: our tables with intervals beside the paper's,
  and the paired differences.
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
    BEYOND_ATTACKS,
    EPS_RULE_SUCCESS,
    IMAGENET_EPS,
    MNIST_ZOO,
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
    "SUITES", "PROFILES", "EPS_RULE_SUCCESS", "MNIST_ZOO", "IMAGENET_EPS", "specs_from_names",
    "paper_claims", "BEYOND_ATTACKS",
    "claim_table1", "claim_table2", "claim_table3", "claim_decay", "claim_iterations",
    "claim_cosine",
]
