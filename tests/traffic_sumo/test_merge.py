"""A side road merging onto a main road at a priority junction, twin against SUMO (kernels rule 10; issue 17).

A side road (one lane, 13.89 m/s) joins a main road from the right at a priority junction (netconvert); its
vehicles turn right into the main road's right lane, yielding (state ``m``) to every lane of the main road, as
netconvert's request says. The main road has one lane (400 vehicles an hour) or three (700 an hour, on its two
right lanes: the vehicles' best lanes toward the exit); the side road carries 250 an hour; random headways
(exponential, at least 1 s, a fixed draw), 30 minutes of departures and 15 more to drain. Measured: the side
vehicles' mean time loss (timeLoss plus departDelay; the twin's delay plus depart delay), SUMO over seeds 0-5, the
twin over six replications (SUMO's seed-to-seed spread is large here: 17-25 s on one lane, 19-66 s on three).

What it checks: SUMO lets a vehicle that has stopped at a minor link merge ahead of an approaching foe into the same
lane only where that foe could brake to below the merging vehicle's speed, braking at its deceleration times the
waiting vehicle's impatience (``MSLink::blockedByFoe``, ``unsafeMergeSpeeds``, ``computeFoeArrivalTimeBraking``;
impatience = seconds stood / ``--time-to-impatience`` 180 s): so it waits for every main-road vehicle within a few
hundred metres at first and takes shorter gaps the longer it stands. Without that rule (``kernels.merge_unsafe``)
the twin's side vehicles merged into gaps SUMO's wait through, and lost 0.62 (IDM)
and 0.52 (Krauss) of SUMO's time on one lane, 0.41 and 0.28 on three (0.56 and 0.43 against SUMO without keep-right
changes, below); with it 0.99 and 0.81, 0.82 and 0.67 (1.11 and 1.01).

Known gap (a strict xfail): on three lanes with Krauss the twin's side vehicles lose two thirds of SUMO's time. Not
the junction: SUMO's drivers make keep-right lane changes on the 450 m before it (LC2013), so two thirds of the main
road's vehicles arrive on its right lane, the side road's target (203 of 296 in an hour, Krauss, seed 0), where the
twin's stay spread over the three (99, 95, 100: rule 11, lane changing, is off here). Against SUMO
with ``lcKeepRight="0"`` the twin's side vehicles lose 1.01 (Krauss) and 1.11 (IDM) of SUMO's time, which the
three-lane cases without keep-right assert. With lane changing on (rule 11 has SUMO's keep-right since 6 Dec 2026)
the twin's main road uses its lanes as SUMO's (68/25/7 % of the vehicle-seconds, SUMO's vehicles 69/28/4 % at the
merge) but its side vehicles lose 1.31 (IDM) and 0.66 (Krauss) of SUMO's time, six replications (measured again on
7 Dec 2026, after the look-ahead speed of rule 11's urgency: the same): what is left is in the merge itself, not the
lane use. ``benchmarks/bench_merge.py [--lane-changing]`` prints the losses per seed.
"""
from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

from twins.core.worlds import WorldBatch
from twins.traffic.model import TrafficScenario, TrafficTwin
from tests.traffic_sumo.conftest import _hand_made_scenario, _load_sumocfg, _tool

pytestmark = [pytest.mark.slow, pytest.mark.sumo]

END_S, DRAIN_S = 1800, 900
SEEDS = tuple(range(6))
CASES = {1: 400.0, 3: 700.0}  # main-road lanes -> its vehicles an hour
SIDE_VPH = 250.0


def scenario(d: Path, lanes: int, main_vph: float, side_vph: float = SIDE_VPH, seed: int = 1,
             keep_right: bool = True) -> Path:
    """The merge: ``d/m.sumocfg`` (netconvert, route file, time window); ``keep_right=False``: SUMO's drivers make
    no keep-right lane changes (``lcKeepRight="0"``; the twin, without lane changing here, makes none)."""
    nodes = ('<node id="w" x="-600" y="0" type="priority"/><node id="m" x="-150" y="0" type="priority"/>'
             '<node id="e" x="300" y="0" type="priority"/><node id="s" x="-150" y="-300" type="priority"/>')
    edges = (f'<edge id="wi" from="w" to="m" numLanes="{lanes}" speed="13.89" priority="3"/>'
             f'<edge id="a" from="m" to="e" numLanes="{lanes}" speed="13.89" priority="3"/>'
             '<edge id="si" from="s" to="m" numLanes="1" speed="13.89" priority="1"/>')
    rng = np.random.default_rng(seed)
    trips = []
    for tag, route, vph in (("m", "wi a", main_vph), ("s", "si a", side_vph)):
        t = 0.0
        while True:
            t += max(rng.exponential(3600.0 / vph), 1.0)
            if t >= END_S:
                break
            trips.append((t, f"{tag}{len(trips)}", route))
    veh = "\n".join(f'<vehicle id="{v}" type="car" depart="{t:.1f}" departLane="best" departSpeed="max">'
                    f'<route edges="{r}"/></vehicle>' for t, v, r in sorted(trips))
    cfg = _hand_made_scenario(d, "m", nodes, edges, veh, END_S + DRAIN_S)
    if not keep_right:
        rou = d / "m.rou.xml"
        rou.write_text(rou.read_text().replace('<vType id="car"', '<vType id="car" lcKeepRight="0"', 1))
    return cfg


