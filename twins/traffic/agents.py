"""The traffic twin's Mesa agents and views: what a person reasons about at a junction or a bus stop.

Signal controllers, edge detectors, bus lines and bus stops are Mesa agents placed on the twin's
``mesa.discrete_space.Network`` of junctions (:meth:`TrafficTwin._build_agents`); each reads its
per-world numbers from the twin's tensors. :class:`VehicleView` is a read-only snapshot of one
vehicle (vehicles themselves are tensor columns, :meth:`TrafficTwin.vehicle`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from mesa.discrete_space import FixedAgent

from . import transit

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
