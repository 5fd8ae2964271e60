"""Kernels rule 12, SUMO's teleporting (``--time-to-teleport``, 300 s by default): a vehicle that has stood at the
front of its lane for longer than that leaves it and is inserted again on a later edge of its route, so a gridlock
ends as it does in SUMO instead of holding the twin's network for the rest of the run (RESCO ingolstadt21: with no
teleport, a jam at two junctions joined by 0.2 m edges kept 400-500 of the hour's vehicles from ever entering).

The road here: edges a, b, c (300 m each, one lane) behind a signal at the end of ``a`` that never shows green, so
every vehicle stands at that line until it is teleported. The tensor kernels, the compiled step and the per-agent
reference must agree at every step."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.traffic._helpers import chain_scenario, run_with_reference
from twins.core.worlds import WorldBatch
from twins.traffic import kernels, native
from twins.traffic.model import TrafficTwin
from twins.traffic.network import Phase, SignalProgram

HORIZON_S = 1200.0  # the three leave the line about 300 s apart (each creeps up when the one ahead has gone)
DEPARTURES = [0.0, 4.0, 8.0]


def _blocked(lanes: dict[str, float], route: list[str], ttt=300.0, compile=False, W: int = 2):
    """Vehicles on ``route`` held forever at the end of its first edge by a signal that stays red."""
    scen = chain_scenario("blocked", lanes, route)
    net = scen.network
    net.programs["red"] = SignalProgram("red", [Phase(60.0, "r")])
    net.junctions[net.edges[route[0]].to_node].tl = "red"
    c = next(c for c in net.connections if c.from_edge == route[0])
    c.tl, c.link_index = "red", 0
    scen.demand.flows[:] = [dataclasses.replace(scen.demand.flows[0], departures=list(DEPARTURES))]
    scen.time_to_teleport_s = ttt
    return TrafficTwin(scen, WorldBatch.replications(3, W), dt=1.0, horizon=HORIZON_S, dtype=torch.float64,
                       compile=compile)


def _run_with_reference(tw):
    refs = run_with_reference(tw)
    assert all(len(r.vehicles) == len(DEPARTURES) for r in refs)
    return refs


def test_a_vehicle_standing_at_the_front_for_300_s_is_teleported_to_the_next_edge():
    tw = _blocked({"a": 300.0, "b": 300.0, "c": 300.0}, ["a", "b", "c"])
    refs = _run_with_reference(tw)
    ok = tw.pop.flow >= 0
    st = {k: v[ok].view(tw.W, -1) for k, v in tw.state.columns().items() if v.dim() == 2}
    assert (st["status"] == kernels.ARRIVED).all(), "every vehicle got past the signal by teleporting"
    assert tw.teleports.tolist() == [3, 3] and all(r.events["teleports"] == 3 for r in refs)
    w = tw.results().worlds
    assert w["teleports"].tolist() == [3, 3] and w["throughput_veh"].tolist() == [3, 3]
    # the first stood from about 25 s after it departed; it left after standing more than 300 s and entered b
    # the next step, so its trip took at least 300 s plus driving b and c
    assert (w["mean_travel_time_s"] > 300.0 + 2 * 300.0 / 13.9).all()
    # it was inserted once: its departure delay is that of the first insertion, not of the teleport
    assert (st["insert_step"] >= 0).all() and int(st["insert_step"][0].max()) < 20


def test_without_teleporting_the_vehicles_stay_and_nothing_moves_them():
    tw = _blocked({"a": 300.0, "b": 300.0, "c": 300.0}, ["a", "b", "c"], ttt=None)
    _run_with_reference(tw)
    assert tw.teleports.tolist() == [0, 0]
    assert (tw.state.status[tw.pop.flow >= 0] == kernels.RUNNING).all()
    assert tw.results().worlds["throughput_veh"].tolist() == [0, 0]


def test_edges_too_short_to_insert_on_are_skipped_and_a_route_without_one_ends():
    # b (3 m) cannot take a car (5 m + 2.5 m gap): the teleport puts it on c
    tw = _blocked({"a": 300.0, "b": 3.0, "c": 300.0}, ["a", "b", "c"])
    _run_with_reference(tw)
    ok = tw.pop.flow >= 0
    assert (tw.state.status[ok] == kernels.ARRIVED).all() and tw.teleports.tolist() == [3, 3]
    assert (tw.state.route_pos[ok] == 2).all()
    # nothing left on the route to insert on: the vehicle arrives where it was teleported (SUMO: at the route's end)
    tw = _blocked({"a": 300.0, "b": 3.0}, ["a", "b"])
    _run_with_reference(tw)
    ok = tw.pop.flow >= 0
    assert (tw.state.status[ok] == kernels.ARRIVED).all() and tw.teleports.tolist() == [3, 3]
    assert (tw.state.route_pos[ok] == 0).all()


@pytest.mark.skipif(not native.available(), reason="no C++ compiler for the compiled step")
def test_compiled_step_teleports_as_the_tensor_kernels():
    a = _blocked({"a": 300.0, "b": 3.0, "c": 300.0}, ["a", "b", "c"], compile=False)
    b = _blocked({"a": 300.0, "b": 3.0, "c": 300.0}, ["a", "b", "c"], compile=True)
    assert a.kernel == "tensor" and b.kernel == "native"
    while a.step_index < a.n_steps:
        a.step()
        b.step()
        for k in ("status", "lane", "pos", "speed", "route_pos", "insert_step", "arrive_step"):
            assert torch.equal(getattr(a.state, k), getattr(b.state, k)), (k, a.step_index)
    assert a.teleports.tolist() == b.teleports.tolist() == [3, 3]


def test_time_to_teleport_must_be_a_number():
    with pytest.raises(Exception, match="time_to_teleport_s"):
        _blocked({"a": 300.0, "b": 300.0}, ["a", "b"], ttt=float("nan"))
    # 0 or less: never, as SUMO's -1
    assert _blocked({"a": 300.0, "b": 300.0}, ["a", "b"], ttt=0.0).teleport_steps is None
    assert _blocked({"a": 300.0, "b": 300.0}, ["a", "b"], ttt=-1.0).teleport_steps is None


def test_teleporting_keeps_worlds_independent_and_arms_paired():
    """A world's teleports do not depend on the others in its batch (the standing check reads the whole window's
    longest standing time, which only decides when to look, never what happens), and two arms of one replication
    stay bit-identical."""
    def run(reps):
        scen_tw = _blocked({"a": 300.0, "b": 300.0, "c": 300.0}, ["a", "b", "c"], W=1)
        scen = scen_tw.scenario
        tw = TrafficTwin(scen, WorldBatch(3, torch.tensor(reps), torch.zeros(len(reps), dtype=torch.int64)),
                         dt=1.0, horizon=HORIZON_S, dtype=torch.float64, compile=False)
        while tw.step_index < tw.n_steps:
            tw.step()
        return tw

    alone, batch = run([0]), run([0, 4, 0])
    for w in (0, 2):
        for k in ("status", "pos", "speed", "route_pos", "arrive_step"):
            assert torch.equal(getattr(alone.state, k)[0], getattr(batch.state, k)[w]), (k, w)
    assert int(alone.teleports[0]) == int(batch.teleports[0]) == int(batch.teleports[2]) == 3
