"""Traffic scenarios: generated grids, corridors, junctions and rings.

One generator builds every signalized layout: a ``rows × cols`` lattice of
4-arm signalized junctions with fringe nodes where vehicles enter and leave.
``traffic`` is a 4×4 grid, ``arterial`` a 1×5 corridor with side streets,
``junction`` a single 4-arm intersection. ``ring`` is a single-lane loop.
Any of them may carry bus lines (``bus_lines``, :mod:`twins.traffic.transit`);
``conf/scenario/bus_corridor.yaml`` is the arterial with light traffic and two lines.

Length: the schemas and builders of the generated layouts (lattice, corridor, junction, ring) with their
checks; one reason to change: what a generated traffic scenario may be.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, List, Optional

import torch
from omegaconf import MISSING

from twins.core.errors import ConfigError, check
from twins.traffic.demand import Demand, Flow, VehicleType
from twins.traffic.model import TrafficScenario, TrafficTwin
from twins.traffic.network import Connection, Edge, Junction, Lane, Phase, RoadNetwork, SignalProgram
from twins.traffic.transit import BusLine, BusStop

from . import scenario


# ---------------------------------------------------------------------------------------------
# schemas
@dataclass
class VehicleConfig:
    length: float = 5.0
    min_gap: float = 2.5
    accel: float = 2.6
    decel: float = 4.5
    max_speed: float = 50.0
    tau: float = 1.0
    delta: float = 4.0
    speed_factor: float = 1.0
    speed_dev: float = 0.1
    param_cv: float = 0.1
    sigma: float = 0.5  # Krauss driver imperfection (dawdling, SUMO's default); IDM ignores it, as SUMO does


@dataclass
class SignalConfig:
    cycle_s: float = 60.0
    yellow_s: float = 3.0
    all_red_s: float = 2.0
    split_ns: float = 0.5  # share of the effective green given to the north–south phase
    offset_s: float = 0.0  # offset of the first junction
    offset_step_s: float = 0.0  # added per junction along each row (a green wave when > 0)
    min_green_s: float = 7.0  # shortest green the generator accepts (pedestrian crossing time)


@dataclass
class BusStopConfig:
    edge: str = MISSING  # edge id; the stop is on its rightmost lane
    pos_m: float = MISSING  # where the bus front halts, metres from the start of the edge
    pax_per_h: float = 60.0  # Poisson passenger arrivals
    name: Optional[str] = None  # null: s0, s1, ... in route order


def _bus_vehicle() -> VehicleConfig:
    """SUMO's default bus (vClass bus): 12 m, accel 1.2 m/s², decel 4 m/s², 85 km/h."""
    return VehicleConfig(length=12.0, min_gap=2.5, accel=1.2, decel=4.0, max_speed=85 / 3.6, tau=1.0, delta=4.0,
                         speed_factor=1.0, speed_dev=0.05, param_cv=0.0)


@dataclass
class BusLineConfig:
    """A bus line: a route, its stops in route order, a timetable and the TCQSM dwell model."""

    name: str = MISSING
    route: Optional[List[str]] = None  # edge ids; null: the free-flow fastest route from_edge -> to_edge
    from_edge: Optional[str] = None
    to_edge: Optional[str] = None
    stops: List[BusStopConfig] = field(default_factory=list)
    headway_s: float = 600.0  # a bus every headway_s seconds
    offset_s: float = 0.0  # the first departure
    end_s: Optional[float] = None  # no departure at or after; null: the horizon
    capacity: int = 80  # passengers on board
    dwell_base_s: float = 4.0  # doors open/close
    board_s_per_pax: float = 3.0
    alight_s_per_pax: float = 1.5
    vehicle: VehicleConfig = field(default_factory=_bus_vehicle)


