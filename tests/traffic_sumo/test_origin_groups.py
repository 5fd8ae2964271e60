"""Origin groups of SUMO scenarios (issue 18): SUMO route files name no origin zones, so the trips are grouped by the
edge they enter the network on, and entries that load fewer than ``scenario.origin_min_trips`` trips are pooled
into one group. Before, every route (on RESCO's files often a single trip) was its own ``origin`` group, and the
equity rule of ``ethics=traffic`` (no origin group worse by more than 10 s) was broken by one vehicle's delay.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from scenarios.sumo import OTHER_ENTRIES, SumoScenario, group_by_entry, load_scenario
from twins.core.errors import ConfigError
from twins.traffic.demand import Demand, Flow

DATA = Path(__file__).resolve().parents[1] / "data" / "sumo"


def _demand() -> Demand:
    return Demand(flows=[
        Flow("a1", ["N1", "X"], kind="fixed", departures=[float(t) for t in range(0, 600, 10)]),  # 60 from N1
        Flow("a2", ["N1", "Y"], kind="fixed", departures=[5.0, 15.0]),  # 2 more from N1
        Flow("b", ["S1", "X"], rate=360.0, begin=0.0, end=600.0),  # 60 expected from S1
        Flow("c", ["E1", "X"], kind="fixed", departures=[1.0, 2.0, 3.0]),  # a small entry: pooled
        Flow("d", ["W1", "Y"], kind="fixed", departures=[7.0, 8.0]),  # another small one: pooled
        Flow("late", ["L1", "X"], kind="fixed", departures=[float(t) for t in range(1000, 1100)]),  # after the end
        Flow("zone", ["N1", "X"], kind="fixed", departures=[1.0], group="depot"),  # a named group is kept
    ])


def test_flows_are_grouped_by_entry_edge_and_small_entries_pooled():
    d = group_by_entry(_demand(), begin=0.0, end=600.0, min_trips=50)
    groups = {f.id: f.group for f in d.flows}
    assert groups == {"a1": "N1", "a2": "N1", "b": "S1", "c": OTHER_ENTRIES, "d": OTHER_ENTRIES,
                      "late": OTHER_ENTRIES, "zone": "depot"}
    # the input is not changed, and everything else about the flows is kept
    assert all(f.group in ("", "depot") for f in _demand().flows)
    assert [f.departures for f in d.flows] == [f.departures for f in _demand().flows]


def test_min_trips_zero_keeps_every_entry_and_a_bad_value_is_refused():
    d = group_by_entry(_demand(), begin=0.0, end=600.0, min_trips=0)
    assert {f.group for f in d.flows} == {"N1", "S1", "E1", "W1", "L1", "depot"}
    with pytest.raises(ConfigError, match="scenario.origin_min_trips"):
        group_by_entry(_demand(), min_trips=-1)


def test_a_sumo_scenario_groups_its_trips_by_entry():
    def load(**kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the import's note on what tiny.net.xml leaves out
            return load_scenario(SumoScenario(sumocfg=str(DATA / "tiny.sumocfg"), **kw))[1]

    # tiny.rou.xml: every route enters on WC
    assert {f.group for f in load().flows} == {"WC"}
    assert {f.group for f in load(origin_min_trips=1e9).flows} == {OTHER_ENTRIES}
    # the groups survive the per-replication re-draw
    assert {f.group for f in load(demand_variation="poisson", demand_interval_s=60.0).flows} == {"WC"}
