"""Rule 10's conflict zones: a vehicle standing inside a junction holds a foe only where it stands in that foe's way.

SUMO (``MSLink::getLeaderInfo``) keeps a vehicle on a foe's internal lane in the way of a vehicle at a minor link
only while it has entered the crossing point of the two paths and not passed it (``inTheWay``); one standing short
of it that will not pass (``willPass``) is ignored, one past it too. The twin marks, per pair of connections, the
part of the foe's path the crossing covers (:func:`twins.traffic.network.conflict_zone`, SUMO's conflict size
around the crossing point) and, each step, the parts of its own path each standing vehicle inside a junction covers
(:func:`kernels.body_zone`); a minor vehicle waits for a standing foe only where the two meet. Before, any vehicle
standing inside on a foe connection held it: on RESCO cologne3 left turners waiting at their internal junction
stood for 300 s (until teleported) behind opposing vehicles queued across the junction, well past the left turn's
path (benchmarks/README.md)."""
from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from twins.traffic import kernels
from twins.traffic.kernels import ZONE_BINS
from twins.traffic.network import Connection, conflict_zone, zone_start
from twins.traffic.reference import ReferenceTrafficModel, ReferenceVehicle

FULL = (1 << ZONE_BINS) - 1


def _conn(shape, via=None, width=3.2):
    length = via if via is not None else math.dist(shape[0], shape[-1])
    return Connection("a", 0, "b", 0, via_length=length, path_shape=tuple(shape), via_width=width)


def _bits(mask):
    return [b for b in range(ZONE_BINS) if mask >> b & 1]


def test_a_right_angle_crossing_covers_the_lane_width_around_the_crossing_point():
    foe = _conn([(0.0, 0.0), (16.0, 0.0)])  # 16 m: one metre per part
    ego = _conn([(5.0, 8.0), (5.0, -8.0)])  # crosses it at 5 m, at a right angle
    # SUMO's conflict size at 90 degrees: the lane width (2 / sin - 1 = 1), centred on the crossing point
    assert _bits(conflict_zone(ego, foe, ZONE_BINS)) == [3, 4, 5, 6]  # 3.4 .. 6.6 m
    # a shallow angle widens it (SUMO's 2 / max(sin, 0.2) - 1)
    shallow = _conn([(5.0 - 8.0 / math.tan(math.radians(30)), 8.0), (5.0 + 8.0 / math.tan(math.radians(30)), -8.0)])
    assert _bits(conflict_zone(shallow, foe, ZONE_BINS)) == list(range(0, 10))  # 5 +- 4.8 m: 0.2 .. 9.8 m


def test_paths_that_do_not_cross_share_no_zone_and_unknown_paths_share_all():
    foe = _conn([(0.0, 0.0), (16.0, 0.0)])
    assert conflict_zone(_conn([(0.0, 3.2), (16.0, 3.2)]), foe, ZONE_BINS) == 0
    assert conflict_zone(Connection("a", 0, "b", 0, via_length=10.0), foe, ZONE_BINS) == FULL  # a generated network
    assert conflict_zone(_conn([(5.0, 8.0), (5.0, -8.0)]), Connection("c", 0, "d", 0, via_length=10.0),
                         ZONE_BINS) == FULL


def test_the_zone_is_read_in_lane_length():
    """SUMO's lane lengths differ from their shapes' (``interpolateGeometryPosToLanePos``): the zone scales along."""
    foe = _conn([(0.0, 0.0), (16.0, 0.0)], via=32.0)  # parts of 2 m; the crossing at 5 m of shape is 10 m of lane
    assert _bits(conflict_zone(_conn([(5.0, 8.0), (5.0, -8.0)]), foe, ZONE_BINS)) == [3, 4, 5, 6]  # 6.8 .. 13.2 m


