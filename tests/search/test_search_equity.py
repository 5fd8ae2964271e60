"""Equity (group) constraints in the search, and the confirmed-so-far display.

The junction case is built so that the unconstrained optimum harms one approach: 700 veh/h north–south
against 250 veh/h east–west with an equal-split plan as the baseline. Mean delay over all vehicles falls as
the north–south phase gets more green, while every east–west vehicle waits longer. An equity limit on each
approach's extra delay must move the recommended split back, and the recommendation must satisfy the limit
on the unfavourable end of every approach's held-out interval.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from interventions.search import Search
from interventions.search_config import search_from_config
from interventions.search_objectives import Constraint, Objective, constraints_from
from twins.cli import CONF_DIR
from twins.core.errors import ConfigError

from .conftest import space2


def test_group_constraint_is_judged_on_every_group_of_its_kind():
    c = Constraint("delay", max=0.2, group_kind="approach")
    groups = {("approach", "a"): {"delay": 0.1}, ("approach", "b"): {"delay": 0.35}, ("origin", "x"): {"delay": 9.0}}
    assert c.violation({}, groups) == pytest.approx(0.15)  # the worst approach, origins ignored
    assert Constraint("delay", max=0.2, group_kind="approach", group="a").violation({}, groups) < 0
    # at confirmation: the unfavourable end of each group's interval
    assert c.violation({}, {("approach", "a"): {"delay": (0.0, 0.25)}}) == pytest.approx(0.05)
    assert Constraint("delay", min=-0.1, group_kind="approach").violation(
        {}, {("approach", "a"): {"delay": (-0.3, 0.25)}}) == pytest.approx(0.2)
    # a group whose interval is unbounded (one replication) cannot be shown feasible, whatever the others do
    assert math.isinf(c.violation({}, {("approach", "a"): {"delay": (0.0, 0.1)},
                                       ("approach", "b"): {"delay": (-math.inf, math.inf)}}))
    # a group with no data for the metric (NaN) is not judged
    assert c.violation({}, {("approach", "a"): {"delay": (0.0, 0.1)},
                            ("approach", "b"): {"delay": (math.nan, math.nan)}}) < 0
    # the groups it names are not reported: it cannot be shown feasible
    assert math.isinf(c.violation({"delay": 0.0}, {("origin", "x"): {"delay": 0.0}}))
    assert math.isinf(c.violation({"delay": 0.0}, None))


def test_constraints_from_config_reads_group_keys_and_rejects_typos():
    cs = constraints_from({"constraints": [{"metric": "delay_veh_h", "group_kind": "approach", "max": 0.2},
                                           {"metric": "throughput_veh", "min": -5}]})
    assert cs[0] == Constraint("delay_veh_h", 0.2, None, "approach", None)
    assert cs[1].group_kind is None and cs[1].min == -5
    with pytest.raises(ConfigError, match="group_kind"):
        constraints_from({"constraints": [{"metric": "d", "max": 1, "group_kid": "approach"}]})


def test_confirming_the_leader_during_the_search_changes_no_number(synthetic, tmp_path):
    """The progress display confirms each new leader on held-out replications; the final confirmation reuses
    those runs, so the outputs equal a search that confirms only at the end. (noise=0: the synthetic
    evaluator's extra noise depends on the batch size, which a twin's worlds never do.)"""
    kw = dict(objectives=[Objective("f")], sampler="random", budget=16, batch=4, replications=4, seed=3,
              figures=False, confirm_top=3)
    quiet = Search(synthetic(noise=0.0), space2(), progress=False, outdir=tmp_path / "a", **kw).run()
    ev = synthetic(noise=0.0)
    shown = Search(ev, space2(), progress=True, outdir=tmp_path / "b", **kw).run()
    pd.testing.assert_frame_equal(quiet.confirmed, shown.confirmed)
    assert quiet.best["trial"] == shown.best["trial"]
    held_out_calls = ev.calls - 4  # four search batches
    assert held_out_calls >= 2  # the leader changed at least once after the first batch, plus the final batch


def _junction(tmp_path, constraints: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=[
            "scenario=junction", "scenario.flows_veh_h={N: 700, S: 700, E: 250, W: 250}",
            "intervention=signal_timing", "horizon_s=900", "replications=4", "search.params=[green_split]",
            "search.sampler=grid", "search.grid_points=7", "search.budget=7", "search.batch=7",
            "search.confirm.top=3", "search.confirm.replications=6", f"search.constraints={constraints}",
            "progress=false", "compute.device=cpu", "output.figures=false"])
    res = search_from_config(cfg, tmp_path)
    return res, json.loads((tmp_path / "best_policy.json").read_text())


def test_equity_constraint_changes_the_recommended_signal_plan(tmp_path):
    free, free_best = _junction(tmp_path / "free", "[]")
    limit = 0.15  # veh·h of extra delay on any one approach over the 15 minutes
    fair, fair_best = _junction(tmp_path / "fair",
                                f"[{{metric: delay_veh_h, group_kind: approach, max: {limit}}}]")
    # unconstrained: the north–south phase takes most of the green and the east–west approaches pay for it
    groups = pd.read_parquet(tmp_path / "free" / "confirmed_groups.parquet")
    worst_free = groups[(groups.trial == free_best["trial"]) & (groups.metric == "delay_veh_h")
                        & (groups.group_kind == "approach")]["ci_high"].max()
    assert free_best["params"]["green_split"] > 0.5 and worst_free > limit
    # constrained: a different plan, every approach's held-out upper bound under the limit, still an improvement
    assert fair_best["params"]["green_split"] < free_best["params"]["green_split"]
    assert fair_best["constraints"] == [{"metric": "delay_veh_h", "max": limit, "min": None,
                                         "group_kind": "approach", "group": None}]
    g = pd.read_parquet(tmp_path / "fair" / "confirmed_groups.parquet")
    mine = g[(g.trial == fair_best["trial"]) & (g.metric == "delay_veh_h") & (g.group_kind == "approach")]
    assert len(mine) == 4 and (mine["ci_high"] <= limit).all()
    assert fair_best["confirmed"]["mean_delay_s"]["ci_high"] < 0
    # no recommended policy violates it: every confirmed trial the search could have picked is checked
    for tr in g.trial.unique():
        sub = g[(g.trial == tr) & (g.metric == "delay_veh_h") & (g.group_kind == "approach")]
        if tr == fair_best["trial"]:
            assert (sub["ci_high"] <= limit).all()
    assert np.isfinite(fair.candidates["max_violation"]).all()
