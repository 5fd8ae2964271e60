"""``demand_management``: a cordon charge, modelled as a demand response with a stated elasticity.

Trips from a charged origin zone (a flow's ``group``; the flow id where it has none;
``zones: {N: true, S: true}`` or ``[N, S]`` charges N and S only, ``zones: null`` every zone)
pay ``charge`` per trip. Car-trip demand is taken to have a constant elasticity
``elasticity`` with respect to the generalized cost of the trip,

    C_f = base_cost + value_of_time · t_f,   t_f the free-flow time of flow f's route (h),

so the share of flow f's trips still made under the charge is

    r_f = ((C_f + charge) / C_f) ** elasticity = (1 + charge / C_f) ** elasticity   (charged zones),
    r_f = 1                                                                        (other zones).

The default elasticity, −0.3, is a mid value of published car-traffic price
elasticities: Goodwin, Dargay & Hanly (2004), "Elasticities of road traffic and fuel
consumption with respect to price and income: a review", *Transport Reviews* 24(3),
report about −0.1 (short run) to −0.3 (long run) for traffic volume against fuel price;
Litman, "Understanding Transport Demands and Elasticities" (Victoria Transport Policy
Institute, updated regularly) compiles vehicle-trip elasticities against tolls and
road pricing mostly between about −0.1 and −0.5. It is a stated modelling assumption:
set ``elasticity`` (and ``base_cost``, ``value_of_time`` in the same money unit as
``charge``) for your city. Suppressed trips vanish; the model does not shift them to
other times, routes or modes.

Mechanism (noise aligned): every potential vehicle ``v`` gets ``u_v ~ U(0,1)`` keyed by
(replication, vehicle id) on the ``CHOICE`` noise stream and travels iff ``u_v < r_f``;
a vehicle that does not travel keeps no slot (departure +inf, never loaded). The
vehicles that do travel keep their departure time and driver parameters from the
baseline, and a zero charge (r = 1) leaves the worlds bit-identical. Writes
``flow_retention`` [W, F] into ``twin.worlds.params``; the twin reads it when it builds
its population (``TrafficTwin.read_params``), so ``apply`` has the twin read them again.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch

from twins.core.errors import ConfigError, suggest

from ._traffic import traffic_twin
from .base import Intervention, Parameter, register


@dataclass
class DemandManagementConfig:
    name: str = "demand_management"
    charge: Optional[float] = None  # charge per trip from a charged zone (money); null: keep the baseline (0)
    base_cost: float = 5.0  # out-of-pocket cost of a car trip without the charge (money)
    value_of_time: float = 10.0  # money per hour of free-flow travel time, added to base_cost
    elasticity: float = -0.3  # constant elasticity of car trips w.r.t. generalized trip cost
    # {origin group: charged?} (or a list of charged groups); unlisted zones are uncharged;
    # null: every origin zone is charged. (Any: so that `intervention.zones={N: true}` replaces the node.)
    zones: Any = None
    max_charge: float = 100.0  # upper bound of the charge parameter


@register("demand_management", DemandManagementConfig)
class DemandManagement(Intervention):
    """Cordon charge per origin zone → fewer trips from charged zones (constant-elasticity response)."""

    def __init__(self, cfg=None):
        super().__init__(cfg)
        c = self.cfg
        self.base_cost = float(c.get("base_cost", 5.0))
        self.value_of_time = float(c.get("value_of_time", 10.0))
        self.elasticity = float(c.get("elasticity", -0.3))
        self.max_charge = float(c.get("max_charge", 100.0))
        z = c.get("zones", None)
        self.zones = None if z is None else self._zone_map(z)  # None: every zone charged
        if not self.base_cost > 0:
            raise ConfigError("intervention.base_cost", self.base_cost, "a trip cost > 0 (money)")
        if not self.value_of_time >= 0:
            raise ConfigError("intervention.value_of_time", self.value_of_time, "a value >= 0 (money per hour)")
        if not -5.0 <= self.elasticity <= 0.0:
            raise ConfigError("intervention.elasticity", self.elasticity, "a number in [-5, 0]",
                              "A charge must not raise demand; published car-trip price elasticities lie "
                              "roughly between -0.1 and -0.5.")
        if not self.max_charge > 0:
            raise ConfigError("intervention.max_charge", self.max_charge, "a number > 0")

    # --- zones ----------------------------------------------------------------------------------
    @staticmethod
    def _zone_map(z) -> dict[str, bool]:
        if isinstance(z, str):
            z = [z]
        if hasattr(z, "items"):
            out = {}
            for k, v in z.items():
                if not isinstance(v, bool):
                    raise ConfigError(f"intervention.zones.{k}", v, "true or false (is the zone charged?)")
                out[str(k)] = v
            return out
        if isinstance(z, (list, tuple)) or hasattr(z, "__iter__"):
            return {str(k): True for k in z}
        raise ConfigError("intervention.zones", z, "a map {zone: true/false}, a list of charged zones, or null")

    @staticmethod
    def groups(twin) -> list[str]:
        """Origin group of each flow (its ``group``, else its id), in flow order."""
        return [f.group or f.id for f in twin.scenario.demand.flows]

    def charged(self, twin) -> dict[str, bool]:
        groups = sorted(set(self.groups(traffic_twin(twin, self.name))))
        if self.zones is None:
            return {g: True for g in groups}
        for z in self.zones:
            if z not in groups:
                raise ConfigError(f"intervention.zones.{z}", self.zones[z], "origin zones of the scenario",
                                  suggest(z, groups))
        return {g: self.zones.get(g, False) for g in groups}

    # --- parameter space ------------------------------------------------------------------------
    def parameters(self, twin) -> list[Parameter]:
        self.charged(twin)  # checks the zones
        return [
            Parameter("charge", "float", 0.0, self.max_charge, "money/trip", 0.0,
                      doc="cordon charge per trip from a charged origin zone"),
            Parameter("elasticity", "float", -5.0, 0.0, "", self.elasticity,
                      doc="constant elasticity of car trips w.r.t. generalized trip cost"),
        ]

    def config_values(self) -> dict:
        c = self.cfg.get("charge", None)
        return {} if c is None else {"charge": c}

    # --- the plan -------------------------------------------------------------------------------
    def generalized_cost(self, twin) -> torch.Tensor:
        """C_f = base_cost + value_of_time · free-flow time of flow f's scenario route, [F] float64."""
        free_h = twin.routes_cpu.route_free_time[: len(twin.scenario.demand.flows)].to(torch.float64) / 3600.0
        return self.base_cost + self.value_of_time * free_h

    def retention(self, values: dict | None, twin) -> torch.Tensor:
        """Share of each flow's trips still made, [F] float64 (exactly 1 where nothing is charged)."""
        tw = traffic_twin(twin, self.name)
        F = len(tw.scenario.demand.flows)
        charge = float((values or {}).get("charge", 0.0))
        eps = float((values or {}).get("elasticity", self.elasticity))
        r = torch.ones(F, dtype=torch.float64)
        if charge == 0.0:
            return r
        zone = self.charged(tw)
        cost = self.generalized_cost(tw)
        for i, g in enumerate(self.groups(tw)):
            if zone[g]:
                r[i] = (1.0 + charge / float(cost[i])) ** eps
        return r

    def retention_by_zone(self, values: dict | None, twin) -> dict[str, float]:
        """Trip-weighted mean retention per origin zone (expected share of its trips still made)."""
        r = self.retention(values, twin)
        rates = [f.rate if f.rate else sum(x[2] for x in f.segments()) for f in twin.scenario.demand.flows]
        out: dict[str, list] = {}
        for i, g in enumerate(self.groups(twin)):
            out.setdefault(g, []).append((float(r[i]), float(rates[i]) or 1.0))
        return {g: sum(a * w for a, w in v) / sum(w for _, w in v) for g, v in out.items()}

    def apply(self, twin, values_per_world: Sequence[dict | None]) -> None:
        self._check_fresh(twin)
        tw = traffic_twin(twin, self.name)
        W = tw.W
        if len(values_per_world) != W:
            raise ValueError(f"values_per_world has {len(values_per_world)} entries for {W} worlds")
        cache: dict = {}
        rows = []
        for v in values_per_world:
            key = tuple(sorted((v or {}).items()))
            if key not in cache:
                cache[key] = self.retention(self.validate(dict(v), tw) if v else None, tw)
            rows.append(cache[key])
        ret = torch.stack(rows).to(tw.device)
        base = tw.worlds.params.get("calibrated_retention")  # scenario.demand=calibrated: each world's member
        tw.worlds.params["flow_retention"] = ret if base is None else ret * base.to(ret)
        tw.read_params()
