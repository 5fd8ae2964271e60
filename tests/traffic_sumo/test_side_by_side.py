"""Side by side with SUMO: the same generated network and the same demand in both simulators.

Network: a 3×3 signalized grid made by SUMO's ``netgenerate`` (200 m blocks,
200 m approaches, two lanes each way, the static programs netgenerate writes:
42 s green + 3 s yellow per approach pair, 90 s cycle), imported into the
twin with :func:`twins.traffic.sumo.load_net`. Demand: Poisson flows from each
of the 12 fringe entries, 80 % straight across the grid and 20 % turning
right onto the nearest other exit, for 1800 s; both simulators run to 2400 s.
The twin's :class:`Demand` is written with :func:`write_routes` (``period="exp(λ)"``
flows, the twin's vehicle type with ``carFollowModel="IDM"``) and SUMO is also
told ``--default.carfollowmodel IDM``. Both sides are averaged over 3
replications (the twin: 3 worlds; SUMO: seeds 0, 1, 2).

Two demand levels:

* **uncongested** — 400 veh/h per entry, well under the 2-lane approach capacity;
  every vehicle gets through, delay is the signals' red time.
* **congested** — 2400 veh/h per entry, above capacity: queues spill back to the
  entries, about 5 % of the loaded vehicles are still waiting to be inserted at
  the end and the mean insertion wait is ~3 minutes in both.

Measured (SUMO 1.28, twin float64, 3 replications each side, this test's
recipe, on a shared 2-core machine; 2026-12-04, with turning speeds, right of
way and the cautious approach to minor links; IDM):

==============  ============================  ============================
level           mean travel time               throughput (arrived)
==============  ============================  ============================
uncongested     twin 101.0 s, SUMO 100.9 s    twin 2397, SUMO 2370
                (+0.1 %)                       (+1.1 %)
congested       twin 244.9 s, SUMO 237.7 s    twin 10231, SUMO 10588
                (+3.0 %)                       (−3.4 %)
==============  ============================  ============================

Tolerances (asserted): mean travel time within 10 % at both levels; throughput
within 3 % uncongested and 8 % congested; mean delay (SUMO's timeLoss) within
15 %. Uncongested, throughput is just the demand that got through (its
seed-to-seed noise is ~1 % for a 3-replication mean), so 3 % is tight. Congested,
throughput is the signals' discharge capacity, where the twin has been between
3 % below (now: its grid's minor links are approached with caution, rule 10)
and 6 % above SUMO's IDM (see *Saturation flow* below): 8 % bounds that known
difference without letting a real change in the stop-line or junction rules
through (those move it by tens of percent). Travel time differs by 0.1 %
(uncongested) and 3 % (congested); 10 % leaves room for noise (~1–2 %) and SUMO
versions. Delay is a small difference of large numbers in the uncongested case
(~40 s of ~100 s), hence the wider bound.

Three more cases check the fidelity rules of issue 17 against SUMO:

* **permissive left turns** — 400 veh/h per entry with 20 % left turns (``g``: they yield to the
  oncoming traffic and approach their internal junction with caution, kernels rule 10) and turning speeds
  (rule 8), with IDM and with SUMO's Krauss (rule 9, dawdling sigma 0.5 on both sides); measured
  (2026-12-04): travel time +0.5 % (IDM) and −3.0 % (Krauss), delay +1.4 % / −6.6 %, throughput −0.1 %.
  Before rule 10 the twin was 10–30 % faster with such turns;
* **congested, Krauss** — 2400 veh/h per entry without left turns: travel time −5.8 %, delay −8.0 %,
  throughput +2.1 %.

Known modelling differences:

* **Turn speeds** are modelled (rule 8): SUMO's internal lanes' limits inside the junction,
  anticipated on approach; the twin still crosses an internal lane as one jump of ``via_length``.
* **Right of way** (rule 10) is a simplified version of SUMO's: only a lane's front vehicle announces
  its approach, and merging into one lane keeps no extra headway.
* **Saturation flow.** Before the cautious approach, above capacity the twin discharged ~5–8 % more vehicles
  per green than SUMO's IDM: one-lane version of this grid, straight demand at
  1200 veh/h per entry: throughput +6 %, travel time −3 %; a single approach at
  2400 veh/h: 404 vs 375 vehicles in 1800 s (speedDev 0.1), 413 vs 392
  (speedDev 0). Not yet explained (candidates: how SUMO's IDM approaches the
  stop line and crosses the internal lane vs the twin's ``d + minGap`` stop-line
  gap and ``via_length`` jump; the yellow rule).
* **Insertion.** SUMO 1.28 inserts at ``departPos="base"`` with ``departSpeed``
  the lane speed if safe; the twin inserts its rear at the lane start at
  min(desired speed, safe speed) — the same within the speed factor.
"""
from __future__ import annotations

import math
import subprocess
import warnings

import numpy as np
import pytest
import torch

