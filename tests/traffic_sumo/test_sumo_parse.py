"""SUMO import/export on hand-written files (no SUMO installation needed)."""
from __future__ import annotations

import shutil
import warnings

import pytest

from twins.core.errors import ConfigError
from twins.traffic import sumo
from twins.traffic.network import Phase, SignalProgram
from twins.traffic.sumo import SumoImportWarning


def _load(fn, *args, **kw):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = fn(*args, **kw)
    msgs = [x for x in w if issubclass(x.category, SumoImportWarning)]
    return out, msgs


def test_net_edges_lanes_connections(data_dir):
    net, msgs = _load(sumo.load_net, data_dir / "tiny.net.xml")
    assert sorted(net.edges) == ["CE", "CN", "WC"]
    wc = net.edges["WC"]
    # the sidewalk (SUMO index 0) is dropped; car lanes re-indexed from the right, SUMO ids kept
    assert [(l.id, l.index) for l in wc.lanes] == [("WC_1", 0), ("WC_2", 1)]
    assert wc.lanes[0].length == 94.0 and wc.lanes[0].speed == 13.89 and wc.name == "Main Street"
    assert wc.lanes[0].shape == [(-100.0, -4.8), (-6.0, -4.8)]
    assert net.edges["CN"].lanes[0].speed == 8.33
    conns = {(c.from_edge, c.from_lane, c.to_edge, c.to_lane): c for c in net.connections}
    assert set(conns) == {("WC", 0, "CE", 0), ("WC", 1, "CN", 0)}
    straight, left = conns[("WC", 0, "CE", 0)], conns[("WC", 1, "CN", 0)]
    assert straight.via_length == pytest.approx(12.5) and straight.direction == "s"
    assert (straight.tl, straight.link_index) == ("C", 0)
    # the left turn runs over two internal lanes (an internal junction in between): 6.0 + 4.5
    assert left.via_length == pytest.approx(10.5) and left.direction == "l" and left.link_index == 1
    # junction P is reached only by a footpath; internal junctions are not junctions of the model
    assert sorted(net.junctions) == ["C", "E", "N", "W"]
    assert net.junctions["C"].kind == "traffic_light" and net.junctions["C"].tl == "C"
    prog = net.programs["C"]
    assert prog.kind == "static" and prog.offset == 5.0 and prog.program_id == "0"
    assert [(p.duration, p.state) for p in prog.phases] == [(30, "GGr"), (3.5, "yyr"), (30, "rrG"), (3, "rrr")]
    assert prog.phases[1].name == "clear"
    net.validate()
    # one warning, listing everything ignored with counts
    assert len(msgs) == 1
    text = str(msgs[0].message)
    for part in ("1 × actuated tlLogic", "1 × crossing edges", "1 × walkingarea edges",
                 "3 × lanes closed to passenger cars (allow=pedestrian: 2, allow=rail: 1)",
                 "2 × edges without a passenger-car lane", "1 × connections of lanes closed to passenger cars",
                 "1 × junctions reached only by edges closed", "1 × <param> of <tlLogic>"):
        assert part in text, part


