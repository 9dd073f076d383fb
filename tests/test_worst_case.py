"""The worst case over attacks is never weaker than a single attack: the per-example choice
is made on selection draws, scored on fresh scoring draws, ties go to the strongest attack,
and the best single attack bounds the result."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from advlab.attacks import FGSM, PGD
from advlab.evaluate import audit as audit_mod
from advlab.evaluate.audit import worst_case_accuracy
from conftest import NoisyFront, blobs


def outcome(select, correct) -> audit_mod._Outcome:
    """An outcome from ``[draws, n]`` 0/1 lists: selection draws, then scoring draws."""
    return audit_mod._Outcome(None, torch.tensor(correct, dtype=torch.bool),
                              torch.tensor(select, dtype=torch.bool))


def test_ties_go_to_the_strongest_attack_not_to_clean():
    """The VOne case: PGD fools every example in every draw; the noisy clean input is
    misclassified in all selection draws of some examples, so it ties with PGD there. The
    old rule gave those examples to 'clean' (listed first) and scored them correct."""
    n = 10
    clean_select = [[0] * 4 + [1] * 6] * 2  # examples 0-3: wrong in both selection draws
    clean = outcome(clean_select, [[1] * n] * 2)
    pgd = outcome([[0] * n] * 2, [[0] * n] * 2)
    res = audit_mod._worst_case({"clean": clean, "pgd": pgd}, randomized=True)
    assert res.per_attack == {"clean": 1.0, "pgd": 0.0}
    assert res.accuracy == 0.0 and res.estimator == "per-example"
    assert torch.equal(res.robust, torch.zeros(n))
    assert res.draws == 2 and res.selection_draws == 2


def test_tie_break_beats_every_single_attack():
    """Per example a different attack is needed; on examples 0-1, A and B tie in selection
    and only B fools the scoring draws. B is stronger overall, so it wins the tie and the
    worst case (0) is below every single attack (A 1.0, B 0.5, C 0.5). Breaking the tie
    towards the first-listed A would have given 0.5."""
    a = outcome([[0, 0, 1, 1], [0, 0, 1, 1]], [[1, 1, 1, 1], [1, 1, 1, 1]])
    b = outcome([[0, 0, 1, 1], [0, 0, 1, 0]], [[0, 0, 1, 1], [0, 0, 1, 1]])
    c = outcome([[1, 1, 0, 0], [1, 1, 0, 0]], [[1, 1, 0, 0], [1, 1, 0, 0]])
    res = audit_mod._worst_case({"A": a, "B": b, "C": c}, randomized=True)
    assert res.per_attack == {"A": 1.0, "B": 0.5, "C": 0.5}
    assert res.accuracy == 0.0 and res.estimator == "per-example"
    # the attack order does not matter
    again = audit_mod._worst_case({"C": c, "B": b, "A": a}, randomized=True)
    assert again.accuracy == 0.0


def test_best_single_attack_bounds_the_worst_case():
    """The selection draws point to A, the scoring draws show B is the stronger attack: the
    reported worst case is B's accuracy, never above it."""
    a = outcome([[0, 0, 0, 0]], [[1, 1, 1, 0]])
    b = outcome([[1, 1, 1, 1]], [[0, 0, 1, 0]])
    res = audit_mod._worst_case({"A": a, "B": b}, randomized=True)
    assert res.per_attack == {"A": 0.75, "B": 0.25}
    assert res.accuracy == 0.25 and res.estimator == "single:B"
    assert torch.equal(res.robust, torch.tensor([0.0, 0.0, 1.0, 0.0]))
    assert res.accuracy <= min(res.per_attack.values())


def test_deterministic_models_get_the_exact_per_example_minimum():
    g = torch.Generator().manual_seed(0)
    rows = torch.rand(5, 1, 300, generator=g) < 0.7  # 5 attacks, one pass, many ties
    outs = {f"a{i}": audit_mod._Outcome(None, rows[i]) for i in range(5)}
    res = audit_mod._worst_case(outs, randomized=False)
    survives = rows[:, 0].all(dim=0)
    assert res.accuracy == pytest.approx(float(survives.float().mean()))
    assert torch.equal(res.robust.bool(), survives)
    assert res.estimator == "per-example" and res.draws == 1 and res.selection_draws == 1
    assert res.accuracy < min(res.per_attack.values())


