"""Every plotting helper renders from a small real results folder (the same helpers draw the CLI's
figures and the notebooks'); where a picture encodes a number, the test recomputes it independently."""
from __future__ import annotations

import inspect
import json
import shutil

import matplotlib
import numpy as np
import pytest

from twins import plots, results
from twins.core.stats import mean_ci

TESTED = {"network_map", "timeseries", "effects", "sweep", "search_convergence", "pareto_front",
          "confirmed_effects", "corridor", "time_space", "fundamental_diagram", "group_effects",
          "gate_decisions", "occupancy", "dose_response", "selectivity_tradeoff", "save", "transfer_effects",
          "geh5_band", "calibration"}


def test_every_helper_has_a_rendering_test():
    helpers = {n for n, f in inspect.getmembers(plots, inspect.isfunction)
               if f.__module__ == plots.__name__ and not n.startswith("_")}
    assert helpers - TESTED == set(), "add a rendering test in tests/results/test_plots.py for these helpers"


def _png(fig_or_ax, tmp_path, name):
    path = tmp_path / f"{name}.png"
    plots.save(fig_or_ax, path)  # draws the figure: rendering errors surface here
    assert path.stat().st_size > 2000
    return path


@pytest.fixture(scope="module")
def ring(ring_run):
    return results.load(ring_run)


def test_network_map(ring, tmp_path):
    e = ring.edges.assign(delay_veh_h=lambda d: d["delay_s"] / 3600.0)
    ax = plots.network_map(e, "delay_veh_h")
    lc = [c for c in ax.collections if isinstance(c, matplotlib.collections.LineCollection)][0]
    want = e.groupby("edge", sort=False)["delay_veh_h"].mean().to_numpy()
    np.testing.assert_allclose(lc.get_array(), want)
    _png(ax, tmp_path, "network")


def test_timeseries(ring, tmp_path):
    fig = plots.timeseries(ring.timeseries, ["vehicles_in_network", "mean_speed_mps"])
    assert len(fig.axes) == 2
    _png(fig, tmp_path, "timeseries")


def test_corridor_follows_the_ring_and_a_straight_road(ring, junction_sweep):
    n = int(ring.config["scenario"]["segments"])
    assert plots.corridor(ring.edges) == [f"e{k}" for k in range(n)]  # once round, head to tail
    j = results.load(junction_sweep / "0").edges
    inbound = j.loc[j["edge"].str.startswith("N"), "edge"].iloc[0]
    path = plots.corridor(j, inbound)
    assert path[0] == inbound and len(path) == 2  # straight across the junction, then the road ends
    g = j.groupby("edge").first()
    d1 = g.loc[path[0], ["x2", "y2"]].to_numpy(float) - g.loc[path[0], ["x1", "y1"]].to_numpy(float)
    d2 = g.loc[path[1], ["x2", "y2"]].to_numpy(float) - g.loc[path[1], ["x1", "y1"]].to_numpy(float)
    assert d1 @ d2 / np.linalg.norm(d1) / np.linalg.norm(d2) > 0.99  # straight on, not a turn
    with pytest.raises(ValueError, match="not in the edge table"):
        plots.corridor(j, "nowhere")


def test_time_space(ring, tmp_path):
    ax = plots.time_space(ring.trajectories, ring.edges)
    lc = ax.collections[0]
    t = ring.trajectories[ring.trajectories["world"] == 0]
    assert ax.get_ylim() == pytest.approx((0.0, ring.edges.groupby("edge")["length_m"].first().sum()))
    # one segment per pair of consecutive records of a vehicle, except where it wraps round the ring
    n = int(ring.config["scenario"]["segments"])
    off = dict(zip([f"e{k}" for k in range(n)], np.arange(n) * ring.edges["length_m"].iloc[0]))
    x = t["edge"].map(off) + t["pos_m"]
    t = t.assign(x=x).sort_values(["vehicle_id", "time_s"])
    same = t["vehicle_id"].to_numpy()[1:] == t["vehicle_id"].to_numpy()[:-1]
    fwd = np.diff(t["x"].to_numpy()) >= 0
    assert len(lc.get_segments()) == int((same & fwd).sum()) > 0
    _png(ax, tmp_path, "time_space")
    with pytest.raises(ValueError, match="no recorded vehicle positions"):
        plots.time_space(ring.trajectories, ring.edges, time_range=(1e6, 2e6))


