"""A chunked run interrupted mid-way: the finished chunks' results are readable, the running chunk's
outcomes up to the interruption are kept, and the folder is marked incomplete."""
import json

import pandas as pd
import pytest

from twins.core import runner
from twins.traffic.model import TrafficTwin

from .conftest import compose_cfg


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupted_chunked_run_keeps_finished_chunks(tmp_path, monkeypatch, error):
    original = TrafficTwin.step

    def step(self):  # chunk 1 (replications 2, 3) stops at step 50; chunk 0 finishes
        if int(self.worlds.replication[0]) == 2 and self.step_index == 50:
            raise error("stop here")
        original(self)

    monkeypatch.setattr(TrafficTwin, "step", step)
    cfg = compose_cfg("scenario=junction", "horizon_s=120", "replications=4", "compute.max_worlds_per_chunk=2")
    with pytest.raises(error):
        runner.run(cfg, tmp_path)
    man = json.loads((tmp_path / "manifest.json").read_text())
    assert man["complete"] is False and man["steps"] == 120 and man["steps_done"] == 50
    assert man["compute"]["chunks_done"] == [0] and man["compute"]["chunks_total"] == 2
    assert man["compute"]["worlds_complete"] == 2
    worlds = pd.read_parquet(tmp_path / "worlds.parquet")
    trips = pd.read_parquet(tmp_path / "trips.parquet")
    assert worlds["world"].tolist() == [0, 1, 2, 3]
    # the finished chunk ran to the horizon, the interrupted one to step 50
    assert trips.loc[trips["world"] < 2, "depart_s"].max() > 50.0
    assert trips.loc[trips["world"] >= 2, "depart_s"].max() <= 50.0 + 1e-9
    assert worlds["vehicles_inserted"].gt(0).all()
    assert (tmp_path / "metrics.json").exists()
