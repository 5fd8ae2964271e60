"""``road_closure``: close edges in the treated arm; affected flows drive a recomputed route.

A parameter vector closes edges: ``close.<edge id> = 1`` (the config form is a list,
``intervention.edges=[J0_0_J0_1]``). Every flow whose route uses a closed edge gets
the free-flow fastest route between the same origin and destination edges in the
network without the closed edges (:meth:`RoadNetwork.shortest_route` on a graph
with those edges removed); flows that do not use them keep their route, bit for bit.
Where no alternative exists (the closed edge is a flow's origin or destination, or
it cuts the network) the vector is rejected with a :class:`ConfigError` naming the
edge and the flow — before any compute is spent.

The closure holds from the first step, so "vehicles that have not passed the edge"
are all of an affected flow's vehicles. Departures and driver parameters are keyed
by vehicle id, so a rerouted vehicle departs when, and drives as, it did in the
baseline (noise alignment).

Writes into ``twin.worlds.params``:
``route_extra_edges`` [W, X, M] — alternative routes appended to the route table
(edge indices, -1 padded; the same rows in every world), and
``route_of_flow`` [W, F] — the row of the route table each flow drives in each world
(identity in a world without closures); then the twin reads both again
(``TrafficTwin.read_params``).

Known limitation: ``trips.route_length_m`` and :meth:`TrafficTwin.vehicle` still report
the flow's scenario route (they read the flow, not the world's route row).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Sequence

import torch

from twins.core.errors import ConfigError, suggest

from ._traffic import traffic_twin
from .base import Intervention, Parameter, register

PREFIX = "close."


@dataclass
class RoadClosureConfig:
    name: str = "road_closure"
    edges: List[str] = field(default_factory=list)  # edge ids closed in the treated arm; []: none (baseline)


@register("road_closure", RoadClosureConfig)
class RoadClosure(Intervention):
    """Close edges; reroute the flows that used them on the free-flow fastest alternative."""

    def __init__(self, cfg=None):
        super().__init__(cfg)
        e = self.cfg.get("edges", None)
        self.edges = [] if e is None else [str(x) for x in e]

    # --- parameter space ------------------------------------------------------------------------
    def parameters(self, twin) -> list[Parameter]:
        net = traffic_twin(twin, self.name).scenario.network
        return [Parameter(f"{PREFIX}{e}", "int", 0, 1, "", 0, doc=f"1: edge {e} closed") for e in net.edges]

    def config_values(self) -> dict:
        return {f"{PREFIX}{e}": 1 for e in self.edges}

    def validate(self, values: dict, twin) -> dict:
        net = traffic_twin(twin, self.name).scenario.network
        for k, v in (values or {}).items():
            if k.startswith(PREFIX) and k[len(PREFIX):] not in net.edges:
                e = k[len(PREFIX):]
                raise ConfigError("intervention.edges", e, "edge ids of the scenario's network",
                                  suggest(e, net.edges))
        values = super().validate(values, twin)
        self.reroute(values, twin)  # raises where a flow is left without a route
        return values

    @staticmethod
    def closed(values: dict | None) -> list[str]:
        return [k[len(PREFIX):] for k, v in (values or {}).items() if k.startswith(PREFIX) and int(v) == 1]

    # --- the plan -------------------------------------------------------------------------------
    def reroute(self, values: dict | None, twin) -> dict[int, list[str]]:
        """``{flow index: new route}`` for the flows whose route uses a closed edge."""
        closed = self.closed(values)
        if not closed:
            return {}
        scen = traffic_twin(twin, self.name).scenario
        net, flows = scen.network, scen.demand.flows
        shut = set(closed)
        g = net.graph()
        g.remove_nodes_from(closed)
        out = {}
        for i, f in enumerate(flows):
            hit = [e for e in f.route if e in shut]
            if not hit:
                continue
            why = None
            if f.route[0] in shut or f.route[-1] in shut:
                end = "origin" if f.route[0] in shut else "destination"
                why = f"it is the flow's {end} edge"
            else:
                try:
                    out[i] = net.shortest_route(f.route[0], f.route[-1], g)
                except ConfigError:
                    why = f"no other path joins {f.route[0]} to {f.route[-1]}"
            if why:
                raise ConfigError("intervention.edges", hit[0], "edges whose closure leaves every flow a route",
                                  f"Closing {hit[0]!r} leaves flow {f.id!r} without an alternative route ({why}).")
        return out

    def apply(self, twin, values_per_world: Sequence[dict | None]) -> None:
        self._check_fresh(twin)
        tw = traffic_twin(twin, self.name)
        W, F = tw.W, len(tw.scenario.demand.flows)
        if len(values_per_world) != W:
            raise ValueError(f"values_per_world has {len(values_per_world)} entries for {W} worlds")
        from twins.traffic.tables import route_edge_rows

        extra: dict[tuple, int] = {}  # alternative route -> row after the F flow rows
        rof = torch.arange(F, dtype=torch.int64).repeat(W, 1)
        cache: dict = {}
        for w, v in enumerate(values_per_world):
            key = tuple(sorted((v or {}).items()))
            if key not in cache:
                cache[key] = self.reroute(self.validate(dict(v), tw) if v else None, tw)
            for fi, route in cache[key].items():
                rof[w, fi] = F + extra.setdefault(tuple(route), len(extra))
        rows = route_edge_rows(tw.net_cpu.edge_ids, [list(r) for r in extra])
        dev = tw.device
        tw.worlds.params["route_extra_edges"] = rows.unsqueeze(0).expand(W, -1, -1).contiguous().to(dev)
        tw.worlds.params["route_of_flow"] = rof.to(dev)
        tw.read_params()

    def describe(self, values: dict | None) -> str:
        closed = self.closed(values)
        return f"{self.name}({', '.join(closed)})" if closed else "baseline"
