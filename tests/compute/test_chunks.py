"""Chunked execution: the same worlds run in one batch or in chunks of any size give bit-identical
results (batch independence, DESIGN §3.2), reassembled in world order with the global world index."""
import pandas as pd
import pytest
import torch
from omegaconf import open_dict

from interventions import counterfactual as cf
from twins.compute.execute import Execution, execution_for, merge, remap
from twins.compute.plan import Job, make_plan
from twins.core import runner

from .conftest import compose_cfg

TRAFFIC = ["scenario=junction", "horizon_s=240", "replications=3", "intervention=signal_timing",
           "intervention.cycle_s=90"]
MOLECULAR = ["scenario=molecular", "scenario.horizon=0.5", "replications=4"]
# buses whose treated arm starts after the horizon: the treated worlds' chunks have no stop visits
BUSES = ["scenario=junction", "scenario.flows_veh_h={N: 100, E: 100, S: 100, W: 100}", "ethics.enabled=false",
         "scenario.bus_lines=[{name: L, route: [W0_J0_0, J0_0_E0], headway_s: 100, "
         "stops: [{name: a, edge: W0_J0_0, pos_m: 100, pax_per_h: 180}]}]",
         "intervention=bus_headway", "intervention.offset_s=1000", "replications=2", "horizon_s=240"]


def _job(overrides, chunk=None):
    cfg = compose_cfg(*overrides, f"compute.max_worlds_per_chunk={'null' if chunk is None else chunk}")
    plan = runner.plan_counterfactual(cfg)
    return plan.exe, plan.twin


def _one_batch(overrides):
    """The reference: every world in one twin, run directly (no plan), tables in world order."""
    iv, arms, twin = runner.make_counterfactual(compose_cfg(*overrides))
    res = twin.run(progress=False)
    return merge([remap(res, range(twin.W))]), twin.W


LANE_TABLES = ("edges", "detectors")


def _assert_same(a, b, skip=()):
    pd.testing.assert_frame_equal(a.worlds, b.worlds, check_exact=True)
    if a.groups is not None or b.groups is not None:
        pd.testing.assert_frame_equal(a.groups, b.groups, check_exact=True)
    assert sorted(a.tables) == sorted(b.tables)
    for k in a.tables:
        if k not in skip:
            pd.testing.assert_frame_equal(a.tables[k], b.tables[k], check_exact=True, obj=k)


