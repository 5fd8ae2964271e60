"""Routing trips at insertion (``scenario.routing=insertion``, :mod:`twins.traffic.routing`), as SUMO routes
vehicles given by origin and destination: on each world's current travel times when they depart.

The network: from ``in`` two ways lead to ``out``, a short one (``p``, 300 m) and a long one (``q1``, ``q2``,
400 m). A signal at the end of ``p`` stays red, so the short way fills with a standing queue. On free-flow times
every trip takes ``p``; routed at insertion, trips that depart once the queue has slowed ``p`` take the long way
and arrive."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from twins.core.worlds import WorldBatch
from twins.compute import counting
from twins.traffic import kernels, native, routing
from twins.traffic.demand import Demand, Flow, VehicleType
from twins.traffic.model import TrafficScenario, TrafficTwin
from twins.traffic.network import Connection, Edge, Junction, Lane, Phase, RoadNetwork, SignalProgram


def _network() -> RoadNetwork:
    net = RoadNetwork(name="two_ways")
    for j, x, y in (("o", -200, 0), ("a", 0, 0), ("c", 200, 150), ("b", 300, 0), ("d", 500, 0)):
        net.add_junction(Junction(j, float(x), float(y), kind="traffic_light" if j == "b" else "priority",
                                  tl="tb" if j == "b" else None))
    for eid, a, b, length in (("in", "o", "a", 200.0), ("p", "a", "b", 300.0), ("q1", "a", "c", 200.0),
                              ("q2", "c", "b", 200.0), ("out", "b", "d", 200.0)):
        net.add_edge(Edge(eid, a, b, [Lane(f"{eid}_0", 0, length, 13.9)]))
    net.programs["tb"] = SignalProgram("tb", [Phase(60.0, "rG")])  # p -> out red for good, q2 -> out green
    net.connections += [Connection("in", 0, "p", 0, 5.0), Connection("in", 0, "q1", 0, 5.0),
                        Connection("q1", 0, "q2", 0, 5.0),
                        Connection("p", 0, "out", 0, 5.0, tl="tb", link_index=0),
                        Connection("q2", 0, "out", 0, 5.0, tl="tb", link_index=1)]
    return net


def _scenario(routing_mode: str) -> TrafficScenario:
    net = _network()
    flows = [Flow("trips", net.shortest_route("in", "out"), kind="fixed",
                  departures=[float(4 * k) for k in range(60)], reroute=True)]
    # no teleporting (kernels rule 12): the red light holds the short way's queue for the whole run
    return TrafficScenario(net, Demand({"car": VehicleType(id="car")}, flows), "two_ways", routing=routing_mode,
                           time_to_teleport_s=None)


def _run(scen, worlds: WorldBatch, compile=False, horizon=600.0) -> TrafficTwin:
    tw = TrafficTwin(scen, worlds, dt=1.0, horizon=horizon, compile=compile)
    while tw.step_index < tw.n_steps:
        tw.step()
    return tw


def _used(tw: TrafficTwin, w: int = 0) -> set[str]:
    rows = tw.drivers.route[w]
    edges = tw.routes_cpu.route_edges[rows[rows >= 0].cpu()]
    return {tw.net_cpu.edge_ids[int(e)] for e in edges.flatten() if e >= 0}


def test_free_flow_route_is_the_short_way():
    assert _network().shortest_route("in", "out") == ["in", "p", "out"]


@pytest.mark.parametrize("compile", [False, None])
def test_trips_avoid_the_queue_when_routed_at_insertion(compile):
    static = _run(_scenario("static"), WorldBatch.replications(1, 1), compile)
    moving = _run(_scenario("insertion"), WorldBatch.replications(1, 1), compile)
    arrived = lambda tw: int((tw.state.status == kernels.ARRIVED).sum())  # noqa: E731
    assert arrived(static) == 0  # everyone queues behind the red light on the short way
    assert "q1" not in _used(static)
    assert "q1" in _used(moving)  # later trips were routed the long way
    assert arrived(moving) >= 30
    # the first trips, routed on free-flow times, still took the short way and wait there
    first = moving.drivers.route[0, 0]
    assert moving.net_cpu.edge_ids[int(moving.routes_cpu.route_edges[first, 1])] == "p"


def test_routing_keeps_worlds_independent_and_arms_paired():
    """A world's routes and numbers are the same alone and in a batch (another replication beside it), and two
    copies of one replication (a null intervention's arms) are bit-identical."""
    scen = _scenario("insertion")
    alone = _run(scen, WorldBatch.replications(5, 1))
    batch = _run(scen, WorldBatch(5, torch.tensor([0, 3, 0]), torch.zeros(3, dtype=torch.int64)))
    for w in (0, 2):
        for k in ("pos", "speed", "status", "lane", "route_pos"):
            assert torch.equal(getattr(alone.state, k)[0], getattr(batch.state, k)[w]), k
        assert _used(alone) == _used(batch, w)


def test_edge_speeds_are_smoothed_as_sumo_averages_them():
    """One sample per step; an empty edge samples its speed limit; the smoothing has the mean age of SUMO's plain
    mean over 180 samples (alpha = 2 / 181)."""
    net = _network()
    ids = list(net.edges)
    r = routing.InsertionRouter(net, ids, W=2, dt=1.0)
    assert r.alpha == pytest.approx(2.0 / 181.0)
    p = ids.index("p")
    for _ in range(400):  # world 0: every vehicle on p stands; world 1: nothing anywhere (its vehicle not running)
        r.observe(torch.tensor([p, p, p]), torch.tensor([0.0, 0.0, 3.0]), torch.tensor([0, 0, 1]),
                  torch.tensor([True, True, False]))
    assert float(r.speed[0, p]) == pytest.approx(13.9 * (1.0 - 2.0 / 181.0) ** 400)  # the exponential average
    np.testing.assert_allclose(r.speed[1].numpy(), [net.edges[e].speed for e in ids])  # (one lane each)
    assert r.routes(0, [(ids.index("in"), ids.index("out"))]) == [["in", "q1", "q2", "out"]]
    assert r.routes(1, [(ids.index("in"), ids.index("out"))]) == [["in", "p", "out"]]


def _wide_network() -> RoadNetwork:
    """``_network`` with a second lane on ``p`` and lanes closed to cars (a sidewalk) beside ``p`` and ``q1``."""
    net = _network()
    p, q1 = net.edges["p"], net.edges["q1"]
    net.edges["p"] = Edge("p", p.from_node, p.to_node, p.lanes + [Lane("p_1", 1, 300.0, 13.9)],
                          closed_lane_speeds=(2.78,))
    net.edges["q1"] = Edge("q1", q1.from_node, q1.to_node, q1.lanes, closed_lane_speeds=(13.9, 5.0))
    return net


def test_an_edge_samples_sumos_mean_speed():
    """SUMO's ``MSEdge::getMeanSpeed``: each lane's mean speed weighted by its vehicles, an empty lane counted as one
    vehicle at its limit, the lanes closed to cars too; a queue on one lane is not the whole edge's speed."""
    net = _wide_network()
    ids = list(net.edges)
    r = routing.InsertionRouter(net, ids, W=1, dt=1000.0)  # (alpha 1: the smoothed speed is this step's sample)
    assert r.alpha == 1.0
    lanes = [ln.id for e in ids for ln in net.edges[e].lanes]
    p0, p1, q1 = lanes.index("p_0"), lanes.index("p_1"), lanes.index("q1_0")
    assert r.speed[0, ids.index("p")].item() == pytest.approx((13.9 + 13.9 + 2.78) / 3)  # empty: the lanes' mean
    r.observe(torch.tensor([p0, p0, p0, q1]), torch.tensor([0.0, 0.0, 0.0, 6.0]), torch.zeros(4, dtype=torch.int64),
              torch.ones(4, dtype=torch.bool))
    assert r.speed[0, ids.index("p")].item() == pytest.approx((0.0 + 13.9 + 2.78) / (3 + 1 + 1))
    assert r.speed[0, ids.index("q1")].item() == pytest.approx((6.0 + 13.9 + 5.0) / 3)
    r.observe(torch.tensor([p0, p1]), torch.tensor([0.0, 3.0]), torch.zeros(2, dtype=torch.int64),
              torch.ones(2, dtype=torch.bool))
    assert r.speed[0, ids.index("p")].item() == pytest.approx((0.0 + 3.0 + 2.78) / 3)


def test_due_now_marks_each_departure_once():
    depart = np.array([0.0, 0.4, 1.0, 2.5, float("inf")])
    seen = np.zeros(len(depart), dtype=np.int64)
    for k in range(5):
        seen[routing.due_now(depart, float(k), 1.0)] += 1
    assert seen.tolist() == [1, 1, 1, 1, 0]


@pytest.mark.skipif(not native.available(), reason="no C++ compiler for the compiled step")
def test_routing_at_insertion_reads_nothing_from_the_device_after_the_first_step():
    """The speed samples are summed and smoothed on the device; the rows of the worlds that route next are copied
    to the host without waiting: the compiled step with routing at insertion has no host sync (issue 20)."""
    tw = TrafficTwin(_scenario("insertion"), WorldBatch.replications(1, 2), dt=1.0, horizon=600.0, compile=None)
    for _ in range(40):  # trips depart every 4 s: routing steps among the counted ones
        tw.step()
    c = counting.count_per_step(tw.step, 16)  # steps 40-55: short of the interval's end (its checks read the device)
    assert c["host_syncs_per_step"] == 0, c["sync_ops"]


def test_speed_samples_do_not_depend_on_the_vehicles_order():
    """Whole µm/s summed as integers: the same smoothed speeds in any order of the vehicles (as CUDA's atomics
    would sum them), bit for bit."""
    net = _wide_network()
    ids = list(net.edges)
    g = torch.Generator().manual_seed(0)
    edge = torch.randint(0, sum(len(e.lanes) for e in net.edges.values()), (500,), generator=g)  # (lanes)
    world = torch.randint(0, 2, (500,), generator=g)
    speed = torch.rand(500, generator=g, dtype=torch.float64) * 13.9
    running = torch.rand(500, generator=g) < 0.8
    a, b = (routing.InsertionRouter(net, ids, W=2, dt=1.0) for _ in range(2))
    perm = torch.randperm(500, generator=g)
    for _ in range(3):
        a.observe(edge, speed, world, running)
        b.observe(edge[perm], speed[perm], world[perm], running[perm])
    assert torch.equal(a.speed, b.speed)
    assert not torch.equal(a.speed, a._empty_sample().repeat(2, 1))  # the samples moved the averages


def test_the_cpu_sample_is_the_device_sample_bit_for_bit():
    """On the CPU the sample runs in numpy (cheaper per step than torch's dispatch), elsewhere in torch: the same
    integers, the same smoothing operations, the same bits."""
    net = _wide_network()
    ids = list(net.edges)
    g = torch.Generator().manual_seed(1)
    host, device = (routing.InsertionRouter(net, ids, W=3, dt=1.0) for _ in range(2))
    for _ in range(50):
        edge = torch.randint(0, sum(len(e.lanes) for e in net.edges.values()), (400,), generator=g)  # (lanes)
        world = torch.randint(0, 3, (400,), generator=g)
        speed = (torch.rand(400, generator=g) * 13.9).to(torch.float32)  # the step's dtype
        speed[:20] = torch.round(speed[:20] * 2e6) / 2e6  # on the half µm/s: round-half-even in both
        running = torch.rand(400, generator=g) < 0.7
        host._observe_host(edge, speed, world, running)
        device._observe_device(edge, speed, world, running)
    assert torch.equal(host.speed, device.speed)
    assert not torch.equal(host.speed, host._empty_sample().repeat(3, 1))


def test_a_trip_whose_network_leaves_no_choice_is_not_searched():
    """``forced``: the only route where the edges between origin and destination form one chain; None where a
    second way exists (then the search decides, on the world's travel times)."""
    net = _network()
    ids = list(net.edges)
    r = routing.InsertionRouter(net, ids, W=1, dt=1.0)
    i = ids.index
    assert r.forced(i("in"), i("out")) is None  # the short way or the long way
    assert r.forced(i("q1"), i("out")) == ["q1", "q2", "out"]
    assert r.forced(i("p"), i("out")) == ["p", "out"]
    assert r.forced(i("out"), i("out")) == ["out"]
    assert r.forced(i("out"), i("in")) is None  # no way at all: the search reports it
    # a forced pair gives the route a search gives (a router made to search every pair), on any travel times
    searching = routing.InsertionRouter(net, ids, W=1, dt=1.0)
    searching.forced = lambda a, b: None
    free = r.speed[0].numpy().copy()  # (free flow: nothing observed yet)
    slow = free.copy()
    slow[i("q2")] = 0.5
    for speed in (slow, free):
        for a, b in ((i("q1"), i("out")), (i("p"), i("out"))):
            assert r.routes(0, [(a, b)], speed) == searching.routes(0, [(a, b)], speed) == [r.forced(a, b)]


def test_worlds_searched_together_find_what_each_finds_alone(monkeypatch):
    """``routes_many`` searches the worlds' graphs side by side in one call (in groups; here all in one, or one each):
    each world's route is the one its own travel times give, whatever the others'."""
    net = _network()
    ids = list(net.edges)
    i = ids.index
    r = routing.InsertionRouter(net, ids, W=3, dt=1.0)
    free = r.speed[0].numpy().copy()  # (free flow: nothing observed yet)
    jam_p, jam_q = free.copy(), free.copy()
    jam_p[i("p")], jam_q[i("q1")] = 0.5, 0.5
    speeds = {0: jam_p, 1: free.copy(), 2: jam_q}
    pairs = {w: [(i("in"), i("out")), (i("q1"), i("out"))] for w in range(3)}
    alone = {w: r.routes(w, pairs[w], speeds[w]) for w in range(3)}
    assert alone[0][0] == ["in", "q1", "q2", "out"] and alone[1][0] == alone[2][0] == ["in", "p", "out"]
    for entries, n_calls in ((routing.GROUP_ENTRIES, 1), (1, 3)):  # all three in one call; one world a call
        monkeypatch.setattr(routing, "GROUP_ENTRIES", entries)
        assert len(r._groups([0, 1, 2], pairs)) == n_calls
        assert r.routes_many(pairs, speeds) == alone


@pytest.mark.filterwarnings("ignore:SUMO import of")
def test_sumo_import_keeps_the_limits_of_lanes_closed_to_cars():
    """The twin drops a SUMO edge's sidewalks and bike lanes but keeps their speed limits, for the router's samples."""
    from pathlib import Path

    from twins.traffic import sumo

    net = sumo.load_net(Path(__file__).resolve().parents[1] / "data" / "sumo" / "tiny.net.xml")
    assert net.edges["WC"].closed_lane_speeds == (2.78,)
    assert [ln.id for ln in net.edges["WC"].lanes] == ["WC_1", "WC_2"]


def test_routing_penalties_fall_on_unsignalised_minor_links_only():
    """SUMO's ``MSEdge::recalcCache``: a link neither signalised nor major costs the router 1.5 s (a turnaround 5 s);
    a signal's links (whatever state the file gives them, e.g. ``o``) and major links cost their path alone."""
    net = _network()
    base = dict(from_edge="in", from_lane=0, to_edge="p", to_lane=0, via_length=13.9)  # 1 s at 13.9 m/s
    cost = {k: net.crossing_cost(Connection(**base, **kw)) for k, kw in {
        "major": dict(state="M"), "minor": dict(state="m"), "stop": dict(state="s"),
        "signal": dict(state="o", tl="tb", link_index=0),
        "minor turnaround": dict(state="m", direction="t"), "major turnaround": dict(state="M", direction="t"),
        "signal turnaround": dict(state="o", tl="tb", link_index=0, direction="t")}.items()}
    for k in ("major", "signal", "major turnaround", "signal turnaround"):
        assert cost[k] == pytest.approx(1.0), k
    assert cost["minor"] == cost["stop"] == pytest.approx(2.5)
    assert cost["minor turnaround"] == pytest.approx(6.0)
