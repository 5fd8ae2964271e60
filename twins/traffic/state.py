"""The traffic twin's state and the step's inputs as typed records, with their units.

Every record is a dataclass of tensors with one entry per vehicle slot: ``[W, S]`` in the twin (world, slot), and
flattened to ``[N]`` over a window of slots when the kernels step it. Slots hold the vehicles in departure order;
an index that names another vehicle (``leader``, ``lc_yield``) is a slot within the world in the twin and a
window-flat index in the kernels (:meth:`TrafficTwin.step` converts). Integers are int64 unless said; lengths m,
speeds m/s, times s; floats are the twin's dtype unless said.

- :class:`VehicleState`: what changes as vehicles move (the kernels' rules 2-12 read and write it);
- :class:`Drivers`: what each vehicle brings and never changes (its route and driver parameters);
- :class:`StepSettings`: the step's settings for the whole run (time step, car-following model, rules on);
- :class:`StopTables`: the bus stops the kernel's rule 7 reads;
- :class:`StepResult`: what :func:`twins.traffic.kernels.step` returns;
- inside the step: :class:`Movers` (the vehicles that move, with the parameters the move reads),
  :class:`Surroundings` (where they look up leaders and lane tails) and :class:`Moved` (rules 4-8's result);
  :class:`Teleported` (rule 12's).

The records are plain containers: the kernels stay pure functions of them (no methods that compute).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from twins.core.records import Columns

Tensor = torch.Tensor


@dataclass
class VehicleState(Columns):
    """Per-slot state; the optional columns exist only where their rule is on."""

    world: Tensor  # the slot's world (constant)
    status: Tensor  # kernels.WAITING, RUNNING or ARRIVED
    lane: Tensor  # lane index in the network tables (meaningful while running)
    pos: Tensor  # m: the front bumper from the lane's start; negative while crossing the junction before it
    speed: Tensor  # m/s
    route_pos: Tensor  # index of the current edge in the route
    insert_step: Tensor  # step at which the vehicle entered the network (-1: not yet)
    arrive_step: Tensor  # step after which it arrived (-1: not yet)
    time_loss: Tensor  # s lost against driving at the desired speed (SUMO's timeLoss)
    stops: Tensor  # int32: times the vehicle came to a halt
    halted: Tensor  # bool: below kernels.STOP_SPEED after the last step
    depart: Tensor  # float64 s: planned departure (constant)
    leader: Tensor  # the vehicle ahead on the lane (-1: none); rule 2
    conn: Tensor  # the connection the vehicle entered its lane by (-1: none); rules 4 and 10
    # the neighbour this one also follows: one it lets in, or the target lane's leader it falls behind (-1: none);
    # rule 11, with lane changing
    lc_yield: Tensor | None = None
    # m: where on its lane the vehicle stops next step (+inf: no such point; rule 11, with lane changing): an urgent
    # strategic change across more than one lane keeps room ahead of it (SUMO's myLeadingBlockerLength)
    lc_stop: Tensor | None = None
    # SUMO LC2013's keep-right sum (rule 11, with lane changing; <= 0): the vehicle wants its right lane below -2
    lc_keep_right: Tensor | None = None
    # m/s: SUMO LC2013's look-ahead speed (rule 11, with lane changing), a decaying memory of the recent top speed
    lc_look_ahead_speed: Tensor | None = None
    next_stop: Tensor | None = None  # the bus's next stop (-1: none); rule 7, with buses
    dwell: Tensor | None = None  # s left at the stop; rule 7
    load: Tensor | None = None  # passengers on board (the twin's boarding, not the kernel)


@dataclass
class Drivers(Columns):
    """Per-slot constants: the route and the driver and vehicle parameters (SUMO's vType attributes)."""

    route: Tensor  # the route's row in the route tables (-1: none)
    length: Tensor  # m
    min_gap: Tensor  # m: gap kept to the leader when standing (IDM's s0)
    accel: Tensor  # m/s²: maximum acceleration
    decel: Tensor  # m/s²: comfortable deceleration
    two_sqrt_ab: Tensor  # m/s²: 2·sqrt(accel·decel), once per vehicle (IDM)
    tau: Tensor  # s: desired time headway (IDM's T, Krauss's reaction time)
    delta: Tensor  # IDM's acceleration exponent
    speed_factor: Tensor  # the driver's multiple of the lane's speed limit
    max_speed: Tensor  # m/s: the vehicle's top speed
    sigma: Tensor  # Krauss's driver imperfection (dawdling), 0-1
    depart_speed: Tensor  # m/s: the highest speed at insertion


@dataclass(frozen=True)
class StepSettings:
    """The step's settings, fixed for a run."""

    dt: float  # s per step
    W: int  # worlds
    span: float  # m: more than any lane's length (sort keys: world·lane·span + pos)
    substeps: int = 1  # IDM sub-steps per step
    insert_rounds: int = 1  # insertion attempts per (world, first edge) and step
    delta: int | None = None  # the IDM exponent when every vehicle shares it (faster), else None
    fused: bool = False  # IDM and movement through torch.compile (same numbers on CPU)
    cf: int = 0  # car-following model: kernels.IDM or kernels.KRAUSS
    lane_change: bool = False  # rule 11
    depart_avg: bool = False  # rule 3: some vehicles enter at their lane's mean speed (depart_speed DEPART_AVG)
    # every rule over the whole window with masks, never on index subsets found by ``nonzero``: no data-dependent
    # shape and no host read for it (CUDA; the same numbers, more work where few vehicles run)
    fixed_shape: bool = False


@dataclass(frozen=True)
class StopTables:
    """Bus stops [Z] as rule 7 reads them."""

    route_pos: Tensor  # the stop's edge as a position in its line's route
    pos: Tensor  # m along that edge
    next: Tensor  # the line's next stop (-1: none)


@dataclass
class StepResult:
    """What one step gives back: the new state, each lane's tail, and this step's observations."""

    state: VehicleState  # new tensors (the input is not modified)
    lane_tails: Tensor  # [W*L + 1] each lane's upstream-most vehicle (-1: empty; the last entry is a sentinel)
    observed_lane: Tensor  # [N] each vehicle's lane before the step's transitions (detectors, maps)
    observed_running: Tensor  # [N] bool: running during the step
    time_loss: Tensor  # [N] s lost this step
    docked: Tensor | None = None  # [N] bool: a bus reached its stop this step (rule 7)


@dataclass
class Movers(Columns):
    """The vehicles a step moves, one entry each (the running part of a window, or all of it with a mask): their
    state and the driver parameters the move reads (rules 4-10)."""

    world: Tensor
    route: Tensor  # the route's row, clamped to >= 0
    lane: Tensor
    pos: Tensor
    speed: Tensor
    route_pos: Tensor
    leader: Tensor  # window-flat index of the vehicle ahead (-1: none)
    running: Tensor  # bool: the entries that move
    conn: Tensor
    length: Tensor
    min_gap: Tensor
    decel: Tensor
    speed_factor: Tensor
    max_speed: Tensor
    accel: Tensor
    two_sqrt_ab: Tensor
    tau: Tensor
    delta: Tensor | int  # per vehicle, or the exponent every vehicle shares
    sigma: Tensor | None = None  # with Krauss
    lc_yield: Tensor | None = None  # with lane changing
    lc_stop: Tensor | None = None  # with lane changing
    next_stop: Tensor | None = None  # with buses
    dwell: Tensor | None = None  # with buses
    stood: Tensor | None = None  # s stood so far (rule 12's counter): rule 10's impatience


@dataclass
class Surroundings:
    """What movers look up around them: the window's full columns (leaders, lane tails) and per-lane room."""

    slot: Tensor  # [n] each mover's index into the window's columns
    pos: Tensor  # [N] m
    length: Tensor  # [N] m
    speed: Tensor  # [N] m/s
    conn: Tensor  # [N] the connection each entered its lane by (-1: none)
    lane_tails: Tensor  # [W*L + 1] each lane's upstream-most vehicle (-1: empty)
    space: Tensor  # [W*L + 1] float64 m: room behind each lane's last standing vehicle (kernels.space_till_standing)
    entry_tails: Tensor | None = None  # [W*L + 1] the tails a vehicle crossing into a lane sees (kernels.entry_tails)
    leader: Tensor | None = None  # [N] the window's leaders (with ``waiting``: kernels.past_waiting)
    waiting: Tensor | None = None  # [N] bool: waiting at an internal junction (kernels.waiting_inside)
    free: Tensor | None = None  # [W*L + 1] float64 m: each lane's length less its vehicles (kernels.space_till_standing)


@dataclass
class Moved:
    """What rules 4-8 give back for the movers, one entry each."""

    pos: Tensor
    speed: Tensor
    lane: Tensor
    route_pos: Tensor
    arrived: Tensor  # bool: left the network this step
    halted: Tensor  # bool: below kernels.STOP_SPEED
    time_loss: Tensor  # s lost this step
    conn: Tensor
    next_stop: Tensor | None = None  # with buses
    dwell: Tensor | None = None
    docked: Tensor | None = None  # bool: reached its stop this step


@dataclass
class Teleported:
    """Rule 12's result on one window ``[W, n]`` (leaders as window slots)."""

    status: Tensor
    route_pos: Tensor
    speed: Tensor
    leader: Tensor
    lane_tails: Tensor  # [W, L]
    gone: Tensor  # bool: teleported this step
    arrived: Tensor  # bool: of those, the ones with no edge left
