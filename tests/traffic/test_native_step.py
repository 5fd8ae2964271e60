"""The compiled CPU step (``compute.compile=true``; :mod:`twins.traffic.native`) gives the numbers of the
tensor kernels bit for bit: at every step, every state column of the running vehicles, the carried
leaders and lane tails, and the per-lane observations; on grids, an arterial, a junction, a ring, an
imported SUMO network, lanes shorter than a step's travel, a loop edge, vehicle types with different IDM
exponents, turning speeds, SUMO's Krauss with dawdling, right of way (permissive greens, priority
junctions), with the carried order forgotten and sorted again now and then, float32 and float64, one or
several threads; and whole runs through the CLI's run task with an adaptive signal intervention."""
from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from scenarios.traffic import (ArterialScenario, GridScenario, JunctionScenario, RingScenario, grid_scenario,
                               junction_scenario, ring_scenario)
from twins.core.errors import ConfigError
from twins.core.worlds import WorldBatch
from twins.traffic import kernels, native
from twins.traffic.model import TrafficScenario, TrafficTwin

from tests.traffic._helpers import chain_scenario, with_paths, with_right_of_way

DATA = Path(__file__).parents[1] / "data" / "sumo"
# skip only where there is no compiler at all: where one is, a build error must fail here, not skip
_CXX = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
pytestmark = pytest.mark.skipif(_CXX is None, reason="no C++ compiler: the compiled CPU step is not built")


@pytest.fixture(autouse=True, scope="module")
def _built():
    native.load()  # a ConfigError naming the compiler's message if native_step.cpp does not build


def _sumo_tiny():
    """A SUMO network and demand (tests/data/sumo): several connections per lane, internal lanes, its signals."""
    from scenarios.sumo import SumoScenario, load_scenario

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the file's notes on what the import leaves out
        net, demand, begin, _ = load_scenario(SumoScenario(sumocfg=str(DATA / "tiny.sumocfg"), end=600.0))
    return TrafficScenario(net, demand, "tiny", begin=begin), 600.0


def _with_turn_speeds(scen):
    for c in scen.network.connections:
        c.via_speed = {"l": 6.0, "r": 4.5}.get(c.direction, 11.0)
    return scen


def _krauss(scen):
    scen.car_following = "Krauss"
    return scen


def _merge(horizon, trucks):
    from tests.traffic.test_lane_changing import merge_scenario

    return merge_scenario(horizon, headway=2.0, trucks=trucks)


def _across(horizon):
    from tests.traffic.test_lane_changing import across_scenario

    return across_scenario(horizon, headway=2.0)


def _lane_changing(scen):
    scen.lane_changing = True
    return scen


def _depart_avg(scen):
    """Every vehicle inserted at its lane's mean speed (SUMO's departSpeed="avg", kernels rule 3)."""
    for f in scen.demand.flows:
        f.depart_speed = "avg"
    return scen


