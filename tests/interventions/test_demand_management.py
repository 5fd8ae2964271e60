"""``demand_management``: a cordon charge as a constant-elasticity demand response per origin zone.

Must show: the charge lowers the vehicles loaded from charged zones by about (1 − r)
(within binomial tolerance; uncharged zones unchanged, vehicle for vehicle) and lowers
mean delay, interval excluding zero; a zero charge gives bit-identical arms.
"""
from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

import interventions
from interventions import counterfactual as cf
from interventions.demand_management import DemandManagement
from scenarios.traffic import JunctionScenario, junction_scenario
from twins.core import noise
from twins.core.errors import ConfigError
from twins.core.worlds import WorldBatch
from twins.traffic.model import TrafficTwin

# a busy isolated junction (x ≈ 0.8 at a 60 s cycle): delay responds to demand
BUSY = ("scenario=junction", "scenario.flows_veh_h={N: 1100, E: 500, S: 1100, W: 500}")


def _twin(worlds, horizon=300.0, **kw):
    s = OmegaConf.structured(JunctionScenario(**kw))
    return TrafficTwin(junction_scenario(s, horizon), worlds, dt=1.0, horizon=horizon)


def _by_arm(out):
    w = pd.read_parquet(out / "worlds.parquet")
    trips = pd.read_parquet(out / "trips.parquet")
    return w, trips.assign(arm=trips["world"].map(dict(zip(w["world"], w["arm"]))),
                           rep=trips["world"].map(dict(zip(w["world"], w["replication"]))))


def test_choice_stream_appended():
    assert noise.Stream.CHOICE == 5
    assert [s.value for s in noise.Stream][:4] == [1, 2, 3, 4]  # old streams keep their numbers


def test_retention_is_the_stated_constant_elasticity_response():
    tw = _twin(WorldBatch.replications(0, 1))
    iv = interventions.get(OmegaConf.create({"name": "demand_management", "zones": {"N": True, "E": False},
                                             "base_cost": 4.0, "value_of_time": 12.0, "elasticity": -0.4}))
    assert isinstance(iv, DemandManagement)
    params = {p.name: p for p in iv.parameters(tw)}
    assert params["charge"].baseline == 0.0 and params["elasticity"].baseline == -0.4
    r = iv.retention({"charge": 8.0}, tw)
    free = tw.routes_cpu.route_free_time
    for i, f in enumerate(tw.scenario.demand.flows):
        if f.group == "N":
            cost = 4.0 + 12.0 * float(free[i]) / 3600.0
            assert r[i].item() == pytest.approx((1 + 8.0 / cost) ** -0.4, rel=1e-12)
            assert r[i] < 1
        else:
            assert r[i].item() == 1.0  # E explicitly uncharged; S and W not listed: uncharged
    assert torch.equal(iv.retention({"charge": 0.0}, tw), torch.ones(len(tw.scenario.demand.flows),
                                                                      dtype=torch.float64))
    z = iv.retention_by_zone({"charge": 8.0}, tw)
    assert z["S"] == 1.0 and 0.6 < z["N"] < 0.7  # (1 + 8 / ~4.2) ** -0.4


def test_bad_input_is_a_clear_error():
    tw = _twin(WorldBatch.replications(0, 1, arms=2))
    with pytest.raises(ConfigError, match=r"intervention\.zones\.X=True.*Valid: E, N, S, W"):
        DemandManagement({"zones": {"X": True}}).parameters(tw)
    with pytest.raises(ConfigError, match=r"intervention\.elasticity=0\.5"):
        DemandManagement({"elasticity": 0.5})
    with pytest.raises(ConfigError, match=r"intervention\.base_cost=0"):
        DemandManagement({"base_cost": 0})
    iv = DemandManagement()
    with pytest.raises(ConfigError, match=r"intervention\.charge=-1.*\[0, 100\]"):
        iv.validate({"charge": -1}, tw)
    with pytest.raises(ConfigError, match=r"intervention\.toll=5.*Valid: charge, elasticity"):
        iv.validate({"toll": 5}, tw)


