"""An honest best policy: when no candidate beats the baseline on the held-out confirmation, best_policy.json
recommends the baseline and says why (issue 18, item 3); invalid plans are counted in the outputs."""
from __future__ import annotations

import json

import numpy as np

from interventions.base import Parameter
from interventions.search import Search
from interventions.search_confirm import invalid_summary
from interventions.search_objectives import Objective

from .conftest import Synthetic


def _space(lo, hi):
    return [Parameter("x", "float", lo, hi, baseline=0.0), Parameter("y", "float", lo, hi, baseline=0.0)]


def test_nothing_beats_the_baseline_recommends_the_baseline(tmp_path):
    """Every candidate lies far from the optimum (f(0, 0) = 0.45 < f of any point in [1.5, 2]²): the best
    candidate is confirmed worse, so the recommendation is the baseline, with the reason and its effect."""
    res = Search(Synthetic(), _space(1.5, 2.0), [Objective("f")], sampler="random", budget=8, batch=4,
                 replications=2, progress=False, outdir=tmp_path).run()
    best = json.loads((tmp_path / "best_policy.json").read_text())
    assert best["recommendation"] == "baseline" and best["recommended_params"] == {}
    ref = best["best_candidate"]
    assert ref["trial"] == best["trial"] and ref["metric"] == "f" and ref["effect"] > 0  # worse (minimize)
    assert ref["effect"] == best["confirmed"]["f"]["effect"]
    assert "no candidate beats the baseline" in best["reason"] and "worse than" in best["reason"]
    assert res.best["recommendation"] == "baseline"
    assert best["candidates"] == {"evaluated": 8, "invalid": 0, "invalid_share": 0.0, "invalid_by": {}}


def test_a_significant_improvement_is_recommended():
    res = Search(Synthetic(), _space(-2.0, 2.0), [Objective("f")], sampler="tpe", budget=24, batch=8,
                 replications=4, progress=False).run()
    assert res.best["recommendation"] == "candidate", res.best["reason"]
    assert res.best["recommended_params"] == res.best["params"]
    assert res.best["best_candidate"]["ci_high"] < 0


def test_an_improvement_whose_interval_includes_zero_is_not_recommended():
    """A tiny gain drowned in noise: point estimate better, interval includes 0 -> baseline."""

    class Noisy(Synthetic):
        def __call__(self, params, reps):
            out = super().__call__(params, reps)
            rng = np.random.default_rng(int(reps[0]) + 1)
            out.treated = out.baseline[None] - 1e-3 + 5.0 * rng.standard_normal(out.treated.shape)
            return out

    s = Search(Noisy(), _space(-1.0, 1.0), [Objective("f")], sampler="random", budget=4, batch=4,
               replications=2, progress=False)
    res = s.run()
    e = res.best["best_candidate"]
    assert e["ci_low"] < 0 < e["ci_high"]
    assert res.best["recommendation"] == "baseline"
    assert ("includes 0" in res.best["reason"]) or ("worse than" in res.best["reason"])
    assert s.summary["recommendation"] == "baseline"


def test_invalid_plans_are_counted_by_parameter():
    class Picky(Synthetic):
        def __call__(self, params, reps):
            out = super().__call__(params, reps)
            out.invalid = ["intervention.cycle_s=1 is invalid: expected ..." if row[0] > 1 else None
                           for row in np.atleast_2d(params)]
            out.treated[[i for i, w in enumerate(out.invalid) if w]] = np.nan
            return out

    s = Search(Picky(), _space(-2.0, 2.0), [Objective("f")], sampler="random", budget=16, batch=8,
               replications=2, progress=False)
    res = s.run()
    n_bad = int((res.candidates["param:x"] > 1).sum())
    assert n_bad > 0
    summ = invalid_summary(res.candidates)
    assert summ["invalid"] == n_bad and summ["invalid_by"] == {"intervention.cycle_s": n_bad}
    assert s.summary["invalid"] == n_bad and res.best["candidates"]["invalid"] == n_bad


def test_search_folder_and_console_say_the_invalid_count_and_the_recommendation(tmp_path, caplog):
    import logging

    from hydra import compose, initialize_config_dir

    from interventions.search_config import search_from_config
    from twins.cli import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=[
            "scenario=arterial", "intervention=signal_timing", "horizon_s=120", "replications=2", "search.budget=4",
            "search.batch=4", "search.sampler=random", "search.confirm.top=1", "progress=false",
            "output.figures=false", "compute.device=cpu"])
    with caplog.at_level(logging.INFO, logger="twins"):
        res = search_from_config(cfg, tmp_path)
    man = json.loads((tmp_path / "manifest.json").read_text())
    summ = man["search_summary"]
    assert summ["evaluated"] == 4 and summ["invalid"] == int(res.candidates["invalid"].notna().sum())
    assert summ["recommendation"] in ("candidate", "baseline") and summ["reason"]
    lines = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("search: 4 candidate(s) evaluated, ") and "invalid plan(s)" in m for m in lines), lines
    assert sum(m.startswith("recommendation: ") for m in lines) == 1
    if res.best is not None:
        best = json.loads((tmp_path / "best_policy.json").read_text())
        assert best["recommendation"] == summ["recommendation"] and best["candidates"]["evaluated"] == 4


def test_no_feasible_candidate_says_which_limit_the_best_breaks():
    from interventions.search_objectives import Constraint

    s = Search(Synthetic(), _space(-2.0, 2.0), [Objective("f")], [Constraint("g", max=-100.0)], sampler="random",
               budget=4, batch=4, replications=2, progress=False)
    res = s.run()
    assert res.best is None and s.summary["recommendation"] == "baseline"
    assert s.summary["reason"].startswith("no candidate was feasible while searching (4 evaluated): every one "
                                          "broke g"), s.summary["reason"]
