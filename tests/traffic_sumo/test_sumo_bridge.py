"""The SUMO bridge: run SUMO on a scenario with a given plan, metrics under the twin's names."""
from __future__ import annotations

import math
import sys
import warnings

import pytest

from twins.traffic import sumo
from twins.traffic.demand import Demand, Flow, VehicleType
from twins.traffic.network import Phase, SignalProgram
from twins.traffic.sumo_bridge import SumoNotFoundError, find_sumo, read_elements, run_sumo

METRICS = ("mean_travel_time_s", "mean_delay_s", "throughput_veh", "vehicles_loaded", "vehicles_inserted",
           "wall_time_s", "sim_time_s", "vehicle_steps", "updates_per_s")


def test_missing_sumo_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("SUMO_HOME", raising=False)
    monkeypatch.setitem(sys.modules, "sumo", None)
    with pytest.raises(SumoNotFoundError, match=r'pip install -e "\.\[sumo\]"'):
        find_sumo("sumo")
    with pytest.raises(SumoNotFoundError, match="pip install"):
        run_sumo({"net": "x.net.xml"})


def _scenario(netgen, rate: float):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sumo.SumoImportWarning)
        net = sumo.load_net(netgen("grid"))
    degree = {j: 0 for j in net.junctions}
    for e in net.edges.values():
        degree[e.from_node] += 1
        degree[e.to_node] += 1
    fringe = {j for j, d in degree.items() if d <= 2}
    sources = sorted(e.id for e in net.edges.values() if e.from_node in fringe)
    sinks = sorted(e.id for e in net.edges.values() if e.to_node in fringe)
    assert len(sources) == len(sinks) == 12
    g = net.graph()
    flows = []
    for i, s in enumerate(sources):
        t = sinks[(i * 5 + 3) % len(sinks)]
        if net.edges[t].to_node == net.edges[s].from_node:  # not back where it came from
            t = sinks[(i * 5 + 4) % len(sinks)]
        flows.append(Flow(id=f"f{i}", route=net.shortest_route(s, t, g), rate=rate, begin=0, end=600,
                          kind="periodic", vtype="car"))
    return net, Demand({"car": VehicleType(id="car")}, flows)


@pytest.mark.sumo
def test_metrics_plan_and_reproducibility(netgen, sumo_binary):
    net, demand = _scenario(netgen, rate=180.0)
    files = {"net": str(netgen("grid"))}
    base = run_sumo(files, None, routes=demand, end=900, seed=3)
    for k in METRICS:
        assert k in base and not (isinstance(base[k], float) and math.isnan(base[k])), k
    expected = sum(int(f.expected_count()) for f in demand.flows)
    assert base["vehicles_loaded"] == expected == base["vehicles_inserted"]
    assert base["throughput_veh"] == expected  # uncongested: every vehicle arrives by 900 s
    free = min(sum(net.edges[e].length / net.edges[e].speed for e in f.route) for f in demand.flows)
    assert base["mean_travel_time_s"] > free and base["mean_delay_s"] > 0
    assert base["vehicle_steps"] > 0 and base["updates_per_s"] > 0
    # the net's own programs as a plan: the same numbers
    same = run_sumo(files, net.programs, routes=demand, end=900, seed=3)
    assert {k: same[k] for k in METRICS[:5]} == {k: base[k] for k in METRICS[:5]}
    # a plan that holds every signal red most of the cycle: more delay, SUMO really ran it
    red = {tid: SignalProgram(tid, [Phase(5, "G" * p.n_links), Phase(3, "y" * p.n_links),
                                    Phase(82, "r" * p.n_links)], program_id="red")
           for tid, p in net.programs.items()}
    slow = run_sumo(files, red, routes=demand, end=900, seed=3)
    assert slow["mean_delay_s"] > base["mean_delay_s"] + 20
    assert slow["throughput_veh"] < base["throughput_veh"]


