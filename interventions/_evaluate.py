"""The adapter between a search and a twin: ``evaluate(params[K, P], replications) -> Outcomes``.

The search (``interventions/search.py``) never imports a twin; it gets a
:class:`TwinEvaluator` (or any callable with the same signature, e.g. a
synthetic test problem). One call runs the baseline arm plus K candidate arms
on the same replications in ONE world batch (world = arm·R + rep), using the
counterfactual machinery (``interventions.counterfactual``), so each
candidate's effect is paired against the baseline on shared noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from omegaconf import DictConfig

from twins.core.errors import ConfigError

from .base import Parameter


@dataclass
class Outcomes:
    """Per-replication outcomes of one evaluation: ``treated[K, R, M]``, ``baseline[R, M]``."""

    metrics: list[str]
    replications: np.ndarray  # [R] replication ids
    treated: np.ndarray  # [K, R, M]
    baseline: np.ndarray  # [R, M]
    invalid: list[str | None] | None = None  # per candidate: why it could not run (None: ran)
    # per-group outcomes (approach, origin zone, mode, cell, ...): NaN where a group had no arrivals
    groups: list[tuple[str, str]] | None = None  # [G] (group_kind, group)
    group_metrics: list[str] | None = None  # [Mg]
    group_treated: np.ndarray | None = None  # [K, R, G, Mg]
    group_baseline: np.ndarray | None = None  # [R, G, Mg]

    @property
    def effects(self) -> np.ndarray:
        """Paired per-replication effects ``treated − baseline`` [K, R, M]."""
        return self.treated - self.baseline[None]

    @property
    def group_effects(self) -> np.ndarray | None:
        """Paired per-replication group effects [K, R, G, Mg] (None when the twin reports no groups)."""
        if self.group_treated is None:
            return None
        return self.group_treated - self.group_baseline[None]


def group_tensor(groups, arms: int, reps: int) -> tuple[list, list, np.ndarray] | None:
    """A long per-world group table (``world``, ``group_kind``, ``group``, metric columns; world = arm·R + rep)
    as ``(keys, metrics, values[arms, R, G, Mg])`` with NaN where a world has no row for a group."""
    import pandas as pd

    if groups is None or len(groups) == 0:
        return None
    metrics = [c for c in groups.columns if c not in ("world", "group_kind", "group")
               and pd.api.types.is_numeric_dtype(groups[c])]
    keys = sorted({(str(k), str(g)) for k, g in zip(groups["group_kind"], groups["group"])})
    col = {k: i for i, k in enumerate(keys)}
    out = np.full((arms * reps, len(keys), len(metrics)), np.nan)
    gi = np.array([col[(str(k), str(g))] for k, g in zip(groups["group_kind"], groups["group"])], dtype=np.int64)
    out[groups["world"].to_numpy(np.int64), gi] = groups[metrics].to_numpy(float)
    return keys, metrics, out.reshape(arms, reps, len(keys), len(metrics))


def values_of(space: Sequence[Parameter], row) -> dict:
    """One row of a ``params[K, P]`` matrix as an intervention's parameter dict."""
    out = {}
    for p, x in zip(space, row):
        if p.kind == "categorical":
            out[p.name] = p.choices[int(x)]
        elif p.kind == "int":
            out[p.name] = int(round(float(x)))
        else:
            out[p.name] = float(x)
    return out


