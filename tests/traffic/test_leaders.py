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

LINES = [{"name": "L", "route": ["W0_J0_0", "J0_0_E0"], "headway_s": 60.0,
          "stops": [{"name": "a", "edge": "W0_J0_0", "pos_m": 100, "pax_per_h": 600}]}]


def _scenarios(horizon):
    yield grid_scenario(OmegaConf.structured(GridScenario(rows=3, cols=3)), horizon)
    yield junction_scenario(OmegaConf.merge(OmegaConf.structured(JunctionScenario), {
        "bus_lines": LINES, "flows_veh_h": {"N": 700, "E": 700, "S": 700, "W": 700}}), horizon)


@pytest.mark.parametrize("which", [0, 1], ids=["grid", "junction_with_buses"])
def test_carried_leaders_equal_sorted_ones(which):
    horizon = 900.0
    scen = list(_scenarios(horizon))[which]
    tw = TrafficTwin(scen, WorldBatch.replications(2, 3), dt=1.0, horizon=horizon)
    W, S, L = tw.W, tw.S, tw.net.n_lanes
    checked = crossings = 0
    while tw.step_index < tw.n_steps:
        lane_before = tw.state["lane"].clone()
        tw.step()
        crossings += int(((tw.state["lane"] != lane_before) & (tw.state["status"] == kernels.RUNNING)).sum())
        if tw.step_index % 25:
            continue
        st = tw.state
        running = (st["status"] == kernels.RUNNING).reshape(-1)
        leader, last, _ = kernels.lane_order(st["world"].reshape(-1), st["lane"].reshape(-1), st["pos"].reshape(-1),
                                             running, L, W, tw.span)
        # sorted: flat indices over [W, S]; carried: slots within the world
        slot = torch.arange(W * S) % S
        want = torch.where(leader >= 0, slot[leader.clamp(min=0)], -1)
        got = st["leader"].reshape(-1)
        assert torch.equal(got[running], want[running]), f"step {tw.step_index}"
        want_last = torch.where(last[:-1] >= 0, slot[last[:-1].clamp(min=0)], -1).view(W, L)
        assert torch.equal(tw._lane_last, want_last), f"step {tw.step_index}"
        checked += int(running.sum())
    assert checked > 1000 and crossings > 100  # vehicles moved from lane to lane while we checked