def test_thinning_keeps_survivors_departures_and_drivers():
    """Noise alignment: a vehicle that still travels departs when, and drives as, in the baseline."""
    tw = _twin(WorldBatch.replications(2, 2, arms=2), horizon=600.0)
    iv = DemandManagement({"charge": 10.0})
    cf.apply_arms(iv, tw, cf.arms_from_config(iv))
    p = tw.pop
    for b, t in ((0, 2), (1, 3)):
        kept = p.vehicle_id[t][p.vehicle_id[t] >= 0]
        base = p.vehicle_id[b][p.vehicle_id[b] >= 0]
        assert 0 < kept.numel() < base.numel()
        assert bool(torch.isin(kept, base).all())  # a subset of the same vehicles, never new draws
        sb = {int(v): i for i, v in enumerate(p.vehicle_id[b].tolist()) if v >= 0}
        for i, v in enumerate(p.vehicle_id[t].tolist()):
            if v < 0:
                continue
            j = sb[v]
            assert p.depart[t, i] == p.depart[b, j]
            for k in ("accel", "tau", "speed_factor"):
                assert getattr(tw.drivers, k)[t, i] == getattr(tw.drivers, k)[b, j], k
        d = p.depart[t]
        assert bool((d[1:] >= d[:-1]).all())  # rows stay sorted by departure (+inf last)


def test_zero_charge_gives_bit_identical_arms_and_exact_zero_effects(run_cf):
    out, eff = run_cf(*BUSY, "intervention=demand_management", "intervention.charge=0", "replications=2",
                      "horizon_s=300")
    measured = eff[eff["n"] > 0]
    assert len(measured) and (measured["effect"] == 0.0).all() and (measured["ci_high"] == 0.0).all()
    w, trips = _by_arm(out)
    a0 = w[w["arm"] == 0].drop(columns=["world", "arm"]).reset_index(drop=True)
    a1 = w[w["arm"] == 1].drop(columns=["world", "arm"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a0, a1, check_exact=True)
    key = ["rep", "vehicle_id"]
    t0 = trips[trips["arm"] == 0].drop(columns=["arm", "world"]).sort_values(key).reset_index(drop=True)
    t1 = trips[trips["arm"] == 1].drop(columns=["arm", "world"]).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(t0, t1, check_exact=True)


def test_charge_thins_charged_zones_by_one_minus_r_and_lowers_delay(run_cf, capsys):
    charge = 15.0
    out, eff = run_cf(*BUSY, "intervention=demand_management", f"intervention.charge={charge}",
                      "intervention.zones={N: true, S: true}", "replications=4", "horizon_s=600")
    w, trips = _by_arm(out)
    tw = _twin(WorldBatch.replications(0, 1), flows_veh_h={"N": 1100, "E": 500, "S": 1100, "W": 500})
    iv = DemandManagement({"zones": {"N": True, "S": True}})
    r = iv.retention({"charge": charge}, tw)
    r_of_flow = dict(zip(tw.flow_ids, r.tolist()))
    n = trips.groupby(["arm", "rep", "flow"]).size().unstack("arm").fillna(0)
    charged = n.index.get_level_values("flow").map(lambda f: f[0] in "NS")
    # charged zones: the treated count is Binomial(baseline count, r_f), summed over flows and replications
    nb, nt = n.loc[charged, 0], n.loc[charged, 1]
    rf = nb.index.get_level_values("flow").map(r_of_flow).to_numpy()
    expect = float((nb * rf).sum())
    sd = math.sqrt(float((nb * rf * (1 - rf)).sum()))
    assert abs(float(nt.sum()) - expect) < 4 * sd, (float(nt.sum()), expect, sd)
    assert (nt <= nb).all()
    # uncharged zones: the very same vehicles
    assert n.loc[~charged, 0].equals(n.loc[~charged, 1])
    net = eff[eff["scope"] == "network"].set_index("metric")
    d = net.loc["mean_delay_s"]
    assert d["effect"] < 0 and d["ci_high"] < 0, d.to_dict()
    g = eff[(eff["scope"] == "group") & (eff["metric"] == "mean_delay_s") & (eff["group_kind"] == "origin")]
    g = g.set_index("group")
    assert g.loc["N", "effect"] < 0 and g.loc["S", "effect"] < 0
    with capsys.disabled():
        rz = iv.retention_by_zone({"charge": charge}, tw)
        print(f"\n[junction N,S 1100 / E,W 500 veh/h, charge {charge:g} on N,S, eps -0.3, R=4, 600 s] "
              f"r(N)={rz['N']:.3f}; charged loaded {int(nb.sum())} -> {int(nt.sum())} (expected {expect:.1f} "
              f"± {sd:.1f}); mean delay effect {d['effect']:+.2f} s [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}] "
              f"(baseline {d['baseline_mean']:.1f} s)")


def test_cli_config_composes():
    from tests.interventions.conftest import compose_cfg

    cfg = compose_cfg(*BUSY, "intervention=demand_management", "intervention.charge=5",
                      "intervention.zones={N: true}")
    assert cfg.intervention.charge == 5.0 and dict(cfg.intervention.zones) == {"N": True}
    assert cfg.intervention.elasticity == -0.3
