"""SUMO scenarios: ``scenario=sumo scenario.sumocfg=PATH`` (or ``scenario.net=... scenario.routes=...``).

The schema is the Hydra structured config of the ``sumo`` scenario kind;
:func:`load_scenario` turns a config section into the twin's network, demand
and time window. The builder that makes a twin of them is registered with the
traffic scenarios.

Demand variation (``scenario.demand_variation``, :func:`twins.traffic.demand.vary`):
a route file's vehicles and trips depart at the same times in every SUMO run
(``--seed`` varies only the drivers' speed factors), and so they do in every
replication with ``none``. ``poisson`` re-draws each route's vehicles (and each
``vehsPerHour``/``period`` flow) per replication as a Poisson process at the
file's rate, per route and ``demand_interval_s`` interval, so held-out
replications differ in their demand (causal contract item 6) while the arms of
one replication stay paired. ``scenario=sumo`` (``conf/scenario/sumo.yaml``)
runs ``poisson``; the schema's own default is ``none``, so code that loads a
``SumoScenario`` directly (side-by-side comparisons with SUMO on the same file,
benchmarks, tests) gets the file's departures as SUMO runs them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from twins.core.errors import ConfigError, check, suggest
from twins.traffic.demand import DEMAND_VARIATIONS, Demand, Flow, vary
from twins.traffic.network import RoadNetwork


@dataclass
class SumoScenario:
    kind: str = "sumo"
    name: str = "sumo"
    sumocfg: str = ""  # a .sumocfg; its net-file, route-files, additional-files (tlLogic) and begin/end are used
    net: str = ""  # a .net.xml (overrides the .sumocfg's net-file, or is used alone)
    routes: str = ""  # route files, comma-separated (override the .sumocfg's route-files)
    begin: Optional[float] = None  # seconds of SUMO time; default: the .sumocfg's begin (else 0)
    end: Optional[float] = None  # default: the .sumocfg's end (else begin + horizon_s)
    demand_scale: float = 1.0  # multiply every flow (given vehicles are thinned or repeated deterministically)
    # none | poisson (see the module docstring); none here, poisson in conf/scenario/sumo.yaml
    demand_variation: str = "none"
    # poisson: the file's rate per route is its count per interval (scenario=sumo: 60 s, which keeps the files'
    # minute-scale peaks; conf/scenario/sumo.yaml)
    demand_interval_s: float = 900.0
    # IDM | Krauss; null: as the route files' vTypes state (carFollowModel; unstated is SUMO's default, Krauss)
    car_following: Optional[str] = None
    # kernels rule 11: vehicles change lanes along an edge (strategic, speed gain, cooperation), as SUMO's always do;
    # false: a vehicle keeps the lane it chose at the junction
    lane_changing: bool = True
    # kernels rule 12: a vehicle standing at the front of its lane longer than this (s) is teleported along its
    # route, as SUMO does to end gridlocks; null: the .sumocfg's time-to-teleport, else SUMO's 300 s; <= 0: never
    time_to_teleport_s: Optional[float] = None
    # departSpeed of the vehicles whose route file states none (SUMO's --default.departspeed): 0, avg (the lane's
    # mean speed), max (desired, speedLimit; random and last are read as max) or a speed; null: the .sumocfg's
    # default.departspeed, else SUMO 1.28's default, avg
    default_depart_speed: Optional[str] = None
    # insertion: trips (<trip>, <flow> with from/to) are routed when they depart on the world's current travel
    # times, as SUMO routes them (twins.traffic.routing); static: on free-flow times, once
    routing: str = "insertion"
    # programs (the file's signal programs) or module:ClassName, a twins.traffic.signals.SignalControl subclass
    # stepped after them each step (twins.traffic.signals)
    signal_control: str = "programs"
    # per-origin outcomes (groups.parquet, the equity gate): trips grouped by the edge they enter the network on;
    # entries expected to load fewer trips than this over [begin, end] are pooled into one group (OTHER_ENTRIES)
    origin_min_trips: float = 50.0
    # file: the route files' demand | calibrated: each replication draws a member of the ensemble that
    # python -m twins calibrate wrote beside scenario.sumocfg (its calibrated.sumocfg; scenarios/calibrated_demand.py)
    demand: str = "file"


def abs_path(p: str) -> str:
    """``p`` as an absolute path: relative to the directory the command was started in (Hydra's original
    working directory during a Hydra run); "" stays ""."""
    if not p:
        return p
    try:
        from hydra.utils import to_absolute_path

        return to_absolute_path(p)
    except Exception:  # noqa: BLE001  (no Hydra run in progress)
        return str(Path(p).expanduser().resolve())


#: the origin group of the trips whose entry edge loads fewer than ``origin_min_trips``
OTHER_ENTRIES = "other_entries"


def group_by_entry(demand: Demand, begin: float = 0.0, end: Optional[float] = None,
                   min_trips: float = 50.0) -> Demand:
    """``demand`` with each flow's ``group`` (its origin, for per-group outcomes and the equity rules) set to the
    edge its route enters the network on, where the route file names none. SUMO route files name no origin zones:
    without this every route (often every single trip) would be its own origin group, too small for an effect to
    mean anything (one vehicle's delay decides it). Entry edges expected to load fewer than ``min_trips`` trips
    within ``[begin, end]`` are pooled into one group, :data:`OTHER_ENTRIES` (``min_trips=0``: none pooled)."""
    check(isinstance(min_trips, (int, float)) and 0 <= min_trips < math.inf, "scenario.origin_min_trips", min_trips,
          "a number of trips >= 0")

    def count(f: Flow) -> float:
        if f.kind == "fixed":
            return float(sum(1 for t in f.departures if t >= begin and (end is None or t < end)))
        return f.expected_count()

    per_entry: dict[str, float] = {}
    for f in demand.flows:
        if not f.group:
            per_entry[f.route[0]] = per_entry.get(f.route[0], 0.0) + count(f)
    flows = []
    for f in demand.flows:
        if not f.group:
            f = Flow(**{**f.__dict__})
            f.group = f.route[0] if per_entry[f.route[0]] >= min_trips else OTHER_ENTRIES
        flows.append(f)
    return Demand(dict(demand.vtypes), flows)


def scale_demand(demand: Demand, factor: float) -> Demand:
    """``demand`` with every flow scaled by ``factor``.

    Rates are multiplied; the n-th given vehicle (all ``fixed`` flows together,
    in departure order) is repeated ``floor((n+1)f) - floor(nf)`` times, so the
    total becomes ``floor(N f)``, spread evenly over time (deterministic).
    """
    check(factor >= 0 and math.isfinite(factor), "scenario.demand_scale", factor, "a number >= 0")
    if factor == 1.0:
        return demand
    # given vehicles: thin/repeat over all of them in departure order, so the total is floor(N * factor)
    fixed = sorted((t, i, k) for i, f in enumerate(demand.flows) if f.kind == "fixed"
                   for k, t in enumerate(f.departures))
    copies: dict[int, list[float]] = {}
    for n, (t, i, _) in enumerate(fixed):
        c = math.floor((n + 1) * factor + 1e-9) - math.floor(n * factor + 1e-9)
        copies.setdefault(i, []).extend([t] * c)
    flows = []
    for i, f in enumerate(demand.flows):
        g = Flow(**{**f.__dict__})
        if f.kind == "fixed":
            if not copies.get(i):
                continue
            g.departures = sorted(copies[i])
            g.begin, g.end = g.departures[0], g.departures[-1]
        else:
            g.rate = f.rate * factor
            g.profile = [(b, e, r * factor) for b, e, r in f.profile]
            if f.number is not None:
                g.number = int(round(f.number * factor))
        flows.append(g)
    return Demand(dict(demand.vtypes), flows)


def _non_negative(v: str) -> bool:
    try:
        return math.isfinite(float(v)) and float(v) >= 0
    except ValueError:
        return False


def load_scenario(cfg) -> tuple[RoadNetwork, Demand, float, Optional[float]]:
    """``(network, demand, begin, end)`` of a ``scenario: sumo`` config section.

    ``end`` is None when neither the config nor the .sumocfg sets one (the
    caller then uses ``begin + horizon_s``).
    """
    from twins.traffic import sumo

    get = (lambda k, d=None: cfg.get(k, d)) if hasattr(cfg, "get") else (lambda k, d=None: getattr(cfg, k, d))
    # checked before any file is read
    variation, interval = get("demand_variation", "none"), get("demand_interval_s", 900.0)
    check(variation in DEMAND_VARIATIONS, "scenario.demand_variation", variation,
          " or ".join(DEMAND_VARIATIONS), suggest(str(variation), DEMAND_VARIATIONS))
    check(isinstance(interval, (int, float)) and 0 < interval < math.inf, "scenario.demand_interval_s", interval,
          "a positive interval in seconds")
    dspeed = get("default_depart_speed")
    dspeed = None if dspeed is None else str(dspeed).strip()
    names = (sumo.DEPART_AVG, *sumo.DEPART_MAX, *sumo.DEPART_AS_MAX)  # SUMO's, as the route import reads them
    check(dspeed is None or dspeed in names or _non_negative(dspeed), "scenario.default_depart_speed", dspeed,
          "0, avg (the lane's mean speed, SUMO 1.28's default), max, desired, speedLimit, random or last (both read "
          "as max) or a speed >= 0 m/s",
          suggest(str(dspeed), names))
    sumocfg, net = abs_path(get("sumocfg", "") or ""), abs_path(get("net", "") or "")
    routes = get("routes", "") or ""
    route_list = [abs_path(r.strip()) for r in str(routes).split(",") if r.strip()]
    if sumocfg:
        sc = sumo.load_sumocfg(sumocfg, net=net or None, routes=route_list or None, default_depart_speed=dspeed)
        network, demand, begin, end = sc.network, sc.demand, sc.begin, sc.end
    elif net:
        network = sumo.load_net(net)
        begin, end = 0.0, None
        b = get("begin")
        demand = sumo.load_routes(route_list, network, begin=float(b) if b is not None else 0.0,
                                  default_depart_speed=dspeed or sumo.DEFAULT_DEPART_SPEED) \
            if route_list else Demand(flows=[])
    else:
        raise ConfigError("scenario.sumocfg", sumocfg, "a path to a .sumocfg (or scenario.net=NET.net.xml "
                          "with scenario.routes=ROUTES.rou.xml)", "Example: scenario=sumo scenario.sumocfg=my.sumocfg")
    if get("begin") is not None:
        begin = float(get("begin"))
    if get("end") is not None:
        end = float(get("end"))
    if end is not None:
        check(end > begin, "scenario.end", end, f"a time after begin ({begin:g} s)")
    if (get("demand", "file") or "file") != "file":  # the ensemble of a calibration (scenarios/calibrated_demand.py)
        from scenarios import calibrated_demand as ensemble

        check(get("demand") in ensemble.DEMAND_MODES, "scenario.demand", get("demand"),
              " or ".join(ensemble.DEMAND_MODES), suggest(str(get("demand")), ensemble.DEMAND_MODES))
        demand = ensemble.demand(sumocfg, demand)
    demand = group_by_entry(demand, begin, end, get("origin_min_trips", 50.0))
    # vary first: demand_scale then multiplies the Poisson rates exactly (no thinning of given vehicles)
    demand = vary(demand, variation, begin=begin, end=end, interval_s=float(interval))
    demand = scale_demand(demand, float(get("demand_scale", 1.0) or 0.0) if get("demand_scale", 1.0) is not None
                          else 1.0)
    return network, demand, begin, end


def fringe_demand(net: RoadNetwork, rate_veh_h: float, horizon: float, turn_share: float = 0.2,
                  left_share: float = 0.0) -> Demand:
    """Poisson demand on a grid-like network: from every fringe entry (a junction of degree <= 2),
    ``1 - turn_share - left_share`` straight across, ``turn_share`` to the nearest exit reached with right
    turns only and ``left_share`` to the nearest exit reached with left turns only (permissive lefts
    yield to the oncoming traffic: kernels rule 10). Used to compare the two simulators on generated grids."""
    import numpy as np

    from twins.traffic.demand import VehicleType

    pos = {j.id: np.array([j.x, j.y]) for j in net.junctions.values()}
    degree = {j: 0 for j in net.junctions}
    for e in net.edges.values():
        degree[e.from_node] += 1
        degree[e.to_node] += 1
    fringe = {j for j, d in degree.items() if d <= 2}
    sources = sorted((e for e in net.edges.values() if e.from_node in fringe), key=lambda e: e.id)
    sinks = sorted((e for e in net.edges.values() if e.to_node in fringe), key=lambda e: e.id)
    direction = {(c.from_edge, c.to_edge): c.direction for c in net.connections}
    g = net.graph()
    flows = []
    for s in sources:
        a = pos[s.from_node]
        h = (pos[s.to_node] - a) / np.linalg.norm(pos[s.to_node] - a)

        def off_axis(t):
            p = pos[t.to_node] - a
            return abs(p[0] * h[1] - p[1] * h[0]), -(p @ h)

        straight = min(sinks, key=off_axis)
        right, left = [], []
        for t in sinks:
            if t is straight or t.to_node == s.from_node:
                continue
            route = net.shortest_route(s.id, t.id, g)
            turns = "".join(direction[(x, y)] for x, y in zip(route, route[1:]))
            near = np.linalg.norm(pos[t.to_node] - pos[straight.to_node])
            if "l" not in turns and "r" in turns:
                right.append((near, t.id, route))
            if "r" not in turns and "l" in turns:
                left.append((near, t.id, route))
        targets = [(net.shortest_route(s.id, straight.id, g), 1.0)]
        for found, share in ((right, turn_share), (left, left_share)):
            if found and share > 0:
                targets.append((min(found)[2], share))
                targets[0] = (targets[0][0], targets[0][1] - share)
        for route, share in targets:
            flows.append(Flow(f"{route[0]}__{route[-1]}", route, rate_veh_h * share, 0.0, horizon, "poisson", "car"))
    return Demand({"car": VehicleType(id="car")}, flows)


def car_following(setting: Optional[str], demand: Demand) -> str:
    """The one car-following model the twin runs: ``scenario.car_following`` when set, else the model the route
    files' vTypes of the loaded flows state (``carFollowModel``; unstated is SUMO's default, Krauss). Several
    models, or one the twin does not run, need the setting."""
    from twins.traffic.sumo import CAR_FOLLOWING

    if setting is not None:
        check(setting in CAR_FOLLOWING, "scenario.car_following", setting,
              " or ".join(CAR_FOLLOWING) + " (null: as the route files' vTypes state)")
        return setting
    used = {f.vtype for f in demand.flows}
    by_model: dict[str, list[str]] = {}
    for tid in sorted(used):
        by_model.setdefault(demand.vtypes[tid].car_following or "Krauss", []).append(tid)
    if len(by_model) <= 1 and set(by_model) <= set(CAR_FOLLOWING):
        return next(iter(by_model), "Krauss")
    listed = "; ".join(f"{m}: {', '.join(t[:3])}{' ...' if len(t) > 3 else ''}" for m, t in sorted(by_model.items()))
    raise ConfigError("scenario.car_following", None, " or ".join(CAR_FOLLOWING),
                      f"The route files' vTypes state {listed}; the twin runs one model the twin knows for every "
                      f"vehicle: set scenario.car_following=IDM or Krauss.")


def _routing(value) -> str:
    check(value in ("static", "insertion"), "scenario.routing", value,
          "static (every trip on its free-flow route) or insertion (routed when it departs, as SUMO)")
    return value


def time_to_teleport(scfg) -> float:
    """Kernels rule 12's time (s): ``scenario.time_to_teleport_s``, else the .sumocfg's ``time-to-teleport``,
    else SUMO's default (300 s)."""
    from twins.traffic import kernels, sumo

    v = scfg.get("time_to_teleport_s", None)
    field_ = "scenario.time_to_teleport_s"
    if v is None and scfg.get("sumocfg"):
        opts, _ = sumo.read_sumocfg(abs_path(scfg.get("sumocfg")))
        v, field_ = opts.get("time-to-teleport"), f"time-to-teleport of {scfg.get('sumocfg')}"
    if v is None:
        return kernels.TIME_TO_TELEPORT_S
    try:
        v = sumo.sumo_time(v, field_) if isinstance(v, str) else float(v)
    except (TypeError, ValueError):
        v = math.nan
    check(math.isfinite(v), field_, v, "a number of seconds (<= 0: never teleport, as SUMO's -1)")
    return v


