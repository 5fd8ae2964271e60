"""The traffic twin's Mesa DataCollector is per world and is the source of timeseries.parquet (issue 21 item 5):
each model reporter gives one value per world at every interval's close, so baseline and treated worlds are never
averaged together, and a reporter added to the collector becomes a column of the table."""
from __future__ import annotations

import mesa
import numpy as np
from hydra import compose, initialize_config_dir

from twins.cli import CONF_DIR
from twins.core import pipeline


def _twin():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose(config_name="config", overrides=["scenario=junction", "horizon_s=240", "replications=3",
                                                       "output.timeseries_interval_s=60", "progress=false"])
    return pipeline.make_twin(cfg)


def test_the_collector_reports_per_world_and_is_the_timeseries_table():
    tw = _twin()
    res = tw.run(progress=False)
    ts = res.tables["timeseries"]
    mv = tw.datacollector.model_vars
    assert mv["time_s"] == [60.0, 120.0, 180.0, 240.0]
    assert all(np.asarray(v).shape == (3,) for v in mv["vehicles_in_network"])  # one value per world
    assert list(ts.columns[:2]) == ["time_s", "world"] and len(ts) == 4 * 3
    for i, t in enumerate(mv["time_s"]):
        rows = ts[ts["time_s"] == t].sort_values("world")
        np.testing.assert_array_equal(rows["arrivals"].to_numpy(), mv["arrivals"][i])
    # the worlds differ (replications), so a mean over them would have hidden something
    assert len(set(np.asarray(mv["vehicles_in_network"][-1]).tolist())) > 1
    # per-world arrivals add up to the run's throughput
    np.testing.assert_array_equal(ts.groupby("world")["arrivals"].sum().to_numpy(),
                                  res.worlds.sort_values("world")["throughput_veh"].to_numpy())
    # detectors report per world too
    agents = tw.datacollector.get_agent_vars_dataframe()["flow_veh_h"].dropna()
    assert len(agents) and all(np.asarray(v).shape == (3,) for v in agents)


def test_a_reporter_added_to_the_collector_becomes_a_column():
    tw = _twin()
    tw.datacollector = mesa.DataCollector(model_reporters={
        **tw.datacollector.model_reporters,
        "halted_vehicles": lambda m: m.lane_queues(halted_only=True).sum(1).cpu().numpy()})
    ts = tw.run(progress=False).tables["timeseries"]
    assert "halted_vehicles" in ts and len(ts) == 4 * 3 and (ts["halted_vehicles"] >= 0).all()
