"""The momentum claims on synthetic per-image outcomes: a large effect on many images is
HELD, the same rates on few images (overlapping intervals) are INCONCLUSIVE, a reversed
effect is NOT HELD; and the per-cell McNemar table against hand counts."""

from __future__ import annotations

import numpy as np
import pytest

from advlab.experiments.momentum import ADV_ROLES, ATTACKS, ROLES
from advlab.experiments.momentum import verdicts as vd
from advlab.experiments.momentum.results import pack_bits, unpack_bits
from advlab.experiments.momentum.tables import _compare, significance_sentence
from advlab.stats import mcnemar_exact

RATES = {"FGSM": 0.30, "I-FGSM": 0.35, "MI-FGSM": 0.55}


def synthetic(n: int, rates: dict[str, float], adv_factor: float = 0.5, seed: int = 0
              ) -> dict:
    """Table 1 per-image outcomes: white-box 100 %, black-box at ``rates`` (independent
    draws per attack and target), ``adv_factor`` times that on the defended targets."""
    rng = np.random.default_rng(seed)
    per_image = {}
    for s in ROLES:
        for a in ATTACKS:
            success = {}
            for t in ROLES + ADV_ROLES:
                p = 1.0 if t == s else rates[a] * (adv_factor if t in ADV_ROLES else 1.0)
                success[t] = pack_bits(rng.random(n) < p)
            per_image[f"table1|{s}|{a}"] = {"n": n, "success": success}
    return {"per_image": per_image}


def test_bits_round_trip():
    flags = np.array([True, False, True, True, False, False, True, False, True])
    assert (unpack_bits(pack_bits(flags), 9) == flags).all()


def test_a_large_effect_on_many_images_is_held():
    c = {x.name: x for x in vd.claim_table1(vd.Evidence(synthetic(1000, RATES)), ROLES,
                                            ADV_ROLES)}
    assert c["mi_transfers"].verdict == "HELD"
    parts = c["mi_transfers"].parts
    assert parts[0].interval.lo > 10 and parts[0].paper == pytest.approx(28.2, abs=0.1)
    assert c["adv_harder"].verdict == "HELD"


def test_the_same_rates_on_few_images_flip_to_inconclusive():
    """20 images: MI-FGSM's black-box rate is still above I-FGSM's in the data, but the
    intervals overlap, so the claim cannot be called either way."""
    rates = {"FGSM": 0.40, "I-FGSM": 0.45, "MI-FGSM": 0.52}
    res = synthetic(20, rates, seed=3)
    ev = vd.Evidence(res)
    mi = [(f"table1|{s}|MI-FGSM", t) for s in ROLES for t in ROLES if t != s]
    it = [(f"table1|{s}|I-FGSM", t) for s in ROLES for t in ROLES if t != s]
    iv = ev.diff(mi, it)
    assert iv.lo < 0 < iv.hi and iv.estimate > 0  # the point estimate alone would say "held"
    c = {x.name: x for x in vd.claim_table1(ev, ROLES, ADV_ROLES)}
    assert c["mi_transfers"].verdict == "INCONCLUSIVE"
    assert c["mi_transfers"].held is None


def test_a_reversed_effect_is_not_held():
    rates = {"FGSM": 0.30, "I-FGSM": 0.60, "MI-FGSM": 0.35}
    c = {x.name: x for x in vd.claim_table1(vd.Evidence(synthetic(1000, rates)), ROLES,
                                            ADV_ROLES)}
    assert c["mi_transfers"].verdict == "NOT HELD" and c["mi_transfers"].held is False
    c = {x.name: x for x in vd.claim_table1(vd.Evidence(synthetic(1000, RATES, 1.0)), ROLES,
                                            ADV_ROLES)}
    assert c["adv_harder"].verdict in ("INCONCLUSIVE", "NOT HELD")  # no defence effect


def test_decay_iterations_and_cosine_claims():
    rng = np.random.default_rng(0)
    n, black = 600, ["B", "C"]

    def unit(p: float) -> dict:
        return {"n": n, "success": {t: pack_bits(rng.random(n) < p) for t in black}}

    res = {"per_image": {"decay|0": unit(0.3), "decay|1": unit(0.6), "decay|2": unit(0.4),
                         "iterations|I-FGSM|1": unit(0.5), "iterations|I-FGSM|10": unit(0.3),
                         "iterations|MI-FGSM|1": unit(0.5),
                         "iterations|MI-FGSM|10": unit(0.6)},
           "cosine_per_image": {"I-FGSM": list(rng.random(n) * 0.2),
                                "MI-FGSM": list(0.5 + rng.random(n) * 0.2)}}
    ev = vd.Evidence(res)
    assert vd.claim_decay(ev, [0.0, 1.0, 2.0], black).verdict == "HELD"
    assert vd.claim_decay(ev, [0.0, 1.0], black).verdict == "NOT TESTABLE"
    assert vd.claim_iterations(ev, [1, 10], black).verdict == "HELD"
    assert vd.claim_cosine(ev).verdict == "HELD"
    res["cosine_per_image"] = {"I-FGSM": [0.5] * n, "MI-FGSM": [0.5] * n}
    assert vd.claim_cosine(vd.Evidence(res)).verdict == "INCONCLUSIVE"


def test_mcnemar_cells_by_hand():
    # plus succeeds on images 0-5, minus on 4-7 of 10: b = 4 (0-3), c = 2 (6, 7)
    a = np.zeros(10, bool)
    a[:6] = True
    b = np.zeros(10, bool)
    b[4:8] = True
    res = {"per_image": {"u": {"n": 10, "success": {"x": pack_bits(a), "y": pack_bits(b)}}}}
    diff, n_b, n_c, p, sig, paper_diff, same = _compare(res, ("u", "x"), ("u", "y"), 5.0)
    assert (diff, n_b, n_c) == (20.0, 4, 2)
    assert p == pytest.approx(mcnemar_exact(4, 2)) and p == pytest.approx(2 * 22 / 64)
    assert sig is False and same is None and paper_diff == 5.0


def test_significance_sentence_names_the_significant_cells():
    from advlab.experiments.momentum.tables import _diff_table

    rows = [["Inc-v3", "Inc-v4", "MI-FGSM - I-FGSM", 25.0, 260, 10, 1e-60, True, 26.0, True],
            ["Inc-v3", "Res-152", "MI-FGSM - I-FGSM", -8.0, 10, 90, 1e-15, True, 19.4, False],
            ["Inc-v4", "Inc-v3", "MI-FGSM - I-FGSM", 1.0, 20, 10, 0.1, False, 29.8, None]]
    text = significance_sentence(_diff_table("t", ["source", "target", "comparison"], rows,
                                             1000))
    assert text.startswith("2 of 3 differences are significant")
    assert "1 of them point the paper's way" in text
    assert "against the paper's direction: Inc-v3 Res-152 MI-FGSM - I-FGSM (-8.0 pts)" in text
    assert "not significant: Inc-v4 Inc-v3 MI-FGSM - I-FGSM (+1.0)" in text
