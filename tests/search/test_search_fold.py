"""Issue 20, item 4: a search's leader is confirmed on held-out replications in the same world batch as the next
candidates (``TwinEvaluator.evaluate_many``), not in a batch of its own. Batch independence makes that free of
side effects: every number equals the separate evaluations'."""
from __future__ import annotations

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir

from interventions._evaluate import TwinEvaluator
from interventions.search import Search
from interventions.search_objectives import Objective
from twins.cli import CONF_DIR


def _evaluator() -> TwinEvaluator:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=[
            "scenario=junction", "intervention=signal_timing", "horizon_s=300", "replications=2",
            "progress=false", "compute.device=cpu", "output.figures=false"])
    ev = TwinEvaluator(cfg, ["cycle_s", "green_split"])
    calls = []
    simulate = ev._simulate
    ev._simulate = lambda worlds, arms: (calls.append(worlds.size), simulate(worlds, arms))[1]
    ev.calls = calls
    return ev


class _OneAtATime:
    """The same evaluator without ``evaluate_many``: every evaluation is a batch of its own."""

    def __init__(self, ev):
        self.ev = ev

    def __call__(self, params, replications):
        return self.ev(params, replications)


def test_evaluate_many_equals_separate_evaluations():
    ev = _evaluator()
    X = np.array([[60.0, 0.5], [90.0, 0.6]])
    held = np.array([[75.0, 0.45]])
    a, b = ev(X, [0, 1]), ev(held, [100, 101, 102])
    m_a, m_b = ev.evaluate_many([(X, [0, 1]), (held, [100, 101, 102])])
    assert ev.calls[-1] == 3 * 2 + 2 * 3  # one world batch: (baseline + 2) x 2 and (baseline + 1) x 3
    for one, both in ((a, m_a), (b, m_b)):
        np.testing.assert_array_equal(one.treated, both.treated)
        np.testing.assert_array_equal(one.baseline, both.baseline)
        np.testing.assert_array_equal(one.replications, both.replications)
        assert one.groups == both.groups
        np.testing.assert_array_equal(one.group_treated, both.group_treated)


def test_leader_confirmed_with_the_next_batch_changes_no_number(tmp_path):
    kw = dict(objectives=[Objective("mean_delay_s")], sampler="random", budget=8, batch=2, replications=2, seed=4,
              figures=False, confirm_top=2, confirm_replications=2, progress=True)
    ev = _evaluator()
    folded = Search(ev, ev.space, outdir=tmp_path / "folded", **kw).run()
    plain_ev = _evaluator()
    plain = Search(_OneAtATime(plain_ev), plain_ev.space, outdir=tmp_path / "plain", **kw).run()
    pd.testing.assert_frame_equal(folded.confirmed, plain.confirmed)
    assert folded.best["trial"] == plain.best["trial"]
    # four search batches and one final confirmation; separately, each new leader costs a batch of its own
    assert len(ev.calls) == 5 and len(plain_ev.calls) > 5
