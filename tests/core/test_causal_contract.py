"""The causal contract of DESIGN.md §3, items 2–4, on the traffic twin."""
import numpy as np
import torch
from omegaconf import OmegaConf

from scenarios.traffic import ArterialScenario, SignalConfig, grid_scenario
from twins.core import noise
from twins.core.worlds import WorldBatch
from twins.traffic.model import TrafficTwin

HORIZON = 600.0


def _scenario(**kw):
    s = OmegaConf.structured(ArterialScenario(**kw))
    return grid_scenario(s, HORIZON)


def _run(worlds, scenario=None, dtype=torch.float32, steps=None):
    tw = TrafficTwin(scenario or _scenario(), worlds, dt=1.0, horizon=HORIZON, dtype=dtype)
    for _ in range(steps or tw.n_steps):
        tw.step()
    return tw


def _world_state(tw, w):
    """Everything that describes world ``w``'s trajectory, keyed by vehicle id."""
    order = torch.argsort(tw.pop.vehicle_id[w])
    return {k: v[w][order.to(v.device)].cpu() for k, v in tw.state.columns().items() if k not in ("world",)}


def test_batch_independence_size_order_and_company():
    """World (replication 3) alone, in a batch of 5, and in reversed order: bit-identical."""
    seed = 7
    alone = _run(WorldBatch(seed, torch.tensor([3]), torch.tensor([0])))
    batch = _run(WorldBatch(seed, torch.tensor([0, 1, 2, 3, 4]), torch.zeros(5, dtype=torch.int64)))
    rev = _run(WorldBatch(seed, torch.tensor([9, 3, 1]), torch.zeros(3, dtype=torch.int64)))
    a = _world_state(alone, 0)
    for tw, w in ((batch, 3), (rev, 1)):
        b = _world_state(tw, w)
        for k in a:
            assert torch.equal(a[k], b[k]), f"state column {k} differs"
    ra, rb = alone.results(), batch.results()
    ma = ra.worlds.drop(columns=["world"]).iloc[0]
    mb = rb.worlds.drop(columns=["world"]).iloc[3]
    assert ma.equals(mb)
    # the run actually moved traffic
    assert ma["throughput_veh"] > 50


def test_reproducibility_same_seed_same_numbers_other_seed_differs():
    w = WorldBatch.replications(11, 3)
    r1 = _run(w).results().worlds
    r2 = _run(w).results().worlds
    assert r1.equals(r2)
    r3 = _run(WorldBatch.replications(12, 3)).results().worlds
    assert not r1["mean_travel_time_s"].equals(r3["mean_travel_time_s"])


def test_noise_alignment_policy_does_not_shift_random_numbers():
    """A different signal plan must leave every vehicle's departure and driver parameters unchanged,
    and change the outcomes (so the comparison is not vacuous)."""
    worlds = WorldBatch.replications(5, 2)
    base = TrafficTwin(_scenario(), worlds, dt=1.0, horizon=HORIZON)
    other_scn = _scenario(signals=SignalConfig(cycle_s=90.0, offset_step_s=20.0))
    other = TrafficTwin(other_scn, worlds, dt=1.0, horizon=HORIZON)
    assert torch.equal(base.pop.vehicle_id, other.pop.vehicle_id)
    assert torch.equal(base.pop.depart, other.pop.depart)
    for k in base.drivers.columns():
        assert torch.equal(getattr(base.drivers, k), getattr(other.drivers, k)), k
    rb = base.run(progress=False).worlds
    ro = other.run(progress=False).worlds
    assert not np.allclose(rb["mean_delay_s"], ro["mean_delay_s"])


def test_noise_is_keyed_not_drawn_in_sequence():
    """Drawing extra numbers for one entity never changes another's: the generator has no state."""
    a = noise.uniform(1, 2, noise.Stream.DRIVER, torch.arange(10))
    b = noise.uniform(1, 2, noise.Stream.DRIVER, torch.arange(5, 10))
    assert torch.equal(a[5:], b)
    # streams, replications and steps give different numbers
    assert not torch.equal(a, noise.uniform(1, 3, noise.Stream.DRIVER, torch.arange(10)))
    assert not torch.equal(a, noise.uniform(1, 2, noise.Stream.DEMAND, torch.arange(10)))
    assert not torch.equal(a, noise.uniform(1, 2, noise.Stream.DRIVER, torch.arange(10), step=1))
    u = noise.uniform(0, 0, noise.Stream.USER, torch.arange(200_000))
    assert 0 < float(u.min()) and float(u.max()) < 1
    assert abs(float(u.mean()) - 0.5) < 0.005  # 0.5 ± 7 standard errors (1/sqrt(12 n) = 6.5e-4)


def test_float64_matches_float32_closely():
    """The two dtypes simulate the same system: throughput agrees to a handful of vehicles."""
    w = WorldBatch.replications(3, 1)
    r32 = _run(w, dtype=torch.float32).results().worlds.iloc[0]
    r64 = _run(w, dtype=torch.float64).results().worlds.iloc[0]
    assert abs(r32["throughput_veh"] - r64["throughput_veh"]) <= 0.03 * r64["throughput_veh"]


def test_krauss_dawdling_keeps_batch_independence_and_null_effects():
    """Rule 9's dawdling draws are keyed by (replication, vehicle, step): a Krauss world with turning speeds is
    bit-identical alone and in a reversed batch, two arms of one replication with the same plan are identical
    (the null intervention), and another replication's world differs (the comparison is not vacuous)."""
    scen = _scenario(car_following="Krauss")
    for c in scen.network.connections:  # turning speeds too (rule 8)
        c.via_speed = {"l": 6.0, "r": 4.5}.get(c.direction, 11.0)
    alone = _run(WorldBatch(7, torch.tensor([3]), torch.tensor([0])), scen, steps=300)
    assert alone.car_following == "Krauss" and alone.dawdles
    pair = _run(WorldBatch(7, torch.tensor([5, 3, 3]), torch.tensor([0, 0, 1])), scen, steps=300)
    a = _world_state(alone, 0)
    for w in (1, 2):
        b = _world_state(pair, w)
        for k in a:
            assert torch.equal(a[k], b[k]), f"world {w}: state column {k} differs"
    assert not torch.equal(_world_state(pair, 0)["pos"], a["pos"])
