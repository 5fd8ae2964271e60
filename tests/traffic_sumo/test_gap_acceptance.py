"""Gap acceptance at a priority junction, in the twin and in SUMO (libsumo): a minor stream crossing a major one.

A four-arm priority junction (netconvert, one lane per arm, 13.89 m/s): the major stream east to west with random
headways (exponential, at least 1.5 s, a fixed draw) at 600 or 900 vehicles an hour, the minor stream south to north
straight across it, one vehicle every 8 s (450 an hour). The minor vehicles yield (state ``m``). Two measures: how
many minor vehicles enter the junction in each gap between two major ones, by the gap's length (the critical gap:
SUMO takes about two of three 6 s gaps), and their mean time loss (timeLoss plus departDelay, SUMO's; the twin's
delay plus depart delay). ``benchmarks/bench_gap_acceptance.py`` prints both tables.

What it shows (SUMO 1.28, 6 Dec 2026). Before, the twin held a minor vehicle at its line until a crossing foe's rear
had left the junction, and at 900 major vehicles an hour its minor vehicles lost twice SUMO's time (Krauss 53 s
against 27, IDM 452 against 227): it took 5 % of the 6 s gaps where SUMO takes 72 %. SUMO's ``MSLink::opened``
counts approaching foes only (one inside the junction has left the link's approach list) and the minor vehicle,
once in, follows such a foe as a junction leader until it has passed the crossing (``MSVehicle::checkLinkLeader``);
its own leave time is SUMO's ``MSLink::getLeaveTime`` (path plus length at the mean of its speeds at the line and at
the path's end). With both (kernels rule 10) the 6 s gaps were taken as in SUMO (0.46-0.69 against 0.45-0.72) and the
losses came within 30 % but one: at 900 an hour with IDM the twin's minor vehicles lost 118 s against SUMO's 227,
because more of them followed each other through a long gap (8 s: 2.0 against 1.2). Traced side by side (7 Dec 2026),
the follower moved alike in both up to its decision, 4 m before the line at 1.9 m/s, where SUMO refused it: SUMO caps
the speed at which a vehicle leaves the junction by what its car-following model allows from that speed behind its
junction leader, the minor vehicle ahead (``MSVehicle::adaptToLeader``, ``adaptLeaveSpeed``), so the follower's window
is longer (about 4.3 s against the twin's 3.7 then). With the cap (kernels rule 10): IDM at 900 an hour 227 s against
SUMO's 227, 8 s gaps 1.30 against 1.19; the other losses 0.75-1.06 of SUMO's. Left: with Krauss at 900 an hour the
twin takes 0.38 of the 6 s gaps, SUMO 0.72 (0.46 before the cap; 37 such gaps, about 0.08 of noise): a strict expected
failure. SUMO holds the minor vehicle standing at the line in the step the major vehicle ahead of the gap passes (that
one, short of their crossing, is its junction leader) and decides a step later on a window timed from its planned
speed (``v + accel·dt``), where the twin decides at once on a window from standstill (benchmarks/README.md, "The leave
speed behind the junction leader"). Near capacity a small shift of the critical gap moves the mean loss by tens of percent (the 900 an hour runs
are within 10 % of their capacity), hence 30 %; the gaps taken are the sharper check.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

from twins.core.worlds import WorldBatch
from twins.traffic import kernels
from twins.traffic.model import TrafficScenario, TrafficTwin
from tests.traffic_sumo.conftest import _hand_made_scenario, _load_sumocfg, _trip_vehicles

pytestmark = [pytest.mark.slow, pytest.mark.sumo]

END_S = 3600
DRAIN_S = 600  # simulated past the last departure so that every minor vehicle arrives in both
GAPS = range(4, 13)  # gap lengths (s) the tables report


def scenario(d: Path, major_vph: float) -> Path:
    """The crossing: ``d/x.sumocfg`` (netconvert, route file, time window)."""
    nodes = ('<node id="c" x="0" y="0" type="priority"/><node id="w" x="-400" y="0" type="priority"/>'
             '<node id="e" x="400" y="0" type="priority"/><node id="n" x="0" y="400" type="priority"/>'
             '<node id="s" x="0" y="-400" type="priority"/>')
    prio = {"w": 2, "e": 2, "n": 1, "s": 1}
    edges = "".join(f'<edge id="{a}i" from="{a}" to="c" numLanes="1" speed="13.89" priority="{p}"/>'
                    f'<edge id="{a}o" from="c" to="{a}" numLanes="1" speed="13.89" priority="{p}"/>'
                    for a, p in prio.items())
    rng = np.random.default_rng(1)
    trips, t = [], 0.0
    while True:
        t += max(rng.exponential(3600.0 / major_vph), 1.5)
        if t >= END_S:
            break
        trips.append((t, f"e{len(trips)}", "ei wo"))
    trips += [(8.0 * k + 1.0, f"s{k}", "si no") for k in range(END_S // 8)]
    veh = _trip_vehicles(trips)
    return _hand_made_scenario(d, "x", nodes, edges, veh, END_S + DRAIN_S)


def run_sumo(cfg: Path, cf: str) -> tuple[float, dict[str, list[float]]]:
    """SUMO (libsumo, seed 0): the minor vehicles' mean time loss (s) and, per stream ('e' major, 's' minor), the
    times the vehicles' fronts entered the junction."""
    import libsumo
    info = cfg.parent / f"tripinfo_{cf}.xml"
    libsumo.start(["sumo", "-c", str(cfg), "--default.carfollowmodel", cf, "--seed", "0", "--no-step-log",
                   "--no-warnings", "--tripinfo-output", str(info)])
    entered: dict[str, float] = {}
    try:
        while libsumo.simulation.getTime() < END_S + DRAIN_S:
            libsumo.simulationStep()
            t = libsumo.simulation.getTime()
            for v in libsumo.vehicle.getIDList():
                if libsumo.vehicle.getLaneID(v).startswith(":c"):
                    entered.setdefault(v, t)
    finally:
        libsumo.close()
    rows = [x.attrib for x in ET.parse(info).getroot() if x.attrib["id"][0] == "s"]
    assert len(rows) == END_S // 8
    loss = float(np.mean([float(r["timeLoss"]) + float(r["departDelay"]) for r in rows]))
    return loss, {k: [t for v, t in entered.items() if v[0] == k] for k in "es"}


