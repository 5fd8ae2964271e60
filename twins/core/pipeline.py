"""The one counterfactual pipeline (issue 21): arms → worlds → probe twin → compute plan → outcomes with groups.

Every task that simulates arms goes through :func:`plan` and :meth:`Counterfactual.run`: ``python -m twins
run`` (``runner.run``), the search's evaluations (``interventions._evaluate.TwinEvaluator``) and the ethics
review's evidence batches (``twins.ethics.evidence.run_arms``); ``transfer`` replays in SUMO what their
folders recorded. So how arms become worlds, how the worlds are split over devices, and which groups an
effect is reported for are decided once, here and in the modules this one calls:

* **worlds**: ``interventions.counterfactual.worlds_for`` (world = first world + arm·R + replication: every
  arm sees the same replications, so effects are paired);
* **probe**: a twin of a few of those worlds (never stepped) that validates each arm's values against the
  scenario before any compute is spent, and answers questions about the scenario (network, horizon, plans);
* **execution**: the compute plan (``twins.compute``) builds each chunk's twin with its worlds' arms written
  in, runs the chunks (this process or Ray) and reassembles the outcomes in world order;
* **groups**: the twin's own per-group outcomes plus its ``counterfactual_groups`` (traffic: the
  per-approach delay).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import pandas as pd
from omegaconf import DictConfig

from twins.compute.device import driver_device, resolve_dtype

from .config import validate_common
from .worlds import WorldBatch


@dataclass
class Counterfactual:
    """A planned counterfactual: its arms (checked, baseline first), worlds, probe twin and execution."""

    cfg: DictConfig
    iv: Any  # interventions.base.Intervention
    arms: list  # interventions.counterfactual.Arm
    worlds: WorldBatch
    twin: Any  # the probe: a twin of a few of the worlds, never stepped
    exe: Any  # twins.compute.execute.Execution

    def run(self, progress=None, desc: str | None = None):
        """Simulate every world (``RunResult``, worlds in order); on an interruption ``exe.partial()`` keeps
        what was simulated."""
        return self.exe.run(progress=progress, desc=desc)

    def groups(self, result) -> pd.DataFrame | None:
        """The per-group outcomes effects are reported for: the twin's groups and its counterfactual ones."""
        groups = result.groups
        extra = self.twin.counterfactual_groups(result)
        if extra is not None:
            groups = extra if groups is None else pd.concat([groups, extra], ignore_index=True)
        return groups


def plan(cfg: DictConfig, iv, arms: list, worlds: WorldBatch, *, probe: Sequence[int] = (0,), meter=None,
         twin=None) -> Counterfactual:
    """Plan ``worlds`` (each carrying one of ``arms``) under ``cfg``'s compute settings.

    ``probe``: the worlds the probe twin holds (their arms' values are validated and written into it).
    ``twin``: an existing probe of the scenario to reuse instead (the caller has validated the arms, as a
    search does candidate by candidate). ``meter``: the compute/energy account to add the run to."""
    from interventions import counterfactual as cf
    from twins.compute.execute import execution_for
    from twins.compute.plan import Job, build_chunk_twin

    validate_common(cfg)
    if twin is None:
        twin = build_chunk_twin(Job(cfg, worlds, []), list(probe), driver_device(cfg))
        if len(arms) > 1:
            arms = cf.apply_arms(iv, twin, arms)
    exe = execution_for(Job(cfg, worlds, arms), meter, n_steps=twin.n_steps)
    return Counterfactual(cfg, iv, arms, worlds, twin, exe)


def make_twin(cfg: DictConfig, worlds: WorldBatch | None = None):
    """Validate ``cfg`` and build its twin (no stepping yet)."""
    import scenarios

    from twins.compute.plan import check_memory

    validate_common(cfg)
    check_memory(cfg, worlds.size if worlds is not None else int(cfg.replications), "this twin")
    device = driver_device(cfg)  # compute.device (under Ray: the CPU where this machine lacks it)
    dtype = resolve_dtype(cfg.compute.dtype)
    worlds = worlds or WorldBatch.replications(cfg.seed, cfg.replications)
    return scenarios.build_twin(cfg, worlds, device, dtype)


def make_counterfactual(cfg: DictConfig):
    """The intervention, its arms (baseline first) and a twin whose worlds carry each arm's parameters."""
    import interventions
    from interventions import counterfactual as cf

    iv = interventions.get(cfg.get("intervention", None))
    arms = cf.arms_from_config(iv)
    twin = make_twin(cfg, cf.worlds_for(cfg.seed, cfg.replications, arms))
    if len(arms) > 1:
        arms = cf.apply_arms(iv, twin, arms)
    return iv, arms, twin


def plan_counterfactual(cfg: DictConfig):
    """The run's counterfactual (``pipeline.Counterfactual``): the config's intervention, its checked arms
    (baseline first), its worlds split into chunks by the compute plan (``twins/compute/``) and a one-world
    twin of the scenario (never stepped: it validates the arms before any compute, and draws the figures)."""
    import interventions
    from interventions import counterfactual as cf
    from twins.compute.plan import check_memory

    validate_common(cfg)
    iv = interventions.get(cfg.get("intervention", None))
    arms = cf.arms_from_config(iv)
    check_memory(cfg, int(cfg.replications) * len(arms), "this run")  # before the worlds are allocated
    return plan(cfg, iv, arms, cf.worlds_for(cfg.seed, cfg.replications, arms))