@dataclass
class TrafficScenarioBase:
    kind: str = "grid"
    name: str = "traffic"
    speed_mps: float = 13.89  # 50 km/h
    vehicle: VehicleConfig = field(default_factory=VehicleConfig)
    signals: SignalConfig = field(default_factory=SignalConfig)
    demand_scale: float = 1.0
    bus_lines: List[BusLineConfig] = field(default_factory=list)
    car_following: str = "IDM"  # IDM | Krauss (SUMO's default model, with dawdling sigma): kernels rule 9
    lane_changing: bool = False  # kernels rule 11: lane changes along edges (strategic, speed gain, cooperation)
    # kernels rule 12: a vehicle standing at the front of its lane longer than this (s) is teleported along its
    # route, as SUMO's --time-to-teleport (300 s) ends gridlocks; null or <= 0: never
    time_to_teleport_s: Optional[float] = 300.0
    # programs (the scenario's signal programs) or module:ClassName, a twins.traffic.signals.SignalControl
    # subclass stepped after them each step (it may replace any link's code)
    signal_control: str = "programs"


@dataclass
class GridScenario(TrafficScenarioBase):
    """A rows × cols lattice of signalized junctions (the default ``traffic`` scenario)."""

    kind: str = "grid"
    name: str = "traffic"
    rows: int = 4
    cols: int = 4
    block_m: float = 200.0
    approach_m: float = 200.0
    lanes: int = 2  # lanes per direction on every street
    lanes_ns: int = 0  # 0: same as lanes
    entry_flow_veh_h: float = 300.0  # per entry at the peak
    off_peak_factor: float = 0.6
    peak_begin_s: float = 900.0
    peak_end_s: float = 2700.0
    straight_share: float = 0.6  # share of each entry's demand going straight across
    side_flow_factor: float = 1.0  # multiplies the entry flow on north/south streets


@dataclass
class ArterialScenario(GridScenario):
    """A corridor of signalized junctions with one-lane side streets."""

    kind: str = "arterial"
    name: str = "arterial"
    rows: int = 1
    cols: int = 5
    block_m: float = 300.0
    approach_m: float = 300.0
    lanes: int = 2
    lanes_ns: int = 1
    entry_flow_veh_h: float = 700.0
    side_flow_factor: float = 0.3
    straight_share: float = 0.8


@dataclass
class JunctionScenario(TrafficScenarioBase):
    """An isolated 4-arm signalized intersection with approach flows and turning shares."""

    kind: str = "junction"
    name: str = "junction"
    approach_m: float = 300.0
    lanes: int = 2
    flows_veh_h: dict[str, float] = field(default_factory=lambda: {"N": 500.0, "E": 400.0, "S": 500.0, "W": 400.0})
    turning: dict[str, float] = field(default_factory=lambda: {"left": 0.1, "straight": 0.8, "right": 0.1})
    arrivals: str = "poisson"  # poisson | periodic


@dataclass
class RingScenario(TrafficScenarioBase):
    """A single-lane ring road without signals (stop-and-go waves, Sugiyama et al. 2008)."""

    kind: str = "ring"
    name: str = "ring"
    circumference_m: float = 230.0
    # 11 edges of 20.9 m, two vehicles entering each: all 22 are on the ring by t = 1 s, evenly spaced, as
    # Sugiyama's drivers started (with 4 entries the later ones waited minutes for a gap in the circulating
    # traffic). Much shorter edges would be wrong: a front vehicle looks past its lane's end one edge ahead only
    segments: int = 11
    vehicles: int = 22
    speed_mps: float = 13.89
    # Sugiyama's waves grow from driver imperfection: SUMO's Krauss with its dawdling (sigma) by default;
    # a deterministic IDM platoon at this density relaxes to a jam-free state
    car_following: str = "Krauss"
    # SUMO's passenger car; its drivers dawdle more than SUMO's default (sigma 0.5, whose jam travels back at
    # 25 km/h): sigma 0.8 is fitted to the wave speed Sugiyama report, about 20 km/h, and SUMO with the same
    # vType agrees (benchmarks/bench_ring_waves.py); every driver at the limit (speed_dev 0), as instructed
    vehicle: VehicleConfig = field(default_factory=lambda: VehicleConfig(speed_dev=0.0, sigma=0.8))


