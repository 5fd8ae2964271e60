"""One world's vehicles as a Mesa AgentSet over the twin's tensor columns (issue 21 item 5): each Vehicle agent
reads that world's state live, writes position and speed into it (checked), is the same object when asked again, and
nothing is built per vehicle unless someone asks."""
from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from mesa.agent import AgentSet

from twins.cli import CONF_DIR
from twins.core import pipeline
from twins.traffic import kernels
from twins.traffic.agents import Vehicle


def _twin(steps: int = 90):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=["scenario=junction", "horizon_s=600", "replications=2",
                                                       "progress=false"])
    tw = pipeline.make_twin(cfg)
    for _ in range(steps):
        tw.step()
    return tw


def test_the_running_vehicles_of_a_world_are_an_agentset_over_its_columns():
    tw = _twin()
    assert not tw._vehicle_agents, "stepping built no vehicle agent"
    for w in range(tw.W):
        cars = tw.vehicles(w)
        assert isinstance(cars, AgentSet) and all(isinstance(a, Vehicle) for a in cars)
        running = (tw.state.status[w] == kernels.RUNNING) & (tw.pop.flow[w] >= 0)
        assert len(cars) == int(running.sum()) > 0
        slots = torch.nonzero(running).flatten().tolist()
        assert [a.slot for a in cars] == slots and all(a.world == w for a in cars)
        for a in list(cars)[:20]:
            assert a.status == "running"
            assert a.lane == tw.net_cpu.lane_ids[int(tw.state.lane[w, a.slot])]
            assert a.pos_m == float(tw.state.pos[w, a.slot]) and a.speed_mps == float(tw.state.speed[w, a.slot])
            assert a.edge == a.route[int(tw.state.route_pos[w, a.slot])]
            v = a.view()  # the read-only snapshot agrees
            assert (v.vehicle_id, v.lane, v.pos_m, v.route) == (a.unique_id, a.lane, a.pos_m, a.route)
    # Mesa verbs work on the set; the same vehicle is the same agent
    cars = tw.vehicles(0)
    fast = cars.select(lambda a: a.speed_mps > 5.0)
    assert all(a.speed_mps > 5.0 for a in fast) and len(fast) < len(cars)
    assert tw.vehicles(0)[0] is cars[0]
    assert sum(len(tw.vehicles(w, None)) for w in range(tw.W)) == int((tw.pop.flow >= 0).sum())
    with pytest.raises(ValueError, match="status='parked'"):
        tw.vehicles(0, "parked")


def test_writes_reach_the_state_and_the_next_step_reads_them():
    tw = _twin()
    a = tw.vehicles(1)[0]
    a.speed_mps = 0.0
    assert float(tw.state.speed[1, a.slot]) == 0.0 and a.speed_mps == 0.0
    a.pos_m = 1.0 + 0.5 * a.pos_m  # backwards on its lane: the next step sorts the lanes again
    assert tw._lane_last is None
    tw.step()
    lead = tw.state.leader[1]
    run = tw.state.status[1] == kernels.RUNNING
    ahead = lead.clamp(min=0)
    ok = ~run | (lead < 0) | (tw.state.pos[1][ahead] > tw.state.pos[1])
    assert bool(ok.all()), "every running vehicle is behind its leader after the re-sort"
    with pytest.raises(ValueError, match="speed_mps"):
        a.speed_mps = float("nan")
    with pytest.raises(ValueError, match="pos_m"):
        a.pos_m = -5.0
    with pytest.raises(TypeError, match="cannot be removed"):
        a.remove()


def test_nudging_one_world_leaves_the_others_bit_identical():
    plain, nudged = _twin(), _twin()
    nudged.vehicles(1)[0].speed_mps = 0.0
    for _ in range(30):
        plain.step()
        nudged.step()
    for k in ("status", "lane", "pos", "speed", "route_pos"):
        assert torch.equal(getattr(plain.state, k)[0], getattr(nudged.state, k)[0]), k
    assert not torch.equal(plain.state.pos[1], nudged.state.pos[1])
