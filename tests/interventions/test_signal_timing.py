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
    for k, v in tw.state.items():
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
    out, eff = run_cf("scenario=arterial", "intervention=signal_timing", "intervention.cycle_s=90",
                      "replications=4", "horizon_s=600")
    net = eff[eff["scope"] == "network"].set_index("metric")
    for m in ("mean_travel_time_s", "mean_delay_s", "total_delay_veh_h"):
        r = net.loc[m]
        assert r["width_ratio"] < 1.0, (m, r.to_dict())
    ratio = net.loc["total_delay_veh_h", "width_ratio"]
    with capsys.disabled():
        print("\n[arterial, cycle 60→90 s, R=4, 600 s] paired/unpaired CI width ratio: "
              + ", ".join(f"{m}={net.loc[m, 'width_ratio']:.3f}"
                          for m in ("mean_travel_time_s", "mean_delay_s", "total_delay_veh_h", "throughput_veh")))
    assert ratio < 0.9
    ej = json.loads((out / "effects.json").read_text())
    assert ej["arm1"]["values"] == {"cycle_s": 90.0}
    assert ej["arm1"]["metrics"]["mean_delay_s"]["n"] == 4
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
