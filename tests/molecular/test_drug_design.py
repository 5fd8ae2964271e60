"""``drug_design`` intervention on the molecular twin: parameter space, null arm, noise alignment,
directional effects, selectivity, and a tiny search end to end."""
import json
import math

import pandas as pd
import pytest
import torch

import interventions
from interventions import counterfactual as cf
from interventions.drug_design import NAMES, DrugDesign
from twins.core.errors import ConfigError
from twins.core.worlds import WorldBatch
from twins.molecular.lj import LJFluidTwin
from twins.molecular.model import MolecularTwin

SMALL = dict(dt=0.01, horizon=1.0, box=30.0, cells=(("high", 20, 0.0, 0.5), ("low", 8, 0.5, 1.0)),
             n_offtarget=10, dose=40, dosing_interval=0.4, k_el=0.5, k_on_target=20.0, record_every=5)


def _counterfactual(arm_values, reps=8, seed=0, **kw):
    """Baseline + one arm per vector on shared replications: (twin, result, effects)."""
    iv = interventions.get({"name": "drug_design"})
    arms = [cf.Arm(0, "baseline")] + [cf.Arm(k + 1, f"arm{k + 1}", v) for k, v in enumerate(arm_values)]
    twin = MolecularTwin(WorldBatch.replications(seed, reps, arms=len(arms)), **{**SMALL, **kw})
    arms = cf.apply_arms(iv, twin, arms)
    r = twin.run(progress=False)
    return twin, r, cf.effects(r.worlds, r.metrics, arms, r.groups)


def _eff(eff, arm, metric):
    return eff[(eff.arm == arm) & (eff.scope == "network") & (eff.metric == metric)].iloc[0]


def test_parameter_space_reads_the_scenario():
    iv = interventions.get({"name": "drug_design"})
    twin = MolecularTwin(WorldBatch.replications(0, 1), **SMALL)
    ps = {p.name: p for p in iv.parameters(twin)}
    assert tuple(ps) == NAMES
    assert ps["k_on_target"].baseline == 20.0 and ps["k_off_target"].baseline == 0.2
    assert ps["dose"].baseline == 40 and ps["dose"].kind == "int" and ps["dose"].high == 160
    assert ps["n_doses"].baseline == 3  # t = 0, 0.4, 0.8 within the 1.0 horizon
    assert ps["dosing_interval"].unit == "µs" and ps["k_off_offtarget"].unit == "1/µs"
    iv2 = interventions.get({"name": "drug_design", "bounds": {"k_on_target": [1.0, 50.0]}})
    assert {p.name: (p.low, p.high) for p in iv2.parameters(twin)}["k_on_target"] == (1.0, 50.0)
    a = iv.affinity({"k_off_target": 0.02}, twin)
    assert a["Kd_target_uM"] == pytest.approx(iv.affinity({}, twin)["Kd_target_uM"] / 10, rel=1e-3)


@pytest.mark.parametrize("cfg,match", [
    ({"bounds": {"k_on_targt": [0, 1]}}, r"intervention.bounds.k_on_targt.*Did you mean 'k_on_target'"),
    ({"bounds": {"dose": [10, 1]}}, r"intervention.bounds.dose=\[10, 1\] is invalid"),
    ({"bounds": {"dosing_interval": [0, 1]}}, r"intervention.bounds.dosing_interval"),
])
def test_bad_bounds_are_config_errors(cfg, match):
    with pytest.raises(ConfigError, match=match):
        interventions.get({"name": "drug_design", **cfg})


