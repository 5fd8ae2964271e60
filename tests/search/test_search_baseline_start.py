"""Issue 18: the search starts from the scenario's own plan (trial 0), and relative (``max_rel``) limits reach it as
constraints judged against the baseline's mean. Synthetic evaluators only: seconds, no twin."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from interventions._evaluate import Outcomes
from interventions.base import Parameter
from interventions.search import Search
from interventions.search_objectives import Constraint, Objective, constraints_from
from interventions.search_space import baseline_point

from .conftest import Synthetic, space2


# --- trial 0 is the baseline ------------------------------------------------------------------------------
def test_trial_zero_is_the_scenarios_own_plan():
    ev = Synthetic()
    res = Search(ev, space2(), [Objective("f")], sampler="tpe", budget=8, batch=4, replications=2, seed=5,
                 progress=False).run()
    cand = res.candidates.sort_values("trial")
    first = cand.iloc[0]
    assert first["trial"] == 0 and bool(first["baseline"])
    assert (first["param:x"], first["param:y"]) == (0.0, 0.0)  # the baseline values, exactly
    assert cand["baseline"].sum() == 1 and len(cand) == 8  # it counts against the budget
    assert ev.evaluated[0] == (0.0, 0.0)  # the first vector evaluated
    # without it: no trial at the baseline
    off = Search(Synthetic(), space2(), [Objective("f")], sampler="random", budget=8, batch=4, replications=2, seed=5,
                 progress=False, start_from_baseline=False).run()
    assert not off.candidates["baseline"].any()
    assert not ((off.candidates["param:x"] == 0.0) & (off.candidates["param:y"] == 0.0)).any()


def test_a_space_without_a_single_baseline_value_starts_without_it():
    space = [Parameter("x", "float", -2.0, 2.0, baseline=None), Parameter("y", "float", -2.0, 2.0, baseline=0.0)]
    pt, why = baseline_point(space)
    assert pt is None and "x" in why and "not a point of the search space" in why
    pt, why = baseline_point([Parameter("x", "float", 1.0, 2.0, baseline=0.0)])
    assert pt is None and "outside the searched bounds" in why
    assert baseline_point(space2()) == ({"x": 0.0, "y": 0.0}, None)
    s = Search(Synthetic(), space, [Objective("f")], sampler="random", budget=4, batch=4, replications=2,
               progress=False)
    assert s.start_point is None
    assert not s.run().candidates["baseline"].any()


def test_grid_search_evaluates_the_baseline_once():
    # 0.0 is a grid point of [-2, 2] with 5 points: it stands for that point (budget stays 25)
    s = Search(Synthetic(), space2(), [Objective("f")], sampler="grid", grid_points=5, budget=100, batch=25,
               replications=2, progress=False)
    assert s.budget == 25
    cand = s.run().candidates
    assert len(cand) == 25 and cand["baseline"].sum() == 1
    assert len(cand[["param:x", "param:y"]].drop_duplicates()) == 25
    # 0.0 is not a grid point of [-2, 2] with 4 points: the baseline is evaluated as well (budget 17)
    s = Search(Synthetic(), space2(), [Objective("f")], sampler="grid", grid_points=4, budget=100, batch=17,
               replications=2, progress=False)
    assert s.budget == 17 and len(s.run().candidates) == 17


def test_when_the_baseline_is_the_best_feasible_candidate_it_is_kept_and_said_so(tmp_path):
    """Every other candidate is worse than the scenario's own plan: the baseline trial is the best confirmed one,
    and the recommendation is the baseline, saying that the best feasible candidate is the baseline itself."""

    class Exact(Synthetic):  # the baseline arm bit-identical to a treated arm at the baseline (the twin's contract)
        def __call__(self, params, reps):
            out = super().__call__(params, reps)
            at_base = np.all(np.atleast_2d(params) == 0.0, axis=1)
            out.treated[at_base] = out.baseline[None]
            return out

    # f = |p - (0.3, -0.6)|^2: in the box x <= 0, y >= 0 its lowest point is the baseline (0, 0)
    space = [Parameter("x", "float", -2.0, 0.0, baseline=0.0), Parameter("y", "float", 0.0, 2.0, baseline=0.0)]
    res = Search(Exact(), space, [Objective("f")], sampler="random", budget=8, batch=4, replications=2,
                 progress=False, outdir=tmp_path, confirm_top=8).run()
    best = json.loads((tmp_path / "best_policy.json").read_text())
    assert best["is_baseline"] and best["trial"] == 0 and best["recommendation"] == "baseline"
    assert best["confirmed"]["f"]["effect"] == 0.0 and best["recommended_params"] == {}
    assert "the best feasible candidate is the baseline itself (trial 0" in best["reason"]
    assert "the best other candidate" in best["reason"]
    assert res.summary["recommendation"] == "baseline"


# --- relative limits ----------------------------------------------------------------------------------------
def test_relative_limit_is_judged_against_each_groups_baseline():
    c = Constraint("delay", max_rel=0.25, group_kind="approach")
    eff = {("approach", "a"): {"delay": 0.3}, ("approach", "b"): {"delay": 0.3}}
    base = {("approach", "a"): {"delay": 2.0}, ("approach", "b"): {"delay": 1.0}}
    # a may gain 0.5 (25 % of 2.0), b only 0.25 (25 % of 1.0): b breaks it by 0.05
    assert c.violation({}, eff, None, base) == pytest.approx(0.05)
    assert c.violation({}, {("approach", "a"): {"delay": 0.3}}, None, base) < 0
    # at confirmation: the unfavourable end of the interval against the baseline
    assert c.violation({}, {("approach", "a"): {"delay": (0.1, 0.6)}}, None, base) == pytest.approx(0.1)
    # absolute and relative together: the tighter one
    both = Constraint("delay", max=0.2, group_kind="approach", max_rel=0.25)
    assert both.violation({}, {("approach", "a"): {"delay": 0.3}}, None, base) == pytest.approx(0.1)
    # a maximized metric: min_rel (no group may lose more than 10 % of its baseline)
    keep = Constraint("throughput", min_rel=-0.1, group_kind="approach")
    assert keep.violation({}, {("approach", "a"): {"throughput": -15.0}}, None,
                          {("approach", "a"): {"throughput": 100.0}}) == pytest.approx(5.0)
    # network-level relative limit
    assert Constraint("g", max_rel=0.5).violation({"g": 1.2}, None, {"g": 2.0}) == pytest.approx(0.2)
    # no baseline known: the relative limit is not applied (as the equity gate does), the absolute one is
    assert c.violation({}, eff, None, None) == 0.0
    assert both.violation({}, eff, None, None) == pytest.approx(0.1)
    assert "<= 0.25x baseline" in c.label


def test_constraints_from_config_reads_relative_limits():
    (c,) = constraints_from({"constraints": [{"metric": "delay_veh_h", "group_kind": "approach", "max_rel": 0.25}]})
    assert c == Constraint("delay_veh_h", None, None, "approach", None, 0.25, None)
    assert c.as_dict()["max_rel"] == 0.25


class Grouped:
    """One parameter x in [0, 1] (baseline 0). The objective f falls as x grows (effect −x); approach ``b``'s delay
    grows with x (effect +x) from a baseline of 2.0, approach ``a``'s falls. ``max_rel: 0.25`` on the approaches
    allows b at most +0.5, i.e. x <= 0.5; an absolute ``max: 0.25`` would allow only x <= 0.25."""

    def __call__(self, params, reps):
        x = np.atleast_2d(params)[:, 0]
        reps = np.asarray(list(reps))
        R, K = len(reps), len(x)
        noise = 0.002 * np.sin(3.1 * reps)  # per replication, shared by the arms (CRN)
        base = np.stack([1.0 + noise], 1)  # [R, 1]
        treated = (1.0 - x)[:, None, None] + noise[None, :, None]  # [K, R, 1]
        gb = np.zeros((R, 2, 1))
        gb[:, 0, 0], gb[:, 1, 0] = 3.0 + noise, 2.0 + noise
        gt = np.zeros((K, R, 2, 1))
        gt[:, :, 0, 0] = 3.0 - x[:, None] + noise[None]
        gt[:, :, 1, 0] = 2.0 + x[:, None] + noise[None] + 0.001 * np.cos(reps)[None]
        return Outcomes(["f"], reps, treated, base, groups=[("approach", "a"), ("approach", "b")],
                        group_metrics=["delay_veh_h"], group_treated=gt, group_baseline=gb)


def test_a_relative_equity_limit_steers_the_search_and_the_recommendation(tmp_path):
    space = [Parameter("x", "float", 0.0, 1.0, baseline=0.0)]
    kw = dict(sampler="random", budget=24, batch=8, replications=4, seed=1, progress=False, confirm_top=5)
    free = Search(Grouped(), space, [Objective("f")], **kw).run()
    assert free.best["params"]["x"] > 0.8  # without the limit: as far as it goes
    rel = Constraint("delay_veh_h", group_kind="approach", max_rel=0.25)
    res = Search(Grouped(), space, [Objective("f")], [rel], outdir=tmp_path, **kw).run()
    x = res.best["params"]["x"]
    assert 0.3 < x <= 0.5, x  # within 25 % of b's baseline (2.0) on the held-out interval, not 25 % of 1.0
    assert res.best["recommendation"] == "candidate"
    cand = res.candidates
    assert (cand.loc[cand["feasible"], "param:x"] <= 0.5 + 1e-6).all()  # judged on the means while searching
    assert not cand.loc[cand["param:x"] > 0.51, "feasible"].any()
    assert json.loads((tmp_path / "best_policy.json").read_text())["constraints"] == [
        {"metric": "delay_veh_h", "max": None, "min": None, "max_rel": 0.25, "min_rel": None, "group_kind": "approach",
         "group": None}]
    import pandas as pd

    cg = pd.read_parquet(tmp_path / "confirmed_groups.parquet")
    b = cg[(cg["trial"] == res.best["trial"]) & (cg["group"] == "b")].iloc[0]
    assert b["baseline_mean"] == pytest.approx(2.0, abs=0.01) and b["ci_high"] <= 0.25 * b["baseline_mean"]
    assert math.isfinite(b["baseline_mean"])