def test_zone_start_is_where_a_foe_first_crosses_ones_own_path():
    """network.zone_start: m along a connection's own path to the first part of it that a foe's path crosses (the
    zone seen from the foe); 0 where either shape is unknown or the paths do not cross."""
    own = _conn([(5.0, 8.0), (5.0, -8.0)])  # 16 m, north to south; the foe crosses it 8 m along
    foe = _conn([(0.0, 0.0), (16.0, 0.0)])
    assert _bits(conflict_zone(foe, own, ZONE_BINS)) == [6, 7, 8, 9]  # 6.4 .. 9.6 m of its own path
    assert zone_start(own, foe, ZONE_BINS) == 6.0  # the first of those parts begins 6 m past its line
    assert zone_start(own, _conn([(0.0, 20.0), (16.0, 20.0)]), ZONE_BINS) == 0.0  # no crossing
    assert zone_start(Connection("a", 0, "b", 0, via_length=10.0), foe, ZONE_BINS) == 0.0  # a generated network


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_body_zone_matches_the_reference_and_occupancy_is_a_union(dtype):
    g = torch.Generator().manual_seed(3)
    n = 400
    via = torch.rand(n, generator=g, dtype=torch.float64) * 40 + 2
    pos = -torch.rand(n, generator=g, dtype=torch.float64) * via
    length = torch.rand(n, generator=g, dtype=torch.float64) * 12 + 3
    bits = kernels.body_zone(pos.to(dtype), length.to(dtype), via.to(dtype))

    class Stub:  # what ReferenceVehicle.body_zone reads
        pass
    for i in range(n):
        v = Stub()
        v.model, v.conn_key, v.pos, v.length = Stub(), "c", float(pos[i].to(dtype)), float(length[i].to(dtype))
        v.model.conns = {"c": (float(via[i].to(dtype)),)}
        want = ReferenceVehicle.body_zone(v)
        assert int(bits[i]) == want, (i, float(pos[i]), float(length[i]), float(via[i]))
    # the front's part and the back's part and every part between (a body longer than the path covers it all)
    front = ((via + pos) / (via / ZONE_BINS)).floor().clamp(0, ZONE_BINS - 1)
    assert all(int(b) >> int(f) & 1 for b, f in zip(bits, front))
    # per segment the union of its vehicles' parts, whatever their order; the last segment collects the rest
    seg = torch.randint(0, 5, (n,), generator=g)
    seg[::7] = 5
    occ = kernels.zone_occupancy(seg, bits, 6)
    perm = torch.randperm(n, generator=g)
    assert torch.equal(occ, kernels.zone_occupancy(seg[perm], bits[perm], 6))
    for k in range(5):
        want = 0
        for b in bits[seg == k].tolist():
            want |= b
        assert int(occ[k]) == want
    assert int(occ[5]) == 0


# connection 0 yields to connection 1, whose 16 m path it crosses in parts 3-6 (3-7 m along it)
ZONE = 0b1111000
KEY, FOE = ("l0", "e0"), ("l1", "e1")  # the same two connections as the reference names them
W, C = 1, 2
NO_WINDOW = torch.tensor([math.inf] * 3), torch.tensor([-math.inf] * 3)


def _two_connections():
    """The network tables ``kernels._foes_block`` reads, for connections 0 and 1."""
    return SimpleNamespace(conn_yield=torch.tensor([True, False]), conn_to_edge=torch.tensor([0, 1]),
                           conn_zipper=torch.tensor([False, False]), conn_foes=torch.tensor([[1], [-1]]),
                           conn_zone=torch.tensor([[ZONE], [0]]))


def _reference(zone_at=0.0, **state):
    """What the reference's ``blocked_by_foes`` reads, for the same two connections (``state``: its windows)."""
    return SimpleNamespace(foes={KEY: [FOE]}, zones={KEY: [ZONE]}, zone_at={KEY: [zone_at]}, windows={},
                           zipper={KEY: False}, events=Counter(), **state)


