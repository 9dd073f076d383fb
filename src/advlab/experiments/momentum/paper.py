"""The paper's names and numbers (Dong et al. 2018, REFERENCE section 1a): the attacks, the
model roles, the ensemble fusions and Tables 1-3."""

from __future__ import annotations

ATTACKS = ("FGSM", "I-FGSM", "MI-FGSM")
#: the paper's normal models and its ensemble-adversarially trained models (Table 1 columns).
ROLES = ("Inc-v3", "Inc-v4", "IncRes-v2", "Res-152")
ADV_ROLES = ("Inc-v3ens3", "Inc-v3ens4", "IncRes-v2ens")
#: fusion -> the paper's row name in Table 2.
FUSIONS = {"logits": "Logits", "probs": "Predictions", "loss": "Loss"}

# -- the paper's numbers (REFERENCE section 1a) ---------------------------------------------
#: Table 1: source -> attack -> success % on (Inc-v3, Inc-v4, IncRes-v2, Res-152, Inc-v3ens3,
#: Inc-v3ens4, IncRes-v2ens); eps = 16/255, T = 10, mu = 1.
PAPER_TABLE1: dict[str, dict[str, tuple[float, ...]]] = {
    "Inc-v3": {"FGSM": (72.3, 28.2, 26.2, 25.3, 11.3, 10.9, 4.8),
               "I-FGSM": (100.0, 22.8, 19.9, 16.2, 7.5, 6.4, 4.1),
               "MI-FGSM": (100.0, 48.8, 48.0, 35.6, 15.1, 15.2, 7.8)},
    "Inc-v4": {"FGSM": (32.7, 61.0, 26.6, 27.2, 13.7, 11.9, 6.2),
               "I-FGSM": (35.8, 99.9, 24.7, 19.3, 7.8, 6.8, 4.9),
               "MI-FGSM": (65.6, 99.9, 54.9, 46.3, 19.8, 17.4, 9.6)},
    "IncRes-v2": {"FGSM": (32.6, 28.1, 55.3, 25.8, 13.1, 12.1, 7.5),
                  "I-FGSM": (37.8, 20.8, 99.6, 22.8, 8.9, 7.8, 5.8),
                  "MI-FGSM": (69.8, 62.1, 99.5, 50.6, 26.1, 20.9, 15.7)},
    "Res-152": {"FGSM": (35.0, 28.2, 27.5, 72.9, 14.6, 13.2, 7.5),
                "I-FGSM": (26.7, 22.7, 21.2, 98.6, 9.3, 8.9, 6.2),
                "MI-FGSM": (53.6, 48.9, 44.7, 98.5, 22.1, 21.7, 12.9)},
}
#: Table 2: held-out model -> fusion -> ((ensemble, hold-out) for FGSM, I-FGSM, MI-FGSM).
PAPER_TABLE2: dict[str, dict[str, tuple[tuple[float, float], ...]]] = {
    "Inc-v3": {"logits": ((55.7, 45.7), (99.7, 72.1), (99.6, 87.9)),
               "probs": ((52.3, 42.7), (95.1, 62.7), (97.1, 83.3)),
               "loss": ((50.5, 42.2), (93.8, 63.1), (97.0, 81.9))},
    "Inc-v4": {"logits": ((56.1, 39.9), (99.8, 61.0), (99.5, 81.2)),
               "probs": ((50.9, 36.5), (95.5, 52.4), (97.1, 77.4)),
               "loss": ((49.3, 36.2), (93.9, 50.2), (96.1, 72.5))},
    "IncRes-v2": {"logits": ((57.2, 38.8), (99.5, 54.4), (99.5, 76.5)),
                  "probs": ((52.1, 35.8), (97.1, 46.9), (98.0, 73.9)),
                  "loss": ((50.7, 35.2), (96.2, 45.9), (97.4, 70.8))},
    "Res-152": {"logits": ((53.5, 35.9), (99.6, 43.5), (99.6, 69.6)),
                "probs": ((51.9, 34.6), (99.9, 41.0), (99.8, 67.0)),
                "loss": ((50.4, 34.1), (98.2, 40.1), (98.8, 65.2))},
}
#: Table 3: held-out adversarially trained model -> ((ensemble, hold-out) per attack).
PAPER_TABLE3: dict[str, tuple[tuple[float, float], ...]] = {
    "Inc-v3ens3": ((36.1, 15.4), (99.6, 18.6), (99.6, 37.6)),
    "Inc-v3ens4": ((33.0, 15.0), (99.2, 18.7), (99.3, 40.3)),
    "IncRes-v2ens": ((36.2, 6.4), (99.5, 9.9), (99.7, 23.3)),
}