# ---------------------------------------------------------------------------------------------
# validation
def _validate_common(s) -> None:
    check(s.speed_mps > 0, "scenario.speed_mps", s.speed_mps, "a positive speed in m/s")
    check(s.demand_scale >= 0, "scenario.demand_scale", s.demand_scale, "a factor >= 0")
    check(s.car_following in ("IDM", "Krauss"), "scenario.car_following", s.car_following,
          "IDM or Krauss (SUMO's default)")
    check(0 <= s.vehicle.sigma <= 1, "scenario.vehicle.sigma", s.vehicle.sigma, "a number in [0, 1] (SUMO: 0.5)")
    v = s.vehicle
    for name in ("length", "accel", "decel", "max_speed", "tau", "delta", "speed_factor"):
        check(getattr(v, name) > 0, f"scenario.vehicle.{name}", getattr(v, name), "a positive number")
    for name in ("min_gap", "speed_dev", "param_cv"):
        check(getattr(v, name) >= 0, f"scenario.vehicle.{name}", getattr(v, name), "a number >= 0")


def _validate_signals(sig) -> None:
    check(sig.yellow_s >= 0, "scenario.signals.yellow_s", sig.yellow_s, ">= 0 seconds")
    check(sig.all_red_s >= 0, "scenario.signals.all_red_s", sig.all_red_s, ">= 0 seconds")
    check(0 < sig.split_ns < 1, "scenario.signals.split_ns", sig.split_ns, "a share strictly between 0 and 1")
    lost = 2 * (sig.yellow_s + sig.all_red_s)
    need = lost + 2 * sig.min_green_s
    check(sig.cycle_s >= need, "scenario.signals.cycle_s", sig.cycle_s,
          f">= {need:g} s (two greens of min_green_s={sig.min_green_s:g} plus {lost:g} s lost time)")


def vehicle_type(v, id: str = "car") -> VehicleType:
    return VehicleType(id=id, length=v.length, min_gap=v.min_gap, accel=v.accel, decel=v.decel,
                       max_speed=v.max_speed, tau=v.tau, delta=v.delta, speed_factor=v.speed_factor,
                       speed_dev=v.speed_dev, param_cv=v.param_cv, sigma=v.sigma)


# ---------------------------------------------------------------------------------------------
# geometry
_DIRS = {"N": (0, 1), "E": (1, 0), "S": (0, -1), "W": (-1, 0)}


def _rot_right(h):
    return (h[1], -h[0])


def _rot_left(h):
    return (-h[1], h[0])


