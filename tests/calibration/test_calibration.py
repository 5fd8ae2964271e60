"""``python -m twins calibrate`` (issue 22): counts made by SUMO from a known demand, a calibration from a
deliberately wrong prior, checked in SUMO on a held-out seed; bad counts refused; counterfactuals of the
calibrated day paired, drawing from the ensemble."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

H, WIDTH, HELDOUT_SEED = 1800.0, 900.0, 7  # as tests/calibration/conftest.py makes the problem

pytestmark = pytest.mark.sumo


def _heldout(sumocfg, counts: pd.DataFrame) -> dict:
    """SUMO's counts on the held-out seed against the observed ones."""
    from twins.calibration import fit as F
    from twins.calibration.sumo_files import sumo_counts

    sc = sumo_counts(sumocfg, seed=HELDOUT_SEED, interval_s=WIDTH, begin=0.0, end=H)
    key = {(e, b): n for e, b, n in zip(sc["edge"], sc["begin_s"], sc["count"])}
    c = np.array([key[(e, b)] for e, b in zip(counts["edge"], counts["begin_s"])], float)
    return F.stats(counts["count"].to_numpy(float), c)


def test_recovers_the_counts_on_a_held_out_sumo_seed(problem, calibrated):
    assert (problem["H"], problem["width"], problem["heldout_seed"]) == (H, WIDTH, HELDOUT_SEED)
    counts = problem["counts"]
    cal = _heldout(calibrated / "calibrated.sumocfg", counts)  # SUMO runs the twin's calibrated day
    prior = _heldout(problem["prior_cfg"], counts)
    truth = _heldout(problem["truth_cfg"], counts)
    assert cal["geh_share_below_5"] >= 0.85, cal
    assert abs(cal["total_flow_error"]) <= 0.05, cal
    assert prior["mean_geh"] > truth["mean_geh"] + 1.0, (prior, truth)  # the prior is wrong enough to matter
    closed = (prior["mean_geh"] - cal["mean_geh"]) / (prior["mean_geh"] - truth["mean_geh"])
    assert closed >= 0.5, (prior, cal, truth)
    # the recovered route flows (per route and interval) correlate with the true ones, better than the prior's
    from twins.traffic.demand_units import units_of

    dem = pd.read_parquet(calibrated / "demand.parquet")
    t = units_of(problem["truth"], [(0.0, WIDTH), (WIDTH, H)])
    true = {(r, k): t.prior[u] for u, (r, k) in enumerate(zip(t.route_of, t.interval_of))}
    key = [(t.routes.index(route.split()), int(b // WIDTH)) for route, b in zip(dem["route"], dem["begin_s"])]
    x_true = np.array([true[k] for k in key])
    r_cal = np.corrcoef(x_true, dem["vehicles"])[0, 1]
    r_prior = np.corrcoef(x_true, dem["prior_veh"])[0, 1]
    print(f"held-out SUMO seed: GEH<5 {cal['geh_share_below_5']:.3f}, total {cal['total_flow_error']:+.4f}, mean GEH "
          f"prior {prior['mean_geh']:.2f} / calibrated {cal['mean_geh']:.2f} / truth {truth['mean_geh']:.2f} "
          f"(gap closed {closed:.2f}); route flows r = {r_cal:.2f} (prior {r_prior:.2f})")
    assert r_cal >= 0.8 and r_cal > r_prior + 0.2, (r_cal, r_prior)


def test_the_run_folder(problem, calibrated):
    rec = json.loads((calibrated / "calibration.json").read_text())
    for k in ("geh_share_below_5", "mean_geh", "total_flow_error"):
        assert math.isfinite(rec["fit"][k])
    assert rec["method"] == "em" and rec["why"] and rec["iterations"][0]["iteration"] == 0
    assert len(rec["per_interval"]) == 2 and rec["wall_time_s"] > 0
    assert rec["ensemble"]["members"] == 8 and rec["observed"]["counts"]["sha256"]
    fit = pd.read_parquet(calibrated / "fit.parquet")
    assert len(fit) == len(problem["counts"])
    assert {"observed", "simulated", "geh", "prior_simulated", "ensemble_p05", "ensemble_p95"} <= set(fit.columns)
    assert (calibrated / "figures" / "calibration.png").stat().st_size > 10_000
    ens = pd.read_parquet(calibrated / "ensemble.parquet")
    assert ens["member"].nunique() == 8
    assert ens.groupby("member")["vehicles"].sum().std() > 0  # the members differ: an ensemble, not a point
    # the calibrated files load in the twin as any SUMO scenario (SUMO ran them in the test above)
    from scenarios.sumo import load_scenario

    _, demand, begin, end = load_scenario({"sumocfg": str(calibrated / "calibrated.sumocfg")})
    total = sum(f.expected_count() for f in demand.flows)
    calibrated_total = pd.read_parquet(calibrated / "demand.parquet")["vehicles"].sum()
    assert (begin, end) == (0.0, H) and abs(total - calibrated_total) < 30


def _run(cli, calibrated, tmp_path, name, *extra):
    out = tmp_path / name
    p = cli("run", "scenario=sumo", f"scenario.sumocfg={calibrated / 'calibrated.sumocfg'}", "horizon_s=1800",
            "replications=6", "progress=false", "compute.threads=1", f"hydra.run.dir={out}", *extra)
    assert p.returncode == 0, p.stderr[-3000:]
    return out


def test_counterfactual_of_the_calibrated_day_is_paired(twins_cli, calibrated, tmp_path):
    """scenario.demand=calibrated: replications draw members of the ensemble; the arms of a replication share
    theirs, so a null intervention has exactly zero effect."""
    out = _run(twins_cli, calibrated, tmp_path, "null", "scenario.demand=calibrated", "intervention=signal_timing")
    eff = pd.read_parquet(out / "effects.parquet")
    net = eff[eff["scope"] == "network"]
    assert len(net) and (net["effect"] == 0).all() and (net["ci_low"] == 0).all() and (net["ci_high"] == 0).all()
    worlds = pd.read_parquet(out / "worlds.parquet")
    assert worlds.groupby("replication")["vehicles_loaded"].nunique().max() == 1  # both arms, one demand


def test_replications_draw_members_keyed_and_batch_independent(calibrated):
    from scenarios import calibrated_demand as ensemble
    from twins.core.worlds import WorldBatch

    cfg = str(calibrated / "calibrated.sumocfg")
    a = ensemble.member_of(0, torch.arange(64), 8)
    b = ensemble.member_of(0, torch.arange(64).flip(0), 8).flip(0)
    assert torch.equal(a, b) and len(set(a.tolist())) >= 6  # keyed by replication, spread over the members
    from scenarios.sumo import load_scenario

    _, dem, _, _ = load_scenario({"sumocfg": cfg, "demand": "calibrated"})
    ret = ensemble.retention(cfg, dem, WorldBatch.replications(0, 16))
    assert ret.shape == (16, len(dem.flows)) and float(ret.min()) >= 0 and float(ret.max()) == 1.0
    prov = ensemble.provenance_of({"scenario": {"kind": "sumo", "sumocfg": cfg, "demand": "calibrated"}})
    assert prov["observed"]["counts"]["sha256"] and prov["demand"] == "calibrated"


def test_calibrated_demand_needs_a_calibration(problem, twins_cli, tmp_path):
    out = tmp_path / "nope"
    p = twins_cli("run", "scenario=sumo", f"scenario.sumocfg={problem['prior_cfg']}", "scenario.demand=calibrated",
                  f"hydra.run.dir={out}")
    assert p.returncode == 2 and "scenario.demand" in p.stderr and "ensemble.parquet" in p.stderr
    assert not out.exists()


BAD = {
    "unknown edge": ("edge,begin_s,end_s,count\nA0A1,0,900,10\nNOPE,0,900,5\n", ":3 edge='NOPE'"),
    "overlap": ("edge,begin_s,end_s,count\nA0A1,0,900,10\nA0A1,600,1500,5\n", ":3 begin_s=600.0"),
    "negative": ("edge,begin_s,end_s,count\nA0A1,0,900,-4\n", ":2 count=-4.0"),
    "column": ("edge,begin,end_s,count\nA0A1,0,900,4\n", ":1 header"),
    "window": ("edge,begin_s,end_s,count\nA0A1,900,2700,4\n", ":2 end_s=2700.0"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_counts_are_refused_with_line_and_reason(problem, case, tmp_path):
    from scenarios.sumo import load_scenario
    from twins.calibration.counts import read_counts
    from twins.core.errors import ConfigError

    text, where = BAD[case]
    f = tmp_path / "bad.csv"
    f.write_text(text)
    net, _, begin, end = load_scenario({"sumocfg": str(problem["prior_cfg"])})
    with pytest.raises(ConfigError) as e:
        read_counts(f, net, begin=begin, end=end)
    assert f"bad.csv{where}" in str(e.value), str(e.value)


def test_the_command_refuses_bad_counts_and_writes_nothing(problem, twins_cli, tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("edge,begin_s,end_s,count\nA0A1,0,900,10\nA0A1,0,900,11\n")
    out = tmp_path / "never"
    p = twins_cli("calibrate", "scenario=sumo", f"scenario.sumocfg={problem['prior_cfg']}", f"observed.counts={f}",
                  f"hydra.run.dir={out}")
    assert p.returncode == 2, p.stderr
    line = p.stderr.strip().splitlines()[-1]
    assert line.startswith("twins: error: bad.csv:3 begin_s=0.0") and "overlaps" in line, p.stderr
    assert not out.exists()


def test_em_and_ls_fits_recover_a_known_linear_problem():
    import scipy.sparse as sp

    from twins.calibration import fit as F

    rng = np.random.default_rng(3)
    A = sp.csr_matrix((rng.random((60, 20)) < 0.25).astype(float))
    x = rng.uniform(5, 50, 20)
    m = A @ x
    for est in (F.fit_em(A, m, np.full(20, 20.0), 3000), F.fit_ls(A, m, np.full(20, 20.0), m, 1e-6)):
        assert F.stats(m, A @ est)["mean_geh"] < 0.05
    assert F.geh([100], [100])[0] == 0 and abs(F.geh([100], [150])[0] - math.sqrt(2 * 2500 / 250)) < 1e-12
