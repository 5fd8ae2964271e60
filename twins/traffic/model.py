"""The traffic twin: a Mesa model over a batch of worlds, stepped by :mod:`.kernels`.

Signal controllers and detectors are Mesa agents placed on a
``mesa.discrete_space.Network`` of junctions. Vehicles are a vectorized
population: per-slot tensor columns ``[W, S]``, with read-only per-vehicle
views (:meth:`TrafficTwin.vehicle`). Mesa's ``DataCollector`` collects
network aggregates and detector readings once per interval.

Per-world parameters an intervention may set in ``WorldBatch.params``:
``signal_durations`` [W, P, K] phase durations (s), ``signal_offsets`` [W, P] (s);
``route_extra_edges`` [W, X, M] and ``route_of_flow`` [W, F] (rerouting, road closures);
``flow_retention`` [W, F] (demand thinning); ``max_pressure`` [W, P] with its controller
settings (adaptive signals, :mod:`twins.traffic.control`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import mesa
import numpy as np
import pandas as pd
import torch
from mesa.discrete_space import FixedAgent, Network

from twins.core import noise
from twins.core.errors import ConfigError
from twins.core.twin import RunResult, Twin
from twins.core.worlds import WorldBatch

from . import kernels
from .compiled import build_population, compile_network, compile_routes
from .demand import Demand
from .network import RoadNetwork

METRICS = (
    "mean_travel_time_s",
    "mean_delay_s",
    "throughput_veh",
    "vehicles_loaded",
    "vehicles_inserted",
    "vehicles_in_network_end",
    "vehicles_waiting_to_insert_end",
    "total_delay_veh_h",
    "mean_stops",
    "mean_depart_delay_s",
)


@dataclass
class TrafficScenario:
    """Everything a traffic world is made of (plain Python, device-free)."""

    network: RoadNetwork
    demand: Demand
    name: str = "traffic"
    begin: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VehicleView:
    """A read-only snapshot of one vehicle in one world."""

    world: int
    vehicle_id: int
    flow: str
    status: str
    lane: str | None
    pos_m: float
    speed_mps: float
    route: tuple[str, ...]
    route_pos: int
    depart_s: float
    time_loss_s: float


class SignalController(FixedAgent):
    """A fixed-time signal program at one junction; its plan may differ per world."""

    def __init__(self, model: "TrafficTwin", program_index: int, program_id: str, cell):
        super().__init__(model)
        self.program_index = program_index
        self.program_id = program_id
        self.cell = cell

    def phase_durations(self, world: int = 0) -> list[float]:
        d = self.model.signal_durations[world, self.program_index]
        return [float(x) for x in d if x > 0]

    def offset(self, world: int = 0) -> float:
        return float(self.model.signal_offsets[world, self.program_index])

    def phase_index(self, world: int = 0, t: float | None = None) -> int:
        t = self.model.time_s if t is None else t
        d = self.phase_durations(world)
        x = (t + self.offset(world)) % sum(d)
        return int(np.searchsorted(np.cumsum(d), x, side="right"))


class Detector(FixedAgent):
    """Edge detector: flow, density and space-mean speed per interval (Edie's definitions)."""

    def __init__(self, model: "TrafficTwin", edge_index: int, edge_id: str, cell):
        super().__init__(model)
        self.edge_index = edge_index
        self.edge_id = edge_id
        self.cell = cell
        self.flow_veh_h = np.zeros(model.W)
        self.density_veh_km = np.zeros(model.W)
        self.speed_mps = np.full(model.W, np.nan)

    def read(self, lane_acc: np.ndarray, interval_s: float, dt: float) -> None:
        lanes = self.model._edge_lanes[self.edge_index]
        length = self.model._edge_length[self.edge_index]
        a = lane_acc[:, lanes, :].sum(axis=1)  # [W, 3]
        area = interval_s * length
        self.density_veh_km = a[:, 0] * dt / area * 1000.0
        self.flow_veh_h = a[:, 1] * dt / area * 3600.0
        with np.errstate(invalid="ignore", divide="ignore"):
            self.speed_mps = np.where(a[:, 0] > 0, a[:, 1] / a[:, 0], np.nan)


class TrafficTwin(Twin):
    metrics = METRICS

    def __init__(self, scenario: TrafficScenario, worlds: WorldBatch, *, dt: float = 1.0,
                 horizon: float = 3600.0, device="cpu", dtype=torch.float32,
                 interval_s: float = 60.0, trajectory_every: int = 0, idm_substep_s: float = 0.25):
        from .compiled import route_edge_lists, slot_routes, thin_population  # per-world routes and demand

        super().__init__(worlds, dt=dt, horizon=horizon, device=device, dtype=dtype)
        self.scenario = scenario
        # what an intervention needs to rebuild the twin after writing worlds.params
        self._init_kwargs = dict(dt=dt, horizon=horizon, device=device, dtype=dtype, interval_s=interval_s,
                                 trajectory_every=trajectory_every, idm_substep_s=idm_substep_s)
        wp = self.worlds.params
        net, demand = scenario.network, scenario.demand
        demand.validate(net.edges)
        self.compiled = compile_network(net)
        cnet = self.compiled.to(self.device, dtype)
        self.net = cnet
        # route table: one row per flow, then the alternative routes an intervention appended
        # (worlds.params["route_extra_edges"] [W, X, M] edge indices, the same in every world)
        route_lists = [f.route for f in demand.flows]
        route_names = [f"flow[{f.id}]" for f in demand.flows]
        if "route_extra_edges" in wp and wp["route_extra_edges"].numel():
            extra = route_edge_lists(self.compiled.edge_ids, wp["route_extra_edges"][0])
            route_lists += extra
            route_names += [f"route_extra_edges[{i}]" for i in range(len(extra))]
        self.routes_cpu = compile_routes(net, route_lists, route_names)
        route_of_flow = wp.get("route_of_flow")  # [W, F] row of the route table per world and flow
        if route_of_flow is not None and (tuple(route_of_flow.shape) != (worlds.size, len(demand.flows))
                                          or bool((route_of_flow < 0).any())
                                          or bool((route_of_flow >= len(route_lists)).any())):
            raise ConfigError("worlds.params.route_of_flow", tuple(route_of_flow.shape),
                              f"a [W={worlds.size}, F={len(demand.flows)}] tensor of route rows "
                              f"in [0, {len(route_lists)})")
        self.routes = type(self.routes_cpu)(**{k: v.to(self.device) for k, v in self.routes_cpu.__dict__.items()})
        self.flow_ids = [f.id for f in demand.flows]
        self.interval_steps = max(1, int(round(interval_s / dt)))
        self.trajectory_every = int(trajectory_every)
        self.substeps = max(1, int(np.ceil(dt / idm_substep_s - 1e-9)))
        deltas = {float(demand.vtypes[f.vtype].delta) for f in demand.flows}
        self.shared_delta = int(deltas.pop()) if len(deltas) == 1 else None
        self.insert_rounds = min(self.compiled.max_lanes, 3)

        pop = build_population(demand, worlds.seed, worlds.replication.cpu())
        # demand response (worlds.params["flow_retention"] [W, F]): a vehicle travels iff its
        # CHOICE-stream draw is below its flow's retention; the others become empty slots
        pop = thin_population(pop, wp.get("flow_retention"), worlds.seed, worlds.replication.cpu())
        W, S = pop.flow.shape
        self.S = S
        dev = self.device
        self.pop = pop
        flow = pop.flow.to(dev)
        # per-vehicle parameters from the vehicle type and driver noise keyed by (replication, vehicle id)
        vt_of_flow = [demand.vtypes[f.vtype] for f in demand.flows] or [None]
        def col(attr):
            vals = torch.tensor([getattr(v, attr) for v in vt_of_flow] if demand.flows else [0.0],
                                dtype=torch.float64, device=dev)
            return vals[flow.clamp(min=0)]
        rep = self.worlds.replication.unsqueeze(1)
        vid = pop.vehicle_id.to(dev)
        # one world at a time (see build_population): draws independent of batch layout
        def driver(draw):
            return torch.cat([noise.normal(worlds.seed, rep[w:w + 1], noise.Stream.DRIVER, vid[w:w + 1], 0, draw,
                                           device=dev) for w in range(W)], 0)
        z_speed, z_acc, z_tau = driver(0), driver(1), driver(2)
        sf = torch.clamp(col("speed_factor") * (1.0 + col("speed_dev") * z_speed), 0.2, 2.0)
        cv = col("param_cv")
        accel = col("accel") * torch.clamp(1.0 + cv * z_acc, 0.5, 1.5)
        tau = col("tau") * torch.clamp(1.0 + cv * z_tau, 0.5, 1.5)
        f = lambda x: x.to(dtype).reshape(-1)  # noqa: E731
        self.veh_full = {
            "route": slot_routes(flow, route_of_flow),  # the route row of each vehicle's flow in its world
            "length": col("length").to(dtype),
            "min_gap": col("min_gap").to(dtype),
            "accel": accel.to(dtype),
            "decel": col("decel").to(dtype),
            # 2·sqrt(a·b) once per vehicle, correctly rounded (numpy), never recomputed per step
            "two_sqrt_ab": torch.from_numpy(2.0 * np.sqrt((accel * col("decel")).cpu().numpy())).to(dev, dtype),
            "tau": tau.to(dtype),
            "delta": col("delta").round().to(torch.int64),
            "speed_factor": sf.to(dtype),
            "max_speed": col("max_speed").to(dtype),
        }
        del f
        self.begin = float(scenario.begin)
        self.depart = pop.depart.to(dev)
        zeros = lambda dt_: torch.zeros(W, S, dtype=dt_, device=dev)  # noqa: E731
        self.state = {
            "world": torch.arange(W, device=dev).unsqueeze(1).expand(W, S).contiguous(),
            "status": zeros(torch.int64),
            "lane": zeros(torch.int64),
            "pos": zeros(dtype),
            "speed": zeros(dtype),
            "route_pos": zeros(torch.int64),
            "insert_step": torch.full((W, S), -1, dtype=torch.int64, device=dev),
            "arrive_step": torch.full((W, S), -1, dtype=torch.int64, device=dev),
            "time_loss": zeros(dtype),
            "stops": zeros(torch.int32),
            "halted": zeros(torch.bool),
            "depart": self.depart,
        }
        # signal plans, per world (interventions write worlds.params)
        P = len(cnet.program_ids)
        self.signal_durations = cnet.phase_durations.unsqueeze(0).expand(W, -1, -1).clone()
        self.signal_offsets = cnet.program_offset.unsqueeze(0).expand(W, -1).clone()
        if "signal_durations" in self.worlds.params:
            self.signal_durations = self.worlds.params["signal_durations"].to(dev, torch.float64)
        if "signal_offsets" in self.worlds.params:
            self.signal_offsets = self.worlds.params["signal_offsets"].to(dev, torch.float64)
        if P and bool((self.signal_durations.sum(-1) <= 0).any()):
            raise ConfigError("signal_durations", "a zero cycle", "phase durations with a positive sum")
        max_via = float(cnet.conn_via.max()) if cnet.conn_via.numel() else 0.0
        self.span = float(cnet.lane_length.max()) + max_via + 1000.0
        self.lo = 0
        L = cnet.n_lanes
        self.lane_acc_total = torch.zeros(W * L, 3, dtype=torch.float64, device=dev)
        self.lane_acc_interval = torch.zeros(W * L, 3, dtype=torch.float64, device=dev)
        self._series: list[dict] = []
        self._detector_rows: list[pd.DataFrame] = []
        self._trajectories: list[pd.DataFrame] = []
        self._arrived_before = np.zeros(W, dtype=np.int64)
        self._build_agents()
        self.datacollector = mesa.DataCollector(
            model_reporters={
                "time_s": lambda m: m.time_s,
                "vehicles_in_network": lambda m: float(m.count(kernels.RUNNING).float().mean()),
                "vehicles_arrived": lambda m: float(m.count(kernels.ARRIVED).float().mean()),
            },
            agent_reporters={
                "flow_veh_h": lambda a: float(np.mean(a.flow_veh_h)) if isinstance(a, Detector) else None,
                "density_veh_km": lambda a: float(np.mean(a.density_veh_km)) if isinstance(a, Detector) else None,
            },
        )

    # --- Mesa structure -------------------------------------------------------------------
    def _build_agents(self) -> None:
        net = self.scenario.network
        self.space = Network(net.junction_graph(), random=self.random)
        self._edge_lanes = []
        self._edge_length = []
        first = self.net.edge_first_lane.cpu().numpy()
        count = self.net.edge_n_lanes.cpu().numpy()
        for i, e in enumerate(self.compiled.edge_ids):
            self._edge_lanes.append(np.arange(first[i], first[i] + count[i]))
            self._edge_length.append(net.edges[e].length)
        junction_of_tl = {j.tl: j.id for j in net.junctions.values() if j.tl}
        self.controllers = []
        for p, pid in enumerate(self.compiled.program_ids):
            jid = junction_of_tl.get(pid, pid)
            cell = self.space._cells.get(jid)
            self.controllers.append(SignalController(self, p, pid, cell))
        self.detectors = [Detector(self, i, e, self.space._cells.get(net.edges[e].to_node))
                          for i, e in enumerate(self.compiled.edge_ids)]

    # --- queries --------------------------------------------------------------------------
    @property
    def time_s(self) -> float:
        return self.begin + self.step_index * self.dt

    def count(self, status: int) -> torch.Tensor:
        return (self.state["status"] == status).sum(1)

    def vehicle(self, world: int, vehicle_id: int) -> VehicleView:
        """A read-only view of one vehicle (by its global id) in one world."""
        row = (self.pop.vehicle_id[world] == vehicle_id).nonzero()
        if row.numel() == 0:
            raise KeyError(f"vehicle {vehicle_id} is not in world {world}")
        s = int(row[0, 0])
        st = {k: v[world, s].item() for k, v in self.state.items()}
        fl = int(self.pop.flow[world, s])
        flow = self.scenario.demand.flows[fl]
        status = ("waiting", "running", "arrived")[st["status"]]
        return VehicleView(world, int(vehicle_id), flow.id, status,
                           self.compiled.lane_ids[st["lane"]] if st["status"] == kernels.RUNNING else None,
                           float(st["pos"]), float(st["speed"]), self._route_edges(int(self.veh_full["route"][world, s])),
                           int(st["route_pos"]),
                           float(self.pop.depart[world, s]), float(st["time_loss"]))

    def _route_edges(self, row: int) -> tuple[str, ...]:
        edges = self.routes_cpu.route_edges[row]
        return tuple(self.compiled.edge_ids[int(e)] for e in edges[edges >= 0])

    def snapshot(self) -> pd.DataFrame:
        """Running vehicles now: world, vehicle_id, lane, pos, speed."""
        run = self.state["status"] == kernels.RUNNING
        w, s = run.nonzero(as_tuple=True)
        lanes = self.state["lane"][w, s].cpu().numpy()
        return pd.DataFrame({
            "time_s": self.time_s,
            "world": w.cpu().numpy(),
            "vehicle_id": self.pop.vehicle_id.to(self.device)[w, s].cpu().numpy(),
            "lane": np.asarray(self.compiled.lane_ids, dtype=object)[lanes] if len(lanes) else [],
            "edge": np.asarray(self.compiled.edge_ids, dtype=object)[self.net.lane_edge[lanes].cpu().numpy()]
            if len(lanes) else [],
            "pos_m": self.state["pos"][w, s].cpu().double().numpy(),
            "speed_mps": self.state["speed"][w, s].cpu().double().numpy(),
        })

    # --- stepping -------------------------------------------------------------------------
    def _window(self) -> tuple[int, int]:
        t = self.time_s + 1e-9
        hi = int(torch.searchsorted(self.depart, torch.full((self.W, 1), t, device=self.device, dtype=torch.float64),
                                    right=True).max())
        if self.step_index % 32 == 0 and self.lo < hi:
            done = self.state["status"][:, self.lo:hi] == kernels.ARRIVED
            # first slot not yet arrived in any world
            not_done = (~done).any(0)
            idx = torch.nonzero(not_done)
            self.lo = self.lo + (int(idx[0]) if idx.numel() else hi - self.lo)
        # whole blocks of 16 slots: a vehicle keeps its SIMD lane whatever the batch
        lo16 = self.lo // 16 * 16
        hi16 = min(self.S, -(-max(hi, self.lo) // 16) * 16)
        return lo16, hi16

    def _order_hint(self, lo: int, hi: int):
        """Last step's sort order, carried over to this step's window (a permutation of it)."""
        prev = getattr(self, "_order", None)
        if prev is None:
            return None
        plo, phi, order = prev
        if (plo, phi) == (lo, hi):
            return order
        n_old, n_new = phi - plo, hi - lo
        w, slot = order // n_old, order % n_old + plo
        keep = (slot >= lo) & (slot < hi)
        kept = w[keep] * n_new + (slot[keep] - lo)
        # slots new to the window (just departed) go last: they are idle or just inserted
        fresh_slots = torch.arange(max(phi, lo), hi, device=order.device)
        fresh = (torch.arange(self.W, device=order.device).unsqueeze(1) * n_new + (fresh_slots - lo)).reshape(-1)
        return torch.cat([kept, fresh])

    def step(self) -> None:
        t = self.time_s
        sig = self._max_pressure_signal(t) if "max_pressure" in self.worlds.params else kernels.signal_codes(
            t, self.signal_durations, self.signal_offsets, self.net.phase_code, self.net.link_program, self.net.link_local)
        lo, hi = self._window()
        if hi > lo:
            W, n = self.W, hi - lo
            sub = {k: v[:, lo:hi].reshape(-1) for k, v in self.state.items()}
            sub["_order"] = self._order_hint(lo, hi)
            veh = {k: v[:, lo:hi].reshape(-1) for k, v in self.veh_full.items()}
            new = kernels.step(sub, veh, self.net, self.routes, sig, t, self.step_index, self.dt, W, self.span,
                               self.substeps, self.insert_rounds, self.shared_delta)
            for k in self.state:
                if k in ("world", "depart") or new[k] is sub[k]:
                    continue  # unchanged (and possibly a view of the state itself)
                self.state[k][:, lo:hi] = new[k].view(W, n)
            self._order = (lo, hi, new["_order"])
            obs = torch.stack([new["_obs_running"].to(torch.float64),
                               new["_obs_speed"].to(torch.float64) * new["_obs_running"],
                               new["_obs_loss"].to(torch.float64)], dim=1)
            idx = new["world"] * self.net.n_lanes + new["_obs_lane"]
            self.lane_acc_interval.index_add_(0, idx, obs)
        self.step_index += 1
        if self.trajectory_every and self.step_index % self.trajectory_every == 0:
            self._trajectories.append(self.snapshot())
        if self.step_index % self.interval_steps == 0 or self.step_index == self.n_steps:
            self._close_interval()

    def _close_interval(self) -> None:
        steps_in = self.step_index % self.interval_steps or self.interval_steps
        interval_s = steps_in * self.dt
        W, L = self.W, self.net.n_lanes
        acc = self.lane_acc_interval.view(W, L, 3).cpu().numpy()
        self.lane_acc_total += self.lane_acc_interval
        status = self.state["status"]
        running = (status == kernels.RUNNING)
        arrived = (status == kernels.ARRIVED).sum(1).cpu().numpy()
        queued = (running & (self.state["speed"] < kernels.STOP_SPEED)).sum(1).cpu().numpy()
        waiting = ((status == kernels.WAITING) & (self.depart <= self.time_s + 1e-9)).sum(1).cpu().numpy()
        tot = acc.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_speed = np.where(tot[:, 0] > 0, tot[:, 1] / tot[:, 0], np.nan)
        self._series.append(pd.DataFrame({
            "time_s": self.time_s,
            "world": np.arange(W),
            "vehicles_in_network": running.sum(1).cpu().numpy(),
            "mean_speed_mps": mean_speed,
            "arrivals": arrived - self._arrived_before,
            "queued_vehicles": queued,
            "waiting_to_insert": waiting,
        }))
        self._arrived_before = arrived
        rows = []
        for d in self.detectors:
            d.read(acc, interval_s, self.dt)
            rows.append(pd.DataFrame({"time_s": self.time_s, "world": np.arange(W), "edge": d.edge_id,
                                      "flow_veh_h": d.flow_veh_h, "density_veh_km": d.density_veh_km,
                                      "speed_mps": d.speed_mps}))
        self._detector_rows.append(pd.concat(rows, ignore_index=True))
        self.datacollector.collect(self)
        self.lane_acc_interval.zero_()

    # --- outcomes -------------------------------------------------------------------------
    def trips(self) -> pd.DataFrame:
        """All loaded vehicles: one row each (arrived ones have ``arrive_s``)."""
        st = {k: v.cpu() for k, v in self.state.items()}
        depart = self.pop.depart
        loaded = torch.isfinite(depart) & (depart <= self.time_s + 1e-9) & (self.pop.flow >= 0)
        w, s = loaded.nonzero(as_tuple=True)
        route = self.pop.flow[w, s]
        ins = st["insert_step"][w, s]
        arr = st["arrive_step"][w, s]
        inserted = ins >= 0
        arrived = arr >= 0
        ins_t = torch.where(inserted, self.begin + ins.double() * self.dt, torch.nan)
        arr_t = torch.where(arrived, self.begin + arr.double() * self.dt, torch.nan)
        return pd.DataFrame({
            "world": w.numpy(),
            "vehicle_id": self.pop.vehicle_id[w, s].numpy(),
            "flow": np.asarray(self.flow_ids, dtype=object)[route.numpy()] if len(route) else [],
            "group": np.asarray([f.group or f.id for f in self.scenario.demand.flows], dtype=object)[route.numpy()]
            if len(route) else [],
            "depart_s": depart[w, s].numpy(),
            "insert_s": ins_t.numpy(),
            "arrive_s": arr_t.numpy(),
            "travel_time_s": (arr_t - ins_t).numpy(),
            # the route this world drove (an intervention may have rerouted the flow)
            "route_length_m": self.routes_cpu.route_length_m[self.veh_full["route"].cpu()[w, s]].numpy(),
            "delay_s": st["time_loss"][w, s].double().numpy(),
            "depart_delay_s": (torch.where(inserted, ins_t, self.time_s) - depart[w, s]).numpy(),
            "stops": st["stops"][w, s].numpy(),
            "status": np.asarray(["waiting", "running", "arrived"], dtype=object)[st["status"][w, s].numpy()],
        })

    def results(self) -> RunResult:
        trips = self.trips()
        rows = []
        for w in range(self.W):
            t = trips[trips["world"] == w]
            done = t[t["status"] == "arrived"]
            inserted = t["status"] != "waiting"
            rows.append({
                "world": w,
                "replication": int(self.worlds.replication[w]),
                "arm": int(self.worlds.arm[w]),
                "mean_travel_time_s": float(done["travel_time_s"].mean()) if len(done) else np.nan,
                "mean_delay_s": float(done["delay_s"].mean()) if len(done) else np.nan,
                "throughput_veh": int(len(done)),
                "vehicles_loaded": int(len(t)),
                "vehicles_inserted": int(inserted.sum()),
                "vehicles_in_network_end": int((t["status"] == "running").sum()),
                "vehicles_waiting_to_insert_end": int((t["status"] == "waiting").sum()),
                # time lost while driving, plus time spent waiting to enter, in vehicle-hours
                "total_delay_veh_h": float(t["delay_s"].sum() + t["depart_delay_s"].sum()) / 3600.0,
                "mean_stops": float(done["stops"].mean()) if len(done) else np.nan,
                "mean_depart_delay_s": float(t.loc[inserted, "depart_delay_s"].mean()) if inserted.any() else np.nan,
            })
        worlds = pd.DataFrame(rows)
        groups = self._group_outcomes(trips)
        tables = {
            "trips": trips,
            "timeseries": pd.concat(self._series, ignore_index=True) if self._series else pd.DataFrame(),
            "detectors": pd.concat(self._detector_rows, ignore_index=True) if self._detector_rows else pd.DataFrame(),
            "edges": self.edge_table(),
        }
        if self._trajectories:
            tables["trajectories"] = pd.concat(self._trajectories, ignore_index=True)
        return RunResult(worlds=worlds, metrics=list(METRICS), tables=tables, groups=groups)

    def _group_outcomes(self, trips: pd.DataFrame) -> pd.DataFrame:
        done = trips[trips["status"] == "arrived"]
        if done.empty:
            return pd.DataFrame(columns=["world", "group_kind", "group", "mean_travel_time_s", "mean_delay_s"])
        g = done.groupby(["world", "group"]).agg(mean_travel_time_s=("travel_time_s", "mean"),
                                                 mean_delay_s=("delay_s", "mean"),
                                                 throughput_veh=("vehicle_id", "size")).reset_index()
        g.insert(1, "group_kind", "origin")
        return g

    def edge_table(self) -> pd.DataFrame:
        """Per world and edge: vehicle-seconds, mean speed, delay (s) accumulated over the run."""
        W, L = self.W, self.net.n_lanes
        acc = (self.lane_acc_total + self.lane_acc_interval).view(W, L, 3).cpu().numpy()
        rows = []
        net = self.scenario.network
        for i, e in enumerate(self.compiled.edge_ids):
            a = acc[:, self._edge_lanes[i], :].sum(axis=1)
            edge = net.edges[e]
            shape = edge.lanes[0].shape
            (x1, y1), (x2, y2) = (shape[0], shape[-1]) if len(shape) >= 2 else (
                (net.junctions[edge.from_node].x, net.junctions[edge.from_node].y),
                (net.junctions[edge.to_node].x, net.junctions[edge.to_node].y))
            with np.errstate(invalid="ignore", divide="ignore"):
                rows.append(pd.DataFrame({"world": np.arange(W), "edge": e, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
                                          "lanes": len(edge.lanes), "length_m": edge.length,
                                          "vehicle_s": a[:, 0] * self.dt,
                                          "mean_speed_mps": np.where(a[:, 0] > 0, a[:, 1] / a[:, 0], np.nan),
                                          "delay_s": a[:, 2]}))
        return pd.concat(rows, ignore_index=True)

    def write_figures(self, result: RunResult, figdir) -> list[str]:
        """The network map coloured by delay and the network time series."""
        from twins import plots

        e = result.tables["edges"].assign(delay_veh_h=lambda d: d["delay_s"] / 3600.0)
        ax = plots.network_map(e, "delay_veh_h", label="delay accumulated on the edge (veh·h, mean over worlds)")
        ax.set_title(f"{self.scenario.name}: where delay accumulates")
        plots.save(ax, figdir / "network_delay.png")
        fig = plots.timeseries(result.tables["timeseries"], ["vehicles_in_network", "mean_speed_mps", "arrivals",
                                                             "queued_vehicles", "waiting_to_insert"])
        plots.save(fig, figdir / "timeseries.png")
        return ["network_delay.png", "timeseries.png"]

    # --- adaptive signal control (worlds.params["max_pressure"]) ------------------------------------
    def lane_queues(self, halted_only: bool = False) -> torch.Tensor:
        """Vehicles per (world, lane) now, ``[W, L]`` float64: running ones (or only the halted ones)."""
        W, L = self.W, self.net.n_lanes
        st = self.state
        sel = st["status"] == kernels.RUNNING
        if halted_only:
            sel = sel & st["halted"]
        idx = (st["world"] * L + st["lane"])[sel]
        q = torch.zeros(W * L, dtype=torch.float64, device=self.device)
        q.index_add_(0, idx, torch.ones(idx.numel(), dtype=torch.float64, device=self.device))
        return q.view(W, L)

    def _max_pressure_signal(self, t: float) -> torch.Tensor:
        """Signal codes ``[W, G]``: max pressure (:mod:`.control`) at the programs ``worlds.params["max_pressure"]``
        [W, P] enables, the fixed-time plan everywhere else (bit for bit)."""
        from . import control

        wp = self.worlds.params
        fixed = kernels.signal_codes(t, self.signal_durations, self.signal_offsets, self.net.phase_code,
                                     self.net.link_program, self.net.link_local)
        enabled = wp["max_pressure"].to(self.device, torch.bool)
        if self.step_index == 0:  # a fresh run (or a rebuilt twin): the controller starts from the plan
            self._mp_tables, self._mp_state = control.program_tables(self.net), None
        if fixed.shape[1] == 0 or not bool(enabled.any()):
            return fixed
        codes, _, self._mp_state = control.max_pressure_codes(
            self._mp_state, t, self.lane_queues(), self.signal_durations, self.signal_offsets, self.net,
            self._mp_tables, wp["max_pressure_min_green_s"], wp["max_pressure_max_green_s"],
            wp["max_pressure_interval_s"])
        return torch.where(enabled[:, self.net.link_program], codes, fixed)
