"""Per-agent reference implementation of the traffic rules (plain Mesa, plain Python).

This is the *test oracle* for :mod:`twins.traffic.kernels`: one world, each
vehicle a :class:`mesa.Agent` holding Python floats, each signal program a
:class:`mesa.Agent`, every rule written as an ordinary loop over vehicles.
No tensors take part in the rules; the network is read from the plain-Python
:class:`~twins.traffic.network.RoadNetwork` (not from the compiled tensors),
so the compilation of lanes, connections, route lane masks and signal codes
is checked as well.

Rules (numbered as in :mod:`twins.traffic.kernels`), in the order one step
applies them; every vehicle decides from the state at the start of the
phase it is in (synchronous update, like the kernel):

1. Signals: each :class:`ReferenceSignal` finds its phase from
   ``(t - offset) mod cycle`` (SUMO's cycle position) and exposes a code per link.
2. Leaders: per lane, running vehicles sorted by position; a vehicle's
   leader is the next one downstream; the lane's *tail* is the upstream-most.
3. Insertion, SUMO's way, in ``insert_rounds`` rounds: per first edge the
   waiting vehicles whose departure has come (``depart <= t + 1e-9``) try in
   (depart, vehicle id) order. In each round the first waiting vehicle of each
   open edge picks the allowed lane of that edge with the most room (rear of
   the tail, +inf if empty; lowest lane index on ties) and fits if ``room -
   length >= min_gap``: it enters with its front at ``length``, speed
   ``min(v0, max(0, (gap - min_gap) / tau), depart_speed)`` (SUMO's departSpeed; "avg": the lane's mean speed,
   its limit when empty, and on an occupied lane it waits while the gap allows less), its leader is the lane's tail
   and it becomes the new tail. A vehicle that does not fit closes the lanes
   it could take (all full) for the rest of the step; later vehicles of the
   edge may still take its other lanes (SUMO's ``MSEdge::insertVehicle``).
4. Each running vehicle (including the ones just inserted) chooses the lane
   of its next edge (allowed lanes, most room, from the tails *after*
   insertion). It must stop at the stop line on red, on yellow if it can
   still stop (``stops_at_yellow``: SUMO's ``canBrake``), when no next lane
   exists or no connection leads
   there, and (keep the junction clear) when the chosen lane has less room
   behind its last standing vehicle than ``length + min_gap``: the back of
   its upstream-most halted vehicle (speed < 0.1 m/s), less the lengths
   plus min gaps of the vehicles behind it (SUMO's space till the last
   standing vehicle; no halted vehicle: the lane's length less every vehicle
   on it while its last vehicle has to wait at its next link, red or a yellow
   it stops for, or following one on the lane slower than its decel, else no
   limit, kernels.space_till_standing, carried one lane further where nothing
   stops on the next lane, kernels.room_beyond (room_on); only where the connection
   keeps its junction clear, ``RoadNetwork.keeps_clear``). The junction gap is
   ``d + via + rear(tail)`` (+inf if the lane is empty); without lane
   changing, the nearer gap ``d + via + rear(t)`` to the tail ``t`` of any
   lane of the next edge that is still inside the junction (position < 0)
   on the same connection, and that one's speed, where there is one.
   The stop line is the obstacle (gap ``d' + min_gap``, speed 0, physical
   gap ``d``) if the vehicle must stop and ``d' + min_gap <=`` the
   junction gap, where ``d'`` is ``d`` less SUMO's ``jmStoplineGap`` (1 m;
   less where braking needs the room, at least 0.1 m: ``stop_line``) when a
   red or yellow light holds it, else ``d``; otherwise a front vehicle follows the tail of the
   chosen lane at the junction gap (spillback), or the road is free. On its
   last edge the road is free. A vehicle with a leader on its lane follows it;
   one whose link is red, or a yellow it can still stop for, also brakes for
   its stop line (IDM toward a standing obstacle ``stop_line`` short of it, or
   Krauss's safe stop speed for that distance), and so does a front vehicle its signal holds while it follows one
   still inside the junction.
5. IDM integrated in ``substeps`` sub-steps of ``h = dt / substeps`` with the
   leader's speed held: ``v <- max(0, v + a(v, s)·h)``, then (with more than
   one sub-step) ``s <- s - max(0, (v - v_lead)·h)``. ``2·sqrt(a·b)`` is a
   per-vehicle constant. The result is capped at ``max(gap_phys, 0) / dt``;
   ``x' = x + v'·dt``. Toward a standing point rather than a vehicle (a stop
   line, a minor link's waiting point, a bus stop, room kept for a lane
   change: any obstacle given as ``distance + min_gap`` with speed 0 above)
   IDM runs on the distance with ``s0 = 0`` and ``gap_phys`` is at most that
   distance (SUMO's ``MSCFModel_IDM::stopSpeed``); from standstill, where IDM
   gives less than 1e-3 m/s, it creeps at ``safe_stop_speed(distance, decel,
   dt, dt)``, and nearer than 1 cm it stops.
6. If ``x' > lane length`` (strictly: a vehicle held exactly at the stop
   line stays): on the last edge the vehicle arrives (arrival step = step
   index + 1); otherwise it crosses to the chosen next lane and lands at
   ``x' - L - via``. One entry per target lane per step: of the vehicles
   crossing into one lane, the one landing furthest ahead (ties: earliest in
   slot order) enters; the others are held at the stop line
   (``x' = L``, ``v' = (L - x) / dt``). Time loss ``dt·max(0, 1 - v'/v0)``
   and stops (transitions into ``v' < 0.1`` m/s) accumulate while running,
   with the final ``v'``.
7. Bus stops (a vehicle with ``stops``): on the edge of its next unserved
   stop, the stop is the obstacle (gap ``d_stop + min_gap``, speed 0) if that
   is nearer than the obstacle of rules 4–5, and the physical gap is at most
   ``d_stop`` (decided from the gaps *before* this rule, like the kernel).
   While its ``dwell`` is positive the bus keeps speed 0 and ``dwell``
   drops by ``dt``; at or below 1e-9 the stop is served. A bus that ends the
   step halted (``v' < 0.1``) within ``DOCK_REACH_M`` before the stop docks:
   the model's ``dwell_of(vehicle id, stop id, time)`` gives its dwell (the
   twin's boarding is checked separately); a dwell of 0 serves the stop at
   once. On an edge with a stop the bus may use lane 0 only, where the route
   allows lane 0 (curbside stops).
8. Turning speeds (``Connection.via_speed``; the slowest connection from
   one route edge to the next): while the front is inside the junction
   (``pos < 0`` on the lane entered) the desired speed is at most
   ``via_speed · speed_factor``; on approach, with ``u = min(via_speed ·
   speed_factor, max_speed)`` of the crossing ahead, ``d`` the distance to
   the stop line and SUMO's secure gap ``g = (n·u - r·n·(n+1)/2)·dt + u·tau``
   (``r = decel·dt``, ``n = floor(u / r)``): a vehicle faster than ``u``
   takes at most the IDM speed for a standing obstacle at ``max(d, g)``
   without min gap, and closer than ``g`` at most ``u`` (SUMO's
   ``MSCFModel_IDM::freeSpeed``). The time loss of a step is measured
   against the desired speed the vehicle planned with.
9. Car following: IDM (rule 5) or SUMO's Krauss (``car_following="Krauss"``):
   ``v_max = min(v0, v + accel·dt, v_safe, cap)`` with ``v_safe`` SUMO's
   ``maximumSafeStopSpeedEuler(gap - min_gap + brakeGap(v_lead))`` and the
   turning-speed ``cap`` from SUMO's generic ``freeSpeed``; then dawdling
   (``dawdle2``) by the draw ``u`` the model's ``dawdle`` gives each vehicle
   and step, never below ``min(max(v - decel·dt, 0), v_max)``.
10. Right of way: each front vehicle that will pass its line (not held by
   its signal or keep-clear) announces [arrival, rear leaves the junction
   path] (accelerating at ``accel`` to its desired speed, capped by the
   turning speed), if it can move on (more than 0.1 m beyond its min gap to the
   next obstacle past the line, or moving) and, waiting at its own internal
   junction, is within its visibility distance of that point (or could not stop
   there) with no foe inside the junction yet to cross its path (SUMO's
   ``abortRequestAfterMinor`` and link leaders); a vehicle still inside a junction
   announces [0, (length - pos) / max(speed, 0.1)], unless it is short of its
   internal junction; per connection the union. A front vehicle on a minor
   connection (unsignalized ``m = s w Z``, or a signal showing ``g``) without an
   internal junction (whether it can move on or not) waits at the line when a
   connection it yields to (the junction's ``response``) has a window overlapping its own; a vehicle inside
   the junction on a foe connection into the same edge does not count (a merge:
   it is a leader). One with an internal junction (``wait_length > 0``) passes
   the line and waits at that junction by the same test, timed from there; while
   it waits it is not in the way of vehicles entering its target lane by another
   path, nor counted in that lane's space, nor the leader of a vehicle inside
   the junction on another connection (the kernel's ``past_waiting``: the lane
   order's leader, up to two waiting ones skipped). Approaching such a link it could still stop for
   (``v² <= 2·decel·d``), a vehicle farther than the connection's visibility
   from its waiting point (the line, or ``wait_length`` past it: an internal
   junction) follows a standing obstacle at that point, also while its front is
   inside the junction short of it.
11. Lane changing (only with ``lane_changing=True``; the kernel's
   ``change_lanes``). Each route edge has *best lanes*, computed here from the
   network's connections: on the last edge every lane; before, of the lanes
   with a connection to the next edge, those whose connections leave the
   fewest lane changes (``|to lane - best lane|``) to a best lane of the next
   edge. A vehicle inserts on a best lane of its first edge (most room), and
   crosses into one of the lanes its connection leads to (those that are
   best lanes of the next edge if any, most room). After the move (rule 6),
   every running vehicle whose front is on a lane of a multi-lane edge
   (``pos >= 0``, as SUMO changes lanes by the front's lane; a bus dwelling at its stop does not) decides from that
   state, all at once: off the best lanes it wants to change towards the
   nearest one (lower index on ties: *strategic*) when that is urgent (below)
   or it would be no slower there (its speed gain, below, at least 0); on a
   best lane it wants a neighbouring lane when the speed it could reach there
   next step (Krauss safe speed behind the new leader, ``v0`` and
   ``v + accel·dt``) exceeds the one behind its own leader by more than 1 m/s
   plus 0.5 times the speed its new follower would lose (MOBIL; right before
   left on ties), a best lane or one whose continuation on the route (SUMO's
   ``LaneQ.length``, :meth:`lane_continuation`) less its position and its own
   lane's occupation, halved, is at least the look-ahead of the change back.
   A change is safe when the gap to the new leader (net of min gap) is at least
   ``brakeGap(v, decel, tau) - brakeGap(v_leader, decel, 0)`` and the new
   follower's likewise. Of the safe changes into one gap (same new leader, or
   the lane's front) the one furthest ahead, then earliest in slot order,
   happens. A strategic change that is not safe asks the target lane's
   follower (if its front is behind the vehicle's rear) to let it in: next
   step that follower also follows the requester (gap to its rear, at least
   0, its speed) where that is nearer than its obstacle (one requester per
   follower: the nearest, lowest position then earliest slot, after swaps).
   A strategic change blocked by the target lane's leader that is urgent
   (room left along the lane's continuation less the best lane's occupation, per lane to cross,
   under ``v·10 s`` (to the left ``v·20 s``) plus two lengths with min gap, ``v`` its look-ahead speed: raised to
   its speed where that is higher, else ``0.9·v + 0.1·speed``, once per neighbour lane, right then left, each
   direction judged after its own update, 0 again after any change; SUMO's ``myLookAheadSpeed``)
   and cannot overtake that leader before the lane ends (not faster; or the
   room less its brake gap, or the speed difference times the time left over
   two, short of the distance to pass it) falls behind it: not asked to let
   anyone in and not swapping, it follows that leader next step the same way
   (SUMO's ``informLeader``). Two vehicles whose strategic changes block each other
   (the target lane's leader if it blocks, else the follower) swap lanes and
   positions, where each fits the place it takes (not longer than the vehicle
   it replaces, or its rear at or ahead of the front of the vehicle behind that
   place); a change whose new leader swaps is given up where the vehicle
   taking the leader's place would reach back over its front (with equal
   lengths neither condition ever bites). A vehicle left on a lane without connection to its next edge
   waits at the lane's end.

Per-vehicle inputs. The reference checks the *dynamics*, not the noise: the
per-vehicle parameters (length, min gap, accel, decel, ``2·sqrt(accel·decel)``,
tau, delta, speed factor, max speed) and departure times are given to it as
plain floats. The usual way is :meth:`ReferenceTrafficModel.from_twin`, which
reads them from a :class:`~twins.traffic.model.TrafficTwin`'s ``pop`` /
``drivers`` tensors (converted with ``float()``) for one world, together with
that world's signal plan, IDM sub-steps and insertion rounds. Any list of
:class:`VehicleSpec` works as well (``two_sqrt_ab`` defaults to
``2·math.sqrt(accel·decel)``, correctly rounded like the model's numpy value).

Ambiguities resolved like the kernel: if two running vehicles of one lane
have exactly equal positions, the one earlier in slot order, i.e. in
(depart, vehicle id) order, counts as the upstream one (the kernel's stable
argsort); such ties are counted in ``events["position_ties"]``. The IDM
exponent is an integer and ``(v/v0)**delta`` is computed by the same binary
exponentiation as :func:`twins.traffic.kernels.int_pow` (only products, so the
two agree bit for bit). A vehicle whose lane has no connection to its next
edge (impossible for lanes chosen through the route's lane masks) is held at
the stop line and never crosses.

``events`` counts what happened so a test can check that a scenario
exercised the rules: insertions (``insertions_later_round``: in a round after
the first), blocked insertions, lost claims, transitions, arrivals,
red/yellow stops, keep-clear holds, stop lines behind a vehicle still in the
junction (``junction_nearer``), spillback holds and vehicles held at the line
by the one-entry rule (``held_at_line``); plus diagnostics:
``same_step_entries`` (several vehicles entering one lane in one step; zero
under rule 6), ``overlaps`` (vehicle bodies overlapping on a lane),
``hard_stops`` (the one-step gap cap braking harder than 9 m/s²) and
``red_crossings`` (a vehicle crossing a stop line on red). With lane changing
(rule 11): ``lc_strategic``, ``lc_speed_gain``, ``lc_swaps`` (vehicles that
swapped), ``lc_swaps_unfit`` (vehicles of a blocking pair that could not swap:
one would not fit the other's place), ``lc_given_up_for_swap`` (a change given
up because a longer vehicle swapped into its new leader's place),
``lc_requests``, ``lc_gap_lost`` (a safe change given up to a vehicle further
ahead entering the same gap), ``lc_falling_behind`` (changes that fell behind
the target lane's leader), ``lc_cooperating`` (steps spent following a
requester or such a leader) and ``lc_wrong_lane_wait`` (front-vehicle steps
held at the end of a lane that does not continue the route).

Length: the oracle states every rule of the step (kernels rules 1-12) in plain per-vehicle Python, in the
kernels' order, so that a rule and its reference read side by side; split it only together with the kernels.
"""
from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass

