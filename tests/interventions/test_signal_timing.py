"""Interventions as do-operators: the signal-timing intervention, counterfactual runs, sweeps.

Pins causal contract item 1 (a null intervention gives bit-identical worlds and an
effect of exactly 0.0), the direction and significance of a known effect, the
variance reduction of pairing, bad-input errors, and the CLI sweep summary.
"""
from __future__ import annotations

import json
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
from interventions import counterfactual as cf
from interventions.signal_timing import SignalTiming
from scenarios.traffic import JunctionScenario, junction_scenario
from twins.core.errors import ConfigError
from twins.core.worlds import WorldBatch
from twins.traffic.model import TrafficTwin

ROOT = Path(__file__).resolve().parents[2]


def _junction_twin(worlds, horizon=300.0, **kw):
    s = OmegaConf.structured(JunctionScenario(**kw))
    return TrafficTwin(junction_scenario(s, horizon), worlds, dt=1.0, horizon=horizon)


# ---------------------------------------------------------------------------------------------
# the protocol
def test_registry_and_parameter_space_baselines_from_the_scenario():
    iv = interventions.get(OmegaConf.create({"name": "signal_timing"}))
    assert isinstance(iv, SignalTiming) and iv.name == "signal_timing"
    assert interventions.get("none").name == "none"
    tw = _junction_twin(WorldBatch.replications(0, 1))
    params = {p.name: p for p in iv.parameters(tw)}
    assert params["cycle_s"].baseline == 60.0 and params["cycle_s"].unit == "s"
    assert params["cycle_s"].low == 24.0  # 2 × (3 s yellow + 2 s all red) + 2 × 7 s min green
    assert params["green_split"].baseline == 0.5
    assert params["offset_s"].baseline == 0.0
    assert "J0_0.cycle_s" in params  # per-junction form
    assert iv.baseline(tw)["cycle_s"] == 60.0


def test_apply_writes_a_different_vector_into_each_world_keeping_yellow_and_all_red():
    worlds = WorldBatch.replications(0, 1, arms=3)
    tw = _junction_twin(worlds)
    iv = SignalTiming()
    iv.apply(tw, [None, {"cycle_s": 90.0}, {"cycle_s": 40.0, "green_split": 0.3, "offset_s": 5.0}])
    d = tw.worlds.params["signal_durations"][:, 0].cpu()
    assert d[0].tolist() == [25.0, 3.0, 2.0, 25.0, 3.0, 2.0]
    assert d[1].tolist() == [40.0, 3.0, 2.0, 40.0, 3.0, 2.0]
    assert torch.allclose(d[2], torch.tensor([9.0, 3.0, 2.0, 21.0, 3.0, 2.0], dtype=torch.float64))
    assert tw.worlds.params["signal_offsets"][:, 0].tolist() == [0.0, 0.0, 5.0]
    assert tw.controllers[0].phase_durations(1)[0] == 40.0  # the Mesa controller sees its world's plan