@pytest.mark.parametrize("overrides", [TRAFFIC, MOLECULAR, BUSES], ids=["traffic", "molecular", "buses"])
def test_chunked_equals_one_batch(overrides):
    ref, W = _one_batch(overrides)
    assert W >= 4 and ref.worlds["world"].tolist() == list(range(W))
    for chunk in (1, 3, None):
        exe, _ = _job(overrides, chunk)
        assert len(exe.plan.chunks) == (-(-W // chunk) if chunk else 1)
        got = exe.run(progress=False)
        _assert_same(got, ref)
        assert got.complete
    # the comparison is not vacuous: the worlds differ from one another
    m = ref.metrics[0]
    assert ref.worlds[m].nunique() > 1


def test_chunks_carry_global_world_numbers_and_arms():
    exe, _ = _job(TRAFFIC, 2)
    res = exe.run(progress=False)
    W = exe.job.W
    assert res.worlds["world"].tolist() == list(range(W))
    assert res.worlds["arm"].tolist() == exe.job.worlds.arm.tolist()
    assert res.worlds["replication"].tolist() == exe.job.worlds.replication.tolist()
    assert set(res.tables["trips"]["world"]) == set(range(W))
    ts = res.tables["timeseries"]
    assert ts["world"].is_monotonic_increasing  # world order, each world's rows in time order
    assert all(g["time_s"].is_monotonic_increasing for _, g in ts.groupby("world"))


def test_plan_sizes_chunks_to_memory(monkeypatch):
    """The planner divides the free memory (times memory_fraction) by the probed bytes per world."""
    from twins.compute import plan as plan_mod

    cfg = compose_cfg(*TRAFFIC)
    job = Job(cfg, cf.worlds_for(cfg.seed, 20, [cf.Arm(0, "baseline")]), [])
    probe = plan_mod.probe_memory(job, torch.device("cpu"))
    assert probe.bytes_per_world > 0 and "cpu" in probe.method
    # pretend 5.5 worlds' worth is free: 0.8 × 5.5 = 4.4 -> 4 worlds per chunk
    monkeypatch.setattr(plan_mod, "free_bytes", lambda d: (5.5 * probe.bytes_per_world + probe.fixed_bytes / 0.8))
    p = make_plan(job)
    assert p.chunk_size == 4 and p.reason == "device memory" and len(p.chunks) == 5
    assert [i for c in p.chunks for i in c.index] == list(range(20))
    with open_dict(cfg):
        cfg.compute.max_worlds_per_chunk = 3
    p = make_plan(job)
    assert p.chunk_size == 3 and p.reason == "compute.max_worlds_per_chunk"


def test_bytes_per_world_grows_with_the_scenario():
    """A sanity check of the probe: a longer horizon pre-draws more vehicles per world."""
    from twins.compute import plan as plan_mod

    small = compose_cfg("scenario=junction", "horizon_s=120")
    big = compose_cfg("scenario=junction", "horizon_s=1200")
    pb = [plan_mod.probe_memory(Job(c, cf.worlds_for(0, 4, [cf.Arm(0, "b")]), []), torch.device("cpu"))
          for c in (small, big)]
    assert pb[1].bytes_per_world > 1.5 * pb[0].bytes_per_world


def test_search_batch_is_planned():
    from twins.compute.plan import MIN_SEARCH_ROUNDS, search_batch

    cfg = compose_cfg("scenario=junction", "horizon_s=120", "intervention=signal_timing")
    # plenty of memory on this machine: the sampler keeps its rounds
    assert search_batch(cfg, 4, 32) == 32 // MIN_SEARCH_ROUNDS
    with open_dict(cfg):
        cfg.compute.max_worlds_per_chunk = 12  # (K + 1) × 4 <= 12 -> K = 2
    assert search_batch(cfg, 4, 32) == 2


def test_lane_observations_do_not_depend_on_the_batch():
    """A world alone (its step window then covers every slot, so the step works on views of the state) gives
    the same edges/detectors tables as in a batch: lane observations are taken before the write-back."""
    ref, W = _one_batch(TRAFFIC)
    exe, _ = _job(TRAFFIC, 1)
    got = exe.run(progress=False)
    for k in LANE_TABLES:
        pd.testing.assert_frame_equal(got.tables[k], ref.tables[k], check_exact=True, obj=k)


@pytest.mark.parametrize("overrides", [TRAFFIC, BUSES], ids=["traffic", "buses"])
def test_chunked_run_builds_the_trips_only_when_read(overrides, monkeypatch):
    """remap and merge keep a chunk's pending tables pending (a run or a search that reads only the metrics never
    builds the trips); read, the merged tables equal the eager ones: every table of the one-batch twin built
    before renumbering and concatenating (the path before lazy tables), and the twin's own trips table."""
    from twins.core.twin import LazyTables, RunResult, pending_table
    from twins.traffic import outcomes

    iv, arms, twin = runner.make_counterfactual(compose_cfg(*overrides))
    res = twin.run(progress=False)
    W = twin.W
    eager = merge([remap(RunResult(worlds=res.worlds, metrics=res.metrics, tables=dict(res.tables.items()),
                                   groups=res.groups), range(W))])
    assert not isinstance(eager.tables, LazyTables) or all(pending_table(eager.tables, k) is None
                                                          for k in eager.tables)
    own = twin.trips()
    if "mode" in own:  # with bus lines, ``trips`` holds the cars
        own = own[own["mode"] == "car"].drop(columns="mode").reset_index(drop=True)
    pd.testing.assert_frame_equal(eager.tables["trips"], own, check_exact=True)

    built = []
    call = outcomes.TripsTable.__call__
    monkeypatch.setattr(outcomes.TripsTable, "__call__", lambda self: built.append(1) or call(self))
    lazy_names = ("trips", "bus_trips") if "intervention=bus_headway" in overrides else ("trips",)
    exe, _ = _job(overrides, 1)
    got = exe.run(progress=False)
    n = len(exe.plan.chunks)
    assert n == W > 1
    assert not built  # nothing read the trips: no chunk built them
    for k in lazy_names:
        assert pending_table(got.tables, k) is not None, k
        assert all(pending_table(exe.done[c].result.tables, k) is not None for c in exe.done), k
    pd.testing.assert_frame_equal(got.worlds, eager.worlds, check_exact=True)
    pd.testing.assert_frame_equal(got.groups, eager.groups, check_exact=True)
    assert sorted(got.tables) == sorted(eager.tables)
    for k in eager.tables:
        pd.testing.assert_frame_equal(got.tables[k], eager.tables[k], check_exact=True, obj=k)
    assert len(built) == n * len(lazy_names)  # each chunk's trips built once, when the merged table was read
    assert got.tables["trips"] is got.tables["trips"] and len(built) == n * len(lazy_names)  # kept once built
    # the chunks' parts were built for the merge, not kept twice
    assert all(pending_table(exe.done[c].result.tables, "trips") is not None for c in exe.done)