def signalized_lattice(rows: int, cols: int, block_m: float, approach_m: float, lanes_ew: int, lanes_ns: int,
                       speed: float, sig: SignalConfig, name: str = "grid") -> RoadNetwork:
    """Junctions ``J{r}_{c}`` (row 0 north), fringe nodes ``N{c} S{c} W{r} E{r}``, two-way streets."""
    check(rows >= 1, "scenario.rows", rows, "an integer >= 1")
    check(cols >= 1, "scenario.cols", cols, "an integer >= 1")
    check(block_m > 0, "scenario.block_m", block_m, "a positive length in metres")
    check(approach_m > 0, "scenario.approach_m", approach_m, "a positive length in metres")
    check(lanes_ew >= 1, "scenario.lanes", lanes_ew, "an integer >= 1")
    check(lanes_ns >= 1, "scenario.lanes_ns", lanes_ns, "an integer >= 1 (0 means same as lanes)")
    _validate_signals(sig)
    net = RoadNetwork(name=name)
    pos = {}
    for r in range(rows):
        for c in range(cols):
            jid = f"J{r}_{c}"
            pos[jid] = (c * block_m, -r * block_m)
            net.add_junction(Junction(jid, *pos[jid], kind="traffic_light", tl=jid))
    for c in range(cols):
        pos[f"N{c}"] = (c * block_m, approach_m)
        pos[f"S{c}"] = (c * block_m, -(rows - 1) * block_m - approach_m)
    for r in range(rows):
        pos[f"W{r}"] = (-approach_m, -r * block_m)
        pos[f"E{r}"] = ((cols - 1) * block_m + approach_m, -r * block_m)
    for k, p in pos.items():
        if k not in net.junctions:
            net.add_junction(Junction(k, *p, kind="dead_end"))

    def add_road(a, b):
        (x1, y1), (x2, y2) = pos[a], pos[b]
        length = math.hypot(x2 - x1, y2 - y1)
        n = lanes_ns if abs(x2 - x1) < 1e-9 else lanes_ew
        eid = f"{a}_{b}"
        net.add_edge(Edge(eid, a, b, [Lane(f"{eid}_{i}", i, length, speed, [(x1, y1), (x2, y2)]) for i in range(n)]))

    def link(a, b):
        add_road(a, b)
        add_road(b, a)

    for r in range(rows):
        for c in range(cols):
            j = f"J{r}_{c}"
            if c + 1 < cols:
                link(j, f"J{r}_{c + 1}")
            if r + 1 < rows:
                link(j, f"J{r + 1}_{c}")
        link(f"W{r}", f"J{r}_0")
        link(f"J{r}_{cols - 1}", f"E{r}")
    for c in range(cols):
        link(f"N{c}", f"J0_{c}")
        link(f"J{rows - 1}_{c}", f"S{c}")

    incoming = {}
    outgoing = {}
    for e in net.edges.values():
        incoming.setdefault(e.to_node, []).append(e)
        outgoing.setdefault(e.from_node, []).append(e)

    def heading(e):
        (x1, y1), (x2, y2) = pos[e.from_node], pos[e.to_node]
        d = math.hypot(x2 - x1, y2 - y1)
        return (round((x2 - x1) / d), round((y2 - y1) / d))

    g_total = sig.cycle_s - 2 * (sig.yellow_s + sig.all_red_s)
    g_ns = g_total * sig.split_ns
    g_ew = g_total - g_ns
    for r in range(rows):
        for c in range(cols):
            j = f"J{r}_{c}"
            ins = sorted(incoming[j], key=lambda e: "NESW".index(_side(pos[e.from_node], pos[j])))
            outs = {heading(e): e for e in outgoing[j]}
            links_ns, links_ew = [], []
            idx = 0
            for e in ins:
                h = heading(e)
                vertical = h[0] == 0
                n_in = len(e.lanes)
                for turn, h_out in (("r", _rot_right(h)), ("s", h), ("l", _rot_left(h))):
                    out = outs.get(h_out)
                    if out is None:
                        continue
                    n_out = len(out.lanes)
                    if turn == "r":
                        pairs, via = [(0, 0)], 6.0
                    elif turn == "l":
                        pairs, via = [(n_in - 1, n_out - 1)], 18.0
                    else:
                        pairs, via = [(i, min(i, n_out - 1)) for i in range(n_in)], 14.0
                    for fl, tl in pairs:
                        net.connections.append(Connection(e.id, fl, out.id, tl, via, j, idx, turn))
                        (links_ns if vertical else links_ew).append((idx, "g" if turn == "l" else "G"))
                        idx += 1
            def state(green_links, ch_override=None):
                s = ["r"] * idx
                for i, ch in green_links:
                    s[i] = ch_override or ch
                return "".join(s)
            phases = [Phase(g_ns, state(links_ns), "NS green"), Phase(sig.yellow_s, state(links_ns, "y"), "NS yellow")]
            if sig.all_red_s > 0:
                phases.append(Phase(sig.all_red_s, "r" * idx, "all red"))
            phases += [Phase(g_ew, state(links_ew), "EW green"), Phase(sig.yellow_s, state(links_ew, "y"), "EW yellow")]
            if sig.all_red_s > 0:
                phases.append(Phase(sig.all_red_s, "r" * idx, "all red"))
            phases = [p for p in phases if p.duration > 0]
            net.programs[j] = SignalProgram(j, phases, offset=sig.offset_s + sig.offset_step_s * c)
    net.validate()
    return net


