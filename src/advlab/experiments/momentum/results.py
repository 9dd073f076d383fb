"""The numbers of a run: success rates and cosine similarities from the cached predictions
of every target on the clean and adversarial chunks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from advlab.experiments.momentum.config import MomentumConfig
from advlab.experiments.momentum.members import _Member
from advlab.experiments.momentum.plan import _Chunk, _Plan, _Unit
from advlab.stats import wilson_interval


@dataclass
class _Results:
    """The predictions of a run: ``clean[(start, stop)][key]`` and ``preds[chunk.ident][key]``
    (plus ``source_adv`` / ``source_clean`` for ensembles and ``cos``), ``key`` a member's
    :attr:`_Member.key`; ``y`` the labels of the images."""

    cfg: MomentumConfig
    members: dict[str, _Member]
    clean: dict[tuple[int, int], dict[str, torch.Tensor]]
    preds: dict[tuple, dict[str, torch.Tensor]]
    y: torch.Tensor
    per_image: dict[str, dict[str, Any]] = field(default_factory=dict)

    def outcome(self, chunks: list[_Chunk], target: str, name: str = "") -> dict[str, float]:
        """Success % of the attack over its chunks on ``target`` (a role or ``"source"``)
        with its 95 % Wilson interval (``success_lo`` / ``success_hi``), also over the
        images the target classifies correctly; with a ``name``, the per-image successes
        are kept in :attr:`per_image` (for the paired comparisons)."""
        adv, clean, ys = [], [], []
        for ch in chunks:
            p = self.preds[ch.ident]
            if target == "source":
                adv.append(p["source_adv"])
                clean.append(p["source_clean"])
            else:
                k = self.members[target].key
                adv.append(p[k])
                clean.append(self.clean[(ch.start, ch.stop)][k])
            ys.append(self.y[ch.start:ch.stop])
        a, c, y = torch.cat(adv), torch.cat(clean), torch.cat(ys)
        success = a != y
        correct = c == y
        n_ok, n = int(correct.sum()), int(y.numel())
        k, k_ok = int(success.sum()), int(success[correct].sum())
        lo, hi = wilson_interval(k, n)
        out = {"success": 100 * k / n, "success_lo": 100 * lo, "success_hi": 100 * hi,
               "success_on_correct": 100 * k_ok / n_ok if n_ok else float("nan"),
               "success_on_correct_lo": float("nan"), "success_on_correct_hi": float("nan"),
               "n": n, "n_correct": n_ok}
        if n_ok:
            lo, hi = wilson_interval(k_ok, n_ok)
            out["success_on_correct_lo"], out["success_on_correct_hi"] = 100 * lo, 100 * hi
        if name:
            unit = self.per_image.setdefault(name, {"n": n, "success": {}})
            unit["success"][target] = pack_bits(success.numpy())
        return out

    def cosine(self, chunks: list[_Chunk]) -> tuple[list[float], list[float]]:
        """Mean cosine of each pair of successive steps, and per image the mean over the
        pairs (rounded to 1e-6)."""
        cos = torch.cat([self.preds[c.ident]["cos"] for c in chunks]).double()
        return [float(v) for v in cos.mean(0)], [round(float(v), 6) for v in cos.mean(1)]

    def aggregate(self, plan: _Plan, per_unit: dict[_Unit, list[_Chunk]]) -> dict[str, Any]:
        """The numbers of every table and figure (the ``results`` of a run)."""
        cfg = self.cfg
        roles = [s.role for s in cfg.models]
        res: dict[str, Any] = {"models": {}, "table1": {}, "table2": {}, "table3": {},
                               "decay": {}, "iterations": {}, "eps_sweep": {}, "cosine": {}}
        first = per_unit[plan.table1[(cfg.normal[0].role, "FGSM")]]
        for r in roles:
            k = self.members[r].key
            clean = torch.cat([self.clean[(c.start, c.stop)][k] for c in first])
            y = self.y[:clean.numel()]
            m = self.members[r]
            res["models"][r] = {
                "arch": m.spec.arch, "adversarial": m.spec.adversarial, "key": m.key,
                "clean_accuracy": 100 * float((clean == y).float().mean()),
                "n": int(y.numel()), "checkpoint": str(m.checkpoint) if m.checkpoint else None,
                "static": list(m.spec.static),
                "params": (sum(int(p.numel()) for p in m.module.parameters())
                           if m.module is not None else None),
                "mflops": m.flops / 1e6 if m.flops else None,
                "train_metrics": (m.card.get("metrics") or [None])[-1] if m.card else None}
        for (s, a), u in plan.table1.items():
            k = f"{s}|{a}"
            res["table1"][k] = {t: self.outcome(per_unit[u], t, f"table1|{k}") for t in roles}
        for (h, f, a), u in plan.table2.items():
            k = f"{h}|{f}|{a}"
            res["table2"][k] = {"ensemble": self.outcome(per_unit[u], "source", f"table2|{k}"),
                                "hold_out": self.outcome(per_unit[u], h, f"table2|{k}")}
        for (h, a), u in plan.table3.items():
            k = f"{h}|{a}"
            res["table3"][k] = {"ensemble": self.outcome(per_unit[u], "source", f"table3|{k}"),
                                "hold_out": self.outcome(per_unit[u], h, f"table3|{k}")}
        for mu, u in plan.decay.items():
            k = f"{mu:g}"
            res["decay"][k] = {t: self.outcome(per_unit[u], t, f"decay|{k}")["success"]
                               for t in roles}
        for (a, t), u in plan.iters.items():
            k = f"{a}|{t}"
            res["iterations"][k] = {r: self.outcome(per_unit[u], r, f"iterations|{k}")["success"]
                                    for r in roles}
        for (a, e), u in plan.eps.items():
            k = f"{a}|{e:g}"
            res["eps_sweep"][k] = {r: self.outcome(per_unit[u], r, f"eps_sweep|{k}")["success"]
                                   for r in roles}
        res["beyond"] = {}
        for (s, a), u in plan.beyond.items():
            k = f"{s}|{a}"
            res["beyond"][k] = {t: self.outcome(per_unit[u], t, f"beyond|{k}") for t in roles}
        src0 = cfg.normal[0].role
        res["cosine_per_image"] = {}
        for a in ("I-FGSM", "MI-FGSM"):
            u = plan.table1[(src0, a)]
            if u.attack.steps > 1:
                res["cosine"][a], res["cosine_per_image"][a] = self.cosine(per_unit[u])
        res["per_image"] = self.per_image
        return res


def pack_bits(flags: np.ndarray) -> str:
    """Booleans as a hex string (8 per byte, first flag in the high bit)."""
    return np.packbits(np.asarray(flags, dtype=bool)).tobytes().hex()


def unpack_bits(text: str, n: int) -> np.ndarray:
    """The inverse of :func:`pack_bits` for ``n`` flags."""
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:n].astype(bool)