# ---------------------------------------------------------------------------------------------
# (a) causal contract item 1
def test_null_intervention_gives_bit_identical_worlds_and_exact_zero_effects(run_cf):
    """Every parameter set to the scenario's own value: arms identical, effect exactly 0.0."""
    out, eff = run_cf("scenario=junction", "intervention=signal_timing", "intervention.cycle_s=60",
                      "intervention.green_split=0.5", "intervention.offset_s=0", "intervention.offset_step_s=0",
                      "replications=3", "horizon_s=600")
    assert eff is not None and len(eff)
    measured = eff[eff["n"] > 0]
    assert set(measured["scope"]) == {"network", "group"}
    assert set(measured["group_kind"]) >= {"origin", "approach"}
    assert (measured["effect"] == 0.0).all(), measured[measured["effect"] != 0.0]
    assert (measured["ci_low"] == 0.0).all() and (measured["ci_high"] == 0.0).all()
    w = pd.read_parquet(out / "worlds.parquet")
    a0 = w[w["arm"] == 0].drop(columns=["world", "arm"]).reset_index(drop=True)
    a1 = w[w["arm"] == 1].drop(columns=["world", "arm"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a0, a1, check_exact=True)
    assert a0["throughput_veh"].min() > 50  # traffic moved: the comparison is not vacuous
    trips = pd.read_parquet(out / "trips.parquet")
    arm = dict(zip(w["world"], w["arm"]))
    rep = dict(zip(w["world"], w["replication"]))
    trips = trips.assign(arm=trips["world"].map(arm), rep=trips["world"].map(rep)).drop(columns=["world"])
    t0 = trips[trips["arm"] == 0].drop(columns="arm").sort_values(["rep", "vehicle_id"]).reset_index(drop=True)
    t1 = trips[trips["arm"] == 1].drop(columns="arm").sort_values(["rep", "vehicle_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(t0, t1, check_exact=True)  # every vehicle's trajectory outcome


def test_null_intervention_twin_state_is_bit_identical():
    worlds = WorldBatch.replications(4, 2, arms=2)
    tw = _junction_twin(worlds, horizon=300.0)
    iv = SignalTiming()
    arms = cf.apply_arms(iv, tw, [cf.Arm(0, "baseline"), cf.Arm(1, "same", iv.baseline(tw))])
    assert arms[1].values["cycle_s"] == 60.0
    p = tw.worlds.params
    assert torch.equal(p["signal_durations"][:2], p["signal_durations"][2:])
    assert torch.equal(p["signal_offsets"][:2], p["signal_offsets"][2:])
    tw.run(progress=False)
    for k, v in tw.state.columns().items():
        if k == "world":
            continue
        assert torch.equal(v[:2], v[2:]), k


# ---------------------------------------------------------------------------------------------
# (b) direction predicted by theory
def test_longer_cycle_at_low_demand_raises_delay_at_isolated_junction(run_cf):
    """Webster: above the optimal cycle (~30 s here), delay grows with the cycle (red waits grow)."""
    _, eff = run_cf("scenario=junction", "intervention=signal_timing", "intervention.cycle_s=120",
                    "scenario.flows_veh_h={N: 300, E: 300, S: 300, W: 300}", "scenario.signals.cycle_s=40",
                    "replications=3", "horizon_s=600")
    r = eff[(eff["scope"] == "network") & (eff["metric"] == "mean_delay_s")].iloc[0]
    assert r["effect"] > 5.0
    assert r["ci_low"] > 0.0, r.to_dict()  # the paired interval excludes zero
    # every approach is worse off (per-group effects)
    g = eff[(eff["scope"] == "group") & (eff["group_kind"] == "origin") & (eff["metric"] == "mean_delay_s")]
    assert len(g) == 4 and (g["effect"] > 0).all()


# ---------------------------------------------------------------------------------------------
# (c) what common random numbers buy
def test_paired_interval_narrower_than_unpaired_on_arterial(run_cf, capsys):
    # eight replications: with four the paired interval's t quantile (3 degrees of freedom, 3.18) is 1.3 times the
    # unpaired one's (6, 2.45), so a mean delay whose arms correlate less than about 0.4 came out wider (1.06 after
    # the stop line's gap, kernels rule 4); with eight the factor is 1.10 (2.36 against 2.14)
    out, eff = run_cf("scenario=arterial", "intervention=signal_timing", "intervention.cycle_s=90",
                      "replications=8", "horizon_s=600")
    net = eff[eff["scope"] == "network"].set_index("metric")
    for m in ("mean_travel_time_s", "mean_delay_s", "total_delay_veh_h"):
        r = net.loc[m]
        assert r["width_ratio"] < 1.0, (m, r.to_dict())
    ratio = net.loc["total_delay_veh_h", "width_ratio"]
    with capsys.disabled():
        print("\n[arterial, cycle 60→90 s, R=8, 600 s] paired/unpaired CI width ratio: "
              + ", ".join(f"{m}={net.loc[m, 'width_ratio']:.3f}"
                          for m in ("mean_travel_time_s", "mean_delay_s", "total_delay_veh_h", "throughput_veh")))
    assert ratio < 0.9
    ej = json.loads((out / "effects.json").read_text())
    assert ej["arm1"]["values"] == {"cycle_s": 90.0}
    assert ej["arm1"]["metrics"]["mean_delay_s"]["n"] == 8
    met = json.loads((out / "metrics.json").read_text())
    assert set(met) == {"arm0", "arm1"} and met["arm0"]["label"] == "baseline"


# ---------------------------------------------------------------------------------------------
# (e) bad input
def test_unknown_parameter_and_out_of_bounds_values_are_clear_errors():
    tw = _junction_twin(WorldBatch.replications(0, 1, arms=2))
    iv = SignalTiming()
    with pytest.raises(ConfigError, match=r"intervention\.cycle=90.*Did you mean 'cycle_s'"):
        iv.validate({"cycle": 90}, tw)
    with pytest.raises(ConfigError, match=r"intervention\.cycle_s=10.*\[24, 180\] s"):
        iv.validate({"cycle_s": 10.0}, tw)
    with pytest.raises(ConfigError, match=r"intervention\.cycle_s=500"):
        iv.validate({"cycle_s": 500.0}, tw)
    with pytest.raises(ConfigError, match=r"green_split=0\.9.*\[0\.175, 0\.825\]"):
        iv.validate({"cycle_s": 50.0, "green_split": 0.9}, tw)  # NS green 36 s, EW 4 s < 7 s min green
    with pytest.raises(ConfigError, match=r"intervention\.junctions='J9_9'.*J0_0"):
        SignalTiming({"junctions": ["J9_9"]}).parameters(tw)
    with pytest.raises(ConfigError, match="intervention.name='signal_timng'.*signal_timing"):
        interventions.get("signal_timng")
    with pytest.raises(ConfigError, match="no parameters"):
        interventions.get("none").apply(tw, [None, {"cycle_s": 90}])


def _cli(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "twins", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.mark.slow
def test_cli_rejects_unknown_intervention_setting_and_bad_cycle(tmp_path):
    r = _cli("run", "scenario=junction", "intervention=signal_timing", "intervention.cycle=90",
             f"hydra.run.dir={tmp_path}/a")
    assert r.returncode == 2 and "intervention.cycle: no such setting" in r.stderr, r.stderr
    r = _cli("run", "scenario=junction", "intervention=signal_timing", "intervention.cycle_s=10",
             "horizon_s=10", "replications=1", f"hydra.run.dir={tmp_path}/b")
    assert r.returncode == 2 and "intervention.cycle_s=10" in r.stderr and "[24, 180] s" in r.stderr, r.stderr


# ---------------------------------------------------------------------------------------------
# (f) sweeps
@pytest.mark.slow
def test_cli_sweep_writes_summary(tmp_path):
    sweep = tmp_path / "sweep"
    r = _cli("run", "-m", "scenario=junction", "intervention=signal_timing", "intervention.cycle_s=60,90",
             "replications=2", "horizon_s=240", "output.figures=false", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-3000:]
    s = pd.read_parquet(sweep / "summary.parquet")
    assert sorted(s["job"].unique()) == ["0", "1"]
    d = s[s["metric"] == "mean_delay_s"].set_index("override:intervention.cycle_s")
    assert d.loc["60", "effect"] == 0.0  # 60 s is the scenario's own cycle: the null intervention
    assert d.loc["90", "effect"] > 0.0
    assert {"baseline_mean", "treated_mean", "ci_low", "ci_high", "n", "unpaired_ci_low"} <= set(s.columns)
    assert (sweep / "summary.png").exists()
    assert (sweep / "0" / "effects.parquet").exists() and (sweep / "1" / "metrics.json").exists()


def test_sweep_summary_from_folders(tmp_path, run_cf):
    """The callback's work, without a subprocess: two job folders → summary.parquet + figure."""
    from interventions.sweep import summarize_sweep

    for i, c in enumerate((60, 90)):
        out, _ = run_cf("scenario=junction", "intervention=signal_timing", f"intervention.cycle_s={c}",
                        "replications=2", "horizon_s=120", name=f"sweep/{i}")
        (out / ".hydra").mkdir()
        (out / ".hydra" / "overrides.yaml").write_text(f"- intervention.cycle_s={c}\n")
    s = summarize_sweep(tmp_path / "sweep")
    assert len(s) == 2 * s["metric"].nunique()
    assert (tmp_path / "sweep" / "summary.parquet").exists() and (tmp_path / "sweep" / "summary.png").exists()
    assert s.loc[(s["job"] == "0") & (s["metric"] == "mean_delay_s"), "effect"].item() == 0.0


def test_intervention_none_keeps_the_plain_run_folder(run_cf):
    out, eff = run_cf("scenario=junction", "replications=2", "horizon_s=120")
    assert eff is None and not (out / "arms.json").exists()
    met = json.loads((out / "metrics.json").read_text())
    assert "mean_delay_s" in met and met["mean_delay_s"]["n"] == 2
    assert math.isfinite(met["mean_delay_s"]["mean"])
    assert np.isfinite(pd.read_parquet(out / "worlds.parquet")["mean_travel_time_s"]).all()


# ---------------------------------------------------------------------------------------------
# (g) real multi-phase programs (issue 18): simplex shares, the phases' own bounds, repair, crossings
from interventions.signal_timing import (coords_from_shares, crossing_greens, project,  # noqa: E402
                                         shares_from_coords)
from twins.traffic.network import Phase  # noqa: E402

NS, NSL, EW, EWL = "GGGrrrrrGGGrrrrr", "rrrGrrrrrrrGrrrr", "rrrrGGGrrrrrGGGr", "rrrrrrrGrrrrrrrG"


def _four_phase_twin(worlds, min_dur=5.0, max_dur=50.0, crossing_links=None):
    """The junction with a cologne1-like program: through and protected-left greens per axis (29/6/29/6 s),
    each followed by 3 s of yellow (lost time 12 s, cycle 82 s); greens carry minDur/maxDur."""
    s = junction_scenario(OmegaConf.structured(JunctionScenario()), 300.0)
    prog = s.network.programs["J0_0"]
    ph = []
    for dur, st in ((29.0, NS), (6.0, NSL), (29.0, EW), (6.0, EWL)):
        ph += [Phase(dur, st, min_dur=min_dur, max_dur=max_dur), Phase(3.0, st.replace("G", "y"))]
    prog.phases, prog.crossing_links = ph, crossing_links
    return TrafficTwin(s, worlds, dt=1.0, horizon=300.0)


def _greens(d):
    return [float(d[k]) for k in (0, 2, 4, 6)]


def test_simplex_map_covers_the_box_and_inverts():
    rng = np.random.default_rng(0)
    for K in (2, 3, 4, 6):
        for v in rng.random((50, K - 1)):
            s = shares_from_coords(v)
            assert len(s) == K and min(s) >= 0 and abs(sum(s) - 1) < 1e-12
            assert np.allclose(coords_from_shares(s), v, atol=1e-9)
        assert shares_from_coords([0.0] * (K - 1))[-1] == pytest.approx(1.0)  # a corner of the box
    assert shares_from_coords([0.3]) == pytest.approx([0.3, 0.7])  # K = 2: the green split itself
    # uniform box -> uniform simplex: every share has mean 1/K
    v = rng.random((20000, 3))
    assert np.allclose(np.mean([shares_from_coords(x) for x in v], axis=0), 0.25, atol=0.01)


def test_projection_is_the_nearest_feasible_split():
    g = project([38.8, 0.4, 0.4, 0.4], [5] * 4, [50] * 4, 40.0)
    assert g == pytest.approx([25.0, 5.0, 5.0, 5.0]) and sum(g) == pytest.approx(40.0, abs=1e-12)
    g = project([64.6, 13.4, 64.6, 13.4], [5] * 4, [50] * 4, 156.0)
    assert g == pytest.approx([50.0, 28.0, 50.0, 28.0])


def test_multi_phase_parameters_and_the_baseline_is_bit_identical():
    tw = _four_phase_twin(WorldBatch.replications(0, 1, arms=2))
    iv = SignalTiming()
    params = {p.name: p for p in iv.parameters(tw)}
    assert {"share4_1", "share4_2", "share4_3", "J0_0.share_1"} <= set(params) and "green_split" not in params
    assert params["cycle_s"].baseline == 82.0
    assert params["cycle_s"].low == 32.0 and params["cycle_s"].high == 180.0  # 12 s lost + 4 × minDur 5 s
    assert all(params[f"share4_{i}"].low == 0.0 and params[f"share4_{i}"].high == 1.0 for i in (1, 2, 3))
    base = iv.baseline(tw)
    assert shares_from_coords([base[f"share4_{i}"] for i in (1, 2, 3)]) == pytest.approx([29 / 70, 6 / 70] * 2)
    iv.apply(tw, [None, base])
    d = tw.worlds.params["signal_durations"]
    assert torch.equal(d[0], d[1])  # bit for bit


def test_shares_sum_to_the_effective_green_within_the_phase_bounds():
    tw = _four_phase_twin(WorldBatch.replications(0, 1))
    iv = SignalTiming()
    rng = np.random.default_rng(1)
    for cyc, v in zip(rng.uniform(32, 180, 200), rng.random((200, 3))):
        vals = iv.validate({"cycle_s": float(cyc), **{f"share4_{i + 1}": float(x) for i, x in enumerate(v)}}, tw)
        d = iv.plan(vals, tw)[0][0]
        g = _greens(d)
        # in whole seconds (SUMO switches between steps), summing to the cycle's green to the nearest second
        assert all(x == round(x) for x in g) and sum(g) == round(cyc - 12.0), (cyc, g)
        assert min(g) >= 5.0 - 1e-9 and max(g) <= 50.0 + 1e-9, (cyc, v, g)
        assert [float(d[k]) for k in (1, 3, 5, 7)] == [3.0] * 4  # yellows kept
    # feasible shares are honoured exactly
    vals = {"cycle_s": 112.0, **dict(zip(["share4_1", "share4_2", "share4_3"], coords_from_shares([4, 1, 4, 1])))}
    assert _greens(iv.plan(vals, tw)[0][0]) == pytest.approx([40.0, 10.0, 40.0, 10.0])
    # a config's green_shares become the same coordinates
    cv = SignalTiming({"green_shares": [0.4, 0.1, 0.4, 0.1], "cycle_s": 112.0}).config_values()
    assert _greens(iv.plan(iv.validate(cv, tw), tw)[0][0]) == pytest.approx([40.0, 10.0, 40.0, 10.0])


def test_cycle_alone_scales_the_baseline_split_and_repairs_onto_the_bounds():
    """Today's bug: a 45 s cycle scaled the 6 s lefts below the minimum and blamed green_split=None. Now
    the proportional greens are projected onto [minDur, maxDur] (repair: true) ..."""
    tw = _four_phase_twin(WorldBatch.replications(0, 1))
    iv = SignalTiming()
    # (11.5 s each in the projection; in whole seconds, the tie's remainder goes to the first)
    assert _greens(iv.plan(iv.validate({"cycle_s": 45.0}, tw), tw)[0][0]) == [12.0, 5.0, 11.0, 5.0]
    assert _greens(iv.plan(iv.validate({"cycle_s": 168.0}, tw), tw)[0][0]) == pytest.approx([50, 28, 50, 28])
    # ... or refused naming the parameter at fault (repair: false)
    strict = SignalTiming({"repair": False})
    with pytest.raises(ConfigError, match=r"intervention\.cycle_s=45\.0 .*phase 2 would get 2\.83 s, needs >= 5 s "
                                          r"\(minDur=5 s\)") as e:
        strict.validate({"cycle_s": 45.0}, tw)
    assert "green_split" not in str(e.value)
    corner = {"cycle_s": 60.0, "share4_1": 0.99, "share4_2": 0.5, "share4_3": 0.5}
    with pytest.raises(ConfigError, match=r"intervention\.share4_1\.\.3=.*at junction 'J0_0'.*needs >= 5 s"):
        strict.validate(corner, tw)
    assert _greens(iv.plan(iv.validate(corner, tw), tw)[0][0]) == pytest.approx([33.0, 5.0, 5.0, 5.0])
    # a cycle too short for the minimum greens names the cycle, with the feasible range
    with pytest.raises(ConfigError, match=r"intervention\.J0_0\.cycle_s=30\.0 .*\[32, 180\] s"):
        iv.validate({"J0_0.cycle_s": 30.0}, tw)
    # green_split on a four-green program is not one of its parameters: the shares are
    with pytest.raises(ConfigError, match=r"J0_0\.green_split=0\.5 is invalid.*J0_0\.share_1"):
        iv.validate({"J0_0.green_split": 0.5}, tw)


def test_min_green_s_overrides_the_phase_minimum_and_max_dur_caps():
    tw = _four_phase_twin(WorldBatch.replications(0, 1))
    p = SignalTiming().selected(tw)[0]
    assert SignalTiming().bounds(p, tw)[:2] == ([5.0] * 4, [50.0] * 4)
    assert SignalTiming({"min_green_s": 8.0}).bounds(p, tw)[:2] == ([8.0] * 4, [50.0] * 4)
    assert SignalTiming({"min_green_s": 3.0}).bounds(p, tw)[0] == [3.0] * 4  # overrides downwards too
    assert {q.name: q for q in SignalTiming({"min_green_s": 8.0}).parameters(tw)}["cycle_s"].low == 44.0
    assert SignalTiming({"max_green_s": 40.0}).bounds(p, tw)[1] == [40.0] * 4
    no_dur = _four_phase_twin(WorldBatch.replications(0, 1), min_dur=None, max_dur=None)
    q = SignalTiming().selected(no_dur)[0]
    lo, hi, _ = SignalTiming().bounds(q, no_dur)
    assert lo == [7.0, 6.0, 7.0, 6.0] and hi == [math.inf] * 4  # default 7 s, never above the phase's own


def test_pedestrian_floor_only_on_phases_that_serve_a_crossing():
    # links 1 and 9 (the N and S through lanes here) stand for crossings: only the NS through phase serves one
    tw = _four_phase_twin(WorldBatch.replications(0, 1), crossing_links=[1, 9])
    iv = SignalTiming({"pedestrian_green_s": 15.7})
    p = iv.selected(tw)[0]
    assert p.crossing == (True, False, False, False)
    assert iv.bounds(p, tw)[0] == [15.7, 5.0, 5.0, 5.0]
    assert crossing_greens(tw)["crossing_phases"] == {"J0_0": [0]}
    named = SignalTiming({"pedestrian_green_s": 15.7, "pedestrian_phases": {"J0_0": [4]}})
    assert named.bounds(p, tw)[0] == [15.7, 5.0, 15.7, 5.0]
    none = _four_phase_twin(WorldBatch.replications(0, 1), crossing_links=[])
    assert iv.bounds(iv.selected(none)[0], none)[0] == [5.0] * 4  # the network has no crossing
    ev = crossing_greens(none)
    assert ev["min_green_s"] is None and "no phase serves a pedestrian crossing" in ev["note"]
    unknown = _four_phase_twin(WorldBatch.replications(0, 1), crossing_links=None)  # generated: every green
    assert iv.bounds(iv.selected(unknown)[0], unknown)[0] == [15.7] * 4
    assert crossing_greens(unknown)["min_green_s"] == 6.0
    with pytest.raises(ConfigError, match=r"pedestrian_phases\.J9=.*J0_0"):
        SignalTiming({"pedestrian_green_s": 15.7, "pedestrian_phases": {"J9": [0]}}).bounds(p, tw)


def _netgenerate(tmp_path, *args):
    from twins.traffic.sumo_bridge import SumoNotFoundError, find_sumo

    try:
        exe = find_sumo("netgenerate")
    except SumoNotFoundError as e:
        pytest.skip(f"SUMO is not installed ({e})")
    out = tmp_path / "net.net.xml"
    r = subprocess.run([exe, *args, "--seed", "1", "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return out


@pytest.mark.sumo
def test_sumo_crossings_and_phase_bounds_are_imported(tmp_path):
    """netgenerate --crossings.guess: each signal's crossing links are kept; the pedestrian floor lands on the
    phases that show them green (37 s), not on the 5 s car-only phases after them."""
    import warnings

    from twins.traffic import sumo
    from twins.traffic.model import TrafficScenario
    from twins.traffic.demand import Demand, Flow

    net_file = _netgenerate(tmp_path, "--grid", "--grid.number", "3", "--grid.length", "150",
                            "--grid.attach-length", "100", "--default-junction-type", "traffic_light",
                            "--sidewalks.guess", "--crossings.guess")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = sumo.load_net(net_file)
    prog = net.programs["B1"]
    assert prog.crossing_links and all(0 <= i < prog.n_links for i in prog.crossing_links)
    serving = [k for k in range(len(prog.phases)) if prog.serves_crossing(k)]
    assert serving == [0, 3]
    demand = Demand(flows=[Flow("f", [next(iter(net.edges))], rate=100.0)])
    tw = TrafficTwin(TrafficScenario(net, demand, "grid"), WorldBatch.replications(0, 1), dt=1.0, horizon=60.0)
    iv = SignalTiming({"pedestrian_green_s": 15.7})
    p = next(q for q in iv.selected(tw) if q.id == "B1")
    lo = dict(zip(p.green, iv.bounds(p, tw)[0]))
    assert lo[0] == lo[3] == 15.7 and lo[1] == lo[4] == 5.0  # 5 s car-only greens: their own length
    ev = crossing_greens(tw)
    assert ev["min_green_s"] == 37.0 and ev["crossing_phases"]["B1"] == [0, 3]
    assert iv.validate({"cycle_s": 60.0}, tw)  # a 60 s cycle fits: 2 × 15.7 + 2 × 5 + 2 × 3 s


def test_green_split_is_repaired_on_programs_with_phase_bounds():
    """Two-phase programs with minDur/maxDur (real programs): a split outside the bounds is projected like the
    shares; generated programs (no minDur/maxDur) keep refusing it with the valid range (test above)."""
    s = junction_scenario(OmegaConf.structured(JunctionScenario()), 300.0)
    for k in (0, 3):
        s.network.programs["J0_0"].phases[k].min_dur, s.network.programs["J0_0"].phases[k].max_dur = 10.0, 40.0
    tw = TrafficTwin(s, WorldBatch.replications(0, 1), dt=1.0, horizon=300.0)
    d = SignalTiming().plan(SignalTiming().validate({"cycle_s": 50.0, "green_split": 0.9}, tw), tw)[0][0]
    assert [float(d[0]), float(d[3])] == pytest.approx([30.0, 10.0])  # 36/4 s -> the nearest split within [10, 40]
    with pytest.raises(ConfigError, match=r"green_split=0\.9 .*\[0\.250, 0\.750\]"):
        SignalTiming({"repair_green_split": False}).validate({"cycle_s": 50.0, "green_split": 0.9}, tw)
