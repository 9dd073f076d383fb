"""Which of the report's claims survive: sentences computed from the measured numbers."""

from __future__ import annotations

from typing import Any

from advlab.experiments.vonenet.config import DISPLAY, REPORTED, VoneNetConfig
from advlab.stats import format_rate


def _claims(cfg: VoneNetConfig, as_reported: dict[str, Any], sound: dict[str, Any],
            audits: dict[str, Any]) -> list[str]:
    """Sentences on which of the report's claims survive, computed from the numbers; the NaN
    mechanism is named only when the measurements show it."""
    out = []
    if cfg.profile == "quick":
        out.append(f"Smoke-level verdicts (--quick: small training subsets, {cfg.sound_size} "
                   "images in the sound evaluation); the standard profile (--standard) gives "
                   "the evidence.")
    vone = [n for n in as_reported if n.startswith("vone-")]
    plain = [n for n in as_reported if not n.startswith("vone-")]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    def each(key: str) -> str:
        return "; ".join(f"{DISPLAY[n]} {_fmt(as_reported[n][key])}" for n in vone)

    if vone:
        claimed = mean([REPORTED[n][1] for n in vone])
        rep = mean([as_reported[n]["fgsm"]["acc"] for n in vone])
        snd = mean([sound[n]["worst_mean"] for n in vone])
        reproduced = abs(rep - claimed) <= 10
        out.append(
            f"Claim 'VOne models keep 93-95 % under FGSM at eps {cfg.eps}' (report: "
            f"{claimed:.1f} % on average). The student's protocol (clipped FGSM, gradient and "
            f"accuracy on different noise draws) on the student's exact VOne models gives "
            f"{rep:.1f} % on average ({each('fgsm')}): the number "
            + ("reproduces (within 10 points)." if reproduced else
               f"does not reproduce (more than 10 points from {claimed:.1f} %)."))
        finite_ok = all(as_reported[n]["fgsm_finite"] is not None for n in vone)
        if finite_ok:
            nan = mean([as_reported[n]["nonfinite_entries"] for n in vone])
            moved = mean([as_reported[n]["moved_pixels"] for n in vone])
            unchanged = mean([as_reported[n]["unchanged_images"] for n in vone])
            fin = mean([as_reported[n]["fgsm_finite"]["acc"] for n in vone])
            ps = [as_reported[n]["paired"]["mcnemar_p"] for n in vone]
            drops = all(as_reported[n]["fgsm_finite"]["hi"] < as_reported[n]["fgsm"]["lo"]
                        for n in vone)
            if nan > 0.5 and moved < 0.5 and drops and max(ps) < 0.05:
                out.append(
                    f"Why: {100 * nan:.1f} % of the input-gradient entries are NaN or infinite, "
                    f"because the complex cell sqrt(q0^2 + q1^2) has no epsilon and its "
                    f"derivative where a unit sees only black background is 0 * inf = NaN; "
                    f"torch's sign(NaN) = 0, so the student's FGSM moved only "
                    f"{100 * moved:.1f} % of the pixels and left {100 * unchanged:.1f} % of the "
                    f"images exactly unchanged. With finite gradients (the same weights and "
                    f"noise draws, a NaN-safe complex cell) the same FGSM brings accuracy "
                    f"from {rep:.1f} % down to {fin:.1f} % ({each('fgsm_finite')}; exact "
                    f"McNemar p <= {max(ps):.2g} for every model).")
            else:
                out.append(
                    f"The measurements do not show the NaN-gradient mechanism here: "
                    f"{100 * nan:.1f} % of gradient entries are NaN/inf, the FGSM moved "
                    f"{100 * moved:.1f} % of the pixels, and FGSM with finite gradients gives "
                    f"{fin:.1f} % ({each('fgsm_finite')}; largest McNemar p {max(ps):.2g}).")
        if snd >= claimed - 10:
            verdict = "the claim survives."
        else:
            verdict = "the claim does not survive."
        lo = min(sound[n]["worst_ci"]["lo"] for n in vone)
        hi = max(sound[n]["worst_ci"]["hi"] for n in vone)
        out.append(
            f"Under the sound evaluation (per-example worst case over attacks with EOT over the "
            f"noise, clipped, through finite gradients) the VOne models keep {snd:.1f} % on "
            f"average (95 % Wilson intervals within [{lo:.1f}, {hi:.1f}] %): " + verdict)
        best_madry = 88.0
        if snd > best_madry:
            out.append(f"Warning: {snd:.1f} % would beat the best adversarially trained MNIST "
                       f"models (Madry et al. {best_madry} % at eps 0.3): look for masking.")
    if plain:
        p = mean([as_reported[n]["fgsm"]["acc"] for n in plain])
        out.append(f"Claim 'plain CNNs fall to 0-15 % under FGSM': we measure {p:.1f} % on "
                   f"average ({'holds' if p <= 20 else 'does not hold'}).")
    if audits:
        parts = []
        for label, a in audits.items():
            failed = [f["name"] for f in a["flags"] if not f["passed"] and f["severity"] == "fail"]
            parts.append(f"{label} " + (f"fails {', '.join(failed)}" if failed else
                                        "passes every check"))
        out.append("Audit: " + "; ".join(parts) + ".")
    return out


def _fmt(r: dict[str, float] | None) -> str:
    return "n/a" if r is None else format_rate(r["acc"] / 100, r["n"])