class TwinEvaluator:
    """``evaluate(params[K, P], replications)`` on the twin built from ``cfg`` (scenario, intervention,
    horizon, compute). ``space`` is the searched part of the intervention's parameter space."""

    def __init__(self, cfg: DictConfig, names: Sequence[str] | None = None):
        import interventions
        from interventions import counterfactual as cf
        from twins.core import pipeline

        self.cfg = cfg
        self.iv = interventions.get(cfg.get("intervention", None))
        if self.iv.name == "none":
            raise ConfigError("intervention", "none", "an intervention with parameters to search",
                              "Try intervention=signal_timing.")
        probe = pipeline.make_twin(cfg, cf.worlds_for(cfg.seed, 1, [cf.Arm(0, "baseline")]))
        params = {p.name: p for p in self.iv.parameters(probe)}
        if names is None:  # the shared parameters (per-junction variants have a dotted name)
            names = [n for n in params if "." not in n]
        for n in names:
            if n not in params:
                from twins.core.errors import suggest

                raise ConfigError("search.params", n, f"parameters of intervention {self.iv.name!r}",
                                  suggest(n, params))
        self.space: list[Parameter] = [params[n] for n in names]
        self.metrics: list[str] | None = None
        self.probe = probe
        from twins.compute.accounting import RunMeter

        self.meter = RunMeter(float(cfg.compute.get("cpu_watts_per_core", 4.4)))  # every evaluation's account

    def _simulate(self, worlds, arms):
        """Run ``worlds`` (each carrying its arm; the arms validated candidate by candidate) through the one
        counterfactual pipeline (``twins.core.pipeline``: the compute plan's chunks, local or Ray):
        ``(result, groups)``."""
        from twins.core import pipeline

        plan = pipeline.plan(self.cfg, self.iv, arms, worlds, meter=self.meter, twin=self.probe)
        result = plan.run(progress=False)
        return result, plan.groups(result)

    def compute_account(self) -> dict:
        """Wall time, device-seconds and energy of every evaluation so far (twins.compute.accounting)."""
        return self.meter.summary()

    def __call__(self, params: np.ndarray, replications: Sequence[int]) -> Outcomes:
        return self.evaluate_many([(params, replications)])[0]

    def evaluate_many(self, blocks: Sequence[tuple[np.ndarray, Sequence[int]]]) -> list[Outcomes]:
        """Several evaluations ``(params[K, P], replications)`` in ONE world batch (each block with its own
        baseline arm on its own replications): e.g. a search's next candidates on the search replications and
        its leader on held-out ones. A world's numbers never depend on the batch it runs in (batch
        independence), so each block's outcomes equal those of its own call."""
        from interventions import counterfactual as cf
        from twins.core.worlds import WorldBatch
        import torch

        arms, plan = [], []  # plan: per block (reps, candidates, invalid, arm indices of its valid candidates)
        rep_ids, arm_ids = [], []
        for params, replications in blocks:
            params = np.atleast_2d(np.asarray(params, dtype=float))
            reps = np.asarray(list(replications), dtype=np.int64)
            if not np.all(np.diff(reps) == 1):
                raise ValueError("replications must be consecutive ids")
            # validate candidates first: an invalid one (e.g. a green under min_green_s) is left out of the batch
            cands = [values_of(self.space, row) for row in params]
            invalid: list[str | None] = [None] * len(cands)
            first = len(arms)
            arms.append(cf.Arm(first, "baseline", {}))
            idx = []
            for k, v in enumerate(cands):
                try:
                    self.iv.validate(v, self.probe)
                except ConfigError as e:
                    invalid[k] = str(e)
                    continue
                idx.append(k)
                arms.append(cf.Arm(len(arms), self.iv.describe(v), v))
            n_arms = len(arms) - first
            rep_ids.append(np.tile(reps, n_arms))  # world = first world + arm·R + rep, as WorldBatch.replications
            arm_ids.append(np.repeat(np.arange(first, len(arms)), len(reps)))
            plan.append((reps, cands, invalid, idx, n_arms))
        worlds = WorldBatch(int(self.cfg.seed), torch.from_numpy(np.concatenate(rep_ids)),
                            torch.from_numpy(np.concatenate(arm_ids)))
        result, groups = self._simulate(worlds, arms)
        metrics = [m for m in result.metrics]
        self.metrics = metrics
        w = result.worlds.sort_values("world")
        outs, start = [], 0
        for reps, cands, invalid, idx, n_arms in plan:
            R, M, K, n = len(reps), len(metrics), len(cands), n_arms * len(reps)
            vals = w[metrics].to_numpy(float)[start:start + n].reshape(n_arms, R, M)
            treated = np.full((K, R, M), math.nan)
            for j, k in enumerate(idx):
                treated[k] = vals[j + 1]
            out = Outcomes(metrics, reps, treated, vals[0], invalid)
            if groups is not None and len(groups):
                sel = groups[(groups["world"] >= start) & (groups["world"] < start + n)].copy()
                sel["world"] = sel["world"] - start
                g = group_tensor(sel, n_arms, R)
                if g is not None:
                    out.groups, out.group_metrics, gv = g
                    out.group_treated = np.full((K,) + gv.shape[1:], math.nan)
                    for j, k in enumerate(idx):
                        out.group_treated[k] = gv[j + 1]
                    out.group_baseline = gv[0]
            outs.append(out)
            start += n
        return outs
