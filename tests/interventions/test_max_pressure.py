"""The ``max_pressure`` intervention: adaptive signal control (Varaiya 2013) per world.

Pins: (a) a disabled controller gives bit-identical arms and exact-zero effects, and the
fixed-time arm of a mixed batch is untouched by its neighbours' controller; (b) at a junction
with strongly unbalanced demand and a 50/50 fixed plan, max pressure lowers mean delay with a
paired interval excluding zero; (c) greens last between min and max green, switches go through
the program's yellow and all-red, and only the program's phase states are ever shown (no
conflicting greens); the pure controller picks the highest pressure per world; (d) bad input.
"""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

import interventions
from interventions import counterfactual as cf
from interventions.max_pressure import MaxPressure
from scenarios.traffic import JunctionScenario, junction_scenario
from twins.core.errors import ConfigError
from twins.core.worlds import WorldBatch
from twins.traffic import control
from twins.traffic.tables import SIG_GREEN, SIG_YELLOW
from twins.traffic.model import TrafficTwin

UNBALANCED = {"N": 900.0, "E": 150.0, "S": 900.0, "W": 150.0}


def _twin(worlds, horizon=300.0, **kw):
    s = OmegaConf.structured(JunctionScenario(**kw))
    return TrafficTwin(junction_scenario(s, horizon), worlds, dt=1.0, horizon=horizon)