def test_a_standing_foe_holds_a_minor_vehicle_only_where_it_covers_its_path():
    """kernels._foes_block (and the reference's blocked_by_foes): connection 0 yields to connection 1, whose path it
    crosses in parts 3-6; a vehicle standing inside on connection 1 holds it when its body covers one of those parts,
    not when it stands past them or short of them; a moving one holds it by its window, as before."""
    net, inf = _two_connections(), math.inf
    via = torch.tensor([16.0])

    def held(pos, length=5.0, moving=False):
        occ = torch.zeros(W * C + 1, dtype=torch.int64)
        leave_in = torch.full((W * C + 1,), -inf)
        if moving:
            leave_in[1] = 3.0
        else:
            occ[1] = int(kernels.body_zone(torch.tensor([pos]), torch.tensor([length]), via))
        out = kernels._foes_block(torch.tensor([True]), torch.tensor([0]), torch.tensor([0]), torch.tensor([0.0]),
                                  torch.tensor([2.0]), *NO_WINDOW, leave_in, occ, net, W)
        ref = _reference(windows_inside={FOE: 3.0} if moving else {},
                         zone_occupied={FOE: int(occ[1])} if int(occ[1]) else {})
        assert ReferenceTrafficModel.blocked_by_foes(ref, KEY, 0.0, 2.0) == bool(out[0])  # the reference agrees
        return bool(out[0])

    assert held(-16.0 + 5.5)  # body 0.5 .. 5.5 m: covers parts 3-5
    assert not held(-16.0 + 2.5)  # body -2.5 .. 2.5 m: short of the crossing
    assert not held(-1.0)  # body 10 .. 15 m: past it
    assert held(-1.0, moving=True)  # moving: its window says


def test_a_moving_foe_holds_a_minor_vehicle_at_its_line_only_till_it_has_passed_the_crossing():
    """kernels._foes_block with the clearing times (kernels.clear_times) and when the minor vehicle would reach the
    crossing (and the reference's blocked_by_foes with ``line``): connection 0 yields to connection 1, whose path
    (16 m) it crosses in parts 3-6 (3-7 m along it). A vehicle moving inside on connection 1 at 10 m/s holds a minor
    vehicle standing at its line only if its rear would still be in those parts when the minor vehicle's front got
    there (SUMO: ``MSLink::opened`` counts approaching foes only; one inside the junction is a leader, followed till
    it has passed); the rule before held it until that rear had left the junction."""
    net, inf = _two_connections(), math.inf
    via, length, v, accel, vmax = 16.0, 5.0, 10.0, 2.6, 13.89

    def held(pos, zone_at):
        """The foe's front ``pos`` m before its lane (inside the junction); the crossing ``zone_at`` m past the minor
        vehicle's line, where it stands."""
        clear = kernels.clear_times(torch.tensor([1]), torch.tensor([pos]), torch.tensor([length]),
                                    torch.tensor([v]), torch.tensor([via]), W * C + 1)
        leave_in = torch.full((W * C + 1,), -inf)
        leave_in[1] = (length - pos) / v
        occ = torch.zeros(W * C + 1, dtype=torch.int64)
        reach = kernels.arrival_time(torch.tensor([[zone_at]]), torch.tensor([[0.0]]), torch.tensor([[accel]]),
                                     torch.tensor([[vmax]]))
        out = kernels._foes_block(torch.tensor([True]), torch.tensor([0]), torch.tensor([0]), torch.tensor([0.0]),
                                  torch.tensor([5.0]), *NO_WINDOW, leave_in, occ, net, W, clear, reach)
        ref = _reference(zone_at, windows_inside={FOE: float(leave_in[1])}, zone_occupied={},
                         zone_cleared={FOE: clear[1].tolist()})
        # at its line: distance, top speed, path, leave speed, speed, accel, ...
        line = (0.0, vmax, via, math.sqrt(2.0 * accel * via), 0.0, accel, 4.5, 0.0)
        assert ReferenceTrafficModel.blocked_by_foes(ref, KEY, 0.0, 5.0, line) == bool(out[0])
        return bool(out[0])

    # the foe's rear 3 m short of the junction: past the crossing's end (7 m) in 1.0 s
    assert not held(-14.0, zone_at=10.0)  # the minor vehicle needs sqrt(2 * 10 / 2.6) = 2.8 s to get there: goes
    assert held(-14.0, zone_at=1.0)  # ... 0.9 s to a crossing 1 m past its line: waits
    assert not held(-1.0, zone_at=1.0)  # rear at 10 m: past the crossing already
    # just in (rear at -4.5 m, past in 1.15 s): the minor vehicle needs 1.24 s to 2 m (goes), 1.07 s to 1.5 m (waits)
    assert not held(-15.5, zone_at=2.0)
    assert held(-15.5, zone_at=1.5)