def test_routes_vehicles_trips_flows(data_dir):
    net, _ = _load(sumo.load_net, data_dir / "tiny.net.xml")
    demand, msgs = _load(sumo.load_routes, data_dir / "tiny.rou.xml", net)
    flows = {f.id: f for f in demand.flows}
    # vehicles/trips grouped into fixed flows per (route, vType)
    assert flows["v0+1"].kind == "fixed" and flows["v0+1"].departures == [0.0, 10.0]
    assert flows["v0+1"].route == ["WC", "CE"] and flows["v0+1"].vtype == "car"
    assert flows["v2"].route == ["WC", "CN"] and flows["v2"].vtype == "lorry"
    # trip t0 routed in the twin (and again at insertion: apart from v3, which keeps the most probable route of
    # its distribution, the same edges)
    assert flows["t0"].route == ["WC", "CN"] and flows["t0"].departures == [3.0] and flows["t0"].reroute
    assert flows["v3"].route == ["WC", "CN"] and flows["v3"].departures == [7.0] and not flows["v3"].reroute
    assert flows["t1"].vtype == "DEFAULT_VEHTYPE"
    assert (flows["f_vph"].kind, flows["f_vph"].rate, flows["f_vph"].end) == ("periodic", 360.0, 600.0)
    assert (flows["f_period"].kind, flows["f_period"].rate, flows["f_period"].route) == \
        ("periodic", 360.0, ["WC", "CN"])
    assert (flows["f_exp"].kind, flows["f_exp"].rate) == ("poisson", pytest.approx(360.0))
    assert (flows["f_prob"].kind, flows["f_prob"].rate) == ("bernoulli", 900.0)
    assert (flows["f_number"].kind, flows["f_number"].number, flows["f_number"].expected_count()) == \
        ("periodic", 20, 20)
    car = demand.vtypes["car"]
    assert (car.length, car.min_gap, car.accel, car.decel, car.max_speed, car.tau) == (4.5, 2, 2.0, 4.0, 30, 1.2)
    assert (car.speed_factor, car.speed_dev) == (1.1, 0.2)
    assert (car.sigma, car.car_following) == (0.5, None)  # Krauss's dawdling; no carFollowModel stated
    lorry = demand.vtypes["lorry"]
    assert lorry.length == 7.1 and lorry.accel == 1.3  # SUMO's truck defaults
    assert "walker" not in demand.vtypes
    demand.validate(net.edges)
    assert len(msgs) == 1
    text = str(msgs[0].message)
    assert "vType attribute sigma" not in text  # read: Krauss's driver imperfection
    for part in ("vClass pedestrian", "vClass truck", "trip attribute departLane",
                 "routeDistributions", "<person> elements"):
        assert part in text, part


def test_sumocfg(data_dir):
    sc, msgs = _load(sumo.load_sumocfg, data_dir / "tiny.sumocfg")
    assert (sc.begin, sc.end) == (0.0, 1000.0)
    assert sc.files["net"].endswith("tiny.net.xml") and sc.files["routes"][0].endswith("tiny.rou.xml")
    # the additional file's program replaces the net's (SUMO runs the last program loaded)
    prog = sc.network.programs["C"]
    assert (prog.program_id, prog.offset, prog.cycle) == ("fixed", 12.0, 48.0)
    assert len(msgs) == 1
    text = str(msgs[0].message)
    # time-to-teleport is read (kernels rule 12, scenarios/sumo.py), not ignored
    assert "time-to-teleport" not in text and "<inductionLoop> elements" in text
    assert sc.ignored["<person> elements"] == 1
    assert len(sc.demand.flows) == 10  # trips apart from routed vehicles (they are routed again at insertion)


def test_tllogic_roundtrip(tmp_path):
    progs = {
        "J&1": SignalProgram("J&1", [Phase(31.5, "GGgr", "main \"through\""), Phase(3, "yyyr"), Phase(0.1, "rrrG")],
                             offset=17.25, program_id="p<1>"),
        "K": SignalProgram("K", [Phase(1e-3, "G"), Phase(12345.678901234567, "r")], offset=-3),
    }
    path = sumo.write_tllogic(progs, tmp_path / "plan.add.xml")
    back, msgs = _load(sumo.read_tllogic, path)
    assert back == progs and not msgs
    # again: the exported file of the imported plan is byte-identical
    path2 = sumo.write_tllogic(back, tmp_path / "plan2.add.xml")
    assert path.read_text() == path2.read_text()
    renamed = sumo.read_tllogic(sumo.write_tllogic(progs, tmp_path / "p3.add.xml", program_id="twins"))
    assert {p.program_id for p in renamed.values()} == {"twins"}


def test_write_rejects_invalid_program(tmp_path):
    bad = {"J": SignalProgram("J", [Phase(10, "GG"), Phase(-1, "rr")])}
    with pytest.raises(ConfigError, match="duration"):
        sumo.write_tllogic(bad, tmp_path / "x.add.xml")


