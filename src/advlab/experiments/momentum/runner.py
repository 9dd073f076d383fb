"""The run (:class:`_Runner`): the data, the trainings, the cached work units (clean
predictions, adversarial chunks and their predictions), dealt to the ranks under torchrun."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab import _progress
from advlab._io import Store, bytes_to_state, config_hash
from advlab.attacks import Ensemble
from advlab.experiments.momentum.config import MomentumConfig
from advlab.experiments.momentum.members import (
    _OVERHEAD,
    _advtrain_cfg,
    _build_members,
    _complete,
    _load_imagenet_members,
    _Member,
)
from advlab.experiments.momentum.plan import _Chunk, _chunks_of, _Plan, _plan, _spec, _Unit
from advlab.experiments.momentum.results import _Results
from advlab.train.cached import checkpoint_dir

log = logging.getLogger(__name__)


def _quantize(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """8-bit pixels nearest to ``x_adv`` that stay inside the eps-ball around ``x``."""
    q = torch.round(x_adv * 255)
    lo = torch.ceil((x - eps) * 255 - 1e-4).clamp(0, 255)
    hi = torch.floor((x + eps) * 255 + 1e-4).clamp(0, 255)
    return torch.minimum(torch.maximum(q, lo), hi).to(torch.uint8)


def _cosines(updates: list[torch.Tensor]) -> torch.Tensor:
    """Per example, cosine similarity of each pair of successive perturbations [N, T-1]."""
    cols = [F.cosine_similarity(a.flatten(1).double(), b.flatten(1).double(), dim=1,
                                eps=1e-12) for a, b in zip(updates[:-1], updates[1:])]
    return torch.stack(cols, dim=1).float()


class _Runner:
    def __init__(self, cfg: MomentumConfig, out_dir: Path, cache_dir: Path, progress: bool,
                 on_attack: Callable[[int], None] | None) -> None:
        self.cfg = cfg
        self.out = out_dir
        self.cache_dir = cache_dir
        self.progress = progress
        self.on_attack = on_attack
        self.cache = Store(cache_dir / "momentum", "safetensors")
        self.attack_calls = 0
        self.trainings = 0
        self.computed_flops = 0.0
        self.compute_seconds = 0.0
        self.notes: list[str] = []
        self.eps_rule: dict[str, Any] = {}
        self._ens: dict[tuple[tuple[str, ...], str], Ensemble] = {}

    # -- data ----------------------------------------------------------------------------
    def load_data(self) -> None:
        cfg = self.cfg
        self.n_rule = cfg.eps_rule_images if cfg.eps is None else 0
        if cfg.suite == "mnist":
            from advlab.train import load_split

            x, y = load_split("test", cfg.n_total + self.n_rule, cfg.data_root, "cpu")
            self.ids = [str(i) for i in range(x.shape[0])]
            n_eval = min(cfg.n_total, x.shape[0])
            self.data_desc = f"MNIST test split, first {n_eval} images"
            if self.n_rule:
                self.n_rule = min(self.n_rule, max(0, x.shape[0] - cfg.n_total))
                if self.n_rule == 0:
                    raise ValueError(f"the eps rule needs test images after the "
                                     f"{cfg.n_total} evaluation images, but there are only "
                                     f"{x.shape[0]}: give eps, or fewer images")
                self.data_desc += (f" (the eps rule: the next {self.n_rule}, "
                                   f"{cfg.n_total}-{cfg.n_total + self.n_rule - 1})")
        else:
            from advlab.data.imagefolder import (
                find_nips17_csv,
                load_image_folder,
                load_nips17,
            )

            if cfg.data_dir is None:
                raise ValueError("the imagenet suite needs data_dir: an ImageNet-style image "
                                 "folder (root/<class>/<image>) or the NIPS 2017 layout "
                                 "(images/*.png + images.csv)")
            sizes = {tuple(m.module.input_size) for m in self.members.values()}
            if len(sizes) != 1:
                raise ValueError(f"all ImageNet models must take the same input size, got "
                                 f"{sorted(sizes)}")
            size = next(iter(sizes))[1]
            try:
                find_nips17_csv(cfg.data_dir)
                loader, layout = load_nips17, "NIPS 2017 layout"
            except FileNotFoundError:
                loader, layout = load_image_folder, "image folder"
            x, y, ids = loader(cfg.data_dir, size=size, limit=cfg.n_total)
            self.ids = list(ids)
            self.data_desc = f"{cfg.data_dir} ({layout}), {x.shape[0]} images at {size}x{size}"
        if x.shape[0] < cfg.n_total + self.n_rule:
            self.notes.append(f"only {x.shape[0]} images are available: image counts capped")
            self.cfg = cfg = cfg.with_sizes(x.shape[0])
        self.x, self.y = x, y
        self._chunk_hash: dict[tuple[int, int], str] = {}

    def chunk_hash(self, s: int, e: int) -> str:
        if (s, e) not in self._chunk_hash:
            h = hashlib.sha256()
            h.update(self.x[s:e].contiguous().numpy().tobytes())
            h.update(self.y[s:e].contiguous().numpy().tobytes())
            self._chunk_hash[(s, e)] = h.hexdigest()[:32]
        return self._chunk_hash[(s, e)]

    # -- models --------------------------------------------------------------------------
    def source(self, roles: tuple[str, ...], fuse: str) -> nn.Module:
        if len(roles) == 1:
            return self.members[roles[0]].module
        k = (roles, fuse)
        if k not in self._ens:
            self._ens[k] = Ensemble([self.members[r].module for r in roles], fuse=fuse)
        return self._ens[k]

    def _load_member(self, m: _Member) -> None:
        from advlab.train.checkpoint import load_checkpoint

        module, card = load_checkpoint(m.checkpoint, self.cfg.device)
        m.module = module.eval().requires_grad_(False)
        m.card = card

    def train_units(self, kind: str) -> list[tuple[float, bool, Callable[[], None]]]:
        """(cost, cached, run) of the MNIST models of one ``kind``: ``"normal"`` or
        ``"adversarial"`` (these need the normal models trained and eps resolved)."""
        from advlab.train.cached import ensure_advtrained, ensure_trained

        units: list[tuple[float, bool, Callable[[], None]]] = []
        if self.cfg.suite != "mnist":
            return units
        if kind == "normal":
            for s in self.cfg.normal:
                m = self.members[s.role]

                def run(m: _Member = m) -> None:
                    if not _complete(m.checkpoint, m.train_cfg.epochs):
                        self.trainings += 1
                    path = ensure_trained(m.train_cfg, self.cache_dir, progress=self.progress)
                    if Path(path) != m.checkpoint:  # pragma: no cover - ensure_trained changed
                        m.checkpoint = Path(path)
                    self._load_member(m)

                units.append((m.train_cost, _complete(m.checkpoint, m.train_cfg.epochs), run))
            return units
        for s in self.cfg.adversarial:
            m = self.members[s.role]
            m.train_cfg = _advtrain_cfg(self.cfg, s, self.members)
            m.checkpoint = self._adv_path(m.train_cfg)

            def run_adv(m: _Member = m) -> None:
                if not _complete(m.checkpoint, m.train_cfg.epochs):
                    self.trainings += 1
                m.checkpoint = Path(ensure_advtrained(m.train_cfg, self.cache_dir,
                                                      progress=self.progress))
                self._load_member(m)

            units.append((m.train_cost, _complete(m.checkpoint, m.train_cfg.epochs), run_adv))
        return units

    # -- the eps rule --------------------------------------------------------------------
    def _rule_cfg(self, role: str, eps: float, s: int, e: int) -> dict[str, Any]:
        return {"v": 1, "kind": "eps-rule", "source": self.members[role].key,
                "attack": _spec("I-FGSM", eps, self.cfg.steps, 0.0).key(),
                "labels": self.cfg.labels, "data": self.chunk_hash(s, e)}

    def _rule_chunks(self) -> list[tuple[str, float, int, int]]:
        start, stop = self.cfg.n_total, self.cfg.n_total + self.n_rule
        return [(spec.role, float(eps), a, min(a + self.cfg.chunk_size, stop))
                for spec in self.cfg.normal for eps in sorted(self.cfg.eps_grid)
                for a in range(start, stop, self.cfg.chunk_size)]

    def rule_preds(self, role: str, eps: float, s: int, e: int) -> torch.Tensor:
        """The source's predictions on its own I-FGSM examples of images [s, e) (cached)."""
        from advlab.evaluate import predict

        cfg = self.cfg
        src = self.members[role].module

        def compute() -> dict[str, torch.Tensor]:
            x = self.x[s:e].to(cfg.device)
            y = self.y[s:e].to(cfg.device)
            lab = y if cfg.labels == "true" else predict(src, x, cfg.batch_size)
            x_adv = _spec("I-FGSM", eps, cfg.steps, 0.0).make().run(src, x, lab).x_adv
            return {"pred": predict(src, x_adv, cfg.batch_size).cpu()}

        calls = self.cache.calls
        out = self.cache.get_or_compute("rule", self._rule_cfg(role, eps, s, e), compute)
        if self.cache.calls > calls:
            self.attack_calls += 1
        return out["pred"]

    def rule_units(self) -> list[tuple[float, str, Callable[[], Any]]]:
        """(cost, cache key, run) of every chunk the eps rule attacks."""
        out = []
        for role, eps, s, e in self._rule_chunks():
            key = self._rule_cfg(role, eps, s, e)
            fl = self.members[role].flops + _OVERHEAD
            cost = 0.0 if self.cache.path("rule", key).is_file() else \
                (e - s) * (2 * self.cfg.steps + 1) * fl
            out.append((cost, "rule:" + config_hash(key),
                        lambda a=(role, eps, s, e): self.rule_preds(*a)))
        return out

    def resolve_eps(self) -> None:
        """Apply the eps rule (its chunks must be computed or computable): set
        ``self.cfg.eps``, rebuild the adversarially trained members for it, and record the
        rule's numbers in ``self.eps_rule``."""
        cfg = self.cfg
        if self.eps_rule:  # resolved already (by share_work, on this rank)
            return
        if cfg.eps is not None:
            self.eps_rule = {"rule": cfg.eps_rule, "given": True, "chosen": cfg.eps}
            return
        hits: dict[tuple[str, float], list[int]] = {}
        for role, eps, s, e in self._rule_chunks():
            ok = (self.rule_preds(role, eps, s, e) != self.y[s:e]).sum()
            h = hits.setdefault((role, eps), [0, 0])
            h[0] += int(ok)
            h[1] += e - s
        grid = sorted(cfg.eps_grid)
        table = {f"{eps:g}": {s.role: 100.0 * hits[(s.role, eps)][0] / hits[(s.role, eps)][1]
                              for s in cfg.normal} for eps in grid}
        met = [eps for eps in grid
               if min(table[f"{eps:g}"].values()) >= cfg.eps_rule_success]
        chosen = met[0] if met else grid[-1]
        self.eps_rule = {"rule": cfg.eps_rule, "given": False, "chosen": chosen,
                         "met": bool(met), "images": self.n_rule,
                         "first_image": cfg.n_total, "success": table,
                         "counts": {f"{eps:g}": {s.role: hits[(s.role, eps)]
                                                 for s in cfg.normal} for eps in grid}}
        if not met:
            self.notes.append(f"the eps rule was not met on the grid: the largest eps, "
                              f"{chosen:g}, is used")
        log.info("momentum: eps rule -> %g", chosen)
        self.cfg = cfg = dataclasses.replace(cfg, eps=chosen)
        fresh = _build_members(cfg, self.cache_dir)
        for s in cfg.adversarial:
            self.members[s.role] = fresh[s.role]

    def refresh_keys(self) -> None:
        """MNIST members: key = hash of the trained weights (from the checkpoint card) when
        the checkpoint is complete, else a provisional key that matches no cache entry."""
        from advlab.train.checkpoint import read_card

        if self.cfg.suite != "mnist":
            return
        for m in self.members.values():
            epochs = self.cfg.advtrain_epochs if m.spec.adversarial else m.train_cfg.epochs
            if _complete(m.checkpoint, epochs):
                sha = read_card(m.checkpoint)["weights_sha256"]
                m.key = f"mnist:{m.spec.arch}:{sha[:24]}"
            else:
                m.key = f"untrained:{m.spec.role}:{m.config_key}"

    def _adv_path(self, ac: Any) -> Path:
        return checkpoint_dir(ac, self.cache_dir, "advtrain-")

    # -- work units ----------------------------------------------------------------------
    def make_chunks(self, plan: _Plan) -> tuple[dict[_Unit, list[_Chunk]], list[_Chunk]]:
        cfg = self.cfg
        member_keys = [self.members[r].key for r in self.roles]
        by_ident: dict[tuple, _Chunk] = {}
        per_unit: dict[_Unit, list[_Chunk]] = {}
        for u in plan.units():
            lst = []
            for s, e in _chunks_of(u, cfg.chunk_size):
                ch = _Chunk(u.source, u.fuse if len(u.source) > 1 else "", u.attack, s, e)
                if ch.ident not in by_ident:
                    ch.adv_cfg = {
                        "v": 1, "suite": cfg.suite,
                        "source": [self.members[r].key for r in u.source],
                        "fuse": ch.fuse or None, "attack": u.attack.key(),
                        "labels": cfg.labels, "data": self.chunk_hash(s, e),
                        "store": cfg.store}
                    ch.pred_cfg = {"v": 1, "adv": ch.adv_cfg, "targets": member_keys}
                    src_fl = sum(self.members[r].flops for r in u.source) + \
                        _OVERHEAD * len(u.source)
                    tgt_fl = sum(self.members[r].flops + _OVERHEAD for r in self.roles)
                    n = e - s
                    attack_cost = n * (2 * u.attack.passes * src_fl +
                                       (src_fl if cfg.labels == "pred" else 0))
                    eval_cost = n * (tgt_fl + (2 * src_fl if len(u.source) > 1 else 0))
                    if self.cache.path("pred", ch.pred_cfg).is_file():
                        ch.cached, ch.cost = "pred", 0.0
                    elif self.cache.path("adv", ch.adv_cfg).is_file():
                        ch.cached, ch.cost = "adv", eval_cost
                    else:
                        ch.cost = attack_cost + eval_cost
                    by_ident[ch.ident] = ch
                lst.append(by_ident[ch.ident])
            per_unit[u] = lst
        return per_unit, list(by_ident.values())

    def clean_cfg(self, s: int, e: int) -> dict[str, Any]:
        return {"v": 1, "data": self.chunk_hash(s, e),
                "targets": [self.members[r].key for r in self.roles]}

    def clean_preds(self, s: int, e: int) -> dict[str, torch.Tensor]:
        from advlab.evaluate import predict

        def compute() -> dict[str, torch.Tensor]:
            x = self.x[s:e].to(self.cfg.device)
            return {self.members[r].key: predict(self.members[r].module, x,
                                                 self.cfg.batch_size).cpu()
                    for r in self.roles}

        return self.cache.get_or_compute("clean", self.clean_cfg(s, e), compute)

    def run_chunk(self, ch: _Chunk) -> dict[str, torch.Tensor]:
        """Predictions of every target on the chunk's adversarial examples (cached); the
        examples are generated (an *attack call*) only if they are not cached either."""
        from advlab.evaluate import predict

        cfg = self.cfg
        src = self.source(ch.source, ch.fuse or "logits")
        x = self.x[ch.start:ch.stop].to(cfg.device)
        y = self.y[ch.start:ch.stop].to(cfg.device)

        def attack() -> dict[str, torch.Tensor]:
            lab = y if cfg.labels == "true" else predict(src, x, cfg.batch_size)
            res = ch.attack.make().run(src, x, lab, record=ch.attack.steps > 1)
            out: dict[str, torch.Tensor] = {}
            if cfg.store == "uint8":
                out["x_adv"] = _quantize(res.x_adv, x, ch.attack.eps).cpu()
            else:
                out["x_adv"] = res.x_adv.detach().float().cpu()
            if ch.attack.steps > 1:
                out["cos"] = _cosines(res.updates).cpu()
            return out

        def evaluate() -> dict[str, torch.Tensor]:
            calls = self.cache.calls
            adv = self.cache.get_or_compute("adv", ch.adv_cfg, attack)
            if self.cache.calls > calls:
                self.attack_calls += 1
                if self.on_attack is not None:
                    self.on_attack(self.attack_calls)
            xa = adv["x_adv"]
            xa = (xa.float() / 255 if xa.dtype == torch.uint8 else xa).to(cfg.device)
            out = {self.members[r].key: predict(self.members[r].module, xa,
                                                cfg.batch_size).cpu() for r in self.roles}
            if len(ch.source) > 1:
                out["source_adv"] = predict(src, xa, cfg.batch_size).cpu()
                out["source_clean"] = predict(src, x, cfg.batch_size).cpu()
            if "cos" in adv:
                out["cos"] = adv["cos"]
            return out

        return self.cache.get_or_compute("pred", ch.pred_cfg, evaluate)

    def stored_adv(self, ch: _Chunk) -> torch.Tensor | None:
        """The chunk's stored adversarial examples as floats, or None if not on disk."""
        p = self.cache.path("adv", ch.adv_cfg)
        try:
            xa = bytes_to_state(p.read_bytes(), str(p))["x_adv"]
        except (OSError, ValueError, KeyError):
            return None
        return xa.float() / 255 if xa.dtype == torch.uint8 else xa

    # -- the whole experiment ------------------------------------------------------------
    def clean_costs(self, chunks: list[_Chunk]) -> dict[tuple[int, int], float]:
        """(start, stop) of every chunk -> cost of its clean predictions (0 when cached)."""
        return {se: 0.0 if self.cache.path("clean", self.clean_cfg(*se)).is_file()
                else (se[1] - se[0]) * sum(m.flops + _OVERHEAD for m in self.members.values())
                for se in sorted({(c.start, c.stop) for c in chunks})}

    def _timed(self, cost: float, fn: Callable[[], Any]) -> None:
        """Run a unit; count its FLOPs and seconds when it computes something (cost > 0)."""
        t0 = time.perf_counter()
        fn()
        if cost:
            self.computed_flops += cost
            self.compute_seconds += time.perf_counter() - t0

    def _share(self, units: list[tuple[float, str, Callable[[], Any]]], desc: str,
               rank: int, world: int) -> None:
        """Run this rank's units of ``units`` ((cost, cache key, run)), then wait for the
        other ranks. Units with the same key are one unit (no two ranks write the same
        cache entry); rank 0 deals them by cost and tells the others."""
        from advlab.evaluate.distributed import barrier, broadcast_object, deal

        first: dict[str, int] = {}
        for i, (_, key, _) in enumerate(units):
            first.setdefault(key, i)
        todo = list(first.values())
        owners = broadcast_object(deal([units[i][0] for i in todo], world)
                                  if rank == 0 else None)
        mine = [units[i] for i, owner in zip(todo, owners, strict=True) if owner == rank]
        for cost, _, fn in _progress.progress(mine, enabled=self.progress and rank == 0,
                                              desc=f"momentum: {desc}", unit="unit"):
            self._timed(cost, fn)
        barrier()

    def _load_trained(self, kind: str,
                      units: list[tuple[float, bool, Callable[[], None]]]) -> None:
        specs = self.cfg.normal if kind == "normal" else self.cfg.adversarial
        for (_, _, fn), s in zip(units, specs, strict=True):
            if self.members[s.role].module is None:
                fn()  # trained by another rank: load it from the cache

    def _share_training(self, kind: str, units: list[tuple[float, bool, Callable[[], None]]],
                        rank: int, world: int) -> None:
        """Deal the trainings of one ``kind`` (see :meth:`train_units`) to the ranks, then load
        on every rank what the others trained. No-op for suites without training (ImageNet)."""
        if units:
            specs = self.cfg.normal if kind == "normal" else self.cfg.adversarial
            self._share([(0.0 if cached else cost, str(self.members[s.role].checkpoint), fn)
                         for (cost, cached, fn), s in zip(units, specs, strict=True)],
                        f"{kind} models", rank, world)
            self._load_trained(kind, units)
        self.refresh_keys()

    def share_work(self) -> dict[str, Any] | None:
        """Under torchrun: compute this rank's share of every unit into the shared cache.

        Four phases, each dealt to the ranks and closed by a barrier: the normal models'
        trainings; the eps rule's attacks (every rank then applies the rule to the same
        cached numbers); the adversarially trained models (they need the normal ones and
        eps); the clean predictions and attack chunks. Returns what was cached when the
        ranks started, with the counters of all ranks summed into this runner (which then
        assembles the results from the cache), and None on the other ranks."""
        from advlab.evaluate.distributed import barrier, check_shared_dir, gather_results, get_rank

        rank, world = get_rank(), self.world
        check_shared_dir(self.cache_dir)
        train = self.train_units("normal")
        barrier()  # every rank planned (reading what is cached) before any rank writes
        self._share_training("normal", train, rank, world)
        rule = self.rule_units() if self.cfg.eps is None else []
        self._share(rule, "eps rule", rank, world)
        self.resolve_eps()
        adv = self.train_units("adversarial")
        self._share_training("adversarial", adv, rank, world)
        plan = _plan(self.cfg)
        _, chunks = self.make_chunks(plan)
        planned = self._planned(train + adv, chunks, rule)
        barrier()
        units = [(cost, "clean:" + config_hash(self.clean_cfg(s, e)),
                  lambda se=(s, e): self.clean_preds(*se))
                 for (s, e), cost in self.clean_costs(chunks).items()]
        units += [(ch.cost, "pred:" + config_hash(ch.pred_cfg),
                   lambda ch=ch: self.run_chunk(ch)) for ch in chunks]
        self._share(units, "attacks", rank, world)
        counts = gather_results((self.attack_calls, self.trainings, self.computed_flops,
                                 self.compute_seconds))
        if counts is None:
            return None
        self.attack_calls, self.trainings = (sum(c[i] for c in counts) for i in (0, 1))
        self.computed_flops, self.compute_seconds = (sum(c[i] for c in counts) for i in (2, 3))
        return planned

    def _planned(self, train: list[tuple[float, bool, Callable[[], None]]],
                 chunks: list[_Chunk], rule: list[tuple[float, str, Callable[[], Any]]]
                 ) -> dict[str, Any]:
        """What was to do: trainings, the eps rule's chunks and the tables' and figures'
        work units, each with how many were cached."""
        return {"train_units": len(train),
                "train_units_cached": sum(bool(c) for _, c, _ in train),
                "rule_units": len(rule),
                "rule_units_cached": sum(cost == 0 for cost, _, _ in rule),
                "attack_units": len(chunks),
                "attack_units_cached": sum(c.cached == "pred" for c in chunks),
                "attack_gflop": (sum(c.cost for c in chunks) +
                                 sum(self.clean_costs(chunks).values())) / 1e9}

    def _stage(self, units: list[tuple[float, Callable[[], Any]]], desc: str) -> None:
        for cost, fn in _progress.progress(units, enabled=self.progress,
                                           desc=f"momentum: {desc}", unit="unit"):
            self._timed(cost, fn)

    def run(self) -> dict[str, Any] | None:
        """The whole experiment (None on the ranks other than 0 of a torchrun job), in
        stages with a progress bar each: the normal models, the eps rule, the adversarially
        trained models, then the clean predictions and attack chunks."""
        from advlab.evaluate.distributed import get_world_size

        t_start = time.perf_counter()
        cfg = self.cfg
        self.members = _build_members(cfg, self.cache_dir)
        self.roles = [s.role for s in cfg.models]
        if cfg.suite == "imagenet":
            _load_imagenet_members(cfg, self.members)
        self.load_data()
        self.world = get_world_size()
        shared = None
        if self.world > 1:
            shared = self.share_work()
            if shared is None:
                return None
        train = self.train_units("normal")
        self._stage([(0.0 if cached else cost, fn) for cost, cached, fn in train],
                    "normal models")
        self.refresh_keys()
        rule = self.rule_units() if self.cfg.eps is None else []
        self._stage([(cost, fn) for cost, _, fn in rule], "eps rule")
        self.resolve_eps()
        adv = self.train_units("adversarial")
        self._stage([(0.0 if cached else cost, fn) for cost, cached, fn in adv],
                    "adversarially trained models")
        self.refresh_keys()
        plan = _plan(self.cfg)
        self.per_unit, chunks = self.make_chunks(plan)
        self.planned = shared if shared is not None else \
            self._planned(train + adv, chunks, rule)
        log.info("momentum: %d attack units (%d cached), %.1f GFLOP to compute",
                 len(chunks), self.planned["attack_units_cached"],
                 self.planned["attack_gflop"])
        self.clean: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
        self.preds: dict[tuple, dict[str, torch.Tensor]] = {}
        units: list[tuple[float, Callable[[], Any]]] = []
        for se, cost in self.clean_costs(chunks).items():
            def clean(se: tuple[int, int] = se) -> None:
                self.clean[se] = self.clean_preds(*se)

            units.append((cost, clean))
        for ch in chunks:
            def attack(ch: _Chunk = ch) -> None:
                self.preds[ch.ident] = self.run_chunk(ch)

            units.append((ch.cost, attack))
        self._stage(units, "attacks")
        results = _Results(self.cfg, self.members, self.clean, self.preds,
                           self.y).aggregate(plan, self.per_unit)
        self.plan = plan
        results["eps_rule"] = self.eps_rule
        results["seconds"] = time.perf_counter() - t_start
        results["attack_calls"] = self.attack_calls
        results["trainings"] = self.trainings
        results["planned"] = self.planned
        results["computed_gflop"] = self.computed_flops / 1e9
        results["compute_seconds"] = self.compute_seconds
        results["cache_dir"] = str(self.cache_dir)
        return results
