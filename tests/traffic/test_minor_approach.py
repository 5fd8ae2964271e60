"""Rule 10's cautious approach (SUMO's ``MSVehicle`` approach to a link without priority): a vehicle that could
still stop for a minor link approaches the point where it waits for its foes as a standing obstacle until it is
within the link's visibility distance (4.5 m) of it, even when no foe comes; past that point it goes.

Measured in SUMO 1.28 (IDM, RESCO cologne8, a lone left turner on a ``g`` link with an internal junction 8.1 m past
the line): 10.9 m/s 33 m before the line, 5.6 m/s at the line, 2.0 m/s 2.8 m before the internal junction, then
away; the same vehicle on a ``G`` link keeps 12.4 m/s. The twin did not slow at all before this rule, and its
cologne8 delay was 32 % below SUMO's (benchmarks/README.md, "Fidelity against SUMO").
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.traffic._helpers import chain_scenario
from twins.core.worlds import WorldBatch
from twins.traffic import kernels, native
from twins.traffic.model import TrafficTwin

VIA_M = 10.0  # length of the path across the junction


def _lone_vehicle(state: str, wait: float = 0.0, compile=False):
    """One vehicle from edge a across a junction onto b (300 m each); the connection's state and waiting point.
    Returns (position relative to the stop line, speed) per second until it is 40 m past the line."""
    scen = chain_scenario("minor", {"a": 300.0, "b": 300.0}, ["a", "b"])
    c = scen.network.connections[0]
    c.state, c.via_length, c.wait_length = state, VIA_M, wait
    scen.demand.flows[:] = [dataclasses.replace(scen.demand.flows[0], departures=[0.0])]
    tw = TrafficTwin(scen, WorldBatch.replications(0, 1), dt=1.0, horizon=60.0, dtype=torch.float64,
                     compile=compile)
    assert tw.kernel == ("tensor" if compile is False else "native")
    a = tw.net.lane_ids.index("a_0")
    out = []
    while tw.step_index < tw.n_steps:
        tw.step()
        if int(tw.state.status[0, 0]) != kernels.RUNNING:
            continue
        pos, v = float(tw.state.pos[0, 0]), float(tw.state.speed[0, 0])
        x = pos - 300.0 if int(tw.state.lane[0, 0]) == a else pos + VIA_M  # metres past the stop line
        out.append((x, v))
        if x > 40.0:
            break
    return out


def _speed_before(trace, x):
    """Speed of the last step short of ``x``."""
    return [v for p, v in trace if p < x][-1]


def _speed_at(trace, x):
    """Speed of the first step at or past ``x`` (metres relative to the stop line)."""
    return next(v for p, v in trace if p >= x)


def test_a_major_link_is_driven_through_and_a_minor_one_approached_with_caution():
    major = _lone_vehicle("M")
    minor = _lone_vehicle("m")
    cruise = _speed_at(major, -200.0)  # the driver's desired speed (speed limit times its speed factor)
    assert _speed_at(major, 0.0) > 0.99 * cruise  # free flow across a link with priority
    # the minor link: slowed to a crawl at the line (SUMO: 2.8 m/s at 3.8 m before it, cologne1's merge), never
    # stopped (no foe came), then away
    assert _speed_at(minor, -200.0) > 0.98 * cruise and _speed_at(minor, -20.0) < 0.9 * cruise
    assert _speed_at(minor, 0.0) < 0.5 * _speed_at(major, 0.0)
    assert min(v for p, v in minor if p > -60.0) > 1.0
    assert _speed_at(minor, 30.0) > _speed_at(minor, 0.0)


def test_a_left_turn_waits_at_its_internal_junction_not_at_the_line():
    """With a waiting point 8 m into the junction (SUMO's internal junction of a left turn, ``cont="1"``) the
    vehicle crosses the line faster than when it waits at the line, and is slowest inside the junction."""
    at_line = _lone_vehicle("m")
    inside = _lone_vehicle("m", wait=8.0)
    assert _speed_before(inside, 0.0) > 1.5 * _speed_before(at_line, 0.0)
    slowest = min((v, p) for p, v in inside if -30.0 < p < 10.0)
    assert 0.0 < slowest[1] < 8.0, slowest  # past the line, short of the waiting point
    assert min(v for p, v in inside) > 1.0


def test_the_compiled_step_drives_the_same_approach():
    if not native.available():
        pytest.skip("no C++ compiler: the compiled step is not built here")
    for state, wait in (("m", 0.0), ("m", 8.0), ("M", 0.0)):
        assert _lone_vehicle(state, wait) == _lone_vehicle(state, wait, compile=None)