def _side(p_from, p_to) -> str:
    """Which side of ``p_to`` the point ``p_from`` lies on."""
    dx, dy = p_from[0] - p_to[0], p_from[1] - p_to[1]
    if abs(dx) > abs(dy):
        return "E" if dx > 0 else "W"
    return "N" if dy > 0 else "S"


# ---------------------------------------------------------------------------------------------
# demand
def _profile(rate: float, horizon: float, s) -> list[tuple[float, float, float]]:
    b, e = min(s.peak_begin_s, horizon), min(s.peak_end_s, horizon)
    off = rate * s.off_peak_factor
    segs = [(0.0, b, off), (b, e, rate), (e, horizon, off)]
    return [x for x in segs if x[1] > x[0]]


def grid_demand(net: RoadNetwork, s: GridScenario, horizon: float) -> Demand:
    """Each fringe entry sends ``straight_share`` of its flow straight across, the rest split
    between the two neighbouring exits on the opposite half; routes are free-flow fastest."""
    check(s.entry_flow_veh_h >= 0, "scenario.entry_flow_veh_h", s.entry_flow_veh_h, "a flow >= 0 veh/h")
    check(0 <= s.straight_share <= 1, "scenario.straight_share", s.straight_share, "a share in [0, 1]")
    check(s.off_peak_factor >= 0, "scenario.off_peak_factor", s.off_peak_factor, "a factor >= 0")
    g = net.graph()
    fringe = [j for j in net.junctions.values() if j.kind == "dead_end"]
    entries = [(j, e) for j in fringe for e in net.edges.values() if e.from_node == j.id]
    exits = {j.id: e for j in fringe for e in net.edges.values() if e.to_node == j.id}
    flows = []
    for j, e in entries:
        side, idx = j.id[0], int(j.id[1:])
        opp = {"N": "S", "S": "N", "E": "W", "W": "E"}[side]
        rate = s.entry_flow_veh_h * s.demand_scale * (s.side_flow_factor if side in "NS" else 1.0)
        n_opp = s.cols if opp in "NS" else s.rows
        targets = [(f"{opp}{idx}", s.straight_share)]
        others = [f"{opp}{k}" for k in (idx - 1, idx + 1) if 0 <= k < n_opp]
        # on a single row/column the turning share goes to the side exits of the nearest junction
        if not others:
            others = [f"{x}0" for x in ("NS" if side in "EW" else "EW")]
        for o in others:
            targets.append((o, (1 - s.straight_share) / len(others)))
        for dest, share in targets:
            if share <= 0 or dest not in exits:
                continue
            route = net.shortest_route(e.id, exits[dest].id, g)
            flows.append(Flow(f"{j.id}->{dest}", route, rate * share, 0.0, horizon, "poisson",
                              profile=_profile(rate * share, horizon, s), group=j.id))
    return Demand({"car": vehicle_type(s.vehicle)}, flows)