@pytest.mark.parametrize("stood, foe_lane, held", [
    (0.0, 0, False),  # just arrived: the foe 80 m out at 14 m/s could stop at its full deceleration
    (9.0, 0, True),  # impatience 0.05: the foe braking at 0.225 m/s² would arrive at 12.6 m/s, faster than it leaves
    (90.0, 0, False),  # impatience 0.5: at 2.25 m/s² the foe could stop
    (9.0, 1, False),  # a foe into another lane of that edge: no merge
])
def test_a_minor_vehicle_merges_ahead_of_a_foe_into_its_lane_only_where_the_foe_could_brake_for_it(stood, foe_lane,
                                                                                                  held):
    """kernels._foes_block with ``merge`` (kernels.merge_unsafe; and the reference's blocked_by_foes): connection 0
    yields to connection 1, both into the same edge; a vehicle standing at connection 0's line (8 m path, leaving it
    at 6.45 m/s, 3 s from now) and a foe on connection 1 80 m out at 14 m/s, due in 6 s: after the minor vehicle's
    window and its 1 s time gap. SUMO's ``unsafeMergeSpeeds`` holds it while the foe, braking from its arrival at
    its deceleration (4.5 m/s²) times the minor vehicle's impatience (seconds stood / 180), would still come faster
    than it leaves."""
    inf = math.inf
    net = SimpleNamespace(conn_yield=torch.tensor([True, False]), conn_to_edge=torch.tensor([0, 0]),
                          conn_zipper=torch.tensor([False, False]), conn_foes=torch.tensor([[1], [-1]]),
                          conn_zone=torch.tensor([[0], [0]]), conn_to_mask=torch.tensor([1, 1 << foe_lane]))
    arr, leave = torch.tensor([inf, 6.0, inf]), torch.tensor([-inf, 7.0, -inf])
    foe_d, foe_v, foe_b = torch.tensor([inf, 80.0, inf]), torch.tensor([0.0, 14.0, 0.0]), torch.tensor([0.0, 4.5, 0.0])
    via, accel, vmax, decel = 8.0, 2.6, 13.89, 4.5
    v_leave = kernels.line_speeds(torch.tensor([0.0]), torch.tensor([via]), torch.tensor([0.0]), torch.tensor([accel]),
                                  torch.tensor([vmax]))[1]
    impatience = torch.tensor([min(stood / kernels.TIME_TO_IMPATIENCE_S, 1.0)])
    nobody_inside = torch.full((3,), -inf), torch.zeros(3, dtype=torch.int64)
    out = kernels._foes_block(torch.tensor([True]), torch.tensor([0]), torch.tensor([0]), torch.tensor([0.0]),
                              torch.tensor([3.0]), arr, leave, *nobody_inside, net, W,
                              merge=(v_leave, torch.tensor([decel]), impatience, foe_d, foe_v, foe_b))
    assert bool(out[0]) == held
    key, foe = ("e0_0", "b"), ("f0_0", "b")
    ref = SimpleNamespace(foes={key: [foe]}, zones={key: [0]}, zone_at={key: [0.0]}, windows={foe: [6.0, 7.0]},
                          zipper={key: False}, events=Counter(), zone_occupied={}, zone_cleared={},
                          conn_to_lanes={key: {0}, foe: {foe_lane}}, window_foe={foe: (80.0, 14.0, 4.5)})
    line = (0.0, vmax, via, float(v_leave), 0.0, accel, decel, stood)
    assert ReferenceTrafficModel.blocked_by_foes(ref, key, 0.0, 3.0, line) == held  # the reference agrees