CASES = {
    "grid": lambda: (grid_scenario(OmegaConf.structured(GridScenario(rows=3, cols=3)), 900.0), 900.0),
    "arterial": lambda: (grid_scenario(OmegaConf.structured(ArterialScenario()), 600.0), 600.0),
    "junction": lambda: (junction_scenario(OmegaConf.merge(OmegaConf.structured(JunctionScenario), {
        "flows_veh_h": {"N": 900, "E": 700, "S": 500, "W": 900}}), 900.0), 900.0),
    "ring": lambda: (ring_scenario(OmegaConf.structured(RingScenario(car_following="IDM")), 600.0), 600.0),
    # lanes shorter than one step's travel, a loop edge: the carried order is checked and sorted again
    "short_lanes": lambda: (chain_scenario("short", {"a": 200.0, "s1": 2.0, "s2": 0.5, "s3": 7.0, "b": 200.0},
                                   ["a", "s1", "s2", "s3", "b"]), 200.0),
    "loop_edge": lambda: (chain_scenario("loop", {"a": 200.0, "lp": 40.0, "b": 200.0}, ["a", "lp", "lp", "lp", "b"],
                                 loops=("lp",)), 200.0),
    "sumo_network": _sumo_tiny,
    # SUMO's Krauss with dawdling (rule 9), on turning speeds and on the ring
    "krauss": lambda: (_krauss(_with_turn_speeds(grid_scenario(OmegaConf.structured(GridScenario(rows=3, cols=3)),
                                                               600.0))), 600.0),
    "krauss_ring": lambda: (_krauss(ring_scenario(OmegaConf.structured(RingScenario()), 600.0)), 600.0),
    # right of way (rule 10): permissive left turns yield; unsignalized priority junctions (Krauss drivers)
    "right_of_way": lambda: (with_right_of_way(_with_turn_speeds(grid_scenario(
        OmegaConf.structured(GridScenario(rows=3, cols=3)), 900.0))), 900.0),
    "priority_junctions": lambda: (_krauss(with_right_of_way(grid_scenario(
        OmegaConf.structured(GridScenario(rows=3, cols=3)), 600.0), signals=False)), 600.0),
    # ... with paths across the junctions: a foe standing inside blocks only where it covers the path (rule 10)
    "right_of_way_paths": lambda: (with_paths(with_right_of_way(_with_turn_speeds(grid_scenario(
        OmegaConf.structured(GridScenario(rows=3, cols=3)), 900.0)))), 900.0),
    "priority_junctions_paths": lambda: (_krauss(with_paths(with_right_of_way(grid_scenario(
        OmegaConf.structured(GridScenario(rows=3, cols=3)), 600.0), signals=False))), 600.0),
    # turning speeds on every connection (rule 8): slower inside junctions, anticipated on approach
    "turn_speeds": lambda: (_with_turn_speeds(grid_scenario(OmegaConf.structured(GridScenario(rows=3, cols=3)),
                                                            900.0)), 900.0),
    # lane changing (rule 11): strategic, speed gain, cooperation, swaps; entering by the connection's lanes
    "lane_changing_junction": lambda: (_lane_changing(junction_scenario(OmegaConf.merge(
        OmegaConf.structured(JunctionScenario), {"flows_veh_h": {"N": 900, "E": 700, "S": 500, "W": 900}}),
        900.0)), 900.0),
    "lane_changing_arterial": lambda: (_lane_changing(grid_scenario(OmegaConf.structured(ArterialScenario()), 600.0)),
                                       600.0),
    "lane_changing_krauss_right_of_way": lambda: (_lane_changing(_krauss(with_right_of_way(_with_turn_speeds(
        grid_scenario(OmegaConf.structured(GridScenario(rows=3, cols=3)), 900.0))))), 900.0),
    "lane_changing_sumo_network": lambda: (lambda sc: (_lane_changing(sc[0]), sc[1]))(_sumo_tiny()),
    # vehicles entering on the wrong lane (strategic changes, cooperation, swaps; with trucks, swaps refused where a
    # longer body would not fit): tests/traffic/test_lane_changing.py's merge network
    "lane_changing_merge": lambda: (_merge(300.0, ()), 300.0),
    "lane_changing_merge_trucks": lambda: (_merge(300.0, ("VR",)), 300.0),
    # changes across two lanes that keep room ahead when urgent (kernels.LC_RESERVE_LEFT_M / _RIGHT_M)
    "lane_changing_across": lambda: (_across(300.0), 300.0),
    # inserted at the lane's mean speed, waiting on an occupied lane while the gap allows less (rule 3)
    "depart_avg_sumo_network": lambda: (lambda sc: (_depart_avg(sc[0]), sc[1]))(_sumo_tiny()),
    "depart_avg_lane_changing": lambda: (_depart_avg(_lane_changing(grid_scenario(
        OmegaConf.structured(ArterialScenario()), 600.0))), 600.0),
    # vehicle types with different exponents: the per-vehicle delta column
    "mixed_delta": lambda: (chain_scenario("mixed", {"a": 300.0, "b": 300.0}, ["a", "b"], deltas=(2, 4, 7)), 200.0),
    # one exponent for all, other than IDM's 4: the compiled IDM loop multiplies only the powers of v/v0 its bits need
    **{f"shared_delta_{d}": (lambda d=d: (chain_scenario(f"delta{d}", {"a": 300.0, "b": 300.0}, ["a", "b"],
                                                        deltas=(d,)), 200.0)) for d in (1, 3, 11)},
}


def _assert_same_step(a: TrafficTwin, b: TrafficTwin, k: int) -> None:
    run = a.state.status == kernels.RUNNING
    for key in ("status", "lane", "pos", "speed", "route_pos", "insert_step", "arrive_step", "time_loss", "stops",
                "halted"):
        assert torch.equal(getattr(a.state, key), getattr(b.state, key)), f"step {k}: state column {key!r} differs"
    # a vehicle that is not running has no leader that matters
    assert torch.equal(torch.where(run, a.state.leader, -1), torch.where(run, b.state.leader, -1)), f"step {k}: leaders"
    assert (a._lane_last is None) == (b._lane_last is None)
    if a._lane_last is not None:
        assert torch.equal(a._lane_last, b._lane_last), f"step {k}: lane tails differ"
    assert torch.equal(a.lane_acc_interval, b.lane_acc_interval), f"step {k}: lane observations differ"
    if a.state.lc_yield is not None:  # rule 11's cooperation requests
        assert torch.equal(torch.where(run, a.state.lc_yield, -1), torch.where(run, b.state.lc_yield, -1)), \
            f"step {k}: lane-change requests differ"
        assert torch.equal(torch.where(run, a.state.lc_stop, torch.inf), torch.where(run, b.state.lc_stop, torch.inf)), \
            f"step {k}: the room kept for changes differs"
        assert torch.equal(torch.where(run, a.state.lc_keep_right, 0.0), torch.where(run, b.state.lc_keep_right, 0.0)), \
            f"step {k}: the keep-right sums differ"
        assert torch.equal(torch.where(run, a.state.lc_look_ahead_speed, 0.0),
                           torch.where(run, b.state.lc_look_ahead_speed, 0.0)), f"step {k}: the look-ahead speeds differ"


