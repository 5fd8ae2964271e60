"""Rule 4's keep-clear, SUMO's way (``MSVehicle::keepClear``): a vehicle waits at the line for room behind the next
lane's standing queue only where its connection crosses a junction area that another link of the junction conflicts
with (the request's ``foes``) and does not waive it (``keepClear="0"``); elsewhere a queue may stand across the
junction. Equivalence of the three step implementations under it: ``test_reference``, ``test_native_step`` (their
right-of-way grids waive it on the right turns, ``_helpers.with_right_of_way``)."""
from __future__ import annotations

from pathlib import Path

import pytest

from twins.core.errors import ConfigError
from twins.traffic import sumo
from twins.traffic.network import Connection, Edge, Junction, Lane, RoadNetwork

DATA = Path(__file__).resolve().parents[1] / "data" / "sumo"
pytestmark = pytest.mark.filterwarnings("ignore:SUMO import of")  # tiny.net.xml's footpaths and rails, on purpose


def _net(conflicts: dict[int, list[int]]) -> RoadNetwork:
    net = RoadNetwork(name="kc")
    for j in (Junction("a", 0.0, 0.0), Junction("J", 100.0, 0.0, conflicts=conflicts), Junction("b", 200.0, 0.0)):
        net.add_junction(j)
    net.add_edge(Edge("in", "a", "J", [Lane("in_0", 0, 100.0, 13.9, [(0.0, 0.0), (100.0, 0.0)])]))
    net.add_edge(Edge("out", "J", "b", [Lane("out_0", 0, 100.0, 13.9, [(100.0, 0.0), (200.0, 0.0)])]))
    return net


def test_keeps_clear_where_a_link_conflicts_and_does_not_waive_it():
    net = _net({0: [1], 1: [0], 2: []})
    path = dict(from_edge="in", from_lane=0, to_edge="out", to_lane=0, via_length=12.0)
    assert net.keeps_clear(Connection(**path, junction_index=0))
    assert not net.keeps_clear(Connection(**path, junction_index=2)), "no link conflicts: a queue may stand across"
    assert not net.keeps_clear(Connection(**path, junction_index=0, keep_clear=False)), "keepClear=0 waives it"
    assert not net.keeps_clear(Connection(**{**path, "via_length": 0.0}, junction_index=0)), "no junction area"
    # a junction without request tables (the twin's own networks): as before, every path across it
    assert _net({}).keeps_clear(Connection(**path, junction_index=0))
    assert _net({}).keeps_clear(Connection(**path))


def test_sumo_import_reads_foes_and_keep_clear(tmp_path):
    net = sumo.load_net(DATA / "tiny.net.xml")
    assert net.junctions["C"].conflicts == {0: [], 1: [], 2: []}
    straight = next(c for c in net.connections if (c.from_edge, c.to_edge) == ("WC", "CE"))
    assert straight.keep_clear and not net.keeps_clear(straight), "tiny.net.xml's links at C have no foes"
    text = (DATA / "tiny.net.xml").read_text()
    text = text.replace('<request index="0" response="000" foes="000"', '<request index="0" response="000" foes="010"')
    text = text.replace('to="CN" fromLane="2" toLane="0" via=":C_1_0"', 'to="CN" fromLane="2" toLane="0" keepClear="0" '
                        'via=":C_1_0"')
    (tmp_path / "kc.net.xml").write_text(text)
    net = sumo.load_net(tmp_path / "kc.net.xml")
    straight = next(c for c in net.connections if (c.from_edge, c.to_edge) == ("WC", "CE"))
    left = next(c for c in net.connections if (c.from_edge, c.to_edge) == ("WC", "CN"))
    assert net.junctions["C"].conflicts[0] == [1] and net.keeps_clear(straight)
    assert not left.keep_clear and not net.keeps_clear(left)
    (tmp_path / "bad.net.xml").write_text(text.replace('foes="010"', 'foes="0x0"'))
    with pytest.raises(ConfigError, match="foes"):
        sumo.load_net(tmp_path / "bad.net.xml")


def test_waived_keep_clear_matches_the_reference_and_holds_no_one():
    """The reference test's loaded grid, where keep-clear holds front vehicles at their lines (at least 10 times per
    world, ``test_kernel_matches_per_agent_reference``), with every connection waiving it: the tensor kernels equal
    the per-agent reference at every step, and no one is held for keep-clear."""
    from tests.traffic.test_reference import POS_TOL, _run_side_by_side, _scenario

    scen = _scenario()
    for c in scen.network.connections:
        c.keep_clear = False
    tw, refs, _, _, worst = _run_side_by_side(scen)
    assert worst <= POS_TOL
    for ref in refs:
        assert ref.events["keep_clear"] == 0 and ref.events["edge_transitions"] >= 300, ref.events


