"""Issue 20, item 3: the twin is built for every world at once, and its outcomes come from array reductions.

Each vectorised piece is compared, bit for bit, with the per-world computation it replaced (kept here as the
reference: one world at a time, pandas filtering per world), and a world's numbers are checked to be the same
alone, in a batch, and at any position in it (batch independence).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from scenarios.traffic import ArterialScenario, grid_scenario
from twins.core import noise
from twins.core.twin import LazyTables
from twins.core.worlds import WorldBatch
from twins.traffic import transit
from twins.traffic.tables import Population, build_population
from twins.traffic.demand import Demand, Flow, VehicleType, departure_times
from twins.traffic.model import TrafficTwin

SEED = 11


def _demand(cv: float = 0.1) -> Demand:
    """Every flow kind, two vehicle types (different accel and param_cv: the per-flow gather paths)."""
    vt = {"car": VehicleType(param_cv=cv), "truck": VehicleType(id="truck", length=12.0, accel=1.1, param_cv=0.0)}
    r = ["A", "B"]
    return Demand(vt, [
        Flow("p", r, rate=900.0, end=900.0),
        Flow("peak", r, kind="poisson", profile=[(0.0, 300.0, 200.0), (300.0, 600.0, 1200.0), (600.0, 900.0, 0.0)]),
        Flow("per", r, rate=360.0, begin=100.0, end=500.0, kind="periodic", vtype="truck"),
        Flow("bern", r, rate=720.0, end=300.0, kind="bernoulli"),
        Flow("fix", r, kind="fixed", departures=[5.0, 1.0, 1.0, 40.0]),
        Flow("num", r, rate=600.0, end=900.0, kind="periodic", number=7),
    ])


def _population_per_world(demand: Demand, seed: int, replications: torch.Tensor) -> Population:
    """The population as it was built before issue 20: one world at a time, a stable sort by id, then by
    departure."""
    W = replications.numel()
    parts_t, parts_f, parts_k, offsets, offset = [], [], [], [], 0
    for i, f in enumerate(demand.flows):
        t = torch.cat([departure_times(f, i, seed, replications[w:w + 1]) for w in range(W)], 0)
        cap = t.shape[1]
        parts_t.append(t)
        parts_f.append(torch.full((W, cap), i, dtype=torch.int64))
        parts_k.append(torch.arange(cap, dtype=torch.int64).expand(W, cap))
        offsets.append(offset)
        offset += cap
    t, fl, k = torch.cat(parts_t, 1), torch.cat(parts_f, 1), torch.cat(parts_k, 1)
    vid = torch.tensor(offsets, dtype=torch.int64)[fl] + k
    order = torch.argsort(vid, dim=1, stable=True)
    t, fl, k, vid = (x.gather(1, order) for x in (t, fl, k, vid))
    order = torch.argsort(t, dim=1, stable=True)
    t, fl, k, vid = (x.gather(1, order) for x in (t, fl, k, vid))
    S = max(16, -(-t.shape[1] // 16) * 16)
    pad = S - t.shape[1]
    t = torch.nn.functional.pad(t, (0, pad), value=torch.inf)
    fl, k, vid = (torch.nn.functional.pad(x, (0, pad), value=-1) for x in (fl, k, vid))
    return Population(torch.where(torch.isfinite(t), fl, -1), k, t, vid)


def _same(a, b) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


@pytest.mark.parametrize("reps", [[0], [3, 0, 7, 1], list(range(9))])
def test_population_matches_the_per_world_build(reps):
    demand = _demand()
    r = torch.tensor(reps, dtype=torch.int64)
    new, old = build_population(demand, SEED, r), _population_per_world(demand, SEED, r)
    for k in ("flow", "index_in_flow", "depart", "vehicle_id"):
        assert _same(getattr(new, k), getattr(old, k)), k


def test_population_rows_do_not_depend_on_the_batch():
    demand = _demand()
    batch = build_population(demand, SEED, torch.tensor([5, 2, 9, 2, 0]))
    for pos, rep in ((0, 5), (1, 2), (2, 9), (3, 2), (4, 0)):
        alone = build_population(demand, SEED, torch.tensor([rep]))
        for k in ("flow", "index_in_flow", "depart", "vehicle_id"):
            assert _same(getattr(batch, k)[pos], getattr(alone, k)[0]), (k, pos)


def test_grouped_noise_draws_equal_the_single_draws():
    rep = torch.tensor([[4], [0], [9]])
    ent = torch.randint(-1, 1 << 40, (3, 257))
    u = noise.uniform_draws(SEED, rep, noise.Stream.DRIVER, ent, 2, (0, 3, 5))
    for d, x in zip((0, 3, 5), u):
        assert _same(x, noise.uniform(SEED, rep, noise.Stream.DRIVER, ent, 2, d))
    z = noise.normal_draws(SEED, rep, noise.Stream.DRIVER, ent, 0, (0, 1, 2))
    for d, x in zip((0, 1, 2), z):
        assert _same(x, noise.normal(SEED, rep, noise.Stream.DRIVER, ent, 0, d))
    # and the draws of a row are those of that row alone (elementwise: no dependence on the batch)
    alone = noise.normal_draws(SEED, rep[1:2], noise.Stream.DRIVER, ent[1:2], 0, (0, 1, 2))
    assert all(_same(a[0], b[1]) for a, b in zip(alone, z))


def _twin(reps, cv=0.1, demand=None, horizon=900.0):
    s = OmegaConf.structured(ArterialScenario())
    scen = grid_scenario(s, horizon)
    if demand is not None:
        scen.demand = demand
    else:  # two vehicle types on the arterial's flows: the per-flow paths of the parameter construction
        scen.demand.vtypes = {"car": VehicleType(param_cv=cv),
                              "truck": VehicleType(id="truck", length=12.0, accel=1.1, tau=1.4, param_cv=cv / 2)}
        for f in scen.demand.flows[::3]:
            f.vtype = "truck"
    r = torch.tensor(reps, dtype=torch.int64)
    return TrafficTwin(scen, WorldBatch(SEED, r, torch.zeros_like(r)), horizon=horizon, dtype=torch.float32)


def _params_per_world(tw: TrafficTwin) -> dict:
    """The per-vehicle parameters as built before issue 20: three normal draws per world, gathered columns."""
    demand, dev, dtype = tw.scenario.demand, tw.device, tw.drivers.length.dtype
    vt = [demand.vtypes[f.vtype] for f in demand.flows] + [l.vtype for l in tw.bus_lines]
    flow = tw.pop.flow

    def col(a):
        return torch.tensor([getattr(v, a) for v in vt], dtype=torch.float64)[flow.clamp(min=0)]
    rep, vid = tw.worlds.replication.unsqueeze(1), tw.pop.vehicle_id

    def driver(draw):
        return torch.cat([noise.normal(tw.worlds.seed, rep[w:w + 1], noise.Stream.DRIVER, vid[w:w + 1], 0, draw)
                          for w in range(tw.W)], 0)
    zs, za, zt = driver(0), driver(1), driver(2)
    sf = torch.clamp(col("speed_factor") * (1.0 + col("speed_dev") * zs), 0.2, 2.0)
    cv = col("param_cv")
    accel = col("accel") * torch.clamp(1.0 + cv * za, 0.5, 1.5)
    tau = col("tau") * torch.clamp(1.0 + cv * zt, 0.5, 1.5)
    return {"length": col("length").to(dtype), "min_gap": col("min_gap").to(dtype), "accel": accel.to(dtype),
            "decel": col("decel").to(dtype),
            "two_sqrt_ab": torch.from_numpy(2.0 * np.sqrt((accel * col("decel")).numpy())).to(dev, dtype),
            "tau": tau.to(dtype), "delta": col("delta").round().to(torch.int64), "speed_factor": sf.to(dtype),
            "max_speed": col("max_speed").to(dtype), "sigma": col("sigma").to(dtype)}


@pytest.mark.parametrize("cv", [0.0, 0.15])
def test_vehicle_parameters_match_the_per_world_build(cv):
    tw = _twin([2, 0, 5], cv=cv)
    ref = _params_per_world(tw)
    for k, v in ref.items():
        assert _same(getattr(tw.drivers, k), v), k


def test_vehicle_parameters_with_one_vehicle_type_match():
    """Every flow of one type: the parameters shared by all flows are numbers, never gathered (the same values)."""
    demand = _demand(cv=0.2)
    for f in demand.flows:
        f.vtype = "car"
    s = OmegaConf.structured(ArterialScenario())
    scen = grid_scenario(s, 900.0)
    for f in scen.demand.flows:
        f.vtype = "car"
    scen.demand.vtypes = {"car": VehicleType(param_cv=0.2, speed_dev=0.0)}
    r = torch.tensor([1, 4], dtype=torch.int64)
    tw = TrafficTwin(scen, WorldBatch(SEED, r, torch.zeros_like(r)), horizon=900.0)
    for k, v in _params_per_world(tw).items():
        assert _same(getattr(tw.drivers, k), v), k


def test_vehicle_parameters_do_not_depend_on_the_batch():
    batch = _twin([6, 1, 3])
    for pos, rep in ((0, 6), (1, 1), (2, 3)):
        alone = _twin([rep])
        for k, v in alone.drivers.columns().items():
            assert _same(getattr(batch.drivers, k)[pos], v[0]), (k, pos)


def test_passenger_arrivals_match_one_world_at_a_time():
    rate = torch.tensor([60.0, 0.0, 240.0], dtype=torch.float64)

    class Tables:  # what passenger_arrivals reads
        pax_per_h = rate
    reps = torch.tensor([3, 0, 8])
    batch = transit.passenger_arrivals(Tables, SEED, reps, 0.0, 1800.0)
    for w in range(3):
        alone = transit.passenger_arrivals(Tables, SEED, reps[w:w + 1], 0.0, 1800.0)
        assert _same(batch[w], alone[0])
    # the per-world draws of the code before issue 20
    z = torch.arange(3).view(3, 1)
    K = batch.shape[2]
    e = torch.stack([noise.exponential(SEED, reps[w], noise.Stream.PASSENGER, z, 0, torch.arange(K).view(1, K))
                     for w in range(3)])
    r = rate / 3600.0
    t = 0.0 + torch.cumsum(e, dim=2) / torch.where(r > 0, r, 1.0).view(1, 3, 1)
    t = torch.where((rate > 0).view(1, 3, 1) & (t < 1800.0), t, torch.inf)
    assert _same(batch, t)


# --- outcomes ------------------------------------------------------------------------------------------------
def _worlds_per_world(tw: TrafficTwin, trips: pd.DataFrame) -> pd.DataFrame:
    """The per-world metrics as computed before issue 20: pandas filtering of the trips table world by world."""
    rows = []
    for w in range(tw.W):
        t = trips[trips["world"] == w]
        done = t[t["status"] == "arrived"]
        inserted = t["status"] != "waiting"
        rows.append({
            "world": w, "replication": int(tw.worlds.replication[w]), "arm": int(tw.worlds.arm[w]),
            "mean_travel_time_s": float(done["travel_time_s"].mean()) if len(done) else np.nan,
            "mean_delay_s": float(done["delay_s"].mean()) if len(done) else np.nan,
            "throughput_veh": int(len(done)), "vehicles_loaded": int(len(t)),
            "vehicles_inserted": int(inserted.sum()),
            "vehicles_in_network_end": int((t["status"] == "running").sum()),
            "vehicles_waiting_to_insert_end": int((t["status"] == "waiting").sum()),
            "total_delay_veh_h": float(t["delay_s"].sum() + t["depart_delay_s"].sum()) / 3600.0,
            "mean_stops": float(done["stops"].mean()) if len(done) else np.nan,
            "mean_depart_delay_s": float(t.loc[inserted, "depart_delay_s"].mean()) if inserted.any() else np.nan,
            "teleports": int(tw.teleports[w]),  # kernels rule 12: counted by the step, not in the trips
        })
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def finished():
    tw = _twin([4, 0, 2, 9], horizon=900.0)
    for _ in range(600):  # mid-run: waiting, running and arrived vehicles in every world
        tw.step()
    return tw


def test_world_metrics_equal_the_per_world_pandas_computation(finished):
    res = finished.results()
    ref = _worlds_per_world(finished, finished.trips())
    pd.testing.assert_frame_equal(res.worlds, ref, check_exact=True)
    assert (res.worlds["vehicles_in_network_end"] > 0).all() and (res.worlds["throughput_veh"] > 0).all()


def test_group_outcomes_equal_the_pandas_groupby(finished):
    res = finished.results()
    trips = finished.trips()
    done = trips[trips["status"] == "arrived"]
    ref = done.groupby(["world", "group"]).agg(mean_travel_time_s=("travel_time_s", "mean"),
                                               mean_delay_s=("delay_s", "mean"),
                                               throughput_veh=("vehicle_id", "size")).reset_index()
    ref.insert(1, "group_kind", "origin")
    pd.testing.assert_frame_equal(res.groups, ref, check_exact=True)


def test_trips_are_built_when_read(finished):
    res = finished.results()
    assert isinstance(res.tables, LazyTables)
    assert isinstance(dict.__getitem__(res.tables, "trips"), LazyTables._Pending)  # not built yet
    assert "<built when read>" in repr(res.tables)
    trips = res.tables["trips"]
    pd.testing.assert_frame_equal(trips, finished.trips(), check_exact=True)
    assert dict.__getitem__(res.tables, "trips") is trips  # built once, then kept
    # every way of reading the tables sees DataFrames
    res2 = finished.results()
    assert all(isinstance(v, pd.DataFrame) for v in dict(res2.tables).values())
    assert all(isinstance(v, pd.DataFrame) for _, v in finished.results().tables.items())


def test_trips_read_later_are_the_numbers_of_the_call(finished):
    """The lazily built table holds the state as of results(), even if the twin steps on."""
    tw = _twin([1, 3], horizon=600.0)
    for _ in range(300):
        tw.step()
    res = tw.results()
    before = tw.trips()
    for _ in range(100):
        tw.step()
    pd.testing.assert_frame_equal(res.tables["trips"], before, check_exact=True)
    assert not tw.trips().equals(before)


def test_results_are_the_same_alone_and_in_a_batch():
    batch = _twin([7, 2, 5], horizon=600.0)
    alone = _twin([2], horizon=600.0)
    for tw in (batch, alone):
        for _ in range(tw.n_steps):
            tw.step()
    rb, ra = batch.results(), alone.results()
    mb = rb.worlds.drop(columns=["world"]).iloc[1].reset_index(drop=True)
    ma = ra.worlds.drop(columns=["world"]).iloc[0].reset_index(drop=True)
    assert mb.equals(ma)
    gb = rb.groups[rb.groups["world"] == 1].drop(columns=["world"]).reset_index(drop=True)
    ga = ra.groups.drop(columns=["world"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(gb, ga, check_exact=True)
    assert math.isfinite(ma.iloc[2])  # mean travel time: vehicles arrived
