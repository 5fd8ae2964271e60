"""Rule 10's same-source foes: a vehicle follows one that left its lane by another connection until their paths part.

SUMO keeps two vehicles from the same lane in a car-following relation on their different internal lanes until
the one ahead has passed the point where the two internal lanes are more than ``min(2.5 m, mean width)`` apart
(``MSLink::computeDistToDivergence`` with ``sameSource``; ``getLeaderInfo``: gap = the follower's distance to that
point - min gap - the leader's back's distance to it). :func:`twins.traffic.network.divergence` finds the point
from the internal lanes' shapes; the kernels, the compiled step and the reference follow it (their agreement:
``tests/traffic/test_reference.py`` and ``test_native_step.py``, right of way with paths), and against SUMO:
``tests/traffic_sumo/test_internal_junction.py``."""
from __future__ import annotations

import math

import pytest

from twins.traffic.network import Connection, divergence, same_source_siblings


def _conn(shape, to="x"):
    length = sum(math.dist(shape[i], shape[i + 1]) for i in range(len(shape) - 1))
    return Connection("a", 0, to, 0, via_length=length, via_shape=tuple(shape), via_lane_length=length)


STRAIGHT = [(0.0, 0.0), (30.0, 0.0)]
LEFT = [(0.0, 0.0), (6.0, 0.0), (12.0, 4.0), (14.0, 10.0)]


def test_paths_part_where_they_are_more_than_two_and_a_half_metres_apart():
    """Worked by hand as SUMO does it: walking back along the left turn, (12, 4) is 4 m from the straight path and
    (6, 0) on it, so the left turn leaves the 2.5 m band 2.5 / 4 of the way from (6, 0) to (12, 4): 6 + 0.625 *
    7.211 = 10.51 m from its start. Walking back along the straight path, its end is 18.44 m from the left turn
    and its start on it: 30 * 2.5 / 18.44 = 4.07 m. SUMO takes the larger, 10.51 m, on both paths."""
    d = divergence(_conn(LEFT), _conn(STRAIGHT, "y"))
    assert d == pytest.approx((6.0 + 0.625 * math.hypot(6.0, 4.0),) * 2, abs=1e-9)
    assert divergence(_conn(STRAIGHT, "y"), _conn(LEFT)) == pytest.approx(d[::-1], abs=1e-9)


def test_paths_that_end_close_never_part_within_the_first_lane():
    """A left turn whose first internal lane ends 1.6 m beside the straight path (its waiting point, RESCO
    cologne3's -241660955#3_1): no point of that lane is 2.5 m away, so a vehicle on it is followed to its end."""
    short_left = [(0.0, 0.0), (8.0, 1.0), (12.0, 1.6)]
    d = divergence(_conn(short_left), _conn(STRAIGHT, "y"))
    first = math.dist(short_left[0], short_left[1]) + math.dist(short_left[1], short_left[2])
    assert d == pytest.approx((first, first))


def test_lanes_that_do_not_start_together_or_have_no_shape_are_not_siblings():
    assert divergence(_conn([(0.0, 3.2), (30.0, 3.2)]), _conn(STRAIGHT, "y")) is None
    assert divergence(Connection("a", 0, "x", 0, via_length=10.0), _conn(STRAIGHT, "y")) is None


def test_the_point_is_read_in_lane_length():
    """Lane lengths differ from their shapes' (SUMO's ``interpolateGeometryPosToLanePos``): SUMO subtracts the
    length behind the point (measured on the shape) from the lane's length, caps the result at either shape's
    length and reads it on each lane by that lane's length factor. A left turn 1.5 times longer as a lane than
    as a shape: 1.5 * 19.54 - 9.03 = 20.28 m, capped at its shape's 19.54 m, read as 29.30 m on it."""
    a, b = _conn(LEFT), _conn(STRAIGHT, "y")
    shape = a.via_lane_length
    a.via_lane_length *= 1.5
    assert divergence(a, b) == pytest.approx((1.5 * shape, shape), rel=1e-12)


def test_beside_a_parallel_lane_only_a_path_with_an_internal_junction_is_followed():
    """Where another lane of the edge also leads into a connection's next edge (``parallel``), its vehicles follow
    only a sibling whose path has an internal junction, where a left turner may stand for its foes (SUMO's followers
    mostly wait behind one: RESCO cologne3's shared lane); one held by the traffic ahead they pass, as SUMO's change
    lanes (benchmarks/README.md, "A vehicle waiting at its internal junction holds the followers ...")."""
    left = _conn(LEFT)
    left.wait_length = 8.0
    straight, right = _conn(STRAIGHT, "y"), _conn([(0.0, 0.0), (6.0, 0.0), (12.0, -4.0)], "z")
    conns = [left, straight, right]
    (alone,) = same_source_siblings([conns])
    assert [[k for k, *_ in row] for row in alone] == [[1, 2], [0, 2], [0, 1]]
    assert alone[1][0][1:] == pytest.approx(divergence(straight, left))  # where the paths part, on each
    other_lane = Connection("a", 1, "y", 1, via_length=30.0)  # the edge's second lane also leads into "y"
    beside, _ = same_source_siblings([conns, [other_lane]])
    assert [[k for k, *_ in row] for row in beside] == [[1, 2], [0], [0, 1]]
