"""Demand: vehicle types, routes, flows and their departure times.

A :class:`Flow` emits vehicles on one route. Departures are generated from
exogenous noise keyed by ``(replication, flow, k)`` for the k-th vehicle of
the flow, so a vehicle's departure and behaviour never depend on the policy
or on other worlds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from twins.core import noise
from twins.core.errors import check


@dataclass
class VehicleType:
    """IDM parameters, SUMO names in comments. Defaults follow SUMO's IDM defaults."""

    id: str = "car"
    length: float = 5.0  # length
    min_gap: float = 2.5  # minGap (IDM s0)
    accel: float = 2.6  # accel (IDM a)
    decel: float = 4.5  # decel (IDM b, comfortable)
    max_speed: float = 50.0  # maxSpeed
    tau: float = 1.0  # tau (IDM T, time headway)
    delta: float = 4.0  # IDM acceleration exponent
    speed_factor: float = 1.0  # speedFactor mean: desired speed = factor * lane speed
    speed_dev: float = 0.1  # speedDev: std of the speed factor across drivers
    param_cv: float = 0.0  # coefficient of variation of accel and tau across drivers
    sigma: float = 0.5  # sigma: Krauss driver imperfection (dawdling) in [0, 1]; IDM ignores it, as SUMO does
    # carFollowModel as a SUMO file states it (None: unstated, SUMO's default Krauss); the twin runs one model for
    # every vehicle (TrafficScenario.car_following), chosen from these by scenarios.sumo
    car_following: str | None = None

    def validate(self) -> None:
        check(float(self.delta).is_integer() and 1 <= self.delta <= 15, f"vType[{self.id}].delta", self.delta,
              "an integer exponent from 1 to 15 (4 in the IDM literature)")
        for name in ("length", "accel", "decel", "max_speed", "tau", "delta", "speed_factor"):
            v = getattr(self, name)
            check(v > 0, f"vType[{self.id}].{name}", v, "a positive number")
        for name in ("min_gap", "speed_dev", "param_cv"):
            v = getattr(self, name)
            check(v >= 0, f"vType[{self.id}].{name}", v, "a number >= 0")
        check(0 <= self.sigma <= 1, f"vType[{self.id}].sigma", self.sigma, "a number in [0, 1] (SUMO's default 0.5)")


@dataclass
class Flow:
    """Vehicles on one route.

    ``kind``: ``poisson`` (random arrivals at ``rate`` veh/h, piecewise constant
    over ``profile``), ``periodic`` (evenly spaced, SUMO's vehsPerHour/period),
    ``bernoulli`` (one draw per second with probability ``rate``/3600, SUMO's
    probability), or ``fixed`` (explicit ``departures`` in seconds).
    ``profile`` is a list of ``(begin_s, end_s, veh_per_h)``; if empty,
    ``(begin, end, rate)`` is used.
    """

    id: str
    route: list[str]
    rate: float = 0.0  # veh/h
    begin: float = 0.0
    end: float = 3600.0
    kind: str = "poisson"
    vtype: str = "car"
    profile: list[tuple[float, float, float]] = field(default_factory=list)
    departures: list[float] = field(default_factory=list)
    number: int | None = None  # SUMO flow 'number': cap on the count
    group: str = ""  # origin zone / class label used for per-group outcomes
    # speed at insertion, m/s (SUMO's departSpeed; at most what the gap and the driver's desired speed allow);
    # None: as fast as that allows (SUMO's "max"), the twin's own scenarios; "avg": the lane's mean speed, SUMO
    # 1.28's default (kernels rule 3)
    depart_speed: float | Literal["avg"] | None = None
    # routed at insertion on the current travel times (scenario.routing=insertion), as SUMO routes a vehicle given
    # by origin and destination (<trip>, or a <flow> with from/to); ``route`` is then its free-flow route
    reroute: bool = False

    def segments(self) -> list[tuple[float, float, float]]:
        return list(self.profile) if self.profile else [(self.begin, self.end, self.rate)]

    def validate(self) -> None:
        check(self.kind in ("poisson", "periodic", "bernoulli", "fixed"), f"flow[{self.id}].kind", self.kind,
              "poisson, periodic, bernoulli or fixed")
        check(len(self.route) > 0, f"flow[{self.id}].route", self.route, "a non-empty list of edges")
        check(self.depart_speed is None or self.depart_speed == "avg"
              or (isinstance(self.depart_speed, (int, float)) and math.isfinite(self.depart_speed)
                  and self.depart_speed >= 0),
              f"flow[{self.id}].depart_speed", self.depart_speed,
              "a speed >= 0 m/s, None (as fast as safe) or \"avg\" (the lane's mean speed)")
        for b, e, r in self.segments():
            check(r >= 0, f"flow[{self.id}].rate", r, "a flow >= 0 veh/h")
            check(e >= b, f"flow[{self.id}].end", e, f">= begin ({b})")
        if self.kind == "bernoulli":
            for _, _, r in self.segments():
                check(r <= 3600, f"flow[{self.id}].probability", r / 3600, "a probability in [0, 1]")
        for t in self.departures:
            check(t >= 0, f"flow[{self.id}].depart", t, "a time >= 0")

    def expected_count(self) -> float:
        if self.kind == "fixed":
            return float(len(self.departures))
        n = sum(r * (e - b) / 3600.0 for b, e, r in self.segments())
        return min(n, self.number) if self.number is not None else n

    def capacity(self) -> int:
        """A bound on the count that no world exceeds (Poisson: mean + 10 sd + 20)."""
        if self.kind == "fixed":
            return len(self.departures)
        n = self.expected_count()
        if self.kind == "poisson":
            n = n + 10.0 * n**0.5 + 20.0
        elif self.kind == "periodic":
            n = n + 1
        cap = int(n) + 1
        return min(cap, self.number) if self.number is not None else cap