# ---------------------------------------------------------------------------------------------
# (a) causal contract item 1
def test_disabled_controller_gives_bit_identical_arms_and_exact_zero_effects(run_cf):
    out, eff = run_cf("scenario=junction", "intervention=max_pressure", "intervention.enabled=false",
                      "replications=2", "horizon_s=300")
    measured = eff[eff["n"] > 0]
    assert len(measured) and (measured["effect"] == 0.0).all(), measured[measured["effect"] != 0.0]
    assert (measured["ci_low"] == 0.0).all() and (measured["ci_high"] == 0.0).all()
    w = pd.read_parquet(out / "worlds.parquet")
    a0 = w[w["arm"] == 0].drop(columns=["world", "arm"]).reset_index(drop=True)
    a1 = w[w["arm"] == 1].drop(columns=["world", "arm"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a0, a1, check_exact=True)
    assert a0["throughput_veh"].min() > 20  # traffic moved


def test_fixed_time_arm_is_untouched_by_the_controller_in_the_same_batch():
    """Baseline worlds of a batch whose other arm runs max pressure equal a batch with no controller."""
    H = 300.0
    plain = _twin(WorldBatch.replications(3, 2, arms=2), H, flows_veh_h=UNBALANCED)
    plain.run(progress=False)
    mixed = _twin(WorldBatch.replications(3, 2, arms=2), H, flows_veh_h=UNBALANCED)
    cf.apply_arms(MaxPressure(), mixed, [cf.Arm(0, "baseline"), cf.Arm(1, "mp", {"enabled": True})])
    assert mixed.worlds.params["max_pressure"].tolist() == [[False], [False], [True], [True]]
    mixed.run(progress=False)
    for k, v in mixed.state.columns().items():
        assert torch.equal(v[:2], getattr(plain.state, k)[:2]), k
    assert not torch.equal(mixed.state.time_loss[2:], plain.state.time_loss[2:])  # the controller acted


# ---------------------------------------------------------------------------------------------
# (b) direction predicted by theory
def test_max_pressure_cuts_delay_under_unbalanced_demand_and_an_even_split(run_cf, capsys):
    """N/S 900 veh/h, E/W 150 veh/h with a 25 s / 25 s fixed plan: the plan starves the heavy approaches
    and idles green on the light ones; max pressure gives green where the queues are."""
    _, eff = run_cf("scenario=junction", "intervention=max_pressure",
                    "scenario.flows_veh_h={N: 900, E: 150, S: 900, W: 150}",
                    "replications=4", "horizon_s=600")
    r = eff[(eff["scope"] == "network") & (eff["metric"] == "mean_delay_s")].iloc[0]
    with capsys.disabled():
        print(f"\n[junction N/S 900, E/W 150 veh/h, 60 s cycle 50/50, R=4, 600 s] max pressure mean delay "
              f"{r['baseline_mean']:.1f} -> {r['treated_mean']:.1f} s, effect {r['effect']:+.2f} s "
              f"[{r['ci_low']:+.2f}, {r['ci_high']:+.2f}]")
    assert r["effect"] < -2.0
    assert r["ci_high"] < 0.0, r.to_dict()  # the paired interval excludes zero


# ---------------------------------------------------------------------------------------------
# (c) what the controller may and may not do
def _record(tw, steps):
    cur, sig = [], []
    for _ in range(steps):
        tw.step()
        cur.append(tw.signal_controls[0].max_pressure_state.cur[:, 0].clone())
        sig.append(tw.signal_state.clone())
    return torch.stack(cur, 1), torch.stack(sig, 1)  # [W, T], [W, T, G]


def _runs(seq):
    """(phase, length) of consecutive runs."""
    out, start = [], 0
    for i in range(1, len(seq) + 1):
        if i == len(seq) or seq[i] != seq[start]:
            out.append((seq[start], i - start))
            start = i
    return out


def test_min_and_max_green_transitions_and_no_conflicting_greens():
    mn, mx = 10.0, 20.0
    H = 600.0
    tw = _twin(WorldBatch.replications(1, 2, arms=2), H, flows_veh_h=UNBALANCED)
    vals = [None, None, {"enabled": True, "min_green_s": mn, "max_green_s": mx, "decision_interval_s": 2.0},
            {"enabled": True, "min_green_s": mn, "max_green_s": mx, "decision_interval_s": 2.0}]
    MaxPressure().apply(tw, vals)
    cur, sig = _record(tw, int(H))
    code = tw.net.phase_code[0]  # [K, G]: the program's phase states (one program, links 0..15)
    dur = tw.signal_durations[0, 0].tolist()
    is_green = [bool((code[k] == SIG_GREEN).any() and not (code[k] == SIG_YELLOW).any()) for k in range(len(dur))]
    ns = torch.tensor([0, 1, 2, 3, 8, 9, 10, 11])
    ew = torch.tensor([4, 5, 6, 7, 12, 13, 14, 15])
    forced = early = 0
    for w in (2, 3):
        # every shown state is a phase of the program; NS and EW never green at once
        for t in range(sig.shape[1]):
            assert torch.equal(sig[w, t], code[int(cur[w, t])])
        g = sig[w] == SIG_GREEN
        assert not bool((g[:, ns].any(1) & g[:, ew].any(1)).any())
        runs = _runs(cur[w].tolist())
        for i, (k, n) in enumerate(runs):
            last = i == len(runs) - 1
            if is_green[k]:
                assert n <= mx, (w, i, k, n)
                if not last:
                    assert n >= mn, (w, i, k, n)
                    forced += n == mx
                    early += n < mx
                    # left through the program's yellow then all-red, with their planned durations
                    assert runs[i + 1] == (k + 1, dur[k + 1]) and runs[i + 2][0] == k + 2, runs[i:i + 3]
                    assert last or i + 2 == len(runs) - 1 or runs[i + 2][1] == dur[k + 2]
            elif not last and i > 0:
                assert n == dur[k], (w, i, k, n)
    assert forced > 0 and early > 0  # both rules were exercised
    assert (cur[2:] != cur[2:, :1]).any()  # the controller switched at all
    # baseline worlds: the fixed-time plan
    fixed = torch.stack([tw.net.phase_code[0][0]] * 25)
    assert torch.equal(sig[0, :25], fixed)


def test_pure_controller_picks_the_highest_pressure_per_world():
    """Two worlds, one program: queues on N/S in world 0, on E/W in world 1; after min green on
    phase 0 (NS), world 1 switches (through yellow) to phase 3 (EW), world 0 stays."""
    tw = _twin(WorldBatch.replications(0, 2))
    net = tw.net
    tables = control.program_tables(net)
    W = 2
    dur, off = tw.signal_durations, tw.signal_offsets
    q = torch.zeros(W, net.n_lanes, dtype=torch.float64)
    lane = {l: i for i, l in enumerate(tw.net_cpu.lane_ids)}
    for e in ("N0_J0_0", "S0_J0_0"):
        q[0, lane[f"{e}_0"]] = q[0, lane[f"{e}_1"]] = 5
    for e in ("E0_J0_0", "W0_J0_0"):
        q[1, lane[f"{e}_0"]] = q[1, lane[f"{e}_1"]] = 5
    pr = control.phase_pressure(q, net, tables)
    assert pr[0, 0, 0] > 0 and pr[0, 0, 3] == 0 and pr[1, 0, 3] > 0 and pr[1, 0, 0] == 0
    f = lambda v: torch.full((W,), v, dtype=torch.float64)  # noqa: E731
    state = None
    for t in range(0, 8):
        codes, cur, state = control.max_pressure_codes(state, float(t), q, dur, off, net, tables, f(5.0), f(60.0),
                                                        f(1.0))
    assert cur[:, 0].tolist() == [0, 1]  # world 1 is in the yellow after NS
    for t in range(8, 14):
        codes, cur, state = control.max_pressure_codes(state, float(t), q, dur, off, net, tables, f(5.0), f(60.0),
                                                        f(1.0))
    assert cur[:, 0].tolist() == [0, 3]  # yellow 3 s, all red 2 s, then EW green
    assert torch.equal(codes[1], net.phase_code[0, 3])


# ---------------------------------------------------------------------------------------------
# (d) bad input
def test_bad_input_is_a_clear_error():
    tw = _twin(WorldBatch.replications(0, 1, arms=2), 60.0)
    iv = MaxPressure()
    with pytest.raises(ConfigError, match=r"intervention\.min_green_s=50.*<= max_green_s=30"):
        iv.validate({"min_green_s": 50.0, "max_green_s": 30.0}, tw)
    with pytest.raises(ConfigError, match=r"intervention\.decision_interval_s=-5"):
        iv.validate({"decision_interval_s": -5.0}, tw)
    with pytest.raises(ConfigError, match=r"intervention\.decision_interval_s=0"):
        iv.validate({"decision_interval_s": 0.0}, tw)
    with pytest.raises(ConfigError, match=r"intervention\.min_green=.*Did you mean 'min_green_s'"):
        iv.validate({"min_green": 5.0}, tw)
    with pytest.raises(ConfigError, match=r"intervention\.junctions='J9_9'"):
        MaxPressure({"junctions": ["J9_9"]}).parameters(tw)
    with pytest.raises(ConfigError, match="min_green_s"):
        iv.apply(tw, [None, {"min_green_s": 70.0}])  # above the default max green (60 s)
    assert interventions.get("max_pressure").name == "max_pressure"


def test_config_composes_with_its_schema():
    from tests.interventions.conftest import compose_cfg

    cfg = compose_cfg("scenario=junction", "intervention=max_pressure", "intervention.max_green_s=45")
    iv = interventions.get(cfg.intervention)
    assert iv.config_values() == {"enabled": True, "min_green_s": 7.0, "max_green_s": 45.0,
                                  "decision_interval_s": 5.0}
    with pytest.raises(Exception, match="max_gren_s"):
        compose_cfg("scenario=junction", "intervention=max_pressure", "intervention.max_gren_s=45")
