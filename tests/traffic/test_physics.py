"""Physics validation of the traffic twin against published traffic-flow results.

1. IDM homogeneous equilibrium on a ring (Treiber, Hennecke & Helbing 2000;
   Treiber & Kesting, *Traffic Flow Dynamics*, 2013, ch. 11).
2. Saturation flow of queue discharge at a signalized stop line (HCM 2010 /
   HCM 6th ed. field procedure and base saturation flow).
3. Vehicle conservation in every world, uncongested and congested.
4. Spillback: a blocked downstream edge fills, upstream traffic queues, and
   vehicles never overlap.

Measured figures are printed (run with ``-s`` to see them).
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from scenarios.traffic import (GridScenario, JunctionScenario, RingScenario, SignalConfig, VehicleConfig,
                               grid_scenario, junction_scenario, ring_scenario, signalized_lattice)
from twins.core.worlds import WorldBatch
from twins.traffic import kernels
from twins.traffic.demand import Demand, Flow, VehicleType
from twins.traffic.model import TrafficScenario, TrafficTwin
from twins.traffic.network import Phase

_spec = importlib.util.spec_from_file_location("traffic_physics_helpers", Path(__file__).with_name("_helpers.py"))
H = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(H)

WAITING, RUNNING, ARRIVED = kernels.WAITING, kernels.RUNNING, kernels.ARRIVED


# ---------------------------------------------------------------------------------------------
# 1. IDM equilibrium on a ring
RING_C = 1000.0
RING_SEGMENTS = 4
VEH = VehicleConfig(speed_dev=0.0, param_cv=0.0)  # homogeneous drivers: length 5, s0 2.5, T 1, a 2.6, b 4.5, δ 4


def _ring_state(twin):
    """Sorted ring coordinates, gaps and speeds of world 0."""
    snap = twin.snapshot()
    snap = snap[snap["world"] == 0]
    seg = RING_C / RING_SEGMENTS
    x = snap["edge"].str[1:].astype(int).to_numpy() * seg + snap["pos_m"].to_numpy()
    order = np.argsort(x)
    x, v = x[order], snap["speed_mps"].to_numpy()[order]
    gaps = np.diff(np.r_[x, x[0] + RING_C]) - VEH.length
    return gaps, v


@pytest.mark.parametrize("n_vehicles", [20, 30, 45, 60])
def test_idm_ring_reaches_analytic_equilibrium(n_vehicles):
    """Homogeneous drivers on a 1 km single-lane ring relax to the IDM steady state.

    Reference: the IDM's homogeneous equilibrium s_e(v) = (s0 + vT) / sqrt(1 - (v/v0)^δ)
    (Treiber, Hennecke & Helbing 2000, Phys. Rev. E 62, 1805, eq. 3; Treiber &
    Kesting 2013, *Traffic Flow Dynamics*, sect. 11.3.4). On a ring of circumference C
    with N vehicles of length l the equilibrium gap is fixed by geometry,
    s = C/N - l, so the speed every vehicle must reach is v_e(s), the inverse of s_e.

    Densities 20–60 veh/km are linearly string-stable for these parameters (checked
    below from the kernel's own IDM derivatives, criterion f_s < (f_v² - f_l²)/2), so
    the initial, unevenly inserted platoons (4 entry points) must relax to the
    homogeneous state; 70 veh/km and above is unstable and forms stop-and-go waves.

    Tolerances (after 1200 s at dt = 0.5 s, float64): steady state is exact in the
    discretisation too (a = 0 makes the Euler update stationary), so the limits only
    bound the remaining relaxation transient, which at 30 veh/km (slowest mode) is
    ~1e-2 m/s (speed std) after 1200 s:
    - every vehicle's speed within 0.05 m/s (0.4 %) of v_e(C/N - l);
    - every vehicle's (gap, speed) on the s_e curve within 1 % of the gap;
    - spread of speeds (std) under 0.02 m/s: the state is homogeneous.
    """
    s = RingScenario(circumference_m=RING_C, segments=RING_SEGMENTS, vehicles=n_vehicles, vehicle=VEH,
                     car_following="IDM")
    horizon, dt = 1200.0, 0.5
    twin = TrafficTwin(ring_scenario(s, horizon), WorldBatch.replications(0, 1), dt=dt, horizon=horizon,
                       dtype=torch.float64)
    v0 = s.speed_mps * VEH.speed_factor
    gap_geom = RING_C / n_vehicles - VEH.length
    assert H.idm_string_stable(gap_geom, v0, VEH.min_gap, VEH.tau, VEH.accel, VEH.decel, VEH.delta)
    for _ in range(twin.n_steps):
        twin.step()
    gaps, v = _ring_state(twin)
    assert len(v) == n_vehicles, "every vehicle is on the ring"
    v_pred = H.idm_equilibrium_speed(gap_geom, v0, VEH.min_gap, VEH.tau, VEH.delta)
    s_pred_of_v = H.idm_equilibrium_gap(v, v0, VEH.min_gap, VEH.tau, VEH.delta)
    speed_err = np.abs(v - v_pred).max()
    gap_rel_err = (np.abs(gaps - s_pred_of_v) / s_pred_of_v).max()
    flow = 3600.0 * v.mean() / (gap_geom + VEH.length)
    print(f"\n[IDM ring] N={n_vehicles}/km gap={gap_geom:.3f} m: v_e={v_pred:.4f} m/s, measured "
          f"mean {v.mean():.4f} (std {v.std():.2e}); max |v - v_e| = {speed_err:.2e} m/s; "
          f"max |s - s_e(v)|/s_e = {gap_rel_err:.2e}; flow {flow:.0f} veh/h")
    assert np.abs(gaps.mean() - gap_geom) < 1e-6
    assert speed_err < 0.05
    assert gap_rel_err < 0.01
    assert v.std() < 0.02


def test_idm_equilibrium_is_a_fixed_point_of_the_kernel():
    """Exact check of the kernel's IDM: a(s_e(v), v, Δv=0) = 0 to round-off for v in (0, v0)."""
    v0, s0, T, a, b = 13.89, 2.5, 1.0, 2.6, 4.5
    v = torch.linspace(0.5, 13.5, 27, dtype=torch.float64)
    s = torch.as_tensor(H.idm_equilibrium_gap(v.numpy(), v0, s0, T), dtype=torch.float64)
    c = lambda x: torch.full_like(v, x)  # noqa: E731
    acc = kernels.idm_acceleration(v, c(v0), s, v, c(a), c(b), c(T), c(s0), torch.full_like(v, 4, dtype=torch.int64))
    assert acc.abs().max() < 1e-12
    # free road: a(v) = a (1 - (v/v0)^4)
    free = kernels.idm_acceleration(v, c(v0), torch.full_like(v, math.inf), v, c(a), c(b), c(T), c(s0),
                                    torch.full_like(v, 4, dtype=torch.int64))
    torch.testing.assert_close(free, a * (1 - (v / v0) ** 4), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# 2. saturation flow
N_QUEUE = 14
SAT_SIGNALS = SignalConfig(cycle_s=90.0, split_ns=0.6, yellow_s=3.0, all_red_s=2.0)  # EW red 0–53 s, green 53–85 s


def _queue_discharge(dt: float, worlds: int = 8):
    """A standing queue of N_QUEUE cars on the single-lane west approach, discharged at green.

    Returns (cross times relative to green onset [W, N_QUEUE], queued-at-green count [W],
    mean stops per vehicle before green). Queued (HCM): on the approach and has stopped
    at least once before the green.
    """
    s = JunctionScenario(lanes=1, flows_veh_h={"W": 100.0}, turning={"left": 0.0, "straight": 1.0, "right": 0.0},
                         signals=SAT_SIGNALS)  # default (heterogeneous) drivers
    horizon = 90.0
    base = junction_scenario(s, horizon)
    route = base.demand.flows[0].route
    assert route == ["W0_J0_0", "J0_0_E0"]
    demand = Demand(base.demand.vtypes, [Flow("queue", route, kind="fixed",
                                              departures=[1.0 * i for i in range(N_QUEUE)])])
    scen = TrafficScenario(base.network, demand, "saturation")
    prog = base.network.programs["J0_0"]
    names = [p.name for p in prog.phases]
    green_on = sum(p.duration for p in prog.phases[:names.index("EW green")])
    twin = TrafficTwin(scen, WorldBatch.replications(0, worlds), dt=dt, horizon=horizon, dtype=torch.float64)
    L = base.network.edges[route[0]].length
    W = twin.W
    cross = np.full((W, twin.S), np.nan)
    halted_at_green = None
    for _ in range(twin.n_steps):
        t = twin.time_s
        st = twin.state
        if abs(t - green_on) < 1e-9:
            on_app = (st.status == RUNNING) & (st.route_pos == 0)
            # IDM closes up on a queue asymptotically: the last car may still creep (< 0.5 m/s)
            queued = on_app & ((st.stops >= 1) | (st.speed < 0.5))
            halted_at_green = queued.sum(1).numpy()
            stops_before_green = float(st.stops[st.status != WAITING].double().mean())
        rp0, x0, s0 = st.route_pos.clone(), st.pos.clone(), st.status.clone()
        twin.step()
        st = twin.state
        c = (s0 == RUNNING) & (rp0 == 0) & ((st.route_pos == 1) | (st.status == ARRIVED))
        if c.any():
            w, k = c.nonzero(as_tuple=True)
            tau = (L - x0[w, k]) / st.speed[w, k]  # front reaches the stop line inside the step
            cross[w.numpy(), k.numpy()] = (t + tau).numpy()
    real = (twin.pop.flow >= 0).numpy()  # slots may be padded past the last vehicle
    assert (real.sum(1) == N_QUEUE).all()
    return cross[real].reshape(W, N_QUEUE) - green_on, halted_at_green, stops_before_green


@pytest.mark.parametrize("dt", [1.0, 0.5, 0.2])
def test_saturation_flow_in_published_range(dt):
    """Queue discharge at green gives a saturation flow inside the published range.

    Method: HCM 2010 ch. 31 (HCM 6th ed. ch. 31) field measurement of saturation
    flow: the saturation headway is the mean headway of queued vehicles after the
    4th, h_s = (t_n - t_4) / (n - 4), measured at the stop line; s = 3600 / h_s.
    Here: a queue of 14 cars (all stopped before green onset), default
    heterogeneous drivers (speed_dev 0.1, param_cv 0.1, SUMO IDM defaults), 8
    replications; crossing times interpolated inside the step.

    Reference figures: base saturation flow 1,900 pc/h/ln (HCM 2010 ch. 18, eq. 18-5;
    HCM 6th ed. ch. 19; 1,750 pc/h/ln where the area population is under 250,000).
    Measured through-lane values in practice lie roughly between 1,600 and 2,000
    veh/h/ln (the HCM base ± ~15 %, the range the HCM's adjustment factors span for
    ordinary lanes). Tolerance: the replication mean and every single world must lie
    in [1,600, 2,000] veh/h/ln; the default SUMO-IDM parameters (a 2.6, T 1.0 s,
    s0 2.5 m, l 5 m) have a steady-flow capacity max v/(s_e(v)+l) ~ 1,850 veh/h, an
    upper bound for discharge, so a figure above 2,000 would mean a kernel error.
    Headways must also be stationary: the first vehicle's start-up is slower than
    the saturation headway (start-up lost time exists), and no discharge headway is
    below 1.2 s (no physically impossible flows > 3,000 veh/h).
    """
    cross, halted, _ = _queue_discharge(dt)
    assert (halted == N_QUEUE).all(), f"a queue of {N_QUEUE} stopped cars at green onset, got {halted}"
    assert np.isfinite(cross).all(), "every queued vehicle discharges during the green"
    assert (cross >= -1e-9).all(), "nobody crosses the stop line before green"
    t = np.sort(cross, axis=1)
    hs = H.hcm_saturation_headway(t, first=4)
    sat = 3600.0 / hs
    mean_sat = 3600.0 / hs.mean()
    head = np.diff(t, axis=1)
    print(f"\n[saturation] dt={dt:g} s: saturation headway {hs.mean():.3f} s -> {mean_sat:.0f} veh/h/ln "
          f"(worlds {sat.min():.0f}–{sat.max():.0f}); mean headways by position "
          f"{np.round(head.mean(0), 2).tolist()}")
    assert 1600.0 <= mean_sat <= 2000.0
    assert ((sat >= 1600.0) & (sat <= 2000.0)).all()
    assert head[:, 4:].min() > 1.2
    assert head[:, 0].mean() > hs.mean()


@pytest.mark.parametrize("dt", [1.0, 0.5, 0.25])
def test_joining_a_queue_is_one_stop(dt):
    """A car that drives up to a standing queue and waits there stops once, not repeatedly.

    Physically (and in SUMO, whose IDM integrates in 0.25 s sub-steps), a car
    approaching a stopped queue decelerates smoothly and halts once. The
    ``stops`` counter feeds the ``mean_stops`` metric, so repeated stop-go-stop
    cycles inflate it. Tolerance: mean <= 1.1 stops per car before green (at fine
    dt a car occasionally creeps forward once more as the queue compacts). At
    dt = 1 s the queue's front vehicle, braking for the red light as SUMO's IDM
    does (kernels rule 5, ``stopSpeed``), stands still once short of its stopping
    point and creeps up to it (SUMO's front vehicle too, in 3 of 4 seeds:
    tests/traffic_sumo/test_stop_speed.py); the cars already standing behind it
    move up with it and stop once more: 1.24 stops per car here, hence 1.3.
    """
    _, _, stops = _queue_discharge(dt)
    print(f"\n[queue stops] dt={dt:g} s: {stops:.2f} stops per car before green")
    assert stops <= (1.3 if dt == 1.0 else 1.1)


# ---------------------------------------------------------------------------------------------
# 3. conservation
def _run_checked(twin, gaps: bool = False):
    """Run to the horizon, checking after every step that no vehicle is lost or teleported.

    - status only moves forward (waiting -> running -> arrived);
    - nothing runs or arrives before its departure time;
    - a vehicle arrives only from the last edge of its route;
    Returns the smallest bumper gap seen between consecutive cars of one lane
    (checked separately, see :func:`test_no_overlap_where_lanes_merge`).
    """
    veh = H.veh_columns(twin)
    route_len = twin.routes_cpu.route_len[twin.pop.flow.clamp(min=0)]
    depart = twin.depart
    min_gap = math.inf
    prev = {k: getattr(twin.state, k).clone() for k in ("status", "route_pos")}
    for _ in range(twin.n_steps):
        twin.step()
        st = twin.state
        status = st.status
        assert (status >= prev["status"]).all(), "a vehicle went back to an earlier status"
        started = status != WAITING
        assert (depart[started] <= twin.time_s + 1e-9).all(), "a vehicle was inserted before its departure"
        new_arr = (status == ARRIVED) & (prev["status"] != ARRIVED)
        assert (prev["route_pos"][new_arr] == route_len[new_arr] - 1).all(), "arrival from a non-final edge"
        g = H.lane_gaps(st, veh, twin.net.n_lanes) if gaps else torch.empty(0)
        if g.numel():
            min_gap = min(min_gap, float(g.min()))
        prev = {k: getattr(st, k).clone() for k in ("status", "route_pos")}
    return min_gap


def _check_conservation(twin, res):
    w = res.worlds
    assert (w["vehicles_loaded"] == w["vehicles_inserted"] + w["vehicles_waiting_to_insert_end"]).all()
    assert (w["vehicles_inserted"] == w["throughput_veh"] + w["vehicles_in_network_end"]).all()
    trips = res.tables["trips"]
    # the slot state itself: every loaded vehicle is in exactly one place
    st = twin.state.status
    loaded = (torch.isfinite(twin.depart) & (twin.depart <= twin.time_s + 1e-9) & (twin.pop.flow >= 0)).sum(1)
    assert ((st == WAITING) & (twin.depart > twin.time_s + 1e-9) & (twin.pop.flow >= 0)).sum(1).add(loaded).eq(
        (twin.pop.flow >= 0).sum(1)).all()
    for _, row in w.iterrows():
        t = trips[trips["world"] == row["world"]]
        n = t["status"].value_counts()
        assert len(t) == row["vehicles_loaded"] == int(loaded[int(row["world"])])
        assert n.get("arrived", 0) == row["throughput_veh"] == int((st[int(row["world"])] == ARRIVED).sum())
        assert n.get("running", 0) == row["vehicles_in_network_end"] == int((st[int(row["world"])] == RUNNING).sum())
        assert n.get("waiting", 0) == row["vehicles_waiting_to_insert_end"]
        assert t["vehicle_id"].is_unique
        done = t[t["status"] == "arrived"]
        assert done["insert_s"].notna().all() and done["arrive_s"].notna().all()
        assert t.loc[t["status"] == "waiting", "insert_s"].isna().all()
        assert (t.loc[t["status"] == "running", "arrive_s"].isna()).all()
        assert (done["insert_s"] >= done["depart_s"] - 1e-9).all()
    # no teleporting: each trip takes at least (route length - car length) at the fastest desired speed
    vmax = float((twin.net.lane_speed.max() * twin.drivers.speed_factor.max()).item())
    done = trips[trips["status"] == "arrived"]
    lower = (done["route_length_m"] - 5.0) / vmax - twin.dt
    assert (done["travel_time_s"] >= lower).all()
    # the time series agrees at the horizon
    ts = res.tables["timeseries"]
    last = ts[ts["time_s"] == ts["time_s"].max()].sort_values("world")
    assert (last["vehicles_in_network"].to_numpy() == w["vehicles_in_network_end"].to_numpy()).all()
    assert (last["waiting_to_insert"].to_numpy() == w["vehicles_waiting_to_insert_end"].to_numpy()).all()
    arrivals = ts.groupby("world")["arrivals"].sum().sort_index().to_numpy()
    assert (arrivals == w["throughput_veh"].to_numpy()).all()


def test_conservation_default_grid():
    """Default ``traffic`` grid (4×4, 2 lanes, dt 1 s), 900 s, 3 replications.

    loaded = inserted + waiting to insert; inserted = arrived + in network; the
    trips table, the slot states and the time series all agree with the metrics
    in every world; no vehicle is lost, duplicated, goes back to an earlier
    status, arrives from a non-final edge, or arrives faster than free flow allows. All identities are exact
    (integer counts).
    """
    horizon = 900.0
    twin = TrafficTwin(grid_scenario(GridScenario(), horizon), WorldBatch.replications(0, 3), dt=1.0,
                       horizon=horizon)
    _run_checked(twin)
    res = twin.results()
    _check_conservation(twin, res)
    w = res.worlds
    assert (w["throughput_veh"] > 0).all()
    print(f"\n[conservation grid] loaded {w['vehicles_loaded'].tolist()}, arrived {w['throughput_veh'].tolist()}, "
          f"in network {w['vehicles_in_network_end'].tolist()}, waiting {w['vehicles_waiting_to_insert_end'].tolist()}"
          )


def test_conservation_congested_grid_nothing_dropped():
    """Congested 2×2 grid at 8× demand, 360 s, 2 replications: entries back up.

    Insertion must wait (DESIGN.md sect. 6: never silently drop a vehicle): at the
    horizon every world has vehicles still waiting to insert, and the identities of
    :func:`test_conservation_default_grid` hold exactly.
    """
    horizon = 360.0
    s = GridScenario(rows=2, cols=2, demand_scale=8.0)
    twin = TrafficTwin(grid_scenario(s, horizon), WorldBatch.replications(0, 2), dt=1.0, horizon=horizon)
    _run_checked(twin)
    res = twin.results()
    _check_conservation(twin, res)
    w = res.worlds
    print(f"\n[conservation congested] loaded {w['vehicles_loaded'].tolist()}, arrived {w['throughput_veh'].tolist()},"
          f" in network {w['vehicles_in_network_end'].tolist()}, waiting "
          f"{w['vehicles_waiting_to_insert_end'].tolist()}")
    assert (w["vehicles_waiting_to_insert_end"] > 10).all()


def test_no_overlap_where_lanes_merge():
    """No two cars on a lane ever overlap (bumper gap >= -1e-3 m), also where lanes merge.

    2×2 grid, 2 lanes, 8× demand, first 120 s, dt 1 s: queues at every stop line,
    and at green both lanes of an approach discharge at once into the next edge.
    Tolerance 1 mm: far above float32 round-off of positions (< 1e-4 m), far below
    any real overlap.
    """
    horizon = 120.0
    twin = TrafficTwin(grid_scenario(GridScenario(rows=2, cols=2, demand_scale=8.0), horizon),
                       WorldBatch.replications(0, 2), dt=1.0, horizon=horizon)
    min_gap = _run_checked(twin, gaps=True)
    print(f"\n[merge overlap] min bumper gap {min_gap:.3f} m")
    assert min_gap >= -1e-3


# ---------------------------------------------------------------------------------------------
# 4. spillback
BLOCK_M, APPROACH_M, VIA_STRAIGHT = 100.0, 200.0, 14.0
RED_UNTIL = 150.0


def _spillback_twin(dtype, worlds=3):
    """W0 -> J0_0 -> (100 m block) -> J0_1 -> E0, one lane; J0_0 always green EW, J0_1 red until 150 s.

    Demand 1,800 veh/h (periodic) from W0 straight through: the block fills and
    must back up onto the approach.
    """
    net = signalized_lattice(1, 2, BLOCK_M, APPROACH_M, 1, 1, 13.89, SignalConfig(cycle_s=60.0))
    ew = net.programs["J0_0"].phases[3].state
    assert net.programs["J0_0"].phases[3].name == "EW green"
    net.programs["J0_0"].phases = [Phase(400.0, ew, "EW green")]
    net.programs["J0_1"].phases = [Phase(RED_UNTIL, "r" * len(ew), "red"), Phase(250.0, ew, "EW green")]
    route = ["W0_J0_0", "J0_0_J0_1", "J0_1_E0"]
    via = {c.from_edge: c.via_length for c in net.connections if c.to_edge in route[1:] and c.from_edge in route}
    assert via == {"W0_J0_0": VIA_STRAIGHT, "J0_0_J0_1": VIA_STRAIGHT}
    demand = Demand({"car": VehicleType()}, [Flow("we", route, rate=1800.0, begin=0.0, end=240.0, kind="periodic")])
    twin = TrafficTwin(TrafficScenario(net, demand, "spillback"), WorldBatch.replications(0, worlds), dt=0.5,
                       horizon=240.0, dtype=dtype)
    # corridor coordinate of each lane's start (junction paths included)
    off = {"W0_J0_0_0": 0.0, "J0_0_J0_1_0": APPROACH_M + VIA_STRAIGHT,
           "J0_1_E0_0": APPROACH_M + VIA_STRAIGHT + BLOCK_M + VIA_STRAIGHT}
    lane_off = torch.zeros(twin.net.n_lanes, dtype=torch.float64)
    for lid, x in off.items():
        lane_off[H.lane_index(twin, lid)] = x
    return twin, lane_off


def _spillback_trace(dtype):
    twin, lane_off = _spillback_twin(dtype)
    up, mid = H.lane_index(twin, "W0_J0_0_0"), H.lane_index(twin, "J0_0_J0_1_0")
    length = twin.drivers.length.reshape(twin.W, twin.S).double()
    rec = {"min_gap": math.inf, "mid_all": 0, "mid_on_lane": 0, "mid_min_pos": math.inf, "up_front_max": -math.inf,
           "up_queue_at_red_end": None, "crossed_J0_1_during_red": 0}
    for _ in range(twin.n_steps):
        twin.step()
        st = twin.state
        run = st.status == RUNNING
        # no overlap anywhere along the corridor, junction paths included
        x = torch.where(run, lane_off[st.lane] + st.pos.double(), torch.nan)
        for w in range(twin.W):
            k = run[w].nonzero().squeeze(1)
            if k.numel() > 1:
                xs, o = torch.sort(x[w, k])
                gaps = xs[1:] - length[w, k[o[1:]]] - xs[:-1]
                rec["min_gap"] = min(rec["min_gap"], float(gaps.min()))
        on_mid = run & (st.lane == mid)
        rec["mid_all"] = max(rec["mid_all"], int(on_mid.sum(1).max()))
        rec["mid_on_lane"] = max(rec["mid_on_lane"], int((on_mid & (st.pos >= 0)).sum(1).max()))
        if on_mid.any():
            rec["mid_min_pos"] = min(rec["mid_min_pos"], float(st.pos[on_mid].min()))
        on_up = run & (st.lane == up)
        if on_up.any():
            rec["up_front_max"] = max(rec["up_front_max"], float(st.pos[on_up].max()))
        if twin.time_s <= RED_UNTIL:
            rec["crossed_J0_1_during_red"] += int((run & (st.route_pos == 2)).sum())
        if abs(twin.time_s - RED_UNTIL) < 1e-9:
            rec["up_queue_at_red_end"] = (on_up & (st.speed < kernels.STOP_SPEED)).sum(1).numpy()
    return twin, rec


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spillback_queue_backs_up_without_overlap(dtype):
    """A 100 m block held at red fills; traffic queues back across the green upstream junction.

    - no overlap anywhere on the corridor at any step, junction paths included:
      bumper gap >= -1e-3 m (float32 positions of ~500 m carry ~3e-5 m of
      round-off; 1 mm is far above that and far below any real overlap);
    - nothing passes the red at J0_1;
    - the block's lane proper (fronts at pos >= 0) never holds more than
      floor(L / (length + min_gap)) + 1 = 14 cars (jam spacing 7.5 m);
    - upstream vehicles stop before the upstream stop line (front <= 200 m) and at
      the end of the red a standing queue (>= 10 halted cars) waits on the approach
      although J0_0 shows green the whole time: the blockage spilled back.
    """
    twin, rec = _spillback_trace(dtype)
    bound = math.floor(BLOCK_M / (5.0 + 2.5)) + 1
    print(f"\n[spillback {dtype}] max cars on block lane {rec['mid_all']} (fronts >= 0: {rec['mid_on_lane']}, "
          f"bound {bound}), min pos on block {rec['mid_min_pos']:.2f} m, upstream queue at red end "
          f"{rec['up_queue_at_red_end'].tolist()}, min bumper gap {rec['min_gap']:.4f} m")
    assert rec["min_gap"] >= -1e-3
    assert rec["crossed_J0_1_during_red"] == 0
    assert rec["mid_on_lane"] <= bound
    assert rec["up_front_max"] <= APPROACH_M + 1e-4
    assert (rec["up_queue_at_red_end"] >= 10).all()
    res = twin.results()
    w = res.worlds
    assert (w["vehicles_loaded"] == w["vehicles_inserted"] + w["vehicles_waiting_to_insert_end"]).all()
    assert (w["vehicles_inserted"] == w["throughput_veh"] + w["vehicles_in_network_end"]).all()


def test_spillback_no_vehicle_enters_a_full_edge():
    """DESIGN.md sect. 6: a vehicle enters the next edge only when there is room.

    When the 100 m block is jammed (jam spacing length + min_gap = 7.5 m), no more
    than floor(L / 7.5) + 1 = 14 cars may be assigned to its lane, and none may wait
    inside the junction (position < 0 on the block lane means the car is on the
    junction path, past the upstream stop line). Kernel rule 4 keeps the junction
    clear by the room behind the lane's last standing vehicle, less the cars
    rolling up behind it (SUMO's space till the last standing vehicle); with a
    rule on the halted tail only, a car entered behind a still-rolling tail and
    16 were assigned, two stopped inside the junction at ~ -6 and ~ -14 m.
    """
    _, rec = _spillback_trace(torch.float64)
    bound = math.floor(BLOCK_M / (5.0 + 2.5)) + 1
    assert rec["mid_all"] <= bound


# ---------------------------------------------------------------------------------------------
# 5. Insertion speed (SUMO's departSpeed)
@pytest.mark.parametrize("compile", [False, None])
def test_insertion_speed_follows_depart_speed(compile):
    """A vehicle enters an empty road at its ``depart_speed`` (SUMO's departSpeed, e.g. 0),
    at most its desired speed; None (the twin's own scenarios, SUMO's "max") enters as fast as that allows."""
    speeds = {}
    for label, dsp in (("zero", 0.0), ("three", 3.0), ("max", None), ("above_desired", 99.0)):
        scen = H.chain_scenario("insert", {"a": 400.0, "b": 400.0}, ["a", "b"])
        for f in scen.demand.flows:
            f.depart_speed = dsp
            f.departures = [0.0]
        tw = TrafficTwin(scen, WorldBatch.replications(3, 1), dt=1.0, horizon=5.0, compile=compile)
        tw.step()  # inserted in step 0 at its insertion speed, then moved one step by IDM
        first = int(torch.nonzero(tw.state.insert_step[0] == 0)[0])
        v0 = float(torch.minimum(tw.net.lane_speed[0] * tw.drivers.speed_factor[0, first],
                                 tw.drivers.max_speed[0, first]))
        # one IDM step from the insertion speed: a free road, so the speed rises by at most accel * dt
        speeds[label] = (float(tw.state.speed[0, first]), v0, float(tw.drivers.accel[0, first]))
    v, v0, acc = speeds["zero"]
    assert 0.0 < v <= acc + 1e-6  # from standstill
    v, v0, acc = speeds["three"]
    assert 3.0 < v <= 3.0 + acc + 1e-6
    v, v0, acc = speeds["max"]
    assert v == pytest.approx(v0, abs=1e-4)  # entered at its desired speed and kept it
    assert speeds["above_desired"][0] == pytest.approx(speeds["max"][0], abs=1e-6)  # capped by the desired speed


@pytest.mark.parametrize("compile", [False, None])
def test_inserted_at_the_lanes_mean_speed_or_later(compile):
    """SUMO's departSpeed="avg" (its default in 1.28): a vehicle enters an empty lane at its desired speed, and an
    occupied one at the lane's mean speed, waiting (SUMO does not lower that speed there) until the gap to the
    lane's last vehicle allows it; "max" enters at once, as fast as that gap allows."""
    entered = {}
    for label, dsp in (("avg", "avg"), ("max", None)):
        scen = H.chain_scenario("insert", {"a": 400.0, "b": 400.0}, ["a", "b"])
        scen.demand.flows = scen.demand.flows[:1]
        scen.demand.flows[0].depart_speed, scen.demand.flows[0].departures = dsp, [0.0, 1.0]
        tw = TrafficTwin(scen, WorldBatch.replications(3, 1), dt=1.0, horizon=6.0, compile=compile)
        tw.step()
        first = int(torch.nonzero(tw.state.insert_step[0] == 0)[0])
        v_first = float(tw.state.speed[0, first])
        while int((tw.state.insert_step[0] >= 0).sum()) < 2:
            tw.step()
        second = int(torch.nonzero(tw.state.insert_step[0] > 0)[0])
        entered[label] = (v_first, int(tw.state.insert_step[0, second]), float(tw.state.speed[0, second]))
    v_first, step, v_second = entered["avg"]
    assert v_first > 12.0  # an empty lane: its limit (13.9 m/s) times the driver's speed factor
    assert step == 2 and v_second > 0.8 * v_first  # waited a step for room, then entered moving
    v_first, step, v_second = entered["max"]
    assert step == 1 and v_second < 0.8 * v_first  # at once, at what the short gap allows