def junction_demand(net: RoadNetwork, s: JunctionScenario, horizon: float) -> Demand:
    check(s.arrivals in ("poisson", "periodic"), "scenario.arrivals", s.arrivals, "poisson or periodic")
    shares = dict(s.turning)
    for k in shares:
        check(k in ("left", "straight", "right"), f"scenario.turning.{k}", shares[k],
              "keys left, straight, right")
        check(shares[k] >= 0, f"scenario.turning.{k}", shares[k], "a share >= 0")
    total = sum(shares.values())
    check(abs(total - 1.0) < 1e-6, "scenario.turning", dict(shares), "shares that sum to 1")
    turn_code = {"left": "l", "straight": "s", "right": "r"}
    flows = []
    for side, q in s.flows_veh_h.items():
        check(side in "NESW" and len(side) == 1, f"scenario.flows_veh_h.{side}", q, "keys N, E, S, W")
        check(q >= 0, f"scenario.flows_veh_h.{side}", q, "a flow >= 0 veh/h")
        entry = net.edges[f"{side}0_J0_0"] if side in "NS" else net.edges[f"{side}0_J0_0"]
        for turn, share in shares.items():
            if share <= 0 or q <= 0:
                continue
            conn = next(c for c in net.connections if c.from_edge == entry.id and c.direction == turn_code[turn])
            flows.append(Flow(f"{side}_{turn}", [entry.id, conn.to_edge], q * share * s.demand_scale, 0.0, horizon,
                              s.arrivals, group=side))
    return Demand({"car": vehicle_type(s.vehicle)}, flows)


def ring_network(s: RingScenario) -> RoadNetwork:
    check(s.circumference_m > 0, "scenario.circumference_m", s.circumference_m, "a positive length")
    check(s.segments >= 2, "scenario.segments", s.segments, "an integer >= 2")
    net = RoadNetwork(name="ring")
    R = s.circumference_m / (2 * math.pi)
    seg = s.circumference_m / s.segments
    for i in range(s.segments):
        a = 2 * math.pi * i / s.segments
        net.add_junction(Junction(f"n{i}", R * math.cos(a), R * math.sin(a)))
    for i in range(s.segments):
        a, b = f"n{i}", f"n{(i + 1) % s.segments}"
        pa, pb = net.junctions[a], net.junctions[b]
        net.add_edge(Edge(f"e{i}", a, b, [Lane(f"e{i}_0", 0, seg, s.speed_mps, [(pa.x, pa.y), (pb.x, pb.y)])]))
    for i in range(s.segments):
        net.connections.append(Connection(f"e{i}", 0, f"e{(i + 1) % s.segments}", 0, 0.0))
    return net


def ring_demand(net: RoadNetwork, s: RingScenario, horizon: float) -> Demand:
    check(s.vehicles >= 1, "scenario.vehicles", s.vehicles, "an integer >= 1")
    per = s.circumference_m / s.vehicles
    need = s.vehicle.length + s.vehicle.min_gap
    check(per >= need, "scenario.vehicles", s.vehicles,
          f"at most {int(s.circumference_m // need)} on a {s.circumference_m:g} m ring "
          f"(each needs length + min_gap = {need:g} m)")
    laps = int(math.ceil(horizon * s.vehicle.max_speed / s.circumference_m)) + 2
    flows = []
    # vehicles enter spread over the segments, one after another; each drives laps until the horizon
    n = s.segments
    for i in range(n):
        count = s.vehicles // n + (1 if i < s.vehicles % n else 0)
        if count == 0:
            continue
        route = [f"e{(i + k) % n}" for k in range(laps * n)]
        flows.append(Flow(f"ring{i}", route, kind="fixed", departures=[0.0] * count, group="ring"))
    return Demand({"car": vehicle_type(s.vehicle)}, flows)


