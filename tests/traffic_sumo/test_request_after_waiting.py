"""A left turner waiting inside a signalized junction requests the next junction's link, as SUMO's does.

A four-arm signal (netconvert's program) whose west approach has a lane of its own for the permissive left turn
(internal junction 6 m in, ``cont="1"``), against 600 vehicles an hour straight on from the east; the left turn
leads north over a short edge (about 20 m) to a priority junction where a side road from the east merges, yielding
(``m``). In SUMO (``MSVehicle::planMoveInternal``) a vehicle standing at its internal junction still requests the
links ahead of it, the priority junction's included, unless a foe inside the junction has yet to cross its path
(that link leader takes its planned speed to 0, ``checkLinkLeader``) or it is still braking for the waiting point
from beyond its visibility distance (``abortRequestAfterMinor``); the side road's vehicles wait for it there. The
twin's waiting vehicles announced nothing to the next junction before (7 Dec 2026): on RESCO ingolstadt1, where a
service road yields to the left turners of a signal 22 m upstream, the service road lost 60 s per vehicle against
SUMO's 78 s.

What it checks: among the steps a left turner stands at its waiting point (the front of its lane, free to go on),
the share in which it requests the priority junction's link: SUMO's ``willPass`` in ``--link-output`` against the
per-agent reference's (0 before); and that the twin's kernels equal the reference at every step here.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from twins.core.worlds import WorldBatch
from twins.traffic import native
from twins.traffic.model import TrafficScenario, TrafficTwin
from twins.traffic.reference import ReferenceTrafficModel
from tests.traffic.test_reference import _compare, _ref_state, _twin_state
from tests.traffic_sumo.conftest import _hand_made_scenario, _load_sumocfg, _trip_vehicles

pytestmark = [pytest.mark.slow, pytest.mark.sumo]

END_S = 1200


@pytest.fixture(scope="module")
def crossing(tmp_path_factory):
    d = tmp_path_factory.mktemp("request_after_waiting")
    nodes = ('<node id="c" x="0" y="0" type="traffic_light"/><node id="w" x="-400" y="0" type="priority"/>'
             '<node id="e" x="400" y="0" type="priority"/><node id="s" x="0" y="-400" type="priority"/>'
             '<node id="j" x="0" y="40" type="priority"/><node id="n" x="0" y="400" type="priority"/>'
             '<node id="x" x="300" y="40" type="priority"/>')
    lanes = {"w": 2, "e": 1, "s": 3}  # three-lane south arm: a junction wide enough to wait in
    edges = "".join(f'<edge id="{a}i" from="{a}" to="c" numLanes="{k}" speed="13.89" priority="3"/>'
                    f'<edge id="{a}o" from="c" to="{a}" numLanes="{k}" speed="13.89" priority="3"/>'
                    for a, k in lanes.items())
    edges += ('<edge id="ci" from="j" to="c" numLanes="3" speed="13.89" priority="3"/>'
              '<edge id="co" from="c" to="j" numLanes="1" speed="13.89" priority="3"/>'
              '<edge id="jn" from="j" to="n" numLanes="1" speed="13.89" priority="3"/>'
              '<edge id="nj" from="n" to="j" numLanes="1" speed="13.89" priority="3"/>'
              '<edge id="xj" from="x" to="j" numLanes="1" speed="8.33" priority="1"/>')
    (d / "n.con.xml").write_text('<connections><connection from="wi" to="eo" fromLane="0" toLane="0"/>'
                                 '<connection from="wi" to="co" fromLane="1" toLane="0"/></connections>')
    trips = [(8.0 * i, f"w{i}", "wi co jn" if i % 2 == 0 else "wi eo") for i in range(END_S // 8)]
    trips += [(6.0 * i + 1.0, f"e{i}", "ei wo") for i in range(END_S // 6)]
    trips += [(5.0 * i + 3.0, f"x{i}", "xj jn") for i in range(END_S // 5)]
    trips += [(9.0 * i + 5.0, f"s{i}", "si co jn") for i in range(END_S // 9)]
    veh = _trip_vehicles(trips)
    return _hand_made_scenario(d, "x", nodes, edges, veh, END_S, ("--connection-files", str(d / "n.con.xml")))


def _sumo_request_share(cfg) -> tuple[float, int]:
    """SUMO: of the steps a left turner stands at the end of its first internal lane (its waiting point), the share
    in which it requests the link from ``co`` on at the next junction (``willPass``), and their number."""
    libsumo = pytest.importorskip("libsumo", reason="libsumo (the [sumo] extra) is not installed")
    net = ET.parse(cfg.parent / "x.net.xml").getroot()
    first = next(c.get("via") for c in net.iter("connection") if c.get("from") == "wi" and c.get("to") == "co")
    length = float(next(ln.get("length") for ln in net.iter("lane") if ln.get("id") == first))
    link = next(c.get("via") for c in net.iter("connection") if c.get("from") == "co" and c.get("to") == "jn")
    out = cfg.parent / "links.xml"
    libsumo.start(["sumo", "-c", str(cfg), "--default.carfollowmodel", "Krauss", "--seed", "0", "--no-step-log",
                   "--no-warnings", "--link-output", str(out)])
    standing = []
    try:
        while libsumo.simulation.getTime() < END_S:
            libsumo.simulationStep()
            t = libsumo.simulation.getTime()
            for v in libsumo.lane.getLastStepVehicleIDs(first):
                if libsumo.vehicle.getSpeed(v) < 0.1 and libsumo.vehicle.getLanePosition(v) > length - 1.0:
                    standing.append((t, v))
    finally:
        libsumo.close()
    will = {}
    for step in ET.parse(out).getroot():
        for lk in step:
            if lk.get("via") == link:
                for a in lk:
                    will[(float(step.get("id")), a.get("id"))] = a.get("willPass") == "1"
    return float(np.mean([will.get(k, False) for k in standing])), len(standing)


def test_a_waiting_left_turner_requests_the_next_link_as_in_sumo(crossing):
    share_sumo, n_sumo = _sumo_request_share(crossing)
    scen = _load_sumocfg(crossing)
    left = [c for c in scen.network.connections if c.from_edge == "wi" and c.to_edge == "co"]
    assert left and left[0].wait_length > 4.3  # imported: the left turn waits inside the junction
    scenario = TrafficScenario(scen.network, scen.demand, "waiting", car_following="Krauss")
    tw = TrafficTwin(scenario, WorldBatch.replications(0, 1), dt=1.0, horizon=float(END_S), dtype=torch.float64,
                     compile=False)
    ref = ReferenceTrafficModel.from_twin(tw, world=0)
    lane_index = {lid: i for i, lid in enumerate(tw.net_cpu.lane_ids)}
    valid = (tw.pop.flow[0] >= 0).numpy() & np.isfinite(tw.pop.depart[0].numpy())
    ids = tw.pop.vehicle_id[0].numpy()[valid]
    for step in range(END_S):
        tw.step()
        ref.step()
        # the kernels and the per-agent reference agree at every step (status, lanes, positions, speeds, ...)
        _compare(step, 0, {k: v[valid] for k, v in _twin_state(tw, 0).items()}, _ref_state(ref, ids, lane_index), ids)
    if native.available():  # ... and the compiled step equals the kernels
        fast = TrafficTwin(scenario, WorldBatch.replications(0, 1), dt=1.0, horizon=float(END_S), dtype=torch.float64,
                           compile=None)
        assert fast.kernel == "native"
        while fast.step_index < fast.n_steps:
            fast.step()
        assert torch.equal(fast.state.pos, tw.state.pos) and torch.equal(fast.state.status, tw.state.status)
    ev = ref.events
    n_twin = ev["waiting_requests"] + ev["waiting_quiet"]
    share_twin = ev["waiting_requests"] / max(n_twin, 1)
    assert n_sumo >= 100 and n_twin >= 100, (n_sumo, n_twin)  # left turners did stand at their waiting point
    # measured (7 Dec 2026, SUMO 1.28): SUMO 0.28 of 358 steps, the twin 0.22 of 369 (0 before: it never requested);
    # the share is set by how often an opposing vehicle is crossing the junction at that moment (RESCO ingolstadt1's
    # busiest such left turn: SUMO 0.62, the twin 0.63)
    assert share_twin >= 0.1 and abs(share_twin - share_sumo) <= 0.15, (share_twin, share_sumo)


def _entries(edges_of_step, steps: int):
    """Per step's {vehicle: edge} (a generator of dicts), the times vehicles leave the side road ``xj`` and the
    major edge ``co`` (entering the priority junction)."""
    side, major, prev = [], [], {}
    for t, cur in zip(range(1, steps + 1), edges_of_step):
        for v, e in prev.items():
            if cur.get(v) != e and e in ("xj", "co"):
                (side if e == "xj" else major).append(t)
        prev = cur
    return np.array(side), np.sort(np.array(major))


def _lags(side, major):
    """For each side vehicle entering the junction: seconds until the next major vehicle enters it."""
    k = np.searchsorted(major, side)
    return np.where(k < len(major), major[np.minimum(k, len(major) - 1)] - side, np.inf)


def test_a_side_vehicle_goes_ahead_of_a_major_one_only_where_sumo_s_would(crossing):
    """The side road's vehicles enter the priority junction no nearer ahead of a major vehicle than SUMO's: the
    shortest lead SUMO's take is 3 s. Before (7 Dec 2026) a side vehicle standing right behind a major one that had
    just entered (its junction leader, too close to move on) was not checked at all and followed it in, 2-3 s ahead
    of the next: 8 such entries here in 20 minutes against SUMO's 0 (over an hour with 900 side vehicles and 330 major
    ones, 11 against 0, and 78 entries within 2 s behind a major vehicle against SUMO's 18; now 0 and 44). A front
    vehicle that cannot move on announces no window (SUMO's willPass), but its own link is checked as every other's."""
    libsumo = pytest.importorskip("libsumo", reason="libsumo (the [sumo] extra) is not installed")
    libsumo.start(["sumo", "-c", str(crossing), "--default.carfollowmodel", "Krauss", "--seed", "0", "--no-step-log",
                   "--no-warnings"])
    try:
        def sumo_steps():
            while libsumo.simulation.getTime() < END_S:
                libsumo.simulationStep()
                yield {v: libsumo.vehicle.getRoadID(v) for v in libsumo.vehicle.getIDList()}
        sumo_side, sumo_major = _entries(sumo_steps(), END_S)
    finally:
        libsumo.close()
    scen = _load_sumocfg(crossing)
    tw = TrafficTwin(TrafficScenario(scen.network, scen.demand, "lags", car_following="Krauss"),
                     WorldBatch.replications(0, 1), dt=1.0, horizon=float(END_S))
    edge_of = [lane.rsplit("_", 1)[0] for lane in tw.net_cpu.lane_ids]

    def twin_steps():
        while tw.step_index < tw.n_steps:
            tw.step()
            st = tw.state
            running = torch.nonzero(st.status[0] == 1).flatten().tolist()
            lane, pos = st.lane[0].tolist(), st.pos[0].tolist()
            # (inside a junction a vehicle is on the lane it enters, short of its start)
            yield {s: edge_of[lane[s]] if pos[s] >= 0 else ":" for s in running}
    twin_side, twin_major = _entries(twin_steps(), END_S)
    assert len(sumo_side) >= 150 and len(twin_side) >= 150 and len(sumo_major) >= 150 and len(twin_major) >= 150
    lead_sumo, lead_twin = _lags(sumo_side, sumo_major), _lags(twin_side, twin_major)
    assert (lead_sumo < 3).sum() == 0  # SUMO's side vehicles never enter less than 3 s ahead of a major one
    assert (lead_twin < 3).sum() <= 1, np.sort(lead_twin)[:10]
