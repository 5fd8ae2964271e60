"""``road_closure``: closed edges, recomputed routes, noise alignment, bad input.

Must show: closing the direct edge of a flow forces a detour and raises its travel
time (interval excluding zero); the null closure (no edges) gives bit-identical arms.
"""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

import interventions
from interventions import counterfactual as cf
from interventions.road_closure import RoadClosure
from scenarios.traffic import GridScenario, JunctionScenario, grid_scenario, junction_scenario
from twins.core.errors import ConfigError
from twins.core.worlds import WorldBatch
from twins.traffic.model import TrafficTwin

GRID = ("scenario=traffic", "scenario.rows=2", "scenario.cols=2")
DIRECT = "J0_0_J0_1"  # W0 -> E0 drives W0_J0_0, J0_0_J0_1, J0_1_E0; closing it forces a 3-block detour


def _grid_twin(worlds, horizon=300.0):
    return TrafficTwin(grid_scenario(OmegaConf.structured(GridScenario(rows=2, cols=2)), horizon), worlds,
                       dt=1.0, horizon=horizon)


def _by_arm(out):
    w = pd.read_parquet(out / "worlds.parquet")
    trips = pd.read_parquet(out / "trips.parquet")
    trips = trips.assign(arm=trips["world"].map(dict(zip(w["world"], w["arm"]))),
                         rep=trips["world"].map(dict(zip(w["world"], w["replication"])))).drop(columns="world")
    return w, trips


def test_registered_with_a_parameter_per_edge_and_baseline_open():
    iv = interventions.get(OmegaConf.create({"name": "road_closure", "edges": [DIRECT]}))
    assert isinstance(iv, RoadClosure)
    tw = _grid_twin(WorldBatch.replications(0, 1))
    params = {p.name: p for p in iv.parameters(tw)}
    assert len(params) == len(tw.scenario.network.edges)
    p = params[f"close.{DIRECT}"]
    assert (p.kind, p.low, p.high, p.baseline) == ("int", 0, 1, 0)
    assert iv.config_values() == {f"close.{DIRECT}": 1}
    assert iv.describe(iv.config_values()) == f"road_closure({DIRECT})"


def test_only_flows_using_the_closed_edge_are_rerouted_on_the_fastest_alternative():
    worlds = WorldBatch.replications(0, 2, arms=2)
    tw = _grid_twin(worlds)
    iv = RoadClosure({"edges": [DIRECT]})
    cf.apply_arms(iv, tw, cf.arms_from_config(iv))
    flows = tw.scenario.demand.flows
    hit = [i for i, f in enumerate(flows) if DIRECT in f.route]
    assert [flows[i].id for i in hit] == ["W0->E0"]
    rof = tw.worlds.params["route_of_flow"].cpu()
    F = len(flows)
    assert torch.equal(rof[:2], torch.arange(F).repeat(2, 1))  # baseline worlds: identity
    assert (rof[2:, hit] == F).all() and (rof[2:, [i for i in range(F) if i not in hit]] < F).all()
    row = tw.routes_cpu.route_edges[F]
    detour = [tw.net_cpu.edge_ids[int(e)] for e in row if e >= 0]
    assert detour == ["W0_J0_0", "J0_0_J1_0", "J1_0_J1_1", "J1_1_J0_1", "J0_1_E0"]
    assert float(tw.routes_cpu.route_free_time[F]) > float(tw.routes_cpu.route_free_time[hit[0]])
    # the per-slot route of W0->E0 vehicles points at the detour in treated worlds only
    route, flow = tw.drivers.route.cpu(), tw.pop.flow
    w0e0 = flow == hit[0]
    assert (route[:2][w0e0[:2]] == hit[0]).all() and (route[2:][w0e0[2:]] == F).all()
    # noise alignment: same vehicles, same departures, same drivers in both arms
    assert torch.equal(tw.pop.vehicle_id[:2], tw.pop.vehicle_id[2:])
    assert torch.equal(tw.depart[:2], tw.depart[2:])
    for k in ("accel", "tau", "speed_factor", "length"):
        assert torch.equal(getattr(tw.drivers, k)[:2], getattr(tw.drivers, k)[2:]), k