def bus_lines(net: RoadNetwork, configs) -> list[BusLine]:
    """The scenario's bus lines (:class:`BusLineConfig`) on ``net``, checked."""
    out, names = [], set()
    for i, c in enumerate(configs or []):
        f = f"scenario.bus_lines[{i}]"
        check(c.name not in (None, "") and c.name not in names, f"{f}.name", c.name, "a unique, non-empty line name")
        names.add(c.name)
        if c.route:
            route = [str(e) for e in c.route]
        else:
            check(c.from_edge is not None and c.to_edge is not None, f"{f}.route", None,
                  "a list of edge ids, or both from_edge and to_edge")
            route = net.shortest_route(c.from_edge, c.to_edge)
        stops = [BusStop(s.name or f"s{j}", str(s.edge), float(s.pos_m), float(s.pax_per_h))
                 for j, s in enumerate(c.stops)]
        v = c.vehicle
        for k in ("length", "accel", "decel", "max_speed", "tau", "delta", "speed_factor"):
            check(getattr(v, k) > 0, f"{f}.vehicle.{k}", getattr(v, k), "a positive number")
        line = BusLine(str(c.name), route, stops, float(c.headway_s), float(c.offset_s),
                       None if c.end_s is None else float(c.end_s), c.capacity, float(c.dwell_base_s),
                       float(c.board_s_per_pax), float(c.alight_s_per_pax), vehicle_type(v, "bus"))
        line.validate(net)
        out.append(line)
    return out


# ---------------------------------------------------------------------------------------------
# builders
def twin_kwargs(cfg) -> dict:
    """TrafficTwin options shared by every traffic scenario."""
    return {"dt": cfg.dt_s, "interval_s": cfg.output.timeseries_interval_s,
            "trajectory_every": int(cfg.output.get("trajectory_every", 0) or 0),
            "compile": cfg.compute.get("compile", None),
            "signal_control": cfg.scenario.get("signal_control", None)}


def _twin(cfg, scen: TrafficScenario, worlds, device, dtype) -> TrafficTwin:
    return TrafficTwin(scen, worlds, horizon=cfg.horizon_s, device=device, dtype=dtype, **twin_kwargs(cfg))


def grid_scenario(s, horizon: float) -> TrafficScenario:
    _validate_common(s)
    lanes_ns = s.lanes_ns or s.lanes
    net = signalized_lattice(s.rows, s.cols, s.block_m, s.approach_m, s.lanes, lanes_ns, s.speed_mps, s.signals,
                             s.name)
    return TrafficScenario(net, grid_demand(net, s, horizon), s.name, bus_lines=bus_lines(net, s.bus_lines),
                           car_following=s.car_following, lane_changing=s.lane_changing,
                           time_to_teleport_s=s.time_to_teleport_s)


def junction_scenario(s, horizon: float) -> TrafficScenario:
    _validate_common(s)
    net = signalized_lattice(1, 1, 1.0, s.approach_m, s.lanes, s.lanes, s.speed_mps, s.signals, s.name)
    return TrafficScenario(net, junction_demand(net, s, horizon), s.name, bus_lines=bus_lines(net, s.bus_lines),
                           car_following=s.car_following, lane_changing=s.lane_changing,
                           time_to_teleport_s=s.time_to_teleport_s)


def ring_scenario(s, horizon: float) -> TrafficScenario:
    _validate_common(s)
    net = ring_network(s)
    return TrafficScenario(net, ring_demand(net, s, horizon), s.name, bus_lines=bus_lines(net, s.bus_lines),
                           car_following=s.car_following, lane_changing=s.lane_changing,
                           time_to_teleport_s=s.time_to_teleport_s)


@scenario("grid", GridScenario)
def build_grid(cfg, worlds, device, dtype):
    return _twin(cfg, grid_scenario(cfg.scenario, cfg.horizon_s), worlds, device, dtype)


@scenario("arterial", ArterialScenario)
def build_arterial(cfg, worlds, device, dtype):
    return _twin(cfg, grid_scenario(cfg.scenario, cfg.horizon_s), worlds, device, dtype)


@scenario("junction", JunctionScenario)
def build_junction(cfg, worlds, device, dtype):
    return _twin(cfg, junction_scenario(cfg.scenario, cfg.horizon_s), worlds, device, dtype)


@scenario("ring", RingScenario)
def build_ring(cfg, worlds, device, dtype):
    return _twin(cfg, ring_scenario(cfg.scenario, cfg.horizon_s), worlds, device, dtype)