import mesa

from .network import GREEN, YELLOW, RoadNetwork, best_lanes_lookahead, conflict_zone, same_source_siblings, zone_start

WAITING, RUNNING, ARRIVED = 0, 1, 2
STOP_SPEED = 0.1  # m/s, as kernels.STOP_SPEED
DOCK_REACH_M = 1.0  # m, as kernels.DOCK_REACH_M
JM_TIMEGAP_MINOR = 1.0  # s, as kernels.JM_TIMEGAP_MINOR (SUMO's jmTimegapMinor)
TIME_TO_IMPATIENCE_S = 180.0  # s, as kernels.TIME_TO_IMPATIENCE_S (SUMO's --time-to-impatience)
MOVE_SLACK_M = 0.1  # m, as kernels.MOVE_SLACK_M
WAIT_SLACK_M = 1e-3  # m, as kernels.WAIT_SLACK_M
NUMERICAL_EPS = 1e-6  # as kernels.NUMERICAL_EPS (a floor on the mean speed of a leave time here)
STANDING_EPS = 1e-3  # kernels.STANDING_EPS
STOP_GAP_EPS = 0.01  # kernels.STOP_GAP_EPS
ZONE_BINS = 16  # parts of a path across a junction, as kernels.ZONE_BINS
SIG_GREEN, SIG_YELLOW, SIG_RED, SIG_GREEN_MINOR = 0, 1, 2, 3
MINOR = frozenset("m=swZ")  # unsignalized link states that yield (network.MINOR)
INF = math.inf


def int_pow(x: float, n: int, max_bits: int = 4) -> float:
    """``x ** n`` by binary exponentiation, multiplication for multiplication as the kernel's ``int_pow``."""
    out, base = 1.0, x
    for bit in range(max_bits):
        if (n >> bit) & 1:
            out = out * base
        base = base * base
    return out


@dataclass(frozen=True)
class VehicleSpec:
    """Everything one vehicle brings: route, departure and driver parameters (plain floats)."""

    vehicle_id: int
    route: tuple[str, ...]
    depart: float
    length: float
    min_gap: float
    accel: float
    decel: float
    tau: float
    delta: float
    speed_factor: float
    max_speed: float
    flow: str = ""
    two_sqrt_ab: float | None = None  # 2·sqrt(accel·decel); None: computed with math.sqrt
    sigma: float = 0.5  # Krauss dawdling (rule 9)
    depart_speed: float = float("inf")  # SUMO's departSpeed (rule 3); +inf: as fast as the gap allows
    stops: tuple = ()  # a bus's stops in route order: (route position, pos_m, stop id)


def arrival_time(d: float, v: float, a: float, vmax: float) -> float:
    """Rule 10: seconds to cover ``d`` from ``v`` accelerating at ``a`` up to ``vmax`` (the kernel's
    ``arrival_time``, SUMO's ``MSCFModel::estimateArrivalTime``)."""
    v = min(v, vmax)
    d1 = (vmax * vmax - v * v) / (2.0 * a)
    if d <= d1:
        return (math.sqrt(v * v + 2.0 * a * d) - v) / a
    return (vmax - v) / a + (d - d1) / vmax


def line_speeds(d: float, via: float, v: float, a: float, vmax: float) -> tuple[float, float]:
    """Rule 10: a vehicle's speed at a link ``d`` m ahead and at the end of the link's path (the kernel's
    ``line_speeds``, SUMO's ``estimatedLeaveSpeed``)."""
    v_arr = min(math.sqrt(min(v, vmax) ** 2 + 2.0 * a * max(d, 0.0)), vmax)
    return v_arr, min(math.sqrt(v_arr * v_arr + 2.0 * a * via), vmax)


def leave_time(t_arr: float, v_arr: float, v_out: float, via: float, length: float) -> float:
    """Rule 10: when the rear of a vehicle arriving at ``v_arr`` and leaving at ``v_out`` has left a link's path
    (the kernel's ``leave_time``, SUMO's ``MSLink::getLeaveTime``)."""
    return t_arr + (via + length) / max(0.5 * (v_arr + v_out), NUMERICAL_EPS)


def merge_unsafe(v_leave: float, decel: float, t_arr: float, impatience: float, foe_d: float, foe_v: float,
                 foe_decel: float) -> bool:
    """Rule 10: whether merging ahead of an approaching foe into the same lane is unsafe (the kernel's
    ``merge_unsafe``, SUMO's ``unsafeMergeSpeeds`` with the foe braking at its deceleration times the impatience)."""
    m = foe_decel * impatience if impatience > 0 else foe_decel
    dist = foe_d - foe_v * max(t_arr, 0.0) if impatience > 0 else foe_d
    v2 = max(foe_v * foe_v - 2.0 * m * dist, 0.0)
    return v_leave * v_leave / decel <= v2 / foe_decel


def brake_gap(v: float, decel: float, tau: float, dt: float) -> float:
    """SUMO's ``MSCFModel::brakeGapEuler`` (the kernel's ``brake_gap``, operation for operation)."""
    r = decel * dt
    n = float(math.floor(v / r))
    return (n * v - r * n * (n + 1.0) / 2.0) * dt + v * tau


def secure_gap(v: float, v_lead: float, decel: float, tau: float, dt: float) -> float:
    """SUMO's ``MSCFModel::getSecureGap`` (the kernel's ``secure_gap``): ``brakeGap(v, decel, tau) -
    brakeGap(v_lead, decel, 0)``, at least 0."""
    return max(brake_gap(v, decel, tau, dt) - brake_gap(v_lead, decel, 0.0, dt), 0.0)


def stops_at_yellow(v: float, decel: float, d: float, dt: float) -> bool:
    """SUMO's ``canBrake`` at a yellow light (the kernel's ``stops_at_yellow``)."""
    return brake_gap(v, decel, 0.0, dt) < d or v < decel * dt


JM_STOPLINE_GAP_M = 1.0  # m, as kernels.JM_STOPLINE_GAP_M (SUMO's jmStoplineGap)
POSITION_EPS_M = 0.1  # m, as kernels.POSITION_EPS_M
TLS_YELLOW_MIN_DECEL = 3.0  # m/s², as kernels.TLS_YELLOW_MIN_DECEL


def stop_line(v: float, d: float, decel: float, dt: float) -> float:
    """Where a vehicle ``d`` m before a red light (or a yellow it stops for) stops, as its distance to the line then
    (the kernel's ``stop_line``; SUMO's ``laneStopOffset``)."""
    bg = brake_gap(v, max(decel, TLS_YELLOW_MIN_DECEL), 0.0, dt)
    off = min(d - bg, JM_STOPLINE_GAP_M) if d >= bg else JM_STOPLINE_GAP_M
    return max(d - max(off, POSITION_EPS_M), 0.0)


def safe_stop_speed(gap: float, decel: float, tau: float, dt: float) -> float:
    """SUMO's ``MSCFModel::maximumSafeStopSpeedEuler`` (the kernel's ``safe_stop_speed``)."""
    if not math.isfinite(gap):
        return gap
    g = gap - 1e-6
    if g < 0:
        return 0.0
    b = decel * dt
    n = float(math.floor(0.5 - ((tau + math.sqrt(dt * dt + 4.0 * (dt * (2.0 * g / b - tau) + tau * tau)) * -0.5) / dt)))
    h = 0.5 * n * (n - 1.0) * b * dt + n * b * tau
    return n * b + (g - h) / (n * dt + tau)


def free_speed(d: float, u: float, decel: float, dt: float) -> float:
    """SUMO's generic ``MSCFModel::freeSpeed`` (Euler; the kernel's ``free_speed``)."""
    vt = u * dt
    if d < vt:
        return u
    b = decel * (dt * dt)
    y = max(((math.sqrt((b + 2.0 * vt) * (b + 2.0 * vt) + 8.0 * b * d) - b) * 0.5 - vt) / b, 0.0)
    yf = float(math.floor(y))
    exact = (yf * yf + yf) * 0.5 * b + yf * vt + (vt if y > yf else 0.0)
    return max(d - exact, 0.0) / (yf + 1.0) / dt + yf * (decel * dt) + u


LC_SPEED_GAIN = 1.0  # m/s, as kernels.LC_SPEED_GAIN (rule 11)
LC_POLITENESS = 0.5  # as kernels.LC_POLITENESS
LC_LOOK_FORWARD_S = 10.0  # s, as kernels.LC_LOOK_FORWARD_S
LC_URGENCY = 2.0  # as kernels.LC_URGENCY
LC_LOOKAHEAD_LEFT = 2.0  # as kernels.LC_LOOKAHEAD_LEFT
LC_LOOK_AHEAD_MEMORY = 0.9  # as kernels.LC_LOOK_AHEAD_MEMORY
LC_RESERVE_LEFT_M, LC_RESERVE_RIGHT_M, LC_RESERVE_SLACK_M = 40.0, 20.0, 1.0  # m, as kernels.LC_RESERVE_*
# as kernels.LC_KEEP_RIGHT_*: SUMO LC2013's keep-right
LC_KEEP_RIGHT_ACCEPT_S, LC_KEEP_RIGHT_TIME_S, LC_KEEP_RIGHT_THRESHOLD, LC_KEEP_RIGHT_SLACK = 7.0, 5.0, 2.0, 5.0 / 3.6
LC_KEEP_RIGHT_SCORE = 1e9
LC_AWAY_LANES = 2.0  # as kernels.LC_AWAY_LANES
LC_FAR_M = 1e9  # m, as kernels.LC_FAR_M


def anticipated_speed(v: float, v0: float, gap: float, v_lead: float, accel: float, decel: float, tau: float,
                      dt: float) -> float:
    """Rule 11: the speed a driver could reach next step behind a leader ``gap`` m ahead (net of its min gap;
    +inf: none): Krauss's safe speed, ``v0`` and ``v + accel·dt`` (the kernel's ``anticipated_speed``)."""
    v_safe = safe_stop_speed(gap + brake_gap(v_lead, decel, 0.0, dt), decel, tau, dt)
    return min(min(v0, v + accel * dt), v_safe)