def test_null_closure_gives_bit_identical_arms_and_exact_zero_effects(run_cf):
    out, eff = run_cf(*GRID, "intervention=road_closure", "intervention.edges=[]", "replications=2",
                      "horizon_s=300")
    assert eff is not None and len(eff)
    measured = eff[eff["n"] > 0]
    assert (measured["effect"] == 0.0).all() and (measured["ci_low"] == 0.0).all()
    w, trips = _by_arm(out)
    a0 = w[w["arm"] == 0].drop(columns=["world", "arm"]).reset_index(drop=True)
    a1 = w[w["arm"] == 1].drop(columns=["world", "arm"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a0, a1, check_exact=True)
    assert a0["throughput_veh"].min() > 50
    t0 = trips[trips["arm"] == 0].drop(columns="arm").sort_values(["rep", "vehicle_id"]).reset_index(drop=True)
    t1 = trips[trips["arm"] == 1].drop(columns="arm").sort_values(["rep", "vehicle_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(t0, t1, check_exact=True)


def test_null_closure_twin_state_is_bit_identical():
    tw = _grid_twin(WorldBatch.replications(3, 2, arms=2), horizon=200.0)
    iv = RoadClosure({"edges": []})
    arms = cf.apply_arms(iv, tw, [cf.Arm(0, "baseline"), cf.Arm(1, "open", {f"close.{DIRECT}": 0})])
    assert arms[1].values == {f"close.{DIRECT}": 0}
    assert tw.routes_cpu.route_edges.shape[0] == len(tw.scenario.demand.flows)  # nothing appended
    tw.run(progress=False)
    assert int((tw.state.status == 2).sum()) > 50
    for k, v in tw.state.columns().items():
        if k != "world":
            assert torch.equal(v[:2], v[2:]), k


def test_closing_the_direct_edge_forces_a_detour_and_raises_travel_time(run_cf, capsys):
    """Theory: the only alternative is 400 m longer with two more signals, so the rerouted origin's
    travel time rises; the other flows are unaffected or slightly delayed by the extra turners."""
    out, eff = run_cf(*GRID, "intervention=road_closure", f"intervention.edges=[{DIRECT}]", "replications=4",
                      "horizon_s=600")
    g = eff[(eff["scope"] == "group") & (eff["group_kind"] == "origin") & (eff["group"] == "W0")]
    r = g.set_index("metric").loc["mean_travel_time_s"]
    assert r["effect"] > 10.0 and r["ci_low"] > 0.0, r.to_dict()
    net = eff[(eff["scope"] == "network")].set_index("metric").loc["mean_travel_time_s"]
    assert net["effect"] > 0.0 and net["ci_low"] > 0.0, net.to_dict()
    _, trips = _by_arm(out)
    w0e0 = trips[trips["flow"] == "W0->E0"].groupby("arm")["travel_time_s"].mean()
    assert w0e0[1] - w0e0[0] > 30.0  # ~400 m more at 13.9 m/s plus two signals
    # noise alignment: the same vehicles depart at the same times in both arms
    d = trips.pivot_table(index=["rep", "vehicle_id"], columns="arm", values="depart_s")
    assert d[0].equals(d[1])
    with capsys.disabled():
        print(f"\n[grid 2x2, close {DIRECT}, R=4, 600 s] W0 origin travel time effect {r['effect']:+.1f} s "
              f"[{r['ci_low']:+.1f}, {r['ci_high']:+.1f}]; W0->E0 {w0e0[0]:.1f} -> {w0e0[1]:.1f} s; "
              f"network {net['effect']:+.2f} s [{net['ci_low']:+.2f}, {net['ci_high']:+.2f}]")


def test_no_alternative_route_is_a_clear_error_naming_edge_and_flow():
    tw = TrafficTwin(junction_scenario(OmegaConf.structured(JunctionScenario()), 60.0),
                     WorldBatch.replications(0, 1, arms=2), dt=1.0, horizon=60.0)
    iv = RoadClosure({"edges": ["N0_J0_0"]})  # the only way in from the north
    with pytest.raises(ConfigError, match=r"intervention\.edges='N0_J0_0'.*flow 'N_left'.*origin"):
        cf.apply_arms(iv, tw, cf.arms_from_config(iv))
    # a cut inside the network: the 1 x 2 corridor has a single link between its junctions
    s = OmegaConf.structured(GridScenario(rows=1, cols=2))
    tw = TrafficTwin(grid_scenario(s, 60.0), WorldBatch.replications(0, 1, arms=2), dt=1.0, horizon=60.0)
    with pytest.raises(ConfigError, match=r"intervention\.edges='J0_0_J0_1'.*flow 'N0->S1'.*no other path joins N0_J0_0 to J0_1_S1"):
        RoadClosure({"edges": ["J0_0_J0_1"]}).validate({"close.J0_0_J0_1": 1}, tw)
    with pytest.raises(ConfigError, match=r"intervention\.edges='J0_0_J0_2'.*Did you mean 'J0_0_J0_1'"):
        RoadClosure().validate({"close.J0_0_J0_2": 1}, tw)
    with pytest.raises(ConfigError, match=r"close\.J0_0_J0_1=2"):
        RoadClosure().validate({"close.J0_0_J0_1": 2}, tw)


def test_cli_config_composes():
    from tests.interventions.conftest import compose_cfg

    cfg = compose_cfg(*GRID, "intervention=road_closure", f"intervention.edges=[{DIRECT}]")
    assert list(cfg.intervention.edges) == [DIRECT]
    with pytest.raises(Exception, match="edgs"):
        compose_cfg(*GRID, "intervention=road_closure", "intervention.edgs=[x]")