@dataclass
class Demand:
    vtypes: dict[str, VehicleType] = field(default_factory=lambda: {"car": VehicleType()})
    flows: list[Flow] = field(default_factory=list)

    def validate(self, edges=None) -> None:
        for vt in self.vtypes.values():
            vt.validate()
        for f in self.flows:
            f.validate()
            check(f.vtype in self.vtypes, f"flow[{f.id}].type", f.vtype, f"one of {sorted(self.vtypes)}")
            if edges is not None:
                for e in f.route:
                    check(e in edges, f"flow[{f.id}].route", e, "edges that exist in the network")

    def scaled(self, factor: float) -> "Demand":
        """The same demand with every rate multiplied (demand stress tests)."""
        flows = []
        for f in self.flows:
            g = Flow(**{**f.__dict__})
            g.rate = f.rate * factor
            g.profile = [(b, e, r * factor) for b, e, r in f.profile]
            flows.append(g)
        return Demand(dict(self.vtypes), flows)


DEMAND_VARIATIONS = ("none", "poisson")


def vary(demand: Demand, mode: str, *, begin: float = 0.0, end: float | None = None,
         interval_s: float = 900.0) -> Demand:
    """``demand`` with the exogenous variation ``mode`` (``scenario.demand_variation``).

    ``none``: unchanged; ``fixed`` and ``periodic`` flows depart the same way in every replication,
    as SUMO runs a route file whatever its ``--seed`` (which varies only the drivers).

    ``poisson``: every ``fixed`` and ``periodic`` flow becomes a ``poisson`` flow at the file's rate,
    so each replication draws its own departures (:func:`departure_times`: keyed by
    ``(seed, replication, DEMAND, flow index, k)``, so the arms of a replication share them and a
    world's draws do not depend on its batch). The rate of a ``fixed`` flow (one route and vType of
    the file's vehicles and trips) is its count in each interval ``[begin + j·interval_s, ...)``,
    ``end`` splitting the interval it falls in, spread evenly over that interval: the expected count
    per route and interval is the file's, and empty intervals stay empty. A ``periodic`` flow keeps
    its rate and window (capped by ``number``: the window is cut where the expected count reaches it,
    and the count itself is no longer capped); its expected count is ``rate × window``, which the
    periodic count floors. ``poisson`` and ``bernoulli`` flows already vary and are kept as they
    are, with their draws: flow indices do not change.
    """
    check(mode in DEMAND_VARIATIONS, "scenario.demand_variation", mode, " or ".join(DEMAND_VARIATIONS))
    check(0 < interval_s < math.inf, "scenario.demand_interval_s", interval_s, "a positive interval in seconds")
    if mode == "none":
        return demand
    flows = []
    for f in demand.flows:
        if f.kind == "fixed" and f.departures:
            segs = _binned(f.departures, float(begin), end, float(interval_s))
        elif f.kind == "periodic":
            segs = [s for s in f.segments() if s[2] > 0 and s[1] > s[0]]
            if f.number is not None:
                segs = _first(segs, f.number)
        else:
            flows.append(f)
            continue
        g = Flow(**{**f.__dict__})
        g.kind, g.departures, g.number, g.profile = "poisson", [], None, segs
        if segs:
            g.begin, g.end = segs[0][0], segs[-1][1]
            g.rate = 3600.0 * g.expected_count() / (g.end - g.begin) if g.end > g.begin else 0.0
        else:  # nothing to draw (a periodic flow of rate 0, or number 0)
            g.profile, g.rate = [], 0.0
        flows.append(g)
    return Demand(dict(demand.vtypes), flows)