@pytest.mark.sumo
def test_sumocfg_with_its_own_additional_programs(netgen, sumo_binary, tmp_path):
    """The plan is loaded after the .sumocfg's additional files, so it is the program SUMO runs."""
    net_path = netgen("turnlanes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", sumo.SumoImportWarning)
        net = sumo.load_net(net_path)
    sumo.write_tllogic(net.programs, tmp_path / "cfg_plan.add.xml", program_id="cfg")
    src = next(e for e in sorted(net.edges) if e.startswith("left"))
    dst = next(e for e in sorted(net.edges) if e.endswith("right0"))
    route = " ".join(net.shortest_route(src, dst))
    (tmp_path / "d.rou.xml").write_text(
        '<routes><vType id="car"/><flow id="f" type="car" begin="0" end="300" vehsPerHour="600">'
        f'<route edges="{route}"/></flow></routes>')
    (tmp_path / "s.sumocfg").write_text(
        f'<configuration><input><net-file value="{net_path}"/><route-files value="d.rou.xml"/>'
        '<additional-files value="cfg_plan.add.xml"/></input><time><begin value="0"/><end value="600"/></time>'
        '</configuration>')
    with pytest.warns(sumo.SumoImportWarning, match="12 × actuated tlLogic"):
        sc = sumo.load_sumocfg(tmp_path / "s.sumocfg")
    assert {p.program_id for p in sc.network.programs.values()} == {"cfg"}
    base = run_sumo(tmp_path / "s.sumocfg")
    assert base["vehicles_loaded"] == 50 and base["throughput_veh"] == 50
    assert run_sumo(sc)["mean_travel_time_s"] == base["mean_travel_time_s"]
    closed = {tid: SignalProgram(tid, [Phase(1, "r" * p.n_links), Phase(99, "r" * p.n_links)])
              for tid, p in net.programs.items()}
    m = run_sumo(tmp_path / "s.sumocfg", closed, time_to_teleport=-1)
    assert m["throughput_veh"] == 0 and m["vehicles_inserted"] < 50


@pytest.mark.sumo
def test_lane_data_against_trips_and_the_twins_lane_table(netgen, sumo_binary, tmp_path):
    """``run_sumo(lane_data=True)``: SUMO's per-lane time loss of the normal lanes (each internal lane's counted in
    the lane it leads to, as the twin folds a crossing into the lane after it), in all at least the trips' own time
    loss and at most a fifth more (SUMO counts a vehicle on every lane its body touches: twice while it straddles two;
    RESCO ingolstadt7: 12 % more); and the
    twin's :meth:`lane_table` on the same scenario, whose lanes add up exactly to its vehicles' time loss and
    whose busiest lanes are SUMO's (bench_fidelity.py --lanes compares the two lane by lane)."""
    import torch

    from twins.core.worlds import WorldBatch
    from twins.traffic.model import TrafficScenario, TrafficTwin

    net, demand = _scenario(netgen, rate=360.0)
    r = run_sumo({"net": str(netgen("grid"))}, None, routes=demand, end=900, seed=3, lane_data=True, workdir=tmp_path,
                 trip_data=True)
    # every trip (bench_fidelity.py --origins): planned departures of the demand, departed on the flows' first edges
    trips = r["trips"]
    assert len(trips) == r["vehicles_inserted"] and sum(t["arrived"] for t in trips) == r["throughput_veh"]
    # planned, not actual, departures: the flows' (360 an hour from 0 to 600 s: every 10 s), whatever the delay
    assert all(0.0 <= t["depart_s"] <= 600.0 and abs(t["depart_s"] / 10.0 - round(t["depart_s"] / 10.0)) < 1e-6
               for t in trips)
    assert {t["origin"] for t in trips} <= {f.route[0] for f in demand.flows}
    lanes = r["lanes"]
    own = {l.id for e in net.edges.values() for l in e.lanes}
    used = {k for k, d in lanes.items() if d["sampled_s"] > 0}  # the sidewalks the twin leaves out: none
    assert used and used <= own and not any(k.startswith(":") for k in lanes)
    sumo_total = sum(d["time_loss_s"] for d in lanes.values())
    # every trip's time loss, arrived or still running at the end (write-unfinished)
    trips_total = sum(float(a["timeLoss"]) for _, a in read_elements(tmp_path / "tripinfo.xml", {"tripinfo"}))
    assert 0.98 * trips_total <= sumo_total <= 1.2 * trips_total and all(d["sampled_s"] >= 0 for d in lanes.values())
    tw = TrafficTwin(TrafficScenario(net, demand, "grid"), WorldBatch.replications(3, 2), dt=1.0, horizon=900.0,
                     dtype=torch.float64)
    while tw.step_index < tw.n_steps:
        tw.step()
    lt = tw.lane_table()
    assert set(lt["lane"]) == set(tw.net_cpu.lane_ids) and len(lt) == 2 * len(tw.net_cpu.lane_ids)
    per_world = lt.groupby("world")["time_loss_s"].sum().to_numpy()
    assert per_world == pytest.approx(tw.state.time_loss.sum(1).numpy(), rel=1e-9)
    twin = lt[lt["world"] == 0].set_index("lane")["time_loss_s"]
    busiest = lambda d: set(sorted(d, key=d.get, reverse=True)[:6])  # noqa: E731
    sumo_loss = {k: lanes[k]["time_loss_s"] for k in used}
    assert len(busiest(sumo_loss) & busiest(twin.to_dict())) >= 3
