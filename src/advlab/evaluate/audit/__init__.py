"""The trustworthy-evaluation checklist, as pure functions that return data.

A robustness number is only as good as the attacks behind it. This package runs the sanity
checks of Carlini et al., "On Evaluating Adversarial Robustness" (2019), Athalye, Carlini and
Wagner, "Obfuscated Gradients Give a False Sense of Security" (ICML 2018), Tramer et al., "On
Adaptive Attacks to Adversarial Example Defenses" (NeurIPS 2020) and the automatic checks of
AutoAttack (Croce and Hein, ICML 2020) and reports each as a :class:`Flag`:

=============================  =============================================================
flag name                      fails (or warns) when
=============================  =============================================================
``randomized_output``          info: two identical calls in eval mode differ; the audit then
                               uses EOT for every gradient attack and reports accuracy as mean
                               and spread over several draws (warns if ``eot_samples == 1``)
``logits_not_probabilities``   the outputs are rows of probabilities instead of logits
``clean_accuracy``             warn: clean accuracy is within ``chance_margin`` of chance
``gradients_finite_nonzero``   some input gradients are NaN/inf (the evidence names the
                               fraction of NaN/inf entries), or more than 5 % of the examples
                               have an all-zero gradient (warn: any zero gradient)
``budget_used``                FGSM at ``eps`` leaves its budget unused: the median
                               per-example perturbation norm is below
                               ``budget_min_fraction * eps``, or the median fraction of movable
                               pixels it moves is below ``budget_min_pixels`` (see
                               :func:`check_budget_used`)
``iterative_beats_single_step`` PGD (with restarts), MI-FGSM or APGD-CE succeeds less often
                               than FGSM (by more than 3 points)
``whitebox_beats_transfer``    PGD transferred from a surrogate beats the white-box gradient
                               attacks (per-example best) by more than 3 points
``gradient_free_below_gradient`` Square Attack beats the gradient attacks (per-example best
                               of FGSM, PGD, PGD-CW, MI-FGSM, APGD-CE, APGD-DLR) by more than
                               10 points (warn: more than 3 points) -- gradient masking
``noise_below_gradient``       random sign noise beats the gradient attacks by > 3 points
``accuracy_falls_with_eps``    APGD accuracy rises by more than 3 points somewhere along an eps
                               sweep
``chance_at_large_eps``        at the eps that can turn any image gray (Linf 0.5) APGD accuracy
                               stays above chance + 10 points
``unbounded_reaches_100``      an unbounded attack (eps = inf, many steps) succeeds on fewer
                               than 99 % of the examples
``converged``                  doubling PGD's steps or restarts raises the per-example success
                               of the gradient attacks (FGSM, PGD, PGD-CW, MI-FGSM, APGD) by more
                               than 5 points (warn: raises PGD's own success that much)
=============================  =============================================================

All thresholds live in :class:`Thresholds`. For randomised models every comparison is widened
by ``noise_z`` standard errors of the compared means over the evaluation draws. An
:class:`AuditReport` is ``trustworthy`` when no flag fails (warnings do not count).

:func:`worst_case_accuracy` is the per-example worst case over a set of attacks ("min over
attacks, then mean over examples"): an example counts as robust only if it survives every
attack (and is classified correctly when clean). For randomised models the worst attack per
example is chosen on selection draws and scored on fresh, disjoint scoring draws, and the
result is never reported above the best single attack (see :func:`worst_case_accuracy`).

Every gradient attack the audit runs is built with ``nonfinite="warn"``: on a model whose
input gradient has NaN/inf entries the audit still runs (those entries count as 0, as
``torch.sign(NaN) = 0`` does in a naive evaluation) and reports what such an evaluation
sees, while ``gradients_finite_nonzero`` and ``budget_used`` fail; the attacks' warnings are
silenced inside the audit.

Everything runs on the tensors the caller passes: give a small subset (a few hundred examples
on a CPU). Nothing prints; nothing changes the model's state (modes are restored, no
parameter gradients are left behind, the model is never moved).

Example:
    >>> import torch
    >>> from advlab.evaluate.audit import check_logits
    >>> model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    >>> check_logits(model, torch.rand(5, 1, 2, 2)).passed
    True
    >>> soft = torch.nn.Sequential(model, torch.nn.Softmax(dim=1))
    >>> check_logits(soft, torch.rand(5, 1, 2, 2)).severity
    'fail'

Modules (everything public is re-exported here):

* :mod:`~advlab.evaluate.audit.types`: :class:`Flag`, :class:`Thresholds`,
  :class:`WorstCaseResult`, :class:`AuditReport`;
* :mod:`~advlab.evaluate.audit.outcome`: an attack's adversarial inputs and the model's verdicts
  on them over evaluation draws; :func:`outputs_differ`, :func:`input_gradient`;
* :mod:`~advlab.evaluate.audit.worst_case`: :func:`worst_case_accuracy` and its estimator;
* :mod:`~advlab.evaluate.audit.session`: one audit's validated inputs, settings
  (``PROFILES``) and cached attack runs;
* :mod:`~advlab.evaluate.audit.model_checks`: the checks of the model's outputs and
  gradients (``check_randomness`` ... ``check_budget_used``);
* :mod:`~advlab.evaluate.audit.attack_checks`: the checks that compare attacks
  (``check_iterative_vs_single_step`` ... ``check_convergence``);
* :mod:`~advlab.evaluate.audit.checklist`: :func:`audit`, every check in order.
"""

from __future__ import annotations

# ``name as name``: re-exported besides __all__ -- PROFILES (public, as before the split) and
# the internals that tests/test_audit.py and tests/test_worst_case.py drive directly.
from advlab.evaluate.audit.attack_checks import _best_gradient as _best_gradient
from advlab.evaluate.audit.attack_checks import _flag_convergence as _flag_convergence
from advlab.evaluate.audit.attack_checks import _flag_single_step as _flag_single_step
from advlab.evaluate.audit.attack_checks import _flag_sweep as _flag_sweep
from advlab.evaluate.audit.attack_checks import (
    check_convergence,
    check_eps_sweep,
    check_gradient_free,
    check_iterative_vs_single_step,
    check_large_eps,
    check_random_noise,
    check_unbounded,
    check_whitebox_vs_transfer,
)
from advlab.evaluate.audit.checklist import audit
from advlab.evaluate.audit.model_checks import (
    check_budget_used,
    check_clean_accuracy,
    check_gradients,
    check_logits,
    check_randomness,
)
from advlab.evaluate.audit.outcome import _Outcome as _Outcome
from advlab.evaluate.audit.outcome import input_gradient, outputs_differ
from advlab.evaluate.audit.session import PROFILES as PROFILES
from advlab.evaluate.audit.session import _session as _session
from advlab.evaluate.audit.types import SEVERITIES, AuditReport, Flag, Thresholds, WorstCaseResult
from advlab.evaluate.audit.worst_case import _worst_case as _worst_case
from advlab.evaluate.audit.worst_case import worst_case_accuracy

__all__ = [
    "Flag",
    "AuditReport",
    "Thresholds",
    "WorstCaseResult",
    "audit",
    "worst_case_accuracy",
    "outputs_differ",
    "input_gradient",
    "check_randomness",
    "check_logits",
    "check_clean_accuracy",
    "check_gradients",
    "check_budget_used",
    "check_iterative_vs_single_step",
    "check_whitebox_vs_transfer",
    "check_gradient_free",
    "check_random_noise",
    "check_eps_sweep",
    "check_large_eps",
    "check_unbounded",
    "check_convergence",
    "SEVERITIES",
]