@pytest.mark.parametrize("name, loader", [
    ("entity_bomb.net.xml", "net"),
    ("external_entity.rou.xml", "routes"),
])
def test_hostile_xml_rejected(data_dir, name, loader):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = sumo.load_net(data_dir / "tiny.net.xml") if loader == "routes" else None
        with pytest.raises(ConfigError) as e:
            if loader == "net":
                sumo.load_net(data_dir / name)
            else:
                sumo.load_routes(data_dir / name, net)
    msg = str(e.value)
    assert name in msg and "DOCTYPE" in msg and "Line 2" in msg
    assert "root:" not in msg  # /etc/passwd was not read


def test_malformed_names_file_line_element(data_dir):
    net, _ = _load(sumo.load_net, data_dir / "tiny.net.xml")
    with pytest.raises(ConfigError) as e:
        sumo.load_routes(data_dir / "malformed.rou.xml", net)
    msg = str(e.value)
    assert "malformed.rou.xml" in msg and "Line 5" in msg and "<route>" in msg and "mismatched tag" in msg


def test_missing_files(data_dir, tmp_path):
    with pytest.raises(ConfigError) as e:
        sumo.load_net(tmp_path / "nope.net.xml")
    assert "nope.net.xml" in str(e.value) and "Check the path" in str(e.value)
    with pytest.raises(ConfigError) as e:
        sumo.load_sumocfg(data_dir / "missing_net.sumocfg")
    assert "does_not_exist.net.xml" in str(e.value) and "net-file" in str(e.value)


def test_route_over_unknown_edge(data_dir):
    net, _ = _load(sumo.load_net, data_dir / "tiny.net.xml")
    with pytest.raises(ConfigError) as e:
        sumo.load_routes(data_dir / "bad_edge.rou.xml", net)
    msg = str(e.value)
    assert "NOPE" in msg and "bad_edge.rou.xml" in msg and "line 4, in <route>" in msg and "vehicle[v0]" in msg


def test_negative_vtype_length(data_dir):
    net, _ = _load(sumo.load_net, data_dir / "tiny.net.xml")
    with pytest.raises(ConfigError) as e:
        sumo.load_routes(data_dir / "negative_length.rou.xml", net)
    msg = str(e.value)
    assert "vType[car].length" in msg and "-4.5" in msg and "negative_length.rou.xml" in msg and "line 2" in msg


def test_disconnected_route_and_unknown_vtype(data_dir, tmp_path):
    net, _ = _load(sumo.load_net, data_dir / "tiny.net.xml")
    p = tmp_path / "r.rou.xml"
    p.write_text('<routes><vehicle id="a" depart="0"><route edges="CE WC"/></vehicle></routes>')
    with pytest.raises(ConfigError, match="No connection from 'CE' to 'WC'"):
        sumo.load_routes(p, net)
    p.write_text('<routes><vehicle id="a" type="nope" depart="0"><route edges="WC CE"/></vehicle></routes>')
    with pytest.raises(ConfigError, match="vehicle\\[a\\].type"):
        sumo.load_routes(p, net)
    p.write_text('<routes><trip id="a" depart="0" from="CE" to="WC"/></routes>')
    with pytest.raises(ConfigError, match="No path"):
        sumo.load_routes(p, net)


def test_route_over_footpath_is_reported_not_failed(data_dir, tmp_path):
    net, _ = _load(sumo.load_net, data_dir / "tiny.net.xml")
    p = tmp_path / "r.rou.xml"
    p.write_text('<routes><vehicle id="a" depart="0"><route edges="WC footpath"/></vehicle>'
                 '<vehicle id="b" depart="1"><route edges="WC CE"/></vehicle></routes>')
    demand, msgs = _load(sumo.load_routes, p, net)
    assert [f.id for f in demand.flows] == ["b"]
    assert "vehicles over edges closed to passenger cars" in str(msgs[0].message)