def test_bad_values_and_wrong_twin_are_config_errors():
    iv = interventions.get({"name": "drug_design"})
    twin = MolecularTwin(WorldBatch.replications(0, 1), **SMALL)
    with pytest.raises(ConfigError, match=r"intervention.k_off_target=-1.0 is invalid.*\[0, 2\] 1/µs"):
        iv.validate({"k_off_target": -1.0}, twin)
    with pytest.raises(ConfigError, match=r"intervention.dose=500 is invalid.*\[0, 160\] molecules"):
        iv.validate({"dose": 500}, twin)
    with pytest.raises(ConfigError, match="Did you mean 'dose'"):
        iv.validate({"dosse": 5}, twin)
    lj = LJFluidTwin(WorldBatch.replications(0, 1), dt=0.005, horizon=0.01, n_particles=32, density=0.5, cutoff=1.5)
    with pytest.raises(ConfigError, match="molecular scenario"):
        iv.parameters(lj)


def test_baseline_equal_arm_is_bit_identical_and_effects_exactly_zero():
    iv = DrugDesign()
    probe = MolecularTwin(WorldBatch.replications(0, 1), **SMALL)
    base = iv.baseline(probe)
    assert set(base) == set(NAMES)
    # arm 1 = every parameter at its baseline; arm 2 changes the dose so the slot table grows
    twin, r, eff = _counterfactual([base, {"dose": 120}], reps=3)
    R = 3
    st = twin.state
    assert torch.equal(st.pos[:R], st.pos[R:2 * R]) and torch.equal(st.species[:R], st.species[R:2 * R])
    e1 = eff[eff.arm == 1]
    assert len(e1) > 0 and (e1["effect"] == 0.0).all() and (e1["ci_low"] == 0.0).all()
    assert (e1["ci_high"] == 0.0).all()


def test_worlds_do_not_depend_on_the_other_arms_of_the_batch():
    """Batch independence and noise alignment across policies: a baseline world alone and next to a
    larger-dose, more-doses arm (which changes the slot table) is the same world."""
    _, alone, _ = _counterfactual([], reps=2, seed=5)
    twin, mixed, _ = _counterfactual([{"dose": 150, "n_doses": 3, "dosing_interval": 0.3}], reps=2, seed=5)
    cols = [c for c in alone.worlds.columns]
    pd.testing.assert_frame_equal(alone.worlds[cols], mixed.worlds[mixed.worlds.arm == 0][cols])
    # the first ligand of dose 1 appears at the same place in both arms (its noise id is fixed)
    slot0 = twin.lig0 + 1 * twin.max_dose  # ligand 0 of dose 1 (dose 0 is a multiple of max_dose)
    assert torch.equal(twin.slots.spawn_pos[0, slot0 - twin.lig0], twin.slots.spawn_pos[2, slot0 - twin.lig0])


def test_directional_effects():
    """Stronger target binding raises target occupancy; a larger dose raises off-target occupancy;
    the paired 95% interval excludes zero."""
    _, _, eff = _counterfactual([{"k_on_target": 80.0}, {"k_off_target": 0.02}, {"dose": 120}], reps=8)
    for arm in (1, 2):
        e = _eff(eff, arm, "target_occupancy_mean")
        assert e.effect > 0 and e.ci_low > 0, (arm, e.effect, e.ci_low)
    e = _eff(eff, 3, "offtarget_occupancy_mean")
    assert e.effect > 0 and e.ci_low > 0, (e.effect, e.ci_low)
    # per-cell subgroups (high / low receptor expression) get their own paired effects
    g = eff[(eff.arm == 1) & (eff.scope == "group") & (eff.metric == "target_occupancy_mean")]
    assert set(g["group"]) == {"high", "low"} and (g["effect"] > 0).all()


def test_selectivity_ratio_and_n_doses():
    _, r, _ = _counterfactual([{"k_on_offtarget": 0.0, "n_doses": 1}], reps=2)
    w = r.worlds
    b = w[w.arm == 0]
    ratio = b["target_occupancy_mean"] / b["offtarget_occupancy_mean"]
    assert (b["offtarget_occupancy_mean"] > 0).all()
    assert b["selectivity_ratio"].to_numpy() == pytest.approx(ratio.to_numpy(), rel=1e-9)
    t = w[w.arm == 1]
    assert (t["offtarget_occupancy_mean"] == 0).all() and (t["doses_given"] == 1).all()
    # no off-target binding: the ratio is large but finite (the occupancy's resolution is the floor)
    assert all(math.isfinite(x) and x > ratio.max() for x in t["selectivity_ratio"])