def sumo_loss(cfg: Path, cf: str, seeds=SEEDS) -> float:
    """SUMO's side vehicles' mean time loss (s) over ``seeds``."""
    out = []
    for seed in seeds:
        info = cfg.parent / f"tripinfo_{cf}_{seed}.xml"
        subprocess.run([_tool("sumo"), "-c", str(cfg), "--default.carfollowmodel", cf, "--seed", str(seed),
                        "--no-step-log", "--no-warnings", "--tripinfo-output", str(info)], check=True)
        rows = [x.attrib for x in ET.parse(info).getroot() if x.attrib["id"][0] == "s"]
        out.append(np.mean([float(r["timeLoss"]) + float(r["departDelay"]) for r in rows]))
    return float(np.mean(out))


def twin_loss(cfg: Path, cf: str, seeds=SEEDS, compile_=None, lane_changing: bool = False) -> tuple[float, str]:
    """The twin's side vehicles' mean time loss (s) over ``seeds`` replications, and the kernel it ran."""
    scen = _load_sumocfg(cfg)
    tw = TrafficTwin(TrafficScenario(scen.network, scen.demand, "merge", car_following=cf, lane_changing=lane_changing),
                     WorldBatch(0, torch.tensor(list(seeds)), torch.zeros(len(seeds), dtype=torch.int64)), dt=1.0,
                     horizon=float(END_S + DRAIN_S), compile=compile_)
    while tw.step_index < tw.n_steps:
        tw.step()
    trips = tw.results().tables["trips"]
    side = trips[trips.flow.str[0] == "s"]
    assert (side.status == "arrived").all()
    return float((side.delay_s + side.depart_delay_s).mean()), tw.kernel


@pytest.fixture(scope="module")
def losses(tmp_path_factory):
    """{(main-road lanes, model, SUMO's keep-right changes): (SUMO loss, twin loss)}."""
    out = {}
    for lanes, keep_right in ((1, True), (3, True), (3, False)):  # (one lane: nothing to keep right on)
        cfg = scenario(tmp_path_factory.mktemp(f"merge{lanes}{keep_right}"), lanes, CASES[lanes],
                       keep_right=keep_right)
        for cf in ("IDM", "Krauss"):
            out[(lanes, cf, keep_right)] = sumo_loss(cfg, cf), twin_loss(cfg, cf)[0]
    return out


@pytest.mark.parametrize("lanes, cf, keep_right", [
    (1, "IDM", True), (1, "Krauss", True), (3, "IDM", False), (3, "Krauss", False), (3, "IDM", True),
    pytest.param(3, "Krauss", True, marks=pytest.mark.xfail(
        strict=True, reason="SUMO's keep-right lane changes bring two thirds of the main road's vehicles to its right "
        "lane, the side road's target (the twin's spread over the three: lane changing, kernels rule 11, off here): "
        "0.67 of SUMO's loss; 1.01 against SUMO without them (module docstring)"))])
def test_side_vehicles_lose_what_sumos_lose(losses, lanes, cf, keep_right):
    """Within 25 % of SUMO's mean loss: the standard error of either six-run mean is 3-12 % (the runs spread by
    7-29 %), and near the side road's capacity a small shift of the gaps it takes moves the loss by tens of percent;
    the rule before was 38-72 % short."""
    su, tw = losses[(lanes, cf, keep_right)]
    print(f"\n[merge] {lanes} lane(s) {cf}{'' if keep_right else ', SUMO without keep-right changes'}: side vehicles' "
          f"loss SUMO {su:.1f} s, twin {tw:.1f} s ({tw / su:.2f})")
    assert abs(tw / su - 1.0) <= 0.25, (su, tw)