class _Lane:
    __slots__ = ("id", "index", "length", "speed", "edge")

    def __init__(self, id_, index, length, speed, edge):
        self.id, self.index, self.length, self.speed, self.edge = id_, index, length, speed, edge


class ReferenceSignal(mesa.Agent):
    """A fixed-time signal program: phase durations, offset, and one code per link and phase."""

    def __init__(self, model, program_id: str, durations: list[float], offset: float, codes: list[list[int]]):
        super().__init__(model)
        self.program_id = program_id
        self.durations = [float(d) for d in durations]
        self.offset = float(offset)
        self.codes = codes  # codes[phase][link]
        ends, acc = [], 0.0
        for d in self.durations:
            acc += d
            ends.append(acc)
        self.ends = ends
        self.cycle = acc
        self.phase = 0
        self.phase_changes = 0

    def update(self, t: float) -> None:
        tc = (t - self.offset) % self.cycle
        phase = min(bisect.bisect_right(self.ends, tc), len(self.ends) - 1)
        if phase != self.phase and self.model.step_index > 0:
            self.phase_changes += 1
        self.phase = phase

    def code(self, link: int) -> int:
        return self.codes[self.phase][link]


class ReferenceVehicle(mesa.Agent):
    """One vehicle: Python floats, one rule at a time."""

    def __init__(self, model, spec: VehicleSpec, order: int):
        super().__init__(model)
        self.spec = spec
        self.order = order  # insertion priority: position in (depart, vehicle id) order
        self.vehicle_id = spec.vehicle_id
        self.route = list(spec.route)  # edge ids
        self.allowed = model.route_lanes(spec.route)  # per route step: allowed lane indices of that edge
        self.turn = model.route_turn_speeds(spec.route)  # per route step: the turning speed after it (rule 8)
        # rule 11: the best lanes of each route edge (before the curbside restriction below, as the kernel's
        # route_best_mask), the vehicle asking this one to let it in (None: none), and whether it is held
        self.best = model.best_lanes(spec.route) if model.lane_changing else None
        # the look-ahead's length after each route edge, and LC2013's keep-right sum (rule 11)
        self.ahead = model.route_ahead(spec.route) if model.lane_changing else None
        self.cont = model.lane_continuation(spec.route) if model.lane_changing else None
        self.keep_right = 0.0
        self.look_ahead_speed = 0.0  # LC2013's look-ahead speed (rule 11)
        self.lc_yield: ReferenceVehicle | None = None
        self.lc_stop = INF  # where on its lane it stops next step: room kept for an urgent change across lanes
        self._hold = False
        self.bus_stops = list(spec.stops)
        for k, _, _ in self.bus_stops:  # curbside stops: lane 0 where the route allows it
            if 0 in self.allowed[k]:
                self.allowed[k] = {0}
        self.next_stop = 0  # index into stops of the next unserved one
        self.dwell = 0.0
        self._docked = False
        self.length = float(spec.length)
        self.min_gap = float(spec.min_gap)
        self.accel = float(spec.accel)
        self.decel = float(spec.decel)
        self.two_sqrt_ab = (float(spec.two_sqrt_ab) if spec.two_sqrt_ab is not None
                            else 2.0 * math.sqrt(self.accel * self.decel))
        self.tau = float(spec.tau)
        self.delta = int(round(spec.delta))  # integer exponent, as the kernel
        self.speed_factor = float(spec.speed_factor)
        self.max_speed = float(spec.max_speed)
        self.sigma = float(spec.sigma)
        self.depart_speed = float(spec.depart_speed)
        self.depart = float(spec.depart)
        self.status = WAITING
        self.lane: _Lane | None = None
        self.pos = 0.0
        self.speed = 0.0
        self.route_pos = 0
        self.insert_step = -1
        self.arrive_step = -1
        self.wait_steps = 0  # rule 12: steps stood so far
        self.time_loss = 0.0
        self.stops = 0
        self.halted = False
        self.leader: ReferenceVehicle | None = None
        self.lane_leader: ReferenceVehicle | None = None  # the vehicle ahead on its lane (leader: rule 10 past it)
        self.conn_key: tuple[str, str] | None = None  # the connection it entered its lane by (rule 10)
        self._t_arr = self._t_leave = INF
        # (distance to its line, top speed, path length, leave speed) when it last looked past the line
        self._line = (0.0, INF, 0.0, INF)
        # decided in plan(), applied in commit()
        self._next_lane: _Lane | None = None
        self._via = 0.0
        self._v_new = 0.0
        self._x_new = 0.0
        self._red = False

    # --- helpers ------------------------------------------------------------------------
    def rear(self) -> float:
        return self.pos - self.length

    def desired_speed(self, lane: _Lane) -> float:
        return min(lane.speed * self.speed_factor, self.max_speed)

    def idm(self, v: float, v0: float, gap: float, v_lead: float, s0: float | None = None) -> float:
        """IDM acceleration at speed ``v`` (the kernel's ``idm_acceleration``, operation for operation);
        ``s0`` defaults to the vehicle's min gap."""
        s_star = (self.min_gap if s0 is None else s0) + max(v * self.tau + v * (v - v_lead) / self.two_sqrt_ab, 0.0)
        ratio = s_star / max(gap, 1e-3)
        interaction = ratio * ratio if math.isfinite(gap) else 0.0
        return self.accel * (1.0 - int_pow(v / v0, self.delta) - interaction)

    def idm_speed(self, v0: float, gap: float, v_lead: float, s0: float | None = None, v: float | None = None) -> float:
        """Speed after ``dt`` from ``v`` (its speed unless given): IDM in ``substeps`` sub-steps, leader speed held,
        gap shrinking."""
        m = self.model
        n = m.substeps
        h = m.dt / n
        v = self.speed if v is None else v
        for _ in range(n):
            v = max(v + self.idm(v, v0, gap, v_lead, s0) * h, 0.0)
            if n > 1:
                gap = gap - max((v - v_lead) * h, 0.0)
        return v

    # --- rules 4 and 5 --------------------------------------------------------------------
    def look(self) -> None:
        """Rule 4's first half, before rule 10 can hold anyone: the lane this vehicle will enter, its connection,
        signal and whether its signal or keep-clear holds it at the line; stored for :meth:`plan`."""
        m = self.model
        lane = self.lane
        self._on_last_edge = on_last_edge = self.route_pos + 1 >= len(self.route)
        self._next_lane, self._via, self._key = None, 0.0, None
        self._found, self._must_stop, self._code = False, True, SIG_GREEN
        # 10. inside a junction: those that left its lane before it on other paths, until the paths part
        ck = self.conn_key
        self._src = (self.same_source(ck, m.conns[ck][0] + self.pos)
                     if m.has_siblings and self.pos < 0 and self.route_pos > 0 and ck is not None else None)
        if on_last_edge:
            return
        d = lane.length - self.pos
        nxt_edge = self.route[self.route_pos + 1]
        conn = m.connection(lane, nxt_edge)
        if m.lane_changing:  # 11. the lanes its connection leads to; of those the best ones, where it leads to any
            to = m.conn_to_lanes.get((lane.id, nxt_edge), set())
            nl, room = m.choose_lane(nxt_edge, (to & self.best[self.route_pos + 1]) or to, m.entry_tails)
        else:
            nl, room = m.choose_lane(nxt_edge, self.allowed[self.route_pos + 1], m.entry_tails)
        if conn is None:  # no connection from this lane (cannot happen through the lane masks)
            code, via, found = SIG_RED, 0.0, False
            nl = None
        else:
            via, tl, link = conn
            code = SIG_GREEN if tl is None else m.signals[tl].code(link)
            found = True
        signal_stop = code == SIG_RED or (code == SIG_YELLOW and stops_at_yellow(self.speed, self.decel, d, m.dt))
        # keep the junction clear: too little room behind the next lane's last standing vehicle holds this
        # one at the line
        # (only where the connection must keep the junction clear: RoadNetwork.keeps_clear, SUMO's keepClear)
        # (one lane further only while it can still brake for its line: kernels.advance)
        can_brake = d >= brake_gap(self.speed, self.decel, 0.0, m.dt) + 0.1
        keep_clear = (nl is not None and m.keep_clear.get((lane.id, nxt_edge), False)
                      and m.room_on(nl, self.route, self.route_pos + 1, further=can_brake)
                      < self.length + self.min_gap)
        self._next_lane, self._via, self._key = nl, via, (lane.id, nxt_edge)
        self._found, self._code, self._signal_stop, self._keep_clear = found, code, signal_stop, keep_clear
        self._must_stop = signal_stop or nl is None or not found or keep_clear
        # the nearest vehicle past the line on its way: the tail of the lane it enters (as a vehicle entering
        # sees it: those waiting at an internal junction skipped), or one still inside the junction
        tail = m.entry_tails.get(nl.id) if nl is not None else None
        raw = m.tails.get(nl.id) if nl is not None else None
        if raw is not None and raw is not tail and raw.conn_key == (lane.id, nxt_edge):
            tail, room = raw, raw.rear()  # one waiting inside on its own connection is on its path
        v_junction = tail.speed if tail is not None else 0.0
        gap_junction = d + via + room if math.isfinite(room) else INF
        if m.has_siblings:  # 10. ... and on its way past the line (kernels.same_source)
            ahead = self.same_source((lane.id, nxt_edge), -d) if found else (INF, 0.0)
            for g, v in (self._src or (INF, 0.0), ahead):
                if g < gap_junction:
                    gap_junction, v_junction = g, v
                    if self.leader is None:
                        m.events["same_source_nearer"] += 1  # diagnostic: a front follows one out of its lane
        if not m.lane_changing and found and nl is not None:
            # without lane changing it may enter another lane of the next edge than the vehicle ahead on its
            # connection did, but it crosses behind that one while it is inside the junction (SUMO: both on
            # the connection's internal lane)
            for other in m.edges[nl.edge]:
                t = m.tails.get(other.id)
                if t is not None and t.pos < 0 and t.conn_key == self._key and d + via + t.rear() < gap_junction:
                    gap_junction, v_junction = d + via + t.rear(), t.speed
        self._gap_junction, self._v_junction = gap_junction, v_junction
        # SUMO's willPass: a front that cannot move on, its way blocked past the line, announces no window
        self._moving = gap_junction > self.min_gap + MOVE_SLACK_M or self.speed >= STOP_SPEED
        if self.leader is None and found:  # rule 10: the window in which it would cross (front vehicles)
            vmax = self.desired_speed(lane)
            u = self.turn[self.route_pos]
            if math.isfinite(u):
                vmax = min(vmax, u * self.speed_factor)
            self._t_arr = arrival_time(d, self.speed, self.accel, vmax)
            # its speed leaving the junction, at most what following its junction leader from it allows (SUMO's
            # adaptToLeader, adaptLeaveSpeed)
            v_arr, v_out = line_speeds(d, via, self.speed, self.accel, vmax)
            if math.isfinite(gap_junction):
                v0 = self.desired_speed(lane)
                v_out = min(v_out, self.krauss_speed(v0, gap_junction, v_junction, INF, None, v=v_out) if m.krauss
                            else self.idm_speed(v0, gap_junction, v_junction, v=v_out))
            self._t_leave = leave_time(self._t_arr, v_arr, v_out, via, self.length)
            # for when it would reach each foe's path, and merges (blocked_by_foes)
            self._line = (d, vmax, via, v_out)

    def body_zone(self) -> int:
        """kernels.body_zone: the parts of its path (ZONE_BINS) this vehicle inside the junction covers."""
        via = self.model.conns[self.conn_key][0]
        size = via / ZONE_BINS
        front = via + self.pos
        back = front - self.length
        lo = min(ZONE_BINS - 1, max(0, math.floor(back / size)))
        hi = min(ZONE_BINS - 1, max(0, math.floor(front / size)))
        return ((1 << (hi + 1)) - 1) & ~((1 << lo) - 1)

    def same_source(self, key, se: float) -> tuple[float, float]:
        """kernels.same_source for this vehicle on connection ``key``, ``se`` m along its path past the stop line:
        the gap to and speed of the nearest vehicle ahead that left its lane by another connection and whose back
        has not passed where their paths part ((+inf, 0): none)."""
        m = self.model
        gap, v = INF, 0.0
        for key_f, de, df in m.siblings.get(key, ()):
            if not se < de:
                continue
            via_f = m.conns[key_f][0]
            for lane in m.edges[key_f[1]]:
                t = m.tails.get(lane.id)
                for _ in range(2):  # up to two vehicles of other connections skipped
                    if t is not None and t.conn_key != key_f:
                        t = t.lane_leader
                if t is None or t is self or t.conn_key != key_f:
                    continue
                back = via_f + t.pos - t.length
                if back < df and back + t.length > se:
                    g = (de - se) - self.min_gap - (df - back)
                    if g < gap:
                        gap, v = g, t.speed
        return gap, v

    def waiting_inside(self) -> bool:
        """Inside a junction, short of (or standing at) its connection's internal junction (a left turn's waiting
        point): on its own path through the junction (SUMO: an internal lane)."""
        ck, m = self.conn_key, self.model
        return (self.status == RUNNING and self.pos < 0 and self.route_pos > 0 and ck is not None
                and m.conn_wait[ck] > 0 and m.conn_wait[ck] - m.conns[ck][0] - self.pos > -WAIT_SLACK_M)

    def plan(self) -> None:
        m = self.model
        lane = self.lane
        on_last_edge = self._on_last_edge
        d = lane.length - self.pos
        front = self.leader is None
        line_first, must_stop, red, wary = True, True, False, False
        gap_front, v_front = INF, 0.0
        if not on_last_edge:
            nl, found, code = self._next_lane, self._found, self._code
            signal_stop, keep_clear, must_stop = self._signal_stop, self._keep_clear, self._must_stop
            red = code == SIG_RED
            # 10. right of way: a minor link waits while a connection it yields to is in use in its window; a link
            # into an internal junction (cont="1") is open at the line unless red (SUMO's MSLink::opened): its
            # vehicle waits at that junction instead (below)
            if (front and found and not must_stop and m.has_foes and m.conn_wait[self._key] <= 0
                    and m.must_yield(self._key, code)):
                if m.blocked_by_foes(self._key, self._t_arr, self._t_leave,
                                     (*self._line, self.speed, self.accel, self.decel, self.wait_steps * m.dt)):
                    must_stop = True
                    m.events["yield_wait"] += 1
                else:
                    m.events["yield_go"] += 1
            gap_junction, v_junction = self._gap_junction, self._v_junction
            # the stop line is the obstacle unless a vehicle still inside the junction is nearer (held by its
            # signal, it stops short of the line: stop_line)
            d_line = stop_line(self.speed, d, self.decel, m.dt) if signal_stop and found else d
            line_first = must_stop and (d_line + self.min_gap <= gap_junction or not found)
            if line_first:
                gap_front, v_front = d_line + self.min_gap, 0.0
            else:
                gap_front, v_front = gap_junction, v_junction
            # 10. the cautious approach to a minor link it could still stop for: a standing obstacle where it waits
            if front and found and not must_stop and m.must_yield(self._key, code):
                d_wait = d + m.conn_wait[self._key]
                if (d_wait > m.conn_visibility[self._key] and self.speed * self.speed <= 2.0 * self.decel * d_wait
                        and d_wait + self.min_gap < gap_front):
                    gap_front, v_front, wary = d_wait + self.min_gap, 0.0, True
                    m.events["minor_cautious"] += 1
            if front:
                m.events["front_red" if code == SIG_RED else "front_yellow_stop" if code == SIG_YELLOW and signal_stop
                         else "front_yellow_go" if code == SIG_YELLOW else "front_green"] += 1
                if keep_clear and not signal_stop and nl is not None:
                    m.events["keep_clear"] += 1  # would go, but no room behind the next lane's standing queue
                    if nl.id in m.lanes_waiting:
                        m.events["keep_clear_waits"] += 1  # ... its last vehicle waiting at its next link
                    elif not math.isfinite(m.space_till_standing.get(nl.id, INF)):
                        m.events["keep_clear_beyond"] += 1  # ... nor one lane further on (room_on)
                if must_stop and not line_first:
                    m.events["junction_nearer"] += 1  # a vehicle still in the junction is nearer than the line
        self._red = red
        # (stopping: the obstacle is a standing point, not a vehicle: IDM keeps no min gap to it, below)
        if not front:
            ld = self.leader
            gap = ld.pos - ld.length - self.pos
            v_lead = ld.speed
            gap_phys = gap
            stopping = False
        else:
            gap, v_lead = gap_front, v_front
            gap_phys = gap if (on_last_edge or not must_stop) else min(gap, d)
            stopping = not on_last_edge and (line_first or wary)
        if (not front or on_last_edge) and self._src is not None and self._src[0] < gap:
            gap, v_lead = self._src  # 10. one that left its lane before it on another path is nearer
            gap_phys = gap
            m.events["same_source_nearer"] += 1
        # 10. ... and inside the junction, short of the point where its connection waits (an internal junction)
        ck = self.conn_key
        if self.pos < 0 and self.route_pos > 0 and ck is not None and m.conn_wait[ck] > 0:
            c_via, c_tl, c_link = m.conns[ck]
            c_code = SIG_GREEN if c_tl is None else m.signals[c_tl].code(c_link)
            d_in = m.conn_wait[ck] - c_via - self.pos
            if (m.must_yield(ck, c_code) and d_in > m.conn_visibility[ck]
                    and self.speed * self.speed <= 2.0 * self.decel * d_in and d_in + self.min_gap < gap):
                gap, v_lead, stopping = d_in + self.min_gap, 0.0, True
                m.events["minor_cautious_inside"] += 1
            # waiting at its internal junction (a minor link there, SUMO's "m"): it passes when its foes leave it a
            # gap, timed from that point
            if m.has_foes and self.waiting_inside():
                vmax = self.desired_speed(lane)
                u_in = self.turn[self.route_pos - 1]
                if math.isfinite(u_in):
                    vmax = min(vmax, u_in * self.speed_factor)
                t_arr = arrival_time(max(d_in, 0.0), self.speed, self.accel, vmax)
                t_leave = arrival_time(self.length - self.pos, self.speed, self.accel, vmax)
                if m.blocked_by_foes(ck, t_arr, t_leave):
                    d_hold = max(d_in, 0.0)
                    if d_hold + self.min_gap < gap:
                        gap, v_lead, stopping = d_hold + self.min_gap, 0.0, True
                    gap_phys = min(gap_phys, d_hold)
                    m.events["yield_wait_inside"] += 1
                else:
                    m.events["yield_go_inside"] += 1
        # 11. cooperation and falling behind: it also follows the neighbour it yields to (one it lets in, or the
        # target lane's leader it falls behind), where nearer than its own obstacle; alongside it, at gap 0
        y = self.lc_yield
        if m.lane_changing and y is not None:
            g_y = y.pos - y.length - self.pos
            if g_y < gap:
                gap, v_lead, stopping = max(g_y, 0.0), y.speed, False
                m.events["lc_cooperating"] += 1
        # ... and stops where an urgent change across lanes keeps room ahead of it
        if m.lane_changing:
            d_s = self.lc_stop - self.pos
            if d_s > 0.0 and d_s + self.min_gap < gap:
                gap, v_lead, stopping = d_s + self.min_gap, 0.0, True
                m.events["lc_room_kept"] += 1
        # 7. the next bus stop on this edge
        stop = self.bus_stops[self.next_stop] if self.next_stop < len(self.bus_stops) else None
        at_edge = stop is not None and stop[0] == self.route_pos
        dwelling = at_edge and self.dwell > 0
        if at_edge:
            d_stop = stop[1] - self.pos
            if d_stop + self.min_gap < gap:
                gap, v_lead, stopping = d_stop + self.min_gap, 0.0, True
                m.events["bus_stop_obstacle"] += 1
            gap_phys = min(gap_phys, d_stop)
        # 8. turning speeds: inside the junction just crossed (front before the lane start), and ahead
        v0 = self.desired_speed(lane)
        if self.pos < 0 and self.route_pos > 0:
            v0 = min(v0, self.turn[self.route_pos - 1] * self.speed_factor)
        self._v0 = v0
        u = self.turn[self.route_pos]
        ut = min(u * self.speed_factor, self.max_speed)
        if math.isfinite(u) and front:
            m.events["turn_speed_anticipated" if self.speed > ut else "turn_speed_ahead"] += 1
        # 4. a follower whose link is red, or yellow while it can still stop, brakes for the line as well as for
        # its leader (SUMO: every vehicle processes the links within its look-ahead)
        # (so does a front vehicle its signal holds that follows one still inside the junction)
        line_stop = ((front and not on_last_edge and self._signal_stop and not line_first)
                     or (not front and not on_last_edge and self._found and bool(m.signals)
                         and (self._code == SIG_RED
                              or (self._code == SIG_YELLOW and stops_at_yellow(self.speed, self.decel, d, m.dt)))))
        if line_stop:
            m.events["line_stop"] += 1  # a follower, or a front following one inside the junction
        d_stop = stop_line(self.speed, d, self.decel, m.dt) if line_stop else d
        if m.krauss:  # 9. Krauss: the turning speed bounds the safe speed before dawdling
            cap = free_speed(d, ut, self.decel, m.dt) if math.isfinite(u) else INF
            if line_stop:
                cap = min(cap, safe_stop_speed(d_stop, self.decel, self.tau, m.dt))
            v_new = self.krauss_speed(v0, gap, v_lead, cap, m.dawdle_draw.get(self.vehicle_id))
        else:
            if stopping:  # toward a standing point: no min gap, and never past it (SUMO's IDM stopSpeed) ...
                to_point = gap - self.min_gap
                v_new = self.idm_speed(v0, to_point, v_lead, s0=0.0)
                gap_phys = 0.0 if to_point < STOP_GAP_EPS else min(gap_phys, to_point)
                if self.speed < STANDING_EPS and to_point >= STOP_GAP_EPS and v_new < STANDING_EPS:
                    v_new = safe_stop_speed(to_point, self.decel, m.dt, m.dt)  # ... creeping from standstill
            else:
                v_new = self.idm_speed(v0, gap, v_lead)
            if math.isfinite(u):
                v_new = min(v_new, self.turn_speed_cap(v0, d, ut))
            if line_stop:
                v_new = min(v_new, self.idm_speed(v0, d_stop, 0.0, s0=0.0))
        v_cap = max(gap_phys, 0.0) / m.dt
        if v_cap < v_new and (self.speed - v_cap) / m.dt > 9.0:
            m.events["hard_stops"] += 1  # diagnostic: the gap cap brakes harder than 9 m/s² (SUMO's emergency decel)
        v_new = min(v_new, v_cap)
        if dwelling:
            v_new = 0.0
        self._v_new = v_new
        self._x_new = self.pos + v_new * m.dt
        self._docked = False
        if at_edge:
            if dwelling:
                self.dwell -= m.dt
                m.events["bus_dwell_steps"] += 1
                if self.dwell <= 1e-9:
                    self.dwell = 0.0
                    self.next_stop += 1
            elif d_stop < -DOCK_REACH_M:  # passed (cannot happen for validated stops)
                self.next_stop += 1
            elif stop[1] - self._x_new <= DOCK_REACH_M and v_new < STOP_SPEED:
                self._docked = True
        self._hold = self.dwell > 0  # rule 11: dwelling on after this step (not counting a dock this step)
        if front and not on_last_edge and not self._found:
            m.events["lc_wrong_lane_wait"] += 1
        if front and not on_last_edge and not must_stop and math.isfinite(gap_front) and v_new < STOP_SPEED:
            m.events["front_blocked_by_next_lane"] += 1  # spillback: may go, but the next lane is full

    def krauss_speed(self, v0: float, gap: float, v_lead: float, v_cap: float, u: float | None,
                     v: float | None = None) -> float:
        """Rule 9, SUMO's Krauss (semi-implicit Euler): the safe speed behind the obstacle (``gap - min_gap``, the
        leader braking with this vehicle's decel), bounded by ``v0``, ``v + accel·dt`` and ``v_cap``, then
        dawdling by ``u`` (None: none), never below ``max(v - decel·dt, 0)`` unless the bound is lower."""
        dt = self.model.dt
        v = self.speed if v is None else v
        v_safe = safe_stop_speed(gap - self.min_gap + brake_gap(v_lead, self.decel, 0.0, dt), self.decel, self.tau, dt)
        v_max = min(min(min(v0, v + self.accel * dt), v_safe), v_cap)
        if u is None:
            return v_max
        v_min = min(max(v - self.decel * dt, 0.0), v_max)
        red = (self.sigma * v_max * u if v_max < self.accel else self.sigma * self.accel * u) * dt
        return max(v_min, max(v_max - red, 0.0))

    def turn_speed_cap(self, v0: float, d: float, u: float) -> float:
        """Rule 8 on approach (SUMO's ``MSCFModel_IDM::freeSpeed``): faster than the turning speed ``u``, brake
        as for a standing obstacle (no min gap) at ``max(d, g)``, ``g`` SUMO's secure gap ``brakeGap(u) + u·tau``
        (``MSCFModel::brakeGap``, Euler update); closer than ``g``, at most ``u``."""
        dt = self.model.dt
        g = brake_gap(u, self.decel, self.tau, dt)
        cap = INF
        if self.speed > u:
            cap = self.idm_speed(v0, max(d, g), 0.0, s0=0.0)
        if d < g:
            cap = min(cap, u)
        return cap

    # --- rule 6 ---------------------------------------------------------------------------
    def crossing(self) -> bool:
        """Whether the planned move takes this vehicle onto the chosen lane of its next edge."""
        return (self._x_new > self.lane.length and self.route_pos + 1 < len(self.route)
                and self._next_lane is not None)

    def landing(self) -> float:
        return self._x_new - self.lane.length - self._via

    def hold_at_line(self) -> None:
        """Rule 6: another vehicle takes the target lane this step; this one stays at the stop line."""
        lane = self.lane
        self._x_new = lane.length
        self._v_new = (lane.length - self.pos) / self.model.dt

    def commit(self) -> None:
        m = self.model
        lane = self.lane
        v0 = self._v0  # the desired speed planned with (rule 8 inside a junction)
        v_new, x_new = self._v_new, self._x_new
        if x_new > lane.length:  # a vehicle held exactly at the stop line stays on its lane
            if self.route_pos + 1 >= len(self.route):
                self.status = ARRIVED
                self.arrive_step = m.step_index + 1
                m.events["arrivals"] += 1
            elif self._next_lane is not None:
                if self._red:
                    m.events["red_crossings"] += 1
                x_new = x_new - lane.length - self._via
                self.conn_key = self._key  # rule 10: inside this connection's junction until the front is through
                self.lane = self._next_lane
                self.route_pos += 1
                m.events["edge_transitions"] += 1
        halted = v_new < STOP_SPEED
        if halted and not self.halted:
            self.stops += 1
        self.halted = halted
        self.time_loss += m.dt * max(1.0 - v_new / v0, 0.0)
        self.speed = v_new
        self.pos = x_new
        if self._docked:
            stop = self.bus_stops[self.next_stop]
            dwell = float(m.dwell_of(self.vehicle_id, stop[2], m.time_s + m.dt))
            m.events["bus_docks"] += 1
            if dwell > 0:
                self.dwell = dwell
            else:
                self.next_stop += 1