def build_sumo_twin(cfg, worlds, device, dtype):
    """The traffic twin of a SUMO scenario; it runs from SUMO's begin to its end when the
    .sumocfg (or the config) sets one, else for ``horizon_s``."""
    from scenarios.traffic import twin_kwargs
    from twins.traffic.model import TrafficScenario, TrafficTwin

    network, demand, begin, end = load_scenario(cfg.scenario)
    horizon = float(end - begin) if end is not None else float(cfg.horizon_s)
    n = round(horizon / cfg.dt_s)
    check(n >= 1, "scenario.end", end, f"a time at least one step (dt_s={cfg.dt_s}) after begin={begin:g}")
    name = cfg.scenario.get("name") or "sumo"
    scen = TrafficScenario(network, demand, name, begin=begin,
                           car_following=car_following(cfg.scenario.get("car_following"), demand),
                           lane_changing=bool(cfg.scenario.get("lane_changing", True)),
                           routing=_routing(cfg.scenario.get("routing", "insertion")),
                           time_to_teleport_s=time_to_teleport(cfg.scenario))
    if (cfg.scenario.get("demand", "file") or "file") == "calibrated":  # each replication: a member of the ensemble
        from scenarios import calibrated_demand as ensemble

        ret = ensemble.retention(abs_path(cfg.scenario.get("sumocfg", "") or ""), demand, worlds).to(
            worlds.replication.device)
        worlds.params["flow_retention"] = ret
        worlds.params["calibrated_retention"] = ret.clone()
    return TrafficTwin(scen, worlds, horizon=n * cfg.dt_s, device=device, dtype=dtype, **twin_kwargs(cfg))


from . import scenario as _register  # noqa: E402

_register("sumo", SumoScenario)(build_sumo_twin)