def test_a_lane_whose_last_vehicle_has_to_wait_counts_as_stopped():
    """The room keeping a junction clear allows on each lane (``kernels.space_till_standing``, SUMO's
    ``checkRewindLinkLanes``): behind the upstream-most standing vehicle; with nothing standing, the lane's length less
    every vehicle on it while its last vehicle has to wait at its next link (SUMO's ``myHaveToWaitOnNextLink``: its
    link shows red or a yellow it stops for, or it follows a vehicle on the lane slower than its ``decel``), else
    unlimited: a lane's front vehicle that its link lets pass is crossing on at any speed (SUMO: its passing speed
    exceeds its speed to stop at the line), so a short lane it starts off does not hold the junction before it. A
    vehicle still inside the junction before the lane (front short of its start) is neither on it nor its last
    vehicle."""
    import torch

    from twins.traffic import kernels

    lane_length = torch.tensor([9.0, 100.0, 20.0, 20.0])

    def room(lane, pos, speed, leader=None, held=None):
        n = len(lane)
        f = torch.tensor
        leader = f([-1] * n if leader is None else leader)
        held = f([False] * n if held is None else held)
        return kernels.space_till_standing(
            torch.zeros(n, dtype=torch.int64), f(lane), torch.ones(n, dtype=torch.bool), f(pos), torch.full((n,), 5.0),
            torch.full((n,), 2.5), f(speed), torch.full((n,), 4.5), leader, held, lane_length, 4, 1)[0].tolist()

    # lane 0: one vehicle starting off at 2 m/s (slower than its decel), one entering behind it from the junction
    # lane 1: a standing one at 50 m and a moving one behind it; lane 2: a vehicle at 6 m/s; lane 3: empty
    lanes, pos, speed = [0, 0, 1, 1, 2], [8.0, -1.0, 50.0, 30.0, 10.0], [2.0, 3.0, 0.0, 8.0, 6.0]
    r = room(lanes, pos, speed, held=[True, False, False, False, False])
    assert r[0] == pytest.approx(9.0 - 7.5), "held by its signal: the length less the vehicle on the lane"
    assert r[1] == pytest.approx(45.0 - 7.5), "standing: its back less the one behind it"
    assert r[2] == r[3] == r[4] == float("inf"), "a fast last vehicle, an empty lane, the sentinel: no limit"
    assert room(lanes, pos, speed)[0] == float("inf"), "slow, but its link lets it pass: it crosses on"
    assert room([0], [8.0], [9.0], held=[True])[0] == pytest.approx(1.5), "held by its signal at any speed"
    # the last vehicle decides; following one on the lane, it has to wait while slower than its decel (4.5 m/s)
    assert room([2, 2], [15.0, 5.0], [9.0, 1.0], leader=[-1, 0])[2] == pytest.approx(20.0 - 15.0)
    assert room([2, 2], [15.0, 5.0], [9.0, 4.6], leader=[-1, 0])[2] == float("inf"), "past its decel"
    assert room([2, 2], [15.0, 5.0], [1.0, 9.0], leader=[-1, 0])[2] == float("inf"), "a slow one ahead of a fast last"
    assert room([2, 2], [15.0, 5.0], [1.0, 9.0], leader=[-1, 0], held=[True, False])[2] == float("inf"), (
        "the one ahead held by its signal: the last one decides")


def _short_blocks():
    """The reference test's grid with 20 m blocks: lanes of two or three cars, where a queue starting off and the
    lane after the next one decide whether a front vehicle may enter the junction."""
    from scenarios.traffic import GridScenario, SignalConfig, grid_scenario
    from tests.traffic.test_reference import DT, STEPS

    s = GridScenario(rows=2, cols=2, block_m=20.0, approach_m=100.0, lanes=2, lanes_ns=1,
                     entry_flow_veh_h=700.0, peak_begin_s=0.0, peak_end_s=STEPS * DT,
                     signals=SignalConfig(cycle_s=40.0, yellow_s=3.0, all_red_s=2.0, min_green_s=7.0))
    return grid_scenario(s, STEPS * DT)


def test_short_lanes_keep_clear_as_the_reference_and_the_compiled_step():
    """On lanes of two or three cars the room a front vehicle needs is decided by a next lane whose last vehicle
    has to wait at its own next link (SUMO's myHaveToWaitOnNextLink) and, where nothing stops on the next lane, by
    the lane after it (kernels.room_beyond, SUMO's checkRewindLinkLanes carrying the space over an open link): the
    tensor kernels equal the per-agent reference at every step and the compiled C++ step equals the kernels, with
    both rules holding vehicles at their lines (counted by the reference)."""
    from tests.traffic.test_native_step import _side_by_side
    from tests.traffic.test_reference import POS_TOL, _run_side_by_side

    scen = _short_blocks()
    _, refs, _, _, worst = _run_side_by_side(scen)
    assert worst <= POS_TOL
    for ref in refs:
        ev = ref.events
        assert ev["keep_clear_waits"] >= 50, ev  # behind a queue starting off on a short lane
        assert ev["keep_clear_beyond"] >= 3, ev  # the lane after the next one has no room
        assert ev["edge_transitions"] >= 250, ev
    from twins.traffic import native

    if native.available():
        _side_by_side(_short_blocks(), 600.0)