from scenarios.sumo import fringe_demand
from twins.core.worlds import WorldBatch
from twins.traffic import sumo
from twins.traffic.demand import Demand
from twins.traffic.model import TrafficScenario, TrafficTwin
from twins.traffic.sumo_bridge import SumoNotFoundError, find_sumo, run_sumo

pytestmark = [pytest.mark.slow, pytest.mark.sumo]

HORIZON_S = 1800.0  # demand window
END_S = 2400.0  # both simulators stop here
REPLICATIONS = 3
TOL_TRAVEL_TIME = 0.10
TOL_THROUGHPUT = {"uncongested": 0.03, "congested": 0.08, "left_turns": 0.03}
TOL_DELAY = 0.15
LEVELS = {"uncongested": 400.0, "congested": 2400.0, "left_turns": 400.0}  # veh/h per fringe entry
TURN_SHARE = 0.2  # right turns
LEFT_SHARE = {"left_turns": 0.2}  # permissive left turns (rule 10); none in the other levels


@pytest.fixture(scope="module")
def grid_net(tmp_path_factory):
    try:
        exe = find_sumo("netgenerate")
        find_sumo("sumo")
    except SumoNotFoundError as e:
        pytest.skip(f"SUMO is not installed ({e})")
    out = tmp_path_factory.mktemp("side_by_side") / "grid3x3.net.xml"
    r = subprocess.run([exe, "--grid", "--grid.number", "3", "--grid.length", "200", "--grid.attach-length", "200",
                        "-L", "2", "--default-junction-type", "traffic_light", "--no-turnarounds", "true",
                        "--seed", "1", "-o", str(out)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"netgenerate failed: {r.stderr}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sumo.SumoImportWarning)
        net = sumo.load_net(out)
    return out, net


def grid_demand(net, rate_veh_h: float, left_share: float = 0.0) -> Demand:
    """From every fringe entry: straight across, ``TURN_SHARE`` to the nearest exit reached with right turns
    only, and ``left_share`` to the nearest one reached with left turns only."""
    demand = fringe_demand(net, rate_veh_h, HORIZON_S, TURN_SHARE, left_share)
    assert len({f.route[0] for f in demand.flows}) == len({f.route[-1] for f in demand.flows}) == 12
    return demand


def run_both(net_path, net, demand, tmp_path, car_following: str = "IDM") -> tuple[dict, dict]:
    tw = TrafficTwin(TrafficScenario(net, demand, "grid3x3", car_following=car_following),
                     WorldBatch.replications(0, REPLICATIONS), dt=1.0, horizon=END_S, dtype=torch.float64,
                     interval_s=END_S)
    w = tw.run(progress=False).worlds
    keys = ("mean_travel_time_s", "mean_delay_s", "throughput_veh", "vehicles_loaded", "vehicles_inserted",
            "mean_depart_delay_s")
    twin = {k: float(w[k].mean()) for k in keys}
    routes = sumo.write_routes(demand, tmp_path / "demand.rou.xml", car_following=car_following)
    runs = [run_sumo({"net": str(net_path)}, None, car_follow_model=car_following, routes=routes, end=END_S, seed=s)
            for s in range(REPLICATIONS)]
    ref = {k: float(np.mean([m[k] for m in runs])) for k in keys}
    ref["teleports"] = float(np.mean([m["teleports"] for m in runs]))
    return twin, ref


@pytest.mark.parametrize("level,car_following", [("uncongested", "IDM"), ("congested", "IDM"), ("left_turns", "IDM"),
                                                 ("left_turns", "Krauss"), ("congested", "Krauss")])
def test_grid_matches_sumo(grid_net, level, car_following, tmp_path):
    net_path, net = grid_net
    demand = grid_demand(net, LEVELS[level], LEFT_SHARE.get(level, 0.0))
    twin, ref = run_both(net_path, net, demand, tmp_path, car_following)
    print(f"\n{level}: {'metric':24s} {'twin':>10s} {'SUMO':>10s} {'diff':>8s}")
    for k in twin:
        d = (twin[k] - ref[k]) / ref[k] * 100 if ref[k] else math.nan
        print(f"{level}: {k:24s} {twin[k]:10.2f} {ref[k]:10.2f} {d:+7.1f}%")
    print(f"{level}: SUMO teleports {ref['teleports']:.1f}")
    # the demand level does what it says
    if level != "congested":
        assert twin["vehicles_inserted"] == twin["vehicles_loaded"]
        assert ref["mean_depart_delay_s"] < 5 and twin["mean_depart_delay_s"] < 5
    else:
        assert ref["mean_depart_delay_s"] > 60 and twin["mean_depart_delay_s"] > 60
        assert twin["vehicles_inserted"] < 0.98 * twin["vehicles_loaded"]
    assert ref["teleports"] == 0
    assert twin["mean_travel_time_s"] == pytest.approx(ref["mean_travel_time_s"], rel=TOL_TRAVEL_TIME)
    assert twin["throughput_veh"] == pytest.approx(ref["throughput_veh"], rel=TOL_THROUGHPUT[level])
    assert twin["mean_delay_s"] == pytest.approx(ref["mean_delay_s"], rel=TOL_DELAY)
