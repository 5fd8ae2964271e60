"""The traffic twin: a Mesa model over a batch of worlds, stepped by :mod:`.kernels`.

Signal controllers and detectors are Mesa agents placed on a
``mesa.discrete_space.Network`` of junctions. Vehicles are a vectorized
population: per-slot tensor columns ``[W, S]`` (``twin.state``, a
:class:`~twins.traffic.state.VehicleState`; ``twin.drivers``, their :class:`~twins.traffic.state.Drivers`), with
read-only per-vehicle views (:meth:`TrafficTwin.vehicle`). Mesa's ``DataCollector`` collects
network aggregates and detector readings once per interval.

Per-world parameters an intervention may set in ``WorldBatch.params``:
``signal_durations`` [W, P, K] phase durations (s), ``signal_offsets`` [W, P] (s);
``route_extra_edges`` [W, X, M] and ``route_of_flow`` [W, F] (rerouting, road closures);
``flow_retention`` [W, F] (demand thinning); ``max_pressure`` [W, P] with its controller
settings (adaptive signals, :mod:`twins.traffic.control`); ``bus_headway_s`` and
``bus_offset_s`` [W, lines] (public transport, :mod:`twins.traffic.transit`).

With bus lines in the scenario, buses are vehicles like the cars (flows after the
scenario's, routes after every other route row); the vehicle metrics (travel time,
delay, throughput, ...) then describe the cars only, and the ``bus_*`` metrics, the
``mode`` groups (``car_drivers`` / ``bus_passengers``) and the ``bus_line`` groups are added.

Where the twin's parts live: :mod:`.agents` (the Mesa agents and vehicle views), :mod:`.outcomes` (trips,
metrics, groups, the edge table, figures) and this module: building the worlds from their parameters
(:meth:`TrafficTwin.read_params`) and the step's dispatch to the kernels (tensor, native, compiled) with what
the step owns around them (the vehicle window, bus stops, routing at insertion, teleporting, max pressure).
It is longer than ~500 lines for that reason: the step and the state it reads and writes change together.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import mesa
import numpy as np
import pandas as pd
import torch
from mesa.agent import AgentSet
from mesa.discrete_space import Network

from twins.core import noise
from twins.core.errors import ConfigError
from twins.core.twin import Twin
from twins.core.worlds import WorldBatch

from . import kernels, native, routing, signals, transit
from .agents import BusLineAgent, BusStopAgent, Detector, SignalController, Vehicle, VehicleView
from .tables import build_population, network_tables, route_tables, concat_routes, route_links
from .demand import Demand
from .outcomes import METRICS, SERIES, TrafficOutcomes
from .state import Drivers, StepSettings, StopTables, VehicleState
from .network import RoadNetwork

@dataclass
class TrafficScenario:
    """Everything a traffic world is made of (plain Python, device-free)."""

    network: RoadNetwork
    demand: Demand
    name: str = "traffic"
    begin: float = 0.0
    notes: list[str] = field(default_factory=list)
    bus_lines: list[transit.BusLine] = field(default_factory=list)
    # the car-following model of every vehicle: "IDM" or SUMO's default "Krauss" (kernels rule 9)
    car_following: str = "IDM"
    # kernels rule 11: vehicles change lanes along an edge (strategic, speed gain, cooperation) and enter the lanes
    # their connection leads to, as in SUMO; False: each keeps the lane it chose at the junction
    lane_changing: bool = False
    # static: every vehicle drives its flow's route; insertion: a flow marked ``reroute`` (SUMO's trips) is routed
    # when each vehicle departs, on that world's current travel times (twins.traffic.routing), as in SUMO
    routing: str = "static"
    # kernels rule 12: a vehicle that has stood at the front of its lane for longer than this (s) is teleported
    # along its route, as SUMO's --time-to-teleport (default 300 s) ends gridlocks; None or <= 0: never
    time_to_teleport_s: float | None = kernels.TIME_TO_TELEPORT_S


def window_bucket(lo: int, hi: int, S: int, smallest: int = 1024) -> tuple[int, int]:
    """A window of ``S`` slots that holds ``[lo, hi)`` and whose length is a power of two (at least ``smallest``, at
    most ``S``), starting on a multiple of 16: a run meets a handful of window shapes, so a compiled step or a CUDA
    graph is built once per shape. The slots it adds are waiting and not due, or arrived in every world: the
    kernels leave them as they are (the same numbers)."""
    size = max(smallest, 1 << max(hi - lo // 16 * 16 - 1, 0).bit_length())
    if size >= S:
        return 0, S
    start = min(lo // 16 * 16, (S - size) // 16 * 16)
    return (start, start + size) if start + size >= hi else (start, S)


class TrafficTwin(TrafficOutcomes, Twin):
    metrics = METRICS

    def __init__(self, scenario: TrafficScenario, worlds: WorldBatch, *, dt: float = 1.0,
                 horizon: float = 3600.0, device="cpu", dtype=torch.float32,
                 interval_s: float = 60.0, trajectory_every: int = 0, idm_substep_s: float = 0.25,
                 compile: bool | None = False, signal_control: str | None = None):
        super().__init__(worlds, dt=dt, horizon=horizon, device=device, dtype=dtype)
        # what the scenario fixes: the network tables, the bus lines, the step's settings and the Mesa agents;
        # what the worlds' parameters decide (routes, population, signal plans) is read by read_params()
        self.scenario = scenario
        self.begin = float(scenario.begin)
        self.fused_idm = compile is True  # torch.compile of IDM in the tensor kernels (CUDA, or with bus stops)
        # the tensor kernels without data-dependent shapes (no nonzero, no host read for it) on CUDA: the same
        # numbers (tests/traffic/test_fixed_shape.py); on a CPU the index subsets are faster
        self.fixed_shape = self.device.type == "cuda"
        net, demand = scenario.network, scenario.demand
        demand.validate(net.edges)
        self.net_cpu = network_tables(net)
        cnet = self.net_cpu.to(self.device, dtype)
        self.net = cnet
        lines = self.bus_lines = list(getattr(scenario, "bus_lines", None) or [])
        self._transit_cpu = transit.transit_tables(lines, net, "cpu", dtype) if lines else None
        self.transit = self._transit_cpu
        self.flow_ids = [f.id for f in demand.flows]
        self.interval_steps = max(1, int(round(interval_s / dt)))
        self.trajectory_every = int(trajectory_every)
        self.substeps = max(1, int(np.ceil(dt / idm_substep_s - 1e-9)))
        deltas = {float(demand.vtypes[f.vtype].delta) for f in demand.flows} | {float(l.vtype.delta) for l in lines}
        self.shared_delta = int(deltas.pop()) if len(deltas) == 1 else None
        self.insert_rounds = min(self.net_cpu.max_lanes, 3)
        cf = getattr(scenario, "car_following", "IDM")
        if cf not in kernels.CF_MODELS:
            raise ConfigError("scenario.car_following", cf, " or ".join(kernels.CF_MODELS))
        self.car_following, self.cf = cf, kernels.CF_MODELS[cf]
        self.lane_changing = bool(getattr(scenario, "lane_changing", False))
        ttt = getattr(scenario, "time_to_teleport_s", kernels.TIME_TO_TELEPORT_S)
        if ttt is not None and not math.isfinite(float(ttt)):
            raise ConfigError("scenario.time_to_teleport_s", ttt, "a finite number of seconds (<= 0 or null: never)")
        # kernels rule 12: steps a front vehicle may stand before it is teleported (None: never)
        self.teleport_steps = int(round(float(ttt) / dt)) if ttt is not None and float(ttt) > 0 else None
        self._teleport_edge_m = self.net.lane_length[self.net.edge_first_lane]  # each edge's length (first lane)
        # scenario.routing=insertion: trips are routed when they depart, on each world's current travel times
        self.routing = getattr(scenario, "routing", "static")
        max_via = float(cnet.conn_via.max()) if cnet.conn_via.numel() else 0.0
        self.span = float(cnet.lane_length.max()) + max_via + 1000.0
        # compute.compile on the CPU: the whole step as one compiled loop per world (twins.traffic.native;
        # built here, so that with compile=true a missing compiler is an error before the run; null: where
        # it builds). With bus stops, and on CUDA, compile=true fuses IDM in the tensor kernels instead
        self._native = compile is not False and self.device.type == "cpu" and not lines
        if self._native and compile is None:
            self._native = native.available(warn=True)
        elif self._native:
            native.load()
        self.kernel = "native" if self._native else "tensor+torch.compile" if self.fused_idm else "tensor"
        self._build_agents()
        # the signal controls, stepped in order before the vehicles move (twins.traffic.signals): the scenario's
        # programs, then the control scenario.signal_control names
        user = signals.control_class(signal_control)
        self.signal_controls = AgentSet([signals.ProgramControl(self)] + ([user(self)] if user else []),
                                        random=self.random)
        # Mesa's DataCollector, per world: at the close of every interval each model reporter gives one value per
        # world (a [W] array, or a scalar for all), and timeseries.parquet is its table (outcomes.series_table):
        # every model reporter is a column (a subclass or a notebook may build it with more). Detectors report
        # per world too
        self.datacollector = mesa.DataCollector(
            model_reporters={"time_s": lambda m: m.time_s,
                             **{k: (lambda m, k=k: m.interval[k]) for k in SERIES}},
            agent_reporters={
                "flow_veh_h": lambda a: a.flow_veh_h.copy() if isinstance(a, Detector) else None,
                "density_veh_km": lambda a: a.density_veh_km.copy() if isinstance(a, Detector) else None,
            },
        )
        self.read_params()

    def read_params(self) -> None:
        """Build what the worlds' parameters (``worlds.params``) decide: the route table (and the alternative
        routes an intervention appended), each world's vehicle population (demand response, bus timetables),
        every vehicle's parameters, the state at time 0 and the signal plans. The twin calls it once when it is
        built; an intervention that writes such parameters calls it again (before the first step). The
        exogenous noise is a pure function of its keys, so the worlds draw exactly what they would have drawn
        had they been built with these parameters."""
        from .tables import route_edge_lists, slot_routes, thin_population  # per-world routes and demand

        if self.step_index != 0:
            raise RuntimeError("the worlds' parameters are read before the twin's first step; this twin has "
                               f"taken {self.step_index} steps")
        worlds, wp, dtype, horizon = self.worlds, self.worlds.params, self.dtype, self.horizon
        net, demand, lines = self.scenario.network, self.scenario.demand, self.bus_lines
        cnet = self.net
        # route table: one row per flow, then the alternative routes an intervention appended
        # (worlds.params["route_extra_edges"] [W, X, M] edge indices, the same in every world)
        route_lists = [f.route for f in demand.flows]
        route_names = [f"flow[{f.id}]" for f in demand.flows]
        if "route_extra_edges" in wp and wp["route_extra_edges"].numel():
            extra = route_edge_lists(self.net_cpu.edge_ids, wp["route_extra_edges"][0])
            route_lists += extra
            route_names += [f"route_extra_edges[{i}]" for i in range(len(extra))]
        # bus lines: their routes go last (the rows before keep their numbers)
        bus_row0 = len(route_lists)
        route_lists += [list(l.route) for l in lines]
        route_names += [f"bus_lines[{l.id}].route" for l in lines]
        self.routes_cpu = route_tables(net, route_lists, route_names)
        self.transit = self._transit_cpu
        if lines:
            self._curbside_stops(bus_row0)
        route_of_flow = wp.get("route_of_flow")  # [W, F] row of the route table per world and flow
        if route_of_flow is not None and (tuple(route_of_flow.shape) != (worlds.size, len(demand.flows))
                                          or bool((route_of_flow < 0).any())
                                          or bool((route_of_flow >= len(route_lists)).any())):
            raise ConfigError("worlds.params.route_of_flow", tuple(route_of_flow.shape),
                              f"a [W={worlds.size}, F={len(demand.flows)}] tensor of route rows "
                              f"in [0, {len(route_lists)})")
        self._set_routes(self.routes_cpu)

        pop = build_population(demand, worlds.seed, worlds.replication.cpu())
        # demand response (worlds.params["flow_retention"] [W, F]): a vehicle travels iff its
        # CHOICE-stream draw is below its flow's retention; the others become empty slots
        pop = thin_population(pop, wp.get("flow_retention"), worlds.seed, worlds.replication.cpu())
        F = len(demand.flows)
        if lines:  # buses join the population after the cars' thinning (a charge never removes a bus)
            self.bus_headway = self._per_line(wp, "bus_headway_s", [l.headway_s for l in lines], positive=True)
            self.bus_offset = self._per_line(wp, "bus_offset_s", [l.offset_s for l in lines])
            end = torch.tensor([l.end_s if l.end_s is not None else self.begin + horizon for l in lines],
                               dtype=torch.float64)
            self.bus_dispatch = transit.dispatch_times(self.bus_headway, self.bus_offset, end.expand(worlds.size, -1))
            first_id = sum(f.capacity() for f in demand.flows)
            pop = transit.merge_populations(pop, transit.bus_population(self.bus_dispatch, F, first_id))
            route_of_flow = torch.cat([
                route_of_flow.to(torch.int64) if route_of_flow is not None
                else torch.arange(F, dtype=torch.int64).expand(worlds.size, F),
                (bus_row0 + torch.arange(len(lines), dtype=torch.int64)).expand(worlds.size, len(lines))], 1)
        W, S = pop.flow.shape
        self.S = S
        dev = self.device
        self.pop = pop
        flow = pop.flow.to(dev)
        # per-vehicle parameters from the vehicle type and driver noise keyed by (replication, vehicle id), for
        # every world at once (the noise is elementwise: a world's numbers never depend on the batch)
        rep = self.worlds.replication.unsqueeze(1)
        vid = pop.vehicle_id.to(dev)
        # the route row of each vehicle's flow, and its driver parameters
        self.drivers = Drivers(route=slot_routes(flow, route_of_flow),
                               **self._vehicle_params(demand, lines, flow, rep, vid, dtype))
        # Krauss drivers dawdle (rule 9) where any sigma is positive: then one keyed draw per vehicle and step
        self.dawdles = self.cf == kernels.KRAUSS and bool((self.drivers.sigma > 0).any())
        # some vehicles enter at their lane's mean speed (departSpeed "avg", rule 3): the step sums lanes' speeds then
        self.depart_avg = bool((self.drivers.depart_speed < 0).any())
        self._rep_col, self._vid = rep, vid  # the keys of the dawdling draws
        self.depart = pop.depart.to(dev)
        # each slot's earliest departure over the worlds (nondecreasing, as every world's departures are): the
        # window's end is found on the host, without reading the device every step
        self._depart_first = pop.depart.min(0).values.cpu().numpy() if W else np.zeros(S)
        zeros = lambda dt_: torch.zeros(W, S, dtype=dt_, device=dev)  # noqa: E731
        none = lambda: torch.full((W, S), -1, dtype=torch.int64, device=dev)  # noqa: E731
        self.state = VehicleState(
            world=torch.arange(W, device=dev).unsqueeze(1).expand(W, S).contiguous(), status=zeros(torch.int64),
            lane=zeros(torch.int64), pos=zeros(dtype), speed=zeros(dtype), route_pos=zeros(torch.int64),
            insert_step=none(), arrive_step=none(), time_loss=zeros(dtype), stops=zeros(torch.int32),
            halted=zeros(torch.bool), depart=self.depart, leader=none(), conn=none())
        self._router = None
        if self.routing == "insertion" and any(f.reroute for f in demand.flows):
            if route_of_flow is not None:
                warnings.warn("scenario.routing=insertion is not applied in this run: an intervention sets the "
                              "flows' routes (route_of_flow), and routing at insertion would undo that",
                              stacklevel=3)
            else:
                self._init_router(demand, route_lists)
        if self.lane_changing:  # kernels rule 11: the slot a vehicle lets in (follows as a leader), -1: none;
            self.state.lc_yield = none()  # where it stops next step, +inf: anywhere
            self.state.lc_stop = torch.full((W, S), torch.inf, dtype=dtype, device=dev)
            self.state.lc_keep_right = zeros(dtype)  # LC2013's keep-right sum (<= 0; wants right below -2)
            self.state.lc_look_ahead_speed = zeros(dtype)  # LC2013's look-ahead speed (m/s)
        if lines:  # rule 7 of the kernel: each bus's next stop, its dwell left, its passengers on board
            tr = self.transit = type(self.transit)(**{k: v.to(dev) if isinstance(v, torch.Tensor) else v
                                                      for k, v in self.transit.__dict__.items()})
            line = (flow - F).clamp(min=0)
            self.state.next_stop = torch.where(flow >= F, tr.first_stop[line], -1)
            self.state.dwell = zeros(dtype)
            self.state.load = zeros(torch.int64)
            self.pax_arrivals = transit.passenger_arrivals(tr, worlds.seed, worlds.replication, self.begin,
                                                           self.begin + horizon).to(dev)
            self.pax_cum = transit.cumulative(self.pax_arrivals)
            Z = len(tr.stop_ids)
            self.pax_served = torch.zeros(W, Z, dtype=torch.int64, device=dev)
            self.pax_wait = torch.zeros(W, Z, dtype=torch.float64, device=dev)  # summed waits of the boarded (s)
            self._visits: list[pd.DataFrame] = []
        # signal plans: the scenario's programs, in every world where worlds.params sets none (properties below)
        P = len(cnet.program_ids)
        self._plan_durations = cnet.phase_durations.unsqueeze(0).expand(W, -1, -1).clone()
        self._plan_offsets = cnet.program_offset.unsqueeze(0).expand(W, -1).clone()
        if P and bool((self.signal_durations.sum(-1) <= 0).any()):
            raise ConfigError("signal_durations", "a zero cycle", "phase durations with a positive sum")
        # the codes each link shows this step [W, links] (kernels.SIG_*), set by the signal controls
        self.signal_state = torch.full((W, cnet.link_program.shape[0]), kernels.SIG_RED, dtype=torch.int64, device=dev)
        self.lo = 0
        self._lo_pending = None  # the window start's next advance, on its way to the host (_advance_window_start)
        # each lane's upstream-most vehicle (slot; None: not known yet, the kernel sorts); the window's
        # flattened vehicle parameters
        self._lane_last = self._veh_cache = None
        self._vehicle_agents: dict[tuple[int, int], Vehicle] = {}  # (world, slot): built when asked for
        self._device_step, self._device_step_at = None, 0  # the fixed-shape step's clock on the device
        L = cnet.n_lanes
        self.lane_acc_total = torch.zeros(W * L, 3, dtype=torch.float64, device=dev)
        # steps each vehicle has stood (rule 10's impatience, rule 12's teleports), and teleports per world
        self._wait = torch.zeros(W, S, dtype=torch.int32, device=dev)
        # rule 12 without host syncs: the longest standing time known (step, steps stood), and the next reading of it
        # on its way to the host (_standing_bound)
        self._stood_known, self._stood_pending = (0, 0), None
        self.teleports = torch.zeros(W, dtype=torch.int64, device=dev)
        self.lane_acc_interval = torch.zeros(W * L, 3, dtype=torch.float64, device=dev)
        self._detector_rows: list[pd.DataFrame] = []
        self._trajectories: list[pd.DataFrame] = []
        self._arrived_before = np.zeros(W, dtype=np.int64)

    # --- signal plans: read from worlds.params at every step (an intervention writes them there) -------------
    @property
    def signal_durations(self) -> torch.Tensor:
        """Phase durations ``[W, programs, phases]`` (s, float64; 0 pads): ``worlds.params["signal_durations"]``
        where an intervention wrote it, else the scenario's programs in every world."""
        d = self.worlds.params.get("signal_durations")
        return self._plan_durations if d is None else d.to(self.device, torch.float64)

    @signal_durations.setter
    def signal_durations(self, value: torch.Tensor) -> None:
        self.worlds.params["signal_durations"] = value.to(self.device, torch.float64)

    @property
    def signal_offsets(self) -> torch.Tensor:
        """Program offsets ``[W, programs]`` (s, float64; SUMO's sign: cycle position ``(t - offset) mod cycle``):
        ``worlds.params["signal_offsets"]`` where an intervention wrote it, else the scenario's."""
        o = self.worlds.params.get("signal_offsets")
        return self._plan_offsets if o is None else o.to(self.device, torch.float64)

    @signal_offsets.setter
    def signal_offsets(self, value: torch.Tensor) -> None:
        self.worlds.params["signal_offsets"] = value.to(self.device, torch.float64)

    def _vehicle_params(self, demand: Demand, lines, flow: torch.Tensor, rep: torch.Tensor, vid: torch.Tensor,
                        dtype) -> dict:
        """Every vehicle's parameters ``[W, S]``: its type's values, and the driver's speed factor, accel and tau
        from the standard normals of draws 0, 1, 2 of :attr:`noise.Stream.DRIVER` keyed by (replication,
        vehicle id). All worlds in a few tensor operations, in blocks of worlds small enough to stay in the cache;
        the draws are elementwise, so a world's numbers never depend on the batch or its position there. A value
        every flow shares is a number, never a gathered tensor (the same arithmetic); where every driver keeps
        its type's accel and tau (``param_cv = 0``: 1 + 0·z is exactly 1) those draws are not made."""
        W, S = flow.shape
        dev = flow.device
        vt_of_flow = [demand.vtypes[f.vtype] for f in demand.flows] + [l.vtype for l in lines]
        fidx = flow.clamp(min=0)

        def table(values):
            # a number where every flow has the same value, else the per-flow values (float64 [F])
            values = [float(v) for v in values] or [0.0]
            if len(set(values)) == 1 and not math.isnan(values[0]):
                return values[0]
            return torch.tensor(values, dtype=torch.float64, device=dev)

        tab = {a: table([getattr(v, a) for v in vt_of_flow]) for a in (
            "length", "min_gap", "accel", "decel", "tau", "delta", "speed_factor", "speed_dev", "param_cv",
            "max_speed", "sigma")}
        tab["depart_speed"] = table([float("inf") if f.depart_speed is None else
                                     kernels.DEPART_AVG if f.depart_speed == "avg" else f.depart_speed
                                     for f in demand.flows] + [float("inf")] * len(lines))

        def col(attr, fi):  # the values of ``attr`` of the slots whose flows are ``fi``
            x = tab[attr]
            return x if isinstance(x, float) else x[fi]

        def full(attr, dt_):  # [W, S] of dtype dt_, as ``col(attr).to(dt_)``, bit for bit
            x = tab[attr]
            return torch.full((W, S), x, dtype=dt_, device=dev) if isinstance(x, float) else x[fidx].to(dt_)

        out = {k: full(k, dtype) for k in ("length", "min_gap", "decel", "max_speed", "sigma", "depart_speed")}
        d = tab["delta"]
        out["delta"] = (torch.full((W, S), int(np.round(d)), dtype=torch.int64, device=dev) if isinstance(d, float)
                        else d[fidx].round().to(torch.int64))
        fixed = lambda x: isinstance(x, float) and x == 0.0  # noqa: E731
        draws = [d for d, need in enumerate((not fixed(tab["speed_dev"]), not fixed(tab["param_cv"]),
                                             not fixed(tab["param_cv"]))) if need]
        scalar_ab = isinstance(tab["accel"], float) and isinstance(tab["decel"], float) and 1 not in draws
        if scalar_ab:  # 2·sqrt(a·b) once per vehicle, correctly rounded (numpy), never recomputed per step
            out["two_sqrt_ab"] = torch.full((W, S), float(2.0 * np.sqrt(np.float64(tab["accel"] * tab["decel"]))),
                                            dtype=dtype, device=dev)
        varying = ["speed_factor", "accel", "tau"] + ([] if scalar_ab else ["two_sqrt_ab"])
        for k in varying:
            out[k] = torch.empty(W, S, dtype=dtype, device=dev)
        B = W if dev.type != "cpu" else max(1, (1 << 16) // max(S, 1))
        for w in range(0, W, B):
            fi = fidx[w:w + B]
            z = dict(zip(draws, noise.normal_draws(self.worlds.seed, rep[w:w + B], noise.Stream.DRIVER,
                                                   vid[w:w + B], 0, draws, device=dev))) if draws else {}
            sf = col("speed_factor", fi)
            sf = torch.clamp(sf * (1.0 + col("speed_dev", fi) * z[0]), 0.2, 2.0) if 0 in z else \
                torch.clamp(torch.as_tensor(sf * 1.0, dtype=torch.float64, device=dev), 0.2, 2.0)
            cv = col("param_cv", fi)
            accel = col("accel", fi) * torch.clamp(1.0 + cv * z[1], 0.5, 1.5) if 1 in z else col("accel", fi)
            tau = col("tau", fi) * torch.clamp(1.0 + cv * z[2], 0.5, 1.5) if 2 in z else col("tau", fi)
            for k, x in (("speed_factor", sf), ("accel", accel), ("tau", tau)):
                out[k][w:w + B] = x
            if not scalar_ab:
                ab = torch.as_tensor(accel * col("decel", fi), dtype=torch.float64, device=dev)
                out["two_sqrt_ab"][w:w + B] = torch.from_numpy(2.0 * np.sqrt(ab.cpu().numpy())).to(dev)
        return {k: out[k] for k in ("length", "min_gap", "accel", "decel", "two_sqrt_ab", "tau", "delta",
                                    "speed_factor", "max_speed", "sigma", "depart_speed")}

    # --- Mesa structure -------------------------------------------------------------------
    def _build_agents(self) -> None:
        net = self.scenario.network
        self.space = Network(net.junction_graph(), random=self.random)

        def cell_at(node):  # the junction's cell (None for a node the graph lacks)
            try:
                return self.space[node]
            except KeyError:
                return None

        self._edge_lanes = []
        self._edge_length = []
        first = self.net.edge_first_lane.cpu().numpy()
        count = self.net.edge_n_lanes.cpu().numpy()
        for i, e in enumerate(self.net_cpu.edge_ids):
            self._edge_lanes.append(np.arange(first[i], first[i] + count[i]))
            self._edge_length.append(net.edges[e].length)
        junction_of_tl = {j.tl: j.id for j in net.junctions.values() if j.tl}
        self.controllers = []
        for p, pid in enumerate(self.net_cpu.program_ids):
            jid = junction_of_tl.get(pid, pid)
            cell = cell_at(jid)
            self.controllers.append(SignalController(self, p, pid, cell))
        self.detectors = [Detector(self, i, e, cell_at(net.edges[e].to_node))
                          for i, e in enumerate(self.net_cpu.edge_ids)]
        self.bus_line_agents = [BusLineAgent(self, i, l, cell_at(net.edges[l.route[0]].from_node))
                                for i, l in enumerate(self.bus_lines)]
        self.bus_stop_agents = []
        for line in self.bus_lines:
            for s in line.stops:
                z = len(self.bus_stop_agents)
                self.bus_stop_agents.append(BusStopAgent(self, z, self.transit.stop_ids[z],
                                                         cell_at(net.edges[s.edge].to_node)))

    # --- public transport -----------------------------------------------------------------
    def _per_line(self, wp, key: str, base: list[float], positive: bool = False) -> torch.Tensor:
        """``worlds.params[key]`` [W, lines] as float64 on the CPU, else each line's own value in every world."""
        W, n = self.worlds.size, len(base)
        if key not in wp:
            return torch.tensor(base, dtype=torch.float64).expand(W, n).clone()
        v = wp[key].detach().cpu().to(torch.float64)
        bad = tuple(v.shape) != (W, n) or not bool(torch.isfinite(v).all()) or bool(
            ((v <= 0) if positive else (v < 0)).any())
        if bad:
            raise ConfigError(f"worlds.params.{key}", tuple(v.shape) if tuple(v.shape) != (W, n) else v.tolist(),
                              f"a [W={W}, lines={n}] tensor of {'positive' if positive else 'non-negative'} seconds")
        return v

    def _set_routes(self, routes_cpu) -> None:
        """The route table, and its copy on the device (turning speeds and look-ahead lengths in the step's dtype: the
        kernels compare them with speeds and positions; the rest as compiled)."""
        self.routes_cpu = routes_cpu
        in_dtype = ("route_turn_speed", "route_ahead_m", "route_lane_cont")
        self.routes = type(routes_cpu)(**{k: v if not isinstance(v, torch.Tensor) else
                                          v.to(self.device, self.dtype) if k in in_dtype else
                                          v.to(self.device) for k, v in routes_cpu.__dict__.items()})

    def _init_router(self, demand: Demand, route_lists: list[list[str]]) -> None:
        """scenario.routing=insertion (:mod:`twins.traffic.routing`): the trips' slots, their origin and destination
        edges, and the route table's rows by route."""
        self._router = routing.InsertionRouter(self.scenario.network, self.net_cpu.edge_ids, self.W, self.dt,
                                               self.device)
        self._router_rows = None  # (time, worlds, read_later of their smoothed speeds): the next step's routing
        self._route_row = {}
        for i, r in enumerate(route_lists):
            self._route_row.setdefault(tuple(r), i)
        self._route_links = route_links(self.scenario.network)
        flows = demand.flows
        rerouted = torch.tensor([f.reroute for f in flows] + [False] * len(self.bus_lines), dtype=torch.bool)
        pflow = self.pop.flow
        # the trips' slots in order of departure (host data: finding the ones due reads nothing from the device)
        trip = ((pflow >= 0) & rerouted[pflow.clamp(min=0)]).numpy()
        w_trip, s_trip = np.nonzero(trip)
        dep = self.pop.depart.numpy()[w_trip, s_trip]
        order = np.argsort(dep, kind="stable")
        self._trip_depart, self._trip_world, self._trip_slot = dep[order], w_trip[order], s_trip[order]
        idx = self._router.index
        self._od = [(idx[f.route[0]], idx[f.route[-1]]) for f in flows]
        # the route column is the population's flow column itself where flows drive their own rows: own it now
        self.drivers.route = self.drivers.route.clone()

    def _route_departures(self, t: float) -> None:
        """Routes the trips whose departure time has come this step on each world's current travel times."""
        # the trips departing this step, from the host's departure-sorted list, in the order of the [W, S] table
        # (world, then slot)
        due = routing.due_now(self._trip_depart, t, self.dt)
        if due.start == due.stop:
            return
        w_due, s_due = self._trip_world[due], self._trip_slot[due]
        order = np.lexsort((s_due, w_due))
        w_due, s_due = w_due[order], s_due[order]
        flows = self.pop.flow.numpy()[w_due, s_due].tolist()
        by_world: dict[int, list[int]] = {}
        for j, w in enumerate(w_due.tolist()):
            by_world.setdefault(w, []).append(j)
        n_rows, new, routed, rows = self.routes_cpu.route_edges.shape[0], [], [], []
        speeds = self._routing_speeds(t, list(by_world))
        found = self._router.routes_many({w: [self._od[flows[j]] for j in at] for w, at in by_world.items()}, speeds)
        for w, at in by_world.items():
            for j, path in zip(at, found[w]):
                if path is None:
                    continue  # no path on this graph (cannot happen for a route the file's network allows)
                key = tuple(path)
                if key not in self._route_row:
                    self._route_row[key] = n_rows + len(new)
                    new.append(path)
                routed.append(j)
                rows.append(self._route_row[key])
        if new:
            self._set_routes(concat_routes(self.routes_cpu, route_tables(self.scenario.network, new,
                                                                           links=self._route_links)))
        if routed:
            w_set, s_set = (torch.from_numpy(x[routed]).to(self.device) for x in (w_due, s_due))
            self.drivers.route[w_set, s_set] = torch.tensor(rows, dtype=torch.int64, device=self.device)
        self._veh_cache = None

    def _observe_for_routing(self, lo: int, hi: int) -> None:
        """This step's speed sample of every edge in every world (:meth:`InsertionRouter.observe`, on the device;
        the running vehicles are all in the window ``[lo, hi)``), then, on a GPU, the smoothed speeds of the worlds
        that route in the next step copied to the host without waiting."""
        st, sl = self.state, slice(lo, hi)
        self._router.observe(st.lane[:, sl].clamp(min=0), st.speed[:, sl], st.world[:, sl],
                             st.status[:, sl] == kernels.RUNNING)
        self._router_rows = None
        if self.device.type == "cpu":  # the next step's routing reads the speeds themselves: nothing to copy
            return
        t_next = self.time_s  # the step after this one (step_index has moved on)
        due = routing.due_now(self._trip_depart, t_next, self.dt)
        if due.start < due.stop:
            worlds = np.unique(self._trip_world[due])
            rows = self._router.speed[torch.from_numpy(worlds).to(self.device)]
            self._router_rows = (t_next, worlds, self._read_later(rows))

    def _routing_speeds(self, t: float, worlds: list[int]) -> dict[int, np.ndarray]:
        """The smoothed speeds of ``worlds`` on the host for routing at ``t``: on the CPU the speeds themselves, on
        a GPU the copy the step before issued (waiting for it only if the device has not finished that step yet),
        else read now (the first step)."""
        if self.device.type == "cpu":
            host = self._router.speed.numpy()
            return {w: host[w] for w in worlds}
        pending = self._router_rows
        if pending is not None and abs(pending[0] - t) < 1e-9 and set(worlds) <= set(pending[1].tolist()):
            _, have, (_, host, done) = pending
            if done is not None:
                done.synchronize()
            return {int(w): host[i].numpy() for i, w in enumerate(have)}
        return {w: self._router.speed[w].cpu().numpy() for w in worlds}

    def _curbside_stops(self, row0: int) -> None:
        """Buses take the rightmost lane (0) of an edge with one of their stops, where the route allows it."""
        mask, tr = self.routes_cpu.route_mask, self.transit
        for z in range(len(tr.stop_ids)):
            row, k = row0 + int(tr.line_of_stop[z]), int(tr.route_pos[z])
            if int(mask[row, k]) & 1:
                mask[row, k] = 1

    def _board(self, docked: torch.Tensor, lo: int) -> None:
        """Board the passengers of the buses that docked this step (``docked`` [W, window])."""
        w, j = docked.nonzero(as_tuple=True)
        if w.numel() == 0:
            return
        s = lo + j
        t = self.begin + (self.step_index + 1) * self.dt  # docked at the end of this step
        st, tr = self.state, self.transit
        z = st.next_stop[w, s]
        out = transit.board(t, w, z, st.load[w, s], self.pax_served, self.pax_arrivals, self.pax_cum, tr)
        self.pax_served = out["served"]
        self.pax_wait.index_put_((w, z), out["wait_sum"], accumulate=True)
        dwell = out["dwell"]
        st.dwell[w, s] = dwell.to(st.dwell.dtype)
        st.next_stop[w, s] = torch.where(dwell > 0, z, tr.next[z])  # no dwell at all: served at once
        st.load[w, s] = out["load"]
        self._visits.append(pd.DataFrame({
            "time_s": t, "world": w.cpu().numpy(), "vehicle_id": self.pop.vehicle_id[w.cpu(), s.cpu()].numpy(),
            "line": np.asarray([l.id for l in self.bus_lines], dtype=object)[tr.line_of_stop[z].cpu().numpy()],
            "stop": np.asarray(tr.stop_ids, dtype=object)[z.cpu().numpy()],
            "boardings": out["boardings"].cpu().numpy(), "alightings": out["alightings"].cpu().numpy(),
            "dwell_s": dwell.cpu().numpy(), "load": out["load"].cpu().numpy(),
            "wait_sum_s": out["wait_sum"].cpu().numpy()}))

    # --- queries --------------------------------------------------------------------------
    def count(self, status: int) -> torch.Tensor:
        return (self.state.status == status).sum(1)

    def vehicle(self, world: int, vehicle_id: int) -> VehicleView:
        """A read-only view of one vehicle (by its global id) in one world."""
        row = (self.pop.vehicle_id[world] == vehicle_id).nonzero()
        if row.numel() == 0:
            raise KeyError(f"vehicle {vehicle_id} is not in world {world}")
        s = int(row[0, 0])
        st = {k: v[world, s].item() for k, v in self.state.columns().items()}
        fl = int(self.pop.flow[world, s])
        return VehicleView(world, int(vehicle_id), self._flow_names()[fl], kernels.STATUS_NAMES[st["status"]],
                           self.net_cpu.lane_ids[st["lane"]] if st["status"] == kernels.RUNNING else None,
                           float(st["pos"]), float(st["speed"]),
                           self.route_edge_ids(int(self.drivers.route[world, s])), int(st["route_pos"]),
                           float(self.pop.depart[world, s]), float(st["time_loss"]))

    def vehicles(self, world: int, status: str | None = "running") -> AgentSet:
        """World ``world``'s vehicles with that ``status`` (``waiting``, ``running``, ``arrived``; None: all), as
        :class:`~.agents.Vehicle` agents over the world's tensor columns, in slot (departure) order."""
        if status is not None and status not in kernels.STATUS_NAMES:
            raise ValueError(f"vehicles(status={status!r}): valid are {sorted(kernels.STATUS_NAMES)} or None")
        mask = self.pop.flow[world] >= 0
        if status is not None:
            mask &= self.state.status[world].cpu() == kernels.STATUS_NAMES.index(status)
        agents = []
        for s in torch.nonzero(mask).flatten().tolist():
            key = (int(world), s)
            if key not in self._vehicle_agents:
                self._vehicle_agents[key] = Vehicle(self, world, s)
            agents.append(self._vehicle_agents[key])
        return AgentSet(agents, random=self.random)

    def lane_order_changed(self) -> None:
        """Positions were written from outside the step: the next step sorts every lane again (rule 2)."""
        self._lane_last = None

    def route_edge_ids(self, row: int) -> tuple[str, ...]:
        """The edge ids of route row ``row``."""
        edges = self.routes_cpu.route_edges[row]
        return tuple(self.net_cpu.edge_ids[int(e)] for e in edges[edges >= 0])

    def snapshot(self) -> pd.DataFrame:
        """Running vehicles now: world, vehicle_id, lane, pos, speed."""
        run = self.state.status == kernels.RUNNING
        w, s = run.nonzero(as_tuple=True)
        lanes = self.state.lane[w, s].cpu().numpy()
        return pd.DataFrame({
            "time_s": self.time_s,
            "world": w.cpu().numpy(),
            "vehicle_id": self.pop.vehicle_id.to(self.device)[w, s].cpu().numpy(),
            "lane": np.asarray(self.net_cpu.lane_ids, dtype=object)[lanes] if len(lanes) else [],
            "edge": np.asarray(self.net_cpu.edge_ids, dtype=object)[self.net.lane_edge[lanes].cpu().numpy()]
            if len(lanes) else [],
            "pos_m": self.state.pos[w, s].cpu().double().numpy(),
            "speed_mps": self.state.speed[w, s].cpu().double().numpy(),
        })

    # --- stepping -------------------------------------------------------------------------
    def _window(self) -> tuple[int, int]:
        t = self.time_s + 1e-9
        hi = int(np.searchsorted(self._depart_first, t, side="right"))  # the most departed slots of any world
        if self.step_index % 32 == 0:
            self._advance_window_start(hi)
        # whole blocks of 16 slots: a vehicle keeps its SIMD lane whatever the batch; the end moves in
        # blocks of 64 so that the window (hence its cached vehicle parameters) stays the same for several steps
        lo16 = self.lo // 16 * 16
        hi64 = min(self.S, -(-max(hi, self.lo) // 64) * 64)
        return window_bucket(lo16, hi64, self.S) if self.fixed_shape else (lo16, hi64)

    def _advance_window_start(self, hi: int) -> None:
        """Move the window's start past the slots that have arrived in every world, without a host sync: the
        first slot not yet arrived is reduced on the device and copied to the host without waiting, and read at
        the next call (32 steps on), once the copy is done (arrival is final, so a bound that old still holds)."""
        if self._lo_pending is not None:
            lo_then, (_, host, copied) = self._lo_pending
            if copied is None or copied.query():  # never waits: not done yet, the next call reads it
                self.lo = max(self.lo, lo_then + int(host.numpy()[0]))  # host memory: no device read
                self._lo_pending = None
        if self._lo_pending is None and self.lo < hi:
            n = hi - self.lo
            not_done = (self.state.status[:, self.lo:hi] != kernels.ARRIVED).any(0)
            first = torch.where(not_done, torch.arange(n, device=self.device), n).amin()
            self._lo_pending = (self.lo, self._read_later(first))

    def _dawdle_draws(self, lo: int, hi: int) -> torch.Tensor | None:
        """``[W, hi - lo]`` U(0,1) per slot of the window for this step (Krauss dawdling, kernels rule 9), keyed by
        (seed, replication, vehicle id, step) so every arm of a replication sees the same draws; None without."""
        if not self.dawdles:
            return None
        return noise.uniform(self.worlds.seed, self._rep_col, noise.Stream.DAWDLE, self._vid[:, lo:hi],
                             self.step_index, 0, dtype=self.dtype, device=self.device).contiguous()

    def _clock(self, t: float) -> tuple:
        """``(t, step_index)`` for the kernels: Python numbers, or with ``fixed_shape`` 0-dim device tensors (a compiled
        or captured step is then not rebuilt each step) advanced on the device, with no copy from the host."""
        if not self.fixed_shape:
            return t, self.step_index
        if self._device_step is None:
            self._device_step = torch.tensor(self.step_index, dtype=torch.int64, device=self.device)
            self._device_step_at = self.step_index
        self._device_step += self.step_index - self._device_step_at  # in place: no host read, no copy
        self._device_step_at = self.step_index
        # begin + step · dt in float64, the operations of time_s in the same order: the same number
        return self.begin + self._device_step.double() * self.dt, self._device_step

    @property
    def _step_settings(self) -> StepSettings:
        return StepSettings(dt=self.dt, W=self.W, span=self.span, substeps=self.substeps,
                            insert_rounds=self.insert_rounds, delta=self.shared_delta, fused=self.fused_idm, cf=self.cf,
                            lane_change=self.lane_changing, fixed_shape=self.fixed_shape, depart_avg=self.depart_avg)

    @property
    def _stop_tables(self) -> StopTables | None:
        return self.transit.stop_tables() if self.transit is not None else None

    def _veh_window(self, lo: int, hi: int) -> Drivers:
        """The vehicle parameters of the window, flattened (a copy when W > 1): kept while the window
        stays the same, as the parameters of a slot never change."""
        cached = self._veh_cache
        if cached is None or cached[0] != (lo, hi):
            cached = ((lo, hi), self.drivers.map(lambda v: v[:, lo:hi].reshape(-1)))
            self._veh_cache = cached
        return cached[1]

    def step(self) -> None:
        t = self.time_s
        if self._router is not None:
            self._route_departures(t)
        self.signal_controls.do("step")
        sig = self.signal_state
        lo, hi = self._window()
        if hi > lo and self._native:
            need_sort = self._lane_last is None
            if need_sort:
                self._lane_last = torch.full((self.W, self.net.n_lanes), -1, dtype=torch.int64, device=self.device)
            native.step_(self.state, self.drivers, self._lane_last, self.lane_acc_interval, self.net, self.routes,
                         sig, t, self.step_index, self.dt, lo, hi, self.substeps, self.insert_rounds,
                         self.shared_delta, need_sort, threads=torch.get_num_threads(), cf=self.cf,
                         dawdle=self._dawdle_draws(lo, hi), lane_change=self.lane_changing, wait=self._wait)
        elif hi > lo:
            W, n = self.W, hi - lo
            st = self.state
            sub = st.map(lambda v: v[:, lo:hi].reshape(-1))
            # leaders and lane tails are slots in the state, window-flat indices in the kernel
            to_flat = (torch.arange(W, device=self.device) * n - lo).unsqueeze(1)
            tails = None
            if self._lane_last is not None:
                lead = st.leader[:, lo:hi]
                sub.leader = torch.where(lead >= 0, lead + to_flat, -1).reshape(-1)
                tails = torch.cat([torch.where(self._lane_last >= 0, self._lane_last + to_flat, -1).reshape(-1),
                                   sub.leader.new_full((1,), -1)])
            if self.lane_changing:
                ly = st.lc_yield[:, lo:hi]
                sub.lc_yield = torch.where(ly >= 0, ly + to_flat, -1).reshape(-1)
            res = kernels.step(sub, self._veh_window(lo, hi), self.net, self.routes, sig, *self._clock(t),
                               self._step_settings, lane_tails=tails, stops=self._stop_tables,
                               dawdle_u=None if not self.dawdles else self._dawdle_draws(lo, hi).view(-1),
                               stood=self._wait[:, lo:hi].reshape(-1).to(st.pos.dtype) * self.dt)
            new = res.state
            # lane observations first: ``sub`` may be a view of the state (one world, or a window covering
            # every slot), and the write-back below would turn the pre-step lanes into post-step ones
            idx = new.world * self.net.n_lanes + res.observed_lane
            running = res.observed_running.to(torch.float64)
            M = self.lane_acc_interval.shape[0]
            # per-lane sums of this step, column by column (an [N, 3] block is ~3x slower on CPU); index_add_ as
            # fast as bincount with the same sums, and of a known size: no host read on CUDA
            for j, w in enumerate((running, new.speed.to(torch.float64) * running,
                                   res.time_loss.to(torch.float64))):
                self.lane_acc_interval[:, j] += torch.zeros(M, dtype=torch.float64, device=idx.device).index_add_(
                    0, idx, w)
            old_cols, new_cols = sub.columns(), new.columns()
            for k, col in st.columns().items():
                if k in ("world", "depart", "leader", "lc_yield") or new_cols[k] is old_cols[k]:
                    continue  # unchanged (and possibly a view of the state itself)
                col[:, lo:hi] = new_cols[k].view(W, n)
            lead = new.leader.view(W, n)
            st.leader[:, lo:hi] = torch.where(lead >= 0, lead - to_flat, -1)
            if self.lane_changing:
                ly = new.lc_yield.view(W, n)
                st.lc_yield[:, lo:hi] = torch.where(ly >= 0, ly - to_flat, -1)
            last = res.lane_tails[:-1].view(W, -1)
            self._lane_last = torch.where(last >= 0, last - to_flat, -1)
            if self.transit is not None and bool(res.docked.any()):
                self._board(res.docked.view(W, n), lo)
        if hi > lo and not self._native:  # the standing counters, in place (the compiled step counts its own)
            st = self.state
            self._wait[:, lo:hi].add_(1).mul_(st.halted[:, lo:hi] & (st.status[:, lo:hi] == kernels.RUNNING))
        if hi > lo and self.teleport_steps is not None:
            self._teleport(lo, hi)
        self.step_index += 1
        if self._router is not None:
            self._observe_for_routing(lo, hi)
        if self.trajectory_every and self.step_index % self.trajectory_every == 0:
            self._trajectories.append(self.snapshot())
        if self.step_index % self.interval_steps == 0 or self.step_index == self.n_steps:
            self._close_interval()

    def _teleport(self, lo: int, hi: int) -> None:
        """Kernels rule 12 on the window ``[lo, hi)`` after the step, for either step implementation."""
        st, sl = self.state, slice(lo, hi)
        # the full rule runs only when a vehicle has stood long enough (the counters: TrafficTwin.step)
        wait = self._wait[:, sl]
        # the counters grow by at most one a step: from their maximum m read at step j, none can pass the limit T
        # before step j + T - m + 1. The maximum is reduced on the device a step before that bound runs out and
        # copied to the host without waiting; the full rule runs only where the bound allows a teleport
        if self._standing_bound(wait) <= self.teleport_steps:
            return
        local = lambda x: torch.where(x >= 0, x - lo, -1)  # noqa: E731  (state slots <-> window slots)
        back = lambda x: torch.where(x >= 0, x + lo, -1)  # noqa: E731
        last = self._lane_last if self._lane_last is not None else torch.full(
            (self.W, self.net.n_lanes), -1, dtype=torch.int64, device=self.device)
        exempt = st.next_stop[:, sl] >= 0 if st.next_stop is not None else torch.zeros_like(st.halted[:, sl])
        win = st.map(lambda x: x[:, sl])
        win.leader = local(win.leader)
        moved = kernels.teleport(win, self.drivers.map(lambda x: x[:, sl]), local(last), wait, self.routes,
                                 self._teleport_edge_m, exempt, self.teleport_steps)
        if moved is None:
            return
        gone = moved.gone
        wait.masked_fill_(gone, 0)
        st.status[:, sl], st.route_pos[:, sl], st.speed[:, sl] = moved.status, moved.route_pos, moved.speed
        st.leader[:, sl] = back(moved.leader)
        if self._lane_last is not None:
            self._lane_last = back(moved.lane_tails)
        st.conn[:, sl] = torch.where(gone, -1, st.conn[:, sl])
        st.halted[:, sl] = st.halted[:, sl] & ~gone
        st.arrive_step[:, sl] = torch.where(moved.arrived, self.step_index + 1, st.arrive_step[:, sl])
        if st.lc_yield is not None:  # nobody lets in a vehicle that left
            ly = st.lc_yield[:, sl]
            st.lc_yield[:, sl] = torch.where((ly >= 0) & gone.gather(1, local(ly).clamp(min=0)), -1, ly)
            st.lc_stop[:, sl] = torch.where(gone, torch.inf, st.lc_stop[:, sl])  # a place on the lane it left
            st.lc_keep_right[:, sl] = torch.where(gone, 0.0, st.lc_keep_right[:, sl])
            st.lc_look_ahead_speed[:, sl] = torch.where(gone, 0.0, st.lc_look_ahead_speed[:, sl])
        self.teleports += gone.sum(1)
        if self._stood_pending is None:  # the counters just reset: a fresh maximum for the next steps' bound
            self._stood_pending = self._read_later(wait.max())

    def _read_later(self, value: torch.Tensor) -> tuple:
        """(step, host copy, copy-done event or None) of a device tensor (a scalar as one element), copied without
        waiting (pinned memory and an event on CUDA): read the copy once the event says it is done (a caller that needs
        it sooner waits on the event: routing, for the step just issued)."""
        cuda = self.device.type == "cuda"
        value = value.reshape(1) if value.dim() == 0 else value
        host = torch.empty(value.shape, dtype=value.dtype, pin_memory=cuda)
        host.copy_(value, non_blocking=cuda)
        done = None
        if cuda:
            done = torch.cuda.Event()
            done.record()
        return self.step_index, host, done

    def _standing_bound(self, wait: torch.Tensor) -> int:
        """An upper bound of the steps any vehicle has stood (rule 12's counters, ``wait``: this window's), from
        the last maximum read and the steps since; reads the device only where the bound would allow a teleport
        and a fresher maximum is still on its way."""
        k, T = self.step_index, self.teleport_steps
        if self._stood_pending is not None:
            j, host, done = self._stood_pending
            j0, m0 = self._stood_known
            if done is not None and not done.query() and m0 + (k - j0) > T:
                done.synchronize()  # it matters now (a teleport may be due): the one wait, rarely
            if done is None or done.query():
                self._stood_known, self._stood_pending = (j, int(host.numpy()[0])), None  # host memory
        j, m = self._stood_known
        if self._stood_pending is None and k >= j + T - m - 1:  # the bound runs out next step: ask again
            self._stood_pending = self._read_later(wait.max())
        return m + (k - j)

    def _close_interval(self) -> None:
        running = self.state.status == kernels.RUNNING
        hint = ("Check the vehicle parameters of that world (speed factor, accel, decel, tau, min gap: "
                "positive and finite) and any per-world parameter an intervention set.")
        self.check_finite("position (m)", self.state.pos, running, hint)
        self.check_finite("speed (m/s)", self.state.speed, running, hint)
        steps_in = self.step_index % self.interval_steps or self.interval_steps
        interval_s = steps_in * self.dt
        W, L = self.W, self.net.n_lanes
        acc = self.lane_acc_interval.view(W, L, 3).cpu().numpy()
        self.lane_acc_total += self.lane_acc_interval
        status = self.state.status
        running = (status == kernels.RUNNING)
        arrived = (status == kernels.ARRIVED).sum(1).cpu().numpy()
        queued = (running & (self.state.speed < kernels.STOP_SPEED)).sum(1).cpu().numpy()
        waiting = ((status == kernels.WAITING) & (self.depart <= self.time_s + 1e-9)).sum(1).cpu().numpy()
        tot = acc.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_speed = np.where(tot[:, 0] > 0, tot[:, 1] / tot[:, 0], np.nan)
        # this interval's per-world values, which the DataCollector's reporters read (collected below)
        self.interval = {"vehicles_in_network": running.sum(1).cpu().numpy(), "mean_speed_mps": mean_speed,
                         "arrivals": arrived - self._arrived_before, "queued_vehicles": queued,
                         "waiting_to_insert": waiting}
        self._arrived_before = arrived
        for d in self.detectors:
            d.read(acc, interval_s, self.dt)
        # one frame for all detectors (a frame per detector cost ~0.2 ms each: most of a small run's time)
        dets, n = self.detectors, len(self.detectors) * W
        col = lambda attr: np.concatenate([getattr(d, attr) for d in dets]) if dets else np.zeros(0)  # noqa: E731
        self._detector_rows.append(pd.DataFrame({
            "time_s": np.full(n, float(self.time_s)), "world": np.tile(np.arange(W), len(dets)),
            "edge": np.repeat(np.asarray([d.edge_id for d in dets], dtype=object), W),
            "flow_veh_h": col("flow_veh_h"), "density_veh_km": col("density_veh_km"), "speed_mps": col("speed_mps")}))
        self.datacollector.collect(self)
        self.lane_acc_interval.zero_()

    # --- queues (max pressure, signals.ProgramControl, reads them; so may a user's signal control) -----------
    def lane_queues(self, halted_only: bool = False) -> torch.Tensor:
        """Vehicles per (world, lane) now, ``[W, L]`` float64: running ones (or only the halted ones)."""
        W, L = self.W, self.net.n_lanes
        st = self.state
        sel = st.status == kernels.RUNNING
        if halted_only:
            sel = sel & st.halted
        idx = (st.world * L + st.lane)[sel]
        q = torch.zeros(W * L, dtype=torch.float64, device=self.device)
        q.index_add_(0, idx, torch.ones(idx.numel(), dtype=torch.float64, device=self.device))
        return q.view(W, L)
