"""A run interrupted mid-way (Ctrl-C or a crash) keeps what it simulated and says it is incomplete."""
import json

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from twins.cli import CONF_DIR
from twins.core import runner
from twins.traffic.model import TrafficTwin


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupted_run_writes_partial_results(tmp_path, monkeypatch, error):
    original = TrafficTwin.step

    def step(self):
        if self.step_index == 90:
            raise error("stop here")
        original(self)

    monkeypatch.setattr(TrafficTwin, "step", step)
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=["scenario=junction", "horizon_s=300", "replications=2",
                                                       "progress=false"])
    with pytest.raises(error):
        runner.run(cfg, tmp_path)
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["complete"] is False and man["steps_done"] == 90 and man["steps"] == 300
    worlds = pd.read_parquet(tmp_path / "worlds.parquet")
    trips = pd.read_parquet(tmp_path / "trips.parquet")
    assert len(worlds) == 2 and worlds["vehicles_inserted"].gt(0).all()
    assert trips["depart_s"].max() <= 90.0 + 1e-9  # only what was simulated
    assert (tmp_path / "metrics.json").exists()
