"""Analytic IDM relations, small recording helpers and small networks for the traffic tests."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from omegaconf import OmegaConf

from scenarios.traffic import VehicleConfig, vehicle_type
from twins.traffic import kernels
from twins.traffic.demand import Demand, Flow
from twins.traffic.model import TrafficScenario
from twins.traffic.network import Connection, Edge, Junction, Lane, RoadNetwork


def idm_equilibrium_gap(v, v0: float, s0: float, T: float, delta: float = 4.0):
    """Homogeneous steady-state gap of the IDM at speed ``v``.

    s_e(v) = (s0 + v T) / sqrt(1 - (v / v0)^delta)   (Treiber, Hennecke & Helbing 2000, eq. 3;
    Treiber & Kesting, *Traffic Flow Dynamics*, 2013, sect. 11.3.4).
    """
    v = np.asarray(v, dtype=np.float64)
    return (s0 + v * T) / np.sqrt(1.0 - (v / v0) ** delta)


def idm_equilibrium_speed(gap: float, v0: float, s0: float, T: float, delta: float = 4.0) -> float:
    """Inverse of :func:`idm_equilibrium_gap` (bisection; s_e is increasing in v on [0, v0))."""
    if gap <= s0:
        return 0.0
    lo, hi = 0.0, v0 * (1.0 - 1e-15)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if idm_equilibrium_gap(mid, v0, s0, T, delta) < gap:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def idm_string_stable(gap: float, v0: float, s0: float, T: float, a: float, b: float, delta: float = 4.0) -> bool:
    """Linear string stability of the homogeneous IDM flow at ``gap``.

    With a = f(s, v, v_l) linearised about the steady state, long-wave
    perturbations decay iff f_s < (f_v^2 - f_l^2) / 2 (Wilson & Ward 2011,
    equivalent to Treiber & Kesting 2013, sect. 15.5). Derivatives are taken
    numerically from the kernel's own :func:`kernels.idm_acceleration`.
    """
    v = idm_equilibrium_speed(gap, v0, s0, T, delta)
    f64 = lambda x: torch.tensor([x], dtype=torch.float64)  # noqa: E731

    def acc(s, vv, vl):
        return float(kernels.idm_acceleration(f64(vv), f64(v0), f64(s), f64(vl), f64(a), f64(2.0 * math.sqrt(a * b)), f64(T), f64(s0),
                                              torch.tensor([int(delta)], dtype=torch.int64)))

    h = 1e-6
    fs = (acc(gap + h, v, v) - acc(gap - h, v, v)) / (2 * h)
    fv = (acc(gap, v + h, v) - acc(gap, v - h, v)) / (2 * h)
    fl = (acc(gap, v, v + h) - acc(gap, v, v - h)) / (2 * h)
    return fs < 0.5 * (fv * fv - fl * fl)


def lane_index(twin, lane_id: str) -> int:
    return list(twin.net_cpu.lane_ids).index(lane_id)


def lane_gaps(state, veh: dict, n_lanes: int, paths: bool = False) -> torch.Tensor:
    """Bumper-to-bumper gaps between consecutive running vehicles on the same lane (all worlds). With ``paths``, a
    pair whose follower is inside the junction on another connection than its leader is left out (different paths
    there, SUMO's internal lanes: a vehicle waiting at its internal junction and one passing it on another path
    share the lane's coordinates only)."""
    running = state.status == kernels.RUNNING
    W, S = running.shape
    world = torch.arange(W).unsqueeze(1).expand(W, S)
    key_lane = (world * n_lanes + state.lane)[running]
    pos = state.pos[running].double()
    length = veh["length"][running].double()
    conn = state.conn[running]
    order = torch.argsort(key_lane.double() * 1e7 + pos)
    kl, p, ln, cn = key_lane[order], pos[order], length[order], conn[order]
    same = kl[1:] == kl[:-1]
    if paths:
        same = same & ~((p[:-1] < 0) & (cn[:-1] != cn[1:]))
    gaps = (p[1:] - ln[1:]) - p[:-1]  # leader's rear minus follower's front
    return gaps[same]


def veh_columns(twin) -> dict:
    """Per-slot vehicle parameters as [W, S] tensors."""
    return {k: v.reshape(twin.W, twin.S) for k, v in twin.drivers.columns().items()}


def hcm_saturation_headway(cross_times: np.ndarray, first: int = 4) -> np.ndarray:
    """HCM field procedure: (t_last - t_first) / (n_last - first), per row.

    Times are sorted stop-line crossing times of the queued vehicles; the
    headway clock starts when vehicle number ``first`` (1-based, the 4th)
    crosses, so vehicles 5..n give the saturation headway.
    """
    t = np.sort(cross_times, axis=1)
    n = t.shape[1]
    return (t[:, n - 1] - t[:, first - 1]) / (n - first)


def fmt(x: float) -> str:
    return f"{x:.6g}" if math.isfinite(x) else str(x)


def chain_scenario(name, lanes: dict[str, float], route: list[str], loops=(), deltas=(4,)):
    """A single-lane road of the given edges (lengths in m); ``loops``: edges from a junction to itself;
    one flow per IDM exponent in ``deltas`` (vehicle types that differ only in it), alternating departures."""
    net = RoadNetwork(name=name)
    x, node = 0.0, 0
    net.add_junction(Junction("n0", 0.0, 0.0))
    for e, length in lanes.items():
        if e in loops:
            net.add_edge(Edge(e, f"n{node}", f"n{node}", [Lane(f"{e}_0", 0, length, 13.9, [(x, 0.0), (x, 10.0)])]))
            continue
        node += 1
        net.add_junction(Junction(f"n{node}", x + length, 0.0))
        net.add_edge(Edge(e, f"n{node - 1}", f"n{node}", [Lane(f"{e}_0", 0, length, 13.9, [(x, 0.0), (x + length, 0.0)])]))
        x += length
    for a, b in zip(route, route[1:]):
        if not any(c.from_edge == a and c.to_edge == b for c in net.connections):
            net.connections.append(Connection(a, 0, b, 0, 0.0))
    car = vehicle_type(OmegaConf.structured(VehicleConfig()))  # SUMO's passenger car, speedDev 0.1
    vtypes = {f"car{d}": dataclasses.replace(car, id=f"car{d}", delta=float(d)) for d in deltas}
    k = len(deltas)
    flows = [Flow(f"f{d}", route, kind="fixed", departures=[float(2 * (k * i + j)) for i in range(60 // k)],
                  group="g", vtype=f"car{d}") for j, d in enumerate(deltas)]
    return TrafficScenario(net, Demand(vtypes, flows), name)


def with_right_of_way(scen, signals: bool = True):
    """The scenario's junctions with a SUMO-like request table (kernels rule 10).

    ``signals=True``: every left turn (shown ``g``: permissive) yields to the opposing approach's straight and
    right-turn links, and waits halfway across the junction (SUMO's internal junction). ``signals=False``: the signals are removed; the north–south approaches are minor (``m``) and
    yield to every east–west link, their left turns also to the opposing straight and right-turn links."""
    import math

    net = scen.network
    by_junction: dict[str, list] = {}
    for c in net.connections:
        by_junction.setdefault(net.edges[c.from_edge].to_node, []).append(c)
    for jid, conns in by_junction.items():
        j = net.junctions[jid]

        def heading(c):  # the side the approach comes from, in quarter turns
            a = net.junctions[net.edges[c.from_edge].from_node]
            return round(math.atan2(a.y - j.y, a.x - j.x) / (math.pi / 2)) % 4

        for k, c in enumerate(conns):
            c.junction_index = k
        for k, c in enumerate(conns):
            opposite = [i for i, o in enumerate(conns) if heading(o) == (heading(c) + 2) % 4 and o.direction in "sr"]
            foes = set(opposite) if c.direction == "l" else set()
            if not signals and heading(c) in (1, 3):  # north-south: minor
                foes |= {i for i, o in enumerate(conns) if heading(o) in (0, 2)}
            j.yields_to[k] = sorted(foes)
            if signals and c.direction == "l":
                c.wait_length = 0.5 * c.via_length
        if not signals:
            j.tl, j.kind = None, "priority"
            for c in conns:
                c.tl, c.link_index = None, -1
                c.state = "m" if heading(c) in (1, 3) else "M"
    if not signals:
        net.programs.clear()
    return scen


def with_paths(scen, half: float = 6.0, width: float = 3.2):
    """Every connection of a generated network given a path across its junction (``Connection.path_shape``): a
    straight line from its lane's end, ``half`` m before the junction's centre on the right of the incoming road,
    to its target lane's start, ``half`` m after it on the right of the outgoing one (lanes ``width`` m apart), so
    that rule 10's conflict zones (network.conflict_zone) cover part of each foe's path and paths out of one lane
    part somewhere (network.divergence), as on an imported network."""
    import math

    net = scen.network

    def unit(a, b):
        dx, dy = b.x - a.x, b.y - a.y
        n = math.hypot(dx, dy)
        return dx / n, dy / n

    for c in net.connections:
        fe, te = net.edges[c.from_edge], net.edges[c.to_edge]
        j = net.junctions[fe.to_node]
        ux, uy = unit(net.junctions[fe.from_node], j)
        vx, vy = unit(j, net.junctions[te.to_node])
        oi, oo = width * (c.from_lane + 0.5), width * (c.to_lane + 0.5)  # right of the centre line
        c.path_shape = ((j.x - ux * half + uy * oi, j.y - uy * half - ux * oi),
                        (j.x + vx * half + vy * oo, j.y + vy * half - vx * oo))
        c.via_width = width
        c.via_shape, c.via_lane_length = c.path_shape, c.via_length  # one internal lane: where paths part
    return scen


def run_with_reference(tw) -> list:
    """Step ``tw`` (float64, the tensor kernels or the compiled step) to its end beside one per-agent reference per
    world, comparing every vehicle at every step (``test_reference``'s conventions); returns the references."""
    from tests.traffic.test_reference import _compare, _ref_state, _twin_state
    from twins.traffic.reference import ReferenceTrafficModel

    refs = [ReferenceTrafficModel.from_twin(tw, world=w) for w in range(tw.W)]
    lane_index = {lid: i for i, lid in enumerate(tw.net_cpu.lane_ids)}
    valid = [(tw.pop.flow[w] >= 0).numpy() & np.isfinite(tw.pop.depart[w].numpy()) for w in range(tw.W)]
    ids = [tw.pop.vehicle_id[w].numpy()[valid[w]] for w in range(tw.W)]
    while tw.step_index < tw.n_steps:
        step = tw.step_index
        tw.step()
        for w, ref in enumerate(refs):
            ref.step()
            a = {k: v[valid[w]] for k, v in _twin_state(tw, w).items()}
            _compare(step, w, a, _ref_state(ref, ids[w], lane_index), ids[w])
    return refs


def assert_steps_agree(a, b, keys=("status", "lane", "pos", "speed", "route_pos", "arrive_step")):
    """Step twins ``a`` and ``b`` (e.g. the tensor kernels and the compiled step on one scenario) to their end side by
    side, asserting the same state columns after every step."""
    while a.step_index < a.n_steps:
        a.step()
        b.step()
        for k in keys:
            assert torch.equal(getattr(a.state, k), getattr(b.state, k)), (k, a.step_index)