def test_run_task_through_config(run_molecular):
    out, eff = run_molecular("intervention=drug_design", "intervention.k_on_target=60", "output.figures=true")
    arms = json.loads((out / "arms.json").read_text())
    assert arms[1]["values"] == {"k_on_target": 60.0}
    assert "selectivity_ratio" in set(eff["metric"])
    assert (out / "figures" / "arm1" / "occupancy.png").exists() and (out / "figures" / "effects.png").exists()


@pytest.fixture
def run_molecular(tmp_path):
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from twins.cli import CONF_DIR
    from twins.core import runner

    def go(*overrides):
        with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
            cfg = compose(config_name="config", overrides=[
                "output.figures=false", "progress=false", "scenario=molecular", "replications=2",
                "scenario.horizon=0.5", "scenario.dosing_interval=0.2", *overrides])
        out = Path(tmp_path) / "run"
        runner.run(cfg, out)
        return out, pd.read_parquet(out / "effects.parquet")

    return go


def test_search_end_to_end(tmp_path):
    """A tiny constrained search (the ``python -m twins search`` task without the ethics review):
    outputs exist and the recommended policy keeps the off-target ceiling on held-out replications."""
    from hydra import compose, initialize_config_dir

    from interventions.search_config import search_from_config
    from twins.cli import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=[
            "scenario=molecular", "intervention=drug_design", "replications=2", "scenario.horizon=1",
            "scenario.dosing_interval=0.5", "scenario.k_on_offtarget=1", "search.budget=4", "search.batch=2",
            "search.sampler=random", "search.confirm.top=2", "intervention.bounds={k_on_offtarget: [0, 2]}",
            "search.params=[k_on_target,k_off_target,k_on_offtarget,dose]",
            "search.objectives=[{metric: target_occupancy_mean, direction: maximize}]",
            "search.constraints=[{metric: offtarget_occupancy_max, max: 0.05}]", "progress=false",
            "output.figures=false"])
    out = tmp_path / "s"
    res = search_from_config(cfg, out)
    for f in ("candidates.parquet", "pareto.parquet", "confirmed.parquet", "best_policy.json", "study.db"):
        assert (out / f).exists(), f
    cand = pd.read_parquet(out / "candidates.parquet")
    assert len(cand) == 4 and "effect:selectivity_ratio" in cand
    best = json.loads((out / "best_policy.json").read_text())
    assert best is not None and best["trial"] == res.best["trial"]
    assert set(best["params"]) == {"k_on_target", "k_off_target", "k_on_offtarget", "dose"}
    ceiling = best["confirmed"]["offtarget_occupancy_max"]
    assert ceiling["effect"] <= 0.05 and ceiling["n"] == 4  # 2 × replications, held out
    conf = pd.read_parquet(out / "confirmed.parquet")
    row = conf[(conf.trial == best["trial"]) & (conf.metric == "offtarget_occupancy_max")].iloc[0]
    assert row.confirmed_effect == pytest.approx(ceiling["effect"])
    assert cand.set_index("trial").loc[best["trial"], "feasible"]


def test_bounds_must_contain_the_baseline():
    iv = interventions.get({"name": "drug_design", "bounds": {"k_on_offtarget": [0, 2]}})
    twin = MolecularTwin(WorldBatch.replications(0, 1), **SMALL)  # k_on_offtarget = 5
    with pytest.raises(ConfigError, match=r"intervention.bounds.k_on_offtarget=\[0.0, 2.0\].*scenario's value 5"):
        iv.parameters(twin)
