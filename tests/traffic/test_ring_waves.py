"""Sugiyama et al. (2008), *Traffic jams without bottlenecks*, New J. Phys. 10, 033001: 22 vehicles on a 230 m
single-lane ring, no signal and no bottleneck, form a stop-and-go jam within minutes that travels backwards
against the traffic at about 20 km/h.

The ``ring`` scenario runs SUMO's Krauss model with its driver imperfection (``sigma`` = 0.5, kernels rule 9),
SUMO's default passenger car (5 m long, 2.5 m min gap) and keyed dawdling draws per replication; every vehicle
enters within the first second, two on each of the ring's 11 edges, evenly spaced, as Sugiyama's drivers started.

What is asserted, over 8 replications of 10 simulated minutes:

- **a jam forms** in most replications (at least 6 of 8): over the last five minutes, at nearly every second
  (>= 80 %) the slowest vehicle is nearly stopped (< 1.5 m/s) while the fastest drives (> 3.5 m/s) — a
  stop-and-go wave, not a slow homogeneous crawl (a deterministic platoon at this density crawls at one speed);
- **it travels backwards as in SUMO**: the wave speed, from the speed field v(x, t) (2 m by 1 s cells) by the
  spatial shift that best matches v(., t) with v(., t + 10 s), equals SUMO's on the same ring within ± 10 % in
  every jammed replication. SUMO 1.28, the same ring (22 nodes on a 230 m circle, ``netconvert
  --no-internal-links``), 22 vehicles of SUMO's default Krauss type (5 m, min gap 2.5 m, accel 2.6, decel 4.5,
  tau 1, sigma 0.5, speedDev 0) departing at t = 0 from every other edge start, ``--fcd-output``, the same
  estimator: 24.5, 25.2 and 24.5 km/h for seeds 1–3 (mean speed 2.32 m/s); the twin: 24.5–25.2 km/h (mean
  speed 2.34 m/s). ± 10 %: SUMO's seed spread and the estimator's resolution (0.72 km/h) are 3 %;
- **at Sugiyama's speed** — a known gap, pinned by a strict xfail: 20 km/h ± 20 %. SUMO's default Krauss driver
  (and so the twin's) discharges a jam about 25 % faster than Sugiyama's drivers did; Sugiyama's figure is one
  experiment's estimate ("about 20 km/h") with its own cars, whose length and standstill gap set the jam
  spacing.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from scenarios.traffic import RingScenario, ring_scenario
from twins.core.worlds import WorldBatch
from twins.traffic.model import TrafficTwin

SUGIYAMA_KMH = 20.0


def wave_speed(traj: pd.DataFrame, circumference: float, segment: float, t0: float, lag: int = 10,
               dx: float = 2.0) -> float:
    """Speed (m/s, negative: backwards) at which the speed pattern of one world moves along the ring after ``t0``:
    the shift that maximises the correlation of v(., t) and v(., t + lag) on ``dx`` cells (cells without a
    vehicle front are interpolated around the ring)."""
    x = traj["edge"].str[1:].astype(int).to_numpy() * segment + traj["pos_m"].to_numpy()
    t = traj["time_s"].to_numpy().round().astype(int)
    keep = t >= t0
    x, t, v = x[keep], t[keep], traj["speed_mps"].to_numpy()[keep]
    times = np.unique(t)
    row = np.searchsorted(times, t)
    nb = int(round(circumference / dx))
    col = np.floor(x / dx).astype(int) % nb
    total, count = np.zeros((len(times), nb)), np.zeros((len(times), nb))
    np.add.at(total, (row, col), v)
    np.add.at(count, (row, col), 1.0)
    field = np.full_like(total, np.nan)
    cells = np.arange(nb)
    for i in range(len(times)):
        ok = count[i] > 0
        xs, vs = cells[ok], total[i, ok] / count[i, ok]
        field[i] = np.interp(cells, np.r_[xs - nb, xs, xs + nb], np.r_[vs, vs, vs])
    a = field[:-lag] - field[:-lag].mean(1, keepdims=True)
    b = field[lag:] - field[lag:].mean(1, keepdims=True)
    shifts = np.arange(-nb // 2, nb // 2)
    score = [float(np.sum(a * np.roll(b, -k, axis=1))) for k in shifts]
    return float(shifts[int(np.argmax(score))] * dx / lag)


@pytest.fixture(scope="module")
def ring_waves():
    """8 replications of the ring for 10 minutes: the stop-and-go share per world over the last five minutes, and
    the wave speed (km/h) of every jammed world."""
    cfg = OmegaConf.structured(RingScenario())
    assert cfg.car_following == "Krauss" and cfg.vehicles == 22 and cfg.circumference_m == 230.0
    horizon, R = 600.0, 8
    tw = TrafficTwin(ring_scenario(cfg, horizon), WorldBatch.replications(0, R), dt=1.0, horizon=horizon,
                     trajectory_every=1, dtype=torch.float32)
    tw.run(progress=False)
    assert float(tw.trips()["insert_s"].max()) <= 1.0, "all 22 vehicles on the ring from the start"
    traj = pd.concat(tw._trajectories, ignore_index=True)
    late = traj[traj["time_s"] >= 300]
    per_second = late.groupby(["world", "time_s"])["speed_mps"].agg(["min", "max"])
    stop_and_go = ((per_second["min"] < 1.5) & (per_second["max"] > 3.5)).groupby("world").mean()
    jammed = stop_and_go[stop_and_go >= 0.8].index.tolist()
    speeds = {w: wave_speed(traj[traj["world"] == w], cfg.circumference_m, cfg.circumference_m / cfg.segments, 300.0)
              * 3.6 for w in jammed}
    print(f"\n[ring] stop-and-go share per world {stop_and_go.round(2).tolist()}; wave speed km/h "
          f"{ {w: round(s, 1) for w, s in speeds.items()} } (Sugiyama: about -{SUGIYAMA_KMH:g})")
    return stop_and_go, speeds


SUMO_KMH = 24.7  # SUMO's Krauss on the same ring: 24.5, 25.2, 24.5 km/h (seeds 1-3; module docstring)


def test_ring_forms_a_stop_and_go_wave_that_travels_backwards_as_in_sumo(ring_waves):
    stop_and_go, speeds = ring_waves
    assert len(speeds) >= 6, f"a stop-and-go jam in most replications: {stop_and_go.round(2).tolist()}"
    assert all(s < 0 for s in speeds.values()), f"the wave travels backwards: {speeds}"
    assert all(abs(-s - SUMO_KMH) <= 0.10 * SUMO_KMH for s in speeds.values()), speeds


@pytest.mark.xfail(strict=True, reason="SUMO's default Krauss driver (and the twin's, as SUMO's) discharges a jam "
                   "about 25 % faster than Sugiyama's drivers: 24.5-25.2 km/h against about 20 (module docstring)")
def test_ring_wave_travels_at_sugiyamas_speed(ring_waves):
    _, speeds = ring_waves
    assert speeds and all(abs(-s - SUGIYAMA_KMH) <= 0.20 * SUGIYAMA_KMH for s in speeds.values()), speeds