def test_gzip_and_write_routes_roundtrip(data_dir, tmp_path):
    import gzip

    net, _ = _load(sumo.load_net, data_dir / "tiny.net.xml")
    demand, _ = _load(sumo.load_routes, data_dir / "tiny.rou.xml", net)
    out = sumo.write_routes(demand, tmp_path / "d.rou.xml")
    gz = tmp_path / "d.rou.xml.gz"
    gz.write_bytes(gzip.compress(out.read_bytes()))
    back, msgs = _load(sumo.load_routes, gz, net)
    count = lambda d: sum(f.expected_count() for f in d.flows)  # noqa: E731
    assert count(back) == pytest.approx(count(demand)) and not msgs
    assert back.vtypes == demand.vtypes
    by_kind = lambda d: sorted((f.kind, tuple(f.route), f.rate) for f in d.flows if f.kind != "fixed")  # noqa: E731
    assert by_kind(back) == by_kind(demand)


def test_scenario_schema_and_demand_scale(data_dir):
    from scenarios.sumo import SumoScenario, load_scenario, scale_demand

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net, demand, begin, end = load_scenario(SumoScenario(sumocfg=str(data_dir / "tiny.sumocfg"), end=500.0))
    assert (begin, end) == (0.0, 500.0) and "WC" in net.edges
    fixed = sum(len(f.departures) for f in demand.flows if f.kind == "fixed")
    half = scale_demand(demand, 0.5)
    assert sum(len(f.departures) for f in half.flows if f.kind == "fixed") == fixed // 2
    assert [f.rate for f in half.flows if f.kind != "fixed"] == [f.rate / 2 for f in demand.flows if f.kind != "fixed"]
    assert sum(len(f.departures) for f in scale_demand(demand, 2.0).flows if f.kind == "fixed") == 2 * fixed
    with pytest.raises(ConfigError, match="scenario.sumocfg"):
        load_scenario(SumoScenario())


def test_sumocfg_relative_paths(data_dir, tmp_path):
    for f in ("tiny.net.xml", "tiny.rou.xml", "tiny_plan.add.xml", "tiny.sumocfg"):
        shutil.copy(data_dir / f, tmp_path / f)
    sc, _ = _load(sumo.load_sumocfg, tmp_path / "tiny.sumocfg")
    assert sc.files["net"] == str(tmp_path / "tiny.net.xml")


def test_depart_speed_as_sumo_reads_it(data_dir, tmp_path):
    """SUMO's departSpeed: unstated is SUMO 1.28's default, avg (unless default.departspeed says otherwise), a number
    is kept, max/desired/speedLimit are "as fast as safe" (None), avg is the lane's mean speed; random/last are read
    as max and reported; vehicles that differ in it are separate flows; the route writer states it, so SUMO and the
    twin insert alike; bad values are refused by field and value."""
    net, _ = _load(sumo.load_net, data_dir / "tiny.net.xml")
    p = tmp_path / "r.rou.xml"
    p.write_text('<routes><vehicle id="a" depart="0"><route edges="WC CE"/></vehicle>'
                 '<vehicle id="b" depart="1" departSpeed="max"><route edges="WC CE"/></vehicle>'
                 '<vehicle id="c" depart="2" departSpeed="5.5"><route edges="WC CE"/></vehicle>'
                 '<vehicle id="d" depart="3" departSpeed="random"><route edges="WC CE"/></vehicle>'
                 '<vehicle id="e" depart="4" departSpeed="avg"><route edges="WC CE"/></vehicle>'
                 '<flow id="f" begin="0" end="60" vehsPerHour="60" departSpeed="desired"><route edges="WC CE"/></flow>'
                 '</routes>')
    demand, msgs = _load(sumo.load_routes, p, net)
    speeds = {f.id: f.depart_speed for f in demand.flows}
    assert speeds == {"a+1": "avg", "b+1": None, "c": 5.5, "f": None}
    assert any('departSpeed="random"' in str(m.message) for m in msgs)
    back, _ = _load(sumo.load_routes, sumo.write_routes(demand, tmp_path / "w.rou.xml"), net)
    assert sorted(map(str, (f.depart_speed for f in back.flows))) == sorted(map(str, speeds.values()))
    for bad in ("-1", "fast", "nan"):
        p.write_text(f'<routes><vehicle id="x" depart="0" departSpeed="{bad}"><route edges="WC CE"/></vehicle>'
                     '</routes>')
        with pytest.raises(ConfigError, match="vehicle\\[x\\].departSpeed"):
            sumo.load_routes(p, net)
    # SUMO's --default.departspeed (1.28: avg) for the vehicles that state none: an argument, or the .sumocfg's
    p.write_text('<routes><vehicle id="a" depart="0"><route edges="WC CE"/></vehicle></routes>')
    assert sumo.load_routes(p, net).flows[0].depart_speed == "avg"
    assert sumo.load_routes(p, net, default_depart_speed="0").flows[0].depart_speed == 0.0
    with pytest.raises(ConfigError, match="default.departspeed"):
        sumo.load_routes(p, net, default_depart_speed="fast")
    cfg = tmp_path / "d.sumocfg"
    cfg.write_text(f'<configuration><input><net-file value="{data_dir / "tiny.net.xml"}"/><route-files value="{p}"/>'
                   '</input><processing><default.departspeed value="0"/></processing></configuration>')
    sc, _ = _load(sumo.load_sumocfg, cfg)
    assert sc.demand.flows[0].depart_speed == 0.0
    sc, _ = _load(sumo.load_sumocfg, cfg, default_depart_speed="max")  # scenario.default_depart_speed overrides
    assert sc.demand.flows[0].depart_speed is None


