"""The numbers of a run: success rates and cosine similarities from the cached predictions
of every target on the clean and adversarial chunks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from advlab.experiments.momentum.config import MomentumConfig
from advlab.experiments.momentum.members import _Member
from advlab.experiments.momentum.plan import _Chunk, _Plan, _Unit


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

    def outcome(self, chunks: list[_Chunk], target: str) -> dict[str, float]:
        """Success % of the attack over its chunks on ``target`` (a role or ``"source"``)."""
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
        n_ok = int(correct.sum())
        return {"success": 100 * float(success.float().mean()),
                "success_on_correct": (100 * float(success[correct].float().mean())
                                       if n_ok else float("nan")),
                "n": int(y.numel()), "n_correct": n_ok}

    def cosine(self, chunks: list[_Chunk]) -> list[float]:
        cos = torch.cat([self.preds[c.ident]["cos"] for c in chunks])
        return [float(v) for v in cos.mean(0)]

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
                "train_metrics": (m.card.get("metrics") or [None])[-1] if m.card else None}
        for (s, a), u in plan.table1.items():
            res["table1"][f"{s}|{a}"] = {t: self.outcome(per_unit[u], t) for t in roles}
        for (h, f, a), u in plan.table2.items():
            res["table2"][f"{h}|{f}|{a}"] = {"ensemble": self.outcome(per_unit[u], "source"),
                                             "hold_out": self.outcome(per_unit[u], h)}
        for (h, a), u in plan.table3.items():
            res["table3"][f"{h}|{a}"] = {"ensemble": self.outcome(per_unit[u], "source"),
                                         "hold_out": self.outcome(per_unit[u], h)}
        for mu, u in plan.decay.items():
            res["decay"][f"{mu:g}"] = {t: self.outcome(per_unit[u], t)["success"]
                                       for t in roles}
        for (a, t), u in plan.iters.items():
            res["iterations"][f"{a}|{t}"] = {r: self.outcome(per_unit[u], r)["success"]
                                             for r in roles}
        for (a, e), u in plan.eps.items():
            res["eps_sweep"][f"{a}|{e:g}"] = {r: self.outcome(per_unit[u], r)["success"]
                                              for r in roles}
        src0 = cfg.normal[0].role
        for a in ("I-FGSM", "MI-FGSM"):
            u = plan.table1[(src0, a)]
            if u.attack.steps > 1:
                res["cosine"][a] = self.cosine(per_unit[u])
        return res