class Dice(nn.Module):
    """A linear classifier whose noise is seeded by the index of the call; every call's
    input and predictions are logged."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(5)
        self.weight = nn.Parameter(torch.randn(64, 3, generator=g), requires_grad=False)
        self.scale = scale
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(x.shape[0], 3, generator=torch.Generator().manual_seed(
            len(self.calls)))
        logits = x.flatten(1) @ self.weight + self.scale * noise
        self.calls.append((x.detach().clone(), logits.argmax(1)))
        return logits


def shift(d: float):
    def attack(model, x, y):  # does not call the model: only evaluation calls are logged
        return (x + d).clamp(0, 1)
    return attack


def test_selection_and_scoring_draws_are_disjoint_fresh_passes():
    x, _ = blobs(40, seed=3)
    y = torch.zeros(40, dtype=torch.long)
    model = Dice(scale=3.0)
    draws = 3
    res = worst_case_accuracy(model, x, y, {"up": shift(0.2), "down": shift(-0.2)},
                              eval_draws=draws, batch_size=64)
    assert res.randomized and res.draws == draws and res.selection_draws == draws
    calls = model.calls[2:]  # the first two are the randomness probe
    assert len(calls) == 3 * 2 * draws  # clean, up, down: 2 * draws passes each
    inputs = {"clean": x, "up": shift(0.2)(None, x, y), "down": shift(-0.2)(None, x, y)}
    select, score = {}, {}
    for j, (name, xin) in enumerate(inputs.items()):
        block = calls[2 * draws * j: 2 * draws * (j + 1)]
        assert all(torch.equal(c[0], xin) for c in block)
        rows = torch.stack([c[1] == y for c in block])
        select[name], score[name] = rows[:draws], rows[draws:]
        assert res.per_attack[name] == pytest.approx(float(score[name].float().mean()))
    # the documented rule, recomputed from the log
    names = list(inputs)
    hits = torch.stack([select[k].sum(0) for k in names])
    strength = [int(select[k].sum()) for k in names]
    chosen = []
    for i in range(x.shape[0]):
        tied = [a for a in range(len(names)) if hits[a, i] == hits[:, i].min()]
        chosen.append(min(tied, key=lambda a: (strength[a], a)))
    robust = torch.stack([score[names[a]][:, i] for i, a in enumerate(chosen)]).float()
    per_example = float(robust.mean())
    best_single = min(res.per_attack.values())
    if per_example <= best_single:
        assert res.estimator == "per-example"
        assert torch.equal(res.robust, robust.mean(1))
    else:
        assert res.estimator.startswith("single:")
    assert res.accuracy == pytest.approx(min(per_example, best_single))
    # the scoring draws are not the selection draws: the two differ on this noisy model
    assert any(not torch.equal(select[k], score[k]) for k in names)


def test_deterministic_model_is_evaluated_once_per_input():
    x, _ = blobs(20, seed=3)
    y = torch.zeros(20, dtype=torch.long)
    model = Dice(scale=0.0)
    res = worst_case_accuracy(model, x, y, {"up": shift(0.2), "down": shift(-0.2)})
    assert not res.randomized and res.draws == 1 and res.selection_draws == 1
    assert len(model.calls) == 2 + 3
    preds_ok = [c[1] == y for c in model.calls[2:]]
    survives = preds_ok[0] & preds_ok[1] & preds_ok[2]
    assert torch.equal(res.robust.bool(), survives)
    assert res.estimator == "per-example"


def test_randomized_model_worst_case_below_each_attack(trained_cnn):
    x, y = blobs(48, seed=6)
    model = NoisyFront(trained_cnn, sigma=0.3)
    res = worst_case_accuracy(model, x, y, {"fgsm": FGSM(eps=0.1, eot_samples=2),
                                            "pgd": PGD(eps=0.1, steps=3, eot_samples=2)},
                              eval_draws=4)
    assert res.randomized and res.draws == 4 and res.selection_draws == 4
    assert res.accuracy <= min(res.per_attack.values())
    assert res.robust.shape == (48,) and 0.0 <= res.accuracy_std
    assert set(res.as_dict()) >= {"estimator", "selection_draws", "per_attack_std"}


def test_audit_session_draws_fresh_selection_passes(trained_cnn):
    x, y = blobs(16, seed=6)
    s = audit_mod._session(NoisyFront(trained_cnn, sigma=0.3), x, y, 0.1, quick=True,
                           eval_draws=3)
    o = s.clean()
    assert s.randomized and o.correct.shape == (3, 16) and o.select.shape == (3, 16)
    assert o.select is not o.correct
    det = audit_mod._session(trained_cnn, x, y, 0.1, quick=True)
    od = det.clean()
    assert od.correct.shape == (1, 16) and od.select is od.correct


def test_best_gradient_and_convergence_use_the_same_rule():
    """_best_gradient and _flag_convergence report the worst case of _worst_case, including
    the tie-break and the single-attack bound."""
    a = outcome([[0, 0, 1, 1], [0, 0, 1, 1]], [[1, 1, 1, 1], [1, 1, 1, 1]])
    b = outcome([[0, 0, 1, 1], [0, 0, 1, 0]], [[0, 0, 1, 1], [0, 0, 1, 1]])
    c = outcome([[1, 1, 0, 0], [1, 1, 0, 0]], [[1, 1, 0, 0], [1, 1, 0, 0]])
    decoy = outcome([[0, 0, 0, 0], [0, 0, 0, 0]], [[1, 1, 1, 1], [1, 1, 1, 1]])

    def session(grad):
        return SimpleNamespace(
            randomized=True, eps=0.1, settings={"steps": 10, "restarts": 1},
            thresholds=audit_mod.Thresholds(), gradient_attacks=lambda eps: grad,
            pgd=lambda eps, **kw: b, widen=lambda tol, *o: tol)

    # the tie-break: 0, below every single attack
    s = session({"fgsm": a, "pgd": b, "pgd-cw": c, "mifgsm": a})
    name, best = audit_mod._best_gradient(s, 0.1)
    assert name == "pgd" and best.accuracy == 0.0
    flag = audit_mod._flag_convergence(s)
    assert flag.numbers["worst_case_before"] == 1.0 == flag.numbers["worst_case_after"]
    assert flag.passed
    # a decoy fooled in every selection draw but in no scoring draw wins the selection;
    # the single-attack bound keeps the result at PGD's 0.5
    s = session({"fgsm": a, "pgd": b, "pgd-cw": c, "mifgsm": decoy})
    name, best = audit_mod._best_gradient(s, 0.1)
    assert best.accuracy == 0.5 == 1 - s.gradient_attacks(0.1)[name].success
    flag = audit_mod._flag_convergence(s)
    assert flag.numbers["worst_case_before"] == 0.5