def run_twin(cfg: Path, cf: str, compile_=None) -> tuple[float, dict[str, list[float]], str]:
    """The twin (compiled step by default: the same numbers as the tensor kernels, tests/traffic/test_native_step):
    as :func:`run_sumo`, and the kernel it ran."""
    scen = _load_sumocfg(cfg)
    tw = TrafficTwin(TrafficScenario(scen.network, scen.demand, "gap", car_following=cf),
                     WorldBatch.replications(0, 1), dt=1.0, horizon=float(END_S + DRAIN_S), compile=compile_)
    stream = [scen.demand.flows[f].id[0] for f in tw.pop.flow[0].tolist()]
    entered: dict[int, float] = {}
    while tw.step_index < tw.n_steps:
        tw.step()
        st = tw.state
        inside = (st.status[0] == kernels.RUNNING) & (st.pos[0] < 0) & (st.route_pos[0] > 0)
        for s in torch.nonzero(inside).flatten().tolist():
            entered.setdefault(s, float(tw.step_index))
    trips = tw.results().tables["trips"]
    minor = trips[trips.flow.str[0] == "s"]
    assert (minor.status == "arrived").all() and len(minor) == END_S // 8
    loss = float((minor.delay_s + minor.depart_delay_s).mean())
    return loss, {k: [t for s, t in entered.items() if stream[s] == k] for k in "es"}, tw.kernel


def per_gap(entered: dict[str, list[float]]) -> dict[int, float]:
    """Mean number of minor vehicles entering the junction between two consecutive major ones, by gap (s)."""
    major, minor = np.sort(np.array(entered["e"])), np.array(entered["s"])
    counts: dict[int, list[int]] = {}
    for a, b in zip(major[:-1], major[1:]):
        counts.setdefault(int(round(b - a)), []).append(int(((minor > a) & (minor <= b)).sum()))
    return {g: float(np.mean(counts[g])) if g in counts else float("nan") for g in GAPS}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{(major veh/h, model): ((SUMO loss, SUMO gaps), (twin loss, twin gaps))}."""
    pytest.importorskip("libsumo", reason="libsumo (the [sumo] extra) is not installed")
    out = {}
    for vph in (600, 900):
        cfg = scenario(tmp_path_factory.mktemp(f"gap{vph}"), vph)
        for cf in ("Krauss", "IDM"):
            su_loss, su_in = run_sumo(cfg, cf)
            tw_loss, tw_in, _ = run_twin(cfg, cf)
            out[(vph, cf)] = (su_loss, per_gap(su_in)), (tw_loss, per_gap(tw_in))
    return out


@pytest.mark.parametrize("case", [(600, "Krauss"), (600, "IDM"), pytest.param(
    (900, "Krauss"), marks=pytest.mark.xfail(strict=True, reason="the standing minor vehicle decides a step early, "
                                             "on a window from standstill (module docstring)")), (900, "IDM")])
def test_minor_vehicles_take_the_short_gaps_sumo_takes(runs, case):
    """6 s gaps: SUMO 0.45-0.72 minor vehicles, the twin 0.38-0.69 (0.05-0.28 before rule 10's window); 4 and 5 s
    gaps hardly ever (at most 0.2 in either). Longer gaps: the follow-up, below."""
    (_, su), (_, tw) = runs[case]
    assert su[6] > 0.3  # SUMO takes most 6 s gaps ...
    assert tw[6] == pytest.approx(su[6], abs=0.3), (su, tw)
    assert max(tw[4], tw[5], su[4], su[5]) <= 0.2, (su, tw)  # ... and hardly any shorter one


@pytest.mark.parametrize("case", [(600, "Krauss"), (600, "IDM"), (900, "Krauss"), (900, "IDM")])
def test_minor_vehicles_lose_the_time_they_lose_in_sumo(runs, case):
    """600 an hour: 10.2 s against SUMO's 13.6 (Krauss), 15.4 against 17.0 (IDM); 900: 29.0 against 27.3 (Krauss),
    227 against 227 (IDM; 118 before the leave speed behind the junction leader, module docstring)."""
    (su, _), (tw, _) = runs[case]
    assert su > 5.0  # the minor vehicles do wait for gaps
    assert tw == pytest.approx(su, rel=0.3), (su, tw)
