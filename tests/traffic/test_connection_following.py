"""Rule 4 without lane changing: a vehicle may enter another lane of the next edge than the vehicle ahead of it on its
own connection did (the twin's stand-in for lane changes it does not model), but it crosses the junction behind that
one, as both would on SUMO's internal lane of the connection.

Measured on RESCO cologne8 (single-lane approach -42925825#2, permissive left turn with an internal junction into
a two-lane edge): consecutive left turners crossed 2 s apart in the twin, alternating between the exit's lanes,
against SUMO's 3 s on the one internal lane; the scenario's IDM delay was 19 % below SUMO's, 3 % with this rule
(benchmarks/README.md, "Fidelity against SUMO").
"""
from __future__ import annotations

import pytest
import torch

from tests.traffic._helpers import chain_scenario, run_with_reference
from twins.core.worlds import WorldBatch
from twins.traffic import kernels, native
from twins.traffic.model import TrafficTwin
from twins.traffic.network import Edge, Lane

VIA_M = 16.0  # the path across the junction
WAIT_M = 8.0  # where a left turn waits for its foes inside it (SUMO's internal junction)


def _left_turn_into_two_lanes(compile=False, lane_changing=False) -> TrafficTwin:
    """A queue of vehicles (one every 2 s) from the single lane of ``a`` across a minor link with an internal
    junction onto ``b``, whose connection leads to lane 0 of two: each crawls inside the junction (rule 10)."""
    scen = chain_scenario("follow", {"a": 300.0, "b": 300.0}, ["a", "b"])
    net = scen.network
    b = net.edges["b"]
    net.edges["b"] = Edge("b", b.from_node, b.to_node,
                          [b.lanes[0], Lane("b_1", 1, 300.0, 13.9, [(300.0, 3.2), (600.0, 3.2)])])
    c = net.connections[0]
    c.state, c.via_length, c.wait_length, c.direction = "m", VIA_M, WAIT_M, "l"
    scen.lane_changing = lane_changing
    return TrafficTwin(scen, WorldBatch.replications(0, 1), dt=1.0, horizon=150.0, dtype=torch.float64,
                       compile=compile)


def _crossings(tw) -> tuple[list[float], list[int]]:
    """Run to the end: the times vehicles crossed the stop line into ``b`` (in order), and the exit lane of each."""
    times, lanes = {}, {}
    while tw.step_index < tw.n_steps:
        tw.step()
        s = tw.state
        for i in torch.nonzero((s.route_pos[0] >= 1) & (s.status[0] == kernels.RUNNING))[:, 0].tolist():
            times.setdefault(i, tw.time_s)
            lanes.setdefault(i, int(s.lane[0, i]))
    order = sorted(times, key=times.get)
    return [times[i] for i in order], [lanes[i] for i in order]


def test_a_vehicle_crosses_behind_the_one_ahead_on_its_connection_whichever_lane_it_takes():
    t_plain, lanes_plain = _crossings(_left_turn_into_two_lanes())
    t_lc, lanes_lc = _crossings(_left_turn_into_two_lanes(lane_changing=True))
    # without lane changing, consecutive vehicles take alternate exit lanes (most room) ...
    assert len(set(lanes_plain)) == 2 and sum(a != b for a, b in zip(lanes_plain, lanes_plain[1:])) >= 20
    # ... with lane changing all enter the lane the connection leads to (as SUMO) ...
    assert len(set(lanes_lc)) == 1
    # ... and either way they cross one behind the other, at the single internal lane's rate (the queue's
    # discharge headway with the crawl to the waiting point: 3 s; crossing side by side it was 2 s)
    assert len(t_plain) >= 30 and t_plain == t_lc
    headways = [b - a for a, b in zip(t_plain[5:], t_plain[6:])]
    assert min(headways) >= 2.5, headways


def test_kernels_and_compiled_step_follow_the_per_agent_reference():
    run_with_reference(_left_turn_into_two_lanes())
    if native.available():
        run_with_reference(_left_turn_into_two_lanes(compile=None))
    else:
        pytest.skip("no C++ compiler: the compiled step is not built here")
