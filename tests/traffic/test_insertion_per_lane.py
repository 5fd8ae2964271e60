"""Insertion refuses lanes, not edges (kernels rule 3; SUMO's ``MSEdge::insertVehicle`` remembers the lanes on
which an insertion failed this step and still tries the edge's later vehicles on its other lanes).

Four vehicles bound for R (lane 0 of A only) and one for L (lane 2 only) depart at once on edge A: the R vehicles
enter one a step, each after the first blocked by the one before at the lane's start; the L vehicle, behind them in
departure order, enters in the first step on its own lane. Before, the first refused R vehicle closed the whole
edge for the step and the L vehicle waited for all of them (it entered at step 4). The tensor kernels, the compiled
step and the reference agree."""
import pytest
import torch

from tests.traffic.test_lane_changing import _three_lanes
from twins.core.worlds import WorldBatch
from twins.traffic import native
from twins.traffic.demand import Demand, Flow, VehicleType
from twins.traffic.model import TrafficScenario, TrafficTwin
from twins.traffic.reference import ReferenceTrafficModel


def _scenario() -> TrafficScenario:
    flows = [Flow("R", ["A", "R"], kind="fixed", departures=[0.0] * 4, group="R", vtype="car"),
             Flow("L", ["A", "L"], kind="fixed", departures=[0.0], group="L", vtype="car")]
    return TrafficScenario(_three_lanes(), Demand({"car": VehicleType(id="car")}, flows), "insertion")


@pytest.mark.parametrize("compiled", [False, True])
def test_a_refused_lane_does_not_hold_the_other_lanes(compiled):
    if compiled and not native.available():
        pytest.skip("no C++ compiler for the compiled step")
    tw = TrafficTwin(_scenario(), WorldBatch.replications(seed=1, n=1), dt=1.0, horizon=10.0, compile=compiled)
    assert tw.kernel == ("native" if compiled else "tensor")
    ref = ReferenceTrafficModel.from_twin(tw)
    for _ in range(3):
        tw.step()
        ref.step()
    flow, steps = tw.pop.flow[0], tw.state.insert_step[0]
    got = sorted((int(f), int(s)) for f, s in zip(flow, steps) if f >= 0)
    assert got == [(0, -1), (0, 0), (0, 1), (0, 2), (1, 0)], "R one a step; L at once"
    assert sorted((v.spec.route[-1], v.insert_step) for v in ref.vehicles) == \
        [("L", 0), ("R", -1), ("R", 0), ("R", 1), ("R", 2)]
    assert ref.events["insertion_blocked"] >= 3
