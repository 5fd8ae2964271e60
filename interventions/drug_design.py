"""``drug_design``: a ligand's binding kinetics and its dosing regimen, as a do-operator on the
molecular twin.

Parameters (baselines: the scenario's values; units of the molecular scenario, nm / µs):

================== ====== ============================================================
``k_on_target``     1/µs   Doi microscopic binding rate with the target receptor inside the
                           reaction radius (the macroscopic on-rate is
                           :func:`twins.molecular.kernels.doi_rate`)
``k_off_target``    1/µs   unbinding rate of the target complex
``k_on_offtarget``  1/µs   as above, for the off-target protein
``k_off_offtarget`` 1/µs   as above, for the off-target complex
``dose``            molec. ligand molecules per dose
``dosing_interval`` µs     time between doses
``n_doses``         —      number of doses (baseline: the scenario's, or as many as fit)
================== ====== ============================================================

The rates fix the affinity: with unbinding products placed uniformly in the
reaction ball, detailed balance gives ``K_d = p_off / (p_on V_R)``
(:func:`twins.molecular.kernels.doi_dissociation_constant`); :meth:`DrugDesign.affinity`
reports it in µM for a parameter vector. Default bounds: rates ``[0, 10 × baseline]``,
dose ``[0, 4 × baseline]`` (at most the scenario's ``max_dose`` when it sets one),
interval ``[baseline / 4, 4 × baseline]``, doses ``[1, as many as fit at the shortest
interval]``; ``bounds: {name: [low, high]}`` overrides them.

Mechanism: ``apply`` writes one value per world for every parameter any arm sets
(the baseline value in the other worlds) into ``twin.worlds.params`` and has the twin
read them (``MolecularTwin.read_params``: the slot table depends on the largest dose).
Particles are keyed for noise by an id that no parameter changes
(``twins.molecular.model``), so a baseline-equal vector gives bit-identical worlds
and every arm of a replication shares its noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from twins.core.errors import ConfigError, suggest

from .base import Intervention, Parameter, register

RATES = ("k_on_target", "k_off_target", "k_on_offtarget", "k_off_offtarget")
NAMES = RATES + ("dose", "dosing_interval", "n_doses")
_DOC = {
    "k_on_target": "Doi binding rate with the target inside the reaction radius",
    "k_off_target": "unbinding rate of the target complex",
    "k_on_offtarget": "Doi binding rate with the off-target inside the reaction radius",
    "k_off_offtarget": "unbinding rate of the off-target complex",
    "dose": "ligand molecules per dose",
    "dosing_interval": "time between doses",
    "n_doses": "number of doses",
}


@dataclass
class DrugDesignConfig:
    name: str = "drug_design"
    k_on_target: Optional[float] = None  # 1/µs; null: the scenario's value
    k_off_target: Optional[float] = None  # 1/µs
    k_on_offtarget: Optional[float] = None  # 1/µs
    k_off_offtarget: Optional[float] = None  # 1/µs
    dose: Optional[int] = None  # molecules per dose
    dosing_interval: Optional[float] = None  # µs
    n_doses: Optional[int] = None  # number of doses
    # {name: [low, high]} over the default bounds (Any: so that `intervention.bounds={dose: [0, 300]}`
    # replaces the node; checked in DrugDesign.__init__)
    bounds: Any = None


def molecular_twin(twin, name: str = "drug_design"):
    """``twin`` if it is a molecular twin, else a :class:`ConfigError` naming the intervention."""
    from twins.molecular.model import MolecularTwin

    if not isinstance(twin, MolecularTwin):
        raise ConfigError("intervention", name, "a molecular scenario (scenario=molecular)",
                          f"intervention {name!r} changes a drug's kinetics and dosing; "
                          f"this scenario builds a {type(twin).__name__}.")
    return twin


@register("drug_design", DrugDesignConfig)
class DrugDesign(Intervention):
    """Binding / unbinding rates for target and off-target, dose, dosing interval, number of doses."""

    def __init__(self, cfg=None):
        super().__init__(cfg)
        self.bounds = {}
        bounds = self.cfg.get("bounds", None) or {}
        if not hasattr(bounds, "items"):
            raise ConfigError("intervention.bounds", bounds, "a map {parameter: [low, high]}")
        for k, b in bounds.items():
            if k not in NAMES:
                raise ConfigError(f"intervention.bounds.{k}", list(b), "bounds of a drug_design parameter",
                                  suggest(k, NAMES))
            b = list(b)
            if len(b) != 2 or not all(isinstance(x, (int, float)) and math.isfinite(x) for x in b) \
                    or not 0 <= b[0] <= b[1]:
                raise ConfigError(f"intervention.bounds.{k}", b, "[low, high] with 0 <= low <= high")
            if k == "dosing_interval" and b[0] <= 0:
                raise ConfigError(f"intervention.bounds.{k}", b, "a positive lower bound (µs)")
            self.bounds[k] = (float(b[0]), float(b[1]))

    # --- parameter space ------------------------------------------------------------------------
    @staticmethod
    def scenario_values(twin) -> dict:
        """The scenario's own values of the parameters (what a world without a vector runs)."""
        kw = molecular_twin(twin).scenario_values
        out = {k: float(kw[k]) for k in RATES}
        out["dose"] = int(round(float(kw["dose"])))
        out["dosing_interval"] = float(kw["dosing_interval"])
        out["n_doses"] = _fitting_doses(twin, float(kw["dosing_interval"]), int(round(float(kw["n_doses"]))))
        return out

    def parameters(self, twin) -> list[Parameter]:
        base = self.scenario_values(twin)
        kw = twin.scenario_values
        cap = kw.get("max_dose")
        iv_lo = base["dosing_interval"] / 4
        default = {k: (0.0, 10.0 * base[k]) for k in RATES}
        default["dose"] = (0.0, float(4 * base["dose"] if cap is None else min(4 * base["dose"], int(cap))))
        default["dosing_interval"] = (iv_lo, 4.0 * base["dosing_interval"])
        lo_iv = self.bounds.get("dosing_interval", default["dosing_interval"])[0]
        default["n_doses"] = (1.0, float(max(base["n_doses"], _fitting_doses(twin, lo_iv, 0), 1)))
        units = {"dose": "molecules", "dosing_interval": "µs", "n_doses": ""}
        out = []
        for k in NAMES:
            lo, hi = self.bounds.get(k, default[k])
            if k == "dose" and cap is not None and hi > int(cap):
                raise ConfigError("intervention.bounds.dose", [lo, hi],
                                  f"an upper bound <= scenario.max_dose = {int(cap)}",
                                  "Raise scenario.max_dose (the per-dose slot capacity) or lower the bound.")
            if not lo <= base[k] <= hi:  # the null arm (baseline's own vector) must be a valid vector
                raise ConfigError(f"intervention.bounds.{k}", [lo, hi], f"bounds containing the scenario's value "
                                  f"{base[k]:g}", f"Widen the bounds or change scenario.{k}.")
            kind = "int" if k in ("dose", "n_doses") else "float"
            out.append(Parameter(k, kind, lo, hi, units.get(k, "1/µs"), base[k], doc=_DOC[k]))
        return out

    def config_values(self) -> dict:
        return {k: self.cfg.get(k) for k in NAMES if self.cfg.get(k, None) is not None}

    def affinity(self, values: dict | None, twin) -> dict:
        """Dissociation constants ``K_d`` (µM) for target and off-target, and their ratio (off / on
        target: > 1 means the ligand prefers its target), under ``values`` (baseline where unset)."""
        from twins.molecular import kernels as K
        from twins.molecular.model import micromolar

        v = {**self.scenario_values(twin), **(values or {})}
        R, dt = twin.R, twin.dt

        def kd(on, off):
            return micromolar(K.doi_dissociation_constant(on, off, R, dt), 1.0) if on > 0 else math.inf

        t = kd(v["k_on_target"], v["k_off_target"])
        o = kd(v["k_on_offtarget"], v["k_off_offtarget"])
        return {"Kd_target_uM": t, "Kd_offtarget_uM": o, "Kd_ratio": o / t if t > 0 else math.inf}

    # --- applying it ----------------------------------------------------------------------------
    def apply(self, twin, values_per_world: Sequence[dict | None]) -> None:
        self._check_fresh(twin)
        tw = molecular_twin(twin, self.name)
        if len(values_per_world) != tw.W:
            raise ValueError(f"values_per_world has {len(values_per_world)} entries for {tw.W} worlds")
        base = self.scenario_values(tw)
        checked: dict = {}  # one validation per distinct vector (arms repeat over replications)
        vals = []
        for v in values_per_world:
            key = tuple(sorted((v or {}).items()))
            if key not in checked:
                checked[key] = self.validate(dict(v), tw) if v else {}
            vals.append(checked[key])
        used = [k for k in NAMES if any(k in v for v in vals)]
        if not used:
            return
        for k in used:
            tw.worlds.params[k] = torch.tensor([float(v.get(k, base[k])) for v in vals], dtype=torch.float64,
                                               device=tw.device)
        tw.read_params()


def _fitting_doses(twin, interval: float, n_doses: int) -> int:
    """Doses given within the horizon at ``interval`` (capped by ``n_doses`` when positive)."""
    from twins.molecular.model import doses_that_fit

    fit = doses_that_fit(float(twin.scenario_values["first_dose"]), interval, (twin.n_steps - 1) * twin.dt)
    return min(fit, n_doses) if n_doses > 0 else fit
