"""The traffic twin's Mesa agents and views: what a person reasons about at a junction or a bus stop.

Signal controllers, edge detectors, bus lines and bus stops are Mesa agents placed on the twin's
``mesa.discrete_space.Network`` of junctions (:meth:`TrafficTwin._build_agents`); each reads its
per-world numbers from the twin's tensors. Vehicles are tensor columns (``twin.state``, ``twin.drivers``); one
world's vehicles are a ``mesa.agent.AgentSet`` of :class:`Vehicle` agents (:meth:`TrafficTwin.vehicles`), built
when asked for, whose attributes read (and, for position and speed, write) that world's columns.
:class:`VehicleView` is a read-only snapshot of one vehicle (:meth:`TrafficTwin.vehicle`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import math

import mesa
import numpy as np
import torch
from mesa.discrete_space import FixedAgent

from . import kernels, transit

if TYPE_CHECKING:
    from .model import TrafficTwin


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


class Vehicle(mesa.Agent):
    """One vehicle (slot ``slot``) of world ``world``, over the twin's tensor columns, read live: what a Mesa user
    inspects or nudges between steps (``pos_m`` and ``speed_mps`` write the state; the step re-sorts a lane whose
    order a write changed). Not registered with the model (``model.agents`` keeps the junction agents); the twin
    keeps one agent per vehicle asked for, so the same vehicle is the same agent. ``unique_id`` is the vehicle's
    id (the same in every world and arm)."""

    def __init__(self, model: "TrafficTwin", world: int, slot: int):
        # no mesa.Agent.__init__: it would register every vehicle of every world with the model
        self.model, self.world, self.slot = model, int(world), int(slot)
        self.unique_id = int(model.pop.vehicle_id[self.world, self.slot])

    def _get(self, column: str):
        return getattr(self.model.state, column)[self.world, self.slot].item()

    @property
    def status(self) -> str:
        return kernels.STATUS_NAMES[self._get("status")]

    @property
    def lane(self) -> str | None:
        """The lane's id while running, else None."""
        return self.model.net_cpu.lane_ids[self._get("lane")] if self._get("status") == kernels.RUNNING else None

    @property
    def pos_m(self) -> float:
        """The front bumper's distance from the lane's start (m; negative while crossing the junction before it)."""
        return float(self._get("pos"))

    @pos_m.setter
    def pos_m(self, x: float) -> None:
        m = self.model
        top = float(m.net_cpu.lane_length[self._get("lane")])
        if self._get("status") != kernels.RUNNING or not 0.0 <= float(x) <= top:
            raise ValueError(f"Vehicle.pos_m = {x!r} (vehicle {self.unique_id}, world {self.world}, "
                             f"{self.status}): valid only for a running vehicle, from 0 to its lane's length {top} m")
        m.state.pos[self.world, self.slot] = float(x)
        m.lane_order_changed()

    @property
    def speed_mps(self) -> float:
        return float(self._get("speed"))

    @speed_mps.setter
    def speed_mps(self, v: float) -> None:
        if not (math.isfinite(float(v)) and float(v) >= 0.0):
            raise ValueError(f"Vehicle.speed_mps = {v!r} (vehicle {self.unique_id}): a finite speed >= 0 m/s")
        self.model.state.speed[self.world, self.slot] = float(v)

    @property
    def route(self) -> tuple[str, ...]:
        return self.model.route_edge_ids(int(self.model.drivers.route[self.world, self.slot]))

    @property
    def edge(self) -> str | None:
        """The edge it drives on (None unless running)."""
        return self.route[self._get("route_pos")] if self._get("status") == kernels.RUNNING else None

    @property
    def time_loss_s(self) -> float:
        return float(self._get("time_loss"))

    def view(self) -> VehicleView:
        return self.model.vehicle(self.world, self.unique_id)

    def remove(self) -> None:
        raise TypeError("a vehicle is a view of the twin's tensors; it cannot be removed (a demand intervention "
                        "thins flows before the run)")


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
        x = (t - self.offset(world)) % sum(d)  # SUMO's cycle position
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


class BusLineAgent(FixedAgent):
    """A bus line: dispatches a bus every headway (per world) from its first edge's start junction."""

    def __init__(self, model: "TrafficTwin", index: int, line: transit.BusLine, cell):
        super().__init__(model)
        self.index = index
        self.line = line
        self.cell = cell

    def headway_s(self, world: int = 0) -> float:
        return float(self.model.bus_headway[world, self.index])

    def dispatch_times(self, world: int = 0) -> list[float]:
        t = self.model.bus_dispatch[world, self.index]
        return [float(x) for x in t[torch.isfinite(t)]]


class BusStopAgent(FixedAgent):
    """A bus stop: the passengers waiting there now, per world."""

    def __init__(self, model: "TrafficTwin", index: int, stop_id: str, cell):
        super().__init__(model)
        self.index = index
        self.stop_id = stop_id
        self.cell = cell

    def waiting(self) -> np.ndarray:
        m = self.model
        arrived = (m.pax_arrivals[:, self.index] <= m.time_s + 1e-9).sum(-1)
        return (arrived - m.pax_served[:, self.index]).cpu().numpy()
