"""``bus_headway`` and public transport in the traffic twin.

Must show: a timetable equal to the baseline gives bit-identical arms and effects of exactly
0.0 (every metric and group, bus passengers and car drivers included); halving the headway
cuts passenger waiting by about headway/2 with an interval excluding zero, and the waits
match the exact expectation given the buses' docking times; dwell grows with boardings
(TCQSM's additive model) and is part of the bus travel time; bad input is a clear error;
the README command and a two-job sweep run from the command line.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

import interventions
from interventions.bus_headway import BusHeadway
from scenarios.traffic import BusLineConfig, BusStopConfig, JunctionScenario, junction_scenario
from twins.core.errors import ConfigError
from twins.core.worlds import WorldBatch
from twins.traffic import kernels
from twins.traffic.model import TrafficTwin

ROOT = Path(__file__).resolve().parents[2]
# an isolated junction with light car traffic and one bus line crossing it west to east,
# one stop before the junction and one after
LIGHT = ("scenario=junction", "scenario.flows_veh_h={N: 100, E: 100, S: 100, W: 100}",
         "ethics.enabled=false")  # the ethics evidence runs are tested in tests/ethics


def line_override(headway=400, pax=180):
    return (f"scenario.bus_lines=[{{name: L, route: [W0_J0_0, J0_0_E0], headway_s: {headway}, stops: ["
            f"{{name: a, edge: W0_J0_0, pos_m: 100, pax_per_h: {pax}}}, "
            f"{{name: b, edge: J0_0_E0, pos_m: 150, pax_per_h: {pax}}}]}}]")


def _twin(worlds, horizon, lines, flows=None, **kw):
    s = OmegaConf.structured(JunctionScenario(flows_veh_h=flows or {"N": 0.0, "E": 0.0, "S": 0.0, "W": 0.0},
                                              bus_lines=lines))
    return TrafficTwin(junction_scenario(s, horizon), worlds, dt=1.0, horizon=horizon, **kw)


def _by_arm(out, table):
    w = pd.read_parquet(out / "worlds.parquet")
    t = pd.read_parquet(out / f"{table}.parquet")
    return w, t.assign(arm=t["world"].map(dict(zip(w["world"], w["arm"]))),
                       rep=t["world"].map(dict(zip(w["world"], w["replication"]))))


def expected_wait(docks: np.ndarray, t_end: float) -> float:
    """E[wait] of Poisson passengers over [0, t_end) who take the next bus docking at ``docks``
    (capacity never binding; those left at the end counted until t_end): Σ gap² / (2 t_end)."""
    edges = np.concatenate([[0.0], np.sort(docks[docks < t_end]), [t_end]])
    g = np.diff(edges)
    return float((g * g).sum() / (2.0 * t_end))


# ---------------------------------------------------------------------------------------------
def test_null_timetable_gives_bit_identical_arms_and_exact_zero_effects(run_cf):
    out, eff = run_cf(*LIGHT, line_override(headway=400), "intervention=bus_headway", "intervention.headway_s=400",
                      "replications=2", "horizon_s=300")
    measured = eff[eff["n"] > 0]
    assert set(measured["metric"]) >= {"bus_passenger_wait_s", "bus_travel_time_s", "mean_delay_s", "mean_wait_s"}
    kinds = set(zip(measured["group_kind"], measured["group"]))
    assert {("mode", "bus_passengers"), ("mode", "car_drivers"), ("bus_line", "L")} <= kinds
    assert (measured["effect"] == 0.0).all() and (measured["ci_low"] == 0.0).all() and (measured["ci_high"] == 0.0).all()
    for table in ("trips", "bus_trips", "bus_stops"):
        w, t = _by_arm(out, table)
        key = ["rep", "vehicle_id"] + (["time_s"] if table == "bus_stops" else [])
        a0, a1 = (t[t["arm"] == a].drop(columns=["arm", "world"]).sort_values(key).reset_index(drop=True)
                  for a in (0, 1))
        assert len(a0) > 0
        pd.testing.assert_frame_equal(a0, a1, check_exact=True)
    a0, a1 = (w[w["arm"] == a].drop(columns=["world", "arm"]).reset_index(drop=True) for a in (0, 1))
    pd.testing.assert_frame_equal(a0, a1, check_exact=True)


def test_halving_the_headway_cuts_waiting_by_about_half_the_headway_change(run_cf, capsys):
    """Random arrivals, buses on schedule: E[wait] = H/2. 400 s → 200 s: −100 s expected.

    Tolerances. (1) Each world's mean wait against the exact expectation given its buses'
    docking times (Σ gap² / 2T, which also holds for the shorter first and last gaps and for
    irregular service): the per-passenger wait has sd ≈ gap/√12 ≤ 120 s, each world has
    ~120 passengers, so a world's mean is within ±11 s (1 sd); we allow 4 sd over the pooled
    8 worlds (±16 s) — a bias of that size would mean passengers miss buses or board out of turn.
    (2) The effect within 15 % of −(H0 − H1)/2: the first and last gaps of a 1200 s horizon
    shift the expectation by ~2 s, sampling by ~6 s (1 sd of the paired mean over 4 replications)."""
    out, eff = run_cf(*LIGHT, line_override(headway=400, pax=180), "intervention=bus_headway",
                      "intervention.headway_s=200", "replications=4", "horizon_s=1200")
    w, visits = _by_arm(out, "bus_stops")
    net = eff[eff["scope"] == "network"].set_index("metric")
    e = net.loc["bus_passenger_wait_s"]
    assert e["ci_high"] < 0, e.to_dict()
    assert abs(e["effect"] - (-(400 - 200) / 2)) < 0.15 * 100, e.to_dict()
    # capacity never bound (the expectation below assumes everybody takes the next bus)
    assert int(visits["load"].max()) < 80
    # each world's mean wait against the expectation given its own docking times
    waits = pd.read_parquet(out / "bus_waits.parquet")
    diffs, rel = [], []
    for world, g in waits.groupby("world"):
        sim = (g["wait_boarded_s"].sum() + g["wait_censored_s"].sum()) / (g["boarded"].sum() + g["waiting_end"].sum())
        v = visits[visits["world"] == world]
        expect = np.mean([expected_wait(v.loc[v["stop"] == s, "time_s"].to_numpy(float), 1200.0)
                          for s in ("L:a", "L:b")])
        row = w[w["world"] == world].iloc[0]
        assert row["bus_passenger_wait_s"] == pytest.approx(sim, rel=1e-12)
        diffs.append(sim - expect)
        rel.append(expect / (200.0 if row["arm"] else 400.0))
    assert abs(np.mean(diffs)) < 16.0, diffs
    assert all(0.85 < r < 1.05 for r in np.asarray(rel) * 2), rel  # the expectation itself is ≈ H/2
    g = eff[(eff["scope"] == "group") & (eff["group_kind"] == "mode")].set_index(["group", "metric"])
    assert g.loc[("bus_passengers", "mean_wait_s"), "effect"] == e["effect"]
    assert ("car_drivers", "mean_delay_s") in g.index
    with capsys.disabled():
        print(f"\n[junction + bus line, 2 stops × 180 pax/h, R=4, 1200 s] mean wait "
              f"{e['baseline_mean']:.1f} s (H=400) -> {e['treated_mean']:.1f} s (H=200); effect "
              f"{e['effect']:+.1f} s [{e['ci_low']:+.1f}, {e['ci_high']:+.1f}] vs -(H0-H1)/2 = -100; "
              f"sim - E[wait | docks] = {np.mean(diffs):+.1f} s; paired/unpaired width {e['width_ratio']:.2f}")


def test_dwell_grows_with_boardings_and_is_part_of_bus_travel_time():
    """One bus, no cars, one stop after the junction: the same trip with and without passengers
    differs by exactly board_s_per_pax × boardings (dwell = 4 + 3·boardings + 1.5·alightings,
    whole seconds at dt = 1 s); while it dwells the bus stands at the stop."""
    def one_bus(pax):
        line = BusLineConfig(name="L", route=["W0_J0_0", "J0_0_E0"], headway_s=600.0, end_s=1.0,
                             stops=[BusStopConfig(edge="J0_0_E0", pos_m=150.0, pax_per_h=pax, name="b")])
        tw = _twin(WorldBatch.replications(3, 2), 200.0, [line], trajectory_every=1)
        return tw, tw.run(progress=False)

    _, quiet = one_bus(0.0)
    tw, busy = one_bus(720.0)
    v0, v1 = quiet.tables["bus_stops"], busy.tables["bus_stops"]
    assert (v0["boardings"] == 0).all() and (v0["dwell_s"] == 4.0).all()
    assert (v1["boardings"] > 0).all()
    np.testing.assert_array_equal(v1["dwell_s"], 4.0 + 3.0 * v1["boardings"] + 1.5 * v1["alightings"])
    t0 = quiet.tables["bus_trips"].set_index("world")["travel_time_s"]
    t1 = busy.tables["bus_trips"].set_index("world")["travel_time_s"]
    b = v1.set_index("world")["boardings"]
    np.testing.assert_array_equal((t1 - t0).to_numpy(), (3.0 * b).reindex(t1.index).to_numpy())
    assert (busy.worlds["bus_travel_time_s"] == t1.to_numpy()).all()
    # the bus stands at the stop (front within the docking reach) from docking to the end of its dwell
    traj = busy.tables["trajectories"]
    for world, visit in v1.set_index("world").iterrows():
        bus = traj[(traj["world"] == world) & (traj["vehicle_id"] == visit["vehicle_id"])].set_index("time_s")
        at_stop = bus.loc[visit["time_s"]:visit["time_s"] + visit["dwell_s"]]
        assert len(at_stop) == visit["dwell_s"] + 1
        assert (at_stop["edge"] == "J0_0_E0").all()
        assert ((at_stop["pos_m"] <= 150.0 + 1e-4) & (at_stop["pos_m"] >= 150.0 - kernels.DOCK_REACH_M)).all()
        assert (at_stop["speed_mps"].iloc[1:] == 0.0).all()
        assert bus.loc[visit["time_s"] + visit["dwell_s"] + 2, "pos_m"] > 150.0  # then it drives on
    # passengers: Poisson arrivals keyed by (replication, stop, k): the same in any batch
    alone = _twin(WorldBatch(3, torch.tensor([1]), torch.tensor([0])), 200.0,
                  [BusLineConfig(name="L", route=["W0_J0_0", "J0_0_E0"],
                                 stops=[BusStopConfig(edge="J0_0_E0", pos_m=150.0, pax_per_h=720.0)])])
    assert torch.equal(alone.pax_arrivals[0], tw.pax_arrivals[1])


def test_boarding_is_first_come_first_served_up_to_capacity():
    """:func:`transit.board` against a plain queue, one passenger at a time: three buses docking at
    one stop in the same step (the first two nearly full), one at another stop, one at a third world."""
    from twins.traffic import transit

    line = BusLineConfig(name="L", route=["W0_J0_0", "J0_0_E0"], capacity=10,
                         stops=[BusStopConfig(edge="W0_J0_0", pos_m=100.0, pax_per_h=900.0),
                                BusStopConfig(edge="J0_0_E0", pos_m=150.0, pax_per_h=900.0)])
    tw = _twin(WorldBatch.replications(4, 2), 600.0, [line])
    arr, cum, tab = tw.pax_arrivals, tw.pax_cum, tw.transit
    served = torch.tensor([[3, 0], [0, 0]])
    world, stop = torch.tensor([0, 0, 0, 0, 1]), torch.tensor([0, 0, 0, 1, 0])
    load = torch.tensor([8, 9, 0, 4, 0])
    t = 120.0
    out = transit.board(t, world, stop, load, served, arr, cum, tab)
    # the same by hand
    queue = {(w, z): [float(x) for x in arr[w, z] if x <= t][int(served[w, z]):] for w in range(2) for z in range(2)}
    remaining = {0: 2.0, 1: 1.0}  # stops left including this one
    for i in range(5):
        w, z, ld = int(world[i]), int(stop[i]), int(load[i])
        alight = min(ld, math.floor(ld / remaining[z] + 0.5))
        room = max(0, 10 - (ld - alight))
        boarders = [queue[w, z].pop(0) for _ in range(min(room, len(queue[w, z])))]
        assert int(out["boardings"][i]) == len(boarders) and int(out["alightings"][i]) == alight
        assert float(out["wait_sum"][i]) == pytest.approx(sum(t - a for a in boarders), abs=1e-9)
        assert float(out["dwell"][i]) == 4.0 + 3.0 * len(boarders) + 1.5 * alight
        assert int(out["load"][i]) == ld - alight + len(boarders)
    assert int(out["boardings"][2]) > 0 and int(out["boardings"][0]) < int(out["boardings"][2])  # capacity bound
    for (w, z), q in queue.items():  # who is left is who the kernel still counts as waiting
        n_arrived = int((arr[w, z] <= t).sum())
        assert n_arrived - int(out["served"][w, z]) == len(q)


def test_a_world_with_buses_does_not_depend_on_its_batch():
    """Causal contract item 2 with buses: world (replication 1, baseline) alone and next to a treated arm
    that runs twice the buses gives the same trajectory and the same stop visits."""
    line = BusLineConfig(name="L", route=["W0_J0_0", "J0_0_E0"], headway_s=120.0,
                         stops=[BusStopConfig(edge="W0_J0_0", pos_m=100.0, pax_per_h=300.0),
                                BusStopConfig(edge="J0_0_E0", pos_m=150.0, pax_per_h=300.0)])
    flows = {"N": 200.0, "E": 200.0, "S": 200.0, "W": 300.0}
    alone = _twin(WorldBatch(2, torch.tensor([1]), torch.tensor([0])), 400.0, [line], flows=flows)
    batch = _twin(WorldBatch(2, torch.tensor([0, 1, 0, 1]), torch.tensor([0, 0, 1, 1])), 400.0, [line], flows=flows)
    BusHeadway().apply(batch, [None, None, {"headway_s": 60.0}, {"headway_s": 60.0}])
    assert [len(a.dispatch_times(w)) for a in batch.bus_line_agents for w in range(4)] == [4, 4, 7, 7]
    ra, rb = alone.run(progress=False), batch.run(progress=False)
    va = ra.tables["bus_stops"].drop(columns="world").reset_index(drop=True)
    vb = rb.tables["bus_stops"].query("world == 1").drop(columns="world").reset_index(drop=True)
    assert len(va) >= 4
    pd.testing.assert_frame_equal(va, vb, check_exact=True)
    ta = ra.tables["trips"].drop(columns="world").sort_values("vehicle_id").reset_index(drop=True)
    tb = rb.tables["trips"].query("world == 1").drop(columns="world").sort_values("vehicle_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(ta, tb, check_exact=True)
    for name in ("bus_trips", "bus_waits"):
        xa = ra.tables[name].drop(columns="world").reset_index(drop=True)
        xb = rb.tables[name].query("world == 1").drop(columns="world").reset_index(drop=True)
        pd.testing.assert_frame_equal(xa, xb, check_exact=True, obj=name)
    bus_metrics = [m for m in ra.metrics if m.startswith("bus_")]
    assert bus_metrics
    pd.testing.assert_frame_equal(ra.worlds[bus_metrics].reset_index(drop=True),
                                  rb.worlds[rb.worlds["world"] == 1][bus_metrics].reset_index(drop=True),
                                  check_exact=True)


def test_headway_plan_shared_and_per_line():
    lines = [BusLineConfig(name="east", route=["W0_J0_0", "J0_0_E0"], headway_s=600.0, offset_s=0.0,
                           stops=[BusStopConfig(edge="J0_0_E0", pos_m=150.0)]),
             BusLineConfig(name="north", route=["S0_J0_0", "J0_0_N0"], headway_s=900.0, offset_s=60.0,
                           stops=[BusStopConfig(edge="J0_0_N0", pos_m=150.0)])]
    tw = _twin(WorldBatch.replications(0, 1, arms=3), 600.0, lines)
    iv = BusHeadway({"lines": ["east"]})
    p = {q.name: q for q in iv.parameters(tw)}
    assert p["headway_s"].baseline == 600.0 and p["north.headway_s"].baseline == 900.0
    assert p["north.offset_s"].baseline == 60.0 and p["headway_s"].unit == "s"
    assert BusHeadway().parameters(tw)[0].baseline is None  # the two lines differ: no single baseline
    plan = iv.plan({"headway_s": 300.0, "north.offset_s": 0.0}, tw)
    assert plan.tolist() == [[300.0, 900.0], [0.0, 0.0]]
    iv.apply(tw, [None, {"headway_s": 300.0}, {"north.headway_s": 450.0}])
    assert tw.bus_headway.tolist() == [[600.0, 900.0], [300.0, 900.0], [600.0, 450.0]]
    # the k-th bus of a line keeps its id whatever the headway (no car flows here: lines are flows 0, 1)
    def ids(w, line):
        return sorted(tw.pop.vehicle_id[w][tw.pop.flow[w] == line].tolist())
    e0, n0 = ids(0, 0)[0], ids(0, 1)[0]
    assert n0 - e0 == 1_000_000
    assert (ids(0, 0), ids(1, 0), ids(2, 0)) == ([e0], [e0, e0 + 1], [e0])  # departures 0 | 0, 300 | 0
    assert (ids(0, 1), ids(1, 1), ids(2, 1)) == ([n0], [n0], [n0, n0 + 1])  # 60 | 60 | 60, 510
    assert tw.bus_line_agents[1].dispatch_times(2) == [60.0, 510.0]
    cfg_iv = interventions.get(OmegaConf.create({"name": "bus_headway", "per_line": {"east": {"headway_s": 300}}}))
    assert cfg_iv.config_values() == {"east.headway_s": 300}


def test_bad_input_is_a_clear_error():
    line = BusLineConfig(name="L", route=["W0_J0_0", "J0_0_E0"], stops=[BusStopConfig(edge="J0_0_E0", pos_m=150.0)])
    tw = _twin(WorldBatch.replications(0, 1, arms=2), 60.0, [line])
    iv = BusHeadway()
    with pytest.raises(ConfigError, match=r"intervention\.headway_s=10.*\[60, 3600\] s"):
        iv.validate({"headway_s": 10}, tw)
    with pytest.raises(ConfigError, match=r"intervention\.headway=300.*Did you mean 'headway_s'"):
        iv.validate({"headway": 300}, tw)
    with pytest.raises(ConfigError, match=r"intervention\.lines='Q'.*Valid: L"):
        BusHeadway({"lines": ["Q"]}).parameters(tw)
    plain = _twin(WorldBatch.replications(0, 1), 60.0, [], flows={"N": 100.0})
    with pytest.raises(ConfigError, match="a scenario with bus lines.*scenario=bus_corridor"):
        iv.parameters(plain)
    bad_edge = BusLineConfig(name="L", route=["W0_J0_0", "J0_0_E0"], stops=[BusStopConfig(edge="J0_0_N0", pos_m=150.0)])
    with pytest.raises(ConfigError, match=r"scenario\.bus_lines\[L\]\.stops\[0\]\.edge='J0_0_N0'"):
        _twin(WorldBatch.replications(0, 1), 60.0, [bad_edge])
    near = BusLineConfig(name="L", route=["W0_J0_0", "J0_0_E0"], stops=[BusStopConfig(edge="J0_0_E0", pos_m=5.0)])
    with pytest.raises(ConfigError, match=r"stops\[0\]\.pos_m=5\.0.*\[30, 300\] m"):
        _twin(WorldBatch.replications(0, 1), 60.0, [near])
    no_route = BusLineConfig(name="L", stops=[BusStopConfig(edge="J0_0_E0", pos_m=150.0)])
    with pytest.raises(ConfigError, match=r"bus_lines\[0\]\.route=None.*from_edge and to_edge"):
        _twin(WorldBatch.replications(0, 1), 60.0, [no_route])


def test_scenarios_without_buses_keep_their_outputs():
    """No bus line: no bus metrics, groups, tables or trip columns (the car-only twin as before)."""
    tw = _twin(WorldBatch.replications(0, 1), 60.0, [], flows={"N": 300.0, "E": 0.0, "S": 0.0, "W": 0.0})
    r = tw.run(progress=False)
    assert not any(m.startswith("bus_") for m in r.metrics) and "mode" not in r.tables["trips"]
    assert not {"bus_trips", "bus_stops", "bus_waits"} & set(r.tables) and set(r.groups["group_kind"]) <= {"origin"}
    assert tw.state.next_stop is None


# ---------------------------------------------------------------------------------------------
def _cli(*args, timeout=600):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "twins", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.mark.slow
def test_cli_run_and_sweep(tmp_path):
    """The README command (shortened) and a two-job sweep with its summary."""
    r = _cli("run", "scenario=bus_corridor", "intervention=bus_headway", "intervention.headway_s=300",
             "replications=2", "horizon_s=240", f"hydra.run.dir={tmp_path}/run")
    assert r.returncode == 0, r.stderr[-3000:]
    eff = pd.read_parquet(tmp_path / "run" / "effects.parquet")
    assert {"bus_passenger_wait_s", "bus_travel_time_s"} <= set(eff["metric"])
    assert (tmp_path / "run" / "figures" / "effects.png").exists()
    sweep = tmp_path / "sweep"
    r = _cli("run", "-m", "scenario=bus_corridor", "intervention=bus_headway", "intervention.headway_s=300,600",
             "replications=2", "horizon_s=240", "output.figures=false", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-3000:]
    s = pd.read_parquet(sweep / "summary.parquet")
    assert sorted(s["job"].unique()) == ["0", "1"]
    d = s[s["metric"] == "bus_passenger_wait_s"].set_index("override:intervention.headway_s")
    assert d.loc["600", "effect"] == 0.0  # 600 s is the scenario's own headway: the null intervention
    assert math.isfinite(d.loc["300", "effect"])