def _side_by_side(scen, horizon, worlds=3, dtype=torch.float32):
    a = TrafficTwin(scen, WorldBatch.replications(7, worlds), dt=1.0, horizon=horizon, dtype=dtype)
    b = TrafficTwin(scen, WorldBatch.replications(7, worlds), dt=1.0, horizon=horizon, dtype=dtype, compile=True)
    assert b._native and not a._native
    while a.step_index < a.n_steps:
        if a.step_index % 97 == 50:  # forget the carried order: both sort it out again (rule 2)
            a._lane_last = b._lane_last = None
        a.step()
        b.step()
        _assert_same_step(a, b, a.step_index)
    moved = int((a.state.insert_step >= 0).sum())
    assert moved > 20, f"the run must do something ({moved} vehicles inserted)"
    return a, b


@pytest.mark.parametrize("case", list(CASES))
def test_native_step_equals_tensor_kernels(case):
    scen, horizon = CASES[case]()
    _side_by_side(scen, horizon)


def test_native_step_equals_tensor_kernels_float64():
    scen, horizon = CASES["grid"]()
    _side_by_side(scen, 400.0, worlds=2, dtype=torch.float64)


def test_threads_do_not_change_the_numbers():
    """Ranges of worlds run on several threads: each world's numbers stay the same."""
    scen, horizon = CASES["junction"]()
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 3):
            torch.set_num_threads(threads)
            tw = TrafficTwin(scen, WorldBatch.replications(7, 5), dt=1.0, horizon=600.0, compile=True)
            while tw.step_index < tw.n_steps:
                tw.step()
            runs.append(tw)
    finally:
        torch.set_num_threads(before)
    for key in ("pos", "speed", "status", "time_loss"):
        assert torch.equal(getattr(runs[0].state, key), getattr(runs[1].state, key)), key


def test_run_task_with_adaptive_signals_gives_the_same_results(tmp_path):
    """End to end (the CLI's run task): compute.compile=true changes speed, not one number."""
    from tests.interventions.conftest import compose_cfg
    from twins.core import runner

    common = ("scenario=junction", "intervention=max_pressure", "horizon_s=600", "replications=3")
    for name, extra in (("plain", ()), ("compiled", ("compute.compile=true",))):
        runner.run(compose_cfg(*common, *extra), tmp_path / name)
    for table in ("worlds.parquet", "trips.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "plain" / table),
                                      pd.read_parquet(tmp_path / "compiled" / table))


def test_missing_compiler_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-c++"))
    monkeypatch.setenv("TWINS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_lib", None)
    with pytest.raises(ConfigError, match="compute.compile"):
        native.load()
    scen, _ = CASES["short_lanes"]()
    with pytest.raises(ConfigError, match="C\\+\\+ compiler"):
        TrafficTwin(scen, WorldBatch.replications(0, 1), dt=1.0, horizon=10.0, compile=True)


def test_unusable_cache_folder_falls_back_to_the_tensor_kernels(monkeypatch, tmp_path):
    """compute.compile=null never fails a run: a cache path that is a file is a ConfigError, then a warning."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TWINS_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_warned", False)
    with pytest.raises(ConfigError, match="TWINS_CACHE_DIR"):
        native.load()
    scen, _ = CASES["short_lanes"]()
    with pytest.warns(UserWarning, match="compute.compile=null.*TWINS_CACHE_DIR"):
        tw = TrafficTwin(scen, WorldBatch.replications(0, 1), dt=1.0, horizon=10.0, compile=None)
    assert tw.kernel == "tensor"


def test_a_compiler_without_the_cpu_flag_gets_the_plain_build(monkeypatch, tmp_path):
    """An old compiler that rejects -march=x86-64-v2 (here: an unknown -march) builds with the plain flags."""
    monkeypatch.setenv("TWINS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "flag_sets", lambda: [native.BASE_FLAGS + ["-march=no-such-cpu"], native.BASE_FLAGS])
    assert native.load() is not None
    assert len(list((tmp_path / "cache").glob("traffic_step_*.so"))) == 1
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "flag_sets", lambda: [native.BASE_FLAGS + ["-march=no-such-cpu"]])
    with pytest.raises(ConfigError, match="no-such-cpu"):
        native.load()


def test_an_empty_route_is_a_clear_error():
    """A route row of padding only (route_extra_edges[i] all -1) has no edge to insert on: refused by name."""
    scen, _ = CASES["short_lanes"]()
    edges = torch.full((1, 1, 3), -1, dtype=torch.int64)
    worlds = WorldBatch.replications(0, 1)
    worlds.params["route_extra_edges"] = edges
    with pytest.raises(ConfigError, match=r"route_extra_edges\[0\].*at least one edge"):
        TrafficTwin(scen, worlds, dt=1.0, horizon=10.0, compile=None)