def _cleared_at(cleared: dict, foe, zone: int) -> float:
    """When the moving vehicles inside the junction on connection ``foe`` have cleared the parts of its path in
    ``zone`` (s from now; -inf: done, or none there; kernels.clear_times)."""
    c = cleared.get(foe)
    return max((c[b] for b in range(ZONE_BINS) if zone >> b & 1), default=-INF) if c is not None else -INF


class ReferenceTrafficModel(mesa.Model):
    """One world of the traffic twin, one Python object per vehicle and signal.

    ``vehicles``: :class:`VehicleSpec` list (any order; insertion priority is
    (depart, vehicle id), the kernel's slot order). ``signal_plans``: optional
    ``{program_id: (durations, offset)}`` overriding the network's plan.
    ``substeps`` (IDM sub-steps per step) and ``insert_rounds`` default to the
    twin's choices: ``ceil(dt / 0.25)`` and ``min(most lanes of an edge, 3)``.
    ``lane_changing``: rule 11 (the twin's ``lane_changing``).
    """

    def __init__(self, network: RoadNetwork, vehicles: list[VehicleSpec], *, dt: float = 1.0, begin: float = 0.0,
                 signal_plans: dict[str, tuple[list[float], float]] | None = None, seed: int = 0,
                 substeps: int | None = None, insert_rounds: int | None = None, dwell_of=None,
                 car_following: str = "IDM", dawdle=None, lane_changing: bool = False,
                 teleport_steps: int | None = None):
        super().__init__(rng=seed)
        self.lane_changing = bool(lane_changing)  # rule 11
        # rule 12: steps a front vehicle may stand before it is teleported (None: never)
        self.teleport_steps = teleport_steps
        # rule 9: the car-following model; ``dawdle(vehicle ids, step index) -> draws in [0, 1)`` for Krauss
        # (None: no dawdling)
        self.krauss = car_following == "Krauss"
        self.dawdle = dawdle
        self.dawdle_draw: dict[int, float] = {}
        self.network = network
        self.dwell_of = dwell_of  # (vehicle id, stop id, time) -> dwell s, for buses (rule 7)
        self.dt = float(dt)
        self.substeps = int(substeps) if substeps is not None else max(1, math.ceil(self.dt / 0.25 - 1e-9))
        self.begin = float(begin)
        self.step_index = 0
        self.events: Counter = Counter()
        # lanes and edges (lanes of an edge ordered by their index, like tables.py)
        self.edges: dict[str, list[_Lane]] = {}
        for e in network.edges.values():
            self.edges[e.id] = [_Lane(l.id, l.index, float(l.length), float(l.speed), e.id)
                                for l in sorted(e.lanes, key=lambda l: l.index)]
        self.lanes = {l.id: l for ls in self.edges.values() for l in ls}
        max_lanes = max((len(ls) for ls in self.edges.values()), default=1)
        self.insert_rounds = int(insert_rounds) if insert_rounds is not None else min(max_lanes, 3)
        # connections: (from lane id, to edge) -> (via, program, link); the first listed wins
        self.conns: dict[tuple[str, str], tuple[float, str | None, int]] = {}
        self.conn_wait: dict[tuple[str, str], float] = {}
        self.conn_visibility: dict[tuple[str, str], float] = {}
        merged: dict[tuple[str, str], list] = {}
        for c in network.connections:
            key = (self.edges[c.from_edge][c.from_lane].id, c.to_edge)
            if key not in self.conns:
                self.conns[key] = (float(c.via_length), c.tl, c.link_index)
                # rule 10's cautious approach: where it waits past the line, and from how far it sees its foes
                self.conn_wait[key], self.conn_visibility[key] = float(c.wait_length), float(c.visibility)
            merged.setdefault(key, []).append(c)
        # rule 11: (from lane id, to edge) -> the lane indices of the to-edge its connections lead to
        self.conn_to_lanes: dict[tuple[str, str], set[int]] = {}
        for c in network.connections:
            self.conn_to_lanes.setdefault((self.edges[c.from_edge][c.from_lane].id, c.to_edge), set()).add(c.to_lane)
        # rule 10: the connections each one yields to (its SUMO links' response bits, by junction and request
        # index), and whether it is an unsignalized minor one (its first link decides, as for via and signal)
        at_link = {(network.edges[c.from_edge].to_node, c.junction_index): key
                   for key, cs in merged.items() for c in cs if c.junction_index >= 0}
        self.foes: dict[tuple[str, str], list] = {}
        self.zones: dict[tuple[str, str], list[int]] = {}
        self.zone_occupied: dict[tuple[str, str], int] = {}
        self.zone_at: dict[tuple[str, str], list[float]] = {}  # m along its path to each foe's (network.zone_start)
        self.zone_cleared: dict[tuple[str, str], list[float]] = {}  # per part of its path: s till cleared
        for key, cs in merged.items():
            out = set()
            for c in cs:
                j = network.junctions.get(network.edges[c.from_edge].to_node)
                for k in (j.yields_to.get(c.junction_index, []) if j is not None else []):
                    if (j.id, k) in at_link:
                        out.add(at_link[(j.id, k)])
            self.foes[key] = sorted(out)
            # where on each foe's path this one crosses it (the first listed link of each decides, as for via)
            self.zones[key] = [conflict_zone(cs[0], merged[f][0], ZONE_BINS) for f in self.foes[key]]
            self.zone_at[key] = [zone_start(cs[0], merged[f][0], ZONE_BINS) for f in self.foes[key]]
        self.minor = {key: cs[0].tl is None and cs[0].state in MINOR for key, cs in merged.items()}
        # rule 4: the connections that keep their junction clear (the first link decides, as for via and signal)
        self.keep_clear = {key: network.keeps_clear(cs[0]) for key, cs in merged.items()}
        # a zipper merge's links: the first to arrive goes (ties: the lower connection in the kernel's order, by
        # from-edge, from-lane, to-edge as the network lists its edges)
        self.zipper = {key: cs[0].tl is None and cs[0].state == "Z" for key, cs in merged.items()}
        edge_pos = {e: i for i, e in enumerate(network.edges)}
        self.conn_rank = {key: (edge_pos[cs[0].from_edge], cs[0].from_lane, edge_pos[key[1]])
                          for key, cs in merged.items()}
        self.has_foes = any(self.foes.values())
        # rule 10's same-source foes: per connection, the others out of its lane (in the kernel's order, by to-edge)
        # with where their paths part (network.same_source_siblings, as tables.network_tables)
        by_lane: dict[str, list] = {}
        for key in sorted(merged, key=lambda k: edge_pos[k[1]]):
            by_lane.setdefault(key[0], []).append(key)
        siblings = same_source_siblings([[merged[k][0] for k in keys] for keys in by_lane.values()])
        self.siblings = {k: [(keys[j], *split) for j, *split in row]
                         for keys, rows in zip(by_lane.values(), siblings) for k, row in zip(keys, rows)}
        self.has_siblings = any(self.siblings.values())
        self.windows: dict[tuple[str, str], list[float]] = {}
        self.windows_inside: dict[tuple[str, str], float] = {}
        # signal controllers
        plans = signal_plans or {}
        self.signals: dict[str, ReferenceSignal] = {}
        for pid, prog in network.programs.items():
            codes = [[SIG_GREEN_MINOR if ch == "g" else SIG_GREEN if ch in GREEN or ch in "oO"
                      else SIG_YELLOW if ch in YELLOW else SIG_RED for ch in ph.state] for ph in prog.phases]
            durations, offset = plans.get(pid, ([ph.duration for ph in prog.phases], prog.offset))
            durations = list(durations)
            n_links = prog.n_links
            while len(codes) < len(durations):  # padded phases (zero duration) are all red, as compiled
                codes.append([SIG_RED] * n_links)
            self.signals[pid] = ReferenceSignal(self, pid, durations, offset, codes)
        # vehicles in insertion priority order
        specs = sorted(vehicles, key=lambda s: (s.depart, s.vehicle_id))
        self.vehicles = [ReferenceVehicle(self, s, i) for i, s in enumerate(specs)]
        self.by_id = {v.vehicle_id: v for v in self.vehicles}
        self.tails: dict[str, ReferenceVehicle] = {}
        self._next_waiting = 0  # vehicles before this index are no longer waiting (a shortcut only)
        self._running: list[ReferenceVehicle] = []

    # --- construction from a vectorized twin ------------------------------------------------
    @classmethod
    def from_twin(cls, twin, world: int = 0, dwell_of=None) -> "ReferenceTrafficModel":
        """The same world as ``twin``'s ``world``: its network, per-vehicle parameters and departures
        (read from ``twin.pop`` / ``twin.drivers`` as Python floats), its signal plan and its buses'
        stops (``dwell_of``: see rule 7)."""
        scen = twin.scenario
        flows = scen.demand.flows
        keys = ("length", "min_gap", "accel", "decel", "tau", "delta", "speed_factor", "max_speed", "sigma",
                "depart_speed")
        cols = {k: getattr(twin.drivers, k)[world].detach().cpu().double().tolist() for k in keys + ("two_sqrt_ab",)}
        flow = twin.pop.flow[world].tolist()
        depart = twin.pop.depart[world].tolist()
        vid = twin.pop.vehicle_id[world].tolist()
        specs = []
        lines = list(getattr(scen, "bus_lines", None) or [])
        stops_of_line = []
        for line in lines:  # (route position, pos, stop id) from the plain-Python line, not the tensors
            k, out = 0, []
            for st in line.stops:
                k = line.route.index(st.edge, k)
                out.append((k, float(st.pos_m), f"{line.id}:{st.id}"))
            stops_of_line.append(tuple(out))
        for s in range(len(flow)):
            if flow[s] < 0 or not math.isfinite(depart[s]):
                continue
            if flow[s] < len(flows):
                f = flows[flow[s]]
                route, name, stops = tuple(f.route), f.id, ()
            else:
                line = lines[flow[s] - len(flows)]
                route, name, stops = tuple(line.route), f"bus:{line.id}", stops_of_line[flow[s] - len(flows)]
            specs.append(VehicleSpec(int(vid[s]), route, float(depart[s]),
                                     **{k: float(cols[k][s]) for k in keys}, flow=name,
                                     two_sqrt_ab=float(cols["two_sqrt_ab"][s]), stops=stops))
        plans = {}
        for p, pid in enumerate(twin.net_cpu.program_ids):
            plans[pid] = ([float(x) for x in twin.signal_durations[world, p].tolist()],
                          float(twin.signal_offsets[world, p]))
        dawdle = None
        if twin.dawdles:  # the twin's keyed draws, as plain floats (the reference checks dynamics, not noise)
            import torch

            from twins.core import noise

            rep = int(twin.worlds.replication[world])

            def dawdle(ids, step):
                u = noise.uniform(int(twin.worlds.seed), rep, noise.Stream.DAWDLE,
                                  torch.tensor(ids, dtype=torch.int64), step, 0, dtype=twin.dtype)
                return u.double().tolist()
        return cls(scen.network, specs, dt=twin.dt, begin=float(scen.begin), signal_plans=plans,
                   seed=int(twin.worlds.seed), substeps=twin.substeps, insert_rounds=twin.insert_rounds,
                   dwell_of=dwell_of, car_following=twin.car_following, dawdle=dawdle,
                   lane_changing=bool(getattr(twin, "lane_changing", False)),
                   teleport_steps=getattr(twin, "teleport_steps", None))

    # --- network queries ------------------------------------------------------------------
    def route_lanes(self, route) -> list[set[int]]:
        """Allowed lane indices on each route edge: those with a connection to the next edge; all on the last."""
        out = []
        for k, e in enumerate(route):
            if k + 1 < len(route):
                out.append({c.from_lane for c in self.network.connections
                            if c.from_edge == e and c.to_edge == route[k + 1]})
            else:
                out.append({l.index for l in self.edges[e]})
        return out

    def best_lanes(self, route) -> list[set[int]]:
        """Rule 11: the best lanes of each route edge (SUMO's ``bestLanes``), seen from that edge over the edges
        SUMO looks ahead to (``network.best_lanes_lookahead``): every lane of the last of them; before it, of the
        lanes with a connection to the next edge, those whose connections leave the fewest lane changes to a best
        lane of the next edge (the least ``|to lane - best lane|``)."""
        allowed = self.route_lanes(route)
        lengths = [self.edges[e][0].length for e in route]
        best = [set(a) for a in allowed]
        for k0 in range(len(route) - 1):
            end = best_lanes_lookahead(lengths, k0)
            ahead = {ln.index for ln in self.edges[route[end]]}  # every lane of the last edge seen
            for k in range(end - 1, k0 - 1, -1):
                here = self.edges[route[k]]
                need = {}
                for j in sorted(allowed[k]):
                    to = self.conn_to_lanes[(here[j].id, route[k + 1])]
                    need[j] = min(abs(t - b) for t in to for b in ahead)
                fewest = min(need.values())
                ahead = {j for j, n in need.items() if n == fewest}
            best[k0] = ahead
        return best

    def lane_continuation(self, route) -> list[list[float]]:
        """Rule 11: per route step and lane of that edge, how far a vehicle drives from the lane's start along the
        route without changing lanes (SUMO's ``LaneQ.length``) over the edges SUMO looks ahead to from that edge
        (the last of them: its own length); +inf on the route's last edge, as ``tables.route_tables``'
        ``route_lane_cont``."""
        allowed = self.route_lanes(route)
        lengths = [self.edges[e][0].length for e in route]
        out = []
        for k0 in range(len(route)):
            if k0 + 1 == len(route):
                out.append([INF] * len(self.edges[route[k0]]))
                continue
            end = best_lanes_lookahead(lengths, k0)
            run = [ln.length for ln in self.edges[route[end]]]
            for k in range(end - 1, k0 - 1, -1):
                run = [ln.length + (max(run[t] for t in self.conn_to_lanes[(ln.id, route[k + 1])])
                                    if j in allowed[k] else 0.0) for j, ln in enumerate(self.edges[route[k]])]
            out.append(run)
        return out

    def route_ahead(self, route) -> list[float]:
        """Rule 11 (keep-right): per route step, the length of the edges after it that SUMO's best lanes look ahead
        to (``network.best_lanes_lookahead``; 0 on the last edge), as ``tables.route_tables``' ``route_ahead_m``."""
        lengths = [self.edges[e][0].length for e in route]
        return [sum(lengths[k + 1:best_lanes_lookahead(lengths, k) + 1]) if k + 1 < len(route) else 0.0
                for k in range(len(route))]

    def route_turn_speeds(self, route) -> list[float]:
        """Per route step: the turning speed of the crossing after it (the slowest connection's ``via_speed``
        from that edge to the next); +inf on the last edge and where none is set."""
        out = []
        for k, e in enumerate(route):
            speeds = [c.via_speed for c in self.network.connections
                      if k + 1 < len(route) and c.from_edge == e and c.to_edge == route[k + 1]]
            out.append(min(speeds, default=INF))
        return out

    def must_yield(self, key, code: int) -> bool:
        """Rule 10: whether the connection ``key`` yields now: unsignalized minor, or its signal shows ``g``."""
        return self.minor[key] or code == SIG_GREEN_MINOR

    def approach_windows(self, running) -> tuple[dict, dict, dict, dict]:
        """Rule 10: per connection, [earliest arrival, latest leaving] (s from now) of the front vehicles that will
        pass their line this step; the latest leaving of the vehicles moving inside a junction (front before the
        lane start; their windows start now); the parts of its path the vehicles standing there cover; and per part
        of its path when the last of the moving ones has cleared it (kernels.clear_times; -inf: cleared)."""
        win: dict[tuple[str, str], list[float]] = {}
        self.window_foe = {}  # per connection, its first arrival's (distance to the line, speed, deceleration)
        inside: dict[tuple[str, str], float] = {}
        occupied: dict[tuple[str, str], int] = {}
        cleared: dict[tuple[str, str], list[float]] = {}
        for v in running:
            # (one short of its internal junction has not entered the conflict area it waits at)
            if v.pos < 0 and v.route_pos > 0 and v.conn_key is not None and not v.waiting_inside():
                if v.speed < STOP_SPEED:  # standing: in the way only of the paths its body covers (kernels.body_zone)
                    occupied[v.conn_key] = occupied.get(v.conn_key, 0) | v.body_zone()
                    continue
                inside[v.conn_key] = max(inside.get(v.conn_key, -INF), (v.length - v.pos) / max(v.speed, STOP_SPEED))
                via = self.conns[v.conn_key][0]
                back = via + v.pos - v.length
                c = cleared.setdefault(v.conn_key, [-INF] * ZONE_BINS)
                for b in range(ZONE_BINS):
                    end = via * (b + 1) / ZONE_BINS
                    if end > back:
                        c[b] = max(c[b], (end - back) / max(v.speed, STOP_SPEED))
        # a vehicle waiting at its internal junction requests no later link while a foe inside this junction has yet
        # to pass their crossing (SUMO: that link leader takes its planned speed to 0) or while it still slows down
        # for its waiting point from beyond its visibility distance (SUMO's abortRequestAfterMinor)
        # (kernels.yield_blocked)
        quiet = set()
        for v in running:
            if v.waiting_inside():
                d_in = self.conn_wait[v.conn_key] - self.conns[v.conn_key][0] - v.pos
                far = d_in > self.conn_visibility[v.conn_key] and v.speed * v.speed <= 2.0 * v.decel * d_in
                if far or self.leader_inside(v.conn_key, occupied, cleared):
                    quiet.add(v.vehicle_id)
        passing = [v for v in running if v.leader is None and v._found and not v._must_stop and v._moving]
        for v in passing:  # diagnostic: one standing at its internal junction, requesting its next link or not
            if v.waiting_inside() and v.speed < STOP_SPEED:
                self.events["waiting_quiet" if v.vehicle_id in quiet else "waiting_requests"] += 1
        announcing = [v for v in passing if v.vehicle_id not in quiet]
        for v in announcing:
            w = win.setdefault(v._key, [INF, -INF])
            w[0], w[1] = min(w[0], v._t_arr), max(w[1], v._t_leave)
        for v in announcing:  # the vehicle announcing each window (kernels.yield_blocked: for merges)
            if v._t_arr == win[v._key][0]:
                d0, v0, b0 = self.window_foe.get(v._key, (INF, 0.0, 0.0))
                self.window_foe[v._key] = (min(d0, v._line[0]), max(v0, v.speed), max(b0, v.decel))
        return win, inside, occupied, cleared

    def leader_inside(self, key, occupied: dict, cleared: dict) -> bool:
        """Rule 10: whether a foe inside the junction has yet to pass the crossing with connection ``key``: moving, its
        rear short of the crossing's end (``cleared``), or standing in the way (``occupied``): SUMO's link leaders
        (kernels.yield_blocked)."""
        return any(foe[1] != key[1] and (_cleared_at(cleared, foe, zone) >= 0 or occupied.get(foe, 0) & zone)
                   for foe, zone in zip(self.foes[key], self.zones[key]))

    def blocked_by_foes(self, key, t_arr: float, t_leave: float, line: tuple | None = None) -> bool:
        """Rule 10: whether a vehicle on minor connection ``key``, in its conflict area from ``t_arr`` to ``t_leave``
        (s from now), must wait for a foe's window (:meth:`approach_windows`). ``line``: (distance to its line, top
        speed, path length, leave speed, speed, acceleration, deceleration, seconds stood) of one at its line, which
        a foe moving inside the junction holds only until its rear has passed their crossing, if it would reach the
        crossing before, and which merges ahead of an approaching foe into the same lane only where ``merge_unsafe``
        allows (None: at an internal junction, where a foe inside holds it until its rear has left the junction)."""
        if line is not None:
            d, vmax, via, v_leave, v, a, decel, stood = line
            impatience = min(stood / TIME_TO_IMPATIENCE_S, 1.0)
        for foe, zone, at in zip(self.foes[key], self.zones[key], self.zone_at[key]):
            w = self.windows.get(foe)
            # a vehicle inside the junction on a foe connection into the same edge is a leader, not a foe; one that
            # stands there is in the way only where its body covers this connection's path (network.conflict_zone)
            occupied = self.zone_occupied.get(foe, 0)
            if line is None:
                moving = self.windows_inside.get(foe, -INF) >= t_arr
            else:
                moving = _cleared_at(self.zone_cleared, foe, zone) >= arrival_time(d + at, v, a, vmax)
            crossing = foe[1] != key[1] and (moving or occupied & zone != 0)
            if foe[1] != key[1] and occupied and not occupied & zone:
                self.events["standing_foe_not_in_the_way"] += 1  # diagnostic: the rule before waited for it
            if w is not None and self.zipper[key]:  # a zipper: wait only for a foe that arrives first
                tie_first = self.conn_rank[foe] < self.conn_rank[key]
                first = w[0] < t_arr or (w[0] == t_arr and tie_first)
                overlap = first and w[1] >= t_arr
            else:
                overlap = w is not None and w[0] <= t_leave + JM_TIMEGAP_MINOR and w[1] >= t_arr
            if crossing or overlap:
                return True
            # ahead of an approaching foe into the same lane: only at a speed the foe could brake for
            if (line is not None and w is not None and foe[1] == key[1] and not self.zipper[key]
                    and self.conn_to_lanes[foe] & self.conn_to_lanes[key] and w[0] > t_leave + JM_TIMEGAP_MINOR
                    and math.isfinite(w[0]) and merge_unsafe(v_leave, decel, t_arr, impatience,
                                                             *self.window_foe[foe])):
                self.events["merge_wait"] += 1  # diagnostic: it would lead a foe that could not brake for it
                return True
        return False

    def connection(self, lane: _Lane, to_edge: str) -> tuple[float, str | None, int] | None:
        """(via length, signal program or None, link index) from ``lane`` to ``to_edge``; None if none."""
        return self.conns.get((lane.id, to_edge))

    def code_to(self, lane: _Lane, to_edge: str) -> int | None:
        """The signal code the connection from ``lane`` to ``to_edge`` shows (green where no signal controls it);
        None where there is no such connection."""
        conn = self.connection(lane, to_edge)
        if conn is None:
            return None
        _, tl, link = conn
        return SIG_GREEN if tl is None else self.signals[tl].code(link)

    def room_on(self, nl: _Lane, route: list, k: int, further: bool = True) -> float:
        """The room keeping a junction clear allows on lane ``nl`` of route edge ``k``: behind its last standing
        vehicle (:attr:`space_till_standing`); where nothing stops on it, carried one lane further on the route
        (kernels.room_beyond): its length less its vehicles plus the room of the lane after it (the most of the lanes
        its connection leads to) where that is limited, its own alone where the link between them shows red or
        yellow; else +inf. ``further=False``: the next lane's own room only."""
        room = self.space_till_standing.get(nl.id, INF)
        if math.isfinite(room) or not further or k + 1 >= len(route):
            return room
        code = self.code_to(nl, route[k + 1])
        if code is None:
            return INF
        own = self.lane_free.get(nl.id, nl.length)
        if code in (SIG_RED, SIG_YELLOW):
            return own
        after = max(self.space_till_standing.get(self.edges[route[k + 1]][j].id, INF)
                    for j in self.conn_to_lanes[(nl.id, route[k + 1])])
        return own + after if math.isfinite(after) else INF

    def held_by_signal(self, v) -> bool:
        """Whether the next link on ``v``'s route shows red, or yellow it stops for (kernels.held_by_signal)."""
        if v.route_pos + 1 >= len(v.route) or not self.signals:
            return False
        code = self.code_to(v.lane, v.route[v.route_pos + 1])
        return code == SIG_RED or (code == SIG_YELLOW and stops_at_yellow(v.speed, v.decel, v.lane.length - v.pos,
                                                                            self.dt))

    def choose_lane(self, edge: str, allowed: set[int], tails: dict | None = None) -> tuple[_Lane | None, float]:
        """The allowed lane of ``edge`` with most room (rear of its tail in ``tails``, the lanes' own if None;
        +inf if empty), lowest index on ties."""
        tails = self.tails if tails is None else tails
        best, best_room = None, -INF
        for j, lane in enumerate(self.edges[edge]):
            if j not in allowed:
                continue
            tail = tails.get(lane.id)
            room = tail.rear() if tail is not None else INF
            if best is None or room > best_room:
                best, best_room = lane, room
        return best, best_room

    @property
    def time_s(self) -> float:
        return self.begin + self.step_index * self.dt

    # --- the step -------------------------------------------------------------------------
    def step(self) -> None:
        t = self.time_s
        # 1. signals
        for s in self.signals.values():
            s.update(t)
        running = self._running
        # 2. leaders and lane tails
        per_lane: dict[str, list[ReferenceVehicle]] = {}
        for v in running:
            per_lane.setdefault(v.lane.id, []).append(v)
        self.tails = {}
        for lid, vs in per_lane.items():
            vs.sort(key=lambda v: (v.pos, v.order))  # ties: lower slot upstream (the kernel's stable sort)
            for a, b in zip(vs, vs[1:]):
                if a.pos == b.pos:
                    self.events["position_ties"] += 1
            for a, b in zip(vs, vs[1:]):
                a.leader = b
                if a.pos > b.pos - b.length + 1e-9:
                    # diagnostic: bodies overlap on a lane (apart from where they are inside the junction on
                    # different connections: different paths there, SUMO's internal lanes)
                    self.events["overlaps_inside_junction" if a.pos < 0 and a.conn_key != b.conn_key
                                else "overlaps"] += 1
            vs[-1].leader = None
            self.tails[lid] = vs[0]
        # 3. insertion, in rounds; in each, all candidates are judged against the tails at its start
        want = []
        for v in self.vehicles[self._next_waiting:]:
            if v.depart > t + 1e-9:
                break  # sorted by departure
            if v.status == WAITING:
                want.append(v)
        refused: dict[str, set[int]] = {}  # per first edge (route_pos: 0, or where a teleport put it): lanes refused

        def free(v):
            k = v.route_pos
            return (v.best[k] if self.lane_changing else v.allowed[k]) - refused.get(v.spec.route[k], set())

        lane_speeds: dict[str, list[float]] = {}  # per lane: its vehicles' speeds, for SUMO's departSpeed="avg"
        if any(v.depart_speed < 0 for v in want):
            for v in running:
                lane_speeds.setdefault(v.lane.id, []).append(v.speed)
        for rnd in range(self.insert_rounds):
            heads: dict[str, ReferenceVehicle] = {}
            for v in want:  # priority order: the first waiting vehicle of each edge with a lane it may still take
                e = v.spec.route[v.route_pos]
                if e not in heads and free(v):
                    heads[e] = v
            if not heads:
                break
            for e, v in heads.items():  # different edges never share a lane
                lanes = free(v)
                lane, room = self.choose_lane(e, lanes)
                if lane is None or room - v.length < v.min_gap:
                    self.events["insertion_blocked"] += 1
                    refused.setdefault(e, set()).update(lanes)  # SUMO: no more tries on those lanes this step
                    continue
                v0 = v.desired_speed(lane)
                gap = room - v.length
                v_ins = max((gap - v.min_gap) / v.tau, 0.0) if math.isfinite(gap) else INF
                v_dep = v.depart_speed
                if v_dep < 0:  # departSpeed="avg": the lane's mean speed, its limit when empty
                    on = lane_speeds.get(lane.id, [])
                    v_dep = min(v0, sum(on) / len(on) if on else lane.speed)
                    if on and v_ins < v_dep:  # not patched on an occupied lane: it waits
                        self.events["insertion_slower_than_lane"] += 1
                        refused.setdefault(e, set()).update(lanes)
                        continue
                v.status = RUNNING
                v.lane = lane
                v.pos = v.length
                v.speed = min(min(v_ins, v0), v_dep)
                if v.speed > 0:
                    self.events["insertions_moving"] += 1
                lane_speeds.setdefault(lane.id, []).append(v.speed)
                if v.insert_step < 0:
                    v.insert_step = self.step_index
                v.leader = self.tails.get(lane.id)
                self.tails[lane.id] = v
                running.append(v)
                self.events["insertions"] += 1
                if rnd > 0:
                    self.events["insertions_later_round"] += 1
            want = [v for v in want if v.status == WAITING]
        while self._next_waiting < len(self.vehicles) and self.vehicles[self._next_waiting].status != WAITING:
            self._next_waiting += 1
        # each lane's room behind its last standing vehicle, for keeping junctions clear: the back of the
        # upstream-most halted vehicle less the length + min gap of the vehicles behind it
        # (vehicles waiting at an internal junction are on their own path through the junction, SUMO's internal
        # lane: neither counted here nor, below, in the way of vehicles entering their lane by another path)
        waiting = {v.vehicle_id for v in running if v.waiting_inside()}
        standing: dict[str, float] = {}
        for v in running:
            if v.speed < STOP_SPEED and v.vehicle_id not in waiting:
                standing[v.lane.id] = min(standing.get(v.lane.id, INF), v.pos - v.length)
        behind: dict[str, float] = {}
        for v in running:
            if v.lane.id in standing and v.pos <= standing[v.lane.id] and v.vehicle_id not in waiting:
                behind[v.lane.id] = behind.get(v.lane.id, 0.0) + (v.length + v.min_gap)
        self.space_till_standing = {k: b - behind.get(k, 0.0) for k, b in standing.items()}
        # a lane with nothing standing whose last vehicle on it has to wait at its next link counts as stopped
        # (SUMO's myHaveToWaitOnNextLink): its link shows red or a yellow it stops for, or it follows a vehicle on
        # the lane and is slower than its decel; its room is its length less every vehicle on it
        # (kernels.space_till_standing)
        on_lane: dict[str, list] = {}
        for v in running:
            if v.pos > 0 and v.vehicle_id not in waiting and v.lane.id not in standing:
                on_lane.setdefault(v.lane.id, []).append(v)
        self.lane_free = {}  # each lane's length less its vehicles (kernels.space_till_standing's free)
        self.lanes_waiting = set()  # (diagnostic: the lanes counted as stopped for their last vehicle's wait)
        for k, vs in on_lane.items():
            occupied = 0.0
            for v in vs:  # (in the order of the running vehicles, as behind above)
                occupied += v.length + v.min_gap
            self.lane_free[k] = vs[0].lane.length - occupied
            tail = min(v.pos for v in vs)
            followed = any(v.pos > tail for v in vs)
            if any(v.pos == tail and ((followed and v.speed < v.decel) or self.held_by_signal(v)) for v in vs):
                self.space_till_standing[k] = self.lane_free[k]
                self.lanes_waiting.add(k)
        self.entry_tails = {}
        for lid, tail in self.tails.items():
            for _ in range(2):  # kernels.entry_tails: up to two waiting tails skipped
                if tail is not None and tail.vehicle_id in waiting:
                    tail = tail.leader
            if tail is not None:
                self.entry_tails[lid] = tail
        # inside a junction, a vehicle waiting at its internal junction on another path is not in the way (the
        # kernel's past_waiting: up to two skipped; from the lane order's leaders, then set)
        skipped = {}
        for v in running:
            ld = v.leader
            if v.pos < 0 and v.route_pos > 0:
                for _ in range(2):
                    if ld is not None and ld.vehicle_id in waiting and ld.conn_key != v.conn_key:
                        ld = ld.leader
            skipped[v.vehicle_id] = ld
        for v in running:
            v.lane_leader, v.leader = v.leader, skipped[v.vehicle_id]
        # 4-5. decide (synchronously, from the state after insertion); Krauss drivers' dawdling draws of this step
        if self.krauss and self.dawdle is not None and running:
            self.dawdle_draw = dict(zip((v.vehicle_id for v in running),
                                        self.dawdle([v.vehicle_id for v in running], self.step_index)))
        for v in running:
            v.look()
        if self.has_foes:
            self.windows, self.windows_inside, self.zone_occupied, self.zone_cleared = self.approach_windows(running)
        for v in running:
            v.plan()
        # 6. one entry per target lane: the vehicle landing furthest ahead (then the earliest slot)
        winner: dict[str, ReferenceVehicle] = {}
        crossing = [v for v in running if v.crossing()]
        for v in crossing:
            w = winner.get(v._next_lane.id)
            if w is None or v.landing() > w.landing() or (v.landing() == w.landing() and v.order < w.order):
                winner[v._next_lane.id] = v
        for v in crossing:
            if winner[v._next_lane.id] is not v:
                v.hold_at_line()
                self.events["held_at_line"] += 1
        # move, transitions, arrivals
        entered: dict[str, int] = {}
        for v in running:
            before = v.lane
            v.commit()
            if v.lane is not before:
                entered[v.lane.id] = entered.get(v.lane.id, 0) + 1
        # diagnostic: several vehicles entered one lane in the same step (rule 6 forbids it)
        self.events["same_step_entries"] += sum(n - 1 for n in entered.values())
        self._running = [v for v in running if v.status == RUNNING]
        if self.lane_changing:  # 11. lane changes on the state after the move
            self.change_lanes(self._running)
        for v in self._running:  # steps stood (rule 10's impatience, rule 12)
            v.wait_steps = v.wait_steps + 1 if v.speed < STOP_SPEED else 0
        if self.teleport_steps is not None:  # 12. teleporting
            self.teleport(self._running)
        self.step_index += 1

    # --- rule 12 --------------------------------------------------------------------------
    def teleport(self, running: list[ReferenceVehicle]) -> None:
        """Rule 12: a vehicle at the front of its lane that has stood for more than ``teleport_steps`` steps
        leaves its lane and waits to be inserted again on the next edge of its route that is at least as long as
        it and its min gap; with none left it arrives. Buses with stops ahead stay."""
        front: dict[str, ReferenceVehicle] = {}
        for v in running:
            f = front.get(v.lane.id)
            if f is None or (v.pos, v.order) > (f.pos, f.order):
                front[v.lane.id] = v
        for v in front.values():
            if v.wait_steps <= self.teleport_steps or v.next_stop < len(v.bus_stops):
                continue
            route = v.spec.route
            need = v.length + v.min_gap
            later = [k for k in range(v.route_pos + 1, len(route)) if self.edges[route[k]][0].length >= need]
            v.wait_steps = 0
            v.speed = 0.0
            v.lane, v.leader, v.conn_key = None, None, None
            v.lc_stop, v.keep_right, v.look_ahead_speed = INF, 0.0, 0.0
            v.halted = False
            self.events["teleports"] += 1
            if later:
                v.status, v.route_pos = WAITING, later[0]
                self._next_waiting = min(self._next_waiting, v.order)
            else:
                v.status, v.arrive_step = ARRIVED, self.step_index + 1
        self._running = [v for v in running if v.status == RUNNING]

    # --- rule 11 --------------------------------------------------------------------------
    def change_lanes(self, running: list[ReferenceVehicle]) -> None:
        """Rule 11: every running vehicle decides on the state after the move, then the changes, swaps and
        cooperation requests are applied at once."""
        dt = self.dt
        per_lane: dict[str, list[ReferenceVehicle]] = {}
        for v in running:
            per_lane.setdefault(v.lane.id, []).append(v)
        keys: dict[str, list[float]] = {}
        for lid, vs in per_lane.items():
            vs.sort(key=lambda v: (v.pos, v.order))  # ties: lower slot upstream
            keys[lid] = [v.pos for v in vs]
        rank = {v: i for vs in per_lane.values() for i, v in enumerate(vs)}
        occupied: dict[str, float] = {}  # each lane's lengths plus min gaps, summed in slot order as the kernels
        for v in sorted(running, key=lambda v: v.order):
            occupied[v.lane.id] = occupied.get(v.lane.id, 0.0) + (v.length + v.min_gap)

        def neighbours(lane_id: str, x: float):
            """(leader, follower) of a vehicle at ``x`` put on the lane: the first at or ahead of ``x`` (ties: the
            earliest slot), the last behind it."""
            vs = per_lane.get(lane_id, [])
            i = bisect.bisect_left(keys.get(lane_id, []), x)
            return (vs[i] if i < len(vs) else None), (vs[i - 1] if i > 0 else None)

        decision = {}  # vehicle -> (target lane, new leader or None, strategic)
        ask: dict[ReferenceVehicle, ReferenceVehicle] = {}  # requester -> follower asked
        blocks: dict[ReferenceVehicle, ReferenceVehicle] = {}  # vehicle -> the one blocking its strategic change
        falls_behind: dict[ReferenceVehicle, ReferenceVehicle] = {}  # vehicle -> the target lane's leader it follows
        for v in running:
            v.lc_yield, v.lc_stop = None, INF
            lanes = self.edges[v.lane.edge]
            if v.pos < 0.0 or len(lanes) < 2 or v._hold:  # the front on the lane, out of the junction
                continue
            best = v.best[v.route_pos]
            k = v.lane.index
            cur_ok = k in best
            near = min(best, key=lambda j: (abs(k - j), j), default=None)
            strat = 0 if cur_ok or near is None else (1 if near > k else -1)
            vs, i = per_lane[v.lane.id], rank[v]
            own = vs[i + 1] if i + 1 < len(vs) else None  # its leader: the next vehicle downstream on its lane
            g_own = own.pos - own.length - v.pos - v.min_gap if own is not None else INF
            v_cur = anticipated_speed(v.speed, v.desired_speed(v.lane), g_own, own.speed if own is not None else 0.0,
                                      v.accel, v.decel, v.tau, dt)
            # an urgent strategic change (the room left, less the best lane's occupation, per lane to cross, is
            # shorter than the look-ahead) and the time it plans with
            # the look-ahead speed (SUMO's myLookAheadSpeed), updated once per neighbour lane (right, then left):
            # each direction is judged after its own update
            memory = 1.0 - (1.0 - LC_LOOK_AHEAD_MEMORY) * dt

            def remember(la):
                return v.speed if v.speed > la else max(memory * la + (1.0 - memory) * v.speed, 0.0)
            la_right = remember(v.look_ahead_speed) if k > 0 else v.look_ahead_speed
            la_left = remember(la_right) if k + 1 < len(lanes) else la_right
            v.look_ahead_speed = la_left
            la_dir = la_left if strat > 0 else la_right
            d_end = v.lane.length - v.pos
            n_cross = max(abs(k - near), 1) if near is not None else 1
            # (the room left along the lane's continuation on the route, SUMO's LaneQ.length)
            cont = v.cont[v.route_pos]
            ahead_cur = min(cont[k] - v.pos, LC_FAR_M)
            usable = (ahead_cur - occupied.get(lanes[near].id, 0.0) if near is not None else ahead_cur) / n_cross
            remaining = max(d_end / max(la_dir, 1e-6) / n_cross / LC_URGENCY, dt)
            # an urgent change across more than one lane keeps room ahead for vehicles that must change the other
            # way (SUMO's myLeadingBlockerLength): it stops that far and its min gap short of the lane's end
            def look_ahead(la, left):  # SUMO's laDist: the look-ahead of a change, twice as far to the left
                return la * LC_LOOK_FORWARD_S * (LC_LOOKAHEAD_LEFT if left else 1.0) + 2.0 * (v.length + v.min_gap)
            la_strat = look_ahead(la_dir, strat > 0)
            reserve = 0.0
            if strat != 0 and n_cross > 1 and usable < la_strat:
                reserve = LC_RESERVE_LEFT_M if strat > 0 else LC_RESERVE_RIGHT_M
                room = d_end - reserve - LC_RESERVE_SLACK_M - v.min_gap
                if room > 0.0:
                    v.lc_stop = v.pos + room
            # keep right (SUMO LC2013): the time at its desired speed the right lane offers, against an acceptance
            # time that grows with speed; the sum falls while the right lane is not much slower
            v0 = v.desired_speed(v.lane)
            accept = LC_KEEP_RIGHT_ACCEPT_S * (v0 / v.lane.speed) * max(v.speed, 1.0)
            fsg0 = max(d_end + v.ahead[v.route_pos] - brake_gap(v0, v.decel, v.tau, dt), 0.0)
            fsds0 = min(accept, fsg0 / v0)
            score, choice = -INF, None
            for d in (-1, 1):  # right, then left
                tk = k + d
                if not 0 <= tk < len(lanes):
                    continue
                tl = lanes[tk]
                lead, foll = neighbours(tl.id, v.pos)
                g_l = lead.pos - lead.length - v.pos - v.min_gap if lead is not None else INF
                v_l = lead.speed if lead is not None else 0.0
                g_f = v.pos - v.length - foll.pos - foll.min_gap if foll is not None else INF
                need_l = secure_gap(v.speed, v_l, v.decel, v.tau, dt)
                need_f = secure_gap(foll.speed, v.speed, foll.decel, foll.tau, dt) if foll is not None else 0.0
                safe = g_l >= need_l and g_f >= need_f

                def gain_here():  # the speed it gains there, less the politeness share of its new follower's loss
                    v_tgt = anticipated_speed(v.speed, v.desired_speed(tl), g_l, v_l, v.accel, v.decel, v.tau, dt)
                    loss = 0.0
                    if foll is not None:
                        v0_f = foll.desired_speed(tl)
                        g_fl = lead.pos - lead.length - foll.pos - foll.min_gap if lead is not None else INF
                        loss = max(anticipated_speed(foll.speed, v0_f, g_fl, v_l, foll.accel, foll.decel, foll.tau, dt)
                                   - anticipated_speed(foll.speed, v0_f, g_f, v.speed, foll.accel, foll.decel,
                                                       foll.tau, dt), 0.0)
                    return v_tgt, v_tgt - v_cur - LC_POLITENESS * loss
                if strat == d:
                    # one that is not urgent waits until the target lane is not slower
                    if not usable < la_strat and not gain_here()[1] >= 0:
                        continue
                    if safe:
                        score, choice = INF, (tl, lead, True)
                    else:
                        if foll is not None and g_f > 0:
                            ask[v] = foll
                        blocker = lead if g_l < need_l else foll if g_f < need_f else None
                        if blocker is not None:
                            blocks[v] = blocker
                        # blocked by the leader: it falls in behind it if it cannot overtake it before the lane
                        # ends (SUMO's MSLCM_LC2013::informLeader)
                        if lead is not None and g_l < need_l:
                            dv = v.speed - v_l
                            overtake = max(g_l + lead.length + lead.min_gap + v.length
                                           + secure_gap(v_l, v.speed, lead.decel, lead.tau, dt), 0.0)
                            cannot = (dv <= 0 or d_end - reserve - brake_gap(v.speed, v.decel, v.tau, dt) < overtake
                                      or remaining * dv < overtake)
                            if usable < la_strat and cannot:  # urgent (d is its direction)
                                falls_behind[v] = lead
                    continue
                # speed gain (MOBIL) between best lanes, or away from them where the way back would not be urgent:
                # the target's continuation less its own lane's occupation, per lane to cross back plus one
                back = look_ahead(la_right if d < 0 else la_left, d < 0)
                calm = (cont[tk] - v.pos - occupied.get(v.lane.id, 0.0)) / LC_AWAY_LANES >= back
                if strat != 0 or not cur_ok or (tk not in best and not calm):
                    continue
                v_tgt, gain = gain_here()
                wants_kr = False
                if d < 0 and tk in best:
                    fsds = fsds0
                    if lead is not None and v_l < v0:
                        fsg = max(min(fsg0, g_l - secure_gap(v0, v_l, v.decel, v.tau, dt)), 0.0)
                        fsds = min(fsds0, fsg / max(v0 - v_l, NUMERICAL_EPS))
                    if not v_cur - LC_KEEP_RIGHT_SLACK > v_tgt:
                        v.keep_right = v.keep_right - dt * (LC_KEEP_RIGHT_THRESHOLD * (fsds / accept)
                                                            / LC_KEEP_RIGHT_TIME_S)
                    wants_kr = v.keep_right < -LC_KEEP_RIGHT_THRESHOLD
                    if wants_kr and safe and LC_KEEP_RIGHT_SCORE > score:
                        score, choice = LC_KEEP_RIGHT_SCORE, (tl, lead, "keep_right")
                        continue
                if gain > LC_SPEED_GAIN and safe and gain > score:
                    score, choice = gain, (tl, lead, False)
            if choice is not None:
                decision[v] = choice
        # one vehicle per gap (same new leader, or the front of the target lane): the furthest ahead, earliest slot
        winner: dict = {}
        for v, (tl, lead, _) in decision.items():
            g = ("leader", lead.vehicle_id) if lead is not None else ("front", tl.id)
            w = winner.get(g)
            if w is None or v.pos > w.pos or (v.pos == w.pos and v.order < w.order):
                winner[g] = v
        changing = set(winner.values())
        self.events["lc_gap_lost"] += len(decision) - len(changing)
        # two vehicles blocking each other's strategic change swap lanes and positions, where each fits the place
        # it takes: not longer than the vehicle it replaces, or its rear clear of the vehicle behind that place

        def fits(a, b):
            i = rank[b]
            behind = per_lane[b.lane.id][i - 1] if i > 0 else None
            return a.length <= b.length or behind is None or b.pos - a.length >= behind.pos

        pairs = [(a, b) for a, b in blocks.items() if blocks.get(b) is a]
        self.events["lc_swaps_unfit"] += sum(not (fits(a, b) and fits(b, a)) for a, b in pairs)
        new_place = {a: (b.lane, b.pos) for a, b in pairs if fits(a, b) and fits(b, a)}
        # a change into the gap behind a swapping vehicle is given up where the (longer) vehicle taking that place
        # would reach back over the changing vehicle's front
        dropped = {v for v in changing if decision[v][1] in new_place
                   and decision[v][1].pos - blocks[decision[v][1]].length < v.pos}
        self.events["lc_given_up_for_swap"] += len(dropped)
        changing -= dropped
        for v in changing:
            tl, _, why = decision[v]
            # the keep-right sum and the look-ahead speed start again after any change (SUMO's changed())
            v.lane, v.keep_right, v.look_ahead_speed = tl, 0.0, 0.0
            self.events["lc_keep_right" if why == "keep_right" else "lc_strategic" if why else "lc_speed_gain"] += 1
        for a, (lane, pos) in new_place.items():
            a.lane, a.pos, a.keep_right, a.look_ahead_speed = lane, pos, 0.0, 0.0
        self.events["lc_swaps"] += len(new_place)
        # cooperation: each follower asked lets in the nearest requester (lowest position after swaps, then slot)
        asked: dict[ReferenceVehicle, ReferenceVehicle] = {}
        for v, f in ask.items():
            r = asked.get(f)
            if r is None or v.pos < r.pos or (v.pos == r.pos and v.order < r.order):
                asked[f] = v
        for f, v in asked.items():
            f.lc_yield = v
        self.events["lc_requests"] += len(ask)
        # one not asked to let anyone in follows the target lane's leader it falls behind (unless it swapped)
        for v, lead in falls_behind.items():
            if v.lc_yield is None and v not in new_place:
                v.lc_yield = lead
                self.events["lc_falling_behind"] += 1

    # --- inspection -----------------------------------------------------------------------
    def vehicle_state(self) -> dict[int, dict]:
        """Per vehicle id: status, lane id (running only), pos, speed, steps, time loss, stops."""
        return {v.vehicle_id: {"status": v.status, "lane": v.lane.id if v.status == RUNNING else None,
                               "pos": v.pos, "speed": v.speed, "insert_step": v.insert_step,
                               "arrive_step": v.arrive_step, "time_loss": v.time_loss, "stops": v.stops,
                               "route_pos": v.route_pos, "next_stop": v.next_stop, "dwell": v.dwell}
                for v in self.vehicles}

    def running_ids(self) -> set[int]:
        return {v.vehicle_id for v in self.vehicles if v.status == RUNNING}