def test_trips_are_marked_for_routing_at_insertion(data_dir, tmp_path):
    """SUMO routes a vehicle given by from/to when it is inserted (its rerouting device); one with a route keeps
    it. The import marks the first kind (``Flow.reroute``) and keeps its free-flow route as the fallback."""
    net, _ = _load(sumo.load_net, data_dir / "tiny.net.xml")
    p = tmp_path / "r.rou.xml"
    p.write_text('<routes><trip id="t" depart="0" from="WC" to="CE"/>'
                 '<vehicle id="v" depart="1"><route edges="WC CE"/></vehicle>'
                 '<flow id="f" begin="0" end="60" vehsPerHour="60" from="WC" to="CE"/></routes>')
    demand, _ = _load(sumo.load_routes, p, net)
    marks = {f.id: (f.reroute, tuple(f.route)) for f in demand.flows}
    assert marks == {"t": (True, ("WC", "CE")), "v": (False, ("WC", "CE")), "f": (True, ("WC", "CE"))}


def test_write_drawn_routes_round_trips_one_worlds_vehicles(data_dir, tmp_path):
    """``transfer.demand=twin``'s route file: one replication's vehicles as the twin drew them (Poisson re-draws of
    the file), read back by the importer as the same departures per route and type, the file's vTypes verbatim."""
    import collections

    import torch

    from twins.traffic.demand import vary
    from twins.traffic.sumo_routes import vtype_elements, write_drawn_routes
    from twins.traffic.tables import build_population

    net, _ = _load(sumo.load_net, data_dir / "tiny.net.xml")
    demand, _ = _load(sumo.load_routes, data_dir / "tiny.rou.xml", net)
    drawn = vary(demand, "poisson", begin=0.0, end=600.0, interval_s=60.0)
    pop = build_population(drawn, 7, torch.tensor([3, 4]))
    types = vtype_elements([data_dir / "tiny.rou.xml"])
    assert types and all(t.startswith("<vType") for t in types)
    per_world = []
    for w in range(2):
        out = write_drawn_routes(drawn, pop.flow[w].tolist(), pop.index_in_flow[w].tolist(), pop.depart[w].tolist(),
                                 tmp_path / f"r{w}.rou.xml", vtype_elements=types)
        text = out.read_text()
        assert all(t in text for t in types)
        back, msgs = _load(sumo.load_routes, out, net)
        got = collections.Counter((tuple(f.route), f.vtype, t) for f in back.flows for t in f.departures)
        want = collections.Counter((tuple(drawn.flows[int(f)].route), drawn.flows[int(f)].vtype, float(t))
                                   for f, t in zip(pop.flow[w], pop.depart[w]) if int(f) >= 0)
        assert got == want and sum(want.values()) > 0
        per_world.append(want)
    assert per_world[0] != per_world[1]  # two replications, two draws