def test_fundamental_diagram_density_is_vehicles_per_km(ring, tmp_path):
    ax = plots.fundamental_diagram(ring.detectors, ring.edges)
    pts = ax.collections[0].get_offsets()
    assert len(pts) == ring.detectors.dropna(subset=["flow_veh_h", "density_veh_km"]).shape[0]
    # after the first minute all 22 vehicles are on the 230 m ring: Edie's density is N / L on every edge
    cfg = ring.config["scenario"]
    late = ring.detectors[ring.detectors["time_s"] > 60]
    want = cfg["vehicles"] / (cfg["circumference_m"] / 1000.0)
    assert late["density_veh_km"].mean() == pytest.approx(want, rel=0.03)
    _png(ax, tmp_path, "fd")


def test_effects_and_sweep(junction_sweep, tmp_path):
    s = results.load(junction_sweep)
    job = s.jobs[1]
    fig = plots.effects(job.effects, metrics=["mean_delay_s", "throughput_veh"])
    assert len(fig.axes) == 3  # two metric panels and the per-group panel
    _png(fig, tmp_path, "effects")
    fig = plots.sweep(s.summary, metrics=["mean_delay_s"])
    line = fig.axes[0].lines[0]
    net = s.effects[(s.effects["scope"] == "network") & (s.effects["metric"] == "mean_delay_s")]
    np.testing.assert_allclose(np.asarray(line.get_ydata(), float),
                               net.sort_values("intervention.cycle_s")["effect"].to_numpy(float))
    _png(fig, tmp_path, "sweep")


def test_group_effects(junction_sweep, tmp_path):
    eff = results.load(junction_sweep).effects
    ax = plots.group_effects(eff, "mean_delay_s", by="intervention.cycle_s", group_kind="origin")
    assert len(ax.containers) == 2  # one errorbar set per cycle
    assert [t.get_text() for t in ax.get_yticklabels()] == ["origin: E", "origin: N", "origin: S", "origin: W"]
    _png(ax, tmp_path, "groups")
    with pytest.raises(ValueError, match="no group effects for metric 'nope'"):
        plots.group_effects(eff, "nope")


def test_search_plots(junction_search, tmp_path):
    r = results.load(junction_search)
    ax = plots.search_convergence(r.candidates, "objective:mean_delay_s", "minimize")
    _png(ax, tmp_path, "convergence")
    ax = plots.pareto_front(r.candidates, r.pareto, "objective:mean_delay_s", "objective:throughput_veh")
    _png(ax, tmp_path, "pareto")
    fig = plots.confirmed_effects(r.confirmed, ["mean_delay_s"])
    assert len(fig.axes) == 1
    _png(fig, tmp_path, "confirmed")


def test_gate_decisions(tmp_path, drug_run):
    d = tmp_path / "reviewed"
    shutil.copytree(drug_run, d)
    gates = [{"gate": "provenance", "status": "PASS", "reason": "declared", "evidence": {}, "hard": False},
             {"gate": "safety.offtarget_ceiling", "status": "FAIL", "reason": "x" * 200, "hard": True},
             {"gate": "approval", "status": "NEEDS_HUMAN", "reason": "no reviewer", "hard": False}]
    (d / "gates.json").write_text(json.dumps(gates))
    ax = plots.gate_decisions(results.load(d).gates)
    texts = [t.get_text() for t in ax.texts]
    assert texts[0::2] == ["PASS", "FAIL", "NEEDS_HUMAN"]
    assert texts[3].startswith("safety.offtarget_ceiling (hard)") and texts[3].endswith("…")
    colours = [matplotlib.colors.to_hex(t.get_bbox_patch().get_facecolor()) for t in ax.texts[0::2]]
    assert colours == [plots.GATE_COLORS[s] for s in ("PASS", "FAIL", "NEEDS_HUMAN")]
    _png(ax, tmp_path, "gates")


def test_occupancy(drug_run, tmp_path):
    r = results.load(drug_run)
    ts = r.timeseries.merge(r.worlds[["world", "arm"]], on="world")
    ax = plots.occupancy(ts, by="arm", window=(0.5, 0.9), ceiling=0.3)
    curves = [ln for ln in ax.lines if ln.get_label().startswith(("target", "offtarget"))]
    assert len(curves) == 4  # 2 arms × (target, off-target)
    want = ts[ts["arm"] == 1].groupby("time")["target_occupancy"].mean().to_numpy()
    got = [ln for ln in curves if ln.get_label() == "target occupancy, arm=1"][0].get_ydata()
    np.testing.assert_allclose(np.asarray(got, float), want)
    _png(ax, tmp_path, "occupancy")


def test_dose_response(drug_run, tmp_path):
    w = results.load(drug_run).worlds.assign(dose=lambda d: np.where(d["arm"] == 1, 300, 150))
    ax = plots.dose_response(w, "dose", ["target_occupancy_mean"], ceiling=0.3, window=(0.5, 0.9))
    line = ax.containers[0].lines[0]
    np.testing.assert_allclose(np.asarray(line.get_xdata(), float), [150, 300])
    want = [mean_ci(w.loc[w["dose"] == d, "target_occupancy_mean"])["mean"] for d in (150, 300)]
    np.testing.assert_allclose(np.asarray(line.get_ydata(), float), want)
    _png(ax, tmp_path, "dose_response")