def _binned(departures: list[float], begin: float, end: float | None, width: float) -> list[tuple[float, float, float]]:
    """Piecewise-constant rate (veh/h) of ``departures``: their count per interval of ``width`` from ``begin``."""
    counts: dict[tuple[float, float], int] = {}
    for t in departures:
        b = begin + math.floor((t - begin) / width) * width
        e = b + width
        if end is not None and b < end < e:  # the run stops at end: count before and after it apart
            b, e = (b, end) if t < end else (end, e)
        counts[(b, e)] = counts.get((b, e), 0) + 1
    return [(b, e, n * 3600.0 / (e - b)) for (b, e), n in sorted(counts.items())]


def _first(segs: list[tuple[float, float, float]], number: int) -> list[tuple[float, float, float]]:
    """``segs`` cut where the expected count reaches ``number`` (SUMO's flow ``number``)."""
    out, acc = [], 0.0
    for b, e, r in segs:
        m = r * (e - b) / 3600.0
        if acc + m >= number:
            if number > acc:
                out.append((b, b + (number - acc) * 3600.0 / r, r))
            break
        out.append((b, e, r))
        acc += m
    return out


def departure_times(flow: Flow, flow_index: int, seed: int, replications: torch.Tensor) -> torch.Tensor:
    """Departure times ``[W, capacity]`` (float64 seconds, +inf for no vehicle).

    Poisson: k-th arrival = Λ⁻¹(E_1 + ... + E_k) with E_i ~ Exp(1) keyed by
    ``(replication, flow, i)`` and Λ the cumulative rate of the profile.
    """
    W = replications.numel()
    cap = flow.capacity()
    k = torch.arange(cap, dtype=torch.int64)
    if cap == 0:
        return torch.empty(W, 0, dtype=torch.float64)
    if flow.kind == "fixed":
        t = torch.tensor(sorted(flow.departures), dtype=torch.float64)
        return t.expand(W, cap).clone()
    segs = flow.segments()
    if flow.kind == "bernoulli":
        # one draw per whole second of each segment, keyed by (flow, second)
        out = []
        for b, e, r in segs:
            sec = torch.arange(int(b), int(e), dtype=torch.int64)
            u = noise.uniform(seed, replications[:, None], noise.Stream.DEMAND, flow_index, sec[None, :])
            hit = u < r / 3600.0
            times = torch.where(hit, sec[None, :].to(torch.float64), torch.inf)
            out.append(times)
        times = torch.sort(torch.cat(out, dim=1), dim=1).values if out else torch.empty(W, 0)
        times = times[:, :cap]
        return torch.nn.functional.pad(times, (0, cap - times.shape[1]), value=torch.inf)
    if flow.kind == "periodic":
        # evenly spaced within each segment, first vehicle at the segment's begin (SUMO's rule)
        out = []
        for b, e, r in segs:
            if r <= 0:
                continue
            n = int((e - b) * r / 3600.0 + 1e-9)
            out.append(b + torch.arange(n, dtype=torch.float64) * 3600.0 / r)
        t = torch.cat(out) if out else torch.empty(0, dtype=torch.float64)
        t = t[:cap]
        t = torch.nn.functional.pad(t, (0, cap - t.numel()), value=torch.inf)
        return t.expand(W, cap).clone()
    # poisson: invert the piecewise-linear cumulative rate
    e = noise.exponential(seed, replications[:, None], noise.Stream.DEMAND, flow_index, 0, k[None, :])
    cum = torch.cumsum(e, dim=1)  # in units of expected vehicles
    bounds = torch.tensor([[b, en, r / 3600.0] for b, en, r in segs], dtype=torch.float64)
    seg_mass = (bounds[:, 1] - bounds[:, 0]) * bounds[:, 2]
    cum_mass = torch.cumsum(seg_mass, 0)
    start_mass = cum_mass - seg_mass
    idx = torch.searchsorted(cum_mass, cum.contiguous(), right=False).clamp(max=len(segs) - 1)
    rate = bounds[idx, 2]
    t = bounds[idx, 0] + (cum - start_mass[idx]) / torch.where(rate > 0, rate, 1.0)
    t = torch.where((cum <= cum_mass[-1]) & (rate > 0), t, torch.inf)
    if flow.number is not None:
        t[:, flow.number:] = torch.inf
    return t
