"""Kernels rule 10 at a zipper merge (SUMO's unsignalized link state ``Z``, e.g. two lanes narrowing to one): the
two links yield to each other, and the vehicle that arrives first goes while the other follows it, as SUMO merges
them in arrival order. By the overlap rule of the other minor links each would wait for the other for ever: on RESCO
ingolstadt21 (a zipper right behind two junctions joined by 0.2 m edges) that gridlocked the network about 40 times
an hour, where SUMO saw 0.5-2.5 teleports.

The road: edges ``a`` and ``c`` (200 m, one lane each) merge into ``b``; a flow on each, with the same departures, so
their vehicles reach the merge at the same time (the tie the rule breaks by connection index)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.traffic._helpers import chain_scenario, run_with_reference
from twins.core.worlds import WorldBatch
from twins.traffic import kernels, native
from twins.traffic.model import TrafficTwin
from twins.traffic.network import Connection, Edge, Junction, Lane

DEPARTURES = [0.0, 3.0, 6.0, 9.0, 12.0]


def _zipper(state: str = "Z", compile=False, horizon: float = 150.0):
    scen = chain_scenario("zipper", {"a": 200.0, "b": 200.0}, ["a", "b"])
    net = scen.network
    net.add_junction(Junction("m0", 0.0, 50.0))
    net.add_edge(Edge("c", "m0", "n1", [Lane("c_0", 0, 200.0, 13.9, [(0.0, 50.0), (200.0, 0.0)])]))
    net.connections.append(Connection("c", 0, "b", 0, 0.0))
    for k, c in enumerate(net.connections):
        c.state, c.junction_index = state, k
    net.junctions["n1"].yields_to = {0: [1], 1: [0]}  # each link yields to the other
    flow = scen.demand.flows[0]
    scen.demand.flows[:] = [dataclasses.replace(flow, id="fa", route=["a", "b"], departures=list(DEPARTURES)),
                            dataclasses.replace(flow, id="fc", route=["c", "b"], departures=list(DEPARTURES))]
    scen.time_to_teleport_s = None  # no rescue: the merge itself must resolve
    return TrafficTwin(scen, WorldBatch.replications(2, 2), dt=1.0, horizon=horizon, dtype=torch.float64,
                       compile=compile)


def test_zipper_links_merge_in_arrival_order_and_match_the_reference():
    tw = _zipper()
    refs = run_with_reference(tw)
    ok = tw.pop.flow >= 0
    assert (tw.state.status[ok] == kernels.ARRIVED).all(), "both streams got through the merge"
    assert all(r.events["yield_wait"] > 0 and r.events["yield_go"] > 0 for r in refs), "the rule was exercised"
    # they took turns: neither stream went through whole while the other stood
    flow = tw.pop.flow[0][ok[0]]
    steps = tw.state.arrive_step[0][ok[0]]
    first_a, first_c = steps[flow == 0].min(), steps[flow == 1].min()
    last_a, last_c = steps[flow == 0].max(), steps[flow == 1].max()
    assert first_a < last_c and first_c < last_a


def test_links_that_wait_for_each_other_without_the_zipper_rule_stay_blocked():
    """The same merge as two plain minor links (``m``): both fronts wait for each other and nothing passes (the
    deadlock the zipper rule ends; SUMO's teleport would end it after 300 s)."""
    tw = _zipper(state="m")
    while tw.step_index < tw.n_steps:
        tw.step()
    assert int((tw.state.status == kernels.ARRIVED).sum()) == 0


@pytest.mark.skipif(not native.available(), reason="no C++ compiler for the compiled step")
def test_compiled_step_merges_as_the_tensor_kernels():
    a, b = _zipper(compile=False), _zipper(compile=True)
    assert a.kernel == "tensor" and b.kernel == "native"
    while a.step_index < a.n_steps:
        a.step()
        b.step()
        for k in ("status", "lane", "pos", "speed", "route_pos", "arrive_step"):
            assert torch.equal(getattr(a.state, k), getattr(b.state, k)), (k, a.step_index)
