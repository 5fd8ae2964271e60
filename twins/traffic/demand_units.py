"""The unknowns of a calibration: route flows per interval (*units*), and the demand the twin runs for them.

A unit is one route (a distinct edge list and vehicle type of the scenario's demand) in one demand interval
``[b_k, e_k)``; its value is the expected number of vehicles that depart on that route in that interval.
:func:`units_of` reads the prior (the scenario's own demand, binned per interval); :func:`unit_demand` turns
a set of values into a :class:`~twins.traffic.demand.Demand` with one Poisson flow per unit, so every world
draws its own departures (keyed noise, as ``scenario.demand_variation=poisson``). Several candidate demands
share one world batch: the flows run at the largest candidate's rate and each world keeps a vehicle of unit
``u`` iff its keyed draw is below ``x_w[u] / x_max[u]`` (``worlds.params["flow_retention"]``, the twin's
own thinning): a Poisson process thinned with probability p is a Poisson process at p times the rate, so
world ``w`` runs exactly candidate ``x_w``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from twins.traffic.demand import Demand, Flow


@dataclass
class Units:
    routes: list[list[str]]  # distinct routes (edge lists)
    route_ids: list[str]  # a readable id per route (its first flow's id)
    vtypes: list[str]  # vehicle type per route
    intervals: list[tuple[float, float]]
    route_of: np.ndarray  # [U] route index of each unit
    interval_of: np.ndarray  # [U] interval index of each unit
    prior: np.ndarray  # [U] expected vehicles of the prior demand
    vtype_defs: dict = field(default_factory=dict)  # vtype id -> VehicleType

    @property
    def size(self) -> int:
        return int(self.route_of.size)

    def table(self, x: np.ndarray | None = None):
        """One row per unit: route id, edges, vtype, interval, prior (and ``x``)."""
        import pandas as pd

        r, k = self.route_of, self.interval_of
        df = pd.DataFrame({"unit": np.arange(self.size), "route_id": [self.route_ids[i] for i in r],
                           "route": [" ".join(self.routes[i]) for i in r], "vtype": [self.vtypes[i] for i in r],
                           "begin_s": [self.intervals[j][0] for j in k], "end_s": [self.intervals[j][1] for j in k],
                           "prior_veh": self.prior})
        if x is not None:
            df["vehicles"] = np.asarray(x, float)
        return df


def intervals_of(begin: float, end: float, width: float) -> list[tuple[float, float]]:
    n = max(1, math.ceil((end - begin) / width - 1e-9))
    return [(begin + j * width, min(begin + (j + 1) * width, end)) for j in range(n)]


def _expected(f: Flow, b: float, e: float) -> float:
    """Expected vehicles of flow ``f`` departing in ``[b, e)``."""
    if f.kind == "fixed":
        return float(sum(1 for t in f.departures if b <= t < e))
    total = f.expected_count()
    raw = sum(r * max(0.0, min(se, e) - max(sb, b)) / 3600.0 for sb, se, r in f.segments())
    full = sum(r * max(0.0, se - sb) / 3600.0 for sb, se, r in f.segments())
    return raw * (total / full) if full > 0 else 0.0


def units_of(demand: Demand, intervals: list[tuple[float, float]]) -> Units:
    """The scenario's demand as units: its flows grouped by (route, vehicle type), binned per interval."""
    key_of: dict[tuple, int] = {}
    routes, ids, vtypes = [], [], []
    counts: list[list[float]] = []
    for f in demand.flows:
        key = (tuple(f.route), f.vtype)
        if key not in key_of:
            key_of[key] = len(routes)
            routes.append(list(f.route))
            ids.append(f.id.split("+")[0])
            vtypes.append(f.vtype)
            counts.append([0.0] * len(intervals))
        row = counts[key_of[key]]
        for j, (b, e) in enumerate(intervals):
            row[j] += _expected(f, b, e)
    R, K = len(routes), len(intervals)
    route_of = np.repeat(np.arange(R), K)
    interval_of = np.tile(np.arange(K), R)
    prior = np.array(counts, dtype=float).reshape(-1) if R else np.zeros(0)
    return Units(routes, ids, vtypes, list(intervals), route_of, interval_of, prior,
                 {t: demand.vtypes[t] for t in sorted(set(vtypes))})


def unit_demand(units: Units, x_max: np.ndarray) -> Demand:
    """One Poisson flow per unit at ``x_max[u]`` expected vehicles over its interval (units with 0 too: they
    draw nothing, and keep flow index = unit index)."""
    flows = []
    for u in range(units.size):
        r, k = int(units.route_of[u]), int(units.interval_of[u])
        b, e = units.intervals[k]
        rate = float(x_max[u]) * 3600.0 / (e - b) if e > b else 0.0
        if rate <= 0:  # no vehicle in any world: an empty flow (no slots), keeping flow index = unit index
            flows.append(Flow(id=f"{units.route_ids[r]}@{k}", route=list(units.routes[r]), begin=b, end=e,
                              kind="fixed", vtype=units.vtypes[r], departures=[]))
            continue
        flows.append(Flow(id=f"{units.route_ids[r]}@{k}", route=list(units.routes[r]), rate=rate, begin=b, end=e,
                          kind="poisson", vtype=units.vtypes[r], profile=[(b, e, rate)] if rate > 0 else []))
    return Demand(dict(units.vtype_defs), flows)


def integer_counts(units: Units, x: np.ndarray) -> np.ndarray:
    """Whole vehicles per unit whose running sum along each route stays within one vehicle of ``x``'s
    (cumulative rounding): the route's total is its rounded total, and no interval is biased."""
    out = np.zeros(units.size, dtype=np.int64)
    x = np.clip(np.asarray(x, float), 0.0, None)
    for r in range(len(units.routes)):
        idx = np.nonzero(units.route_of == r)[0]
        idx = idx[np.argsort(units.interval_of[idx])]
        cum = np.floor(np.cumsum(x[idx]) + 0.5)
        out[idx] = np.diff(np.concatenate([[0.0], cum])).astype(np.int64)
    return out
