"""Leaders and lane tails are sorted out once and then carried from step to step (kernel rule 2):
at every step they must equal what sorting (world, lane, position) gives."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from scenarios.traffic import GridScenario, JunctionScenario, grid_scenario, junction_scenario
from twins.core.worlds import WorldBatch
from twins.traffic import kernels
from twins.traffic.model import TrafficTwin

from tests.traffic._helpers import chain_scenario

LINES = [{"name": "L", "route": ["W0_J0_0", "J0_0_E0"], "headway_s": 60.0,
          "stops": [{"name": "a", "edge": "W0_J0_0", "pos_m": 100, "pax_per_h": 600}]}]


def _scenarios(horizon):
    yield grid_scenario(OmegaConf.structured(GridScenario(rows=3, cols=3)), horizon)
    yield junction_scenario(OmegaConf.merge(OmegaConf.structured(JunctionScenario), {
        "bus_lines": LINES, "flows_veh_h": {"N": 700, "E": 700, "S": 700, "W": 700}}), horizon)
    # lanes shorter than one step's travel (a vehicle would land beyond their end)
    yield chain_scenario("short", {"a": 200.0, "s1": 2.0, "s2": 0.5, "s3": 7.0, "b": 200.0}, ["a", "s1", "s2", "s3", "b"])
    # a loop edge: crossing from a lane onto the same lane (the lane does not change, the route position does)
    yield chain_scenario("loop", {"a": 200.0, "lp": 40.0, "b": 200.0}, ["a", "lp", "lp", "lp", "b"], loops=("lp",))


@pytest.mark.parametrize("which", [0, 1, 2, 3], ids=["grid", "junction_with_buses", "short_lanes", "loop_edge"])
def test_carried_leaders_equal_sorted_ones(which):
    horizon = 900.0 if which < 2 else 200.0
    scen = list(_scenarios(horizon))[which]
    tw = TrafficTwin(scen, WorldBatch.replications(2, 3), dt=1.0, horizon=horizon)
    W, S, L = tw.W, tw.S, tw.net.n_lanes
    checked = crossings = 0
    while tw.step_index < tw.n_steps:
        rpos_before = tw.state.route_pos.clone()
        tw.step()
        crossings += int(((tw.state.route_pos != rpos_before) & (tw.state.status == kernels.RUNNING)).sum())
        if which < 2 and tw.step_index % 25:
            continue
        st = tw.state
        running = (st.status == kernels.RUNNING).reshape(-1)
        leader, last = kernels.lane_order(st.world.reshape(-1), st.lane.reshape(-1), st.pos.reshape(-1),
                                             running, L, W, tw.span)
        # sorted: flat indices over [W, S]; carried: slots within the world
        slot = torch.arange(W * S) % S
        want = torch.where(leader >= 0, slot[leader.clamp(min=0)], -1)
        got = st.leader.reshape(-1)
        assert torch.equal(got[running], want[running]), f"step {tw.step_index}"
        want_last = torch.where(last[:-1] >= 0, slot[last[:-1].clamp(min=0)], -1).view(W, L)
        assert torch.equal(tw._lane_last, want_last), f"step {tw.step_index}"
        checked += int(running.sum())
    assert checked > 1000 and crossings > (100 if which < 2 else 20)  # vehicles moved on while we checked


def test_no_vehicle_lands_beyond_a_short_lane_or_moves_backwards():
    scen = chain_scenario("short", {"a": 200.0, "s1": 2.0, "s2": 0.5, "s3": 7.0, "b": 200.0}, ["a", "s1", "s2", "s3", "b"])
    tw = TrafficTwin(scen, WorldBatch.replications(0, 1), dt=1.0, horizon=200.0)
    lane_len = tw.net.lane_length
    while tw.step_index < tw.n_steps:
        tw.step()
        st = tw.state
        run = st.status == kernels.RUNNING
        assert bool((st.pos[run] <= lane_len[st.lane[run]] + 1e-4).all()), f"step {tw.step_index}"
        assert bool((st.speed[run] >= 0).all()), f"step {tw.step_index}"
    assert int((tw.state.status == kernels.ARRIVED).sum()) > 30
