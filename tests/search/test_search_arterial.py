"""On the arterial scenario, a searched signal plan lowers mean delay against the scenario's default plan,
with the confirmed interval (held-out replications) excluding zero."""
from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir

from interventions.search_config import search_from_config
from twins.cli import CONF_DIR


@pytest.mark.slow
def test_arterial_search_lowers_mean_delay(tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=[
            "scenario=arterial", "intervention=signal_timing", "horizon_s=600", "replications=4",
            "search.budget=16", "search.batch=8", "search.sampler=tpe", "search.confirm.top=2",
            "search.confirm.replications=8", "progress=false", "compute.device=cpu"])
    res = search_from_config(cfg, tmp_path)
    best = json.loads((tmp_path / "best_policy.json").read_text())
    e = best["confirmed"]["mean_delay_s"]
    assert e["effect"] < 0 and e["ci_high"] < 0, e  # held-out interval excludes zero
    assert e["n"] == 8
    assert best["replications"]["confirm"][0] >= 10_000
    assert len(res.candidates) == 16
    for f in ("candidates.parquet", "pareto.parquet", "figures/convergence.png", "figures/confirmed.png"):
        assert (tmp_path / f).exists()