def test_selectivity_tradeoff_rings_the_best_dose_under_the_ceiling(drug_run, tmp_path):
    w = results.load(drug_run).worlds.assign(dose=lambda d: np.where(d["arm"] == 1, 300, 150))
    hi = {d: mean_ci(w.loc[w["dose"] == d, "offtarget_occupancy_max"])["ci_high"] for d in (150, 300)}
    # a ceiling between the two doses' upper bounds admits only the one with the lower bound
    lo_d, hi_d = sorted(hi, key=hi.get)
    if not np.isfinite(hi[hi_d]) or hi[hi_d] == hi[lo_d]:
        pytest.skip("the two doses' off-target upper bounds coincide in this tiny run")
    ceiling = (hi[lo_d] + hi[hi_d]) / 2
    ax = plots.selectivity_tradeoff(w, "dose", ceiling=ceiling)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"best under the ceiling: dose={lo_d}" in labels
    _png(ax, tmp_path, "selectivity")


def test_transfer_effects(tmp_path):
    """The transfer figure from a transfer.json-shaped record: one panel per metric, the twin's row and one row
    per car-following model, each at its effect with its interval, and the ratios in the titles."""
    def eff(x, half):
        return {"effect": x, "ci_low": x - half, "ci_high": x + half, "n": 4}

    record = {"label": "signal_timing(cycle_s=60)", "sumo": {"car_following": ["IDM", "Krauss"], "seeds": [0, 1, 2, 3]},
              "metrics": {"mean_delay_s": {"predicted": eff(19.2, 6.3),
                                           "realized": {"IDM": eff(12.5, 3.6), "Krauss": eff(16.0, 3.7)},
                                           "ratio": {"IDM": 0.65, "Krauss": 0.83}},
                          "throughput_veh": {"predicted": eff(-17.5, 6.4), "realized": {"IDM": eff(-8.0, 12.7),
                                                                                      "Krauss": None},
                                             "ratio": {"IDM": 0.46, "Krauss": None}}}}
    fig = plots.transfer_effects(record)
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert "IDM 0.65" in ax.get_title() and "Krauss 0.83" in ax.get_title()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["twin (predicted)", "SUMO IDM", "SUMO Krauss"]
    xs = [float(c.lines[0].get_xdata()[0]) for c in ax.containers]  # each errorbar's data point
    assert xs == pytest.approx([19.2, 12.5, 16.0])
    assert "Krauss n/a" in fig.axes[1].get_title()
    _png(fig, tmp_path, "transfer")


def test_geh5_band_is_where_geh_equals_5():
    """The band's edges are the simulated counts with GEH exactly 5 (GEH computed independently here)."""
    m, lo, hi = plots.geh5_band(400.0)
    inside = m > 12.5  # up to 12.5 vehicles even a count of 0 is within GEH 5: the lower edge is clipped at 0
    for c in (lo[inside], hi[inside]):
        geh = np.sqrt(2.0 * (m[inside] - c) ** 2 / (m[inside] + c))
        np.testing.assert_allclose(geh, 5.0, rtol=1e-9)
    assert (lo <= m).all() and (hi >= m).all()


def test_calibration_figure(tmp_path):
    import pandas as pd

    rng = np.random.default_rng(0)
    obs = rng.integers(5, 300, 40).astype(float)
    fit = pd.DataFrame({"observed": obs, "simulated": obs + rng.normal(0, 3, 40),
                        "prior_simulated": obs * 1.4, "ensemble_p05": obs - 6, "ensemble_p95": obs + 6})
    record = {"method": "em", "best_iteration": 2,
              "iterations": [{"iteration": k, "geh_share_below_5": s, "mean_geh": g}
                             for k, s, g in ((0, 0.4, 4.1), (1, 0.9, 1.2), (2, 1.0, 0.4))],
              "fit": {"geh_share_below_5": 1.0, "counts": 40, "total_flow_error": 0.004, "mean_geh": 0.4}}
    fig = plots.calibration(fit, record)
    scatter = [c for c in fig.axes[0].collections if isinstance(c, matplotlib.collections.PathCollection)]
    np.testing.assert_allclose(scatter[-1].get_offsets()[:, 1], fit["simulated"])  # the calibrated counts
    assert "GEH < 5 on 100%" in fig._suptitle.get_text()
    _png(fig, tmp_path, "calibration")
